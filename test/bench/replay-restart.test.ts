// A node restarted in the middle of a busy replay rebuilds every live order and rider exactly as they were.
import t from 'tap';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createEngine, VirtualClock } from '../../engine/index.ts';
import type { DispatchEngine, EventStore } from '../../engine/index.ts';
import { createEmbeddedStore, createPostgresStore } from '../../adapters/sql/index.ts';
import { loadInstance } from '../../bench/mdrp/instance.ts';
import { keepOpen } from '../engine/harness.ts';
import { replayEngineConfig, replayInstance } from '../../bench/mdrp/replay.ts';

const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'mdrp-excerpt');
const PG = process.env.QD_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';


const backends: Array<[string, () => Promise<EventStore>]> = [
  ['embedded PGlite', () => createEmbeddedStore({})],
  ['Postgres', () => createPostgresStore({ connectionString: PG, schema: `qd_replay_${process.pid}_${Date.now()}` })],
];

for (const [name, open] of backends) {
  t.test(`${name}: restart mid-replay`, async (t) => {
    const instance = await loadInstance(FIXTURE);
    const store = await open();
    const config = { ...replayEngineConfig(instance), shards: 2, snapshotEvery: 5 };
    let running: DispatchEngine | null = null;
    let runningClock: VirtualClock | null = null;
    let checks = 0;

    const metrics = await replayInstance(
      instance,
      async (matcher, clock) => {
        runningClock = clock;
        running = await createEngine({ store: keepOpen(store), clock, threads: false, config: { ...config, matcher } });
        return running;
      },
      {
        matcher: 'batch',
        onProgress: async (p) => {
          if (p.placed < 10 || checks > 0) return;
          checks++;
          const engine = running!;
          await engine.tick();
          const live = await store.loadLive();
          const orderIds = live.filter((s) => s.stream.startsWith('order:')).map((s) => s.stream.slice(6));
          const riderIds = live.filter((s) => s.stream.startsWith('rider:')).map((s) => s.stream.slice(6));
          t.ok(orderIds.length >= 3, `a busy moment: ${orderIds.length} live orders, ${riderIds.length} riders (minute ${p.minute})`);

          // A second node on the same log, as after a crash of the first.
          const restarted = await createEngine({
            store: keepOpen(store),
            clock: new VirtualClock(runningClock!.now()),
            threads: false,
            config: { ...config, matcher: 'batch' },
          });
          const states = new Set<string>();
          for (const id of orderIds) {
            const before = await engine.getOrder(id);
            states.add(before.status);
            t.same(await restarted.getOrder(id), before, `order ${id} (${before.status})`);
          }
          for (const id of riderIds) {
            const before = await engine.getRider(id);
            const after = await restarted.getRider(id);
            states.add(`rider:${before.status}`);
            t.same(
              { status: after.status, seq: after.seq, orderIds: after.orderIds, offer: after.offer, capacity: after.capacity },
              { status: before.status, seq: before.seq, orderIds: before.orderIds, offer: before.offer, capacity: before.capacity },
              `rider ${id} (${before.status})`,
            );
          }
          t.ok(states.size >= 3, `actors in several states: ${[...states].join(', ')}`);
          await restarted.close();
        },
      },
    );
    t.equal(checks, 1, 'the restart check ran');
    t.equal(metrics.ordersDelivered, instance.orders.length, 'the replay went on to deliver every order');
    const sql = store as unknown as { drop?: () => Promise<void> };
    if (sql.drop) await sql.drop();
    await store.close();
  });
}

/**
 * Heap bytes per online idle rider: its XState actor, GPS slot, spatial-index
 * entry and directory entry. Shards run inline here so one heap holds them all.
 * Baseline, same run: a bare XState actor of the rider machine alone.
 *
 *   npm run bench -- rider-memory   (node needs --expose-gc; bench/run.ts passes it)
 */
import { createActor } from 'xstate';
import { createEngine, MemoryEventStore, VirtualClock } from '../engine/index.ts';
import { riderMachine } from '../engine/rider/index.ts';
import { writeResult } from './lib.ts';

const RIDERS = 20_000;
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc (npm run bench -- rider-memory does)');

function heap(): number {
  gc!();
  gc!();
  return process.memoryUsage().heapUsed;
}

const actors: unknown[] = [];
const b0 = heap();
for (let i = 0; i < RIDERS; i++) {
  const a = createActor(riderMachine, { input: { riderId: `bare-${i}`, capacity: 2, createdAt: 0 } });
  a.start();
  a.send({ type: 'GO_ONLINE', at: 1 });
  actors.push(a);
}
const bare = (heap() - b0) / RIDERS;

for (const a of actors as Array<{ stop(): void }>) a.stop();
actors.length = 0;

const clock = new VirtualClock(Date.UTC(2026, 10, 24, 9));
// A store that keeps nothing: we measure the live engine, not the event log.
const store = new MemoryEventStore();
(store as unknown as { append: () => Promise<void> }).append = async () => undefined;
const engine = await createEngine({ store, clock, threads: false, config: { shards: 1 } });
const before = heap();
for (let i = 0; i < RIDERS; i += 1000) {
  const batch: Promise<unknown>[] = [];
  for (let j = i; j < i + 1000; j++) {
    batch.push(engine.riderOnline(`rider-${j}`, { position: { lat: 12.9 + (j % 200) * 0.001, lng: 77.5 + Math.floor(j / 200) * 0.001 } }));
  }
  await Promise.all(batch);
}
await engine.tick();
const perRider = (heap() - before) / RIDERS;
const counters = await engine.counters();
await engine.close();

writeResult({
  name: 'rider-memory',
  value: Math.round(perRider),
  unit: 'bytes/rider',
  baseline: Math.round(bare),
  baselineName: 'bare rider actor, no engine',
  ratio: +(perRider / bare).toFixed(2),
  target: '<= 6144 bytes per online idle rider',
  pass: perRider <= 6144,
  riders: RIDERS,
  ridersOnline: counters.ridersOnline,
});

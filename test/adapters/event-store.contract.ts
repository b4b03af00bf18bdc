// The EventStore contract: one suite, run against every implementation (memory, PGlite, Postgres).
import type { Test } from 'tap';
import type { EventStore, RiderStatsDelta, StoredEvent } from '../../engine/store/index.ts';

export interface ContractOptions {
  /**
   * Closes `store` and opens a new one on the same data, as a restart would.
   * Absent for stores that keep nothing (memory): the restart test is then skipped.
   */
  reopen?: (store: EventStore) => Promise<EventStore>;
}

const T0 = Date.UTC(2026, 10, 24, 9, 0, 0);
const DAY = '2026-11-24';

function ev(stream: string, seq: number, type = 'E', data: unknown = { n: seq }, final = false): StoredEvent {
  const e: StoredEvent = { stream, seq, type, data, at: T0 + seq * 1_000 };
  if (final) e.final = true;
  return e;
}

async function rejects(t: Test, p: Promise<unknown>, msg: string): Promise<void> {
  try {
    await p;
    t.fail(`${msg}: expected a rejection`);
  } catch (err) {
    t.ok(err instanceof Error, `${msg}: rejected with an Error`);
  }
}

/**
 * Runs the whole contract as subtests of `t`, named after `name`. `makeStore`
 * returns a fresh, initialised, empty store for each subtest; the subtest
 * closes it.
 */
export function eventStoreContract(t: Test, name: string, makeStore: () => Promise<EventStore>, options: ContractOptions = {}): void {
  const withStore = (title: string, body: (t: Test, store: EventStore) => Promise<EventStore | void>) =>
    t.test(`${name}: ${title}`, async (t) => {
      let store = await makeStore();
      try {
        // A body that reopens hands back the store it ended with, so that one is closed.
        store = (await body(t, store)) ?? store;
      } finally {
        await store.close();
      }
    });

  withStore('appends and reads back in seq order, as stored', async (t, store) => {
    const data = { orderId: 'o1', items: [{ sku: 'milk', qty: 2 }], note: 'ring twice', nested: { ok: true, n: null } };
    const batch = [ev('order:o1', 3, 'C'), ev('order:o1', 1, 'CREATED', data), ev('order:o1', 2, 'B'), ev('rider:r1', 1, 'REGISTERED')];
    await store.append(batch);
    // The caller's objects are not the stored ones.
    (data.items[0] as { qty: number }).qty = 99;
    const got = await store.readStream('order:o1');
    t.same(
      got.map((e) => e.seq),
      [1, 2, 3],
      'seq order whatever the batch order',
    );
    t.strictSame(got[0], { stream: 'order:o1', seq: 1, type: 'CREATED', data: { orderId: 'o1', items: [{ sku: 'milk', qty: 2 }], note: 'ring twice', nested: { ok: true, n: null } }, at: T0 + 1_000 }, 'event round-trips exactly');
    t.equal(typeof got[0].at, 'number', 'at is a number');
    t.strictSame(await store.readStream('rider:r1'), [{ stream: 'rider:r1', seq: 1, type: 'REGISTERED', data: { n: 1 }, at: T0 + 1_000 }], 'other stream apart');
    t.strictSame(await store.readStream('order:none'), [], 'unknown stream is empty');
    await store.append([{ ...ev('order:o1', 4, 'D'), data: undefined }, ev('order:o1', 5, 'E', 'text'), ev('order:o1', 6, 'F', [1, 'a', false])]);
    const more = await store.readStream('order:o1', 3);
    t.strictSame(
      more.map((e) => e.data),
      [null, 'text', [1, 'a', false]],
      'undefined data reads as null; scalars and arrays keep their shape',
    );
  });

  withStore('readStream returns only events after afterSeq', async (t, store) => {
    await store.append([1, 2, 3, 4, 5].map((s) => ev('order:a', s)));
    t.same((await store.readStream('order:a', 2)).map((e) => e.seq), [3, 4, 5], 'after 2');
    t.same((await store.readStream('order:a', 0)).map((e) => e.seq), [1, 2, 3, 4, 5], 'after 0 is all');
    t.same(await store.readStream('order:a', 5), [], 'after the last is empty');
    t.same(await store.readStream('order:a', 50), [], 'beyond the last is empty');
  });

  withStore('re-appending a stored (stream, seq) is skipped without error', async (t, store) => {
    await store.append([ev('order:a', 1, 'CREATED', { v: 'first' }), ev('order:a', 2, 'X', { v: 'first' })]);
    await store.append([ev('order:a', 2, 'Y', { v: 'second' }), ev('order:a', 3, 'Z')]);
    const got = await store.readStream('order:a');
    t.same(
      got.map((e) => [e.seq, e.type]),
      [
        [1, 'CREATED'],
        [2, 'X'],
        [3, 'Z'],
      ],
      'the first write of seq 2 wins, seq 3 is added',
    );
    t.same(got[1].data, { v: 'first' });
    await store.append([ev('order:b', 1, 'A'), ev('order:b', 1, 'B')]);
    t.same((await store.readStream('order:b')).map((e) => e.type), ['A'], 'a duplicate inside one batch keeps the first');
    // A replayed batch must not revive or end streams: only new rows move a stream.
    await store.append([ev('order:c', 1), ev('order:c', 2, 'DELIVERED', {}, true)]);
    await store.append([ev('order:c', 1)]);
    t.notOk((await store.loadLive()).some((s) => s.stream === 'order:c'), 're-appending an old seq leaves an ended stream ended');
  });

  withStore('a batch with a bad row stores nothing', async (t, store) => {
    await store.append([ev('order:keep', 1)]);
    const good = [ev('order:keep', 2), ev('order:new', 1)];
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    await rejects(t, store.append([...good, ev('order:bad', 1, 'X', { n: 10n })]), 'BigInt data');
    await rejects(t, store.append([...good, ev('order:bad', 1, 'X', circular)]), 'circular data');
    await rejects(t, store.append([...good, { ...ev('order:bad', 1), seq: 1.5 }]), 'fractional seq');
    await rejects(t, store.append([...good, { ...ev('order:bad', 1), at: Number.NaN }]), 'NaN at');
    await rejects(t, store.append([...good, { ...ev('order:bad', 1), stream: '' }]), 'empty stream');
    await rejects(t, store.append(good, [{ riderId: 'r1', day: '2026-02-30', deliveries: 1 }]), 'stats delta for a day that does not exist');
    await rejects(t, store.append(good, [{ riderId: 'r1', day: DAY, distanceM: Number.NaN }]), 'NaN stats delta');
    await rejects(t, store.append(good, [{ riderId: 'r1', day: DAY, deliveries: 0.5 }]), 'fractional count');
    t.same((await store.readStream('order:keep')).map((e) => e.seq), [1], 'nothing of the failed batches reached a known stream');
    t.same(await store.readStream('order:new'), [], 'nor created a stream');
    t.same(await store.readStream('order:bad'), [], 'nor stored the bad row');
    t.same(
      (await store.loadLive()).map((s) => s.stream),
      ['order:keep'],
      'no stream appeared',
    );
    t.equal(await store.riderDailyStats('r1', DAY), null, 'no statistics were added');
    await store.append(good, [{ riderId: 'r1', day: DAY, deliveries: 1 }]);
    t.same((await store.readStream('order:keep')).map((e) => e.seq), [1, 2], 'the store still works after refusals');
    t.equal((await store.riderDailyStats('r1', DAY))?.deliveries, 1);
  });

  withStore('a final event ends its stream: loadLive omits it', async (t, store) => {
    await store.append([ev('order:done', 1, 'CREATED'), ev('order:open', 1, 'CREATED'), ev('rider:r1', 1, 'REGISTERED')]);
    await store.append([ev('order:done', 2, 'DELIVERED', {}, true), ev('order:open', 2, 'ACCEPTED')]);
    const live = await store.loadLive();
    t.same(
      live.map((s) => s.stream),
      ['order:open', 'rider:r1'],
      'only streams without a final newest event, ordered by name',
    );
    t.same(
      live[0].events.map((e) => e.seq),
      [1, 2],
      'with all their events',
    );
    const done = await store.readStream('order:done');
    t.equal(done[1].final, true, 'the final flag reads back');
    t.equal(done[0].final, undefined, 'and is absent on other events');
    await store.append([ev('order:once', 1, 'CREATED'), ev('order:once', 2, 'CANCELLED', {}, true)]);
    t.notOk((await store.loadLive()).some((s) => s.stream === 'order:once'), 'created and ended in one batch: not live');
    // Zone streams are reused: resumed (final) then paused again (not final) must be live again.
    await store.append([ev('zone:z1', 1, 'PAUSED'), ev('zone:z1', 2, 'RESUMED', {}, true)]);
    t.notOk((await store.loadLive()).some((s) => s.stream === 'zone:z1'), 'a resumed zone is not live');
    await store.append([ev('zone:z1', 3, 'PAUSED')]);
    const zone = (await store.loadLive()).find((s) => s.stream === 'zone:z1');
    t.ok(zone, 'a newer non-final event makes the stream live again');
    t.same(zone?.events.map((e) => e.type), ['PAUSED', 'RESUMED', 'PAUSED'], 'with its whole history');
  });

  withStore('loadLive returns the newest snapshot and only the events after it', async (t, store) => {
    await store.append([1, 2, 3, 4, 5].map((s) => ev('order:a', s)));
    await store.append([1, 2].map((s) => ev('rider:r', s)));
    await store.append([ev('order:ended', 1), ev('order:ended', 2, 'DELIVERED', {}, true)]);
    const state = { value: 'searching', context: { pickup: { lat: 12.9, lng: 77.6 }, tries: [1, 2] } };
    await store.saveSnapshots([
      { stream: 'order:a', seq: 3, state, at: T0 + 3_000 },
      { stream: 'order:ended', seq: 1, state: { value: 'x' }, at: T0 },
    ]);
    await store.saveSnapshots([{ stream: 'order:a', seq: 2, state: { value: 'older' }, at: T0 + 2_000 }]);
    const live = await store.loadLive();
    t.same(
      live.map((s) => s.stream),
      ['order:a', 'rider:r'],
      'ended streams are not loaded even with a snapshot',
    );
    const a = live[0];
    t.strictSame(a.snapshot, { stream: 'order:a', seq: 3, state, at: T0 + 3_000 }, 'the newest snapshot: a later save of an older one does not replace it');
    t.same(
      a.events.map((e) => e.seq),
      [4, 5],
      'only events after the snapshot, in order',
    );
    t.equal(live[1].snapshot, null, 'no snapshot: null');
    t.same(
      live[1].events.map((e) => e.seq),
      [1, 2],
      'and every event',
    );
    await store.saveSnapshots([{ stream: 'order:a', seq: 5, state: { value: 'newer' }, at: T0 + 5_000 }, { stream: 'order:a', seq: 4, state: { value: 'mid' }, at: T0 }]);
    const again = (await store.loadLive())[0];
    t.same(again.snapshot?.state, { value: 'newer' }, 'the newest of one call wins');
    t.same(again.events, [], 'a snapshot at the last event leaves nothing to replay');
    await store.saveSnapshots([]);
    t.same((await store.loadLive()).length, 2, 'an empty save changes nothing');
  });

  withStore('loadLive lists streams in byte order, whatever the database collation', async (t, store) => {
    await store.append([ev('order:b', 1), ev('order:B', 1), ev('order:a', 1), ev('order:10', 1), ev('order:9', 1), ev('order:a-1', 1)]);
    t.same(
      (await store.loadLive()).map((s) => s.stream),
      ['order:10', 'order:9', 'order:B', 'order:a', 'order:a-1', 'order:b'],
    );
  });

  // Earnings are whole paise, as the engine produces them (riderFee is an integer) and the wire carries them.
  withStore('statistics deltas add up and rates are computed', async (t, store) => {
    const d = (x: Partial<RiderStatsDelta>): RiderStatsDelta => ({ riderId: 'r1', day: DAY, ...x });
    await store.append([ev('rider:r1', 1)], [d({ offers: 1 }), d({ offers: 1, accepts: 1 })]);
    await store.append([], [d({ deliveries: 1, onTime: 1, distanceM: 1234.5, earnings: 45 })]);
    await store.append([ev('rider:r1', 2)], [d({ deliveries: 1, distanceM: 765.5, earnings: 30 }), d({ riderId: 'r2', offers: 2 })]);
    await store.append([], [d({ day: '2026-11-25', deliveries: 1, onTime: 1 })]);
    t.strictSame(
      await store.riderDailyStats('r1', DAY),
      { riderId: 'r1', day: DAY, deliveries: 2, onTime: 1, distanceM: 2000, earnings: 75, offers: 2, accepts: 1, onTimeRate: 0.5, acceptanceRate: 0.5 },
      'sums across and within appends, rates from the sums',
    );
    t.strictSame(
      await store.riderDailyStats('r2', DAY),
      { riderId: 'r2', day: DAY, deliveries: 0, onTime: 0, distanceM: 0, earnings: 0, offers: 2, accepts: 0, onTimeRate: null, acceptanceRate: 0 },
      'no deliveries: on-time rate is null; offers but no accepts: rate 0',
    );
    t.equal((await store.riderDailyStats('r1', '2026-11-25'))?.onTimeRate, 1, 'days are kept apart');
    t.equal(await store.riderDailyStats('r1', '2026-11-26'), null, 'a day without stats is null');
    t.equal(await store.riderDailyStats('nobody', DAY), null, 'an unknown rider is null');
    t.same((await store.readStream('rider:r1')).map((e) => e.seq), [1, 2], 'events of stats batches are stored too');
  });

  withStore('one append of 1,500 events across 500 streams', async (t, store) => {
    const events: StoredEvent[] = [];
    // Interleaved, as a group commit from many shards would be.
    for (let seq = 1; seq <= 3; seq++) {
      for (let i = 0; i < 500; i++) events.push(ev(`order:${String(i).padStart(4, '0')}`, seq, `T${seq}`, { i, seq, text: 'x'.repeat(i % 50) }, seq === 3 && i % 5 === 0));
    }
    await store.append(events, [{ riderId: 'r1', day: DAY, offers: 500, accepts: 400 }]);
    const live = await store.loadLive();
    t.equal(live.length, 400, 'every fifth stream was ended by its last event');
    t.ok(
      live.every((s) => s.events.length === 3 && s.events.every((e, k) => e.seq === k + 1)),
      'each live stream has its three events in order',
    );
    t.same(live[0].events[2].data, { i: 1, seq: 3, text: 'x' }, 'data intact');
    t.same((await store.readStream('order:0499')).map((e) => e.type), ['T1', 'T2', 'T3']);
    t.equal((await store.riderDailyStats('r1', DAY))?.acceptanceRate, 0.8);
  });

  if (options.reopen) {
    const reopen = options.reopen;
    withStore('after close and reopen, everything is still there', async (t, store) => {
      await store.append([ev('order:a', 1, 'CREATED', { spec: { id: 'a' } }), ev('order:a', 2), ev('order:b', 1), ev('order:b', 2, 'DELIVERED', {}, true)], [{ riderId: 'r1', day: DAY, deliveries: 1, onTime: 1 }]);
      await store.saveSnapshots([{ stream: 'order:a', seq: 1, state: { value: 'searching' }, at: T0 }]);
      const reopened = await reopen(store);
      t.same((await reopened.readStream('order:a')).map((e) => e.seq), [1, 2], 'events survive');
      const live = await reopened.loadLive();
      t.same(
        live.map((s) => s.stream),
        ['order:a'],
        'the ended stream stays ended',
      );
      t.same(live[0].snapshot?.state, { value: 'searching' }, 'the snapshot survives');
      t.same(
        live[0].events.map((e) => e.seq),
        [2],
        'with the events after it',
      );
      t.equal((await reopened.riderDailyStats('r1', DAY))?.onTimeRate, 1, 'statistics survive');
      await reopened.append([ev('order:a', 2), ev('order:a', 3)]);
      t.same((await reopened.readStream('order:a')).map((e) => e.seq), [1, 2, 3], 'idempotence holds across the restart');
      return reopened;
    });
  }
}

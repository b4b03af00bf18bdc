// GroupCommitter: coalescing, order, acknowledgement only after durability, failure isolation, the hole guard.
import t from 'tap';
import { CommitGapError, GroupCommitter, MemoryEventStore } from '../../engine/store/index.ts';
import type { RiderStatsDelta, StoredEvent } from '../../engine/store/index.ts';

const T0 = Date.UTC(2026, 10, 24, 9, 0, 0);
const DAY = '2026-11-24';
const ev = (stream: string, seq: number): StoredEvent => ({ stream, seq, type: 'E', data: { seq }, at: T0 + seq });

/** A MemoryEventStore whose appends are recorded, can be held open, and can be made to fail. */
class GatedStore extends MemoryEventStore {
  readonly calls: StoredEvent[][] = [];
  #gate: Promise<void> | null = null;
  #open: (() => void) | null = null;
  /** Append call numbers (1-based) that throw without storing. */
  readonly failCalls = new Set<number>();
  /** Append call numbers that store, then throw: the commit landed but the reply was lost. */
  readonly lostReplyCalls = new Set<number>();

  hold(): void {
    this.#gate = new Promise((res) => (this.#open = res));
  }
  release(): void {
    this.#open?.();
    this.#gate = null;
  }
  override async append(events: StoredEvent[], stats?: RiderStatsDelta[]): Promise<void> {
    this.calls.push([...events]);
    const n = this.calls.length;
    if (this.#gate) await this.#gate;
    if (this.failCalls.has(n)) throw new Error(`append ${n} failed`);
    await super.append(events, stats);
    if (this.lostReplyCalls.has(n)) throw new Error(`append ${n}: connection lost after COMMIT`);
  }
}

/** Lets queued promise callbacks and timers run. */
const turn = () => new Promise((res) => setTimeout(res, 5));

/** Records how a promise settled, without unhandled rejections. */
function outcome(p: Promise<void>): { state: 'pending' | 'resolved' | 'rejected'; error?: Error } {
  const o: { state: 'pending' | 'resolved' | 'rejected'; error?: Error } = { state: 'pending' };
  p.then(
    () => (o.state = 'resolved'),
    (err: Error) => {
      o.state = 'rejected';
      o.error = err;
    },
  );
  return o;
}

t.test('calls in one synchronous burst share one append', async (t) => {
  const store = new GatedStore();
  const gc = new GroupCommitter(store);
  await Promise.all(Array.from({ length: 50 }, (_, i) => gc.commit([ev(`order:${i}`, 1)])));
  t.equal(store.calls.length, 1, 'one append');
  t.equal(store.calls[0].length, 50, 'with all 50 events');
  t.same(gc.counters, { batches: 1, events: 50, maxBatchSize: 50, failedBatches: 0, gapRefusals: 0 });
});

t.test('while an append is in flight, later calls queue and go together in the next one', async (t) => {
  const store = new GatedStore();
  const gc = new GroupCommitter(store);
  store.hold();
  const first = outcome(gc.commit([ev('order:0', 1)]));
  await turn();
  t.equal(store.calls.length, 1, 'the first call is in flight alone');
  const rest = Array.from({ length: 99 }, (_, i) => outcome(gc.commit([ev(`order:${i + 1}`, 1)])));
  await turn();
  t.equal(store.calls.length, 1, 'nothing else reaches the store while it is busy');
  t.equal(first.state, 'pending', 'the first caller waits for its append');
  t.ok(
    rest.every((o) => o.state === 'pending'),
    'and so do the queued callers',
  );
  store.release();
  await gc.flush();
  t.same(
    store.calls.map((c) => c.length),
    [1, 99],
    '100 commits, two appends',
  );
  t.ok(
    [first, ...rest].every((o) => o.state === 'resolved'),
    'everyone is acknowledged',
  );
  t.same(gc.counters, { batches: 2, events: 100, maxBatchSize: 99, failedBatches: 0, gapRefusals: 0 });
});

t.test('a caller is acknowledged only once its events can be read back', async (t) => {
  const store = new GatedStore();
  const gc = new GroupCommitter(store);
  const checks: Array<Promise<boolean>> = [];
  for (let i = 0; i < 200; i++) {
    const e = ev(`order:${i % 7}`, Math.floor(i / 7) + 1);
    checks.push(gc.commit([e]).then(async () => (await store.readStream(e.stream, e.seq - 1))[0]?.seq === e.seq));
    if (i % 30 === 0) await turn();
  }
  const seen = await Promise.all(checks);
  t.ok(
    seen.every(Boolean),
    'every acknowledged event was already stored',
  );
  t.ok(store.calls.length < 200, `200 commits in ${store.calls.length} appends`);
});

t.test('order is kept within and across batches', async (t) => {
  const store = new GatedStore();
  const gc = new GroupCommitter(store, { maxBatch: 16 });
  const committed: StoredEvent[] = [];
  const all: Array<Promise<void>> = [];
  for (let seq = 1; seq <= 300; seq++) {
    const e = ev(seq % 2 ? 'order:odd' : 'order:even', seq);
    committed.push(e);
    all.push(gc.commit([e]));
    if (seq % 37 === 0) await turn();
  }
  await Promise.all(all);
  t.same(
    store.calls.flat(),
    committed,
    'the store saw the events in commit order',
  );
  t.ok(
    store.calls.every((c) => c.length <= 16),
    'no batch above maxBatch',
  );
  t.same(
    (await store.readStream('order:odd')).map((e) => e.seq),
    committed.filter((e) => e.stream === 'order:odd').map((e) => e.seq),
    'stream read back in order',
  );
});

t.test('maxBatch splits the queue between commits, never inside one', async (t) => {
  const store = new GatedStore();
  const gc = new GroupCommitter(store, { maxBatch: 10 });
  store.hold();
  const first = gc.commit([ev('order:first', 1)]);
  await turn();
  const small = Array.from({ length: 25 }, (_, i) => gc.commit([ev(`order:${i}`, 1)]));
  const big = gc.commit(Array.from({ length: 25 }, (_, i) => ev('order:big', i + 1)));
  const tail = gc.commit([ev('order:tail', 1), ev('order:tail', 2)]);
  store.release();
  await Promise.all([first, ...small, big, tail]);
  t.same(
    store.calls.map((c) => c.length),
    [1, 10, 10, 5, 25, 2],
    'batches of at most 10; the 25-event commit goes whole and alone',
  );
  t.equal(gc.counters.maxBatchSize, 25);
  t.throws(() => new GroupCommitter(store, { maxBatch: 0 }), RangeError, 'maxBatch must be positive');
});

t.test('statistics deltas travel with their batch', async (t) => {
  const store = new GatedStore();
  const gc = new GroupCommitter(store);
  await Promise.all([
    gc.commit([ev('rider:r1', 1)], [{ riderId: 'r1', day: DAY, offers: 1 }]),
    gc.commit([], [{ riderId: 'r1', day: DAY, offers: 1, accepts: 1 }]),
    gc.commit([ev('order:a', 1)]),
  ]);
  t.equal(store.calls.length, 1, 'one append');
  t.equal((await store.riderDailyStats('r1', DAY))?.acceptanceRate, 0.5, 'deltas of every caller added');
});

t.test('a failed append rejects exactly its callers; later batches still work', async (t) => {
  const store = new GatedStore();
  const gc = new GroupCommitter(store);
  store.hold();
  const a = outcome(gc.commit([ev('order:a', 1)]));
  await turn();
  const b = outcome(gc.commit([ev('order:b', 1)], [{ riderId: 'r', day: DAY, offers: 1 }]));
  const c = outcome(gc.commit([ev('order:c', 1)]));
  store.failCalls.add(2);
  store.release();
  await gc.flush();
  t.equal(a.state, 'resolved', 'the batch before succeeds');
  t.equal(b.state, 'rejected', 'a caller of the failed batch is rejected');
  t.equal(c.state, 'rejected', 'so is the other');
  t.equal(b.error?.message, 'append 2 failed', 'with the store error itself');
  t.equal(store.calls.length, 2, 'no automatic retry');
  const d = outcome(gc.commit([ev('order:d', 1)]));
  await gc.flush();
  t.equal(d.state, 'resolved', 'the next batch works');
  t.same((await store.loadLive()).map((s) => s.stream), ['order:a', 'order:d'], 'only acknowledged events are stored');
  t.equal(await store.riderDailyStats('r', DAY), null, 'and only acknowledged statistics');
  t.same(gc.counters, { batches: 3, events: 2, maxBatchSize: 2, failedBatches: 1, gapRefusals: 0 });
  await t.resolves(gc.flush(), 'flush resolves even after a failure');
});

t.test('after a failure, later events of the same stream are refused rather than leave a hole', async (t) => {
  const store = new GatedStore();
  const gc = new GroupCommitter(store);
  await gc.commit([ev('order:x', 1)]);
  store.hold();
  const x2 = outcome(gc.commit([ev('order:x', 2)]));
  await turn();
  // Produced by the shard before it learned seq 2 failed.
  const x3 = outcome(gc.commit([ev('order:x', 3), ev('order:other', 1)]));
  const y = outcome(gc.commit([ev('order:y', 1)]));
  store.failCalls.add(2);
  store.release();
  await gc.flush();
  t.equal(x2.state, 'rejected', 'the failed event is rejected');
  t.equal(x3.state, 'rejected', 'the queued later event is refused');
  t.ok(x3.error instanceof CommitGapError, 'as a CommitGapError');
  t.equal((x3.error as CommitGapError).missingSeq, 2, 'naming the missing seq');
  t.equal((x3.error as Error).cause, x2.error, 'caused by the append failure');
  t.equal(y.state, 'resolved', 'an unrelated stream in the queue is committed');
  t.notOk(
    store.calls.flat().some((e) => e.stream === 'order:x' && e.seq === 3),
    'the refused event never reached the store',
  );
  t.same(await store.readStream('order:other'), [], 'nor did the rest of its commit');
  t.same([...gc.blockedStreams], [['order:x', 2]], 'order:x waits for seq 2');
  await t.rejects(gc.commit([ev('order:x', 3)]), CommitGapError, 'a new commit that skips seq 2 is refused too');
  // The engine rebuilt the actor from the log: its next event is seq 2 again.
  await gc.commit([ev('order:x', 2)]);
  await gc.commit([ev('order:x', 3)]);
  t.same((await store.readStream('order:x')).map((e) => e.seq), [1, 2, 3], 'no hole');
  t.same([...gc.blockedStreams], [], 'the stream is unblocked');
  t.equal(gc.counters.gapRefusals, 2);
});

t.test('a retry continuing past the block in the same batch is accepted', async (t) => {
  const store = new GatedStore();
  const gc = new GroupCommitter(store);
  store.failCalls.add(1);
  await t.rejects(gc.commit([ev('order:x', 1)]), { message: 'append 1 failed' });
  await Promise.all([gc.commit([ev('order:x', 1)]), gc.commit([ev('order:x', 2)]), gc.commit([ev('order:x', 3)])]);
  t.same(
    store.calls.map((c) => c.length),
    [1, 3],
    'retry and its successors in one append',
  );
  t.same((await store.readStream('order:x')).map((e) => e.seq), [1, 2, 3]);
});

t.test('an append that landed despite its error does not block the stream', async (t) => {
  const store = new GatedStore();
  const gc = new GroupCommitter(store);
  await gc.commit([ev('order:x', 1)]);
  store.lostReplyCalls.add(2);
  await t.rejects(gc.commit([ev('order:x', 2)]), { message: /connection lost/ }, 'the caller hears of the failure');
  // The engine rebuilt from the log, which holds seq 2, so it carries on at 3.
  await gc.commit([ev('order:x', 3)]);
  t.same((await store.readStream('order:x')).map((e) => e.seq), [1, 2, 3], 'seq 3 is accepted once the store shows seq 2');
  t.equal(gc.counters.gapRefusals, 0);
});

t.test('flush waits for everything queued, and resolves at once when idle', async (t) => {
  const store = new GatedStore();
  const gc = new GroupCommitter(store);
  await t.resolves(gc.flush(), 'idle');
  store.hold();
  const pending = Array.from({ length: 10 }, (_, i) => outcome(gc.commit([ev(`order:${i}`, 1)])));
  let flushed = false;
  const f = gc.flush().then(() => (flushed = true));
  await turn();
  t.notOk(flushed, 'not while an append is held');
  store.release();
  await f;
  t.ok(
    pending.every((o) => o.state === 'resolved'),
    'every queued commit settled before flush resolved',
  );
  t.equal((await store.loadLive()).length, 10);
});

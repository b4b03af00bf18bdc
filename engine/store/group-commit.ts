/**
 * Group commit: many callers each hand over the events of one unit of work;
 * while one `store.append` is in flight, later calls queue and go together in
 * the next single append. The store's cost is per append (a transaction, an
 * fsync), so under load throughput grows with the batch while each caller
 * still waits for at most about two appends.
 *
 * Failure policy: no retries here. When an append fails, every caller whose
 * events were in that batch gets the store's error and nothing else is done
 * for them: the engine decides (it rebuilds the touched actors from what is
 * durable and reports QD_ERR_STORE_UNAVAILABLE). Retrying here could hold up
 * every later caller behind a dead store and, for an append whose commit
 * actually landed but whose reply was lost, would add the statistics deltas
 * twice (events are idempotent on (stream, seq), deltas are not).
 *
 * Hole guard: a failed batch can leave later work queued for the same
 * streams (a shard may already have produced seq 6 when the append holding
 * seq 5 fails). Appending it would leave a hole that replay would silently
 * skip, so after a failure a stream is *blocked* at the lowest seq that
 * failed. A later commit touching it is accepted only if it starts at or
 * below that seq (a retry, or the rebuilt actor's fresh event), or if the
 * store shows that everything before its first event is in fact durable
 * (the failed append landed after all). Otherwise it is rejected with a
 * CommitGapError, without calling the store.
 */
import type { EventStore, RiderStatsDelta, StoredEvent } from './event-store.ts';

export interface GroupCommitOptions {
  /**
   * Most events per append (default 1000). A single commit is never split
   * (its events are one atomic unit), so one larger than this goes alone.
   * The default bounds one PGlite append, which blocks this thread, to about
   * 30 ms; per-event cost is already flat at that size (bench/store.ts).
   */
  maxBatch?: number;
}

export interface GroupCommitCounters {
  /** Appends attempted (successful or not). */
  batches: number;
  /** Events in successful appends. */
  events: number;
  /** Largest batch, in events, handed to the store. */
  maxBatchSize: number;
  /** Appends that failed. */
  failedBatches: number;
  /** Commits refused by the hole guard without reaching the store. */
  gapRefusals: number;
}

/** A commit refused because an earlier event of one of its streams is not durable. */
export class CommitGapError extends Error {
  override readonly name = 'CommitGapError';
  readonly stream: string;
  /** Lowest seq of the stream that failed to become durable. */
  readonly missingSeq: number;
  constructor(stream: string, missingSeq: number, options?: ErrorOptions) {
    super(`stream ${stream}: seq ${missingSeq} is not durable, later events would leave a hole`, options);
    this.stream = stream;
    this.missingSeq = missingSeq;
  }
}

interface Pending {
  events: StoredEvent[];
  stats: RiderStatsDelta[];
  resolve: () => void;
  reject: (err: Error) => void;
}

interface Blocked {
  /** A commit for this stream must start at or below this seq. */
  seq: number;
  /** The append failure that blocked it, kept as the cause of refusals. */
  cause: Error;
}

type AppendStore = Pick<EventStore, 'append' | 'readStream'>;

export class GroupCommitter {
  readonly #store: AppendStore;
  readonly #maxBatch: number;
  #queue: Pending[] = [];
  #running = false;
  #idleWaiters: Array<() => void> = [];
  readonly #blocked = new Map<string, Blocked>();
  readonly #counters: GroupCommitCounters = { batches: 0, events: 0, maxBatchSize: 0, failedBatches: 0, gapRefusals: 0 };

  constructor(store: AppendStore, options: GroupCommitOptions = {}) {
    const maxBatch = options.maxBatch ?? 1000;
    if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new RangeError(`maxBatch must be a positive integer: ${maxBatch}`);
    this.#store = store;
    this.#maxBatch = maxBatch;
  }

  /**
   * Resolves once `events` and `stats` are durable (in one atomic append,
   * possibly shared with other callers). Rejects with the store's error if
   * that append failed (nothing of the batch is stored), or with a
   * CommitGapError if an earlier event of one of its streams failed.
   */
  commit(events: StoredEvent[], stats: RiderStatsDelta[] = []): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ events, stats, resolve, reject });
      if (!this.#running) {
        this.#running = true;
        // Start on a microtask so callers in the same synchronous burst share the first append.
        queueMicrotask(() => void this.#drain());
      }
    });
  }

  /** Resolves when everything queued so far has been appended or rejected. Never rejects. */
  flush(): Promise<void> {
    if (!this.#running && this.#queue.length === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
  }

  /** A copy of the counters. */
  get counters(): GroupCommitCounters {
    return { ...this.#counters };
  }

  /** Streams blocked by a failed append, with the seq a commit must start at or below. */
  get blockedStreams(): ReadonlyMap<string, number> {
    return new Map([...this.#blocked].map(([stream, b]) => [stream, b.seq]));
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const batch = await this.#takeBatch();
        if (batch.length > 0) await this.#append(batch);
        // Let the event loop turn between appends. An embedded store (PGlite) runs SQL synchronously
        // and resolves through microtasks only, so without this a busy queue would starve all I/O.
        if (this.#queue.length > 0) await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } finally {
      this.#running = false;
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Takes whole commits from the head of the queue up to maxBatch events, refusing those the hole guard stops. */
  async #takeBatch(): Promise<Pending[]> {
    const batch: Pending[] = [];
    let size = 0;
    // Streams accepted into this batch after being blocked: later commits in the same batch may continue them.
    const continued = new Map<string, number>();
    while (this.#queue.length > 0) {
      const next = this.#queue[0];
      if (batch.length > 0 && size + next.events.length > this.#maxBatch) break;
      this.#queue.shift();
      const gap = this.#blocked.size > 0 ? await this.#findGap(next, continued) : null;
      if (gap) {
        this.#counters.gapRefusals += 1;
        next.reject(gap);
        continue;
      }
      batch.push(next);
      size += next.events.length;
    }
    return batch;
  }

  /** The hole a commit would leave in a blocked stream, or null. */
  async #findGap(p: Pending, continued: Map<string, number>): Promise<CommitGapError | null> {
    const first = new Map<string, number>();
    const last = new Map<string, number>();
    for (const e of p.events) {
      if (!this.#blocked.has(e.stream)) continue;
      first.set(e.stream, Math.min(first.get(e.stream) ?? Infinity, e.seq));
      last.set(e.stream, Math.max(last.get(e.stream) ?? -Infinity, e.seq));
    }
    for (const [stream, seq] of first) {
      const b = this.#blocked.get(stream)!;
      const limit = Math.max(b.seq, (continued.get(stream) ?? 0) + 1);
      if (seq <= limit) continue;
      // The failed append may have landed even though it reported an error: ask the store.
      const durable = await this.#store.readStream(stream, seq - 2).catch(() => []);
      if (durable.length > 0 && durable[0].seq === seq - 1) {
        this.#blocked.delete(stream);
        continue;
      }
      return new CommitGapError(stream, b.seq, { cause: b.cause });
    }
    for (const [stream, seq] of last) {
      if (this.#blocked.has(stream)) continued.set(stream, Math.max(continued.get(stream) ?? 0, seq));
    }
    return null;
  }

  async #append(batch: Pending[]): Promise<void> {
    const events: StoredEvent[] = [];
    const stats: RiderStatsDelta[] = [];
    for (const p of batch) {
      for (const e of p.events) events.push(e);
      for (const s of p.stats) stats.push(s);
    }
    this.#counters.batches += 1;
    this.#counters.maxBatchSize = Math.max(this.#counters.maxBatchSize, events.length);
    try {
      await this.#store.append(events, stats);
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.#counters.failedBatches += 1;
      const lowest = new Map<string, number>();
      for (const e of events) lowest.set(e.stream, Math.min(lowest.get(e.stream) ?? Infinity, e.seq));
      for (const [stream, seq] of lowest) {
        const cur = this.#blocked.get(stream);
        this.#blocked.set(stream, { seq: Math.min(cur?.seq ?? Infinity, seq), cause: error });
      }
      for (const p of batch) p.reject(error);
      return;
    }
    this.#counters.events += events.length;
    for (const e of events) this.#blocked.delete(e.stream);
    for (const p of batch) p.resolve();
  }
}

/**
 * In-process EventStore for unit tests and single-run simulations. It keeps
 * the semantics of the SQL store exactly (test/adapters/event-store.contract.ts
 * runs against both): values are copied through JSON on the way in, a batch
 * is validated whole before anything is applied, (stream, seq) is idempotent,
 * and a stream is live while its newest event is not final.
 */
import type { EventStore, LiveStream, RiderDailyStats, RiderStatsDelta, Snapshot, StoredEvent } from './event-store.ts';

interface StreamRecord {
  /** seq -> event, kept as stored (data already copied). */
  events: Map<number, StoredEvent>;
  lastSeq: number;
  live: boolean;
}

interface StatsRecord {
  deliveries: number;
  onTime: number;
  distanceM: number;
  earnings: number;
  offers: number;
  accepts: number;
}

/** Largest value of the SQL `integer` columns (seq, counters), so both stores refuse the same input. */
const INT4_MAX = 2 ** 31 - 1;

export class MemoryEventStore implements EventStore {
  readonly #streams = new Map<string, StreamRecord>();
  readonly #snapshots = new Map<string, Snapshot>();
  readonly #stats = new Map<string, StatsRecord>();
  #failNext: Error | null = null;
  #closed = false;

  async init(): Promise<void> {
    this.#open();
  }

  /**
   * Makes the next `append` reject with `err` and store nothing, as a store
   * that is down would. Lets engine tests check that a failed commit is never
   * acknowledged.
   */
  failNextAppend(err: Error): void {
    this.#failNext = err;
  }

  /**
   * Stores the batch atomically. Throws (storing nothing) on a malformed
   * event or delta, data that JSON cannot represent, or an armed
   * `failNextAppend`.
   */
  async append(events: StoredEvent[], stats: RiderStatsDelta[] = []): Promise<void> {
    this.#open();
    // Yield once, like a real store, so callers never depend on synchronous completion.
    await Promise.resolve();
    if (this.#failNext) {
      const err = this.#failNext;
      this.#failNext = null;
      throw err;
    }
    // Validate and copy everything first: a bad row anywhere must leave the store untouched.
    const rows = events.map(copyEvent);
    const deltas = stats.map(checkDelta);
    for (const e of rows) {
      let s = this.#streams.get(e.stream);
      if (!s) {
        s = { events: new Map(), lastSeq: 0, live: true };
        this.#streams.set(e.stream, s);
      }
      if (s.events.has(e.seq)) continue; // idempotent on (stream, seq)
      s.events.set(e.seq, e);
      // The newest event decides liveness, so a stream reused after a final event (a zone paused again) lives again.
      if (e.seq >= s.lastSeq) {
        s.lastSeq = e.seq;
        s.live = !e.final;
      }
    }
    for (const d of deltas) {
      const key = `${d.riderId}\u0000${d.day}`;
      const cur = this.#stats.get(key) ?? { deliveries: 0, onTime: 0, distanceM: 0, earnings: 0, offers: 0, accepts: 0 };
      cur.deliveries += d.deliveries;
      cur.onTime += d.onTime;
      cur.distanceM += d.distanceM;
      cur.earnings += d.earnings;
      cur.offers += d.offers;
      cur.accepts += d.accepts;
      this.#stats.set(key, cur);
    }
  }

  async readStream(stream: string, afterSeq = 0): Promise<StoredEvent[]> {
    this.#open();
    const s = this.#streams.get(stream);
    if (!s) return [];
    return [...s.events.values()]
      .filter((e) => e.seq > afterSeq)
      .sort((a, b) => a.seq - b.seq)
      .map(cloneEvent);
  }

  /** Keeps the newest snapshot per stream: a late, older save never replaces a newer one. */
  async saveSnapshots(snapshots: Snapshot[]): Promise<void> {
    this.#open();
    const copies = snapshots.map(copySnapshot);
    for (const s of copies) {
      const cur = this.#snapshots.get(s.stream);
      if (!cur || s.seq >= cur.seq) this.#snapshots.set(s.stream, s);
    }
  }

  async loadLive(): Promise<LiveStream[]> {
    this.#open();
    const out: LiveStream[] = [];
    const names = [...this.#streams.keys()].sort();
    for (const name of names) {
      const s = this.#streams.get(name)!;
      if (!s.live) continue;
      const snap = this.#snapshots.get(name) ?? null;
      out.push({
        stream: name,
        snapshot: snap ? { ...snap, state: cloneJson(snap.state) } : null,
        events: await this.readStream(name, snap ? snap.seq : 0),
      });
    }
    return out;
  }

  async riderDailyStats(riderId: string, day: string): Promise<RiderDailyStats | null> {
    this.#open();
    checkDay(day);
    const s = this.#stats.get(`${riderId}\u0000${day}`);
    if (!s) return null;
    return {
      riderId,
      day,
      ...s,
      onTimeRate: s.deliveries > 0 ? s.onTime / s.deliveries : null,
      acceptanceRate: s.offers > 0 ? s.accepts / s.offers : null,
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  #open(): void {
    if (this.#closed) throw new Error('event store is closed');
  }
}

/** JSON round trip: the stored value is independent of the caller's object, and undefined becomes null as in SQL. */
function cloneJson(value: unknown): unknown {
  if (value === undefined) return null;
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError('value is not JSON-serialisable');
  return JSON.parse(text);
}

function copyEvent(e: StoredEvent): StoredEvent {
  if (typeof e.stream !== 'string' || e.stream.length === 0) throw new TypeError('event stream must be a non-empty string');
  if (!Number.isInteger(e.seq) || e.seq < 1 || e.seq > INT4_MAX) throw new RangeError(`event seq must be an integer in 1..${INT4_MAX}: ${e.seq}`);
  if (typeof e.type !== 'string' || e.type.length === 0) throw new TypeError('event type must be a non-empty string');
  if (!Number.isSafeInteger(e.at)) throw new RangeError(`event at must be integer epoch ms: ${e.at}`);
  const out: StoredEvent = { stream: e.stream, seq: e.seq, type: e.type, data: cloneJson(e.data), at: e.at };
  if (e.final) out.final = true;
  return out;
}

function cloneEvent(e: StoredEvent): StoredEvent {
  return { ...e, data: cloneJson(e.data) };
}

function copySnapshot(s: Snapshot): Snapshot {
  if (typeof s.stream !== 'string' || s.stream.length === 0) throw new TypeError('snapshot stream must be a non-empty string');
  if (!Number.isInteger(s.seq) || s.seq < 0 || s.seq > INT4_MAX) throw new RangeError(`snapshot seq out of range: ${s.seq}`);
  if (!Number.isSafeInteger(s.at)) throw new RangeError(`snapshot at must be integer epoch ms: ${s.at}`);
  return { stream: s.stream, seq: s.seq, state: cloneJson(s.state), at: s.at };
}

function checkDay(day: string): void {
  // Strict YYYY-MM-DD and a real calendar date, as the SQL `date` column would demand.
  if (typeof day !== 'string' || !/^\d{4}-\d{2}-\d{2}$/.test(day) || Number.isNaN(Date.parse(`${day}T00:00:00Z`)) || new Date(`${day}T00:00:00Z`).toISOString().slice(0, 10) !== day) {
    throw new RangeError(`day must be a UTC date YYYY-MM-DD: ${day}`);
  }
}

function checkDelta(d: RiderStatsDelta): Required<RiderStatsDelta> {
  if (typeof d.riderId !== 'string' || d.riderId.length === 0) throw new TypeError('stats riderId must be a non-empty string');
  checkDay(d.day);
  const count = (name: string, v: number | undefined): number => {
    const n = v ?? 0;
    if (!Number.isInteger(n) || Math.abs(n) > INT4_MAX) throw new RangeError(`stats ${name} must be an integer: ${v}`);
    return n;
  };
  const amount = (name: string, v: number | undefined): number => {
    const n = v ?? 0;
    if (!Number.isFinite(n)) throw new RangeError(`stats ${name} must be finite: ${v}`);
    return n;
  };
  return {
    riderId: d.riderId,
    day: d.day,
    deliveries: count('deliveries', d.deliveries),
    onTime: count('onTime', d.onTime),
    distanceM: amount('distanceM', d.distanceM),
    earnings: amount('earnings', d.earnings),
    offers: count('offers', d.offers),
    accepts: count('accepts', d.accepts),
  };
}

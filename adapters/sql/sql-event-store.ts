/**
 * EventStore over SQL, the same statements on Postgres (pg) and PGlite. The
 * backends differ only in a tiny SqlClient. Batches travel as one JSON
 * parameter expanded by jsonb_to_recordset: one statement per table however
 * many rows, no per-row parameters, identical on both drivers.
 */
import type { EventStore, LiveStream, RiderDailyStats, RiderStatsDelta, Snapshot, StoredEvent } from '../../engine/index.ts';
import { DEFAULT_SCHEMA, checkSchemaName, schemaStatements } from './schema.ts';

export interface SqlResult<R> {
  rows: R[];
}

/** Something that runs one parameterised statement ($1, $2 ...). */
export interface SqlQueryable {
  query<R = Record<string, unknown>>(text: string, params?: unknown[]): Promise<SqlResult<R>>;
}

/** The whole of what SqlEventStore needs from a driver. */
export interface SqlClient extends SqlQueryable {
  /** Runs `fn` in one transaction: COMMIT if it resolves, ROLLBACK (and rethrow) if it throws. */
  transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface SqlEventStoreOptions {
  /** Schema holding the tables (default `quickdash`); plain lower-case identifier. */
  schema?: string;
}

/** Largest value of the `integer` columns (seq, counters). */
const INT4_MAX = 2 ** 31 - 1;

interface EventRow {
  stream: string;
  seq: number;
  type: string;
  data: unknown;
  at: number;
  final: boolean;
}

interface SnapshotRow {
  stream: string;
  seq: number | null;
  state: unknown;
  at: number | null;
}

interface StatsRow {
  rider_id: string;
  day: string;
  deliveries: number;
  on_time: number;
  distance_m: number;
  earnings: number;
  offers: number;
  accepts: number;
  on_time_rate: number | null;
  acceptance_rate: number | null;
}

export class SqlEventStore implements EventStore {
  readonly schema: string;
  readonly #client: SqlClient;
  readonly #sql: ReturnType<typeof statements>;

  constructor(client: SqlClient, options: SqlEventStoreOptions = {}) {
    this.schema = checkSchemaName(options.schema ?? DEFAULT_SCHEMA);
    this.#client = client;
    this.#sql = statements(this.schema);
  }

  /** Creates the schema and tables if missing. Safe to run from several nodes at once. */
  async init(): Promise<void> {
    await this.#client.transaction(async (tx) => {
      // CREATE ... IF NOT EXISTS still races on the catalogue; serialise concurrent inits of the same schema.
      await tx.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [`quickdash-schema:${this.schema}`]);
      for (const s of schemaStatements(this.schema)) await tx.query(s);
    });
  }

  /**
   * One statement, so one transaction: the events (existing (stream, seq)
   * skipped), the streams they touch, and the summed statistics deltas.
   * @throws TypeError/RangeError on a malformed event or delta, or data JSON
   * cannot represent; the driver's error if the database fails. Either way
   * nothing of the batch is stored.
   */
  async append(events: StoredEvent[], stats: RiderStatsDelta[] = []): Promise<void> {
    if (events.length === 0 && stats.length === 0) return;
    // Serialise first: a value JSON cannot hold fails the batch without touching the database.
    const eventJson = JSON.stringify(events.map(eventRecord));
    const statsJson = JSON.stringify(sumDeltas(stats));
    await this.#client.query(this.#sql.append, [eventJson, statsJson]);
  }

  async readStream(stream: string, afterSeq = 0): Promise<StoredEvent[]> {
    const { rows } = await this.#client.query<EventRow>(this.#sql.readStream, [stream, afterSeq]);
    return rows.map(toEvent);
  }

  /** Keeps the newest snapshot per stream: a late, older save never replaces a newer one. */
  async saveSnapshots(snapshots: Snapshot[]): Promise<void> {
    if (snapshots.length === 0) return;
    // One row per stream: a statement may not update the same row twice.
    const newest = new Map<string, Snapshot>();
    for (const s of snapshots) {
      checkSnapshot(s);
      const cur = newest.get(s.stream);
      if (!cur || s.seq >= cur.seq) newest.set(s.stream, s);
    }
    const json = JSON.stringify([...newest.values()].map((s) => ({ stream: s.stream, seq: s.seq, state: s.state ?? null, at: s.at })));
    await this.#client.query(this.#sql.saveSnapshots, [json]);
  }

  /** Two queries whatever the number of streams, in one repeatable-read transaction so they agree. */
  async loadLive(): Promise<LiveStream[]> {
    const [streams, events] = await this.#client.transaction(async (tx) => {
      await tx.query(`SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY`);
      const s = await tx.query<SnapshotRow>(this.#sql.liveStreams);
      const e = await tx.query<EventRow>(this.#sql.liveEvents);
      return [s.rows, e.rows] as const;
    });
    const byStream = new Map<string, LiveStream>();
    const out: LiveStream[] = [];
    for (const r of streams) {
      const live: LiveStream = {
        stream: r.stream,
        snapshot: r.seq === null ? null : { stream: r.stream, seq: r.seq, state: r.state, at: Number(r.at) },
        events: [],
      };
      byStream.set(r.stream, live);
      out.push(live);
    }
    for (const r of events) byStream.get(r.stream)?.events.push(toEvent(r));
    return out;
  }

  /** @throws RangeError if `day` is not a YYYY-MM-DD calendar date. */
  async riderDailyStats(riderId: string, day: string): Promise<RiderDailyStats | null> {
    checkDay(day);
    const { rows } = await this.#client.query<StatsRow>(this.#sql.riderStats, [riderId, day]);
    const r = rows[0];
    if (!r) return null;
    return {
      riderId: r.rider_id,
      day: r.day,
      deliveries: r.deliveries,
      onTime: r.on_time,
      distanceM: r.distance_m,
      earnings: r.earnings,
      offers: r.offers,
      accepts: r.accepts,
      onTimeRate: r.on_time_rate,
      acceptanceRate: r.acceptance_rate,
    };
  }

  /** Drops this store's schema and everything in it (tests, benchmarks). */
  async drop(): Promise<void> {
    await this.#client.query(`DROP SCHEMA IF EXISTS ${this.schema} CASCADE`);
  }

  /** Closes the client (ends the pool, or shuts the embedded database down cleanly). */
  async close(): Promise<void> {
    await this.#client.close();
  }
}

function statements(schema: string) {
  const s = schema;
  // Bigint columns are read as float8 so both drivers hand back numbers (epoch ms fit exactly).
  // Streams are listed in byte order (COLLATE "C"), as MemoryEventStore sorts them, whatever the database collation.
  const eventCols = `e.stream, e.seq, e.type, e.data, e.at::float8 AS at, e.final`;
  return {
    // Only rows actually inserted move their stream: a skipped re-append must not change liveness.
    // The newest inserted event decides liveness, so a stream reused after a final event lives again.
    // One statement, so one round trip and its own transaction: the events,
    // the streams they move, and the summed statistics deltas ($2, a data-
    // modifying CTE, which runs though nothing reads it).
    append: `
      WITH input AS (
        SELECT * FROM jsonb_to_recordset($1::text::jsonb)
          AS x(stream text, seq integer, type text, data jsonb, at bigint, final boolean)
      ), ins AS (
        INSERT INTO ${s}.events (stream, seq, type, data, at, final)
        SELECT stream, seq, type, data, at, final FROM input
        ON CONFLICT (stream, seq) DO NOTHING
        RETURNING stream, seq, final
      ), newest AS (
        SELECT DISTINCT ON (stream) stream, seq, final FROM ins ORDER BY stream, seq DESC
      ), stats AS (
        INSERT INTO ${s}.rider_daily_stats AS t (rider_id, day, deliveries, on_time, distance_m, earnings, offers, accepts)
        SELECT rider_id, day::date, deliveries, on_time, distance_m, earnings, offers, accepts
        FROM jsonb_to_recordset($2::text::jsonb)
          AS x(rider_id text, day text, deliveries integer, on_time integer, distance_m double precision,
               earnings double precision, offers integer, accepts integer)
        ON CONFLICT (rider_id, day) DO UPDATE SET
          deliveries = t.deliveries + excluded.deliveries,
          on_time = t.on_time + excluded.on_time,
          distance_m = t.distance_m + excluded.distance_m,
          earnings = t.earnings + excluded.earnings,
          offers = t.offers + excluded.offers,
          accepts = t.accepts + excluded.accepts
      )
      INSERT INTO ${s}.streams AS t (stream, kind, last_seq, live, updated_at)
      SELECT stream, split_part(stream, ':', 1), seq, NOT final, now() FROM newest
      ON CONFLICT (stream) DO UPDATE SET
        last_seq = GREATEST(t.last_seq, excluded.last_seq),
        live = CASE WHEN excluded.last_seq >= t.last_seq THEN excluded.live ELSE t.live END,
        updated_at = excluded.updated_at`,
    readStream: `SELECT ${eventCols} FROM ${s}.events e WHERE e.stream = $1 AND e.seq > $2 ORDER BY e.seq`,
    saveSnapshots: `
      INSERT INTO ${s}.snapshots AS t (stream, seq, state, at)
      SELECT stream, seq, state, at FROM jsonb_to_recordset($1::text::jsonb)
        AS x(stream text, seq integer, state jsonb, at bigint)
      ON CONFLICT (stream) DO UPDATE SET seq = excluded.seq, state = excluded.state, at = excluded.at
      WHERE excluded.seq >= t.seq`,
    liveStreams: `
      SELECT st.stream, p.seq, p.state, p.at::float8 AS at
      FROM ${s}.streams st LEFT JOIN ${s}.snapshots p ON p.stream = st.stream
      WHERE st.live ORDER BY st.stream COLLATE "C"`,
    liveEvents: `
      SELECT ${eventCols}
      FROM ${s}.streams st
      JOIN ${s}.events e ON e.stream = st.stream
      LEFT JOIN ${s}.snapshots p ON p.stream = st.stream
      WHERE st.live AND e.seq > COALESCE(p.seq, 0)
      ORDER BY e.stream COLLATE "C", e.seq`,
    riderStats: `
      SELECT rider_id, to_char(day, 'YYYY-MM-DD') AS day, deliveries, on_time, distance_m, earnings, offers, accepts,
        CASE WHEN deliveries > 0 THEN on_time::float8 / deliveries END AS on_time_rate,
        CASE WHEN offers > 0 THEN accepts::float8 / offers END AS acceptance_rate
      FROM ${s}.rider_daily_stats WHERE rider_id = $1 AND day = $2::date`,
  };
}

function toEvent(r: EventRow): StoredEvent {
  const e: StoredEvent = { stream: r.stream, seq: r.seq, type: r.type, data: r.data ?? null, at: Number(r.at) };
  if (r.final) e.final = true;
  return e;
}

// The checks below mirror MemoryEventStore's (adapters may import only engine/index.ts), so both refuse the same batches.

function eventRecord(e: StoredEvent): Record<string, unknown> {
  if (typeof e.stream !== 'string' || e.stream.length === 0) throw new TypeError('event stream must be a non-empty string');
  if (!Number.isInteger(e.seq) || e.seq < 1 || e.seq > INT4_MAX) throw new RangeError(`event seq must be an integer in 1..${INT4_MAX}: ${e.seq}`);
  if (typeof e.type !== 'string' || e.type.length === 0) throw new TypeError('event type must be a non-empty string');
  if (!Number.isSafeInteger(e.at)) throw new RangeError(`event at must be integer epoch ms: ${e.at}`);
  // A top-level function or symbol would vanish silently in JSON.stringify; refuse it like the memory store does.
  if (e.data !== undefined && JSON.stringify(e.data) === undefined) throw new TypeError('value is not JSON-serialisable');
  return { stream: e.stream, seq: e.seq, type: e.type, data: e.data ?? null, at: e.at, final: e.final === true };
}

function checkSnapshot(s: Snapshot): void {
  if (typeof s.stream !== 'string' || s.stream.length === 0) throw new TypeError('snapshot stream must be a non-empty string');
  if (!Number.isInteger(s.seq) || s.seq < 0 || s.seq > INT4_MAX) throw new RangeError(`snapshot seq out of range: ${s.seq}`);
  if (!Number.isSafeInteger(s.at)) throw new RangeError(`snapshot at must be integer epoch ms: ${s.at}`);
  if (s.state !== undefined && JSON.stringify(s.state) === undefined) throw new TypeError('value is not JSON-serialisable');
}

function checkDay(day: string): void {
  if (typeof day !== 'string' || !/^\d{4}-\d{2}-\d{2}$/.test(day) || Number.isNaN(Date.parse(`${day}T00:00:00Z`)) || new Date(`${day}T00:00:00Z`).toISOString().slice(0, 10) !== day) {
    throw new RangeError(`day must be a UTC date YYYY-MM-DD: ${day}`);
  }
}

/** Validates the deltas and sums those for the same rider and day: ON CONFLICT may touch a row once per statement. */
function sumDeltas(stats: RiderStatsDelta[]): Array<Record<string, unknown>> {
  const rows = new Map<string, { rider_id: string; day: string; deliveries: number; on_time: number; distance_m: number; earnings: number; offers: number; accepts: number }>();
  for (const d of stats) {
    if (typeof d.riderId !== 'string' || d.riderId.length === 0) throw new TypeError('stats riderId must be a non-empty string');
    checkDay(d.day);
    const key = `${d.riderId}\u0000${d.day}`;
    const r = rows.get(key) ?? { rider_id: d.riderId, day: d.day, deliveries: 0, on_time: 0, distance_m: 0, earnings: 0, offers: 0, accepts: 0 };
    r.deliveries += count('deliveries', d.deliveries);
    r.on_time += count('onTime', d.onTime);
    r.distance_m += amount('distanceM', d.distanceM);
    r.earnings += amount('earnings', d.earnings);
    r.offers += count('offers', d.offers);
    r.accepts += count('accepts', d.accepts);
    rows.set(key, r);
  }
  return [...rows.values()];
}

function count(name: string, v: number | undefined): number {
  const n = v ?? 0;
  if (!Number.isInteger(n) || Math.abs(n) > INT4_MAX) throw new RangeError(`stats ${name} must be an integer: ${v}`);
  return n;
}

function amount(name: string, v: number | undefined): number {
  const n = v ?? 0;
  if (!Number.isFinite(n)) throw new RangeError(`stats ${name} must be finite: ${v}`);
  return n;
}

/**
 * The engine's durability port. Every order and rider has a stream
 * (`order:<id>`, `rider:<id>`) of events numbered from 1. The first event is
 * `CREATED` (orders, data = OrderInput) or `REGISTERED` (riders, data =
 * RiderInput); the rest are the machine events the actor accepted, verbatim.
 * Implementations: adapters/sql (Postgres via pg, embedded PGlite) and
 * MemoryEventStore here for unit tests.
 */

export interface StoredEvent {
  stream: string;
  seq: number;
  type: string;
  data: unknown;
  /** Engine clock time of the event, epoch ms. */
  at: number;
  /** This event ends the stream's life (delivered, cancelled order): it is not rebuilt after a restart. */
  final?: boolean;
}

export interface Snapshot {
  stream: string;
  /** Seq of the last event folded into `state`. */
  seq: number;
  /** XState persisted snapshot (JSON-safe). */
  state: unknown;
  at: number;
}

/** Additive change to one rider's statistics for one day (UTC date, YYYY-MM-DD). */
export interface RiderStatsDelta {
  riderId: string;
  day: string;
  deliveries?: number;
  onTime?: number;
  distanceM?: number;
  earnings?: number;
  offers?: number;
  accepts?: number;
}

export interface RiderDailyStats {
  riderId: string;
  day: string;
  deliveries: number;
  onTime: number;
  distanceM: number;
  earnings: number;
  offers: number;
  accepts: number;
  /** onTime / deliveries, or null with no deliveries. */
  onTimeRate: number | null;
  /** accepts / offers, or null with no offers. */
  acceptanceRate: number | null;
}

/** A live stream to rebuild: its latest snapshot (if any) and the events after it. */
export interface LiveStream {
  stream: string;
  snapshot: Snapshot | null;
  events: StoredEvent[];
}

export interface EventStore {
  /** Creates the schema if missing. Idempotent. */
  init(): Promise<void>;
  /**
   * Appends one group commit atomically, with the statistics it implies.
   * Idempotent on (stream, seq): an event already stored is skipped.
   * Throws if the store is unreachable; then nothing of the batch is stored.
   */
  append(events: StoredEvent[], stats?: RiderStatsDelta[]): Promise<void>;
  /** Events of one stream with seq > afterSeq, in order. */
  readStream(stream: string, afterSeq?: number): Promise<StoredEvent[]>;
  saveSnapshots(snapshots: Snapshot[]): Promise<void>;
  /** Every stream not yet ended by a final event, for recovery. */
  loadLive(): Promise<LiveStream[]>;
  riderDailyStats(riderId: string, day: string): Promise<RiderDailyStats | null>;
  close(): Promise<void>;
}

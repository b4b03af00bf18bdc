/** Engine settings with production defaults; every one can be overridden per node or per replay. */
export interface EngineConfig {
  /** Shard worker threads. */
  shards: number;
  /** H3 resolution whose cells are the unit of shard ownership. */
  shardRes: number;
  /** H3 resolution of the rider spatial index and of order pickup cells. */
  indexRes: number;
  /** Rings searched around a pickup for candidate riders. */
  searchMaxK: number;
  /** Candidate riders per order handed to the matcher. */
  candidateLimit: number;
  /** How long unassigned orders gather before the matcher runs. */
  matchWindowMs: number;
  matcher: 'batch' | 'greedy';
  /** How long a rider has to answer an offer. */
  offerTtlMs: number;
  /** How long an order may search before it is escalated to operations. */
  searchLimitMs: number;
  /** Failed offers before an order is escalated. */
  maxOfferAttempts: number;
  /** Radius around a store or customer that counts as arrived. */
  geofenceM: number;
  /** Fixes implying a faster speed are rejected as teleports. */
  maxSpeedMps: number;
  /** Fixes stamped further ahead of the engine clock are rejected. */
  maxFutureSkewMs: number;
  /** Travel-time model: speed and detour factor over straight-line distance. */
  travelSpeedMps: number;
  detourFactor: number;
  /** Default order capacity of a rider (bundles from one store). */
  riderCapacity: number;
  /** An actor is snapshotted after this many events since its last snapshot. */
  snapshotEvery: number;
  /** Ridden distance is flushed into daily statistics this often. */
  statsFlushMs: number;
  /** Delivered and cancelled orders stay in memory this long before eviction (reads then come from the log). */
  finishedRetentionMs: number;
}

export const defaultConfig: EngineConfig = {
  shards: 2,
  shardRes: 5,
  indexRes: 8,
  searchMaxK: 12,
  candidateLimit: 40,
  matchWindowMs: 2_000,
  matcher: 'batch',
  offerTtlMs: 30_000,
  searchLimitMs: 15 * 60_000,
  maxOfferAttempts: 5,
  geofenceM: 75,
  maxSpeedMps: 60,
  maxFutureSkewMs: 30_000,
  travelSpeedMps: 6,
  detourFactor: 1.3,
  riderCapacity: 2,
  snapshotEvery: 50,
  statsFlushMs: 60_000,
  finishedRetentionMs: 10 * 60_000,
};

export function resolveConfig(partial: Partial<EngineConfig> = {}): EngineConfig {
  const cfg = { ...defaultConfig, ...partial };
  for (const [k, v] of Object.entries(cfg)) {
    if (typeof v === 'number' && !(Number.isFinite(v) && v >= 0)) throw new RangeError(`config ${k} must be a non-negative number, got ${v}`);
  }
  if (!Number.isInteger(cfg.shards) || cfg.shards < 1 || cfg.shards > 256) throw new RangeError(`config shards must be 1..256, got ${cfg.shards}`);
  return cfg;
}

/**
 * Messages between the engine's coordinator (main thread) and its shards.
 * Plain data only: they cross worker_threads by structured clone. Requests
 * travel in batches, one postMessage per shard per flush.
 */
import type { OrderView, RiderView, NearbyRider, OperationsOrder, OperationsRider, OrderPricing } from '../api.ts';
import type { OrderEvent, OrderInput } from '../order/events.ts';
import type { RiderEvent } from '../rider/events.ts';
import type { LiveStream, RiderStatsDelta, Snapshot, StoredEvent } from '../store/event-store.ts';
import type { Cell, LatLng } from '../types.ts';
import type { ErrorCode } from '../errors.ts';

/** A rider moving between shards: its actor snapshot, position and bookkeeping. */
export interface RiderTransfer {
  riderId: string;
  rid: number;
  seq: number;
  eventsSinceSnapshot: number;
  state: unknown;
  position: { lat: number; lng: number; ts: number; seq: number } | null;
  distanceM: number;
}

/** An available rider near another shard's edge, mirrored there so searches see across it. */
export interface GhostRider {
  riderId: string;
  lat: number;
  lng: number;
  cell: Cell;
  idleSince: number;
  shiftEndsAt: number | null;
}

export type ShardOp =
  /** With `pricing`, the shard prices the order from the supply it sees within `rings` of the pickup. */
  | { op: 'createOrder'; input: OrderInput; pricing?: OrderPricing & { rings: number } }
  | { op: 'orderEvent'; orderId: string; event: OrderEvent }
  | { op: 'registerRider'; riderId: string; rid: number; capacity: number; at: number }
  | { op: 'riderEvent'; riderId: string; event: RiderEvent; position?: LatLng }
  /** Would the rider take this event? Answers null or the refusal; changes nothing. */
  | { op: 'checkRider'; riderId: string; event: RiderEvent }
  /**
   * Packed fixes: [rid, lat, lng, ts, seq] × n, of `calls` ingestFixes calls (each counts in the
   * queue depth); answered with one code per fix (FIX_MOVED).
   */
  | { op: 'fixes'; data: Float64Array; calls: number }
  | { op: 'tick' }
  | { op: 'adoptRider'; transfer: RiderTransfer }
  | { op: 'ghosts'; from: number; riders: GhostRider[] }
  | { op: 'getOrder'; orderId: string }
  | { op: 'getRider'; riderId: string }
  | { op: 'nearby'; lat: number; lng: number; radiusM: number; limit: number }
  /** Supply around a point, from this shard's index within `rings`: own riders, and ghosts unless `ownOnly`. */
  | { op: 'supply'; lat: number; lng: number; radiusM: number; rings: number; ownOnly: boolean }
  | { op: 'zones'; zones: Array<[string, Cell[]]> }
  | { op: 'restore'; streams: LiveStream[]; rids: Record<string, number> }
  | { op: 'counters' }
  /** This shard's online riders and live orders (answers ShardOperations). */
  | { op: 'operations' };

export type ShardRequest = ShardOp & { id: number };

export type ShardResult =
  | { id: number; ok: true; value?: unknown }
  | { id: number; ok: false; error: { code: ErrorCode | 'QD_INTERNAL_RIDER_MOVED'; details: Record<string, unknown> } };

/** A message for an actor that may live in another shard; the coordinator routes it. */
export type Route =
  | { to: 'order'; orderId: string; event: OrderEvent }
  | { to: 'rider'; riderId: string; event: RiderEvent };

export type Update =
  | { kind: 'order'; event: StoredEvent; view: OrderView }
  | { kind: 'rider'; event: StoredEvent; view: RiderView };

/** Everything one batch produced besides the per-request results. */
export interface ShardOutput {
  events: StoredEvent[];
  stats: RiderStatsDelta[];
  snapshots: Snapshot[];
  routes: Route[];
  updates: Update[];
  handoffs: Array<{ to: number; transfer: RiderTransfer }>;
  /** Border riders to mirror, per neighbouring shard; present on ticks. */
  ghosts: Array<{ to: number; riders: GhostRider[] }> | null;
  /** Orders evicted after finishing: the coordinator forgets where they lived. */
  evictedOrders: string[];
}

/**
 * Answer to a `fixes` request: one code per fix, in order, each a FixOutcome
 * (shard/fleet.ts) or FIX_MOVED: the rider has left this shard, and the
 * coordinator re-routes the fix.
 */
export const FIX_MOVED = 255;

/** Answer to an `operations` request. */
export interface ShardOperations {
  riders: OperationsRider[];
  orders: OperationsOrder[];
}

export interface ShardBatch {
  now: number;
  requests: ShardRequest[];
}

export interface ShardReply {
  results: ShardResult[];
  out: ShardOutput;
}

export type { NearbyRider };

/**
 * The one surface the gateway, the gRPC services, the replay and the
 * simulator call. Every method that changes an order or a rider resolves only
 * after the change is durable, and rejects with a DispatchError (code +
 * message) when refused. Listeners see changes only after they are durable.
 */
import type { RiderDailyStats } from './store/event-store.ts';
import type { Cell, Fix, LatLng, OrderSpec, OrderStatus, RiderId, RiderStatus } from './types.ts';
import type { CancelledBy } from './order/events.ts';
import type { PricingConfig, Supply } from './dispatch/index.ts';

export interface OrderView {
  orderId: string;
  status: OrderStatus;
  /** Seq of the last event applied: watchers resume after it. */
  seq: number;
  storeId: string;
  customerId: string;
  pickup: LatLng;
  dropoff: LatLng;
  payment: OrderSpec['payment'];
  /** The provider's payment id once a prepaid order's payment was captured. */
  paymentId: string | null;
  /** What the customer pays for delivery (paise), as quoted when it was placed; null when created without a quote. */
  deliveryFee: number | null;
  riderId: RiderId | null;
  offer: { riderId: RiderId; expiresAt: number } | null;
  createdAt: number;
  readyAt: number;
  promisedAt: number | null;
  assignedAt: number | null;
  pickedUpAt: number | null;
  deliveredAt: number | null;
  cancelledAt: number | null;
  cancel: { by: CancelledBy; reason: string | null } | null;
  escalation: { reason: string; at: number } | null;
  attempts: number;
  /** Shown to the customer only; never sent to riders. */
  otp: string;
}

export interface RiderView {
  riderId: RiderId;
  status: RiderStatus;
  seq: number;
  capacity: number;
  orderIds: string[];
  offer: { orderId: string; storeId: string; pickup: LatLng; dropoff: LatLng; expiresAt: number } | null;
  /** Last known position; `ts` is the phone time of the last fix, 0 while only riderOnline placed it. */
  position: (LatLng & { ts: number }) | null;
  shard: number;
}

/** What one durable change looks like to a watcher. */
export interface OrderUpdate {
  orderId: string;
  seq: number;
  /** The event that caused it: CREATED, OFFER, ACCEPT, ... */
  event: string;
  at: number;
  order: OrderView;
}

export interface RiderUpdate {
  riderId: string;
  seq: number;
  event: string;
  at: number;
  rider: RiderView;
}

export interface FixRejection {
  riderId: string;
  reason: FixRejectReason;
}

export type FixRejectReason = 'nan' | 'outOfRange' | 'teleport' | 'unknownRider' | 'offline' | 'future';

export interface IngestResult {
  accepted: number;
  /** Older than a fix already seen (timestamp or seq): ignored silently. */
  stale: number;
  rejected: FixRejection[];
}

export interface NearbyRider {
  riderId: RiderId;
  status: RiderStatus;
  position: LatLng;
  distanceM: number;
}

export interface EngineCounters {
  shards: number;
  ordersLive: number;
  ridersOnline: number;
  fixesAccepted: number;
  fixesStale: number;
  fixesRejected: Record<string, number>;
  offersMade: number;
  matcherRuns: number;
  handoffs: number;
  eventsCommitted: number;
  /**
   * Requests waiting in the coordinator or awaiting a shard's reply, per shard
   * (a batch of fixes counts as one), as they stood when counters() was called.
   */
  shardQueueDepth: number[];
  /** Time from an order starting to search to a rider accepting it, in engine-clock ms. */
  dispatchLatency: DispatchLatency;
}

/** Dispatch latency as Prometheus-style cumulative buckets plus the latest samples for percentiles. */
export interface DispatchLatency {
  /** Upper bounds of the buckets in ms, ascending. */
  bucketsMs: number[];
  /** Samples at or below each bound since the engine started (cumulative, like a Prometheus histogram). */
  counts: number[];
  count: number;
  sumMs: number;
  /** The most recent samples, oldest first (a bounded window). */
  recentMs: number[];
}

/** An online rider as operations see it. */
export interface OperationsRider {
  riderId: RiderId;
  /** Never 'offline': offline riders are left out. */
  status: RiderStatus;
  /** Last known position; null until riderOnline placed the rider or a fix arrived. */
  position: LatLng | null;
  /**
   * The rider's H3 cell at the engine's index resolution, as the spatial index
   * holds it (recomputed after moving a tenth of a cell edge, so it may lag
   * the position near an edge); null without a position.
   */
  cell: Cell | null;
  orderIds: string[];
  shard: number;
}

/** A live (not delivered, not cancelled) order as operations see it. */
export interface OperationsOrder {
  orderId: string;
  status: OrderStatus;
  storeId: string;
  pickup: LatLng;
  dropoff: LatLng;
  /** H3 cell of the pickup at the engine's index resolution. */
  pickupCell: Cell;
  /** The assigned rider; null until one accepts. */
  riderId: RiderId | null;
  /** The rider holding an unanswered offer, if any. */
  offeredTo: RiderId | null;
  createdAt: number;
}

/** Every online rider and live order, gathered from all shards in one request each. */
export interface OperationsSnapshot {
  /** Engine clock when it was gathered. */
  at: number;
  /** H3 resolution of `cell` and `pickupCell`. */
  indexRes: number;
  riders: OperationsRider[];
  orders: OperationsOrder[];
}

export interface RiderOnlineOptions {
  capacity?: number;
  position?: LatLng;
  /** End of the shift (epoch ms): no order is offered that could not be picked up before it. */
  shiftEndsAt?: number;
}

/**
 * Price an order where it is created: the pickup's shard counts the riders
 * free around the pickup (its own and its neighbours' mirrored ones) and
 * sets the delivery fee, the rider's fee and, unless given, the promised
 * time, all in the one round trip that creates the order.
 */
export interface OrderPricing {
  /** Orders waiting around the pickup (the caller follows demand). */
  demand: number;
  /** Minutes the store needs before a pickup. */
  prepMinutes: number;
  config: PricingConfig;
}

export interface Unsubscribe {
  (): void;
}

export interface DispatchEngine {
  /** With `pricing`, the spec's fees and (if absent) promised time are set from the supply at the pickup. */
  createOrder(spec: OrderSpec, pricing?: OrderPricing): Promise<OrderView>;
  capturePayment(orderId: string, paymentId: string): Promise<OrderView>;
  failPayment(orderId: string, reason: string): Promise<OrderView>;
  cancelOrder(orderId: string, by: CancelledBy, reason?: string): Promise<OrderView>;
  redispatchOrder(orderId: string, reason: string): Promise<OrderView>;
  getOrder(orderId: string): Promise<OrderView>;
  /** Every durable change of one order, starting after `afterSeq` (replayed from the log first). */
  watchOrder(orderId: string, listener: (u: OrderUpdate) => void, afterSeq?: number): Unsubscribe;
  /** Every durable change of every order (operations, metrics). */
  watchOrders(listener: (u: OrderUpdate) => void): Unsubscribe;

  riderOnline(riderId: RiderId, options?: RiderOnlineOptions): Promise<RiderView>;
  riderOffline(riderId: RiderId): Promise<RiderView>;
  riderBreak(riderId: RiderId, onBreak: boolean): Promise<RiderView>;
  ingestFixes(fixes: Fix[]): Promise<IngestResult>;
  /**
   * One rider's fixes, packed [lat, lng, ts, seq] × n: ingestFixes without an object per fix, for a
   * transport that reads fixes off the wire. `fixes` is read before this returns; the caller may reuse it.
   */
  ingestRiderFixes(riderId: RiderId, fixes: Float64Array): Promise<IngestResult>;
  acceptOffer(riderId: RiderId, orderId: string): Promise<OrderView>;
  declineOffer(riderId: RiderId, orderId: string): Promise<OrderView>;
  arrivedPickup(riderId: RiderId, orderId: string): Promise<OrderView>;
  pickedUp(riderId: RiderId, orderId: string): Promise<OrderView>;
  arrivedDropoff(riderId: RiderId, orderId: string): Promise<OrderView>;
  deliver(riderId: RiderId, orderId: string, proof: { otp?: string; proofRef?: string }): Promise<OrderView>;
  getRider(riderId: RiderId): Promise<RiderView>;
  watchRider(riderId: RiderId, listener: (u: RiderUpdate) => void): Unsubscribe;
  watchRiders(listener: (u: RiderUpdate) => void): Unsubscribe;

  nearbyRiders(at: LatLng, radiusM: number, limit?: number): Promise<NearbyRider[]>;
  /** Riders free to take a new order within `radiusM` of `at`: what a quote counts as supply. */
  supplyNear(at: LatLng, radiusM: number): Promise<Supply>;
  pauseZone(zoneId: string, cells: Cell[]): Promise<void>;
  resumeZone(zoneId: string): Promise<void>;
  /**
   * The cells of a zone paused through pauseZone: its current pause, or its last one
   * once resumed (read from the log, so it survives restarts); null for a zone never paused.
   */
  zoneCells(zoneId: string): Promise<Cell[] | null>;
  riderStats(riderId: RiderId, day: string): Promise<RiderDailyStats>;
  counters(): Promise<EngineCounters>;
  /** Every online rider and live order, for the operations map; one request per shard. */
  operationsSnapshot(): Promise<OperationsSnapshot>;

  /** Runs due timers and matcher windows up to the clock's now; a live node calls it on an interval, a replay after each step. */
  tick(): Promise<void>;
  /** Flushes pending commits and stops the shards. */
  close(): Promise<void>;
}

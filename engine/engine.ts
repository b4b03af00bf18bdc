/**
 * The coordinator: the engine's one public object. It owns the directory
 * (which shard holds each order and rider), batches requests to the shards,
 * commits what they produce as group commits, and only then answers callers,
 * routes consequences between shards and tells watchers.
 */
import { randomInt } from 'node:crypto';
import { createActor } from 'xstate';
import pino, { type Logger } from 'pino';
import type {
  DispatchEngine,
  DispatchLatency,
  EngineCounters,
  IngestResult,
  NearbyRider,
  OperationsSnapshot,
  OrderPricing,
  OrderUpdate,
  OrderView,
  RiderOnlineOptions,
  RiderUpdate,
  RiderView,
  Unsubscribe,
} from './api.ts';
import type { Clock } from './clock.ts';
import { resolveConfig, type EngineConfig } from './config.ts';
import { DispatchError, invalidArgument } from './errors.ts';
import type { CancelledBy, OrderEvent, OrderInput } from './order/index.ts';
import { orderMachine } from './order/index.ts';
import type { RiderEvent } from './rider/index.ts';
import type { EventStore, LiveStream, RiderDailyStats, StoredEvent } from './store/event-store.ts';
import { GroupCommitter } from './store/group-commit.ts';
import type { Cell, Fix, LatLng, OrderSpec, OrderStatus } from './types.ts';
import { PointCells, ShardMap, cellOf, edgeLengthM, haversineM } from './geo/index.ts';
import { priceDelivery, pricedSpec, ringsWithin, type Supply } from './dispatch/index.ts';
import { InlineShardHost, WorkerShardHost, type ShardHost } from './shard/host.ts';
import { FixOutcome, fixRejectReason } from './shard/fleet.ts';
import { FIX_MOVED, type Route, type ShardOp, type ShardOperations, type ShardReply, type ShardRequest, type ShardResult } from './shard/protocol.ts';
import { orderViewOf } from './views.ts';

export interface EngineOptions {
  store: EventStore;
  clock: Clock;
  config?: Partial<EngineConfig>;
  /** Run shards as worker threads (default) or in this thread. */
  threads?: boolean;
  logger?: Logger;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

interface SentBatch {
  requests: ShardRequest[];
  waiters: Map<number, Pending>;
}

/**
 * A shard's `fixes` request still in its queue: the ingestFixes calls of one
 * flush join it, so a turn's worth of frames costs the shard one request and
 * the coordinator one reply, and each call reads its own outcomes back by
 * position.
 */
interface FixBatch {
  /** The queued request, whose `data` is re-pointed as fixes join; null when the engine failed and nothing was queued. */
  request: (ShardRequest & { op: 'fixes' }) | null;
  /** Packed [rid, lat, lng, ts, seq] × count, with room to grow; read again to re-route the fixes of riders that moved. */
  packed: Float64Array;
  count: number;
  /** One code per fix, by position: a FixOutcome or FIX_MOVED. */
  outcomes: Promise<Uint8Array>;
}

/** One ingestFixes call's fixes in one batch: `count` of them from position `first`. */
interface FixSpan {
  batch: FixBatch;
  first: number;
  count: number;
}

/** Fixes a new batch has room for before it grows. */
const FIX_BATCH_START = 64;

const MAX_ROUTE_RETRIES = 3;

export async function createEngine(options: EngineOptions): Promise<DispatchEngine> {
  const engine = new Engine(options);
  await engine.start();
  return engine;
}

class Engine implements DispatchEngine {
  readonly #cfg: EngineConfig;
  readonly #store: EventStore;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #committer: GroupCommitter;
  readonly #map: ShardMap;
  /** Pickups are stores: their index cells, looked up once. */
  readonly #pickupCells: PointCells;
  readonly #hosts: ShardHost[] = [];
  readonly #threads: boolean;
  readonly #queued: Array<{ requests: ShardRequest[]; waiters: Map<number, Pending>; transfer: ArrayBuffer[] }>;
  readonly #sent: SentBatch[][];
  #flushScheduled = false;
  #nextRequestId = 1;
  /** Per shard, the fixes batch later ingestFixes calls may still join. */
  readonly #fixBatches: Array<FixBatch | undefined> = [];
  /** Promises of work started by replies (routes, hand-offs, ghosts) that tick() waits for. */
  readonly #inflight = new Set<Promise<unknown>>();
  /** Directory: where each live order and rider is. */
  readonly #orderShard = new Map<string, number>();
  readonly #riders = new Map<string, { rid: number; shard: number }>();
  readonly #ridToRider: string[] = [];
  readonly #zones = new Map<string, { cells: Cell[]; seq: number }>();
  readonly #zoneSeq = new Map<string, number>();
  readonly #orderWatchers = new Map<string, Set<(u: OrderUpdate) => void>>();
  readonly #allOrderWatchers = new Set<(u: OrderUpdate) => void>();
  readonly #riderWatchers = new Map<string, Set<(u: RiderUpdate) => void>>();
  readonly #allRiderWatchers = new Set<(u: RiderUpdate) => void>();
  readonly #counters = { fixesAccepted: 0, fixesStale: 0, fixesRejected: {} as Record<string, number>, handoffs: 0, eventsCommitted: 0 };
  /** When each order still waiting for a rider started searching (engine clock), for dispatch latency. */
  readonly #searchingSince = new Map<string, number>();
  readonly #dispatchLatency = new LatencyRecorder(DISPATCH_BUCKETS_MS, DISPATCH_RECENT_SAMPLES);
  #closing = false;
  #fatal: Error | null = null;

  constructor(options: EngineOptions) {
    this.#cfg = resolveConfig(options.config);
    this.#store = options.store;
    this.#clock = options.clock;
    this.#threads = options.threads ?? true;
    this.#log = options.logger ?? pino({ level: process.env.QD_LOG_LEVEL ?? 'warn' });
    this.#committer = new GroupCommitter(this.#store);
    this.#pickupCells = new PointCells(this.#cfg.indexRes);
    this.#map = new ShardMap({ shardRes: this.#cfg.shardRes, shardCount: this.#cfg.shards, indexRes: this.#cfg.indexRes });
    this.#queued = [];
    this.#sent = [];
    for (let i = 0; i < this.#cfg.shards; i++) {
      this.#queued.push({ requests: [], waiters: new Map(), transfer: [] });
      this.#sent.push([]);
    }
  }

  async start(): Promise<void> {
    await this.#store.init();
    const onReply = (shardId: number, reply: ShardReply) => this.#onReply(shardId, reply);
    const onError = (err: Error) => {
      this.#fatal = err;
      this.#log.fatal({ err }, 'shard worker failed');
    };
    for (let i = 0; i < this.#cfg.shards; i++) {
      this.#hosts.push(this.#threads ? new WorkerShardHost(i, this.#cfg, onReply, onError) : new InlineShardHost(i, this.#cfg, onReply));
    }
    await this.#recover();
  }

  // ------------------------------------------------------------ shard calls

  #call<T>(shard: number, op: ShardOp, transfer?: ArrayBuffer): Promise<T> {
    if (this.#fatal) return Promise.reject(new DispatchError('QD_ERR_INTERNAL', { reason: this.#fatal.message }));
    const id = this.#nextRequestId++;
    const q = this.#queued[shard];
    q.requests.push({ ...op, id } as ShardRequest);
    if (transfer) q.transfer.push(transfer);
    const p = new Promise<T>((resolve, reject) => q.waiters.set(id, { resolve: resolve as (v: unknown) => void, reject }));
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      // At the end of the event-loop turn, not the microtask: a transport that runs microtasks
      // after every socket message (uWS does) would otherwise send one shard message per frame.
      setImmediate(() => this.#flush());
    }
    return p;
  }

  /** One postMessage per shard per flush: batching is what keeps the hot path cheap. */
  #flush(): void {
    this.#flushScheduled = false;
    const now = this.#clock.now();
    for (let s = 0; s < this.#queued.length; s++) {
      const q = this.#queued[s];
      if (q.requests.length === 0) continue;
      this.#queued[s] = { requests: [], waiters: new Map(), transfer: [] };
      this.#sent[s].push({ requests: q.requests, waiters: q.waiters });
      this.#hosts[s].send({ now, requests: q.requests }, q.transfer);
    }
  }

  #onReply(shardId: number, reply: ShardReply): void {
    const batch = this.#sent[shardId].shift();
    if (!batch) {
      this.#log.error({ shard: shardId }, 'reply without a batch');
      return;
    }
    const work = this.#processReply(shardId, batch, reply).catch((err) => this.#log.error({ err, shard: shardId }, 'reply processing failed'));
    this.#track(work);
  }

  async #processReply(shardId: number, batch: SentBatch, reply: ShardReply): Promise<void> {
    const out = reply.out;
    // Hand-offs first and unconditionally: the old shard already let the rider go.
    for (const h of out.handoffs) {
      const d = this.#riders.get(h.transfer.riderId);
      if (d) d.shard = h.to;
      this.#counters.handoffs += 1;
      this.#track(this.#call(h.to, { op: 'adoptRider', transfer: h.transfer }));
    }
    for (const orderId of out.evictedOrders) this.#orderShard.delete(orderId);
    let failure: Error | null = null;
    if (out.events.length > 0 || out.stats.length > 0) {
      try {
        await this.#committer.commit(out.events, out.stats);
        this.#counters.eventsCommitted += out.events.length;
      } catch (err) {
        failure = err as Error;
      }
    }
    if (failure) {
      this.#log.error({ err: failure, shard: shardId, events: out.events.length }, 'group commit failed; rebuilding touched actors from the log');
      const error = new DispatchError('QD_ERR_STORE_UNAVAILABLE', { reason: failure.message }, { cause: failure });
      // Rebuild before answering, so a caller's immediate retry meets the durable state.
      await this.#resync(out.events).catch((err) => this.#log.error({ err }, 'resync after failed commit failed'));
      for (const w of batch.waiters.values()) w.reject(error);
      return;
    }
    for (const r of reply.results) this.#settle(batch, r);
    if (out.snapshots.length > 0) {
      this.#track(this.#store.saveSnapshots(out.snapshots).catch((err) => this.#log.warn({ err }, 'snapshot save failed')));
    }
    for (const u of out.updates) {
      if (u.kind === 'order') {
        this.#trackDispatch(u.view.orderId, u.view.status, u.event.at);
        this.#emitOrder({ orderId: u.view.orderId, seq: u.event.seq, event: u.event.type, at: u.event.at, order: u.view });
      } else this.#emitRider({ riderId: u.view.riderId, seq: u.event.seq, event: u.event.type, at: u.event.at, rider: u.view });
    }
    for (const route of out.routes) this.#track(this.#deliverRoute(route));
    if (out.ghosts) for (const g of out.ghosts) this.#track(this.#call(g.to, { op: 'ghosts', from: shardId, riders: g.riders }));
  }

  #settle(batch: SentBatch, r: ShardResult): void {
    const w = batch.waiters.get(r.id);
    if (!w) return;
    if (r.ok) w.resolve(r.value);
    else if (r.error.code === 'QD_INTERNAL_RIDER_MOVED') w.reject(new RiderMovedSignal());
    else w.reject(DispatchError.fromJSON({ code: r.error.code, details: r.error.details }));
  }

  #track(p: Promise<unknown>): void {
    const guarded = p.catch(() => undefined);
    this.#inflight.add(guarded);
    void guarded.finally(() => this.#inflight.delete(guarded));
  }

  /** Calls the shard that holds a rider, following it if it moved in the meantime. */
  async #callRider<T>(riderId: string, op: ShardOp): Promise<T> {
    for (let attempt = 0; attempt <= MAX_ROUTE_RETRIES; attempt++) {
      const d = this.#riders.get(riderId);
      if (!d) throw new DispatchError('QD_ERR_RIDER_NOT_FOUND', { riderId });
      try {
        return await this.#call<T>(d.shard, op);
      } catch (err) {
        if (!(err instanceof RiderMovedSignal)) throw err;
        // Let the hand-off reply land before looking again.
        await new Promise((r) => setImmediate(r));
      }
    }
    throw new DispatchError('QD_ERR_INTERNAL', { reason: `rider ${riderId} kept moving between shards` });
  }

  async #deliverRoute(route: Route): Promise<void> {
    if (route.to === 'order') {
      const shard = this.#orderShard.get(route.orderId);
      if (shard === undefined) return;
      await this.#call(shard, { op: 'orderEvent', orderId: route.orderId, event: route.event }).catch((err) => {
        this.#log.debug({ orderId: route.orderId, event: route.event.type, err }, 'routed order event refused');
      });
      return;
    }
    try {
      await this.#callRider(route.riderId, { op: 'riderEvent', riderId: route.riderId, event: route.event });
    } catch (err) {
      this.#log.debug({ riderId: route.riderId, event: route.event.type, err }, 'routed rider event refused');
      const ev = route.event;
      // An offer the rider can't take goes back to its order as void, so the order searches again.
      if (ev.type === 'OFFER') {
        await this.#deliverRoute({ to: 'order', orderId: ev.orderId, event: { type: 'OFFER_VOID', at: ev.at, riderId: route.riderId } });
      }
    }
  }

  /** After a failed commit, shards may be ahead of the log: rebuild the touched actors from what is durable. */
  async #resync(events: StoredEvent[]): Promise<void> {
    const streams = [...new Set(events.map((e) => e.stream))];
    const byShard = new Map<number, LiveStream[]>();
    const rids: Record<string, number> = {};
    for (const stream of streams) {
      const stored = await this.#store.readStream(stream);
      const shard = this.#shardOfStream(stream);
      if (shard === null) continue;
      // A stream with nothing durable never existed: the shard drops it and so does the directory.
      if (stored.length === 0 && stream.startsWith('order:')) {
        this.#orderShard.delete(stream.slice(6));
        this.#searchingSince.delete(stream.slice(6));
      }
      if (stream.startsWith('rider:')) rids[stream.slice(6)] = this.#riders.get(stream.slice(6))!.rid;
      const list = byShard.get(shard) ?? [];
      list.push({ stream, snapshot: null, events: stored });
      byShard.set(shard, list);
    }
    await Promise.all([...byShard].map(([shard, list]) => this.#call(shard, { op: 'restore', streams: list, rids })));
  }

  #shardOfStream(stream: string): number | null {
    if (stream.startsWith('order:')) return this.#orderShard.get(stream.slice(6)) ?? null;
    if (stream.startsWith('rider:')) return this.#riders.get(stream.slice(6))?.shard ?? null;
    return null;
  }

  /**
   * Dispatch latency from durable order changes: the clock starts when an
   * order begins searching (again, after a release) and stops when a rider
   * accepts; declined and expired offers stay inside the measured time.
   * An order recovered mid-search after a restart has no start and is not sampled.
   */
  #trackDispatch(orderId: string, status: OrderStatus, at: number): void {
    if (status === 'searching') {
      if (!this.#searchingSince.has(orderId)) this.#searchingSince.set(orderId, at);
    } else if (status === 'assigned') {
      const since = this.#searchingSince.get(orderId);
      if (since !== undefined) this.#dispatchLatency.observe(at - since);
      this.#searchingSince.delete(orderId);
    } else if (status === 'delivered' || status === 'cancelled') {
      this.#searchingSince.delete(orderId);
    }
  }

  // ------------------------------------------------------------ watchers

  #emitOrder(u: OrderUpdate): void {
    const set = this.#orderWatchers.get(u.orderId);
    if (set) for (const l of set) this.#safely(() => l(u));
    for (const l of this.#allOrderWatchers) this.#safely(() => l(u));
  }

  #emitRider(u: RiderUpdate): void {
    const set = this.#riderWatchers.get(u.riderId);
    if (set) for (const l of set) this.#safely(() => l(u));
    for (const l of this.#allRiderWatchers) this.#safely(() => l(u));
  }

  /** A watcher's bug must never unwind the engine. */
  #safely(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#log.error({ err }, 'watcher threw');
    }
  }

  watchOrder(orderId: string, listener: (u: OrderUpdate) => void, afterSeq?: number): Unsubscribe {
    let live = afterSeq === undefined;
    const buffered: OrderUpdate[] = [];
    let lastSeq = afterSeq ?? 0;
    const relay = (u: OrderUpdate) => {
      if (!live) {
        buffered.push(u);
        return;
      }
      if (u.seq <= lastSeq) return;
      lastSeq = u.seq;
      listener(u);
    };
    const set = this.#orderWatchers.get(orderId) ?? new Set();
    set.add(relay);
    this.#orderWatchers.set(orderId, set);
    if (afterSeq !== undefined) {
      // Catch up from the log first, then switch to live updates without a gap or a repeat.
      void this.#history(orderId)
        .then((history) => {
          for (const u of history) {
            if (u.seq <= lastSeq) continue;
            lastSeq = u.seq;
            this.#safely(() => listener(u));
          }
        })
        .catch((err) => this.#log.warn({ err, orderId }, 'order history read failed'))
        .finally(() => {
          live = true;
          for (const u of buffered) relay(u);
          buffered.length = 0;
        });
    }
    return () => {
      set.delete(relay);
      if (set.size === 0) this.#orderWatchers.delete(orderId);
    };
  }

  /** Folds an order's stored events into the update each produced. */
  async #history(orderId: string): Promise<OrderUpdate[]> {
    const events = await this.#store.readStream(`order:${orderId}`);
    const first = events[0];
    if (!first || first.type !== 'CREATED') return [];
    const actor = createActor(orderMachine, { input: first.data as OrderInput });
    actor.start();
    const updates: OrderUpdate[] = [{ orderId, seq: first.seq, event: first.type, at: first.at, order: orderViewOf(actor.getSnapshot(), first.seq) }];
    for (const e of events.slice(1)) {
      actor.send(e.data as OrderEvent);
      updates.push({ orderId, seq: e.seq, event: e.type, at: e.at, order: orderViewOf(actor.getSnapshot(), e.seq) });
    }
    actor.stop();
    return updates;
  }

  watchOrders(listener: (u: OrderUpdate) => void): Unsubscribe {
    this.#allOrderWatchers.add(listener);
    return () => this.#allOrderWatchers.delete(listener);
  }

  watchRider(riderId: string, listener: (u: RiderUpdate) => void): Unsubscribe {
    const set = this.#riderWatchers.get(riderId) ?? new Set();
    set.add(listener);
    this.#riderWatchers.set(riderId, set);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.#riderWatchers.delete(riderId);
    };
  }

  watchRiders(listener: (u: RiderUpdate) => void): Unsubscribe {
    this.#allRiderWatchers.add(listener);
    return () => this.#allRiderWatchers.delete(listener);
  }

  // ------------------------------------------------------------ orders

  #guard(): void {
    if (this.#closing) throw new DispatchError('QD_ERR_SHUTTING_DOWN');
  }

  async createOrder(spec: OrderSpec, pricing?: OrderPricing): Promise<OrderView> {
    this.#guard();
    validateOrderSpec(spec);
    if (pricing !== undefined) validatePricing(pricing);
    if (this.#orderShard.has(spec.orderId)) throw new DispatchError('QD_ERR_ORDER_EXISTS', { orderId: spec.orderId });
    let rings = 0;
    if (pricing) {
      rings = ringsWithin(pricing.config.supplyRadiusM, edgeLengthM(this.#cfg.indexRes));
      if (rings > this.#cfg.searchMaxK) {
        // Beyond what shards mirror of each other: count on every shard, price here.
        const supply = await this.supplyNear(spec.pickup, pricing.config.supplyRadiusM);
        const straightM = haversineM(spec.pickup.lat, spec.pickup.lng, spec.dropoff.lat, spec.dropoff.lng);
        spec = pricedSpec(spec, this.#clock.now(), priceDelivery(straightM, pricing.prepMinutes, pricing.demand, supply, pricing.config));
        pricing = undefined;
        if (this.#orderShard.has(spec.orderId)) throw new DispatchError('QD_ERR_ORDER_EXISTS', { orderId: spec.orderId });
      }
    }
    const now = this.#clock.now();
    const input: OrderInput = {
      spec: { ...spec, pickup: { lat: spec.pickup.lat, lng: spec.pickup.lng }, dropoff: { lat: spec.dropoff.lat, lng: spec.dropoff.lng } },
      otp: String(randomInt(0, 10_000)).padStart(4, '0'),
      createdAt: now,
      searchLimitMs: this.#cfg.searchLimitMs,
      maxAttempts: this.#cfg.maxOfferAttempts,
    };
    const shard = this.#map.shardOf(this.#pickupCells.cellOf(spec.pickup.lat, spec.pickup.lng));
    // Claim the id before the round trip so a concurrent duplicate is refused here.
    this.#orderShard.set(spec.orderId, shard);
    try {
      return await this.#call<OrderView>(shard, pricing ? { op: 'createOrder', input, pricing: { ...pricing, rings } } : { op: 'createOrder', input });
    } catch (err) {
      if (!(err instanceof DispatchError && err.code === 'QD_ERR_ORDER_EXISTS')) this.#orderShard.delete(spec.orderId);
      throw err;
    }
  }

  async #orderEvent(orderId: string, event: OrderEvent): Promise<OrderView> {
    this.#guard();
    const shard = this.#orderShard.get(orderId);
    if (shard === undefined) {
      // A finished order left memory: say what state it ended in rather than "not found".
      const history = await this.#history(orderId);
      const last = history[history.length - 1];
      if (!last) throw new DispatchError('QD_ERR_ORDER_NOT_FOUND', { orderId });
      throw new DispatchError('QD_ERR_INVALID_TRANSITION', { entity: 'order', id: orderId, action: event.type.toLowerCase(), state: last.order.status });
    }
    return this.#call<OrderView>(shard, { op: 'orderEvent', orderId, event });
  }

  capturePayment(orderId: string, paymentId: string): Promise<OrderView> {
    if (!nonEmpty(paymentId)) return Promise.reject(invalidArgument('paymentId', 'must be a non-empty string'));
    return this.#orderEvent(orderId, { type: 'PAYMENT_CAPTURED', at: this.#clock.now(), paymentId });
  }

  failPayment(orderId: string, reason: string): Promise<OrderView> {
    return this.#orderEvent(orderId, { type: 'PAYMENT_FAILED', at: this.#clock.now(), reason: String(reason ?? '') });
  }

  cancelOrder(orderId: string, by: CancelledBy, reason?: string): Promise<OrderView> {
    if (by !== 'customer' && by !== 'ops') return Promise.reject(invalidArgument('by', "must be 'customer' or 'ops'"));
    const event: OrderEvent = { type: 'CANCEL', at: this.#clock.now(), by };
    if (reason !== undefined) event.reason = String(reason);
    return this.#orderEvent(orderId, event);
  }

  redispatchOrder(orderId: string, reason: string): Promise<OrderView> {
    return this.#orderEvent(orderId, { type: 'REDISPATCH', at: this.#clock.now(), reason: String(reason ?? '') });
  }

  async getOrder(orderId: string): Promise<OrderView> {
    const shard = this.#orderShard.get(orderId);
    if (shard !== undefined) return this.#call<OrderView>(shard, { op: 'getOrder', orderId });
    // Finished orders leave memory; the log still knows them.
    const history = await this.#history(orderId);
    const last = history[history.length - 1];
    if (!last) throw new DispatchError('QD_ERR_ORDER_NOT_FOUND', { orderId });
    return last.order;
  }

  // ------------------------------------------------------------ riders

  async riderOnline(riderId: string, options: RiderOnlineOptions = {}): Promise<RiderView> {
    this.#guard();
    if (!nonEmpty(riderId) || riderId.length > 64) throw invalidArgument('riderId', 'must be a non-empty string of at most 64 characters');
    const capacity = options.capacity ?? this.#cfg.riderCapacity;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 10) throw invalidArgument('capacity', 'must be an integer 1..10');
    if (options.position) validateLatLng('position', options.position);
    if (options.shiftEndsAt !== undefined && !(typeof options.shiftEndsAt === 'number' && Number.isFinite(options.shiftEndsAt))) {
      throw invalidArgument('shiftEndsAt', 'must be epoch milliseconds');
    }
    const at = this.#clock.now();
    let d = this.#riders.get(riderId);
    if (!d) {
      const rid = this.#ridToRider.length;
      this.#ridToRider.push(riderId);
      const shard = options.position
        ? this.#map.shardOf(cellOf(options.position.lat, options.position.lng, this.#cfg.indexRes))
        : hashShard(riderId, this.#cfg.shards);
      d = { rid, shard };
      this.#riders.set(riderId, d);
      await this.#call(shard, { op: 'registerRider', riderId, rid, capacity, at });
    }
    try {
      return await this.#callRider<RiderView>(riderId, { op: 'riderEvent', riderId, event: options.shiftEndsAt === undefined ? { type: 'GO_ONLINE', at } : { type: 'GO_ONLINE', at, shiftEndsAt: options.shiftEndsAt }, position: options.position });
    } catch (err) {
      // Going online twice is not an error for a phone that reconnects.
      if (err instanceof DispatchError && err.code === 'QD_ERR_INVALID_TRANSITION') {
        const view = await this.getRider(riderId);
        if (view.status !== 'offline') return view;
      }
      throw err;
    }
  }

  #riderEvent(riderId: string, event: RiderEvent): Promise<RiderView> {
    this.#guard();
    return this.#callRider<RiderView>(riderId, { op: 'riderEvent', riderId, event });
  }

  riderOffline(riderId: string): Promise<RiderView> {
    return this.#riderEvent(riderId, { type: 'GO_OFFLINE', at: this.#clock.now() });
  }

  riderBreak(riderId: string, onBreak: boolean): Promise<RiderView> {
    return this.#riderEvent(riderId, { type: onBreak ? 'START_BREAK' : 'END_BREAK', at: this.#clock.now() });
  }

  getRider(riderId: string): Promise<RiderView> {
    return this.#callRider<RiderView>(riderId, { op: 'getRider', riderId });
  }

  /**
   * A rider's command on an order: the order is the authority (it refuses a
   * wrong rider, an expired offer, a bad proof), then the rider follows.
   */
  async #riderOnOrder(
    riderId: string,
    orderId: string,
    orderEvent: OrderEvent,
    riderEvent: RiderEvent | null,
    riderMustAgree = true,
  ): Promise<OrderView> {
    this.#guard();
    if (!this.#riders.has(riderId)) throw new DispatchError('QD_ERR_RIDER_NOT_FOUND', { riderId });
    // Ask the rider first where it has a say (a bundle is delivered in the rider's drop-off order),
    // so the order never moves on without its rider.
    if (riderEvent && riderMustAgree) {
      const orderKnown = this.#orderShard.has(orderId);
      await this.#callRider(riderId, { op: 'checkRider', riderId, event: riderEvent }).catch((err) => {
        // An unknown or finished order explains itself better than the rider does.
        if (orderKnown) throw err;
      });
    }
    const view = await this.#orderEvent(orderId, orderEvent);
    if (riderEvent) {
      await this.#riderEvent(riderId, riderEvent).catch((err) => {
        // The rider already moved on by itself (a geofence saw the arrival first): the order's word stands.
        this.#log.debug({ riderId, orderId, event: riderEvent.type, err }, 'rider did not follow order event');
      });
    }
    return view;
  }

  acceptOffer(riderId: string, orderId: string): Promise<OrderView> {
    const at = this.#clock.now();
    return this.#riderOnOrder(riderId, orderId, { type: 'ACCEPT', at, riderId }, { type: 'ACCEPT', at, orderId });
  }

  declineOffer(riderId: string, orderId: string): Promise<OrderView> {
    const at = this.#clock.now();
    return this.#riderOnOrder(riderId, orderId, { type: 'DECLINE', at, riderId }, { type: 'DECLINE', at, orderId });
  }

  arrivedPickup(riderId: string, orderId: string): Promise<OrderView> {
    const at = this.#clock.now();
    // A rider already standing at the store (a bundle's second order) need not arrive again.
    return this.#riderOnOrder(riderId, orderId, { type: 'ARRIVED_PICKUP', at, riderId, source: 'rider' }, { type: 'ARRIVED_PICKUP', at }, false);
  }

  pickedUp(riderId: string, orderId: string): Promise<OrderView> {
    const at = this.#clock.now();
    return this.#riderOnOrder(riderId, orderId, { type: 'PICKED_UP', at, riderId }, { type: 'PICKED_UP', at, orderId });
  }

  arrivedDropoff(riderId: string, orderId: string): Promise<OrderView> {
    const at = this.#clock.now();
    return this.#riderOnOrder(riderId, orderId, { type: 'ARRIVED_DROPOFF', at, riderId, source: 'rider' }, { type: 'ARRIVED_DROPOFF', at, orderId });
  }

  deliver(riderId: string, orderId: string, proof: { otp?: string; proofRef?: string }): Promise<OrderView> {
    const at = this.#clock.now();
    const event: OrderEvent = { type: 'DELIVER', at, riderId };
    if (proof?.otp !== undefined) event.otp = String(proof.otp);
    if (proof?.proofRef !== undefined) event.proofRef = String(proof.proofRef);
    return this.#riderOnOrder(riderId, orderId, event, { type: 'DELIVERED', at, orderId });
  }

  // ------------------------------------------------------------ GPS

  async ingestFixes(fixes: Fix[]): Promise<IngestResult> {
    this.#guard();
    if (!Array.isArray(fixes)) throw invalidArgument('fixes', 'must be an array');
    const result: IngestResult = { accepted: 0, stale: 0, rejected: [] };
    const spans: FixSpan[] = [];
    for (const f of fixes) {
      const d = f && typeof f.riderId === 'string' ? this.#riders.get(f.riderId) : undefined;
      if (!d) {
        result.rejected.push({ riderId: String(f?.riderId), reason: 'unknownRider' });
        continue;
      }
      this.#addFix(spans, d, +f.lat, +f.lng, +f.ts, +f.seq);
    }
    this.#sealFixes(spans);
    await this.#settleFixes(spans, result, 0);
    this.#counters.fixesAccepted += result.accepted;
    this.#counters.fixesStale += result.stale;
    return result;
  }

  async ingestRiderFixes(riderId: string, fixes: Float64Array): Promise<IngestResult> {
    this.#guard();
    const result: IngestResult = { accepted: 0, stale: 0, rejected: [] };
    const n = fixes.length >> 2;
    const d = this.#riders.get(riderId);
    if (!d) {
      for (let i = 0; i < n; i++) result.rejected.push({ riderId, reason: 'unknownRider' });
      return result;
    }
    const spans: FixSpan[] = [];
    for (let i = 0; i < n * 4; i += 4) this.#addFix(spans, d, fixes[i], fixes[i + 1], fixes[i + 2], fixes[i + 3]);
    this.#sealFixes(spans);
    await this.#settleFixes(spans, result, 0);
    this.#counters.fixesAccepted += result.accepted;
    this.#counters.fixesStale += result.stale;
    return result;
  }

  /** Adds one fix to its shard's open batch, extending this call's span of it; #sealFixes must follow. */
  #addFix(spans: FixSpan[], d: { rid: number; shard: number }, lat: number, lng: number, ts: number, seq: number): void {
    const batch = this.#openFixBatch(d.shard);
    let span: FixSpan | undefined;
    for (let i = spans.length - 1; i >= 0 && !span; i--) if (spans[i].batch === batch) span = spans[i];
    if (!span || span.first + span.count !== batch.count) {
      spans.push((span = { batch, first: batch.count, count: 0 }));
      if (batch.request) batch.request.calls++;
    }
    if ((batch.count + 1) * 5 > batch.packed.length) {
      const grown = new Float64Array(batch.packed.length * 2);
      grown.set(batch.packed);
      batch.packed = grown;
    }
    const at = batch.count * 5;
    const p = batch.packed;
    p[at] = d.rid;
    p[at + 1] = lat;
    p[at + 2] = lng;
    p[at + 3] = ts;
    p[at + 4] = seq;
    batch.count++;
    span.count++;
  }

  /** Points the queued requests at the fixes just added, for the flush to send. */
  #sealFixes(spans: FixSpan[]): void {
    for (const { batch } of spans) if (batch.request) batch.request.data = batch.packed.subarray(0, batch.count * 5);
  }

  /**
   * The shard's batch that fixes may still join: the one queued last, so that
   * joining never moves fixes ahead of a request queued after them. Otherwise
   * a new one, queued now.
   */
  #openFixBatch(shard: number): FixBatch {
    const open = this.#fixBatches[shard];
    const q = this.#queued[shard];
    if (open?.request && q.requests[q.requests.length - 1] === open.request) return open;
    const packed = new Float64Array(FIX_BATCH_START * 5);
    const data = packed.subarray(0, 0);
    const outcomes = this.#call<Uint8Array>(shard, { op: 'fixes', data, calls: 0 });
    // #call has queued the request last (it queues nothing once the engine has failed, and `outcomes` rejects).
    const last = q.requests[q.requests.length - 1];
    const request = last?.op === 'fixes' && last.data === data ? last : null;
    const batch: FixBatch = { request, packed, count: 0, outcomes };
    this.#fixBatches[shard] = batch;
    return batch;
  }

  /** Waits for the shards' outcomes of this call's fixes and counts them into `result`; fixes of riders that moved go again. */
  async #settleFixes(spans: FixSpan[], result: IngestResult, depth: number): Promise<void> {
    // All awaited before any is read: fixes that moved join open batches, and must do so in one go to stay contiguous.
    const answers = spans.length === 1 ? [await spans[0].batch.outcomes] : await Promise.all(spans.map((x) => x.batch.outcomes));
    const moved: FixSpan[] = [];
    for (let k = 0; k < spans.length; k++) {
      const span = spans[k];
      const outcomes = answers[k];
      const p = span.batch.packed;
      for (let i = span.first; i < span.first + span.count; i++) {
        const o = outcomes[i] as FixOutcome | typeof FIX_MOVED;
        if (o === FixOutcome.Accepted || o === FixOutcome.AcceptedCellChanged) result.accepted++;
        else if (o === FixOutcome.Stale) result.stale++;
        else if (o === FIX_MOVED) {
          // Handed off between routing and the shard: route it again by the directory, which now knows.
          const d = depth < MAX_ROUTE_RETRIES ? this.#riders.get(this.#ridToRider[p[i * 5]]) : undefined;
          if (d) this.#addFix(moved, d, p[i * 5 + 1], p[i * 5 + 2], p[i * 5 + 3], p[i * 5 + 4]);
        } else {
          const reason = fixRejectReason(o);
          result.rejected.push({ riderId: this.#ridToRider[p[i * 5]], reason });
          this.#counters.fixesRejected[reason] = (this.#counters.fixesRejected[reason] ?? 0) + 1;
        }
      }
    }
    if (moved.length === 0) return;
    this.#sealFixes(moved);
    await this.#settleFixes(moved, result, depth + 1);
  }

  // ------------------------------------------------------------ queries, zones, stats

  async nearbyRiders(at: LatLng, radiusM: number, limit = 20): Promise<NearbyRider[]> {
    validateLatLng('at', at);
    if (!(Number.isFinite(radiusM) && radiusM > 0 && radiusM <= 50_000)) throw invalidArgument('radiusM', 'must be in (0, 50000]');
    if (!(Number.isInteger(limit) && limit > 0 && limit <= 1000)) throw invalidArgument('limit', 'must be an integer 1..1000');
    const lists = await Promise.all(
      this.#hosts.map((h) => this.#call<NearbyRider[]>(h.id, { op: 'nearby', lat: at.lat, lng: at.lng, radiusM, limit })),
    );
    return lists.flat().sort((a, b) => a.distanceM - b.distanceM).slice(0, limit);
  }

  async supplyNear(at: LatLng, radiusM: number): Promise<Supply> {
    validateLatLng('at', at);
    if (!(Number.isFinite(radiusM) && radiusM > 0 && radiusM <= 50_000)) throw invalidArgument('radiusM', 'must be in (0, 50000]');
    const rings = ringsWithin(radiusM, edgeLengthM(this.#cfg.indexRes));
    if (rings <= this.#cfg.searchMaxK) {
      // The point's shard mirrors its neighbours' riders this far out: it alone can answer.
      const shard = this.#map.shardOf(cellOf(at.lat, at.lng, this.#cfg.indexRes));
      return this.#call<Supply>(shard, { op: 'supply', lat: at.lat, lng: at.lng, radiusM, rings, ownOnly: false });
    }
    const parts = await Promise.all(
      this.#hosts.map((h) => this.#call<Supply>(h.id, { op: 'supply', lat: at.lat, lng: at.lng, radiusM, rings, ownOnly: true })),
    );
    let available = 0;
    let nearestM: number | null = null;
    for (const p of parts) {
      available += p.available;
      if (p.nearestM !== null && (nearestM === null || p.nearestM < nearestM)) nearestM = p.nearestM;
    }
    return { available, nearestM };
  }

  async pauseZone(zoneId: string, cells: Cell[]): Promise<void> {
    this.#guard();
    if (!nonEmpty(zoneId)) throw invalidArgument('zoneId', 'must be a non-empty string');
    if (!Array.isArray(cells) || cells.length === 0) throw invalidArgument('cells', 'must list at least one H3 cell');
    for (const c of cells) if (!isCell(c)) throw invalidArgument('cells', `${String(c)} is not an H3 cell`);
    await this.#zoneEvent(zoneId, 'PAUSED', { cells }, false);
    this.#zones.set(zoneId, { cells: [...cells], seq: this.#zoneSeq.get(zoneId)! });
    await this.#broadcastZones();
  }

  async resumeZone(zoneId: string): Promise<void> {
    this.#guard();
    if (!this.#zones.has(zoneId)) throw invalidArgument('zoneId', `zone ${zoneId} is not paused`);
    await this.#zoneEvent(zoneId, 'RESUMED', {}, true);
    this.#zones.delete(zoneId);
    await this.#broadcastZones();
  }

  /** Zone pauses are durable too: a restart must not silently release held orders. */
  async #zoneEvent(zoneId: string, type: string, data: unknown, final: boolean): Promise<void> {
    // A zone resumed before a restart is not among the live streams: its log knows where it stands.
    if (!this.#zoneSeq.has(zoneId)) {
      const past = await this.#store.readStream(`zone:${zoneId}`);
      this.#zoneSeq.set(zoneId, past.length > 0 ? past[past.length - 1].seq : 0);
    }
    const seq = this.#zoneSeq.get(zoneId)! + 1;
    await this.#committer.commit([{ stream: `zone:${zoneId}`, seq, type, data, at: this.#clock.now(), final }]);
    this.#zoneSeq.set(zoneId, seq);
  }

  async zoneCells(zoneId: string): Promise<Cell[] | null> {
    if (!nonEmpty(zoneId)) throw invalidArgument('zoneId', 'must be a non-empty string');
    const paused = this.#zones.get(zoneId);
    if (paused) return [...paused.cells];
    // A resumed zone is still known by its log: its last pause names the cells.
    const past = await this.#store.readStream(`zone:${zoneId}`);
    for (let i = past.length - 1; i >= 0; i--) {
      if (past[i].type === 'PAUSED') return [...(past[i].data as { cells: Cell[] }).cells];
    }
    return null;
  }

  async #broadcastZones(): Promise<void> {
    const zones: Array<[string, Cell[]]> = [...this.#zones].map(([id, z]) => [id, z.cells]);
    await Promise.all(this.#hosts.map((h) => this.#call(h.id, { op: 'zones', zones })));
  }

  async riderStats(riderId: string, day: string): Promise<RiderDailyStats> {
    if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) throw invalidArgument('day', 'must be YYYY-MM-DD');
    if (!this.#riders.has(riderId)) throw new DispatchError('QD_ERR_RIDER_NOT_FOUND', { riderId });
    await this.#committer.flush();
    const stats = await this.#store.riderDailyStats(riderId, day);
    return (
      stats ?? { riderId, day, deliveries: 0, onTime: 0, distanceM: 0, earnings: 0, offers: 0, accepts: 0, onTimeRate: null, acceptanceRate: null }
    );
  }

  async counters(): Promise<EngineCounters> {
    // Read before our own requests join the queues.
    const depth = (requests: ShardRequest[]) => requests.reduce((n, r) => n + (r.op === 'fixes' ? r.calls : 1), 0);
    const shardQueueDepth = this.#queued.map((q, s) => depth(q.requests) + this.#sent[s].reduce((n, b) => n + depth(b.requests), 0));
    const per = await Promise.all(this.#hosts.map((h) => this.#call<Record<string, number>>(h.id, { op: 'counters' })));
    const sum = (k: string) => per.reduce((a, c) => a + (c[k] ?? 0), 0);
    return {
      shards: this.#hosts.length,
      ordersLive: sum('ordersLive'),
      ridersOnline: sum('ridersOnline'),
      fixesAccepted: this.#counters.fixesAccepted,
      fixesStale: this.#counters.fixesStale,
      fixesRejected: { ...this.#counters.fixesRejected },
      offersMade: sum('offersMade'),
      matcherRuns: sum('matcherRuns'),
      handoffs: this.#counters.handoffs,
      eventsCommitted: this.#counters.eventsCommitted,
      shardQueueDepth,
      dispatchLatency: this.#dispatchLatency.snapshot(),
    };
  }

  async operationsSnapshot(): Promise<OperationsSnapshot> {
    const per = await Promise.all(this.#hosts.map((h) => this.#call<ShardOperations>(h.id, { op: 'operations' })));
    return {
      at: this.#clock.now(),
      indexRes: this.#cfg.indexRes,
      riders: per.flatMap((p) => p.riders),
      orders: per.flatMap((p) => p.orders),
    };
  }

  // ------------------------------------------------------------ time and lifecycle

  async tick(): Promise<void> {
    if (this.#fatal) throw new DispatchError('QD_ERR_INTERNAL', { reason: this.#fatal.message });
    await Promise.all(this.#hosts.map((h) => this.#call(h.id, { op: 'tick' })));
    await this.#settled();
  }

  /** Waits until every consequence of earlier replies (routes, hand-offs, ghosts) has landed. */
  async #settled(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.all([...this.#inflight]);
  }

  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    await this.#settled();
    await this.#committer.flush();
    await Promise.all(this.#hosts.map((h) => h.close()));
    await this.#store.close();
  }

  // ------------------------------------------------------------ recovery

  /** Rebuilds every live order, rider and zone pause from snapshots plus events. */
  async #recover(): Promise<void> {
    const live = await this.#store.loadLive();
    const byShard = new Map<number, LiveStream[]>();
    const rids: Record<string, number> = {};
    for (const s of live) {
      let shard: number;
      if (s.stream.startsWith('order:')) {
        const pickup = pickupOf(s);
        if (!pickup) continue;
        shard = this.#map.shardOf(cellOf(pickup.lat, pickup.lng, this.#cfg.indexRes));
        this.#orderShard.set(s.stream.slice(6), shard);
      } else if (s.stream.startsWith('rider:')) {
        const riderId = s.stream.slice(6);
        const rid = this.#ridToRider.length;
        this.#ridToRider.push(riderId);
        // The last position is not durable: the rider's next fix hands it to the right shard.
        shard = hashShard(riderId, this.#cfg.shards);
        this.#riders.set(riderId, { rid, shard });
        rids[riderId] = rid;
      } else if (s.stream.startsWith('zone:')) {
        const zoneId = s.stream.slice(5);
        const last = s.events[s.events.length - 1];
        if (last?.type === 'PAUSED') this.#zones.set(zoneId, { cells: (last.data as { cells: Cell[] }).cells, seq: last.seq });
        if (last) this.#zoneSeq.set(zoneId, last.seq);
        continue;
      } else {
        continue;
      }
      const list = byShard.get(shard) ?? [];
      list.push(s);
      byShard.set(shard, list);
    }
    await Promise.all([...byShard].map(([shard, streams]) => this.#call(shard, { op: 'restore', streams, rids })));
    if (this.#zones.size > 0) await this.#broadcastZones();
    if (live.length > 0) this.#log.info({ streams: live.length }, 'recovered live actors');
  }
}

class RiderMovedSignal extends Error {}

/** Dispatch latency buckets (ms): a matcher window is seconds, a rider's answer up to the offer TTL, escalation minutes. */
const DISPATCH_BUCKETS_MS = [500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000, 120_000, 300_000, 600_000];
const DISPATCH_RECENT_SAMPLES = 256;

/** Cumulative bucket counts for a histogram plus a ring of the latest samples for percentiles. */
class LatencyRecorder {
  readonly #bounds: number[];
  readonly #counts: number[];
  #count = 0;
  #sum = 0;
  readonly #recent: number[] = [];
  #next = 0;
  readonly #keep: number;

  constructor(bounds: number[], keep: number) {
    this.#bounds = bounds;
    this.#counts = bounds.map(() => 0);
    this.#keep = keep;
  }

  observe(ms: number): void {
    const v = Math.max(0, ms);
    this.#count += 1;
    this.#sum += v;
    for (let i = 0; i < this.#bounds.length; i++) if (v <= this.#bounds[i]) this.#counts[i] += 1;
    if (this.#recent.length < this.#keep) this.#recent.push(v);
    else this.#recent[this.#next] = v;
    this.#next = (this.#next + 1) % this.#keep;
  }

  snapshot(): DispatchLatency {
    const full = this.#recent.length === this.#keep;
    return {
      bucketsMs: [...this.#bounds],
      counts: [...this.#counts],
      count: this.#count,
      sumMs: this.#sum,
      recentMs: full ? [...this.#recent.slice(this.#next), ...this.#recent.slice(0, this.#next)] : [...this.#recent],
    };
  }
}

function pickupOf(s: LiveStream): LatLng | null {
  const snapCtx = (s.snapshot?.state as { context?: { pickup?: LatLng } } | undefined)?.context;
  if (snapCtx?.pickup) return snapCtx.pickup;
  const first = s.events[0];
  if (first?.type === 'CREATED') return (first.data as OrderInput).spec.pickup;
  return null;
}

function hashShard(id: string, shards: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    h ^= id.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % shards;
}

function nonEmpty(s: unknown): s is string {
  return typeof s === 'string' && s.length > 0;
}

function isCell(c: unknown): c is Cell {
  return typeof c === 'string' && /^[0-9a-f]{15}$/.test(c);
}

function validateLatLng(field: string, p: unknown): asserts p is LatLng {
  const q = p as LatLng | null;
  if (!q || typeof q !== 'object') throw invalidArgument(field, 'must be {lat, lng}');
  if (!(typeof q.lat === 'number' && Number.isFinite(q.lat) && q.lat >= -90 && q.lat <= 90)) throw invalidArgument(`${field}.lat`, 'must be a number in [-90, 90]');
  if (!(typeof q.lng === 'number' && Number.isFinite(q.lng) && q.lng >= -180 && q.lng <= 180)) throw invalidArgument(`${field}.lng`, 'must be a number in [-180, 180]');
}

function validatePricing(p: OrderPricing): void {
  if (!p || typeof p !== 'object' || !p.config || typeof p.config !== 'object') throw invalidArgument('pricing', 'must be {demand, prepMinutes, config}');
  if (!(Number.isInteger(p.demand) && p.demand >= 0)) throw invalidArgument('pricing.demand', 'must be a non-negative integer');
  if (!(Number.isFinite(p.prepMinutes) && p.prepMinutes >= 0)) throw invalidArgument('pricing.prepMinutes', 'must be a non-negative number');
  const r = p.config.supplyRadiusM;
  if (!(Number.isFinite(r) && r > 0 && r <= 50_000)) throw invalidArgument('pricing.config.supplyRadiusM', 'must be in (0, 50000]');
}

function validateOrderSpec(spec: OrderSpec): void {
  if (!spec || typeof spec !== 'object') throw invalidArgument('order', 'must be an object');
  for (const f of ['orderId', 'storeId', 'customerId'] as const) {
    if (!nonEmpty(spec[f]) || spec[f].length > 64) throw invalidArgument(f, 'must be a non-empty string of at most 64 characters');
  }
  validateLatLng('pickup', spec.pickup);
  validateLatLng('dropoff', spec.dropoff);
  if (spec.payment !== 'prepaid' && spec.payment !== 'cod') throw invalidArgument('payment', "must be 'prepaid' or 'cod'");
  for (const f of ['readyAt', 'promisedAt', 'pickupServiceMs', 'dropoffServiceMs'] as const) {
    const v = spec[f];
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v >= 0)) throw invalidArgument(f, 'must be a non-negative number');
  }
  for (const f of ['riderFee', 'deliveryFee'] as const) {
    const v = spec[f];
    if (v !== undefined && !(Number.isInteger(v) && v >= 0)) throw invalidArgument(f, 'must be a non-negative integer (minor units)');
  }
}

/**
 * One shard: the orders whose pickup lies in its cells and the riders now
 * driving in them, each a root XState actor in a Map, plus the compact GPS
 * storage, the spatial index of riders that can take work, the timer wheel
 * and the matcher. It is synchronous and knows nothing of threads: a worker
 * (or a test, inline) feeds it batches and ships what it produced.
 */
import { createActor, type Actor } from 'xstate';
import type { EngineConfig } from '../config.ts';
import { DispatchError } from '../errors.ts';
import { orderMachine, orderStatus, explainOrderRefusal, isFinalOrderStatus } from '../order/index.ts';
import type { OrderEvent, OrderInput, OrderContext } from '../order/index.ts';
import { riderMachine, riderStatus, explainRiderRefusal, riderTarget, riderCanBundle } from '../rider/index.ts';
import type { RiderEvent, RiderContext } from '../rider/index.ts';
import type { OrderView, RiderView, NearbyRider, OperationsOrder, OperationsRider, OrderPricing } from '../api.ts';
import { orderViewOf } from '../views.ts';
import type { LiveStream, StoredEvent } from '../store/event-store.ts';
import type { Cell, LatLng } from '../types.ts';
import { CellGeometry, ShardMap, cellOf, haversineM } from '../geo/index.ts';
import { Fleet, FixOutcome } from './fleet.ts';
import { SpatialIndex } from './spatial-index.ts';
import { TimerWheel } from './timer-wheel.ts';
import { HaversineRouter, priceDelivery, pricedSpec, solveBatch, solveGreedy } from '../dispatch/index.ts';
import type { MatchOrder, MatchRider, Supply } from '../dispatch/index.ts';
import { FIX_MOVED } from './protocol.ts';
import type {
  GhostRider,
  RiderTransfer,
  ShardBatch,
  ShardOutput,
  ShardOperations,
  ShardReply,
  ShardRequest,
  ShardResult,
} from './protocol.ts';

type OrderActor = Actor<typeof orderMachine>;
type RiderActor = Actor<typeof riderMachine>;

interface OrderEntry {
  actor: OrderActor;
  seq: number;
  eventsSinceSnapshot: number;
  cell: Cell;
}

interface RiderEntry {
  actor: RiderActor;
  rid: number;
  slot: number;
  seq: number;
  eventsSinceSnapshot: number;
  /** Cached where the rider is heading, so a GPS fix never asks the statechart. */
  target: { kind: 'pickup' | 'dropoff'; orderId: string; lat: number; lng: number } | null;
}

/** Thrown inside a request when a rider has already moved to another shard; the coordinator re-routes. */
class RiderMoved extends Error {}

const ORDER_STREAM = 'order:';
const RIDER_STREAM = 'rider:';

function utcDay(at: number): string {
  return new Date(at).toISOString().slice(0, 10);
}

function emptyOutput(): ShardOutput {
  return {
    events: [],
    stats: [],
    snapshots: [],
    routes: [],
    updates: [],
    handoffs: [],
    ghosts: null,
    evictedOrders: [],
  };
}

export class Shard {
  readonly id: number;
  readonly #cfg: EngineConfig;
  readonly #map: ShardMap;
  readonly #geometry: CellGeometry;
  readonly #fleet: Fleet;
  /** Riders that can take a new order: our own available riders and ghosts from neighbours. */
  readonly #index: SpatialIndex;
  readonly #timers = new TimerWheel({ tickMs: 100 });
  readonly #router: HaversineRouter;
  readonly #orders = new Map<string, OrderEntry>();
  readonly #riders = new Map<string, RiderEntry>();
  readonly #ridToRider = new Map<number, string>();
  /** Orders waiting for a rider (searching, not offered). */
  readonly #pool = new Set<string>();
  /** Ghost riders by source shard. */
  readonly #ghosts = new Map<number, Map<string, GhostRider>>();
  /** Riders on their way to (or waiting at) a store with room for one more order from it: store id → riders. */
  readonly #bundlers = new Map<string, Set<string>>();
  readonly #bundlerStore = new Map<string, string>();
  /** Paused zones: zone id → cells (any resolution). */
  readonly #zones = new Map<string, Set<Cell>>();
  /** Finished orders and when they finished, for eviction. */
  readonly #finished = new Map<string, number>();
  #now = 0;
  #nextMatchAt = 0;
  #nextStatsFlushAt = 0;
  #out: ShardOutput = emptyOutput();
  /** Views made in this batch, by order: a call's answer and its update are one object in the reply, cloned once. */
  readonly #batchViews = new Map<OrderEntry, { of: unknown; seq: number; view: OrderView }>();
  readonly #counters = { offersMade: 0, matcherRuns: 0, handoffsOut: 0, handoffsIn: 0, eventsEmitted: 0 };

  constructor(id: number, cfg: EngineConfig) {
    this.id = id;
    this.#cfg = cfg;
    this.#geometry = new CellGeometry();
    this.#map = new ShardMap({ shardRes: cfg.shardRes, shardCount: cfg.shards, indexRes: cfg.indexRes });
    this.#fleet = new Fleet({ indexRes: cfg.indexRes, maxSpeedMps: cfg.maxSpeedMps, maxFutureSkewMs: cfg.maxFutureSkewMs });
    this.#index = new SpatialIndex(this.#geometry);
    this.#router = new HaversineRouter({ speedMps: cfg.travelSpeedMps, detourFactor: cfg.detourFactor });
  }

  /** Processes one batch; never throws: failures become error results. */
  handleBatch(batch: ShardBatch): ShardReply {
    if (batch.now > this.#now) this.#now = batch.now;
    this.#out = emptyOutput();
    const results: ShardResult[] = [];
    for (const req of batch.requests) results.push(this.#handle(req));
    const out = this.#out;
    this.#out = emptyOutput();
    this.#batchViews.clear();
    return { results, out };
  }

  #handle(req: ShardRequest): ShardResult {
    try {
      return { id: req.id, ok: true, value: this.#dispatch(req) };
    } catch (err) {
      if (err instanceof DispatchError) return { id: req.id, ok: false, error: { code: err.code, details: err.details } };
      if (err instanceof RiderMoved) return { id: req.id, ok: false, error: { code: 'QD_INTERNAL_RIDER_MOVED', details: {} } };
      const reason = err instanceof Error ? err.message : String(err);
      return { id: req.id, ok: false, error: { code: 'QD_ERR_INTERNAL', details: { reason } } };
    }
  }

  #dispatch(req: ShardRequest): unknown {
    switch (req.op) {
      case 'createOrder':
        return this.#createOrder(req.input, req.pricing);
      case 'orderEvent':
        return this.#orderEvent(req.orderId, req.event);
      case 'registerRider':
        return this.#registerRider(req.riderId, req.rid, req.capacity, req.at);
      case 'riderEvent':
        return this.#riderEvent(req.riderId, req.event, req.position);
      case 'checkRider': {
        const refusal = explainRiderRefusal(this.#rider(req.riderId).actor.getSnapshot(), req.event);
        if (refusal) throw refusal;
        return null;
      }
      case 'fixes':
        return this.#applyFixes(req.data);
      case 'tick':
        return this.#tick();
      case 'adoptRider':
        return this.#adopt(req.transfer);
      case 'ghosts':
        return this.#setGhosts(req.from, req.riders);
      case 'getOrder':
        return this.#orderView(this.#order(req.orderId));
      case 'getRider':
        return this.#riderView(this.#rider(req.riderId));
      case 'nearby':
        return this.#nearby(req.lat, req.lng, req.radiusM, req.limit);
      case 'supply':
        return this.#supply(cellOf(req.lat, req.lng, this.#cfg.indexRes), req.lat, req.lng, req.radiusM, req.rings, req.ownOnly);
      case 'zones':
        this.#zones.clear();
        for (const [zoneId, cells] of req.zones) this.#zones.set(zoneId, new Set(cells));
        return null;
      case 'restore':
        return this.#restore(req.streams, req.rids);
      case 'counters':
        return this.#countersSnapshot();
      case 'operations':
        return this.#operations();
    }
  }

  // ---------------------------------------------------------------- orders

  #order(orderId: string): OrderEntry {
    const o = this.#orders.get(orderId);
    if (!o) throw new DispatchError('QD_ERR_ORDER_NOT_FOUND', { orderId });
    return o;
  }

  #createOrder(input: OrderInput, pricing?: OrderPricing & { rings: number }): OrderView {
    const orderId = input.spec.orderId;
    if (this.#orders.has(orderId)) throw new DispatchError('QD_ERR_ORDER_EXISTS', { orderId });
    const cell = cellOf(input.spec.pickup.lat, input.spec.pickup.lng, this.#cfg.indexRes);
    if (pricing) {
      // Priced here, where the supply is, so placing an order is one round trip; the event records the fees.
      const { pickup, dropoff } = input.spec;
      const supply = this.#supply(cell, pickup.lat, pickup.lng, pricing.config.supplyRadiusM, pricing.rings, false);
      const straightM = haversineM(pickup.lat, pickup.lng, dropoff.lat, dropoff.lng);
      input = { ...input, spec: pricedSpec(input.spec, input.createdAt, priceDelivery(straightM, pricing.prepMinutes, pricing.demand, supply, pricing.config)) };
    }
    const actor = createActor(orderMachine, { input });
    actor.start();
    const entry: OrderEntry = {
      actor,
      seq: 0,
      eventsSinceSnapshot: 0,
      cell,
    };
    this.#orders.set(orderId, entry);
    this.#recordOrder(orderId, entry, 'CREATED', input, input.createdAt);
    this.#afterOrderChange(orderId, entry);
    return this.#orderView(entry);
  }

  /** Applies an event to an order, or throws the reason it is refused. */
  #orderEvent(orderId: string, event: OrderEvent): OrderView {
    const entry = this.#order(orderId);
    const snap = entry.actor.getSnapshot();
    const refusal = explainOrderRefusal(snap, event);
    if (refusal) throw refusal;
    const before = snap.context;
    entry.actor.send(event);
    this.#recordOrder(orderId, entry, event.type, event, event.at);
    this.#orderSideEffects(orderId, entry, before, event);
    this.#afterOrderChange(orderId, entry);
    return this.#orderView(entry);
  }

  /** What an accepted order event means for riders and statistics. */
  #orderSideEffects(orderId: string, entry: OrderEntry, before: OrderContext, event: OrderEvent): void {
    const ctx = entry.actor.getSnapshot().context;
    const at = event.at;
    switch (event.type) {
      case 'DECLINE':
      case 'OFFER_EXPIRED':
        this.#timers.cancel(`offer:${orderId}`);
        if (event.type === 'OFFER_EXPIRED') this.#routeRider(event.riderId, { type: 'OFFER_EXPIRED', at, orderId });
        break;
      case 'OFFER_VOID':
      case 'ACCEPT':
        this.#timers.cancel(`offer:${orderId}`);
        break;
      case 'DELIVER': {
        const onTime = ctx.promisedAt === null || at <= ctx.promisedAt ? 1 : 0;
        this.#out.stats.push({ riderId: event.riderId, day: utcDay(at), deliveries: 1, onTime, earnings: ctx.riderFee });
        break;
      }
      case 'CANCEL':
      case 'PAYMENT_FAILED': {
        this.#timers.cancel(`offer:${orderId}`);
        // The rider holding or offered this order lets it go.
        const riderId = before.riderId ?? before.offer?.riderId ?? null;
        if (riderId) this.#routeRider(riderId, { type: 'ORDER_REMOVED', at, orderId });
        break;
      }
      default:
        break;
    }
  }

  /** Keeps pool, timers and the finished list in line with the order's state. */
  #afterOrderChange(orderId: string, entry: OrderEntry): void {
    const snap = entry.actor.getSnapshot();
    const status = orderStatus(snap);
    const ctx = snap.context;
    if (status === 'searching') {
      this.#pool.add(orderId);
      if (ctx.searchDeadline !== null) this.#timers.schedule(`search:${orderId}`, ctx.searchDeadline);
    } else {
      this.#pool.delete(orderId);
    }
    if (status === 'offered' && ctx.offer) this.#timers.schedule(`offer:${orderId}`, ctx.offer.expiresAt);
    if (status !== 'searching' && status !== 'offered') this.#timers.cancel(`search:${orderId}`);
    if (isFinalOrderStatus(status)) {
      this.#timers.cancel(`offer:${orderId}`);
      this.#finished.set(orderId, this.#now);
    }
  }

  #recordOrder(orderId: string, entry: OrderEntry, type: string, data: unknown, at: number): void {
    entry.seq += 1;
    entry.eventsSinceSnapshot += 1;
    const status = orderStatus(entry.actor.getSnapshot());
    const event: StoredEvent = { stream: ORDER_STREAM + orderId, seq: entry.seq, type, data, at };
    if (isFinalOrderStatus(status)) event.final = true;
    this.#out.events.push(event);
    this.#out.updates.push({ kind: 'order', event, view: this.#orderView(entry) });
    this.#counters.eventsEmitted += 1;
    if (entry.eventsSinceSnapshot >= this.#cfg.snapshotEvery && !event.final) {
      this.#out.snapshots.push({ stream: event.stream, seq: entry.seq, state: entry.actor.getPersistedSnapshot(), at });
      entry.eventsSinceSnapshot = 0;
    }
  }

  #orderView(entry: OrderEntry): OrderView {
    const snap = entry.actor.getSnapshot();
    const last = this.#batchViews.get(entry);
    if (last !== undefined && last.of === snap && last.seq === entry.seq) return last.view;
    const view = orderViewOf(snap, entry.seq);
    this.#batchViews.set(entry, { of: snap, seq: entry.seq, view });
    return view;
  }

  /** Delivers an event to an order here, or asks the coordinator to route it. */
  #routeOrder(orderId: string, event: OrderEvent): void {
    if (this.#orders.has(orderId)) {
      try {
        this.#orderEvent(orderId, event);
      } catch (err) {
        if (!(err instanceof DispatchError)) throw err;
        // A consequence the order no longer wants (it was cancelled meanwhile): nothing to do.
      }
    } else {
      this.#out.routes.push({ to: 'order', orderId, event });
    }
  }

  // ---------------------------------------------------------------- riders

  #rider(riderId: string): RiderEntry {
    const r = this.#riders.get(riderId);
    if (!r) throw new RiderMoved();
    return r;
  }

  #registerRider(riderId: string, rid: number, capacity: number, at: number): RiderView {
    if (this.#riders.has(riderId)) return this.#riderView(this.#riders.get(riderId)!);
    const input = { riderId, capacity, createdAt: at };
    const actor = createActor(riderMachine, { input });
    actor.start();
    const entry: RiderEntry = { actor, rid, slot: this.#fleet.add(riderId), seq: 0, eventsSinceSnapshot: 0, target: null };
    this.#riders.set(riderId, entry);
    this.#ridToRider.set(rid, riderId);
    this.#recordRider(riderId, entry, 'REGISTERED', input, at);
    return this.#riderView(entry);
  }

  #riderEvent(riderId: string, event: RiderEvent, position?: LatLng): RiderView {
    const entry = this.#rider(riderId);
    // Stamped at time 0 with no seq: the phone's own clock may run behind ours, and its first fix must count.
    if (position) this.#fleet.place(riderId, position.lat, position.lng, 0, -1);
    this.#applyRider(riderId, entry, event);
    // A rider placed somewhere another shard owns moves there now.
    if (position) this.#maybeHandOff(riderId, entry);
    return this.#riderView(entry);
  }

  /** Applies an event to a rider here, or throws the refusal. */
  #applyRider(riderId: string, entry: RiderEntry, event: RiderEvent): void {
    const snap = entry.actor.getSnapshot();
    const refusal = explainRiderRefusal(snap, event);
    if (refusal) throw refusal;
    entry.actor.send(event);
    this.#recordRider(riderId, entry, event.type, event, event.at);
    if (event.type === 'OFFER') this.#out.stats.push({ riderId, day: utcDay(event.at), offers: 1 });
    if (event.type === 'ACCEPT') this.#out.stats.push({ riderId, day: utcDay(event.at), accepts: 1 });
    this.#afterRiderChange(riderId, entry);
  }

  /** Delivers an event to a rider here, or asks the coordinator to route it. Refusals of consequences are dropped. */
  #routeRider(riderId: string, event: RiderEvent): void {
    const entry = this.#riders.get(riderId);
    if (!entry) {
      this.#out.routes.push({ to: 'rider', riderId, event });
      return;
    }
    try {
      this.#applyRider(riderId, entry, event);
    } catch (err) {
      if (!(err instanceof DispatchError)) throw err;
      // An offer the rider can no longer take goes back to its order as void.
      if (event.type === 'OFFER') this.#routeOrder(event.orderId, { type: 'OFFER_VOID', at: event.at, riderId });
    }
  }

  /** Keeps the spatial index and the cached target in line with the rider's state. */
  #afterRiderChange(riderId: string, entry: RiderEntry): void {
    const snap = entry.actor.getSnapshot();
    const status = riderStatus(snap);
    const t = riderTarget(snap);
    entry.target = t ? { kind: t.kind, orderId: t.orderId, lat: t.at.lat, lng: t.at.lng } : null;
    const cell = this.#fleet.hasPosition(entry.slot) ? this.#fleet.cell(entry.slot) : null;
    if (status === 'available' && snap.context.offer === null && cell) this.#index.set(riderId, cell);
    else this.#index.remove(riderId);
    this.#trackBundler(riderId, snap);
  }

  /** Keeps the per-store list of riders who could take one more order from the store they are heading to. */
  #trackBundler(riderId: string, snap: ReturnType<RiderActor['getSnapshot']> | null): void {
    const previous = this.#bundlerStore.get(riderId);
    const job = snap?.context.jobs.find((j) => !j.pickedUp);
    const store = snap && job && riderCanBundle(snap, job.storeId) ? job.storeId : undefined;
    if (previous === store) return;
    if (previous !== undefined) {
      const set = this.#bundlers.get(previous)!;
      set.delete(riderId);
      if (set.size === 0) this.#bundlers.delete(previous);
      this.#bundlerStore.delete(riderId);
    }
    if (store !== undefined) {
      let set = this.#bundlers.get(store);
      if (!set) this.#bundlers.set(store, (set = new Set()));
      set.add(riderId);
      this.#bundlerStore.set(riderId, store);
    }
  }

  #recordRider(riderId: string, entry: RiderEntry, type: string, data: unknown, at: number): void {
    entry.seq += 1;
    entry.eventsSinceSnapshot += 1;
    const event: StoredEvent = { stream: RIDER_STREAM + riderId, seq: entry.seq, type, data, at };
    this.#out.events.push(event);
    this.#out.updates.push({ kind: 'rider', event, view: this.#riderView(entry) });
    this.#counters.eventsEmitted += 1;
    if (entry.eventsSinceSnapshot >= this.#cfg.snapshotEvery) {
      this.#out.snapshots.push({ stream: event.stream, seq: entry.seq, state: entry.actor.getPersistedSnapshot(), at });
      entry.eventsSinceSnapshot = 0;
    }
  }

  #riderView(entry: RiderEntry): RiderView {
    const snap = entry.actor.getSnapshot();
    const c: RiderContext = snap.context;
    const slot = entry.slot;
    return {
      riderId: c.riderId,
      status: riderStatus(snap),
      seq: entry.seq,
      capacity: c.capacity,
      orderIds: c.jobs.map((j) => j.orderId),
      offer: c.offer
        ? { orderId: c.offer.orderId, storeId: c.offer.storeId, pickup: c.offer.pickup, dropoff: c.offer.dropoff, expiresAt: c.offer.expiresAt }
        : null,
      position: this.#fleet.hasPosition(slot) ? { lat: this.#fleet.lat(slot), lng: this.#fleet.lng(slot), ts: this.#fleet.ts(slot) } : null,
      shard: this.id,
    };
  }

  // ---------------------------------------------------------------- GPS hot path

  /** Packed [rid, lat, lng, ts, seq] × n. Answers each fix's code by position: a FixOutcome, or FIX_MOVED. */
  #applyFixes(data: Float64Array): Uint8Array {
    const outcomes = new Uint8Array(Math.floor(data.length / 5));
    const fleet = this.#fleet;
    const now = this.#now;
    for (let k = 0; k < outcomes.length; k++) {
      const i = k * 5;
      const riderId = this.#ridToRider.get(data[i]);
      if (riderId === undefined) {
        // Handed off between the coordinator's routing and now: sent back to be re-routed.
        outcomes[k] = FIX_MOVED;
        continue;
      }
      const entry = this.#riders.get(riderId)!;
      const outcome = fleet.applyFix(entry.slot, data[i + 1], data[i + 2], data[i + 3], data[i + 4], now);
      outcomes[k] = outcome;
      if (outcome === FixOutcome.Accepted || outcome === FixOutcome.AcceptedCellChanged) {
        if (outcome === FixOutcome.AcceptedCellChanged) this.#onCellChange(riderId, entry);
        if (entry.target !== null) this.#checkGeofence(riderId, entry);
      }
    }
    return outcomes;
  }

  #onCellChange(riderId: string, entry: RiderEntry): void {
    const cell = this.#fleet.cell(entry.slot);
    if (this.#index.has(riderId)) this.#index.set(riderId, cell);
    else if (entry.target === null) this.#afterRiderChange(riderId, entry);
    this.#maybeHandOff(riderId, entry);
  }

  /** Entering the pickup or drop-off geofence is the only GPS fact the statecharts hear of. */
  #checkGeofence(riderId: string, entry: RiderEntry): void {
    const t = entry.target!;
    const slot = entry.slot;
    if (haversineM(this.#fleet.lat(slot), this.#fleet.lng(slot), t.lat, t.lng) > this.#cfg.geofenceM) return;
    const snap = entry.actor.getSnapshot();
    const status = riderStatus(snap);
    const at = this.#now;
    if (t.kind === 'pickup' && status === 'toPickup') {
      this.#applyRider(riderId, entry, { type: 'ARRIVED_PICKUP', at });
      for (const job of snap.context.jobs) {
        if (!job.pickedUp) this.#routeOrder(job.orderId, { type: 'ARRIVED_PICKUP', at, riderId, source: 'geofence' });
      }
    } else if (t.kind === 'dropoff' && status === 'toDropoff') {
      this.#applyRider(riderId, entry, { type: 'ARRIVED_DROPOFF', at, orderId: t.orderId });
      this.#routeOrder(t.orderId, { type: 'ARRIVED_DROPOFF', at, riderId, source: 'geofence' });
    }
  }

  #maybeHandOff(riderId: string, entry: RiderEntry): void {
    if (!this.#fleet.hasPosition(entry.slot)) return;
    const owner = this.#map.shardOf(this.#fleet.cell(entry.slot));
    if (owner === this.id) return;
    const rec = this.#fleet.export(riderId);
    const transfer: RiderTransfer = {
      riderId,
      rid: entry.rid,
      seq: entry.seq,
      eventsSinceSnapshot: entry.eventsSinceSnapshot,
      state: entry.actor.getPersistedSnapshot(),
      position: rec && rec.hasPosition ? { lat: rec.lat, lng: rec.lng, ts: rec.ts, seq: rec.seq } : null,
      distanceM: rec ? rec.distanceM : 0,
    };
    this.#dropRider(riderId, entry);
    this.#counters.handoffsOut += 1;
    this.#out.handoffs.push({ to: owner, transfer });
  }

  #adopt(t: RiderTransfer): RiderView {
    const actor = createActor(riderMachine, { snapshot: t.state as never, input: undefined as never });
    actor.start();
    const slot = this.#fleet.add(t.riderId);
    if (t.position) {
      this.#fleet.import({ riderId: t.riderId, hasPosition: true, ...t.position, distanceM: t.distanceM });
    }
    const entry: RiderEntry = { actor, rid: t.rid, slot, seq: t.seq, eventsSinceSnapshot: t.eventsSinceSnapshot, target: null };
    this.#riders.set(t.riderId, entry);
    this.#ridToRider.set(t.rid, t.riderId);
    this.#counters.handoffsIn += 1;
    this.#afterRiderChange(t.riderId, entry);
    return this.#riderView(entry);
  }

  #nearby(lat: number, lng: number, radiusM: number, limit: number): NearbyRider[] {
    const found: NearbyRider[] = [];
    for (const [riderId, entry] of this.#riders) {
      const slot = entry.slot;
      if (!this.#fleet.hasPosition(slot)) continue;
      const status = riderStatus(entry.actor.getSnapshot());
      if (status === 'offline') continue;
      const d = haversineM(lat, lng, this.#fleet.lat(slot), this.#fleet.lng(slot));
      if (d <= radiusM) found.push({ riderId, status, position: { lat: this.#fleet.lat(slot), lng: this.#fleet.lng(slot) }, distanceM: d });
    }
    found.sort((a, b) => a.distanceM - b.distanceM);
    return found.slice(0, limit);
  }

  /**
   * Riders free to take a new order within `radiusM` of (lat, lng), which
   * lies in cell `origin`, looked up in the index ring by ring: this shard's
   * available riders and, unless `ownOnly`, the neighbours' mirrored ones
   * (ghosts), which reach searchMaxK rings.
   */
  #supply(origin: Cell, lat: number, lng: number, radiusM: number, rings: number, ownOnly: boolean): Supply {
    let available = 0;
    let nearestM: number | null = null;
    if (this.#index.size === 0) return { available, nearestM };
    for (let k = 0; k <= rings; k++) {
      const ring = this.#geometry.ring(origin, k);
      for (let i = 0; i < ring.length; i++) {
        for (const riderId of this.#index.ridersIn(ring[i])) {
          const own = this.#riders.get(riderId);
          let d: number;
          if (own) d = haversineM(lat, lng, this.#fleet.lat(own.slot), this.#fleet.lng(own.slot));
          else {
            const g = ownOnly ? undefined : this.#ghostOf(riderId);
            if (g === undefined) continue;
            d = haversineM(lat, lng, g.lat, g.lng);
          }
          if (d > radiusM) continue;
          available++;
          if (nearestM === null || d < nearestM) nearestM = d;
        }
      }
    }
    return { available, nearestM };
  }

  #ghostOf(riderId: string): GhostRider | undefined {
    for (const ghosts of this.#ghosts.values()) {
      const g = ghosts.get(riderId);
      if (g) return g;
    }
    return undefined;
  }

  // ---------------------------------------------------------------- time: timers, matcher, ghosts, stats

  #tick(): null {
    const now = this.#now;
    for (const key of this.#timers.advance(now)) this.#fire(key);
    if (now >= this.#nextMatchAt) {
      this.#nextMatchAt = now + this.#cfg.matchWindowMs;
      if (this.#pool.size > 0) this.#match();
    }
    if (now >= this.#nextStatsFlushAt) {
      this.#nextStatsFlushAt = now + this.#cfg.statsFlushMs;
      this.#flushDistance();
      this.#evictFinished();
    }
    this.#out.ghosts = this.#borderRiders();
    return null;
  }

  #fire(key: string): void {
    const sep = key.indexOf(':');
    const kind = key.slice(0, sep);
    const orderId = key.slice(sep + 1);
    const entry = this.#orders.get(orderId);
    if (!entry) return;
    const snap = entry.actor.getSnapshot();
    const status = orderStatus(snap);
    const ctx = snap.context;
    if (kind === 'offer' && status === 'offered' && ctx.offer && ctx.offer.expiresAt <= this.#now) {
      this.#orderEvent(orderId, { type: 'OFFER_EXPIRED', at: this.#now, riderId: ctx.offer.riderId });
    } else if (kind === 'search') {
      if (status === 'offered' && ctx.offer) {
        // Let the running offer finish; look again right after it would expire.
        this.#timers.schedule(key, ctx.offer.expiresAt + 1);
      } else if (status === 'searching') {
        // A paused zone holds its orders: nothing escalates while operations have it paused.
        if (this.#isPaused(entry.cell)) this.#timers.schedule(key, this.#now + this.#cfg.searchLimitMs);
        else this.#orderEvent(orderId, { type: 'SEARCH_TIMEOUT', at: this.#now });
      }
    }
  }

  #isPaused(cell: Cell): boolean {
    if (this.#zones.size === 0) return false;
    for (const cells of this.#zones.values()) {
      if (cells.has(cell)) return true;
      for (const zc of cells) {
        const res = zoneRes(zc);
        if (res < this.#cfg.indexRes && this.#geometry.parent(cell, res) === zc) return true;
      }
    }
    return false;
  }

  /** One matcher window: every waiting order in this shard, solved together. */
  #match(): void {
    const now = this.#now;
    const cfg = this.#cfg;
    const orders: MatchOrder[] = [];
    const riders = new Map<string, MatchRider>();
    for (const orderId of this.#pool) {
      const entry = this.#orders.get(orderId)!;
      if (this.#isPaused(entry.cell)) continue;
      const ctx = entry.actor.getSnapshot().context;
      const excluded = ctx.excludedRiders;
      const eligible = (id: string) => !excluded.includes(id) && this.#canReachInShift(id, ctx.pickup, ctx.readyAt, now);
      const candidates = this.#index.search(entry.cell, { maxK: cfg.searchMaxK, limit: cfg.candidateLimit, accept: eligible });
      // Riders already bound for this store can take it as a bundle: the ride there is shared.
      const bundlers = this.#bundlers.get(ctx.storeId);
      if (bundlers) for (const id of bundlers) if (eligible(id)) candidates.push(id);
      if (candidates.length === 0) continue;
      for (const riderId of candidates) {
        if (!riders.has(riderId)) {
          const r = this.#matchRider(riderId);
          if (r) riders.set(riderId, r);
        }
      }
      orders.push({
        orderId,
        pickupLat: ctx.pickup.lat,
        pickupLng: ctx.pickup.lng,
        readyAt: ctx.readyAt,
        createdAt: ctx.createdAt,
        candidates,
      });
    }
    if (orders.length === 0) return;
    this.#counters.matcherRuns += 1;
    const solve = cfg.matcher === 'greedy' ? solveGreedy : solveBatch;
    const assignments = solve(orders, riders, { now, router: this.#router });
    for (const a of assignments) this.#offer(a.orderId, a.riderId);
  }

  /** A rider whose shift ends before it could collect the order is not a candidate. */
  #canReachInShift(riderId: string, pickup: LatLng, readyAt: number, now: number): boolean {
    let shiftEndsAt: number | null = null;
    let lat = 0;
    let lng = 0;
    const own = this.#riders.get(riderId);
    if (own) {
      shiftEndsAt = own.actor.getSnapshot().context.shiftEndsAt;
      lat = this.#fleet.lat(own.slot);
      lng = this.#fleet.lng(own.slot);
    } else {
      const g = this.#ghostOf(riderId);
      if (g) ({ shiftEndsAt, lat, lng } = g);
    }
    if (shiftEndsAt === null) return true;
    const arrival = now + this.#router.travelTimeMs(lat, lng, pickup.lat, pickup.lng);
    return Math.max(arrival, readyAt) <= shiftEndsAt;
  }

  #matchRider(riderId: string): MatchRider | null {
    const own = this.#riders.get(riderId);
    if (own) {
      const slot = own.slot;
      const ctx = own.actor.getSnapshot().context;
      const rider: MatchRider = { riderId, lat: this.#fleet.lat(slot), lng: this.#fleet.lng(slot), idleSince: ctx.lastChangeAt };
      if (ctx.jobs.length > 0) {
        // A bundled order reaches its customer only after the drop-offs already promised.
        let committed = 0;
        let from = ctx.jobs[0].pickup;
        for (const job of ctx.jobs) {
          committed += this.#router.travelTimeMs(from.lat, from.lng, job.dropoff.lat, job.dropoff.lng);
          from = job.dropoff;
        }
        rider.committedMs = committed;
        rider.heldOrders = ctx.jobs.length;
      }
      return rider;
    }
    const g = this.#ghostOf(riderId);
    return g ? { riderId, lat: g.lat, lng: g.lng, idleSince: g.idleSince } : null;
  }

  #offer(orderId: string, riderId: string): void {
    const at = this.#now;
    const expiresAt = at + this.#cfg.offerTtlMs;
    const view = this.#orderEvent(orderId, { type: 'OFFER', at, riderId, expiresAt });
    this.#counters.offersMade += 1;
    // A ghost is offered at most once per window: its own shard decides if it is still free.
    this.#index.remove(riderId);
    for (const ghosts of this.#ghosts.values()) ghosts.delete(riderId);
    this.#routeRider(riderId, {
      type: 'OFFER',
      at,
      orderId,
      storeId: view.storeId,
      pickup: view.pickup,
      dropoff: view.dropoff,
      expiresAt,
    });
  }

  #setGhosts(from: number, riders: GhostRider[]): null {
    const previous = this.#ghosts.get(from);
    if (previous) for (const id of previous.keys()) if (!this.#riders.has(id)) this.#index.remove(id);
    const next = new Map<string, GhostRider>();
    for (const g of riders) {
      if (this.#riders.has(g.riderId)) continue;
      next.set(g.riderId, g);
      this.#index.set(g.riderId, g.cell);
    }
    this.#ghosts.set(from, next);
    return null;
  }

  /** Available riders whose search neighbourhood reaches into other shards, per shard. */
  #borderRiders(): Array<{ to: number; riders: GhostRider[] }> | null {
    if (this.#cfg.shards === 1) return null;
    const byShard = new Map<number, GhostRider[]>();
    for (let s = 0; s < this.#cfg.shards; s++) if (s !== this.id) byShard.set(s, []);
    for (const [riderId, entry] of this.#riders) {
      if (!this.#index.has(riderId)) continue;
      const slot = entry.slot;
      const cell = this.#fleet.cell(slot);
      const near = this.#map.shardsNear(cell, this.#cfg.searchMaxK);
      if (near.length < 2) continue;
      const ghost: GhostRider = {
        riderId,
        lat: this.#fleet.lat(slot),
        lng: this.#fleet.lng(slot),
        cell,
        idleSince: entry.actor.getSnapshot().context.lastChangeAt,
        shiftEndsAt: entry.actor.getSnapshot().context.shiftEndsAt,
      };
      for (const s of near) if (s !== this.id) byShard.get(s)!.push(ghost);
    }
    return [...byShard].map(([to, riders]) => ({ to, riders }));
  }

  #flushDistance(): void {
    const day = utcDay(this.#now);
    for (const [riderId, entry] of this.#riders) {
      const d = this.#fleet.takeDistance(entry.slot);
      if (d > 0) this.#out.stats.push({ riderId, day, distanceM: d });
    }
  }

  #evictFinished(): void {
    const horizon = this.#now - this.#cfg.finishedRetentionMs;
    for (const [orderId, finishedAt] of this.#finished) {
      if (finishedAt > horizon) continue;
      this.#orders.get(orderId)?.actor.stop();
      this.#orders.delete(orderId);
      this.#finished.delete(orderId);
      this.#out.evictedOrders.push(orderId);
    }
  }

  // ---------------------------------------------------------------- recovery

  /** Rebuilds actors from their latest snapshot plus the events after it, then re-arms timers, pool and index. */
  #restore(streams: LiveStream[], rids: Record<string, number>): number {
    let restored = 0;
    for (const s of streams) {
      if (s.events.length === 0 && !s.snapshot) {
        this.#forget(s.stream);
        continue;
      }
      if (s.stream.startsWith(ORDER_STREAM)) {
        const orderId = s.stream.slice(ORDER_STREAM.length);
        const entry = this.#rebuildOrder(s);
        if (!entry) continue;
        this.#orders.get(orderId)?.actor.stop();
        this.#orders.set(orderId, entry);
        this.#afterOrderChange(orderId, entry);
        restored++;
      } else if (s.stream.startsWith(RIDER_STREAM)) {
        const riderId = s.stream.slice(RIDER_STREAM.length);
        const rid = rids[riderId];
        const actor = rebuildActor(riderMachine, s);
        if (!actor || rid === undefined) continue;
        const old = this.#riders.get(riderId);
        old?.actor.stop();
        const entry: RiderEntry = {
          actor,
          rid,
          slot: old ? old.slot : this.#fleet.add(riderId),
          seq: lastSeq(s),
          eventsSinceSnapshot: s.events.length,
          target: null,
        };
        this.#riders.set(riderId, entry);
        this.#ridToRider.set(rid, riderId);
        this.#afterRiderChange(riderId, entry);
        restored++;
      }
    }
    return restored;
  }

  /** Drops an actor whose every event failed to become durable. */
  #forget(stream: string): void {
    if (stream.startsWith(ORDER_STREAM)) {
      const orderId = stream.slice(ORDER_STREAM.length);
      this.#orders.get(orderId)?.actor.stop();
      this.#orders.delete(orderId);
      this.#pool.delete(orderId);
      this.#finished.delete(orderId);
      this.#timers.cancel(`offer:${orderId}`);
      this.#timers.cancel(`search:${orderId}`);
    } else if (stream.startsWith(RIDER_STREAM)) {
      const riderId = stream.slice(RIDER_STREAM.length);
      const entry = this.#riders.get(riderId);
      if (entry) this.#dropRider(riderId, entry);
    }
  }

  /** Removes every trace of a rider from this shard (it moved away, or never became durable). */
  #dropRider(riderId: string, entry: RiderEntry): void {
    entry.actor.stop();
    this.#index.remove(riderId);
    this.#trackBundler(riderId, null);
    this.#fleet.remove(riderId);
    this.#riders.delete(riderId);
    this.#ridToRider.delete(entry.rid);
  }

  #rebuildOrder(s: LiveStream): OrderEntry | null {
    const actor = rebuildActor(orderMachine, s);
    if (!actor) return null;
    const ctx = actor.getSnapshot().context;
    return {
      actor,
      seq: lastSeq(s),
      eventsSinceSnapshot: s.events.length,
      cell: cellOf(ctx.pickup.lat, ctx.pickup.lng, this.#cfg.indexRes),
    };
  }

  /** Online riders and live orders, read from the Fleet arrays and the actors' current snapshots: no H3 or routing work. */
  #operations(): ShardOperations {
    const riders: OperationsRider[] = [];
    const fleet = this.#fleet;
    for (const [riderId, entry] of this.#riders) {
      const snap = entry.actor.getSnapshot();
      const status = riderStatus(snap);
      if (status === 'offline') continue;
      const slot = entry.slot;
      const placed = fleet.hasPosition(slot);
      riders.push({
        riderId,
        status,
        position: placed ? { lat: fleet.lat(slot), lng: fleet.lng(slot) } : null,
        cell: placed ? fleet.cell(slot) : null,
        orderIds: snap.context.jobs.map((j) => j.orderId),
        shard: this.id,
      });
    }
    const orders: OperationsOrder[] = [];
    for (const [orderId, entry] of this.#orders) {
      if (this.#finished.has(orderId)) continue;
      const snap = entry.actor.getSnapshot();
      const status = orderStatus(snap);
      if (isFinalOrderStatus(status)) continue;
      const c = snap.context;
      orders.push({
        orderId,
        status,
        storeId: c.storeId,
        pickup: { lat: c.pickup.lat, lng: c.pickup.lng },
        dropoff: { lat: c.dropoff.lat, lng: c.dropoff.lng },
        pickupCell: entry.cell,
        riderId: c.riderId,
        offeredTo: c.offer ? c.offer.riderId : null,
        createdAt: c.createdAt,
      });
    }
    return { riders, orders };
  }

  #countersSnapshot(): Record<string, number> {
    let ridersOnline = 0;
    for (const entry of this.#riders.values()) if (riderStatus(entry.actor.getSnapshot()) !== 'offline') ridersOnline++;
    const fc = this.#fleet.counters();
    return {
      ...this.#counters,
      ordersLive: this.#orders.size - this.#finished.size,
      ridersOnline,
      pool: this.#pool.size,
      timers: this.#timers.size,
      indexed: this.#index.size,
      fixesAccepted: fc.accepted,
      fixesStale: fc.stale,
      ...Object.fromEntries(Object.entries(fc.rejected).map(([k, v]) => [`fixesRejected_${k}`, v as number])),
    };
  }
}

/** H3 resolution of a cell from its index bits, without a call into h3 (bits 52-55). */
function zoneRes(cell: Cell): number {
  return parseInt(cell.charAt(1), 16);
}

function lastSeq(s: LiveStream): number {
  const last = s.events[s.events.length - 1];
  return last ? last.seq : s.snapshot ? s.snapshot.seq : 0;
}

/**
 * Recreates an actor from a snapshot (if any) and the events after it. The
 * creation event's data is the machine input; later events are machine
 * events, which the machine folds deterministically.
 */
function rebuildActor<M extends typeof orderMachine | typeof riderMachine>(machine: M, s: LiveStream): Actor<M> | null {
  let actor: Actor<M>;
  let events = s.events;
  if (s.snapshot) {
    actor = createActor(machine as never, { snapshot: s.snapshot.state as never, input: undefined as never }) as unknown as Actor<M>;
  } else {
    const first = events[0];
    if (!first || (first.type !== 'CREATED' && first.type !== 'REGISTERED')) return null;
    actor = createActor(machine as never, { input: first.data as never }) as unknown as Actor<M>;
    events = events.slice(1);
  }
  actor.start();
  for (const e of events) (actor as unknown as { send(ev: unknown): void }).send(e.data);
  return actor;
}

/**
 * Simulated couriers that drive a DispatchEngine the way riders' phones do:
 * they go online, report GPS fixes, accept offers, ride in straight lines to
 * the store and the customer, and tell the engine of each step. The MDRP
 * replay and the city simulator both use this crew; they differ only in
 * where orders and shifts come from and in how time moves.
 *
 * Timing follows the MDRP rules (Reyes et al. 2018, §1): "The pickup time of
 * an order at a restaurant is not smaller than the maximum of a) the order
 * ready time and b) the courier arrival time to the restaurant plus half of
 * the service time at a restaurant. (The departure time is the pickup time
 * plus half of the service time.) The drop-off time of an order is the
 * arrival time of the courier at the customer location plus half of the
 * service time at a customer location." Orders collected together at a store
 * are picked up together, at the latest ready time of the bundle. Idle
 * couriers "wait for (new) instructions ... at the last location of their
 * active assignment": they do not move.
 *
 * Positions are kept on a local plane in metres and projected to lat/lng only
 * for the engine. Nothing here reads a clock: every method takes `now`.
 */
import { DispatchError } from '../../engine/index.ts';
import type { DispatchEngine, ErrorCode, Fix, IngestResult, OrderUpdate, OrderView, RiderUpdate, Unsubscribe } from '../../engine/index.ts';
import type { PlaneProjection } from './instance.ts';

export interface Point {
  x: number;
  y: number;
}

/** What a courier must know of an order to serve it. */
export interface CourierOrder {
  orderId: string;
  storeId: string;
  pickup: Point;
  dropoff: Point;
  readyAt: number;
  /** The customer's code, handed over at the door. */
  otp: string;
}

export interface CrewRules {
  /** s_r: the whole service time at a store (half before the pickup, half after). */
  pickupServiceMs: number;
  /** s_o: the whole service time at a customer (half before the drop-off, half after). */
  dropoffServiceMs: number;
  /** Duration of a straight-line move of `distM` metres. */
  legMs(distM: number): number;
  /** Orders a courier may hold at once (riderOnline capacity); the engine's default when absent. */
  capacity?: number;
  /**
   * Decline an offer whose pickup would fall after the courier's shift end.
   * MDRP: "Couriers cannot pick up any orders after their off-time"; the
   * engine does not know shifts, so the courier refuses what it could not do.
   */
  respectShiftEnd?: boolean;
}

type Phase = 'offline' | 'idle' | 'toStore' | 'atStore' | 'leavingStore' | 'toCustomer' | 'atCustomer' | 'leavingCustomer';

interface Job {
  order: CourierOrder;
  pickedUp: boolean;
  /** arrivedPickup was sent (or the engine saw the arrival itself). */
  arrivalSent: boolean;
}

interface Leg {
  from: Point;
  to: Point;
  departAt: number;
  arriveAt: number;
}

/** One courier's day so far. Durations in ms of model time. */
export interface CourierStats {
  courierId: string;
  drivingMs: number;
  /** s_r once per store visit that picked something up (the MDRP evaluator counts it per bundle). */
  pickupServiceMs: number;
  /** s_o per delivered order. */
  dropoffServiceMs: number;
  deliveries: number;
  pickupVisits: number;
  /** Bundles picked up after the shift end: should stay 0 when respectShiftEnd holds. */
  pickupsAfterShiftEnd: number;
  distanceM: number;
  onlineAt: number | null;
  offlineAt: number | null;
}

/** Counts of what the crew did, for diagnostics and live summaries. */
export interface CrewCounters {
  fixesSent: number;
  fixesAccepted: number;
  fixesRejected: number;
  offersAccepted: number;
  offersDeclined: number;
  /** Offers gone (expired or voided) before the answer landed. */
  offersLost: number;
  deliveries: number;
  /** Jobs taken away by the engine (cancelled or reassigned orders). */
  jobsRemoved: number;
}

class Courier {
  readonly id: string;
  phase: Phase = 'offline';
  pos: Point;
  seq = 0;
  leg: Leg | null = null;
  jobs: Job[] = [];
  /** When the courier reached the store it is at. */
  arrivedAt = 0;
  /** End of the current timed activity: the drop-off moment at a customer, the departure when leaving. */
  until = Infinity;
  /** The order being handed over at the customer. */
  dropping: string | null = null;
  shiftEndAt: number | null = null;
  offDuty = false;
  /** An offer seen on the rider's stream and not answered yet. */
  offer: string | null = null;
  answered: string | null = null;
  /** The engine's order of the rider's jobs: drop-offs follow it. */
  engineOrderIds: string[] = [];
  readonly stats: CourierStats;

  constructor(id: string, pos: Point) {
    this.id = id;
    this.pos = pos;
    this.stats = {
      courierId: id,
      drivingMs: 0,
      pickupServiceMs: 0,
      dropoffServiceMs: 0,
      deliveries: 0,
      pickupVisits: 0,
      pickupsAfterShiftEnd: 0,
      distanceM: 0,
      onlineAt: null,
      offlineAt: null,
    };
  }

  /** Where the courier is at `now`, on its leg if it is riding. */
  positionAt(now: number): Point {
    const leg = this.leg;
    if (!leg) return this.pos;
    const span = leg.arriveAt - leg.departAt;
    const f = span <= 0 ? 1 : Math.min(1, Math.max(0, (now - leg.departAt) / span));
    return { x: leg.from.x + (leg.to.x - leg.from.x) * f, y: leg.from.y + (leg.to.y - leg.from.y) * f };
  }

  /** The moment of the next thing this courier does by itself, or Infinity. */
  nextEventAt(sr: number): number {
    switch (this.phase) {
      case 'toStore':
      case 'toCustomer':
        return this.leg!.arriveAt;
      case 'atStore':
        return this.pickupDueAt(sr);
      case 'leavingStore':
      case 'atCustomer':
      case 'leavingCustomer':
        return this.until;
      default:
        return Infinity;
    }
  }

  /** Pickup moment at the store: arrival plus half the service, and not before the latest ready time of what waits there. */
  pickupDueAt(sr: number): number {
    let due = this.arrivedAt + sr / 2;
    for (const j of this.jobs) if (!j.pickedUp && j.order.readyAt > due) due = j.order.readyAt;
    return due;
  }

  waiting(): Job[] {
    return this.jobs.filter((j) => !j.pickedUp);
  }
}

/** Codes that mean "the engine already knows" or "too late", which a real phone shrugs off. */
const ALREADY: readonly ErrorCode[] = ['QD_ERR_INVALID_TRANSITION'];
const OFFER_GONE: readonly ErrorCode[] = ['QD_ERR_NO_OFFER', 'QD_ERR_OFFER_EXPIRED'];

/**
 * A crew of couriers bound to one engine. It listens to the engine's rider and
 * order streams (offers, job order, cancellations); the caller drives it by
 * calling, at each step, advance → sendFixes → engine.tick → answerOffers.
 */
export class CourierCrew {
  readonly #engine: DispatchEngine;
  readonly #projection: PlaneProjection;
  readonly #rules: CrewRules;
  readonly #couriers = new Map<string, Courier>();
  readonly #orders = new Map<string, CourierOrder>();
  /** Which courier holds each order. */
  readonly #holder = new Map<string, Courier>();
  readonly #unsubscribe: Unsubscribe[];
  readonly counters: CrewCounters = {
    fixesSent: 0,
    fixesAccepted: 0,
    fixesRejected: 0,
    offersAccepted: 0,
    offersDeclined: 0,
    offersLost: 0,
    deliveries: 0,
    jobsRemoved: 0,
  };

  constructor(engine: DispatchEngine, projection: PlaneProjection, rules: CrewRules) {
    this.#engine = engine;
    this.#projection = projection;
    this.#rules = rules;
    this.#unsubscribe = [engine.watchRiders((u) => this.#onRider(u)), engine.watchOrders((u) => this.#onOrder(u))];
  }

  /** Stops listening to the engine. */
  close(): void {
    for (const u of this.#unsubscribe) u();
  }

  /** Tells the crew where an order's store and customer are and its otp, so an offer of it can be served without a lookup. */
  know(order: CourierOrder): void {
    this.#orders.set(order.orderId, order);
  }

  /** Forgets a finished order (keeps memory flat over a long simulation). */
  forget(orderId: string): void {
    if (!this.#holder.has(orderId)) this.#orders.delete(orderId);
  }

  /**
   * Puts a courier on duty at `at` (riderOnline with that position).
   * @throws DispatchError when the engine refuses.
   */
  async online(courierId: string, at: Point, now: number, shiftEndAt: number | null = null): Promise<void> {
    const c = this.#couriers.get(courierId) ?? new Courier(courierId, at);
    this.#couriers.set(courierId, c);
    c.pos = at;
    c.shiftEndAt = shiftEndAt;
    c.offDuty = false;
    // The engine is told when the courier stops taking work: the shift end less half a pickup
    // service and a minute for the evaluator's whole-minute rides, so its offers fit the shift.
    const shiftEndsAt = shiftEndAt === null ? undefined : shiftEndAt - this.#rules.pickupServiceMs / 2 - 60_000;
    await this.#engine.riderOnline(courierId, {
      position: this.#projection.toLatLng(at.x, at.y),
      capacity: this.#rules.capacity,
      ...(shiftEndsAt === undefined ? {} : { shiftEndsAt }),
    });
    c.phase = 'idle';
    c.stats.onlineAt ??= now;
  }

  /** The shift is over: no new work, and offline as soon as the courier holds nothing (riderOffline is refused before). */
  endShift(courierId: string): void {
    const c = this.#couriers.get(courierId);
    if (c) c.offDuty = true;
  }

  stats(courierId: string): CourierStats | undefined {
    return this.#couriers.get(courierId)?.stats;
  }

  /** Couriers online and, of those, holding at least one order. */
  census(): { online: number; busy: number } {
    let online = 0;
    let busy = 0;
    for (const c of this.#couriers.values()) {
      if (c.phase === 'offline') continue;
      online++;
      if (c.jobs.length > 0) busy++;
    }
    return { online, busy };
  }

  /** The next moment a courier finishes a ride, a wait or a service, or Infinity. */
  nextEventAt(): number {
    let next = Infinity;
    const sr = this.#rules.pickupServiceMs;
    for (const c of this.#couriers.values()) {
      const t = c.nextEventAt(sr);
      if (t < next) next = t;
    }
    return next;
  }

  /**
   * Carries every courier forward to `now`: arrivals, pickups, deliveries,
   * departures, and going offline after the shift. Couriers run in parallel,
   * each one's steps in order.
   * @throws Error naming courier, action and order when the engine refuses a step for a reason other than "already done".
   */
  async advance(now: number): Promise<void> {
    const sr = this.#rules.pickupServiceMs;
    const work: Promise<void>[] = [];
    for (const c of this.#couriers.values()) {
      if (c.phase === 'offline') continue;
      if (c.nextEventAt(sr) <= now || (c.phase === 'idle' && c.offDuty && c.jobs.length === 0 && c.offer === null)) work.push(this.#run(c, now));
    }
    await settleAll(work);
  }

  /** One GPS fix per online courier at its position at `now`, all in one batch. */
  async sendFixes(now: number): Promise<IngestResult> {
    const fixes: Fix[] = [];
    for (const c of this.#couriers.values()) {
      if (c.phase === 'offline') continue;
      const p = c.positionAt(now);
      const ll = this.#projection.toLatLng(p.x, p.y);
      fixes.push({ riderId: c.id, lat: ll.lat, lng: ll.lng, ts: now, seq: ++c.seq });
    }
    if (fixes.length === 0) return { accepted: 0, stale: 0, rejected: [] };
    const result = await this.#engine.ingestFixes(fixes);
    this.counters.fixesSent += fixes.length;
    this.counters.fixesAccepted += result.accepted;
    this.counters.fixesRejected += result.rejected.length;
    return result;
  }

  /**
   * Answers every offer seen since the last call: accepted unless the courier
   * is off duty or could not pick the order up before its shift ends.
   */
  async answerOffers(now: number): Promise<void> {
    const work: Promise<void>[] = [];
    for (const c of this.#couriers.values()) {
      if (c.offer !== null && c.phase !== 'offline') work.push(this.#answer(c, c.offer, now));
    }
    await settleAll(work);
  }

  // ---------------------------------------------------------------- engine streams

  #onRider(u: RiderUpdate): void {
    const c = this.#couriers.get(u.riderId);
    if (!c) return;
    c.engineOrderIds = u.rider.orderIds;
    const offer = u.rider.offer;
    if (offer && offer.orderId !== c.answered) c.offer = offer.orderId;
    else if (!offer) c.offer = null;
  }

  #onOrder(u: OrderUpdate): void {
    const holder = this.#holder.get(u.orderId);
    if (!holder) return;
    const o = u.order;
    // Cancelled, or released back to search: the courier drops it and carries on from where it is.
    if (o.status === 'cancelled' || o.riderId !== holder.id) this.#dropJob(holder, u.orderId, u.at);
  }

  // ---------------------------------------------------------------- one courier

  async #run(c: Courier, now: number): Promise<void> {
    const { pickupServiceMs: sr, dropoffServiceMs: so } = this.#rules;
    for (;;) {
      switch (c.phase) {
        case 'idle': {
          if (c.offDuty && c.jobs.length === 0 && c.offer === null) {
            const done = await this.#call(c, 'go offline', null, () => this.#engine.riderOffline(c.id), ['QD_ERR_RIDER_BUSY']);
            // Busy: an offer raced in; it is declined and the next step tries again.
            if (done === null) return;
            c.phase = 'offline';
            c.stats.offlineAt = now;
          }
          return;
        }
        case 'toStore': {
          const leg = c.leg!;
          if (leg.arriveAt > now) return;
          this.#endLeg(c);
          c.phase = 'atStore';
          c.arrivedAt = leg.arriveAt;
          await this.#announceArrival(c);
          break;
        }
        case 'atStore': {
          const waiting = c.waiting();
          if (waiting.length === 0) {
            this.#plan(c, now);
            break;
          }
          const due = c.pickupDueAt(sr);
          if (due > now) return;
          // Bundles taken on at the store have not announced their arrival yet.
          await this.#announceArrival(c);
          for (const j of waiting) {
            await this.#call(c, 'pick up', j.order.orderId, () => this.#engine.pickedUp(c.id, j.order.orderId));
            j.pickedUp = true;
          }
          c.stats.pickupVisits++;
          c.stats.pickupServiceMs += sr;
          if (c.shiftEndAt !== null && due > c.shiftEndAt) c.stats.pickupsAfterShiftEnd++;
          c.phase = 'leavingStore';
          c.until = due + sr / 2;
          break;
        }
        case 'leavingStore':
        case 'leavingCustomer': {
          if (c.until > now) return;
          this.#plan(c, c.until);
          break;
        }
        case 'toCustomer': {
          const leg = c.leg!;
          if (leg.arriveAt > now) return;
          this.#endLeg(c);
          c.phase = 'atCustomer';
          c.until = leg.arriveAt + so / 2;
          const orderId = c.dropping!;
          // The geofence may have seen the arrival first.
          await this.#call(c, 'arrive at drop-off', orderId, () => this.#engine.arrivedDropoff(c.id, orderId), ALREADY);
          break;
        }
        case 'atCustomer': {
          if (c.until > now) return;
          const orderId = c.dropping!;
          const job = c.jobs.find((j) => j.order.orderId === orderId);
          if (job) {
            await this.#call(c, 'deliver', orderId, () => this.#engine.deliver(c.id, orderId, { otp: job.order.otp }));
            this.#removeJob(c, orderId);
            c.stats.deliveries++;
            c.stats.dropoffServiceMs += so;
            this.counters.deliveries++;
          }
          c.dropping = null;
          c.phase = 'leavingCustomer';
          c.until += so / 2;
          break;
        }
        case 'offline':
          return;
      }
    }
  }

  /** arrivedPickup for each waiting order not yet announced; "already there" is fine. */
  async #announceArrival(c: Courier): Promise<void> {
    for (const j of c.waiting()) {
      if (j.arrivalSent) continue;
      await this.#call(c, 'arrive at pickup', j.order.orderId, () => this.#engine.arrivedPickup(c.id, j.order.orderId), ALREADY);
      j.arrivalSent = true;
    }
  }

  /** Chooses the next ride from what the courier holds: drop-offs first, then the store; else it waits where it is. */
  #plan(c: Courier, at: number): void {
    c.leg = null;
    c.until = Infinity;
    const picked = c.jobs.filter((j) => j.pickedUp);
    if (picked.length > 0) {
      const target = this.#dropoffTarget(c, picked);
      c.dropping = target.order.orderId;
      this.#startLeg(c, at, target.order.dropoff, 'toCustomer');
      return;
    }
    const waiting = c.waiting();
    if (waiting.length > 0) {
      this.#startLeg(c, at, waiting[0].order.pickup, 'toStore');
      return;
    }
    c.dropping = null;
    c.phase = 'idle';
  }

  /**
   * The engine's rider heads for the first picked-up order in its job list
   * (the order it accepted them in). Delivering any other would leave the
   * rider's machine and the order's disagreeing, so the courier follows it.
   */
  #dropoffTarget(c: Courier, picked: Job[]): Job {
    for (const id of c.engineOrderIds) {
      const j = picked.find((p) => p.order.orderId === id);
      if (j) return j;
    }
    return picked[0];
  }

  #startLeg(c: Courier, at: number, to: Point, phase: 'toStore' | 'toCustomer'): void {
    const from = c.pos;
    const dist = Math.hypot(to.x - from.x, to.y - from.y);
    c.leg = { from, to, departAt: at, arriveAt: at + this.#rules.legMs(dist) };
    c.stats.distanceM += dist;
    c.phase = phase;
  }

  #endLeg(c: Courier): void {
    const leg = c.leg!;
    c.stats.drivingMs += leg.arriveAt - leg.departAt;
    c.pos = leg.to;
    c.leg = null;
  }

  #removeJob(c: Courier, orderId: string): void {
    c.jobs = c.jobs.filter((j) => j.order.orderId !== orderId);
    this.#holder.delete(orderId);
  }

  /** The engine took an order away: stop where the courier is (counting the ride so far) and plan again. */
  #dropJob(c: Courier, orderId: string, at: number): void {
    if (!c.jobs.some((j) => j.order.orderId === orderId)) return;
    this.#removeJob(c, orderId);
    this.counters.jobsRemoved++;
    const affectsRide =
      (c.phase === 'toStore' && c.waiting().length === 0) ||
      ((c.phase === 'toCustomer' || c.phase === 'atCustomer') && c.dropping === orderId) ||
      (c.phase === 'atStore' && c.waiting().length === 0);
    if (!affectsRide) return;
    if (c.leg) {
      const here = c.positionAt(at);
      c.stats.drivingMs += Math.max(0, Math.min(at, c.leg.arriveAt) - c.leg.departAt);
      c.pos = here;
      c.leg = null;
    }
    this.#plan(c, at);
  }

  async #answer(c: Courier, orderId: string, now: number): Promise<void> {
    c.offer = null;
    c.answered = orderId;
    const order = this.#orders.get(orderId) ?? (await this.#lookUp(orderId));
    if (c.offDuty || (this.#rules.respectShiftEnd && c.shiftEndAt !== null && this.#pickupEstimate(c, order, now) > c.shiftEndAt)) {
      const r = await this.#call(c, 'decline', orderId, () => this.#engine.declineOffer(c.id, orderId), OFFER_GONE);
      if (r === null) this.counters.offersLost++;
      else this.counters.offersDeclined++;
      return;
    }
    const r = await this.#call(c, 'accept', orderId, () => this.#engine.acceptOffer(c.id, orderId), OFFER_GONE);
    if (r === null) {
      this.counters.offersLost++;
      return;
    }
    this.counters.offersAccepted++;
    c.jobs.push({ order, pickedUp: false, arrivalSent: false });
    this.#holder.set(orderId, c);
    if (c.phase === 'idle') this.#plan(c, now);
    // Already standing at this store: the arrival is now.
    else if (c.phase === 'atStore') await this.#announceArrival(c);
  }

  /** When the courier would pick `order` up if it took it now; -Infinity when it cannot tell (then it accepts, as MDRP couriers do). */
  #pickupEstimate(c: Courier, order: CourierOrder, now: number): number {
    const sr = this.#rules.pickupServiceMs;
    const waiting = c.waiting();
    let ready = order.readyAt;
    for (const j of waiting) ready = Math.max(ready, j.order.readyAt);
    if (waiting.length > 0 && waiting.every((j) => j.order.storeId === order.storeId)) {
      if (c.phase === 'toStore') return Math.max(ready, c.leg!.arriveAt + sr / 2);
      if (c.phase === 'atStore') return Math.max(ready, c.arrivedAt + sr / 2);
    }
    if (c.jobs.length > 0) return -Infinity;
    const start = c.phase === 'leavingCustomer' || c.phase === 'leavingStore' ? Math.max(now, c.until) : now;
    const dist = Math.hypot(order.pickup.x - c.pos.x, order.pickup.y - c.pos.y);
    return Math.max(ready, start + this.#rules.legMs(dist) + sr / 2);
  }

  /** An order created elsewhere (a gateway client): its coordinates and otp from the engine. */
  async #lookUp(orderId: string): Promise<CourierOrder> {
    const v: OrderView = await this.#engine.getOrder(orderId);
    const order: CourierOrder = {
      orderId,
      storeId: v.storeId,
      pickup: this.#projection.toPlane(v.pickup),
      dropoff: this.#projection.toPlane(v.dropoff),
      readyAt: v.readyAt,
      otp: v.otp,
    };
    this.#orders.set(orderId, order);
    return order;
  }

  /** Runs one engine call; codes in `tolerate` yield null, anything else is rethrown with who, what and which order. */
  async #call<T>(c: Courier, action: string, orderId: string | null, fn: () => Promise<T>, tolerate: readonly ErrorCode[] = []): Promise<T | null> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof DispatchError && tolerate.includes(err.code)) return null;
      const what = orderId === null ? action : `${action} ${orderId}`;
      throw new Error(`courier ${c.id} could not ${what}: ${(err as Error).message}`, { cause: err });
    }
  }
}

/** Waits for all, then throws the first failure: no courier's work is left running behind a rejection. */
async function settleAll(work: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(work);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

/** MDRP travel time: "the product of their Euclidean distance and a multiplier γ, rounded up to the next integer" minute. */
export function mdrpLegMs(metersPerMinute: number): (distM: number) => number {
  return (distM) => Math.ceil(distM / metersPerMinute) * 60_000;
}

/** Constant-speed travel, for the simulator. */
export function constantSpeedLegMs(speedMps: number): (distM: number) => number {
  return (distM) => Math.round((distM / speedMps) * 1000);
}

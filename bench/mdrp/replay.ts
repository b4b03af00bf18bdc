/**
 * Replays one MDRP instance (a real Grubhub delivery day) through a
 * DispatchEngine in virtual time, as fast as the CPU allows.
 *
 * Couriers come online at their on-time at their on-location and stop taking
 * work at their off-time; they finish what they hold ("Couriers cannot pick
 * up any orders after their off-time, but are allowed to drop off orders
 * after their off-time") and go offline once free, since the engine refuses
 * riderOffline while a rider holds orders. Orders are created at their
 * placement time (cash on delivery, ready time from the data, promised at
 * placement + τ). The crew (courier.ts) accepts offers, rides, reports GPS
 * and tells the engine of each pickup and drop-off.
 *
 * Time moves from one thing to the next: a placement, a shift start or end,
 * a courier's arrival or service end, or the next GPS round. So every pickup
 * and drop-off happens exactly at the MDRP moment, and the engine's
 * pickedUpAt / deliveredAt are the measures' pickup and drop-off times.
 */
import type { DispatchEngine, EngineConfig, OrderStatus, OrderUpdate } from '../../engine/index.ts';
import { DispatchError, VirtualClock } from '../../engine/index.ts';
import { CourierCrew, mdrpLegMs } from './courier.ts';
import type { CrewCounters } from './courier.ts';
import type { MdrpInstance } from './instance.ts';
import { computeMetrics } from './metrics.ts';
import type { CourierRecord, MatcherMetrics, OrderRecord } from './metrics.ts';

export type MatcherName = 'batch' | 'greedy';

/** Builds a fresh engine with the given matcher on the replay's clock. */
export type EngineFactory = (matcher: MatcherName, clock: VirtualClock) => Promise<DispatchEngine>;

export interface ReplayOptions {
  matcher: MatcherName;
  /** Virtual time between GPS rounds (all couriers, one batch). Default 10 s. */
  fixIntervalMs?: number;
  /** Epoch ms of minute 0 of the day. Default 2018-02-25T00:00Z (the paper's date). */
  dayStartMs?: number;
  /** Orders a courier may hold at once; the engine's default when absent. */
  capacity?: number;
  /** Escalated orders are sent back to search this long after escalating, as operations would; null leaves them escalated. Default 60 s. */
  redispatchAfterMs?: number | null;
  /** Couriers decline offers they could not pick up before their off-time. Default true. */
  respectShiftEnd?: boolean;
  /** How long past the last placement or shift end the replay may run while couriers finish. Default 6 h. */
  overtimeMs?: number;
  /** Receives the per-order and per-courier records the measures were computed from. */
  onRecords?: (orders: readonly OrderRecord[], couriers: readonly CourierRecord[]) => void;
  /** Called about once per virtual hour. */
  onProgress?: (p: { minute: number; placed: number; delivered: number; couriersOnline: number }) => void | Promise<void>;
}

/** How the replay went, beyond the MDRP measures. */
export interface ReplayDiagnostics
  extends Pick<CrewCounters, 'fixesSent' | 'fixesAccepted' | 'fixesRejected' | 'offersAccepted' | 'offersDeclined' | 'offersLost'> {
  matcher: MatcherName;
  wallSeconds: number;
  steps: number;
  /** Minute of the day the replay stopped at. */
  endMinute: number;
  escalations: number;
  redispatches: number;
  pickupsAfterShiftEnd: number;
  /** Orders neither delivered nor cancelled when the replay stopped. */
  ordersUnfinished: number;
  /** Couriers still online at the stop (should be 0: all finished their work). */
  couriersStillOnline: number;
}

export interface ReplayMetrics extends MatcherMetrics {
  replay: ReplayDiagnostics;
}

export const DEFAULT_DAY_START_MS = Date.UTC(2018, 1, 25);

/**
 * Engine settings that make the engine see the instance's world: its speed,
 * straight-line travel (MDRP travel is Euclidean), and a search limit as
 * long as the maximum click-to-door time.
 */
export function replayEngineConfig(instance: MdrpInstance): Partial<EngineConfig> {
  return {
    travelSpeedMps: instance.params.metersPerMinute / 60,
    detourFactor: 1,
    // Some MDRP restaurants lie 20 km from any courier: search about 25 km out (res-8 rings).
    searchMaxK: 32,
    searchLimitMs: Math.max(1, instance.params.maxClickToDoorMin) * 60_000,
  };
}

interface ScheduleItem {
  at: number;
  /** Within one moment: shifts start first, then orders arrive, then shifts end. */
  rank: 0 | 1 | 2;
  run: () => Promise<void>;
}

/**
 * Runs the day and measures it.
 * @throws Error when the engine refuses a courier's step for a reason other
 * than "already done" or "offer gone", or refuses an order or a rider outright.
 */
export async function replayInstance(instance: MdrpInstance, engineFactory: EngineFactory, options: ReplayOptions): Promise<ReplayMetrics> {
  const started = performance.now();
  const p = instance.params;
  const dayStart = options.dayStartMs ?? DEFAULT_DAY_START_MS;
  const fixInterval = options.fixIntervalMs ?? 10_000;
  if (!(fixInterval > 0)) throw new RangeError(`fixIntervalMs must be positive, got ${fixInterval}`);
  const redispatchAfter = options.redispatchAfterMs === undefined ? 60_000 : options.redispatchAfterMs;
  const msOf = (minute: number) => dayStart + minute * 60_000;
  const minuteOf = (ms: number) => (ms - dayStart) / 60_000;

  const clock = new VirtualClock(dayStart);
  const engine = await engineFactory(options.matcher, clock);
  const crew = new CourierCrew(engine, instance.projection, {
    pickupServiceMs: p.pickupServiceMin * 60_000,
    dropoffServiceMs: p.dropoffServiceMin * 60_000,
    legMs: mdrpLegMs(p.metersPerMinute),
    capacity: options.capacity,
    respectShiftEnd: options.respectShiftEnd ?? true,
  });

  // What the engine reports of each order: pickup and drop-off moments, escalations to hand back.
  const pickedUpAt = new Map<string, number>();
  const deliveredAt = new Map<string, number>();
  const finished = new Set<string>();
  const lastStatus = new Map<string, OrderStatus>();
  const redispatchQueue: Array<{ orderId: string; at: number }> = [];
  let escalations = 0;
  let redispatches = 0;
  const stopWatching = engine.watchOrders((u: OrderUpdate) => {
    const o = u.order;
    if (o.pickedUpAt !== null) pickedUpAt.set(u.orderId, o.pickedUpAt);
    if (o.deliveredAt !== null) deliveredAt.set(u.orderId, o.deliveredAt);
    if (o.status === 'delivered' || o.status === 'cancelled') finished.add(u.orderId);
    const before = lastStatus.get(u.orderId);
    lastStatus.set(u.orderId, o.status);
    if (o.status === 'escalated' && before !== 'escalated') {
      escalations++;
      if (redispatchAfter !== null) redispatchQueue.push({ orderId: u.orderId, at: u.at + redispatchAfter });
    }
  });

  const schedule: ScheduleItem[] = [];
  for (const c of instance.couriers) {
    schedule.push({ at: msOf(c.onMin), rank: 0, run: () => crew.online(c.id, { x: c.x, y: c.y }, clock.now(), msOf(c.offMin)) });
    schedule.push({ at: msOf(c.offMin), rank: 2, run: async () => crew.endShift(c.id) });
  }
  for (const o of instance.orders) {
    const r = instance.restaurantById.get(o.restaurantId)!;
    schedule.push({
      at: msOf(o.placementMin),
      rank: 1,
      run: async () => {
        const view = await engine.createOrder({
          orderId: o.id,
          storeId: r.id,
          customerId: `customer-${o.id}`,
          pickup: r.latLng,
          dropoff: o.latLng,
          payment: 'cod',
          readyAt: msOf(o.readyMin),
          promisedAt: msOf(o.placementMin + p.targetClickToDoorMin),
          riderFee: Math.round(p.payPerOrder * 100),
          pickupServiceMs: p.pickupServiceMin * 60_000,
          dropoffServiceMs: p.dropoffServiceMin * 60_000,
        });
        crew.know({ orderId: o.id, storeId: r.id, pickup: { x: r.x, y: r.y }, dropoff: { x: o.x, y: o.y }, readyAt: view.readyAt, otp: view.otp });
      },
    });
  }
  schedule.sort((a, b) => a.at - b.at || a.rank - b.rank);
  const lastScheduled = schedule.length > 0 ? schedule[schedule.length - 1].at : dayStart;
  const hardStop = lastScheduled + (options.overtimeMs ?? 6 * 3_600_000);

  let next = 0;
  let steps = 0;
  let now = schedule.length > 0 ? schedule[0].at : dayStart;
  let nextFixAt = dayStart + Math.ceil((now - dayStart) / fixInterval) * fixInterval;
  let nextProgressAt = now;
  try {
    for (;;) {
      clock.set(now);
      steps++;
      // Schedule items of one moment and rank run together; ranks in order, so a courier starting at t can take an order placed at t.
      while (next < schedule.length && schedule[next].at <= now) {
        const rank = schedule[next].rank;
        const batch: Promise<void>[] = [];
        while (next < schedule.length && schedule[next].at <= now && schedule[next].rank === rank) batch.push(schedule[next++].run());
        await Promise.all(batch);
      }
      await redispatchDue(now);
      await crew.advance(now);
      if (now >= nextFixAt) {
        await crew.sendFixes(now);
        nextFixAt += fixInterval * Math.max(1, Math.ceil((now - nextFixAt + 1) / fixInterval));
      }
      await engine.tick();
      await crew.answerOffers(now);
      // A courier that accepted while standing at the store may be due right now.
      await crew.advance(now);

      if (options.onProgress && now >= nextProgressAt) {
        nextProgressAt = now + 3_600_000;
        await options.onProgress({ minute: Math.round(minuteOf(now)), placed: countPlaced(), delivered: deliveredAt.size, couriersOnline: crew.census().online });
      }
      const scheduleDone = next >= schedule.length;
      if (scheduleDone && crew.census().online === 0) break;
      if (now >= hardStop) break;
      const upcoming = Math.min(
        next < schedule.length ? schedule[next].at : Infinity,
        crew.nextEventAt(),
        nextFixAt,
        redispatchQueue.length > 0 ? Math.min(...redispatchQueue.map((r) => r.at)) : Infinity,
      );
      now = Math.max(now + 1, Math.min(upcoming, hardStop));
    }
  } finally {
    stopWatching();
    crew.close();
    await engine.close();
  }

  function countPlaced(): number {
    return instance.orders.filter((o) => msOf(o.placementMin) <= now).length;
  }

  async function redispatchDue(t: number): Promise<void> {
    const due = redispatchQueue.filter((r) => r.at <= t);
    if (due.length === 0) return;
    for (const r of due) redispatchQueue.splice(redispatchQueue.indexOf(r), 1);
    await Promise.all(
      due.map(async (r) => {
        try {
          await engine.redispatchOrder(r.orderId, 'replay: no courier took it, operations send it back to search');
          redispatches++;
        } catch (err) {
          // Cancelled or otherwise moved on in the meantime: nothing to send back.
          if (!(err instanceof DispatchError && err.code === 'QD_ERR_INVALID_TRANSITION')) throw err;
        }
      }),
    );
  }

  const orderRecords: OrderRecord[] = instance.orders.map((o) => {
    const pu = pickedUpAt.get(o.id);
    const de = deliveredAt.get(o.id);
    return {
      orderId: o.id,
      placementMin: o.placementMin,
      readyMin: o.readyMin,
      pickupMin: pu === undefined ? null : minuteOf(pu),
      deliveryMin: de === undefined ? null : minuteOf(de),
    };
  });
  let pickupsAfterShiftEnd = 0;
  const courierRecords: CourierRecord[] = instance.couriers.map((c) => {
    const s = crew.stats(c.id);
    if (s) pickupsAfterShiftEnd += s.pickupsAfterShiftEnd;
    return {
      courierId: c.id,
      onMin: c.onMin,
      offMin: c.offMin,
      busyMin: s ? (s.drivingMs + s.pickupServiceMs + s.dropoffServiceMs) / 60_000 : 0,
      deliveries: s ? s.deliveries : 0,
    };
  });
  options.onRecords?.(orderRecords, courierRecords);
  const metrics = computeMetrics(orderRecords, courierRecords, {
    targetClickToDoorMin: p.targetClickToDoorMin,
    payPerOrder: p.payPerOrder,
    guaranteedPayPerHour: p.guaranteedPayPerHour,
  });
  const k = crew.counters;
  return {
    ...metrics,
    replay: {
      matcher: options.matcher,
      wallSeconds: (performance.now() - started) / 1000,
      steps,
      endMinute: minuteOf(now),
      fixesSent: k.fixesSent,
      fixesAccepted: k.fixesAccepted,
      fixesRejected: k.fixesRejected,
      offersAccepted: k.offersAccepted,
      offersDeclined: k.offersDeclined,
      offersLost: k.offersLost,
      escalations,
      redispatches,
      pickupsAfterShiftEnd,
      ordersUnfinished: instance.orders.length - instance.orders.filter((o) => finished.has(o.id)).length,
      couriersStillOnline: crew.census().online,
    },
  };
}

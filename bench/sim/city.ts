/**
 * A simulated city for `npm start -- --sim`: riders come online at random
 * points within `radiusM` of `centre`, orders arrive as a Poisson stream at
 * random stores for random customers nearby, and the MDRP replay's courier
 * crew (bench/mdrp/courier.ts) rides, reports GPS and delivers.
 *
 * With `realtime` the simulation follows the given clock (a live node's
 * SystemClock) and the node's own ticker runs the engine's timers. Without
 * it the clock must be a VirtualClock: the simulation advances it by
 * `stepMs` per step and calls engine.tick() itself, as fast as it can.
 */
import type { Clock, DispatchEngine, LatLng, OrderStatus } from '../../engine/index.ts';
import { VirtualClock } from '../../engine/index.ts';
import { CourierCrew, constantSpeedLegMs } from '../mdrp/courier.ts';
import type { Point } from '../mdrp/courier.ts';
import { PlaneProjection } from '../mdrp/instance.ts';
import { mulberry32 } from '../random.ts';

export interface CitySimOptions {
  riders: number;
  ordersPerMinute: number;
  centre: LatLng;
  radiusM: number;
  speedMps: number;
  /** Time between simulation steps (GPS rounds), in ms. */
  stepMs: number;
  realtime: boolean;
  /** Stores in the city; default one per 10 riders, at least 5. */
  stores?: number;
  /** Seed of the random stream, so a run can be repeated. Default 1. */
  seed?: number;
}

/** Live counters of a running simulation (a type, not an interface, so it reads as a plain record). */
export type CitySummary = {
  ridersOnline: number;
  ridersBusy: number;
  ordersCreated: number;
  ordersSearching: number;
  ordersAssigned: number;
  ordersDelivered: number;
  ordersEscalated: number;
  ordersCancelled: number;
  /** GPS fixes the engine accepted per second of simulated time, over the last few seconds. */
  fixesPerSecond: number;
  /** Simulated seconds since the start. */
  elapsedS: number;
  errors: number;
  lastError: string | null;
};

export interface CitySim {
  summary(): CitySummary;
  /** Stops after the step in progress; riders stay as they are. */
  stop(): Promise<void>;
}

/** Prep time at the store and the promise to the customer: quick-commerce scale. */
const PREP_MS = { min: 2 * 60_000, max: 12 * 60_000 };
const PROMISE_MS = 30 * 60_000;
const PICKUP_SERVICE_MS = 2 * 60_000;
const DROPOFF_SERVICE_MS = 2 * 60_000;
/** Customers live within this distance of their store. */
const DELIVERY_RADIUS_M = 3_000;
const FIX_RATE_WINDOW_MS = 5_000;

/**
 * Starts the simulation and returns at once; it runs until stop().
 * @throws RangeError for non-positive sizes, rates or speeds, or a non-virtual clock without `realtime`.
 */
export function runCitySim(engine: DispatchEngine, clock: Clock, options: CitySimOptions): CitySim {
  const { riders, ordersPerMinute, radiusM, speedMps, stepMs, realtime } = options;
  for (const [k, v] of Object.entries({ riders, ordersPerMinute, radiusM, speedMps, stepMs })) {
    if (!(Number.isFinite(v) && v > 0)) throw new RangeError(`city sim ${k} must be positive, got ${v}`);
  }
  if (!realtime && !(clock instanceof VirtualClock)) throw new RangeError('a city sim that is not realtime drives the clock itself: pass a VirtualClock');
  const virtualClock = realtime ? null : (clock as VirtualClock);

  const random = mulberry32(options.seed ?? 1);
  const projection = new PlaneProjection(options.centre);
  const inDisk = (r: number): Point => {
    // sqrt for a uniform density over the disk, not bunched at the centre.
    const d = r * Math.sqrt(random());
    const a = 2 * Math.PI * random();
    return { x: d * Math.cos(a), y: d * Math.sin(a) };
  };
  const stores = Array.from({ length: options.stores ?? Math.max(5, Math.ceil(riders / 10)) }, (_, i) => ({ id: `store-${i + 1}`, at: inDisk(radiusM * 0.8) }));

  const crew = new CourierCrew(engine, projection, {
    pickupServiceMs: PICKUP_SERVICE_MS,
    dropoffServiceMs: DROPOFF_SERVICE_MS,
    legMs: constantSpeedLegMs(speedMps),
  });

  const status = new Map<string, OrderStatus>();
  const stopWatching = engine.watchOrders((u) => {
    status.set(u.orderId, u.order.status);
    if (u.order.status === 'delivered' || u.order.status === 'cancelled') crew.forget(u.orderId);
  });

  const startedAt = clock.now();
  let ordersCreated = 0;
  let orderSeq = 0;
  let errors = 0;
  let lastError: string | null = null;
  let stopping = false;
  /** (time, cumulative accepted fixes) over the last window, for the rate. */
  const fixSamples: Array<[number, number]> = [];

  const placeOrder = async (now: number): Promise<void> => {
    const store = stores[Math.floor(random() * stores.length)];
    let dropoff = inDisk(DELIVERY_RADIUS_M);
    dropoff = { x: store.at.x + dropoff.x, y: store.at.y + dropoff.y };
    const orderId = `sim-${++orderSeq}`;
    const readyAt = now + PREP_MS.min + random() * (PREP_MS.max - PREP_MS.min);
    const view = await engine.createOrder({
      orderId,
      storeId: store.id,
      customerId: `customer-${orderSeq}`,
      pickup: projection.toLatLng(store.at.x, store.at.y),
      dropoff: projection.toLatLng(dropoff.x, dropoff.y),
      payment: 'cod',
      readyAt: Math.round(readyAt),
      promisedAt: now + PROMISE_MS,
      pickupServiceMs: PICKUP_SERVICE_MS,
      dropoffServiceMs: DROPOFF_SERVICE_MS,
    });
    ordersCreated++;
    crew.know({ orderId, storeId: store.id, pickup: store.at, dropoff, readyAt: view.readyAt, otp: view.otp });
  };

  const step = async (): Promise<void> => {
    if (virtualClock) virtualClock.advance(stepMs);
    const now = clock.now();
    const arrivals = poisson(random, (ordersPerMinute * stepMs) / 60_000);
    await Promise.all(Array.from({ length: arrivals }, () => placeOrder(now)));
    await crew.advance(now);
    await crew.sendFixes(now);
    fixSamples.push([now, crew.counters.fixesAccepted]);
    while (fixSamples.length > 2 && fixSamples[0][0] < now - FIX_RATE_WINDOW_MS) fixSamples.shift();
    if (virtualClock) await engine.tick();
    await crew.answerOffers(now);
    await crew.advance(now);
  };

  const loop = (async () => {
    try {
      const now = clock.now();
      await Promise.all(Array.from({ length: riders }, (_, i) => crew.online(`sim-rider-${i + 1}`, inDisk(radiusM), now)));
    } catch (err) {
      errors++;
      lastError = (err as Error).message;
    }
    while (!stopping) {
      const began = Date.now();
      try {
        await step();
      } catch (err) {
        // A failed step is counted and shown; the city keeps running, like a live node.
        errors++;
        lastError = (err as Error).message;
      }
      // Real time paces itself; virtual time only yields, so timers, summaries and stop() get a turn.
      if (realtime) await new Promise((r) => setTimeout(r, Math.max(0, stepMs - (Date.now() - began))));
      else await new Promise((r) => setImmediate(r));
    }
  })();

  return {
    summary(): CitySummary {
      const census = crew.census();
      let searching = 0;
      let assigned = 0;
      let delivered = 0;
      let escalated = 0;
      let cancelled = 0;
      for (const s of status.values()) {
        if (s === 'confirmed' || s === 'searching' || s === 'offered' || s === 'awaitingPayment') searching++;
        else if (s === 'assigned' || s === 'atPickup' || s === 'pickedUp' || s === 'atDropoff') assigned++;
        else if (s === 'delivered') delivered++;
        else if (s === 'escalated') escalated++;
        else if (s === 'cancelled') cancelled++;
      }
      const first = fixSamples[0];
      const last = fixSamples[fixSamples.length - 1];
      const spanS = first && last ? (last[0] - first[0]) / 1000 : 0;
      return {
        ridersOnline: census.online,
        ridersBusy: census.busy,
        ordersCreated,
        ordersSearching: searching,
        ordersAssigned: assigned,
        ordersDelivered: delivered,
        ordersEscalated: escalated,
        ordersCancelled: cancelled,
        fixesPerSecond: spanS > 0 ? (last[1] - first[1]) / spanS : 0,
        elapsedS: (clock.now() - startedAt) / 1000,
        errors,
        lastError,
      };
    },
    async stop(): Promise<void> {
      stopping = true;
      await loop;
      stopWatching();
      crew.close();
    },
  };
}

/** A Poisson draw by inversion (Knuth); fine for the small means of one step. */
function poisson(random: () => number, mean: number): number {
  if (mean > 30) return Math.max(0, Math.round(mean + Math.sqrt(mean) * gaussian(random)));
  const limit = Math.exp(-mean);
  let k = 0;
  let p = random();
  while (p > limit) {
    k++;
    p *= random();
  }
  return k;
}

function gaussian(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}


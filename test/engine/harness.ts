// Shared set-up for engine tests: an engine on a virtual clock and a store, and geography helpers.
import { latLngToCell, cellToLatLng, cellToParent } from 'h3-js';
import { createEngine, VirtualClock, MemoryEventStore } from '../../engine/index.ts';
import type { DispatchEngine, EngineConfig, EventStore, LatLng, OrderSpec, OrderUpdate, RiderUpdate } from '../../engine/index.ts';
import { ShardMap } from '../../engine/geo/index.ts';

export const T0 = Date.UTC(2026, 10, 24, 9, 0, 0);
/** Bengaluru, Koramangala: a real place so H3 and haversine behave as in production. */
export const STORE: LatLng = { lat: 12.9352, lng: 77.6245 };

export interface Rig {
  engine: DispatchEngine;
  clock: VirtualClock;
  store: EventStore;
  orderLog: OrderUpdate[];
  riderLog: RiderUpdate[];
  /** Advances virtual time and runs the engine's timers and matcher. */
  advance(ms: number): Promise<void>;
}

export async function rig(
  options: { config?: Partial<EngineConfig>; threads?: boolean; store?: EventStore; clock?: VirtualClock } = {},
): Promise<Rig> {
  const clock = options.clock ?? new VirtualClock(T0);
  const store = options.store ?? new MemoryEventStore();
  const engine = await createEngine({
    store,
    clock,
    threads: options.threads ?? false,
    config: { shards: 1, matchWindowMs: 1_000, offerTtlMs: 30_000, searchLimitMs: 10 * 60_000, ...options.config },
  });
  const orderLog: OrderUpdate[] = [];
  const riderLog: RiderUpdate[] = [];
  engine.watchOrders((u) => orderLog.push(u));
  engine.watchRiders((u) => riderLog.push(u));
  return {
    engine,
    clock,
    store,
    orderLog,
    riderLog,
    async advance(ms: number) {
      clock.advance(ms);
      await engine.tick();
    },
  };
}

/** A view of `store` whose close() does nothing: a node that "crashes" leaves the log to the next one. */
export function keepOpen(store: EventStore): EventStore {
  return {
    init: () => store.init(),
    append: (e, s) => store.append(e, s),
    readStream: (st, after) => store.readStream(st, after),
    saveSnapshots: (s) => store.saveSnapshots(s),
    loadLive: () => store.loadLive(),
    riderDailyStats: (r, d) => store.riderDailyStats(r, d),
    close: async () => undefined,
  };
}

/** A point `m` metres north and `e` metres east of `p`. */
export function offset(p: LatLng, northM: number, eastM: number): LatLng {
  const dLat = northM / 111_320;
  const dLng = eastM / (111_320 * Math.cos((p.lat * Math.PI) / 180));
  return { lat: p.lat + dLat, lng: p.lng + dLng };
}

let orderSeq = 0;
export function orderSpec(over: Partial<OrderSpec> = {}): OrderSpec {
  orderSeq += 1;
  return {
    orderId: `o-${orderSeq}-${Math.random().toString(36).slice(2, 8)}`,
    storeId: 'store-1',
    customerId: 'cust-1',
    pickup: STORE,
    dropoff: offset(STORE, 1500, 800),
    payment: 'cod',
    riderFee: 4500,
    ...over,
  };
}

/** Points on either side of a shard boundary, `gapM` apart or so, for `shards` shards. */
export function acrossShardEdge(config: { shardRes: number; shards: number; indexRes: number }): { a: LatLng; b: LatLng; shardA: number; shardB: number } {
  const map = new ShardMap({ shardRes: config.shardRes, shardCount: config.shards, indexRes: config.indexRes });
  const shardAt = (p: LatLng) => map.shardOf(latLngToCell(p.lat, p.lng, config.indexRes));
  // Walk east from the store until the owning shard changes.
  let prev = STORE;
  const s0 = shardAt(prev);
  for (let i = 1; i < 4000; i++) {
    const p = offset(STORE, 0, i * 50);
    const s = shardAt(p);
    if (s !== s0) return { a: prev, b: p, shardA: s0, shardB: s };
    prev = p;
  }
  throw new Error('no shard edge found within 200 km');
}

export function parentOf(p: LatLng, res: number): string {
  return cellToParent(latLngToCell(p.lat, p.lng, 9), res);
}

export function centreOf(cell: string): LatLng {
  const [lat, lng] = cellToLatLng(cell);
  return { lat, lng };
}

/** Sends fixes moving a rider in straight steps from `from` to `to`. */
export async function drive(
  r: Rig,
  riderId: string,
  from: LatLng,
  to: LatLng,
  opts: { steps?: number; stepMs?: number; seq: { n: number } },
): Promise<void> {
  const steps = opts.steps ?? 10;
  const stepMs = opts.stepMs ?? 5_000;
  for (let i = 1; i <= steps; i++) {
    const f = i / steps;
    r.clock.advance(stepMs);
    opts.seq.n += 1;
    await r.engine.ingestFixes([
      { riderId, lat: from.lat + (to.lat - from.lat) * f, lng: from.lng + (to.lng - from.lng) * f, ts: r.clock.now(), seq: opts.seq.n },
    ]);
  }
  await r.engine.tick();
}

export function statuses(log: OrderUpdate[], orderId: string): string[] {
  return log.filter((u) => u.orderId === orderId).map((u) => u.order.status);
}

export function events(log: OrderUpdate[], orderId: string): string[] {
  return log.filter((u) => u.orderId === orderId).map((u) => u.event);
}

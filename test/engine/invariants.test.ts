// Randomised busy runs: invariants after every step, then a restart mid-run with every live actor back as it was.
import t from 'tap';
import type { Test } from 'tap';
import { DispatchError, MemoryEventStore, VirtualClock } from '../../engine/index.ts';
import type { EventStore, OrderView, RiderView } from '../../engine/index.ts';
import { createPostgresStore } from '../../adapters/sql/index.ts';
import { rig, offset, keepOpen, STORE, T0, type Rig } from './harness.ts';
import { mulberry32 as rng } from '../../bench/random.ts';


const STORES = [STORE, offset(STORE, 2500, 1500), offset(STORE, -2000, 3000)];
const RIDERS = 12;

interface World {
  r: Rig;
  rand: () => number;
  acked: Map<string, string>;
  pos: Map<string, { lat: number; lng: number }>;
  seq: Map<string, number>;
  n: number;
}

async function expectRefusalOrOk(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (err) {
    // Random drivers often act on stale views; only typed refusals are acceptable.
    if (!(err instanceof DispatchError) || err.code === 'QD_ERR_INTERNAL' || err.code === 'QD_ERR_STORE_UNAVAILABLE') throw err;
  }
}

async function step(w: World): Promise<void> {
  const { r, rand } = w;
  const e = r.engine;
  if (rand() < 0.5) {
    const store = STORES[Math.floor(rand() * STORES.length)];
    const orderId = `o${w.n++}`;
    const view = await e.createOrder({
      orderId,
      storeId: `s${STORES.indexOf(store)}`,
      customerId: `c${orderId}`,
      pickup: store,
      dropoff: offset(store, (rand() - 0.5) * 6000, (rand() - 0.5) * 6000),
      payment: rand() < 0.2 ? 'prepaid' : 'cod',
      riderFee: 3000,
    });
    w.acked.set(orderId, view.status);
    if (view.status === 'awaitingPayment' && rand() < 0.8) await e.capturePayment(orderId, `pay_${orderId}`);
  }
  for (let i = 0; i < RIDERS; i++) {
    const riderId = `r${i}`;
    const rider = await e.getRider(riderId);
    const p = w.pos.get(riderId)!;
    if (rider.offer) {
      const x = rand();
      if (x < 0.6) await expectRefusalOrOk(e.acceptOffer(riderId, rider.offer.orderId));
      else if (x < 0.8) await expectRefusalOrOk(e.declineOffer(riderId, rider.offer.orderId));
      continue;
    }
    const orderId = rider.orderIds[0];
    if (orderId) {
      const order = await e.getOrder(orderId);
      const target = rider.status === 'toPickup' || rider.status === 'atPickup' ? order.pickup : order.dropoff;
      // Move a third of the way, with jitter, so geofences trigger sometimes and reports are needed other times.
      const next = { lat: p.lat + (target.lat - p.lat) * 0.4, lng: p.lng + (target.lng - p.lng) * 0.4 };
      if (rand() < 0.3) Object.assign(next, target);
      w.pos.set(riderId, next);
      const s = (w.seq.get(riderId) ?? 0) + 1;
      w.seq.set(riderId, s);
      await e.ingestFixes([{ riderId, lat: next.lat, lng: next.lng, ts: r.clock.now(), seq: s }]);
      const x = rand();
      if (rider.status === 'atPickup' && x < 0.7) await expectRefusalOrOk(e.pickedUp(riderId, orderId));
      else if (rider.status === 'toPickup' && x < 0.1) await expectRefusalOrOk(e.arrivedPickup(riderId, orderId));
      else if (rider.status === 'atDropoff' && x < 0.7) await expectRefusalOrOk(e.deliver(riderId, orderId, { otp: order.otp }));
      else if (rider.status === 'toDropoff' && x < 0.1) await expectRefusalOrOk(e.arrivedDropoff(riderId, orderId));
      else if (x > 0.97) await expectRefusalOrOk(e.cancelOrder(orderId, rand() < 0.5 ? 'customer' : 'ops', 'random'));
    } else {
      // Idle phones keep reporting where they stand.
      const s = (w.seq.get(riderId) ?? 0) + 1;
      w.seq.set(riderId, s);
      await e.ingestFixes([{ riderId, lat: p.lat, lng: p.lng, ts: r.clock.now(), seq: s }]);
    }
    if (!orderId && rider.status === 'available' && rand() < 0.03) {
      await e.riderBreak(riderId, true);
    } else if (!orderId && rider.status === 'onBreak' && rand() < 0.3) {
      await e.riderBreak(riderId, false);
    }
  }
  await r.advance(2_000 + Math.floor(rand() * 8_000));
}

async function checkInvariants(t: Test, w: World): Promise<{ orders: Map<string, OrderView>; riders: Map<string, RiderView> }> {
  const e = w.r.engine;
  const orders = new Map<string, OrderView>();
  for (const id of w.acked.keys()) orders.set(id, await e.getOrder(id));
  const riders = new Map<string, RiderView>();
  for (let i = 0; i < RIDERS; i++) riders.set(`r${i}`, await e.getRider(`r${i}`));
  const holder = new Map<string, string>();
  let problems = 0;
  for (const rider of riders.values()) {
    if (rider.orderIds.length > rider.capacity) {
      problems++;
      t.fail(`${rider.riderId} over capacity: ${rider.orderIds}`);
    }
    for (const id of rider.orderIds) {
      if (holder.has(id)) {
        problems++;
        t.fail(`order ${id} held by ${holder.get(id)} and ${rider.riderId}`);
      }
      holder.set(id, rider.riderId);
    }
  }
  for (const o of orders.values()) {
    if (['assigned', 'atPickup', 'pickedUp', 'atDropoff'].includes(o.status)) {
      if (holder.get(o.orderId) !== o.riderId) {
        problems++;
        t.fail(`order ${o.orderId} (${o.status}) names rider ${o.riderId} but ${holder.get(o.orderId) ?? 'nobody'} holds it`);
      }
    }
  }
  const stored = await w.r.store.loadLive();
  const liveIds = new Set(stored.filter((s) => s.stream.startsWith('order:')).map((s) => s.stream.slice(6)));
  for (const o of orders.values()) {
    if (o.status !== 'delivered' && o.status !== 'cancelled' && !liveIds.has(o.orderId)) {
      problems++;
      t.fail(`acknowledged live order ${o.orderId} is not in the store`);
    }
  }
  return { orders, riders, ...{ problems } };
}


async function run(t: Test, store: EventStore, seed: number, shards: number): Promise<void> {
  const clock = new VirtualClock(T0);
  // Riders here jump between waypoints: the teleport check is not what this test is about.
  const config = { shards, snapshotEvery: 4, offerTtlMs: 15_000, maxOfferAttempts: 4, riderCapacity: 1, maxSpeedMps: 5_000 };
  // The first node never closes its store: it "crashes" and a second node takes over the same log.
  const shared = keepOpen(store);

  const r = await rig({ config, store: shared, clock });
  const w: World = { r, rand: rng(seed), acked: new Map(), pos: new Map(), seq: new Map(), n: 0 };
  for (let i = 0; i < RIDERS; i++) {
    const p = offset(STORE, (w.rand() - 0.5) * 5000, (w.rand() - 0.5) * 5000);
    w.pos.set(`r${i}`, p);
    await r.engine.riderOnline(`r${i}`, { position: p });
  }
  let violations = 0;
  for (let i = 0; i < 40; i++) {
    await step(w);
    const check = (await checkInvariants(t, w)) as unknown as { problems: number };
    violations += check.problems;
  }
  t.equal(violations, 0, `no invariant broken over 40 steps (seed ${seed}, ${w.acked.size} orders)`);
  const before = await checkInvariants(t, w);
  const counts = new Map<string, number>();
  for (const o of before.orders.values()) counts.set(o.status, (counts.get(o.status) ?? 0) + 1);
  t.ok(counts.size >= 4, `a busy mix of states: ${JSON.stringify(Object.fromEntries(counts))}`);

  // Restart: a fresh engine on the same log, as after a crash.
  const r2 = await rig({ config, store, clock });
  w.r = r2;
  const after = await checkInvariants(t, w);
  for (const [id, o] of before.orders) {
    const a = after.orders.get(id)!;
    t.same(a, o, `order ${id} back as it was (${o.status})`);
  }
  for (const [id, rider] of before.riders) {
    const a = after.riders.get(id)!;
    t.same(
      { status: a.status, orderIds: a.orderIds, offer: a.offer, seq: a.seq, capacity: a.capacity },
      { status: rider.status, orderIds: rider.orderIds, offer: rider.offer, seq: rider.seq, capacity: rider.capacity },
      `rider ${id} back as it was (${rider.status})`,
    );
  }
  // Pending offers keep their deadlines: after the longest TTL every one has been answered or expired.
  const pending = [...after.orders.values()].filter((o) => o.status === 'offered');
  await r2.advance(16_000);
  for (const o of pending) {
    const now = await r2.engine.getOrder(o.orderId);
    t.not(now.offer?.expiresAt, o.offer?.expiresAt, `offer of ${o.orderId} expired on time after the restart`);
  }
  // And the recovered node keeps working.
  for (let i = 0; i < 10; i++) await step(w);
  const final = (await checkInvariants(t, w)) as unknown as { problems: number };
  t.equal(final.problems, 0, 'invariants hold after the restart');
  await r.engine.close().catch(() => undefined);
  await r2.engine.close();
}

t.test('memory store, one shard', (t) => run(t, new MemoryEventStore(), 7, 1));
t.test('memory store, two shards', (t) => run(t, new MemoryEventStore(), 11, 2));
t.test('Postgres, two shards', async (t) => {
  const schema = `qd_inv_${process.pid}_${Date.now()}`;
  const store = await createPostgresStore({ connectionString: process.env.QD_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test', schema });
  await run(t, store, 23, 2);
  const pg = await import('pg');
  const c = new pg.default.Client({ connectionString: process.env.QD_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test' });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await c.end();
});

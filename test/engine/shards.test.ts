// Several shards: riders handed off as they drive, dispatch across a shard edge, worker threads.
import t from 'tap';
import { rig, orderSpec, offset, acrossShardEdge, drive, events } from './harness.ts';
import type { Test } from 'tap';
import { DEFAULT_PRICING, priceDelivery } from '../../engine/dispatch/index.ts';
import { haversineM } from '../../engine/geo/index.ts';

const config = { shards: 2, shardRes: 5, indexRes: 8 };

for (const threads of [false, true]) {
  const mode = threads ? 'worker threads' : 'inline';

  t.test(`${mode}: a rider driving into another shard keeps its state and history`, async (t) => {
    const edge = acrossShardEdge(config);
    const r = await rig({ config, threads });
    const e = r.engine;
    const start = offset(edge.a, 0, -3000);
    await e.riderOnline('mover', { position: start });
    t.equal((await e.getRider('mover')).shard, edge.shardA);

    // Give it an order from a store on its side, so it crosses with work in hand.
    const spec = orderSpec({ pickup: offset(start, 100, 0), dropoff: offset(edge.b, 0, 3000) });
    await e.createOrder(spec);
    await r.advance(1_000);
    await e.acceptOffer('mover', spec.orderId);
    await e.arrivedPickup('mover', spec.orderId);
    await e.pickedUp('mover', spec.orderId);
    const before = await e.getRider('mover');
    t.equal(before.status, 'toDropoff');

    const seq = { n: 0 };
    await drive(r, 'mover', spec.pickup, offset(edge.b, 0, 1500), { steps: 12, stepMs: 20_000, seq });
    const after = await e.getRider('mover');
    t.equal(after.shard, edge.shardB, 'now held by the shard it drove into');
    t.equal(after.status, 'toDropoff', 'state kept');
    t.same(after.orderIds, [spec.orderId], 'orders kept');
    t.ok((await e.counters()).handoffs >= 1, 'a hand-off happened');

    await drive(r, 'mover', offset(edge.b, 0, 1500), spec.dropoff, { steps: 6, stepMs: 20_000, seq });
    t.equal((await e.getOrder(spec.orderId)).status, 'atDropoff', 'geofence works in the new shard');
    const delivered = await e.deliver('mover', spec.orderId, { otp: (await e.getOrder(spec.orderId)).otp });
    t.equal(delivered.status, 'delivered');
    const stream = await r.store.readStream('rider:mover');
    t.same(
      stream.map((x) => x.seq),
      stream.map((_, i) => i + 1),
      'one rider stream with unbroken sequence across the hand-off',
    );
    t.same(events(r.orderLog, spec.orderId).slice(-2), ['ARRIVED_DROPOFF', 'DELIVER']);
    await e.close();
  });

  t.test(`${mode}: an order near a shard edge is offered to a rider across it`, async (t) => {
    const edge = acrossShardEdge(config);
    const r = await rig({ config, threads });
    const e = r.engine;
    await e.riderOnline('across', { position: edge.b });
    t.equal((await e.getRider('across')).shard, edge.shardB);
    // The ghost list travels on ticks.
    await r.advance(0);
    const spec = orderSpec({ pickup: edge.a, dropoff: offset(edge.a, 2000, 0) });
    await e.createOrder(spec);
    await r.advance(1_000);
    const o = await e.getOrder(spec.orderId);
    t.equal(o.status, 'offered');
    t.equal(o.offer?.riderId, 'across', 'the only rider, in the other shard, got the offer');
    const rider = await e.getRider('across');
    t.equal(rider.status, 'offered');
    t.equal(rider.offer?.orderId, spec.orderId);
    t.equal((await e.acceptOffer('across', spec.orderId)).status, 'assigned');
    await e.close();
  });

  t.test(`${mode}: a ghost that was taken meanwhile voids the offer and the order searches again`, async (t) => {
    const edge = acrossShardEdge(config);
    const r = await rig({ config, threads });
    const e = r.engine;
    await e.riderOnline('busy', { position: edge.b });
    await r.advance(0);
    // The rider goes on break after its ghost was published: the neighbour's offer must bounce.
    await e.riderBreak('busy', true);
    const spec = orderSpec({ pickup: edge.a, dropoff: offset(edge.a, 2000, 0) });
    await e.createOrder(spec);
    await r.advance(1_000);
    const o = await e.getOrder(spec.orderId);
    t.equal(o.status, 'searching', 'back to searching');
    t.equal(o.attempts, 0, 'a void offer is not counted against the order');
    t.equal((await e.getRider('busy')).status, 'onBreak', 'the rider was not disturbed');
    await e.close();
  });

  t.test(`${mode}: supply at a pickup counts riders on both sides of a shard edge, from the pickup's shard alone`, async (t) => {
    const edge = acrossShardEdge(config);
    for (const searchMaxK of [12, 2]) {
      // searchMaxK 2 mirrors too little for a 2 km radius: every shard is asked instead.
      const r = await rig({ config: { ...config, searchMaxK }, threads });
      const e = r.engine;
      const spots = [
        ['a-near', offset(edge.a, 300, -200)],
        ['a-far', offset(edge.a, 0, -2600)],
        ['b-near', offset(edge.b, -150, 400)],
        ['b-mid', offset(edge.b, 1200, 900)],
        ['b-far', offset(edge.b, 0, 2500)],
        ['b-busy', offset(edge.b, 100, 100)],
        ['b-off', offset(edge.b, 50, 50)],
      ] as const;
      for (const [id, at] of spots) await e.riderOnline(id, { position: at });
      await e.riderBreak('b-busy', true);
      await e.riderOffline('b-off');
      await r.advance(0);
      const free = spots.filter(([id]) => id !== 'b-busy' && id !== 'b-off');
      const within = free.map(([, at]) => haversineM(edge.a.lat, edge.a.lng, at.lat, at.lng)).filter((d) => d <= 2000);
      t.equal(within.length, 3, 'three free riders within 2 km of the pickup, two of them across the edge');
      const supply = await e.supplyNear(edge.a, 2000);
      await t.rejects(e.supplyNear(edge.a, 0), { code: 'QD_ERR_INVALID_ARGUMENT', details: { field: 'radiusM' } }, 'radius checked');
      await t.rejects(e.supplyNear({ lat: 91, lng: 0 }, 2000), { code: 'QD_ERR_INVALID_ARGUMENT', details: { field: 'at.lat' } }, 'position checked');
      t.equal(supply.available, within.length, `searchMaxK ${searchMaxK}: every free rider within the radius, on either side`);
      t.ok(Math.abs(supply.nearestM! - Math.min(...within)) < 0.01, 'and the nearest distance');

      // Priced at creation: the same figures a quote from this supply gives.
      const demand = 4;
      const spec = orderSpec({ pickup: edge.a, dropoff: offset(edge.a, 1500, 1500), promisedAt: undefined, riderFee: undefined, deliveryFee: undefined });
      const created = await e.createOrder(spec, { demand, prepMinutes: 12, config: DEFAULT_PRICING });
      const q = priceDelivery(haversineM(spec.pickup.lat, spec.pickup.lng, spec.dropoff.lat, spec.dropoff.lng), 12, demand, supply, DEFAULT_PRICING);
      t.equal(created.deliveryFee, q.feePaise, 'delivery fee from the supply at the pickup');
      const [createdEvent] = await r.store.readStream(`order:${spec.orderId}`);
      t.match(createdEvent.data, { spec: { deliveryFee: q.feePaise, riderFee: q.riderFeePaise } }, "the created event keeps the fee and the rider's share");
      t.equal(created.promisedAt, created.createdAt + q.etaSeconds * 1000, 'promised at creation plus the ETA');
      const kept = await e.createOrder(orderSpec({ orderId: 'o-promised', pickup: edge.a, promisedAt: r.clock.now() + 3_600_000 }), { demand: 0, prepMinutes: 0, config: DEFAULT_PRICING });
      t.equal(kept.promisedAt, r.clock.now() + 3_600_000, "a caller's promised time stands");
      await rejectsPricing(t, e.createOrder(orderSpec({ orderId: 'o-bad' }), { demand: -1, prepMinutes: 0, config: DEFAULT_PRICING }), 'pricing.demand');
      await rejectsPricing(t, e.createOrder(orderSpec({ orderId: 'o-bad' }), { demand: 0, prepMinutes: 0, config: { ...DEFAULT_PRICING, supplyRadiusM: 0 } }), 'pricing.config.supplyRadiusM');
      await e.close();
    }
  });
}

async function rejectsPricing(t: Test, p: Promise<unknown>, field: string): Promise<void> {
  await t.rejects(p, { code: 'QD_ERR_INVALID_ARGUMENT', details: { field } }, `${field} checked`);
}

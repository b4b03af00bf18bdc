// Several shards: riders handed off as they drive, dispatch across a shard edge, worker threads.
import t from 'tap';
import { rig, orderSpec, offset, acrossShardEdge, drive, events } from './harness.ts';

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
}

// The operations read: every online rider and live order from all shards, dispatch latency and shard queue depth.
import t from 'tap';
import { latLngToCell } from 'h3-js';
import { rig, orderSpec, offset, acrossShardEdge, STORE } from './harness.ts';

const config = { shards: 2, shardRes: 5, indexRes: 8 };

for (const threads of [false, true]) {
  const mode = threads ? 'worker threads' : 'inline';

  t.test(`${mode}: riders and live orders from every shard, positions as of the last fix`, async (t) => {
    const edge = acrossShardEdge(config);
    const r = await rig({ config, threads });
    t.teardown(() => r.engine.close());
    const e = r.engine;
    await e.riderOnline('west', { position: edge.a });
    await e.riderOnline('east', { position: edge.b });
    await e.riderOnline('gone', { position: offset(edge.a, 200, 0) });
    await e.riderOffline('gone');
    await e.riderOnline('unplaced');
    const spec = orderSpec({ pickup: offset(edge.a, 100, 0), dropoff: offset(edge.a, 1500, 0) });
    const other = orderSpec({ pickup: offset(edge.b, 0, 400), dropoff: offset(edge.b, 1500, 400) });
    await e.createOrder(spec);
    await e.createOrder(other);

    let snap = await e.operationsSnapshot();
    t.equal(snap.indexRes, 8);
    t.equal(snap.at, r.clock.now());
    const byId = new Map(snap.riders.map((x) => [x.riderId, x]));
    t.same([...byId.keys()].sort(), ['east', 'unplaced', 'west'], 'online riders only, from both shards');
    t.equal(byId.get('west')!.shard, edge.shardA);
    t.equal(byId.get('east')!.shard, edge.shardB);
    t.match(byId.get('west'), { status: 'available', position: edge.a, cell: latLngToCell(edge.a.lat, edge.a.lng, 8), orderIds: [] });
    t.match(byId.get('unplaced'), { status: 'available', position: null, cell: null });
    const orders = new Map(snap.orders.map((o) => [o.orderId, o]));
    t.same([...orders.keys()].sort(), [spec.orderId, other.orderId].sort());
    t.match(orders.get(spec.orderId), {
      status: 'searching',
      storeId: spec.storeId,
      pickup: spec.pickup,
      dropoff: spec.dropoff,
      pickupCell: latLngToCell(spec.pickup.lat, spec.pickup.lng, 8),
      riderId: null,
      offeredTo: null,
      createdAt: r.clock.now(),
    });

    // A fix moves the rider in the next snapshot; an offer and an acceptance show on the order.
    const moved = offset(edge.a, 300, -300);
    await e.ingestFixes([{ riderId: 'west', lat: moved.lat, lng: moved.lng, ts: r.clock.now(), seq: 1 }]);
    await r.advance(1_000);
    snap = await e.operationsSnapshot();
    const offered = snap.orders.find((o) => o.orderId === spec.orderId)!;
    t.equal(offered.status, 'offered');
    t.ok(offered.offeredTo !== null, 'the offer names its rider');
    const west = snap.riders.find((x) => x.riderId === 'west')!;
    t.same(west.position, moved, 'position from the fix');

    await e.acceptOffer(offered.offeredTo!, spec.orderId);
    snap = await e.operationsSnapshot();
    t.match(
      snap.orders.find((o) => o.orderId === spec.orderId),
      { status: 'assigned', riderId: offered.offeredTo, offeredTo: null },
    );
    t.same(snap.riders.find((x) => x.riderId === offered.offeredTo)!.orderIds, [spec.orderId], 'the rider holds the order');

    await e.cancelOrder(other.orderId, 'ops', 'test');
    snap = await e.operationsSnapshot();
    t.notOk(snap.orders.some((o) => o.orderId === other.orderId), 'a cancelled order is no longer live');
  });
}

t.test('dispatch latency: from searching to accepted, declined offers included', async (t) => {
  const r = await rig();
  t.teardown(() => r.engine.close());
  const e = r.engine;
  t.same((await e.counters()).dispatchLatency.count, 0, 'nothing dispatched yet');
  await e.riderOnline('r1', { position: offset(STORE, 300, 0) });
  await e.riderOnline('r2', { position: offset(STORE, 3000, 0) });

  const quick = orderSpec();
  await e.createOrder(quick);
  await r.advance(1_000);
  r.clock.advance(2_000);
  const first = await e.getOrder(quick.orderId);
  await e.acceptOffer(first.offer!.riderId, quick.orderId);

  // The nearer rider declines; the order searches again and the other rider takes it.
  const slow = orderSpec();
  await e.createOrder(slow);
  await r.advance(1_000);
  const offer1 = (await e.getOrder(slow.orderId)).offer!;
  await e.declineOffer(offer1.riderId, slow.orderId);
  await r.advance(1_000);
  const offer2 = (await e.getOrder(slow.orderId)).offer!;
  t.not(offer2.riderId, offer1.riderId, 'offered to the other rider');
  r.clock.advance(10_000);
  await e.acceptOffer(offer2.riderId, slow.orderId);

  const d = (await e.counters()).dispatchLatency;
  t.equal(d.count, 2);
  t.same(d.recentMs, [3_000, 12_000], 'samples oldest first, in engine-clock ms');
  t.equal(d.sumMs, 15_000);
  const at = (bound: number) => d.counts[d.bucketsMs.indexOf(bound)];
  t.equal(at(2_000), 0);
  t.equal(at(5_000), 1, 'cumulative: the 3 s sample');
  t.equal(at(10_000), 1);
  t.equal(at(20_000), 2, 'both by 20 s');
  t.equal(d.counts.length, d.bucketsMs.length);
  t.same([...d.bucketsMs].sort((a, b) => a - b), d.bucketsMs, 'bounds ascending');
});

t.test('shard queue depth counts requests not yet answered, per shard', async (t) => {
  const r = await rig({ config, threads: true });
  t.teardown(() => r.engine.close());
  const e = r.engine;
  const edge = acrossShardEdge(config);
  await e.riderOnline('q', { position: edge.a });
  const idle = await e.counters();
  t.same(idle.shardQueueDepth, [0, 0], 'nothing waiting');

  // Not awaited: the fixes sit in the coordinator's queue until the flush.
  const pending = [1, 2, 3].map((n) => e.ingestFixes([{ riderId: 'q', lat: edge.a.lat, lng: edge.a.lng, ts: r.clock.now() + n, seq: n }]));
  const busy = e.counters();
  await Promise.all(pending);
  const depth = (await busy).shardQueueDepth;
  t.equal(depth[edge.shardA], 3, 'three requests queued for the rider’s shard');
  t.equal(depth[edge.shardB], 0);
  t.same((await e.counters()).shardQueueDepth, [0, 0], 'drained once answered');
});

// The engine through its public API: an order's whole life, offers, escalation, zones, bad input.
import t from 'tap';
import type { Test } from 'tap';
import { DispatchError, MemoryEventStore } from '../../engine/index.ts';
import { rig, orderSpec, offset, keepOpen, STORE, drive, statuses, events, parentOf } from './harness.ts';

async function rejectsWith(t: Test, p: Promise<unknown>, code: string, msg: string): Promise<void> {
  try {
    await p;
    t.fail(`${msg}: expected ${code}, it succeeded`);
  } catch (err) {
    t.ok(err instanceof DispatchError, `${msg}: a DispatchError`);
    t.equal((err as DispatchError).code, code, msg);
  }
}


t.test('an order from creation to delivery, every step seen by watchers and counted in stats', async (t) => {
  const r = await rig();
  const e = r.engine;
  const riderStart = offset(STORE, 600, 0);
  const online = await e.riderOnline('rider-1', { position: riderStart });
  t.equal(online.status, 'available');
  t.same(online.position && { lat: online.position.lat, lng: online.position.lng }, riderStart);

  const spec = orderSpec();
  const created = await e.createOrder(spec);
  t.equal(created.status, 'searching', 'cash on delivery searches at once');
  t.equal(created.seq, 1);
  t.match(created.otp, /^\d{4}$/);
  const mine: string[] = [];
  e.watchOrder(spec.orderId, (u) => mine.push(u.event));

  await r.advance(1_000);
  const offered = await e.getOrder(spec.orderId);
  t.equal(offered.status, 'offered');
  t.equal(offered.offer?.riderId, 'rider-1');
  const riderView = await e.getRider('rider-1');
  t.equal(riderView.status, 'offered');
  t.equal(riderView.offer?.orderId, spec.orderId);

  await rejectsWith(t, e.acceptOffer('rider-2', spec.orderId), 'QD_ERR_RIDER_NOT_FOUND', 'an unknown rider cannot accept');
  await e.riderOnline('rider-2', { position: offset(STORE, 5000, 5000) });
  await rejectsWith(t, e.acceptOffer('rider-2', spec.orderId), 'QD_ERR_NO_OFFER', 'another rider cannot accept');
  const accepted = await e.acceptOffer('rider-1', spec.orderId);
  t.equal(accepted.status, 'assigned');
  t.equal(accepted.riderId, 'rider-1');
  t.equal((await e.getRider('rider-1')).status, 'toPickup');
  await rejectsWith(t, e.arrivedPickup('rider-2', spec.orderId), 'QD_ERR_NOT_ASSIGNED_RIDER', 'only the assigned rider moves the order');

  const seq = { n: 0 };
  await drive(r, 'rider-1', riderStart, STORE, { steps: 6, seq });
  t.equal((await e.getOrder(spec.orderId)).status, 'atPickup', 'the store geofence recognised the arrival');
  t.equal((await e.getRider('rider-1')).status, 'atPickup');
  await e.pickedUp('rider-1', spec.orderId);
  t.equal((await e.getRider('rider-1')).status, 'toDropoff');
  await rejectsWith(t, e.cancelOrder(spec.orderId, 'customer'), 'QD_ERR_CANCEL_NOT_ALLOWED', 'customers cannot cancel after pickup');

  await drive(r, 'rider-1', STORE, spec.dropoff, { steps: 10, seq });
  t.equal((await e.getOrder(spec.orderId)).status, 'atDropoff', 'the customer geofence recognised the arrival');
  const wrong = created.otp === '0000' ? '1111' : '0000';
  await rejectsWith(t, e.deliver('rider-1', spec.orderId, { otp: wrong }), 'QD_ERR_BAD_PROOF', 'a wrong code is refused');
  await rejectsWith(t, e.deliver('rider-1', spec.orderId, {}), 'QD_ERR_BAD_PROOF', 'no proof is refused');
  const delivered = await e.deliver('rider-1', spec.orderId, { otp: created.otp });
  t.equal(delivered.status, 'delivered');
  t.equal((await e.getRider('rider-1')).status, 'available', 'the rider is free again');

  t.same(statuses(r.orderLog, spec.orderId), ['searching', 'offered', 'assigned', 'atPickup', 'pickedUp', 'atDropoff', 'delivered']);
  t.same(mine, ['OFFER', 'ACCEPT', 'ARRIVED_PICKUP', 'PICKED_UP', 'ARRIVED_DROPOFF', 'DELIVER'], 'a per-order watcher sees every later step');
  const seqs = r.orderLog.filter((u) => u.orderId === spec.orderId).map((u) => u.seq);
  t.same(seqs, [1, 2, 3, 4, 5, 6, 7], 'sequence numbers have no gaps');

  const day = new Date(r.clock.now()).toISOString().slice(0, 10);
  const stats = await e.riderStats('rider-1', day);
  t.equal(stats.deliveries, 1);
  t.equal(stats.earnings, 4500);
  t.equal(stats.offers, 1);
  t.equal(stats.accepts, 1);
  t.equal(stats.acceptanceRate, 1);
  t.equal(stats.onTimeRate, 1);
  t.ok(stats.distanceM > 2000, `distance counted (${stats.distanceM.toFixed(0)} m)`);

  // A late watcher resumes from a position and misses nothing.
  const resumed: number[] = [];
  e.watchOrder(spec.orderId, (u) => resumed.push(u.seq), 3);
  await new Promise((res) => setTimeout(res, 20));
  t.same(resumed, [4, 5, 6, 7]);
  await e.close();
});

t.test('prepaid orders wait for the payment; a failed payment cancels', async (t) => {
  const r = await rig();
  await r.engine.riderOnline('r1', { position: offset(STORE, 300, 0) });
  const paid = orderSpec({ payment: 'prepaid' });
  t.equal((await r.engine.createOrder(paid)).status, 'awaitingPayment');
  await r.advance(1_000);
  t.equal((await r.engine.getOrder(paid.orderId)).status, 'awaitingPayment', 'no dispatch before capture');
  t.equal((await r.engine.capturePayment(paid.orderId, 'pay_1')).status, 'searching');
  await r.advance(1_000);
  t.equal((await r.engine.getOrder(paid.orderId)).status, 'offered');

  const failing = orderSpec({ payment: 'prepaid' });
  await r.engine.createOrder(failing);
  const cancelled = await r.engine.failPayment(failing.orderId, 'card declined');
  t.equal(cancelled.status, 'cancelled');
  t.same(cancelled.cancel, { by: 'payment', reason: 'card declined' });
  await r.engine.close();
});

t.test('an offer that expires goes to another rider; the first is never asked again', async (t) => {
  const r = await rig({ config: { offerTtlMs: 20_000 } });
  await r.engine.riderOnline('near', { position: offset(STORE, 200, 0) });
  await r.engine.riderOnline('far', { position: offset(STORE, 2500, 0) });
  const spec = orderSpec();
  await r.engine.createOrder(spec);
  await r.advance(1_000);
  t.equal((await r.engine.getOrder(spec.orderId)).offer?.riderId, 'near', 'the nearest rider is offered first');
  await r.advance(19_000);
  t.equal((await r.engine.getOrder(spec.orderId)).status, 'offered', 'not expired a moment early');
  await r.advance(1_000);
  await r.advance(1_000);
  const after = await r.engine.getOrder(spec.orderId);
  t.equal(after.offer?.riderId, 'far', 're-offered to the other rider');
  t.equal(after.attempts, 1);
  t.equal((await r.engine.getRider('near')).status, 'available', 'the silent rider is free again');
  await rejectsWith(t, r.engine.acceptOffer('near', spec.orderId), 'QD_ERR_NO_OFFER', 'a late accept is refused');
  t.same(events(r.orderLog, spec.orderId), ['CREATED', 'OFFER', 'OFFER_EXPIRED', 'OFFER']);
  await r.engine.close();
});

t.test('declines return the order to the pool; too many failures escalate to operations', async (t) => {
  const r = await rig({ config: { maxOfferAttempts: 2 } });
  await r.engine.riderOnline('a', { position: offset(STORE, 100, 0) });
  await r.engine.riderOnline('b', { position: offset(STORE, 900, 0) });
  await r.engine.riderOnline('c', { position: offset(STORE, 1800, 0) });
  const spec = orderSpec();
  await r.engine.createOrder(spec);
  await r.advance(1_000);
  const first = (await r.engine.getOrder(spec.orderId)).offer!.riderId;
  t.equal(first, 'a');
  t.equal((await r.engine.declineOffer('a', spec.orderId)).status, 'searching');
  await r.advance(1_000);
  const second = (await r.engine.getOrder(spec.orderId)).offer!.riderId;
  t.equal(second, 'b', 'the decliner is excluded');
  const escalated = await r.engine.declineOffer('b', spec.orderId);
  t.equal(escalated.status, 'escalated');
  t.equal(escalated.escalation?.reason, 'tooManyAttempts');
  await r.advance(5_000);
  t.equal((await r.engine.getOrder(spec.orderId)).status, 'escalated', 'escalated orders are not dispatched by themselves');
  await rejectsWith(t, r.engine.redispatchOrder(spec.orderId, ''), 'QD_ERR_REASON_REQUIRED', 'operations give a reason');
  t.equal((await r.engine.redispatchOrder(spec.orderId, 'called rider c')).status, 'searching');
  await r.advance(1_000);
  t.equal((await r.engine.getOrder(spec.orderId)).offer?.riderId, 'c');
  await r.engine.close();
});

t.test('an order nobody can take escalates at its search limit', async (t) => {
  const r = await rig({ config: { searchLimitMs: 60_000 } });
  const spec = orderSpec();
  await r.engine.createOrder(spec);
  await r.advance(59_000);
  t.equal((await r.engine.getOrder(spec.orderId)).status, 'searching');
  await r.advance(2_000);
  const o = await r.engine.getOrder(spec.orderId);
  t.equal(o.status, 'escalated');
  t.equal(o.escalation?.reason, 'searchTimeout');
  t.equal((await r.engine.cancelOrder(spec.orderId, 'ops', 'no riders tonight')).status, 'cancelled');
  await r.engine.close();
});

t.test('a paused zone holds its orders without losing or escalating them', async (t) => {
  const r = await rig({ config: { searchLimitMs: 60_000 } });
  await r.engine.riderOnline('r', { position: offset(STORE, 300, 0) });
  await r.engine.pauseZone('koramangala', [parentOf(STORE, 7)]);
  const spec = orderSpec();
  await r.engine.createOrder(spec);
  await r.advance(1_000);
  t.equal((await r.engine.getOrder(spec.orderId)).status, 'searching', 'no offer while paused');
  await r.advance(120_000);
  t.equal((await r.engine.getOrder(spec.orderId)).status, 'searching', 'not escalated while paused');
  await r.engine.resumeZone('koramangala');
  await r.advance(1_000);
  t.equal((await r.engine.getOrder(spec.orderId)).status, 'offered', 'dispatched once resumed');
  await rejectsWith(t, r.engine.resumeZone('koramangala'), 'QD_ERR_INVALID_ARGUMENT', 'resuming twice is refused');
  await rejectsWith(t, r.engine.pauseZone('z', ['not-a-cell']), 'QD_ERR_INVALID_ARGUMENT', 'cells are checked');
  await r.engine.close();
});

t.test('cancellations: customer before pickup frees the rider; operations need a reason', async (t) => {
  const r = await rig();
  await r.engine.riderOnline('r', { position: offset(STORE, 300, 0) });
  const spec = orderSpec();
  await r.engine.createOrder(spec);
  await r.advance(1_000);
  await r.engine.acceptOffer('r', spec.orderId);
  await rejectsWith(t, r.engine.cancelOrder(spec.orderId, 'ops'), 'QD_ERR_REASON_REQUIRED', 'ops must say why');
  const c = await r.engine.cancelOrder(spec.orderId, 'customer');
  t.equal(c.status, 'cancelled');
  await r.advance(0);
  const rider = await r.engine.getRider('r');
  t.equal(rider.status, 'available');
  t.same(rider.orderIds, []);
  await rejectsWith(t, r.engine.pickedUp('r', spec.orderId), 'QD_ERR_INVALID_TRANSITION', 'a cancelled order cannot move');
  await r.engine.close();
});

t.test('bad input gets a clear error and changes nothing', async (t) => {
  const r = await rig();
  const e = r.engine;
  const bad: Array<[unknown, string]> = [
    [{ ...orderSpec(), pickup: { lat: NaN, lng: 77 } }, 'pickup.lat'],
    [{ ...orderSpec(), dropoff: { lat: 12, lng: 190 } }, 'dropoff.lng'],
    [{ ...orderSpec(), orderId: '' }, 'orderId'],
    [{ ...orderSpec(), payment: 'card' }, 'payment'],
    [{ ...orderSpec(), riderFee: -5 }, 'riderFee'],
    [{ ...orderSpec(), deliveryFee: 12.5 }, 'deliveryFee'],
    [null, 'order'],
  ];
  for (const [spec, field] of bad) {
    try {
      await e.createOrder(spec as never);
      t.fail(`accepted bad ${field}`);
    } catch (err) {
      t.equal((err as DispatchError).code, 'QD_ERR_INVALID_ARGUMENT');
      t.equal((err as DispatchError).details.field, field, `names the field ${field}`);
    }
  }
  const spec = orderSpec();
  await e.createOrder(spec);
  await rejectsWith(t, e.createOrder(spec), 'QD_ERR_ORDER_EXISTS', 'an order id is used once');
  await rejectsWith(t, e.getOrder('nope'), 'QD_ERR_ORDER_NOT_FOUND', 'unknown order');
  await rejectsWith(t, e.riderOnline('', {}), 'QD_ERR_INVALID_ARGUMENT', 'empty rider id');
  await rejectsWith(t, e.riderOnline('x', { capacity: 0 }), 'QD_ERR_INVALID_ARGUMENT', 'capacity');

  await e.riderOnline('late-phone', { position: STORE });
  const behind = await e.ingestFixes([{ riderId: 'late-phone', lat: STORE.lat, lng: STORE.lng, ts: r.clock.now() - 90_000, seq: 1 }]);
  t.equal(behind.accepted, 1, "a phone whose clock runs behind the engine's is not ignored");

  await e.riderOnline('gps', { position: STORE });
  const now = r.clock.now();
  const res = await e.ingestFixes([
    { riderId: 'gps', lat: STORE.lat, lng: STORE.lng + 0.0001, ts: now + 1_000, seq: 1 },
    { riderId: 'gps', lat: STORE.lat, lng: STORE.lng, ts: now + 500, seq: 2 },
    { riderId: 'gps', lat: STORE.lat, lng: STORE.lng, ts: now + 2_000, seq: 1 },
    { riderId: 'gps', lat: NaN, lng: 77, ts: now + 2_000, seq: 2 },
    { riderId: 'gps', lat: 95, lng: 77, ts: now + 3_000, seq: 3 },
    { riderId: 'gps', lat: STORE.lat + 1, lng: STORE.lng, ts: now + 4_000, seq: 4 },
    { riderId: 'gps', lat: STORE.lat, lng: STORE.lng, ts: now + 3_600_000, seq: 5 },
    { riderId: 'ghost', lat: STORE.lat, lng: STORE.lng, ts: now, seq: 1 },
  ]);
  t.equal(res.accepted, 1);
  t.equal(res.stale, 2, 'older fixes, by timestamp or by sequence, are ignored');
  t.same(
    res.rejected.map((x) => `${x.riderId}:${x.reason}`).sort(),
    ['ghost:unknownRider', 'gps:future', 'gps:nan', 'gps:outOfRange', 'gps:teleport'].sort(),
  );
  const pos = (await e.getRider('gps')).position!;
  t.equal(pos.lng, STORE.lng + 0.0001, 'only the good fix moved the rider');
  const counters = await e.counters();
  t.equal(counters.fixesAccepted, 2, 'both accepted fixes counted');
  t.equal(counters.fixesRejected.teleport, 1);

  // The same fixes packed [lat, lng, ts, seq] for one rider (the gateway's path) get the same outcomes.
  await e.riderOnline('packed', { position: STORE });
  const packed = Float64Array.of(
    ...[STORE.lat, STORE.lng + 0.0001, now + 1_000, 1],
    ...[STORE.lat, STORE.lng, now + 500, 2],
    ...[STORE.lat, STORE.lng, now + 2_000, 1],
    ...[NaN, 77, now + 2_000, 2],
    ...[95, 77, now + 3_000, 3],
    ...[STORE.lat + 1, STORE.lng, now + 4_000, 4],
    ...[STORE.lat, STORE.lng, now + 3_600_000, 5],
  );
  const viaPacked = e.ingestRiderFixes('packed', packed);
  packed.fill(0);
  const p = await viaPacked;
  t.equal(p.accepted, 1, 'read before the call returned: the caller may reuse the array');
  t.equal(p.stale, 2);
  t.same(p.rejected.map((x) => `${x.riderId}:${x.reason}`).sort(), ['packed:future', 'packed:nan', 'packed:outOfRange', 'packed:teleport'].sort());
  t.equal((await e.getRider('packed')).position!.lng, STORE.lng + 0.0001);
  const ghost = await e.ingestRiderFixes('ghost', Float64Array.of(STORE.lat, STORE.lng, now, 1, STORE.lat, STORE.lng, now, 2));
  t.same(ghost, { accepted: 0, stale: 0, rejected: [{ riderId: 'ghost', reason: 'unknownRider' }, { riderId: 'ghost', reason: 'unknownRider' }] }, 'an unknown rider: every fix refused');
  t.equal((await e.counters()).fixesAccepted, 3);
  await e.close();
});

t.test('nothing is acknowledged unless durable', async (t) => {
  const store = new MemoryEventStore();
  const r = await rig({ store });
  const spec = orderSpec();
  store.failNextAppend(new Error('disk full'));
  await rejectsWith(t, r.engine.createOrder(spec), 'QD_ERR_STORE_UNAVAILABLE', 'a failed commit is reported');
  await new Promise((res) => setTimeout(res, 20));
  t.same(await store.readStream(`order:${spec.orderId}`), [], 'nothing stored');
  t.equal(statuses(r.orderLog, spec.orderId).length, 0, 'watchers saw nothing');
  await r.engine.riderOnline('r', { position: offset(STORE, 300, 0) });
  await r.advance(1_000);
  t.equal((await r.engine.counters()).offersMade, 0, 'the unacknowledged order is not dispatched');
  await rejectsWith(t, r.engine.getOrder(spec.orderId), 'QD_ERR_ORDER_NOT_FOUND', 'and does not exist');
  const again = await r.engine.createOrder(spec);
  t.equal(again.status, 'searching', 'a retry with the same id succeeds once the store is back');
  await r.engine.close();
});

t.test('a rider whose shift ends before it could reach the store is not offered the order', async (t) => {
  const r = await rig({ config: { travelSpeedMps: 5, detourFactor: 1 } });
  const now = r.clock.now();
  // 2 km away at 5 m/s is 400 s: a shift ending in 5 minutes is too short, one ending in 10 is enough.
  await r.engine.riderOnline('leaving', { position: offset(STORE, 2000, 0), shiftEndsAt: now + 5 * 60_000 });
  await r.engine.riderOnline('staying', { position: offset(STORE, 2200, 0), shiftEndsAt: now + 10 * 60_000 });
  await rejectsWith(t, r.engine.riderOnline('bad', { shiftEndsAt: NaN }), 'QD_ERR_INVALID_ARGUMENT', 'shift end is checked');
  const spec = orderSpec();
  await r.engine.createOrder(spec);
  await r.advance(1_000);
  t.equal((await r.engine.getOrder(spec.orderId)).offer?.riderId, 'staying', 'the nearer rider leaving soon is skipped');
  await r.engine.riderOffline('leaving');
  await r.engine.riderOnline('leaving', { position: offset(STORE, 2000, 0) });
  const second = orderSpec();
  await r.engine.createOrder(second);
  await r.advance(1_000);
  t.equal((await r.engine.getOrder(second.orderId)).offer?.riderId, 'leaving', 'going online again without a shift end clears it');
  await r.engine.close();
});

t.test('a rider bound for a store is offered a second order from it, and delivers the bundle in its order', async (t) => {
  const r = await rig();
  const e = r.engine;
  await e.riderOnline('bundler', { position: offset(STORE, 400, 0), capacity: 2 });
  const first = orderSpec({ dropoff: offset(STORE, 1000, 1000) });
  const second = orderSpec({ dropoff: offset(STORE, -1000, 1000) });
  await e.createOrder(first);
  await r.advance(1_000);
  await e.acceptOffer('bundler', first.orderId);
  await e.createOrder(second);
  await r.advance(1_000);
  const offered = await e.getOrder(second.orderId);
  t.equal(offered.offer?.riderId, 'bundler', 'the second order goes to the rider already heading to its store');
  t.equal((await e.getRider('bundler')).status, 'toPickup', 'the rider keeps driving while it is offered');
  await e.acceptOffer('bundler', second.orderId);
  t.same((await e.getRider('bundler')).orderIds, [first.orderId, second.orderId]);
  await e.createOrder(orderSpec());
  await r.advance(1_000);
  t.equal((await e.getRider('bundler')).offer, null, 'a full rider is offered nothing more');

  await e.arrivedPickup('bundler', first.orderId);
  t.equal((await e.getOrder(second.orderId)).status, 'assigned', "arriving for one order doesn't move the other by itself");
  await e.arrivedPickup('bundler', second.orderId);
  await e.pickedUp('bundler', first.orderId);
  await e.pickedUp('bundler', second.orderId);
  await e.arrivedDropoff('bundler', first.orderId);
  const otp2 = (await e.getOrder(second.orderId)).otp;
  await rejectsWith(t, e.arrivedDropoff('bundler', second.orderId), 'QD_ERR_INVALID_TRANSITION', 'the rider is at the first drop-off');
  await rejectsWith(t, e.deliver('bundler', second.orderId, { otp: otp2 }), 'QD_ERR_INVALID_TRANSITION', 'the bundle is delivered in order');
  t.equal((await e.getOrder(second.orderId)).status, 'pickedUp', 'the refused order did not move');
  await e.deliver('bundler', first.orderId, { otp: (await e.getOrder(first.orderId)).otp });
  t.equal((await e.getRider('bundler')).status, 'toDropoff', 'on to the second customer');
  await e.arrivedDropoff('bundler', second.orderId);
  await e.deliver('bundler', second.orderId, { otp: otp2 });
  const rider = await e.getRider('bundler');
  t.equal(rider.status, 'available');
  t.same(rider.orderIds, []);
  await e.close();
});

t.test('zone pauses survive a restart, and a zone resumed before it can be paused again durably', async (t) => {
  const store = new MemoryEventStore();
  const keep = keepOpen(store);
  const cell = parentOf(STORE, 7);
  const a = await rig({ store: keep });
  await a.engine.pauseZone('old', [cell]);
  await a.engine.resumeZone('old');
  await a.engine.pauseZone('held', [cell]);
  await a.engine.close();

  const b = await rig({ store: keep, clock: a.clock });
  await b.engine.riderOnline('r', { position: offset(STORE, 300, 0) });
  const spec = orderSpec();
  await b.engine.createOrder(spec);
  await b.advance(1_000);
  t.equal((await b.engine.getOrder(spec.orderId)).status, 'searching', 'the pause held across the restart');
  await b.engine.pauseZone('old', [cell]);
  t.same((await store.readStream('zone:old')).map((e) => `${e.seq}:${e.type}`), ['1:PAUSED', '2:RESUMED', '3:PAUSED']);
  await b.engine.resumeZone('held');
  await b.engine.resumeZone('old');
  await b.advance(1_000);
  t.equal((await b.engine.getOrder(spec.orderId)).status, 'offered');
  await b.engine.close();
});

t.test('nearby riders, nearest first; a busy rider cannot go offline', async (t) => {
  const r = await rig();
  const e = r.engine;
  await e.riderOnline('r-far', { position: offset(STORE, 1500, 0) });
  await e.riderOnline('r-near', { position: offset(STORE, 200, 0) });
  await e.riderOnline('r-mid', { position: offset(STORE, 0, 700) });
  await e.riderOnline('r-out', { position: offset(STORE, 9000, 0) });
  await e.riderOnline('r-off', { position: offset(STORE, 100, 0) });
  await e.riderOffline('r-off');
  const near = await e.nearbyRiders(STORE, 2000, 10);
  t.same(near.map((n) => n.riderId), ['r-near', 'r-mid', 'r-far'], 'within the radius, nearest first, offline riders left out');
  t.ok(Math.abs(near[0].distanceM - 200) < 2, `distance in metres (${near[0].distanceM.toFixed(1)})`);
  t.same((await e.nearbyRiders(STORE, 2000, 1)).map((n) => n.riderId), ['r-near'], 'limit');
  await rejectsWith(t, e.nearbyRiders({ lat: 91, lng: 0 }, 100), 'QD_ERR_INVALID_ARGUMENT', 'position checked');
  await rejectsWith(t, e.nearbyRiders(STORE, -1), 'QD_ERR_INVALID_ARGUMENT', 'radius checked');

  const spec = orderSpec();
  await e.createOrder(spec);
  await r.advance(1_000);
  await e.acceptOffer('r-near', spec.orderId);
  await rejectsWith(t, e.riderOffline('r-near'), 'QD_ERR_RIDER_BUSY', 'a rider holding an order stays online');
  await rejectsWith(t, e.riderBreak('r-near', true), 'QD_ERR_RIDER_BUSY', 'and cannot take a break');
  t.equal((await e.riderOnline('r-near', {})).status, 'toPickup', 'going online again is harmless');
  await rejectsWith(t, e.getRider('nobody'), 'QD_ERR_RIDER_NOT_FOUND', 'unknown rider');
  await e.close();
});

// The rider machine: every transition and guard, bundles, refusals with their codes, replay determinism and memory per rider.
import t from 'tap';
import type { Test } from 'tap';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';
import { createActor, initialTransition, transition } from 'xstate';
import {
  riderMachine,
  riderStatus,
  riderTarget,
  riderAcceptsNewOffer,
  riderCanBundle,
  explainRiderRefusal,
} from '../../engine/rider/index.ts';
import type { RiderEvent, RiderInput, RiderSnapshot } from '../../engine/rider/index.ts';
import type { ErrorCode } from '../../engine/errors.ts';
import type { LatLng, RiderStatus } from '../../engine/types.ts';

const INPUT: RiderInput = { riderId: 'r-1', capacity: 2, createdAt: 1_000 };

const S1_PICKUP: LatLng = { lat: 12.9352, lng: 77.6245 };
const S2_PICKUP: LatLng = { lat: 12.97, lng: 77.6 };
const drop = (n: number): LatLng => ({ lat: 12.9 + n / 100, lng: 77.7 });

function offer(orderId: string, at: number, storeId = 's1'): RiderEvent {
  const n = Number(orderId.slice(1));
  return { type: 'OFFER', at, orderId, storeId, pickup: storeId === 's1' ? S1_PICKUP : S2_PICKUP, dropoff: drop(n), expiresAt: at + 30 };
}

/** Folds events with the pure transition function; every fixture step must be taken. */
function fold(events: RiderEvent[], inp: RiderInput = INPUT): RiderSnapshot {
  let [snap] = initialTransition(riderMachine, inp);
  for (const e of events) {
    const refusal = explainRiderRefusal(snap, e);
    if (refusal) throw new Error(`fixture step ${e.type} refused: ${refusal.message}`);
    [snap] = transition(riderMachine, snap, e);
  }
  return snap;
}

/** Applies one event, asserting that can() and the explainer agree; returns the next snapshot. */
function step(t: Test, snap: RiderSnapshot, e: RiderEvent, expect: RiderStatus | ErrorCode): RiderSnapshot {
  const refusal = explainRiderRefusal(snap, e);
  t.equal(snap.can(e), refusal === null, `${e.type} in ${riderStatus(snap)}: can() agrees`);
  if (refusal) {
    t.equal(refusal.code, expect, `${e.type} in ${riderStatus(snap)} refused with ${expect}`);
    return snap;
  }
  const [next] = transition(riderMachine, snap, e);
  t.equal(riderStatus(next), expect, `${e.type} in ${riderStatus(snap)} leads to ${expect}`);
  t.equal(next.context.lastChangeAt, e.at, 'lastChangeAt follows every transition');
  return next;
}

const online: RiderEvent = { type: 'GO_ONLINE', at: 10 };
const accept = (orderId: string, at: number): RiderEvent => ({ type: 'ACCEPT', at, orderId });
const pickedUp = (orderId: string, at: number): RiderEvent => ({ type: 'PICKED_UP', at, orderId });
const arrivedDropoff = (orderId: string, at: number): RiderEvent => ({ type: 'ARRIVED_DROPOFF', at, orderId });
const delivered = (orderId: string, at: number): RiderEvent => ({ type: 'DELIVERED', at, orderId });
const removed = (orderId: string, at: number): RiderEvent => ({ type: 'ORDER_REMOVED', at, orderId });

/** The events that bring a rider holding o1 to each busy state. */
const fixtureEvents: Record<'atPickup' | 'toDropoff' | 'atDropoff', RiderEvent[]> = {
  atPickup: [online, offer('o1', 12), accept('o1', 13), { type: 'ARRIVED_PICKUP', at: 14 }],
  toDropoff: [online, offer('o1', 12), accept('o1', 13), { type: 'ARRIVED_PICKUP', at: 14 }, pickedUp('o1', 15)],
  atDropoff: [online, offer('o1', 12), accept('o1', 13), { type: 'ARRIVED_PICKUP', at: 14 }, pickedUp('o1', 15), arrivedDropoff('o1', 16)],
};

/** One snapshot resting in each state, holding order o1 from store s1 once busy. */
const fixtures: Record<RiderStatus, () => RiderSnapshot> = {
  offline: () => fold([]),
  available: () => fold([online]),
  onBreak: () => fold([online, { type: 'START_BREAK', at: 11 }]),
  offered: () => fold([online, offer('o1', 12)]),
  toPickup: () => fold([online, offer('o1', 12), accept('o1', 13)]),
  atPickup: () => fold(fixtureEvents.atPickup),
  toDropoff: () => fold(fixtureEvents.toDropoff),
  atDropoff: () => fold(fixtureEvents.atDropoff),
};
const STATES = Object.keys(fixtures) as RiderStatus[];
const BUSY: RiderStatus[] = ['toPickup', 'atPickup', 'toDropoff', 'atDropoff'];

/** Every event type, checked complete by the compiler. */
const EVENT_TYPES: Record<RiderEvent['type'], true> = {
  GO_ONLINE: true,
  GO_OFFLINE: true,
  START_BREAK: true,
  END_BREAK: true,
  OFFER: true,
  ACCEPT: true,
  DECLINE: true,
  OFFER_EXPIRED: true,
  ARRIVED_PICKUP: true,
  PICKED_UP: true,
  ARRIVED_DROPOFF: true,
  DELIVERED: true,
  ORDER_REMOVED: true,
};

type Code = Exclude<ErrorCode, 'QD_ERR_INTERNAL'>;
interface Row {
  event: RiderEvent;
  accepts: Partial<Record<RiderStatus, RiderStatus>>;
  refuse: Code;
  except?: Partial<Record<RiderStatus, Code>>;
}

const E = 100;
const busy = (states: RiderStatus[]) => Object.fromEntries(states.map((s) => [s, 'QD_ERR_RIDER_BUSY' as const]));
const rows: Record<string, Row> = {
  'go online': { event: { type: 'GO_ONLINE', at: E }, accepts: { offline: 'available' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'go offline': {
    event: { type: 'GO_OFFLINE', at: E },
    accepts: { available: 'offline', onBreak: 'offline' },
    refuse: 'QD_ERR_INVALID_TRANSITION',
    except: busy(['offered', ...BUSY]),
  },
  'start a break': {
    event: { type: 'START_BREAK', at: E },
    accepts: { available: 'onBreak' },
    refuse: 'QD_ERR_INVALID_TRANSITION',
    except: busy(['offered', ...BUSY]),
  },
  'end a break': { event: { type: 'END_BREAK', at: E }, accepts: { onBreak: 'available' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'offer from the same store': {
    event: offer('o2', E),
    accepts: { available: 'offered', toPickup: 'toPickup', atPickup: 'atPickup' },
    refuse: 'QD_ERR_INVALID_TRANSITION',
  },
  'offer from another store': { event: offer('o2', E, 's2'), accepts: { available: 'offered' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'accept the offer held': { event: accept('o1', E), accepts: { offered: 'toPickup' }, refuse: 'QD_ERR_NO_OFFER' },
  'accept an order never offered': { event: accept('o9', E), accepts: {}, refuse: 'QD_ERR_NO_OFFER' },
  'decline the offer held': { event: { type: 'DECLINE', at: E, orderId: 'o1' }, accepts: { offered: 'available' }, refuse: 'QD_ERR_NO_OFFER' },
  'decline an order never offered': { event: { type: 'DECLINE', at: E, orderId: 'o9' }, accepts: {}, refuse: 'QD_ERR_NO_OFFER' },
  'the offer held expires': { event: { type: 'OFFER_EXPIRED', at: E, orderId: 'o1' }, accepts: { offered: 'available' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'another offer expires': { event: { type: 'OFFER_EXPIRED', at: E, orderId: 'o9' }, accepts: {}, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'arrived at the store': { event: { type: 'ARRIVED_PICKUP', at: E }, accepts: { toPickup: 'atPickup' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'picked up the job': { event: pickedUp('o1', E), accepts: { atPickup: 'toDropoff' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'picked up an order not held': { event: pickedUp('o9', E), accepts: {}, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'arrived at the drop-off': { event: arrivedDropoff('o1', E), accepts: { toDropoff: 'atDropoff' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'arrived at another drop-off': { event: arrivedDropoff('o9', E), accepts: {}, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'delivered the job': { event: delivered('o1', E), accepts: { atDropoff: 'available' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'delivered an order not held': { event: delivered('o9', E), accepts: {}, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'the order held is removed': {
    event: removed('o1', E),
    accepts: { offered: 'available', toPickup: 'available', atPickup: 'available', toDropoff: 'available', atDropoff: 'available' },
    refuse: 'QD_ERR_INVALID_TRANSITION',
  },
  'an order not held is removed': { event: removed('o9', E), accepts: {}, refuse: 'QD_ERR_INVALID_TRANSITION' },
};

t.test('every state against every event: taken where it should be, else refused with the right code', async (t) => {
  t.same([...new Set(Object.values(rows).map((r) => r.event.type))].sort(), Object.keys(EVENT_TYPES).sort(), 'every event type');
  for (const [name, row] of Object.entries(rows)) {
    for (const state of STATES) {
      const snap = fixtures[state]();
      t.equal(riderStatus(snap), state, `fixture ${state}`);
      const refusal = explainRiderRefusal(snap, row.event);
      const where = `${name} in ${state}`;
      t.equal(snap.can(row.event), refusal === null, `${where}: can() agrees with the explanation`);
      const [next] = transition(riderMachine, snap, row.event);
      const to = row.accepts[state];
      if (to !== undefined) {
        t.equal(refusal, null, `${where}: taken`);
        t.equal(riderStatus(next), to, `${where}: leads to ${to}`);
        t.equal(next.context.lastChangeAt, E, `${where}: lastChangeAt`);
      } else {
        const code = row.except?.[state] ?? row.refuse;
        t.equal(refusal?.code, code, `${where}: ${code}`);
        t.equal(next.value, snap.value, `${where}: state unchanged`);
        t.same(next.context, snap.context, `${where}: context unchanged`);
        if (code === 'QD_ERR_INVALID_TRANSITION') {
          t.same(refusal?.details, { entity: 'rider', id: 'r-1', action: row.event.type.toLowerCase().replace(/_/g, ' '), state }, `${where}: details`);
        }
      }
    }
  }
});

t.test('refusal details name the rider and the orders', async (t) => {
  const b = explainRiderRefusal(fixtures.toDropoff(), { type: 'GO_OFFLINE', at: E })!;
  t.same(b.details, { riderId: 'r-1', orderIds: ['o1'] });
  t.equal(b.message, 'rider r-1 still holds orders: o1');
  const withOffer = fold([online, offer('o1', 12), accept('o1', 13), offer('o2', 14)]);
  t.same(explainRiderRefusal(withOffer, { type: 'START_BREAK', at: E })!.details, { riderId: 'r-1', orderIds: ['o1', 'o2'] }, 'an open offer counts');
  t.same(explainRiderRefusal(fixtures.offered(), { type: 'GO_OFFLINE', at: E })!.details, { riderId: 'r-1', orderIds: ['o1'] });
  const n = explainRiderRefusal(fixtures.available(), accept('o3', E))!;
  t.same(n.details, { riderId: 'r-1', orderId: 'o3' });
  t.equal(n.message, 'rider r-1 holds no offer for order o3');
  t.equal(explainRiderRefusal(fixtures.offline(), { type: 'GO_OFFLINE', at: E })!.message, 'rider r-1 cannot go offline while offline');
});

t.test('online, breaks and offline', async (t) => {
  let s = fold([]);
  t.match(s.context, { riderId: 'r-1', capacity: 2, jobs: [], offer: null, dropoffOrderId: null, onlineSince: null, lastChangeAt: 1_000 });
  s = step(t, s, { type: 'GO_ONLINE', at: 20 }, 'available');
  t.equal(s.context.onlineSince, 20);
  s = step(t, s, { type: 'START_BREAK', at: 30 }, 'onBreak');
  t.equal(s.context.onlineSince, 20, 'a break is still online');
  s = step(t, s, { type: 'END_BREAK', at: 40 }, 'available');
  s = step(t, s, { type: 'START_BREAK', at: 50 }, 'onBreak');
  s = step(t, s, { type: 'GO_OFFLINE', at: 60 }, 'offline');
  t.equal(s.context.onlineSince, null);
  s = step(t, s, { type: 'GO_ONLINE', at: 70 }, 'available');
  s = step(t, s, { type: 'GO_OFFLINE', at: 80 }, 'offline');
  t.equal(s.context.lastChangeAt, 80);
});

t.test('a single order: offer, accept, pick up, drop off', async (t) => {
  let s = fold([online]);
  t.ok(riderAcceptsNewOffer(s));
  s = step(t, s, offer('o1', 20), 'offered');
  t.same(s.context.offer, { orderId: 'o1', storeId: 's1', pickup: S1_PICKUP, dropoff: drop(1), offeredAt: 20, expiresAt: 50 });
  t.notOk(riderAcceptsNewOffer(s));
  s = step(t, s, offer('o2', 21), 'QD_ERR_INVALID_TRANSITION');
  s = step(t, s, accept('o1', 22), 'toPickup');
  t.equal(s.context.offer, null);
  t.same(s.context.jobs, [{ orderId: 'o1', storeId: 's1', pickup: S1_PICKUP, dropoff: drop(1), pickedUp: false }]);
  t.same(riderTarget(s), { kind: 'pickup', orderId: 'o1', at: S1_PICKUP });
  s = step(t, s, { type: 'ARRIVED_PICKUP', at: 23 }, 'atPickup');
  t.same(riderTarget(s), { kind: 'pickup', orderId: 'o1', at: S1_PICKUP }, 'standing at the store');
  s = step(t, s, pickedUp('o1', 24), 'toDropoff');
  t.equal(s.context.dropoffOrderId, 'o1');
  t.same(riderTarget(s), { kind: 'dropoff', orderId: 'o1', at: drop(1) });
  s = step(t, s, arrivedDropoff('o1', 25), 'atDropoff');
  t.same(riderTarget(s), { kind: 'dropoff', orderId: 'o1', at: drop(1) });
  s = step(t, s, delivered('o1', 26), 'available');
  t.same(s.context.jobs, []);
  t.equal(s.context.dropoffOrderId, null);
  t.equal(riderTarget(s), null);
  t.ok(riderAcceptsNewOffer(s));
});

t.test('declined, expired and withdrawn offers free the rider', async (t) => {
  for (const e of [{ type: 'DECLINE', at: 30, orderId: 'o1' }, { type: 'OFFER_EXPIRED', at: 30, orderId: 'o1' }, removed('o1', 30)] as RiderEvent[]) {
    const s = step(t, fixtures.offered(), e, 'available');
    t.equal(s.context.offer, null, `${e.type} clears the offer`);
  }
  t.equal(explainRiderRefusal(fixtures.offered(), { type: 'DECLINE', at: 30, orderId: 'o2' })?.code, 'QD_ERR_NO_OFFER');
});

t.test('a bundle: a second order from the same store, picked up together, dropped off in order', async (t) => {
  let s = fixtures.toPickup();
  t.ok(riderCanBundle(s, 's1'));
  t.notOk(riderCanBundle(s, 's2'), 'not from another store');
  t.notOk(riderAcceptsNewOffer(s), 'busy riders take no fresh order');
  s = step(t, s, offer('o2', 20, 's2'), 'QD_ERR_INVALID_TRANSITION');
  s = step(t, s, offer('o1', 20), 'QD_ERR_INVALID_TRANSITION');
  s = step(t, s, offer('o2', 20), 'toPickup');
  t.equal(s.context.offer?.orderId, 'o2');
  t.notOk(riderCanBundle(s, 's1'), 'one open offer at a time');
  s = step(t, s, offer('o3', 21), 'QD_ERR_INVALID_TRANSITION');
  s = step(t, s, accept('o2', 22), 'toPickup');
  t.same(
    s.context.jobs.map((j) => j.orderId),
    ['o1', 'o2'],
  );
  t.notOk(riderCanBundle(s, 's1'), 'full at capacity 2');
  s = step(t, s, offer('o3', 23), 'QD_ERR_INVALID_TRANSITION');
  s = step(t, s, { type: 'ARRIVED_PICKUP', at: 24 }, 'atPickup');
  s = step(t, s, { type: 'ARRIVED_PICKUP', at: 25 }, 'QD_ERR_INVALID_TRANSITION');
  s = step(t, s, pickedUp('o2', 26), 'atPickup');
  t.same(riderTarget(s), { kind: 'pickup', orderId: 'o1', at: S1_PICKUP }, 'still waiting for o1');
  t.equal(s.context.dropoffOrderId, null);
  s = step(t, s, pickedUp('o2', 27), 'QD_ERR_INVALID_TRANSITION');
  s = step(t, s, pickedUp('o1', 28), 'toDropoff');
  t.equal(s.context.dropoffOrderId, 'o1', 'the first accepted job is dropped first');
  s = step(t, s, arrivedDropoff('o2', 29), 'QD_ERR_INVALID_TRANSITION');
  s = step(t, s, arrivedDropoff('o1', 30), 'atDropoff');
  s = step(t, s, delivered('o2', 31), 'QD_ERR_INVALID_TRANSITION');
  s = step(t, s, delivered('o1', 32), 'toDropoff');
  t.equal(s.context.dropoffOrderId, 'o2');
  t.same(riderTarget(s), { kind: 'dropoff', orderId: 'o2', at: drop(2) });
  s = step(t, s, arrivedDropoff('o2', 33), 'atDropoff');
  s = step(t, s, delivered('o2', 34), 'available');
  t.same(s.context.jobs, []);
});

t.test('a bundle offer may be answered in every busy state; answering keeps the state', async (t) => {
  const atStore = fold([online, offer('o1', 12), accept('o1', 13), { type: 'ARRIVED_PICKUP', at: 14 }, offer('o2', 15)]);
  t.ok(riderCanBundle(fixtures.atPickup(), 's1'), 'at the store, too');
  for (const e of [{ type: 'DECLINE', at: 16, orderId: 'o2' }, { type: 'OFFER_EXPIRED', at: 16, orderId: 'o2' }] as RiderEvent[]) {
    const s = step(t, atStore, e, 'atPickup');
    t.equal(s.context.offer, null);
    t.same(
      s.context.jobs.map((j) => j.orderId),
      ['o1'],
    );
  }
  const taken = step(t, atStore, accept('o2', 16), 'atPickup');
  t.same(
    taken.context.jobs.map((j) => [j.orderId, j.pickedUp]),
    [
      ['o1', false],
      ['o2', false],
    ],
  );
  const onTheWay = fold([online, offer('o1', 12), accept('o1', 13), offer('o2', 14)]);
  t.equal(step(t, onTheWay, { type: 'DECLINE', at: 15, orderId: 'o2' }, 'toPickup').context.offer, null);
  t.equal(step(t, onTheWay, { type: 'OFFER_EXPIRED', at: 15, orderId: 'o2' }, 'toPickup').context.offer, null);

  // The last job picked up while the offer is still open: it can still be answered on the way out.
  let s = step(t, atStore, pickedUp('o1', 16), 'toDropoff');
  t.equal(s.context.offer?.orderId, 'o2', 'the open offer survives the pickup');
  s = step(t, s, offer('o3', 17), 'QD_ERR_INVALID_TRANSITION');
  t.equal(step(t, s, { type: 'DECLINE', at: 17, orderId: 'o2' }, 'toDropoff').context.offer, null);
  t.equal(step(t, s, { type: 'OFFER_EXPIRED', at: 17, orderId: 'o2' }, 'toDropoff').context.offer, null);
  const atDoor = step(t, s, arrivedDropoff('o1', 17), 'atDropoff');
  t.equal(step(t, atDoor, { type: 'DECLINE', at: 18, orderId: 'o2' }, 'atDropoff').context.offer, null);
  t.equal(step(t, atDoor, { type: 'OFFER_EXPIRED', at: 18, orderId: 'o2' }, 'atDropoff').context.offer, null);
  // Delivered with the offer still open: the rider weighs it.
  const weighing = step(t, atDoor, delivered('o1', 19), 'offered');
  t.equal(weighing.context.offer?.orderId, 'o2');
  t.equal(step(t, weighing, accept('o2', 20), 'toPickup').context.jobs[0].orderId, 'o2');
  // Accepted on the way: delivered first, then back to the store.
  s = step(t, s, accept('o2', 18), 'toDropoff');
  t.same(
    s.context.jobs.map((j) => [j.orderId, j.pickedUp]),
    [
      ['o1', true],
      ['o2', false],
    ],
  );
  t.same(riderTarget(s), { kind: 'dropoff', orderId: 'o1', at: drop(1) });
  s = step(t, s, arrivedDropoff('o1', 19), 'atDropoff');
  s = step(t, s, accept('o2', 19), 'QD_ERR_NO_OFFER');
  s = step(t, s, delivered('o1', 20), 'toPickup');
  t.equal(s.context.dropoffOrderId, null);
  t.same(riderTarget(s), { kind: 'pickup', orderId: 'o2', at: S1_PICKUP });
});

t.test('capacity limits offers: 1 takes no bundle, 0 takes nothing', async (t) => {
  const none = fold([online], { ...INPUT, capacity: 0 });
  t.notOk(riderCanBundle(none, 's1'));
  t.equal(explainRiderRefusal(none, offer('o1', 11))?.code, 'QD_ERR_INVALID_TRANSITION');
  const s = fold([online, offer('o1', 12), accept('o1', 13)], { ...INPUT, capacity: 1 });
  t.notOk(riderCanBundle(s, 's1'));
  t.equal(explainRiderRefusal(s, offer('o2', 14))?.code, 'QD_ERR_INVALID_TRANSITION');
});

t.test('a removed order or a delivery leaves the rider in the state that fits what is left', async (t) => {
  const start = [online, offer('o1', 12), accept('o1', 13)];
  const two = [...start, offer('o2', 14), accept('o2', 15)];
  const atStore2 = [...two, { type: 'ARRIVED_PICKUP', at: 16 } as RiderEvent];
  const bothPicked = [...atStore2, pickedUp('o1', 17), pickedUp('o2', 18)];
  const cases: Array<{ name: string; events: RiderEvent[]; event: RiderEvent; to: RiderStatus; jobs: string[]; dropoff: string | null; offer: string | null }> =
    [
      { name: 'toPickup, one of two removed: stays', events: two, event: removed('o1', 20), to: 'toPickup', jobs: ['o2'], dropoff: null, offer: null },
      { name: 'toPickup, the offer removed: stays', events: [...start, offer('o2', 14)], event: removed('o2', 20), to: 'toPickup', jobs: ['o1'], dropoff: null, offer: null },
      { name: 'toPickup, the last job removed with an offer open', events: [...start, offer('o2', 14)], event: removed('o1', 20), to: 'offered', jobs: [], dropoff: null, offer: 'o2' },
      { name: 'toPickup, the last job removed', events: start, event: removed('o1', 20), to: 'available', jobs: [], dropoff: null, offer: null },
      { name: 'atPickup, a waiting job removed, another waits: stays', events: atStore2, event: removed('o1', 20), to: 'atPickup', jobs: ['o2'], dropoff: null, offer: null },
      {
        name: 'atPickup, the picked job removed, another waits: stays',
        events: [...atStore2, pickedUp('o1', 17)],
        event: removed('o1', 20),
        to: 'atPickup',
        jobs: ['o2'],
        dropoff: null,
        offer: null,
      },
      {
        name: 'atPickup, the waiting job removed, one picked: off to drop it',
        events: [...atStore2, pickedUp('o1', 17)],
        event: removed('o2', 20),
        to: 'toDropoff',
        jobs: ['o1'],
        dropoff: 'o1',
        offer: null,
      },
      {
        name: 'atPickup, the last job removed with an offer open',
        events: [...start, { type: 'ARRIVED_PICKUP', at: 14 }, offer('o2', 15)],
        event: removed('o1', 20),
        to: 'offered',
        jobs: [],
        dropoff: null,
        offer: 'o2',
      },
      { name: 'atPickup, the last job removed', events: fixtureEvents.atPickup, event: removed('o1', 20), to: 'available', jobs: [], dropoff: null, offer: null },
      { name: 'toDropoff, the other job removed: stays', events: bothPicked, event: removed('o2', 20), to: 'toDropoff', jobs: ['o1'], dropoff: 'o1', offer: null },
      { name: 'toDropoff, the current drop-off removed: on to the next', events: bothPicked, event: removed('o1', 20), to: 'toDropoff', jobs: ['o2'], dropoff: 'o2', offer: null },
      {
        name: 'toDropoff, the only picked job removed, one accepted on the way: back to the store',
        events: [...start, { type: 'ARRIVED_PICKUP', at: 14 }, offer('o2', 15), pickedUp('o1', 16), accept('o2', 17)],
        event: removed('o1', 20),
        to: 'toPickup',
        jobs: ['o2'],
        dropoff: null,
        offer: null,
      },
      {
        name: 'toDropoff, the last job removed with an offer open',
        events: [...start, { type: 'ARRIVED_PICKUP', at: 14 }, offer('o2', 15), pickedUp('o1', 16)],
        event: removed('o1', 20),
        to: 'offered',
        jobs: [],
        dropoff: null,
        offer: 'o2',
      },
      {
        name: 'toDropoff, the open offer removed: stays',
        events: [...start, { type: 'ARRIVED_PICKUP', at: 14 }, offer('o2', 15), pickedUp('o1', 16)],
        event: removed('o2', 20),
        to: 'toDropoff',
        jobs: ['o1'],
        dropoff: 'o1',
        offer: null,
      },
      { name: 'toDropoff, the last job removed', events: fixtureEvents.toDropoff, event: removed('o1', 20), to: 'available', jobs: [], dropoff: null, offer: null },
      {
        name: 'atDropoff, the other job removed: stays',
        events: [...bothPicked, arrivedDropoff('o1', 19)],
        event: removed('o2', 20),
        to: 'atDropoff',
        jobs: ['o1'],
        dropoff: 'o1',
        offer: null,
      },
      {
        name: 'atDropoff, the current drop-off removed: on to the next',
        events: [...bothPicked, arrivedDropoff('o1', 19)],
        event: removed('o1', 20),
        to: 'toDropoff',
        jobs: ['o2'],
        dropoff: 'o2',
        offer: null,
      },
      {
        name: 'atDropoff, removed with a job accepted on the way: back to the store',
        events: [...start, { type: 'ARRIVED_PICKUP', at: 14 }, offer('o2', 15), pickedUp('o1', 16), accept('o2', 17), arrivedDropoff('o1', 18)],
        event: removed('o1', 20),
        to: 'toPickup',
        jobs: ['o2'],
        dropoff: null,
        offer: null,
      },
      {
        name: 'atDropoff, the last job removed with an offer open',
        events: [...start, { type: 'ARRIVED_PICKUP', at: 14 }, offer('o2', 15), pickedUp('o1', 16), arrivedDropoff('o1', 18)],
        event: removed('o1', 20),
        to: 'offered',
        jobs: [],
        dropoff: null,
        offer: 'o2',
      },
      { name: 'atDropoff, the last job removed', events: fixtureEvents.atDropoff, event: removed('o1', 20), to: 'available', jobs: [], dropoff: null, offer: null },
      {
        name: 'atDropoff, delivered with one accepted on the way: back to the store',
        events: [...start, { type: 'ARRIVED_PICKUP', at: 14 }, offer('o2', 15), pickedUp('o1', 16), accept('o2', 17), arrivedDropoff('o1', 18)],
        event: delivered('o1', 20),
        to: 'toPickup',
        jobs: ['o2'],
        dropoff: null,
        offer: null,
      },
    ];
  for (const c of cases) {
    const s = step(t, fold(c.events), c.event, c.to);
    t.same(
      s.context.jobs.map((j) => j.orderId),
      c.jobs,
      `${c.name}: jobs`,
    );
    t.equal(s.context.dropoffOrderId, c.dropoff, `${c.name}: drop-off`);
    t.equal(s.context.offer?.orderId ?? null, c.offer, `${c.name}: offer`);
  }
});

t.test('targets, fresh offers and bundling by state', async (t) => {
  const expectTarget: Record<RiderStatus, ReturnType<typeof riderTarget>> = {
    offline: null,
    available: null,
    onBreak: null,
    offered: null,
    toPickup: { kind: 'pickup', orderId: 'o1', at: S1_PICKUP },
    atPickup: { kind: 'pickup', orderId: 'o1', at: S1_PICKUP },
    toDropoff: { kind: 'dropoff', orderId: 'o1', at: drop(1) },
    atDropoff: { kind: 'dropoff', orderId: 'o1', at: drop(1) },
  };
  for (const state of STATES) {
    const s = fixtures[state]();
    t.same(riderTarget(s), expectTarget[state], `${state}: target`);
    t.equal(riderAcceptsNewOffer(s), state === 'available', `${state}: takes a fresh offer`);
    t.equal(riderCanBundle(s, 's1'), state === 'toPickup' || state === 'atPickup', `${state}: bundles from s1`);
    t.notOk(riderCanBundle(s, 's2'), `${state}: never bundles from s2`);
  }
});

/** A day's shift: a break, a single job, a bundle with a removal, then home. */
const shift: RiderEvent[] = [
  { type: 'GO_ONLINE', at: 100 },
  { type: 'START_BREAK', at: 200 },
  { type: 'END_BREAK', at: 300 },
  offer('o1', 400),
  accept('o1', 405),
  { type: 'ARRIVED_PICKUP', at: 500 },
  pickedUp('o1', 520),
  arrivedDropoff('o1', 900),
  delivered('o1', 960),
  offer('o2', 1000),
  { type: 'OFFER_EXPIRED', at: 1030, orderId: 'o2' },
  offer('o3', 1100),
  accept('o3', 1101),
  offer('o4', 1150),
  accept('o4', 1160),
  { type: 'ARRIVED_PICKUP', at: 1200 },
  removed('o3', 1210),
  pickedUp('o4', 1220),
  arrivedDropoff('o4', 1500),
  delivered('o4', 1560),
  { type: 'GO_OFFLINE', at: 1600 },
];

t.test('the machine is timeless: no delays, no invoked actors, only assign actions', async (t) => {
  for (const n of [riderMachine.root, ...Object.values(riderMachine.root.states)]) {
    t.equal(n.after.length + n.invoke.length + n.entry.length + n.exit.length, 0, `${n.key}: no timers, actors, entry or exit`);
  }
  for (const [name, action] of Object.entries(riderMachine.implementations.actions)) {
    t.equal((action as { type?: string }).type, 'xstate.assign', `${name} is an assign`);
  }
  const realNow = Date.now;
  Date.now = () => {
    throw new Error('machine read the clock');
  };
  try {
    const actor = createActor(riderMachine, { input: INPUT }).start();
    for (const e of shift) actor.send(e);
    t.equal(riderStatus(actor.getSnapshot()), 'offline');
    t.notOk(actor.getSnapshot().error);
  } finally {
    Date.now = realNow;
  }
});

t.test('persisting, restoring from JSON and continuing equals an uninterrupted run; replay rebuilds the same context', async (t) => {
  const whole = createActor(riderMachine, { input: INPUT }).start();
  for (const e of shift) whole.send(e);
  const expected = whole.getPersistedSnapshot();
  for (let cut = 0; cut <= shift.length; cut++) {
    const first = createActor(riderMachine, { input: INPUT }).start();
    for (const e of shift.slice(0, cut)) first.send(e);
    const stored = JSON.parse(JSON.stringify(first.getPersistedSnapshot()));
    first.stop();
    const resumed = createActor(riderMachine, { snapshot: stored, input: undefined }).start();
    for (const e of shift.slice(cut)) resumed.send(e);
    t.same(resumed.getPersistedSnapshot(), expected, `cut after ${cut} events`);
  }
  const replay = createActor(riderMachine, { input: INPUT }).start();
  for (const e of JSON.parse(JSON.stringify(shift)) as RiderEvent[]) replay.send(e);
  t.same(replay.getSnapshot().context, whole.getSnapshot().context, 'replayed stored events give an identical context');
  t.equal(JSON.stringify(fold(shift).context), JSON.stringify(whole.getSnapshot().context), 'the pure transition agrees with the actor, key order too');
});

/** Every transition of the rider machine: state, event, outcome. */
const RIDER_TRANSITIONS = [
  'atDropoff ACCEPT > atDropoff',
  'atDropoff DECLINE > atDropoff',
  'atDropoff DELIVERED > available',
  'atDropoff DELIVERED > offered',
  'atDropoff DELIVERED > toDropoff',
  'atDropoff DELIVERED > toPickup',
  'atDropoff OFFER_EXPIRED > atDropoff',
  'atDropoff ORDER_REMOVED > atDropoff',
  'atDropoff ORDER_REMOVED > available',
  'atDropoff ORDER_REMOVED > offered',
  'atDropoff ORDER_REMOVED > toDropoff',
  'atDropoff ORDER_REMOVED > toPickup',
  'atPickup ACCEPT > atPickup',
  'atPickup DECLINE > atPickup',
  'atPickup OFFER > atPickup',
  'atPickup OFFER_EXPIRED > atPickup',
  'atPickup ORDER_REMOVED > atPickup',
  'atPickup ORDER_REMOVED > available',
  'atPickup ORDER_REMOVED > offered',
  'atPickup ORDER_REMOVED > toDropoff',
  'atPickup PICKED_UP > atPickup',
  'atPickup PICKED_UP > toDropoff',
  'available GO_OFFLINE > offline',
  'available OFFER > offered',
  'available START_BREAK > onBreak',
  'offered ACCEPT > toPickup',
  'offered DECLINE > available',
  'offered OFFER_EXPIRED > available',
  'offered ORDER_REMOVED > available',
  'offline GO_ONLINE > available',
  'onBreak END_BREAK > available',
  'onBreak GO_OFFLINE > offline',
  'toDropoff ACCEPT > toDropoff',
  'toDropoff ARRIVED_DROPOFF > atDropoff',
  'toDropoff DECLINE > toDropoff',
  'toDropoff OFFER_EXPIRED > toDropoff',
  'toDropoff ORDER_REMOVED > available',
  'toDropoff ORDER_REMOVED > offered',
  'toDropoff ORDER_REMOVED > toDropoff',
  'toDropoff ORDER_REMOVED > toPickup',
  'toPickup ACCEPT > toPickup',
  'toPickup ARRIVED_PICKUP > atPickup',
  'toPickup DECLINE > toPickup',
  'toPickup OFFER > toPickup',
  'toPickup OFFER_EXPIRED > toPickup',
  'toPickup ORDER_REMOVED > available',
  'toPickup ORDER_REMOVED > offered',
  'toPickup ORDER_REMOVED > toPickup',
];

t.test('random event sequences keep the explainer in step with the machine and the context consistent', async (t) => {
  const rand = mulberry32(7);
  const orders = ['o1', 'o2', 'o3', 'o4'];
  const make = (now: number): RiderEvent => {
    const o = orders[rand(orders.length)];
    const pool: RiderEvent[] = [
      { type: 'GO_ONLINE', at: now },
      { type: 'GO_OFFLINE', at: now },
      { type: 'START_BREAK', at: now },
      { type: 'END_BREAK', at: now },
      offer(o, now, rand(4) ? 's1' : 's2'),
      accept(o, now),
      { type: 'DECLINE', at: now, orderId: o },
      { type: 'OFFER_EXPIRED', at: now, orderId: o },
      { type: 'ARRIVED_PICKUP', at: now },
      pickedUp(o, now),
      arrivedDropoff(o, now),
      delivered(o, now),
      removed(o, now),
    ];
    return pool[rand(pool.length)];
  };
  let disagreements = 0;
  const broken: string[] = [];
  const seen = new Set<string>();
  let taken = 0;
  for (let run = 0; run < 2000; run++) {
    let [s] = initialTransition(riderMachine, { ...INPUT, capacity: 1 + rand(3) });
    for (let i = 0; i < 60; i++) {
      let e = make(i);
      let refusal = explainRiderRefusal(s, e);
      // Several tries per step, so walks get deep.
      for (let tries = 1; refusal && tries < 4; tries++) {
        if (s.can(e) !== (refusal === null)) disagreements++;
        e = make(i);
        refusal = explainRiderRefusal(s, e);
      }
      if (s.can(e) !== (refusal === null)) disagreements++;
      if (refusal) continue;
      const from = riderStatus(s);
      [s] = transition(riderMachine, s, e);
      taken++;
      const to = riderStatus(s);
      seen.add(`${from} ${e.type} > ${to}`);
      const problem = invariantBroken(s);
      if (problem) broken.push(`${from} ${e.type} > ${to}: ${problem}`);
    }
  }
  t.equal(disagreements, 0, 'can() and the explainer never disagree');
  t.same(broken.slice(0, 5), [], 'the context always fits the state');
  t.same([...seen].sort(), RIDER_TRANSITIONS, `every transition reached (${taken} steps taken)`);
});

/** What must hold of every rider snapshot; returns the first thing that does not. */
function invariantBroken(s: RiderSnapshot): string | null {
  const c = s.context;
  const st = riderStatus(s);
  const waiting = c.jobs.filter((j) => !j.pickedUp);
  if (c.jobs.length > c.capacity) return 'over capacity';
  if (new Set(waiting.map((j) => j.storeId)).size > 1) return 'waiting jobs from two stores';
  if (new Set(c.jobs.map((j) => j.orderId)).size !== c.jobs.length) return 'a job twice';
  if (c.offer && c.jobs.some((j) => j.orderId === c.offer!.orderId)) return 'offered an order it holds';
  if (['offline', 'available', 'onBreak'].includes(st) && (c.jobs.length > 0 || c.offer)) return 'idle but holding work';
  if (st === 'offered' && (c.jobs.length > 0 || !c.offer)) return 'offered without exactly an offer';
  if ((st === 'toPickup' || st === 'atPickup') && waiting.length === 0) return 'at the pickup leg with nothing to collect';
  if (st === 'toPickup' && waiting.length !== c.jobs.length) return 'a picked-up job on the way to the store';
  if (st === 'toDropoff' || st === 'atDropoff') {
    const d = c.jobs.find((j) => j.orderId === c.dropoffOrderId);
    if (!d || !d.pickedUp) return 'drop-off leg without a picked-up drop-off';
  } else if (c.dropoffOrderId !== null) return 'a drop-off outside the drop-off leg';
  if ((st === 'offline') !== (c.onlineSince === null)) return 'onlineSince out of step';
  return null;
}

t.test('an idle online rider actor stays small', async (t) => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const heap = () => {
    gc();
    gc();
    return process.memoryUsage().heapUsed;
  };
  const N = 20_000;
  const ids = Array.from({ length: N }, (_, i) => `rider-${i}`);
  const actors: unknown[] = [];
  const before = heap();
  for (let i = 0; i < N; i++) {
    const a = createActor(riderMachine, { input: { riderId: ids[i], capacity: 2, createdAt: 0 } });
    a.start();
    a.send({ type: 'GO_ONLINE', at: 1 });
    actors.push(a);
  }
  const perRider = (heap() - before) / N;
  t.comment(`heap bytes per idle online rider actor: ${Math.round(perRider)}`);
  t.equal(actors.length, N);
  t.ok(perRider < 6000, `under 6000 bytes (${Math.round(perRider)})`);
});

/** A small seeded generator (mulberry32), so a failing walk replays. */
function mulberry32(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return Math.floor((((x ^ (x >>> 14)) >>> 0) / 4_294_967_296) * n);
  };
}

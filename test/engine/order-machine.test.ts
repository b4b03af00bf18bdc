// The order machine: every transition and guard, every refusal with its code, and replay determinism.
import t from 'tap';
import { createActor, getInitialMicrosteps, getMicrosteps, initialTransition, transition } from 'xstate';
import { orderMachine, orderStatus, isFinalOrderStatus, explainOrderRefusal } from '../../engine/order/index.ts';
import type { OrderEvent, OrderInput, OrderSnapshot } from '../../engine/order/index.ts';
import type { ErrorCode } from '../../engine/errors.ts';
import type { OrderStatus } from '../../engine/types.ts';

const T0 = 1_700_000_000_000;
const LIMIT = 600_000;

function input(over: Partial<OrderInput['spec']> = {}, maxAttempts = 3): OrderInput {
  return {
    spec: {
      orderId: 'o-1',
      storeId: 's-1',
      customerId: 'c-1',
      pickup: { lat: 12.9352, lng: 77.6245 },
      dropoff: { lat: 12.95, lng: 77.64 },
      payment: 'cod',
      ...over,
    },
    otp: '4821',
    createdAt: T0,
    searchLimitMs: LIMIT,
    maxAttempts,
  };
}

/** Folds events with the pure transition function, checking at each step that the machine and the explainer agree. */
function fold(inp: OrderInput, events: OrderEvent[]): OrderSnapshot {
  let [snap] = initialTransition(orderMachine, inp);
  for (const e of events) {
    const refusal = explainOrderRefusal(snap, e);
    if (refusal) throw new Error(`fixture step ${e.type} refused: ${refusal.message}`);
    [snap] = transition(orderMachine, snap, e);
  }
  return snap;
}

const at = (s: number) => T0 + s * 1000;
// rx declined once on the way to every dispatched state, so exclusion is exercised everywhere.
const excludedFirst: OrderEvent[] = [
  { type: 'OFFER', at: at(1), riderId: 'rx', expiresAt: at(31) },
  { type: 'DECLINE', at: at(2), riderId: 'rx' },
];
const toAssigned: OrderEvent[] = [
  ...excludedFirst,
  { type: 'OFFER', at: at(3), riderId: 'r1', expiresAt: at(33) },
  { type: 'ACCEPT', at: at(4), riderId: 'r1' },
];

/** One snapshot resting in each observable state. */
const fixtures: Record<Exclude<OrderStatus, 'confirmed'>, () => OrderSnapshot> = {
  awaitingPayment: () => fold(input({ payment: 'prepaid' }), []),
  searching: () => fold(input(), excludedFirst),
  offered: () => fold(input(), [...excludedFirst, { type: 'OFFER', at: at(3), riderId: 'r1', expiresAt: at(33) }]),
  assigned: () => fold(input(), toAssigned),
  atPickup: () => fold(input(), [...toAssigned, { type: 'ARRIVED_PICKUP', at: at(5), riderId: 'r1', source: 'geofence' }]),
  pickedUp: () =>
    fold(input(), [
      ...toAssigned,
      { type: 'ARRIVED_PICKUP', at: at(5), riderId: 'r1', source: 'geofence' },
      { type: 'PICKED_UP', at: at(6), riderId: 'r1' },
    ]),
  atDropoff: () =>
    fold(input(), [
      ...toAssigned,
      { type: 'ARRIVED_PICKUP', at: at(5), riderId: 'r1', source: 'geofence' },
      { type: 'PICKED_UP', at: at(6), riderId: 'r1' },
      { type: 'ARRIVED_DROPOFF', at: at(7), riderId: 'r1', source: 'rider' },
    ]),
  delivered: () =>
    fold(input(), [
      ...toAssigned,
      { type: 'ARRIVED_PICKUP', at: at(5), riderId: 'r1', source: 'geofence' },
      { type: 'PICKED_UP', at: at(6), riderId: 'r1' },
      { type: 'ARRIVED_DROPOFF', at: at(7), riderId: 'r1', source: 'rider' },
      { type: 'DELIVER', at: at(8), riderId: 'r1', otp: '4821' },
    ]),
  cancelled: () => fold(input(), [{ type: 'CANCEL', at: at(1), by: 'customer' }]),
  escalated: () => fold(input(), [...excludedFirst, { type: 'SEARCH_TIMEOUT', at: at(600) }]),
};
type Fixture = keyof typeof fixtures;
const STATES = Object.keys(fixtures) as Fixture[];
const LIVE = STATES.filter((s) => s !== 'delivered' && s !== 'cancelled');

type Code = Exclude<ErrorCode, 'QD_ERR_INTERNAL'>;
interface Row {
  event: OrderEvent;
  /** States that take the event, and where it leads. */
  accepts: Partial<Record<Fixture, OrderStatus>>;
  /** The code every other state answers with, unless `except` names another. */
  refuse: Code;
  except?: Partial<Record<Fixture, Code>>;
}

/** Every event type, checked complete by the compiler. */
const EVENT_TYPES: Record<OrderEvent['type'], true> = {
  PAYMENT_CAPTURED: true,
  PAYMENT_FAILED: true,
  OFFER: true,
  ACCEPT: true,
  DECLINE: true,
  OFFER_EXPIRED: true,
  OFFER_VOID: true,
  ARRIVED_PICKUP: true,
  PICKED_UP: true,
  ARRIVED_DROPOFF: true,
  DELIVER: true,
  CANCEL: true,
  SEARCH_TIMEOUT: true,
  RIDER_RELEASED: true,
  REDISPATCH: true,
};

const E = 100_000;
const everywhere = (states: Fixture[], to: OrderStatus) => Object.fromEntries(states.map((s) => [s, to]));
const rows: Record<string, Row> = {
  'payment captured': { event: { type: 'PAYMENT_CAPTURED', at: E, paymentId: 'pay-1' }, accepts: { awaitingPayment: 'searching' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'payment failed': { event: { type: 'PAYMENT_FAILED', at: E, reason: 'card declined' }, accepts: { awaitingPayment: 'cancelled' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'offer to a new rider': { event: { type: 'OFFER', at: E, riderId: 'r3', expiresAt: E + 30_000 }, accepts: { searching: 'offered' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'offer to an excluded rider': { event: { type: 'OFFER', at: E, riderId: 'rx', expiresAt: E + 30_000 }, accepts: {}, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'accept by the offered rider': { event: { type: 'ACCEPT', at: E, riderId: 'r1' }, accepts: { offered: 'assigned' }, refuse: 'QD_ERR_NO_OFFER' },
  'accept by another rider': { event: { type: 'ACCEPT', at: E, riderId: 'r2' }, accepts: {}, refuse: 'QD_ERR_NO_OFFER' },
  'decline by the offered rider': { event: { type: 'DECLINE', at: E, riderId: 'r1' }, accepts: { offered: 'searching' }, refuse: 'QD_ERR_NO_OFFER' },
  'decline by another rider': { event: { type: 'DECLINE', at: E, riderId: 'r2' }, accepts: {}, refuse: 'QD_ERR_NO_OFFER' },
  'offer expired, offered rider': { event: { type: 'OFFER_EXPIRED', at: E, riderId: 'r1' }, accepts: { offered: 'searching' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'offer expired, another rider': {
    event: { type: 'OFFER_EXPIRED', at: E, riderId: 'r2' },
    accepts: {},
    refuse: 'QD_ERR_INVALID_TRANSITION',
    except: { offered: 'QD_ERR_NO_OFFER' },
  },
  'offer void, offered rider': { event: { type: 'OFFER_VOID', at: E, riderId: 'r1' }, accepts: { offered: 'searching' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'offer void, another rider': {
    event: { type: 'OFFER_VOID', at: E, riderId: 'r2' },
    accepts: {},
    refuse: 'QD_ERR_INVALID_TRANSITION',
    except: { offered: 'QD_ERR_NO_OFFER' },
  },
  'arrived pickup, own rider': {
    event: { type: 'ARRIVED_PICKUP', at: E, riderId: 'r1', source: 'geofence' },
    accepts: { assigned: 'atPickup' },
    refuse: 'QD_ERR_INVALID_TRANSITION',
  },
  'arrived pickup, another rider': {
    event: { type: 'ARRIVED_PICKUP', at: E, riderId: 'r2', source: 'rider' },
    accepts: {},
    refuse: 'QD_ERR_INVALID_TRANSITION',
    except: { assigned: 'QD_ERR_NOT_ASSIGNED_RIDER' },
  },
  'picked up, own rider': { event: { type: 'PICKED_UP', at: E, riderId: 'r1' }, accepts: { atPickup: 'pickedUp' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'picked up, another rider': {
    event: { type: 'PICKED_UP', at: E, riderId: 'r2' },
    accepts: {},
    refuse: 'QD_ERR_INVALID_TRANSITION',
    except: { atPickup: 'QD_ERR_NOT_ASSIGNED_RIDER' },
  },
  'arrived dropoff, own rider': {
    event: { type: 'ARRIVED_DROPOFF', at: E, riderId: 'r1', source: 'geofence' },
    accepts: { pickedUp: 'atDropoff' },
    refuse: 'QD_ERR_INVALID_TRANSITION',
  },
  'arrived dropoff, another rider': {
    event: { type: 'ARRIVED_DROPOFF', at: E, riderId: 'r2', source: 'geofence' },
    accepts: {},
    refuse: 'QD_ERR_INVALID_TRANSITION',
    except: { pickedUp: 'QD_ERR_NOT_ASSIGNED_RIDER' },
  },
  'deliver with the code': { event: { type: 'DELIVER', at: E, riderId: 'r1', otp: '4821' }, accepts: { atDropoff: 'delivered' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'deliver with a proof reference': {
    event: { type: 'DELIVER', at: E, riderId: 'r1', proofRef: 'photo-9' },
    accepts: { atDropoff: 'delivered' },
    refuse: 'QD_ERR_INVALID_TRANSITION',
  },
  'deliver with a wrong code': {
    event: { type: 'DELIVER', at: E, riderId: 'r1', otp: '0000' },
    accepts: {},
    refuse: 'QD_ERR_INVALID_TRANSITION',
    except: { atDropoff: 'QD_ERR_BAD_PROOF' },
  },
  'deliver without proof': {
    event: { type: 'DELIVER', at: E, riderId: 'r1' },
    accepts: {},
    refuse: 'QD_ERR_INVALID_TRANSITION',
    except: { atDropoff: 'QD_ERR_BAD_PROOF' },
  },
  'deliver with a blank proof reference': {
    event: { type: 'DELIVER', at: E, riderId: 'r1', proofRef: '  ' },
    accepts: {},
    refuse: 'QD_ERR_INVALID_TRANSITION',
    except: { atDropoff: 'QD_ERR_BAD_PROOF' },
  },
  'deliver by another rider': {
    event: { type: 'DELIVER', at: E, riderId: 'r2', otp: '4821' },
    accepts: {},
    refuse: 'QD_ERR_INVALID_TRANSITION',
    except: { atDropoff: 'QD_ERR_NOT_ASSIGNED_RIDER' },
  },
  'cancel by the customer': {
    event: { type: 'CANCEL', at: E, by: 'customer' },
    accepts: everywhere(['awaitingPayment', 'searching', 'offered', 'assigned', 'atPickup', 'escalated'], 'cancelled'),
    refuse: 'QD_ERR_CANCEL_NOT_ALLOWED',
  },
  'cancel by operations with a reason': {
    event: { type: 'CANCEL', at: E, by: 'ops', reason: 'store closed' },
    accepts: everywhere(LIVE, 'cancelled'),
    refuse: 'QD_ERR_CANCEL_NOT_ALLOWED',
  },
  'cancel by operations without a reason': {
    event: { type: 'CANCEL', at: E, by: 'ops' },
    accepts: {},
    refuse: 'QD_ERR_CANCEL_NOT_ALLOWED',
    except: Object.fromEntries(LIVE.map((s) => [s, 'QD_ERR_REASON_REQUIRED'])),
  },
  'cancel by operations with a blank reason': {
    event: { type: 'CANCEL', at: E, by: 'ops', reason: ' ' },
    accepts: {},
    refuse: 'QD_ERR_CANCEL_NOT_ALLOWED',
    except: Object.fromEntries(LIVE.map((s) => [s, 'QD_ERR_REASON_REQUIRED'])),
  },
  'cancel by payment': { event: { type: 'CANCEL', at: E, by: 'payment' }, accepts: { awaitingPayment: 'cancelled' }, refuse: 'QD_ERR_CANCEL_NOT_ALLOWED' },
  'search timeout': { event: { type: 'SEARCH_TIMEOUT', at: E }, accepts: { searching: 'escalated' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'rider released, own rider': {
    event: { type: 'RIDER_RELEASED', at: E, riderId: 'r1', reason: 'went offline' },
    accepts: { assigned: 'searching', atPickup: 'searching' },
    refuse: 'QD_ERR_INVALID_TRANSITION',
  },
  'rider released, another rider': {
    event: { type: 'RIDER_RELEASED', at: E, riderId: 'r2', reason: 'went offline' },
    accepts: {},
    refuse: 'QD_ERR_INVALID_TRANSITION',
    except: { assigned: 'QD_ERR_NOT_ASSIGNED_RIDER', atPickup: 'QD_ERR_NOT_ASSIGNED_RIDER' },
  },
  'redispatch with a reason': { event: { type: 'REDISPATCH', at: E, reason: 'called a rider' }, accepts: { escalated: 'searching' }, refuse: 'QD_ERR_INVALID_TRANSITION' },
  'redispatch without a reason': {
    event: { type: 'REDISPATCH', at: E, reason: '' },
    accepts: {},
    refuse: 'QD_ERR_INVALID_TRANSITION',
    except: { escalated: 'QD_ERR_REASON_REQUIRED' },
  },
};

t.test('every state against every event: taken where it should be, else refused with the right code', async (t) => {
  const types = new Set(Object.values(rows).map((r) => r.event.type));
  t.same([...types].sort(), Object.keys(EVENT_TYPES).sort(), 'the table covers every event type');
  let cells = 0;
  for (const [name, row] of Object.entries(rows)) {
    for (const state of STATES) {
      const snap = fixtures[state]();
      t.equal(orderStatus(snap), state, `fixture ${state}`);
      const refusal = explainOrderRefusal(snap, row.event);
      const to = row.accepts[state];
      const where = `${name} in ${state}`;
      t.equal(snap.can(row.event), refusal === null, `${where}: can() agrees with the explanation`);
      const [next] = transition(orderMachine, snap, row.event);
      if (to !== undefined) {
        t.equal(refusal, null, `${where}: taken`);
        t.equal(orderStatus(next), to, `${where}: leads to ${to}`);
      } else {
        const code = row.except?.[state] ?? row.refuse;
        t.equal(refusal?.code, code, `${where}: ${code}`);
        t.equal(next.value, snap.value, `${where}: state unchanged`);
        t.same(next.context, snap.context, `${where}: context unchanged`);
        if (code === 'QD_ERR_INVALID_TRANSITION') {
          t.match(refusal?.details, { entity: 'order', id: 'o-1', action: row.event.type.toLowerCase().replace(/_/g, ' '), state }, `${where}: details`);
        }
      }
      cells++;
    }
  }
  t.equal(cells, Object.keys(rows).length * STATES.length);
});

t.test('refusal details and messages name what was wrong', async (t) => {
  const offered = fixtures.offered();
  const noOffer = explainOrderRefusal(offered, { type: 'ACCEPT', at: E, riderId: 'r2' })!;
  t.same(noOffer.details, { riderId: 'r2', orderId: 'o-1' });
  t.equal(noOffer.message, 'rider r2 holds no offer for order o-1');
  const notMine = explainOrderRefusal(fixtures.assigned(), { type: 'ARRIVED_PICKUP', at: E, riderId: 'r2', source: 'rider' })!;
  t.equal(notMine.message, 'rider r2 is not the rider of order o-1');
  const cancel = explainOrderRefusal(fixtures.pickedUp(), { type: 'CANCEL', at: E, by: 'customer' })!;
  t.same(cancel.details, { orderId: 'o-1', by: 'customer', state: 'pickedUp' });
  t.equal(cancel.message, 'order o-1 cannot be cancelled by customer while pickedUp');
  t.same(explainOrderRefusal(fixtures.searching(), { type: 'CANCEL', at: E, by: 'ops' })!.details, { action: 'cancel', orderId: 'o-1' });
  t.same(explainOrderRefusal(fixtures.escalated(), { type: 'REDISPATCH', at: E, reason: '' })!.details, { action: 'redispatch', orderId: 'o-1' });
  const excluded = explainOrderRefusal(fixtures.searching(), { type: 'OFFER', at: E, riderId: 'rx', expiresAt: E })!;
  t.match(excluded.details, { riderId: 'rx', reason: 'riderExcluded', state: 'searching' });
  const invalid = explainOrderRefusal(fixtures.offered(), { type: 'SEARCH_TIMEOUT', at: E })!;
  t.equal(invalid.message, 'order o-1 cannot search timeout while offered');
  t.equal(explainOrderRefusal(fixtures.atDropoff(), { type: 'DELIVER', at: E, riderId: 'r1', otp: '1' })!.message, 'delivery proof for order o-1 does not match');
});

t.test('cash on delivery is confirmed at creation and searches at once', async (t) => {
  const spec = { readyAt: T0 + 300_000, promisedAt: T0 + 1_800_000, riderFee: 4500 };
  const actor = createActor(orderMachine, { input: input(spec) }).start();
  const snap = actor.getSnapshot();
  t.equal(orderStatus(snap), 'searching');
  t.match(snap.context, {
    orderId: 'o-1',
    storeId: 's-1',
    customerId: 'c-1',
    payment: 'cod',
    otp: '4821',
    createdAt: T0,
    confirmedAt: T0,
    searchDeadline: T0 + LIMIT,
    readyAt: T0 + 300_000,
    promisedAt: T0 + 1_800_000,
    riderFee: 4500,
    attempts: 0,
    riderId: null,
    offer: null,
    paymentId: null,
  });
  t.same(snap.context.excludedRiders, []);
  const steps = getInitialMicrosteps(orderMachine, input());
  t.same(
    steps.map(([s]) => s.value),
    ['created', 'confirmed', 'searching'],
    'created and confirmed are momentary',
  );
  const bare = fold(input(), []).context;
  t.equal(bare.readyAt, T0, 'ready at creation unless told');
  t.equal(bare.promisedAt, null);
  t.equal(bare.riderFee, 0);
});

t.test('prepaid orders wait for capture; the search clock starts at capture', async (t) => {
  const waiting = fold(input({ payment: 'prepaid' }), []);
  t.equal(orderStatus(waiting), 'awaitingPayment');
  t.equal(waiting.context.confirmedAt, null);
  t.equal(waiting.context.searchDeadline, null);
  const [paid] = transition(orderMachine, waiting, { type: 'PAYMENT_CAPTURED', at: at(40), paymentId: 'pay-7' });
  t.equal(orderStatus(paid), 'searching', 'confirmed is only momentary');
  t.equal(paid.context.paymentId, 'pay-7');
  t.equal(paid.context.confirmedAt, at(40));
  t.equal(paid.context.searchDeadline, at(40) + LIMIT);
  const steps = getMicrosteps(orderMachine, waiting, { type: 'PAYMENT_CAPTURED', at: at(40), paymentId: 'pay-7' });
  t.same(
    steps.map(([s]) => [s.value, s.context.confirmedAt]),
    [
      ['confirmed', at(40)],
      ['searching', at(40)],
    ],
    'passes through confirmed, already stamped',
  );
  const [failed] = transition(orderMachine, waiting, { type: 'PAYMENT_FAILED', at: at(41), reason: 'card declined' });
  t.equal(orderStatus(failed), 'cancelled');
  t.same(failed.context.cancel, { by: 'payment', reason: 'card declined' });
  t.equal(failed.context.cancelledAt, at(41));
  const [byPayment] = transition(orderMachine, waiting, { type: 'CANCEL', at: at(42), by: 'payment' });
  t.same(byPayment.context.cancel, { by: 'payment', reason: null });
});

t.test('an offer is recorded, accepted by its rider, and cleared', async (t) => {
  const [offered] = transition(orderMachine, fold(input(), []), { type: 'OFFER', at: at(10), riderId: 'r1', expiresAt: at(40) });
  t.same(offered.context.offer, { riderId: 'r1', offeredAt: at(10), expiresAt: at(40) });
  const [assigned] = transition(orderMachine, offered, { type: 'ACCEPT', at: at(12), riderId: 'r1' });
  t.equal(orderStatus(assigned), 'assigned');
  t.equal(assigned.context.riderId, 'r1');
  t.equal(assigned.context.assignedAt, at(12));
  t.equal(assigned.context.offer, null);
  t.equal(assigned.context.attempts, 0);
});

t.test('declined and expired offers count, exclude the rider, and escalate at the limit', async (t) => {
  let snap = fold(input({}, 2), []);
  [snap] = transition(orderMachine, snap, { type: 'OFFER', at: at(1), riderId: 'a', expiresAt: at(31) });
  [snap] = transition(orderMachine, snap, { type: 'DECLINE', at: at(2), riderId: 'a' });
  t.equal(orderStatus(snap), 'searching');
  t.equal(snap.context.attempts, 1);
  t.same(snap.context.excludedRiders, ['a']);
  t.equal(snap.context.offer, null);
  t.equal(snap.context.escalation, null);
  t.equal(explainOrderRefusal(snap, { type: 'OFFER', at: at(3), riderId: 'a', expiresAt: at(33) })?.code, 'QD_ERR_INVALID_TRANSITION', 'a decliner is never asked again');
  [snap] = transition(orderMachine, snap, { type: 'OFFER', at: at(3), riderId: 'b', expiresAt: at(33) });
  [snap] = transition(orderMachine, snap, { type: 'OFFER_EXPIRED', at: at(33), riderId: 'b' });
  t.equal(orderStatus(snap), 'escalated', 'the second failure of two escalates');
  t.equal(snap.context.attempts, 2);
  t.same(snap.context.excludedRiders, ['a', 'b']);
  t.same(snap.context.escalation, { reason: 'tooManyAttempts', at: at(33) });
  t.equal(snap.context.offer, null);
});

t.test('a void offer is no attempt and excludes nobody', async (t) => {
  let snap = fold(input({}, 1), []);
  [snap] = transition(orderMachine, snap, { type: 'OFFER', at: at(1), riderId: 'a', expiresAt: at(31) });
  [snap] = transition(orderMachine, snap, { type: 'OFFER_VOID', at: at(2), riderId: 'a' });
  t.equal(orderStatus(snap), 'searching', 'even with one attempt allowed');
  t.equal(snap.context.attempts, 0);
  t.same(snap.context.excludedRiders, []);
  t.equal(snap.context.offer, null);
  t.equal(explainOrderRefusal(snap, { type: 'OFFER', at: at(3), riderId: 'a', expiresAt: at(33) }), null, 'the same rider may be offered again');
});

t.test('the search limit escalates a searching order but lets a running offer finish', async (t) => {
  let snap = fold(input(), []);
  [snap] = transition(orderMachine, snap, { type: 'OFFER', at: at(590), riderId: 'a', expiresAt: at(620) });
  t.equal(explainOrderRefusal(snap, { type: 'SEARCH_TIMEOUT', at: at(600) })?.code, 'QD_ERR_INVALID_TRANSITION');
  [snap] = transition(orderMachine, snap, { type: 'OFFER_EXPIRED', at: at(620), riderId: 'a' });
  [snap] = transition(orderMachine, snap, { type: 'SEARCH_TIMEOUT', at: at(621) });
  t.equal(orderStatus(snap), 'escalated');
  t.same(snap.context.escalation, { reason: 'searchTimeout', at: at(621) });
});

t.test('operations redispatch an escalated order with fresh attempts, keeping exclusions', async (t) => {
  let snap = fold(input({}, 1), []);
  [snap] = transition(orderMachine, snap, { type: 'OFFER', at: at(1), riderId: 'a', expiresAt: at(31) });
  [snap] = transition(orderMachine, snap, { type: 'DECLINE', at: at(2), riderId: 'a' });
  t.equal(orderStatus(snap), 'escalated');
  [snap] = transition(orderMachine, snap, { type: 'REDISPATCH', at: at(100), reason: 'called rider b' });
  t.equal(orderStatus(snap), 'searching');
  t.equal(snap.context.attempts, 0);
  t.same(snap.context.excludedRiders, ['a']);
  t.equal(snap.context.escalation, null);
  t.equal(snap.context.searchDeadline, at(100) + LIMIT);
  t.equal(snap.context.confirmedAt, T0, 'confirmation time is history, not reset');
});

t.test('a released rider sends the order back to search with a new deadline', async (t) => {
  for (const from of ['assigned', 'atPickup'] as const) {
    const [snap] = transition(orderMachine, fixtures[from](), { type: 'RIDER_RELEASED', at: at(50), riderId: 'r1', reason: 'offline' });
    t.equal(orderStatus(snap), 'searching', from);
    t.match(snap.context, { riderId: null, assignedAt: null, arrivedPickupAt: null, searchDeadline: at(50) + LIMIT, offer: null });
    t.equal(explainOrderRefusal(snap, { type: 'OFFER', at: at(51), riderId: 'r1', expiresAt: at(81) }), null, 'a released rider is not excluded');
    t.same(snap.context.excludedRiders, ['rx']);
  }
});

t.test('a delivery records every step and its proof', async (t) => {
  const delivered = fixtures.delivered();
  t.match(delivered.context, {
    riderId: 'r1',
    assignedAt: at(4),
    arrivedPickupAt: at(5),
    pickedUpAt: at(6),
    arrivedDropoffAt: at(7),
    deliveredAt: at(8),
    proof: { kind: 'otp' },
    cancel: null,
    cancelledAt: null,
  });
  t.equal(delivered.status, 'done', 'delivered is final');
  const [byRef] = transition(orderMachine, fixtures.atDropoff(), { type: 'DELIVER', at: at(9), riderId: 'r1', otp: '0000', proofRef: 'photo-1' });
  t.same(byRef.context.proof, { kind: 'ref', ref: 'photo-1' }, 'a wrong code with a proof reference delivers by the reference');
});

t.test('a cancellation records who and why and drops a pending offer', async (t) => {
  const [customer] = transition(orderMachine, fixtures.offered(), { type: 'CANCEL', at: at(20), by: 'customer' });
  t.equal(customer.status, 'done');
  t.same(customer.context.cancel, { by: 'customer', reason: null });
  t.equal(customer.context.cancelledAt, at(20));
  t.equal(customer.context.offer, null);
  const [ops] = transition(orderMachine, fixtures.atDropoff(), { type: 'CANCEL', at: at(21), by: 'ops', reason: 'customer unreachable' });
  t.same(ops.context.cancel, { by: 'ops', reason: 'customer unreachable' });
  t.equal(ops.context.riderId, 'r1', 'the rider who held it stays on record');
});

t.test('final statuses', async (t) => {
  const all: OrderStatus[] = ['awaitingPayment', 'confirmed', 'searching', 'offered', 'assigned', 'atPickup', 'pickedUp', 'atDropoff', 'delivered', 'cancelled', 'escalated'];
  t.same(all.filter(isFinalOrderStatus), ['delivered', 'cancelled']);
});

/** A prepaid order's eventful life: a decline, an expiry, a void offer, a release, then delivery. */
const life: OrderEvent[] = [
  { type: 'PAYMENT_CAPTURED', at: at(1), paymentId: 'pay-1' },
  { type: 'OFFER', at: at(2), riderId: 'a', expiresAt: at(32) },
  { type: 'DECLINE', at: at(5), riderId: 'a' },
  { type: 'OFFER', at: at(6), riderId: 'b', expiresAt: at(36) },
  { type: 'OFFER_VOID', at: at(7), riderId: 'b' },
  { type: 'OFFER', at: at(8), riderId: 'c', expiresAt: at(38) },
  { type: 'ACCEPT', at: at(9), riderId: 'c' },
  { type: 'RIDER_RELEASED', at: at(30), riderId: 'c', reason: 'phone died' },
  { type: 'OFFER', at: at(31), riderId: 'd', expiresAt: at(61) },
  { type: 'ACCEPT', at: at(35), riderId: 'd' },
  { type: 'ARRIVED_PICKUP', at: at(200), riderId: 'd', source: 'geofence' },
  { type: 'PICKED_UP', at: at(300), riderId: 'd' },
  { type: 'ARRIVED_DROPOFF', at: at(900), riderId: 'd', source: 'geofence' },
  { type: 'DELIVER', at: at(960), riderId: 'd', otp: '4821' },
];

t.test('the machine is timeless: no delays, no invoked actors, only assign actions', async (t) => {
  const nodes = [orderMachine.root, ...Object.values(orderMachine.root.states)];
  for (const n of nodes) {
    t.equal(n.after.length, 0, `${n.key}: no after`);
    t.equal(n.invoke.length, 0, `${n.key}: no invoke`);
    t.equal(n.entry.length + n.exit.length, 0, `${n.key}: no entry or exit actions`);
  }
  for (const [name, action] of Object.entries(orderMachine.implementations.actions)) {
    t.equal((action as { type?: string }).type, 'xstate.assign', `${name} is an assign`);
  }
  // A whole life with the clock made unreadable.
  const realNow = Date.now;
  const realPerf = performance.now;
  Date.now = () => {
    throw new Error('machine read the clock');
  };
  performance.now = Date.now;
  try {
    const actor = createActor(orderMachine, { input: input({ payment: 'prepaid' }) }).start();
    for (const e of life) actor.send(e);
    t.equal(orderStatus(actor.getSnapshot()), 'delivered');
    t.notOk(actor.getSnapshot().error);
  } finally {
    Date.now = realNow;
    performance.now = realPerf;
  }
});

t.test('persisting, restoring from JSON and continuing equals an uninterrupted run; replay rebuilds the same context', async (t) => {
  const whole = createActor(orderMachine, { input: input({ payment: 'prepaid' }) }).start();
  for (const e of life) whole.send(e);
  const expected = whole.getPersistedSnapshot();

  for (let cut = 0; cut <= life.length; cut++) {
    const first = createActor(orderMachine, { input: input({ payment: 'prepaid' }) }).start();
    for (const e of life.slice(0, cut)) first.send(e);
    const stored = JSON.parse(JSON.stringify(first.getPersistedSnapshot()));
    first.stop();
    const resumed = createActor(orderMachine, { snapshot: stored, input: undefined }).start();
    for (const e of life.slice(cut)) resumed.send(e);
    t.same(resumed.getPersistedSnapshot(), expected, `cut after ${cut} events`);
  }

  const replay = createActor(orderMachine, { input: input({ payment: 'prepaid' }) }).start();
  for (const e of JSON.parse(JSON.stringify(life)) as OrderEvent[]) replay.send(e);
  t.same(replay.getSnapshot().context, whole.getSnapshot().context, 'replayed stored events give an identical context');
  t.same(fold(input({ payment: 'prepaid' }), life).context, whole.getSnapshot().context, 'the pure transition agrees with the actor');
  t.equal(JSON.stringify(fold(input({ payment: 'prepaid' }), life).context), JSON.stringify(whole.getSnapshot().context), 'same key order too');
});

t.test('random event sequences keep the explainer and the machine in step and the context consistent', async (t) => {
  const rand = mulberry32(42);
  const riders = ['a', 'b'];
  const make = (now: number): OrderEvent => {
    const r = riders[rand(riders.length)];
    const pool: OrderEvent[] = [
      { type: 'PAYMENT_CAPTURED', at: now, paymentId: 'p' },
      { type: 'PAYMENT_FAILED', at: now, reason: 'declined' },
      { type: 'OFFER', at: now, riderId: r, expiresAt: now + 30_000 },
      { type: 'ACCEPT', at: now, riderId: r },
      { type: 'DECLINE', at: now, riderId: r },
      { type: 'OFFER_EXPIRED', at: now, riderId: r },
      { type: 'OFFER_VOID', at: now, riderId: r },
      { type: 'ARRIVED_PICKUP', at: now, riderId: r, source: 'geofence' },
      { type: 'PICKED_UP', at: now, riderId: r },
      { type: 'ARRIVED_DROPOFF', at: now, riderId: r, source: 'geofence' },
      { type: 'DELIVER', at: now, riderId: r, otp: rand(2) ? '4821' : '1' },
      { type: 'CANCEL', at: now, by: (['customer', 'ops', 'payment'] as const)[rand(3)], reason: rand(2) ? 'why' : undefined },
      { type: 'SEARCH_TIMEOUT', at: now },
      { type: 'RIDER_RELEASED', at: now, riderId: r, reason: 'x' },
      { type: 'REDISPATCH', at: now, reason: rand(2) ? 'again' : '' },
    ];
    return pool[rand(pool.length)];
  };
  let disagreements = 0;
  let broken = 0;
  let taken = 0;
  const seen = new Set<string>();
  for (let run = 0; run < 2000; run++) {
    let [snap] = initialTransition(orderMachine, input({ payment: rand(2) ? 'prepaid' : 'cod' }, 1 + rand(3)));
    for (let step = 0; step < 40; step++) {
      // Up to three tries per step, so walks get deep before a refusal ends the step.
      let e = make(T0 + step * 1000);
      let refusal = explainOrderRefusal(snap, e);
      for (let tries = 1; refusal && tries < 3; tries++) {
        if (snap.can(e) !== (refusal === null)) disagreements++;
        e = make(T0 + step * 1000);
        refusal = explainOrderRefusal(snap, e);
      }
      if (snap.can(e) !== (refusal === null)) disagreements++;
      if (refusal) continue;
      const from = orderStatus(snap);
      [snap] = transition(orderMachine, snap, e);
      taken++;
      const c = snap.context;
      const s = orderStatus(snap);
      seen.add(`${from} ${e.type} > ${s}`);
      const offerOk = (s === 'offered') === (c.offer !== null);
      // A cancelled order keeps the rider who held it on record.
      const riderOk = s === 'cancelled' || (c.riderId !== null) === ['assigned', 'atPickup', 'pickedUp', 'atDropoff', 'delivered'].includes(s);
      const counted = c.attempts <= c.maxAttempts && new Set(c.excludedRiders).size === c.excludedRiders.length;
      if (!offerOk || !riderOk || !counted) broken++;
    }
  }
  t.equal(disagreements, 0, 'can() and the explainer never disagree');
  t.equal(broken, 0, 'offer only while offered, a rider only while assigned or later, attempts within bounds');
  // Every transition of the machine (state, event, outcome) is reached at random too.
  const machineTransitions = [
    'assigned ARRIVED_PICKUP > atPickup',
    'assigned CANCEL > cancelled',
    'assigned RIDER_RELEASED > searching',
    'atDropoff CANCEL > cancelled',
    'atDropoff DELIVER > delivered',
    'atPickup CANCEL > cancelled',
    'atPickup PICKED_UP > pickedUp',
    'atPickup RIDER_RELEASED > searching',
    'awaitingPayment CANCEL > cancelled',
    'awaitingPayment PAYMENT_CAPTURED > searching',
    'awaitingPayment PAYMENT_FAILED > cancelled',
    'escalated CANCEL > cancelled',
    'escalated REDISPATCH > searching',
    'offered ACCEPT > assigned',
    'offered CANCEL > cancelled',
    'offered DECLINE > escalated',
    'offered DECLINE > searching',
    'offered OFFER_EXPIRED > escalated',
    'offered OFFER_EXPIRED > searching',
    'offered OFFER_VOID > searching',
    'pickedUp ARRIVED_DROPOFF > atDropoff',
    'pickedUp CANCEL > cancelled',
    'searching CANCEL > cancelled',
    'searching OFFER > offered',
    'searching SEARCH_TIMEOUT > escalated',
  ];
  t.same([...seen].sort(), machineTransitions, `every transition reached (${taken} steps taken)`);
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

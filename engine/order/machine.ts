/**
 * The order machine: one actor per order, from creation to delivery or
 * cancellation. It never reads time and runs nothing but `assign`: every
 * timestamp comes from the event's `at`, so folding the stored events
 * rebuilds the same snapshot. Deadlines (offer expiry, search limit) live in
 * the context; the shard's timer wheel turns them into events.
 */
import { and, assertEvent, assign, setup } from 'xstate';
import type { SnapshotFrom } from 'xstate';
import { DispatchError } from '../errors.ts';
import type { OrderStatus } from '../types.ts';
import type { CancelledBy, OrderContext, OrderEvent, OrderInput } from './events.ts';

/** Who may cancel in each state; operations always need a reason. */
const CANCELLERS = {
  awaitingPayment: ['customer', 'ops', 'payment'],
  searching: ['customer', 'ops'],
  offered: ['customer', 'ops'],
  assigned: ['customer', 'ops'],
  atPickup: ['customer', 'ops'],
  // Customers cannot cancel once the food left the store.
  pickedUp: ['ops'],
  atDropoff: ['ops'],
  escalated: ['customer', 'ops'],
} as const satisfies Partial<Record<OrderStatus, readonly CancelledBy[]>>;

type CancellableStatus = keyof typeof CANCELLERS;

/** Whitespace-only text counts as no reason. */
function hasText(s: string | undefined): s is string {
  return typeof s === 'string' && s.trim().length > 0;
}

function proofOf(ctx: OrderContext, event: { otp?: string; proofRef?: string }): OrderContext['proof'] {
  if (event.otp !== undefined && event.otp === ctx.otp) return { kind: 'otp' };
  if (hasText(event.proofRef)) return { kind: 'ref', ref: event.proofRef };
  return null;
}

function isRiderOf(ctx: OrderContext, event: OrderEvent): boolean {
  return 'riderId' in event && ctx.riderId !== null && event.riderId === ctx.riderId;
}

function holdsOffer(ctx: OrderContext, event: OrderEvent): boolean {
  return 'riderId' in event && ctx.offer !== null && event.riderId === ctx.offer.riderId;
}

export const orderMachine = setup({
  types: {
    input: {} as OrderInput,
    context: {} as OrderContext,
    events: {} as OrderEvent,
  },
  guards: {
    isPrepaid: ({ context }) => context.payment === 'prepaid',
    riderNotExcluded: ({ context, event }) => event.type === 'OFFER' && !context.excludedRiders.includes(event.riderId),
    isOfferedRider: ({ context, event }) => holdsOffer(context, event),
    /** The failing offer is the last one allowed (evaluated before it is counted). */
    attemptsExhausted: ({ context }) => context.attempts + 1 >= context.maxAttempts,
    isAssignedRider: ({ context, event }) => isRiderOf(context, event),
    hasProof: ({ context, event }) => event.type === 'DELIVER' && proofOf(context, event) !== null,
    hasReason: ({ event }) => 'reason' in event && hasText(event.reason),
    cancelAllowed: ({ event }, params: { by: readonly CancelledBy[] }) =>
      event.type === 'CANCEL' && params.by.includes(event.by) && (event.by !== 'ops' || hasText(event.reason)),
  },
  actions: {
    capturePayment: assign(({ context, event }) => {
      assertEvent(event, 'PAYMENT_CAPTURED');
      return { paymentId: event.paymentId, confirmedAt: event.at, searchDeadline: event.at + context.searchLimitMs };
    }),
    failPayment: assign(({ event }) => {
      assertEvent(event, 'PAYMENT_FAILED');
      return { cancelledAt: event.at, cancel: { by: 'payment' as const, reason: event.reason } };
    }),
    cancel: assign(({ event }) => {
      assertEvent(event, 'CANCEL');
      return { cancelledAt: event.at, cancel: { by: event.by, reason: event.reason ?? null }, offer: null };
    }),
    makeOffer: assign(({ event }) => {
      assertEvent(event, 'OFFER');
      return { offer: { riderId: event.riderId, offeredAt: event.at, expiresAt: event.expiresAt } };
    }),
    assignRider: assign(({ event }) => {
      assertEvent(event, 'ACCEPT');
      return { riderId: event.riderId, assignedAt: event.at, offer: null };
    }),
    /** A declined or expired offer: counted, and the rider is never asked again. */
    failOffer: assign(({ context, event }) => {
      assertEvent(event, ['DECLINE', 'OFFER_EXPIRED']);
      return {
        attempts: context.attempts + 1,
        excludedRiders: context.excludedRiders.includes(event.riderId) ? context.excludedRiders : [...context.excludedRiders, event.riderId],
        offer: null,
      };
    }),
    voidOffer: assign({ offer: null }),
    escalateSearchTimeout: assign(({ event }) => ({ escalation: { reason: 'searchTimeout' as const, at: event.at } })),
    escalateTooManyAttempts: assign(({ event }) => ({ escalation: { reason: 'tooManyAttempts' as const, at: event.at } })),
    arrivePickup: assign(({ event }) => ({ arrivedPickupAt: event.at })),
    pickUp: assign(({ event }) => ({ pickedUpAt: event.at })),
    arriveDropoff: assign(({ event }) => ({ arrivedDropoffAt: event.at })),
    deliver: assign(({ context, event }) => {
      assertEvent(event, 'DELIVER');
      return { deliveredAt: event.at, proof: proofOf(context, event) };
    }),
    /** The rider is gone before pickup: search again with a fresh deadline. */
    releaseRider: assign(({ context, event }) => ({
      riderId: null,
      assignedAt: null,
      arrivedPickupAt: null,
      searchDeadline: event.at + context.searchLimitMs,
    })),
    redispatch: assign(({ context, event }) => ({
      attempts: 0,
      escalation: null,
      searchDeadline: event.at + context.searchLimitMs,
    })),
  },
}).createMachine({
  id: 'order',
  context: ({ input }) => {
    const { spec } = input;
    // Cash on delivery is confirmed at creation, so its search clock starts there.
    const confirmedAt = spec.payment === 'prepaid' ? null : input.createdAt;
    return {
      orderId: spec.orderId,
      storeId: spec.storeId,
      customerId: spec.customerId,
      pickup: { lat: spec.pickup.lat, lng: spec.pickup.lng },
      dropoff: { lat: spec.dropoff.lat, lng: spec.dropoff.lng },
      payment: spec.payment,
      readyAt: spec.readyAt ?? input.createdAt,
      promisedAt: spec.promisedAt ?? null,
      riderFee: spec.riderFee ?? 0,
      deliveryFee: spec.deliveryFee ?? null,
      otp: input.otp,
      createdAt: input.createdAt,
      searchLimitMs: input.searchLimitMs,
      maxAttempts: input.maxAttempts,
      searchDeadline: confirmedAt === null ? null : confirmedAt + input.searchLimitMs,
      riderId: null,
      offer: null,
      excludedRiders: [],
      attempts: 0,
      confirmedAt,
      assignedAt: null,
      arrivedPickupAt: null,
      pickedUpAt: null,
      arrivedDropoffAt: null,
      deliveredAt: null,
      cancelledAt: null,
      cancel: null,
      escalation: null,
      proof: null,
      paymentId: null,
    };
  },
  initial: 'created',
  states: {
    created: {
      always: [{ guard: 'isPrepaid', target: 'awaitingPayment' }, { target: 'confirmed' }],
    },
    awaitingPayment: {
      on: {
        PAYMENT_CAPTURED: { target: 'confirmed', actions: 'capturePayment' },
        PAYMENT_FAILED: { target: 'cancelled', actions: 'failPayment' },
        CANCEL: cancelIn('awaitingPayment'),
      },
    },
    // Momentary: confirmedAt and searchDeadline were set by the transition that got here.
    confirmed: {
      always: { target: 'searching' },
    },
    searching: {
      on: {
        OFFER: { guard: 'riderNotExcluded', target: 'offered', actions: 'makeOffer' },
        SEARCH_TIMEOUT: { target: 'escalated', actions: 'escalateSearchTimeout' },
        CANCEL: cancelIn('searching'),
      },
    },
    // No SEARCH_TIMEOUT here: a running offer finishes first, the engine re-sends the timeout.
    offered: {
      on: {
        ACCEPT: { guard: 'isOfferedRider', target: 'assigned', actions: 'assignRider' },
        DECLINE: failedOffer(),
        OFFER_EXPIRED: failedOffer(),
        OFFER_VOID: { guard: 'isOfferedRider', target: 'searching', actions: 'voidOffer' },
        CANCEL: cancelIn('offered'),
      },
    },
    assigned: {
      on: {
        ARRIVED_PICKUP: { guard: 'isAssignedRider', target: 'atPickup', actions: 'arrivePickup' },
        RIDER_RELEASED: { guard: 'isAssignedRider', target: 'searching', actions: 'releaseRider' },
        CANCEL: cancelIn('assigned'),
      },
    },
    atPickup: {
      on: {
        PICKED_UP: { guard: 'isAssignedRider', target: 'pickedUp', actions: 'pickUp' },
        RIDER_RELEASED: { guard: 'isAssignedRider', target: 'searching', actions: 'releaseRider' },
        CANCEL: cancelIn('atPickup'),
      },
    },
    pickedUp: {
      on: {
        ARRIVED_DROPOFF: { guard: 'isAssignedRider', target: 'atDropoff', actions: 'arriveDropoff' },
        CANCEL: cancelIn('pickedUp'),
      },
    },
    atDropoff: {
      on: {
        DELIVER: { guard: and(['isAssignedRider', 'hasProof']), target: 'delivered', actions: 'deliver' },
        CANCEL: cancelIn('atDropoff'),
      },
    },
    escalated: {
      on: {
        REDISPATCH: { guard: 'hasReason', target: 'searching', actions: 'redispatch' },
        CANCEL: cancelIn('escalated'),
      },
    },
    delivered: { type: 'final' },
    cancelled: { type: 'final' },
  },
});

function cancelIn(state: CancellableStatus) {
  return { guard: { type: 'cancelAllowed', params: { by: CANCELLERS[state] } }, target: 'cancelled', actions: 'cancel' } as const;
}

function failedOffer() {
  return [
    { guard: and(['isOfferedRider', 'attemptsExhausted']), target: 'escalated', actions: ['failOffer', 'escalateTooManyAttempts'] },
    { guard: 'isOfferedRider', target: 'searching', actions: 'failOffer' },
  ] as const;
}

export type OrderMachine = typeof orderMachine;
export type OrderSnapshot = SnapshotFrom<typeof orderMachine>;

/** The order's status. `created` is transient and never seen on a started actor. */
export function orderStatus(snapshot: OrderSnapshot): OrderStatus {
  const value: OrderStatus | 'created' = snapshot.value;
  if (value !== 'created') return value;
  return snapshot.context.payment === 'prepaid' ? 'awaitingPayment' : 'confirmed';
}

export function isFinalOrderStatus(s: OrderStatus): boolean {
  return s === 'delivered' || s === 'cancelled';
}

/** Events whose sender must be the order's rider, and the state that takes each. */
const RIDER_STEPS: Partial<Record<OrderEvent['type'], readonly OrderStatus[]>> = {
  ARRIVED_PICKUP: ['assigned'],
  PICKED_UP: ['atPickup'],
  ARRIVED_DROPOFF: ['pickedUp'],
  DELIVER: ['atDropoff'],
  RIDER_RELEASED: ['assigned', 'atPickup'],
};

/**
 * Why the order refuses `event`, or null when it would take it (exactly when
 * `snapshot.can(event)`). Never throws; the caller throws what it returns.
 */
export function explainOrderRefusal(snapshot: OrderSnapshot, event: OrderEvent): DispatchError | null {
  if (snapshot.can(event)) return null;
  const ctx = snapshot.context;
  const state = orderStatus(snapshot);
  const orderId = ctx.orderId;
  switch (event.type) {
    // Whatever the state, a refused answer means this rider holds no live offer of this order.
    case 'ACCEPT':
    case 'DECLINE':
      return new DispatchError('QD_ERR_NO_OFFER', { riderId: event.riderId, orderId });
    case 'OFFER_EXPIRED':
    case 'OFFER_VOID':
      if (state === 'offered') return new DispatchError('QD_ERR_NO_OFFER', { riderId: event.riderId, orderId });
      break;
    case 'ARRIVED_PICKUP':
    case 'PICKED_UP':
    case 'ARRIVED_DROPOFF':
    case 'DELIVER':
    case 'RIDER_RELEASED':
      if (RIDER_STEPS[event.type]?.includes(state)) {
        if (event.riderId !== ctx.riderId) return new DispatchError('QD_ERR_NOT_ASSIGNED_RIDER', { riderId: event.riderId, orderId });
        if (event.type === 'DELIVER') return new DispatchError('QD_ERR_BAD_PROOF', { orderId });
      }
      break;
    case 'CANCEL': {
      const allowed: readonly CancelledBy[] = state in CANCELLERS ? CANCELLERS[state as CancellableStatus] : [];
      if (event.by === 'ops' && allowed.includes('ops')) return new DispatchError('QD_ERR_REASON_REQUIRED', { action: 'cancel', orderId });
      return new DispatchError('QD_ERR_CANCEL_NOT_ALLOWED', { orderId, by: event.by, state });
    }
    case 'REDISPATCH':
      if (state === 'escalated') return new DispatchError('QD_ERR_REASON_REQUIRED', { action: 'redispatch', orderId });
      break;
    default:
      break;
  }
  const details: Record<string, unknown> = { entity: 'order', id: orderId, action: actionWords(event.type), state };
  if (event.type === 'OFFER' && state === 'searching') Object.assign(details, { riderId: event.riderId, reason: 'riderExcluded' });
  return new DispatchError('QD_ERR_INVALID_TRANSITION', details);
}

/** `OFFER_EXPIRED` → `offer expired`, for messages. */
function actionWords(type: string): string {
  return type.toLowerCase().replace(/_/g, ' ');
}

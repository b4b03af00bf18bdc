/**
 * The rider machine: one actor per registered rider. A rider holds up to
 * `capacity` jobs, all from one store while any is still to be collected, and
 * at most one open offer. Like the order machine it never reads time and runs
 * nothing but `assign`, so folding the stored events rebuilds the snapshot.
 */
import { and, assertEvent, assign, setup } from 'xstate';
import type { SnapshotFrom } from 'xstate';
import { DispatchError } from '../errors.ts';
import type { LatLng, OrderId, RiderStatus, StoreId } from '../types.ts';
import type { RiderContext, RiderEvent, RiderInput, RiderJob } from './events.ts';

type Busy = 'toPickup' | 'atPickup' | 'toDropoff' | 'atDropoff';
/** Where a rider goes once a job or offer is gone. */
type Settled = Busy | 'offered' | 'available';

const isPickupLeg = (s: RiderStatus) => s === 'toPickup' || s === 'atPickup';
const isDropoffLeg = (s: RiderStatus) => s === 'toDropoff' || s === 'atDropoff';

/**
 * The state that fits what the rider holds once `removed` is gone: staying put
 * while the current leg still has work, else the next drop-off, else back to
 * the store, else free (or weighing the offer still open).
 */
function settleAfter(ctx: RiderContext, from: RiderStatus, removed: OrderId): Settled {
  const jobs = ctx.jobs.filter((j) => j.orderId !== removed);
  if (isPickupLeg(from) && jobs.some((j) => !j.pickedUp)) return from as Busy;
  if (isDropoffLeg(from) && jobs.some((j) => j.orderId === ctx.dropoffOrderId)) return from as Busy;
  if (jobs.some((j) => j.pickedUp)) return 'toDropoff';
  if (jobs.length > 0) return 'toPickup';
  return ctx.offer !== null && ctx.offer.orderId !== removed ? 'offered' : 'available';
}

/** The drop-off to head for in `to`: the current one while still held, else the first picked-up job. */
function dropoffFor(jobs: readonly RiderJob[], to: Settled, current: OrderId | null): OrderId | null {
  if (!isDropoffLeg(to)) return null;
  if (current !== null && jobs.some((j) => j.orderId === current)) return current;
  return jobs.find((j) => j.pickedUp)?.orderId ?? null;
}

function holds(ctx: RiderContext, orderId: OrderId): boolean {
  return ctx.jobs.some((j) => j.orderId === orderId) || ctx.offer?.orderId === orderId;
}

/** A rider on its way to (or at) a store takes another order only from that store, within capacity. */
function bundleFits(ctx: RiderContext, storeId: StoreId): boolean {
  if (ctx.offer !== null || ctx.jobs.length >= ctx.capacity) return false;
  const waiting = ctx.jobs.filter((j) => !j.pickedUp);
  return waiting.length > 0 && waiting.every((j) => j.storeId === storeId);
}

/** Answers to an offer made while busy: the state stays; an accepted job joins the bundle. */
function openOffer() {
  return {
    ACCEPT: { guard: 'isOfferedOrder', actions: 'acceptOffer' },
    DECLINE: { guard: 'isOfferedOrder', actions: 'dropOffer' },
    OFFER_EXPIRED: { guard: 'isOfferedOrder', actions: 'dropOffer' },
  } as const;
}

function bundleOffers() {
  return { ...openOffer(), OFFER: { guard: 'canBundle', actions: 'setOffer' } } as const;
}

/** Where each busy state can go when a job or offer leaves it (itself: stays, targetless). */
const SETTLES: Record<Busy, readonly Settled[]> = {
  // No picked-up job is ever held on the way to a store.
  toPickup: ['toPickup', 'offered', 'available'],
  atPickup: ['atPickup', 'toDropoff', 'offered', 'available'],
  toDropoff: ['toDropoff', 'toPickup', 'offered', 'available'],
  atDropoff: ['atDropoff', 'toDropoff', 'toPickup', 'offered', 'available'],
};

/** One guarded branch per state the rider may end in after a removal or a delivery. */
function settle(from: Busy, cause: 'removal' | 'delivery') {
  // A delivery always takes the current drop-off away, so it never stays.
  const targets = cause === 'delivery' ? SETTLES[from].filter((to) => to !== from) : SETTLES[from];
  return targets.map((to) => {
    const settles = { type: 'settlesIn', params: { from, to } } as const;
    const guard = cause === 'delivery' ? and(['isDropoffOrder', settles]) : settles;
    const actions = { type: 'removeOrder', params: { to } } as const;
    return to === from ? { guard, actions } : { guard, target: to, actions };
  });
}

export const riderMachine = setup({
  types: {
    input: {} as RiderInput,
    context: {} as RiderContext,
    events: {} as RiderEvent,
  },
  guards: {
    hasRoom: ({ context }) => context.offer === null && context.jobs.length < context.capacity,
    // An order already held cannot join the bundle a second time.
    canBundle: ({ context, event }) => event.type === 'OFFER' && bundleFits(context, event.storeId) && !holds(context, event.orderId),
    isOfferedOrder: ({ context, event }) => 'orderId' in event && context.offer !== null && context.offer.orderId === event.orderId,
    isWaitingJob: ({ context, event }) => 'orderId' in event && context.jobs.some((j) => j.orderId === event.orderId && !j.pickedUp),
    /** The job picked up is the last one still at the store. */
    isLastWaitingJob: ({ context, event }) => 'orderId' in event && context.jobs.every((j) => j.pickedUp || j.orderId === event.orderId),
    isDropoffOrder: ({ context, event }) => 'orderId' in event && context.dropoffOrderId !== null && event.orderId === context.dropoffOrderId,
    /** The removed order is held here and leaving it puts the rider in `params.to`. */
    settlesIn: ({ context, event }, params: { from: RiderStatus; to: Settled }) =>
      'orderId' in event && holds(context, event.orderId) && settleAfter(context, params.from, event.orderId) === params.to,
  },
  actions: {
    goOnline: assign(({ event }) => {
      assertEvent(event, 'GO_ONLINE');
      return { onlineSince: event.at, shiftEndsAt: event.shiftEndsAt ?? null, lastChangeAt: event.at };
    }),
    goOffline: assign(({ event }) => ({ onlineSince: null, shiftEndsAt: null, lastChangeAt: event.at })),
    touch: assign(({ event }) => ({ lastChangeAt: event.at })),
    setOffer: assign(({ event }) => {
      assertEvent(event, 'OFFER');
      const { orderId, storeId, pickup, dropoff, expiresAt } = event;
      return { offer: { orderId, storeId, pickup, dropoff, offeredAt: event.at, expiresAt }, lastChangeAt: event.at };
    }),
    acceptOffer: assign(({ context, event }) => {
      const o = context.offer!;
      const job: RiderJob = { orderId: o.orderId, storeId: o.storeId, pickup: o.pickup, dropoff: o.dropoff, pickedUp: false };
      return { jobs: [...context.jobs, job], offer: null, lastChangeAt: event.at };
    }),
    dropOffer: assign(({ event }) => ({ offer: null, lastChangeAt: event.at })),
    pickUp: assign(({ context, event }, params: { to: Settled }) => {
      assertEvent(event, 'PICKED_UP');
      const jobs = context.jobs.map((j) => (j.orderId === event.orderId ? { ...j, pickedUp: true } : j));
      return { jobs, dropoffOrderId: dropoffFor(jobs, params.to, context.dropoffOrderId), lastChangeAt: event.at };
    }),
    /** Delivered or removed: the job (or the offer) goes, and the drop-off is chosen for the next state. */
    removeOrder: assign(({ context, event }, params: { to: Settled }) => {
      assertEvent(event, ['DELIVERED', 'ORDER_REMOVED']);
      const jobs = context.jobs.filter((j) => j.orderId !== event.orderId);
      const offer = context.offer?.orderId === event.orderId ? null : context.offer;
      return { jobs, offer, dropoffOrderId: dropoffFor(jobs, params.to, context.dropoffOrderId), lastChangeAt: event.at };
    }),
  },
}).createMachine({
  id: 'rider',
  context: ({ input }) => ({
    riderId: input.riderId,
    capacity: input.capacity,
    jobs: [],
    offer: null,
    dropoffOrderId: null,
    onlineSince: null,
    shiftEndsAt: null,
    lastChangeAt: input.createdAt,
  }),
  initial: 'offline',
  states: {
    offline: {
      on: { GO_ONLINE: { target: 'available', actions: 'goOnline' } },
    },
    available: {
      on: {
        GO_OFFLINE: { target: 'offline', actions: 'goOffline' },
        START_BREAK: { target: 'onBreak', actions: 'touch' },
        OFFER: { guard: 'hasRoom', target: 'offered', actions: 'setOffer' },
      },
    },
    onBreak: {
      on: {
        END_BREAK: { target: 'available', actions: 'touch' },
        GO_OFFLINE: { target: 'offline', actions: 'goOffline' },
      },
    },
    offered: {
      on: {
        ACCEPT: { guard: 'isOfferedOrder', target: 'toPickup', actions: 'acceptOffer' },
        DECLINE: { guard: 'isOfferedOrder', target: 'available', actions: 'dropOffer' },
        OFFER_EXPIRED: { guard: 'isOfferedOrder', target: 'available', actions: 'dropOffer' },
        ORDER_REMOVED: { guard: 'isOfferedOrder', target: 'available', actions: 'dropOffer' },
      },
    },
    toPickup: {
      on: {
        ...bundleOffers(),
        ARRIVED_PICKUP: { target: 'atPickup', actions: 'touch' },
        ORDER_REMOVED: settle('toPickup', 'removal'),
      },
    },
    atPickup: {
      on: {
        ...bundleOffers(),
        PICKED_UP: [
          { guard: and(['isWaitingJob', 'isLastWaitingJob']), target: 'toDropoff', actions: { type: 'pickUp', params: { to: 'toDropoff' } } },
          { guard: 'isWaitingJob', actions: { type: 'pickUp', params: { to: 'atPickup' } } },
        ],
        ORDER_REMOVED: settle('atPickup', 'removal'),
      },
    },
    // An offer still open when the last job was picked up can be answered on the way.
    toDropoff: {
      on: {
        ...openOffer(),
        ARRIVED_DROPOFF: { guard: 'isDropoffOrder', target: 'atDropoff', actions: 'touch' },
        ORDER_REMOVED: settle('toDropoff', 'removal'),
      },
    },
    atDropoff: {
      on: {
        ...openOffer(),
        DELIVERED: settle('atDropoff', 'delivery'),
        ORDER_REMOVED: settle('atDropoff', 'removal'),
      },
    },
  },
});

export type RiderMachine = typeof riderMachine;
export type RiderSnapshot = SnapshotFrom<typeof riderMachine>;

export function riderStatus(snapshot: RiderSnapshot): RiderStatus {
  return snapshot.value;
}

/** Where the rider is heading or standing: the store of its first waiting job, or its current drop-off. */
export function riderTarget(snapshot: RiderSnapshot): { kind: 'pickup' | 'dropoff'; orderId: string; at: LatLng } | null {
  const status = riderStatus(snapshot);
  const ctx = snapshot.context;
  if (isPickupLeg(status)) {
    const job = ctx.jobs.find((j) => !j.pickedUp);
    return job ? { kind: 'pickup', orderId: job.orderId, at: job.pickup } : null;
  }
  if (isDropoffLeg(status)) {
    const job = ctx.jobs.find((j) => j.orderId === ctx.dropoffOrderId);
    return job ? { kind: 'dropoff', orderId: job.orderId, at: job.dropoff } : null;
  }
  return null;
}

/** Free for a fresh order: available and weighing no offer. */
export function riderAcceptsNewOffer(snapshot: RiderSnapshot): boolean {
  return riderStatus(snapshot) === 'available' && snapshot.context.offer === null;
}

/** Whether an order from `storeId` could be offered now as part of a bundle. */
export function riderCanBundle(snapshot: RiderSnapshot, storeId: StoreId): boolean {
  return isPickupLeg(riderStatus(snapshot)) && bundleFits(snapshot.context, storeId);
}

/**
 * Why the rider refuses `event`, or null when it would take it (exactly when
 * `snapshot.can(event)`). Never throws; the caller throws what it returns.
 */
export function explainRiderRefusal(snapshot: RiderSnapshot, event: RiderEvent): DispatchError | null {
  if (snapshot.can(event)) return null;
  const ctx = snapshot.context;
  const state = riderStatus(snapshot);
  switch (event.type) {
    case 'GO_OFFLINE':
    case 'START_BREAK': {
      const orderIds = ctx.jobs.map((j) => j.orderId);
      if (ctx.offer) orderIds.push(ctx.offer.orderId);
      if (orderIds.length > 0) return new DispatchError('QD_ERR_RIDER_BUSY', { riderId: ctx.riderId, orderIds });
      break;
    }
    case 'ACCEPT':
    case 'DECLINE':
      return new DispatchError('QD_ERR_NO_OFFER', { riderId: ctx.riderId, orderId: event.orderId });
    default:
      break;
  }
  return new DispatchError('QD_ERR_INVALID_TRANSITION', {
    entity: 'rider',
    id: ctx.riderId,
    action: event.type.toLowerCase().replace(/_/g, ' '),
    state,
  });
}

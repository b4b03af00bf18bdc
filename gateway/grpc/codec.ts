/**
 * Engine values to quickdash.v1 messages and back, for DispatchService.
 * Engine nulls become absent fields (protos/README.md, "Absent means none").
 */
import type {
  CancelledBy,
  NearbyRider as EngineNearbyRider,
  OrderStatus as EngineOrderStatus,
  OrderUpdate,
  OrderView,
  PaymentIntent as EnginePaymentIntent,
  PaymentMode as EnginePaymentMode,
  RiderDailyStats as EngineRiderDailyStats,
  RiderStatus as EngineRiderStatus,
  RiderView,
} from '../../engine/index.ts';
import {
  CancelParty,
  OrderStatus,
  PaymentMode,
  RiderStatus,
  type Order,
  type OrderLine,
  type PaymentIntent,
  type NearbyRider,
  type Rider,
  type RiderDailyStats,
} from '../../protos/gen/quickdash/v1/common.ts';
import type { OrderEvent } from '../../protos/gen/quickdash/v1/dispatch.ts';

/** What the order intake knows about an order beyond the engine's view: lines, prices, fee, the payment. */
export interface OrderExtras {
  lines: Array<OrderLine & { unitPricePaise: number }>;
  itemsTotalPaise: number;
  deliveryFeePaise: number;
  currency: string;
  /** The provider's order id of a prepaid order; '' when none is known. */
  providerOrderId: string;
}

export const NO_EXTRAS: OrderExtras = { lines: [], itemsTotalPaise: 0, deliveryFeePaise: 0, currency: 'INR', providerOrderId: '' };

const ORDER_STATUS: Record<EngineOrderStatus, OrderStatus> = {
  awaitingPayment: OrderStatus.ORDER_STATUS_AWAITING_PAYMENT,
  confirmed: OrderStatus.ORDER_STATUS_CONFIRMED,
  searching: OrderStatus.ORDER_STATUS_SEARCHING,
  offered: OrderStatus.ORDER_STATUS_OFFERED,
  assigned: OrderStatus.ORDER_STATUS_ASSIGNED,
  atPickup: OrderStatus.ORDER_STATUS_AT_PICKUP,
  pickedUp: OrderStatus.ORDER_STATUS_PICKED_UP,
  atDropoff: OrderStatus.ORDER_STATUS_AT_DROPOFF,
  delivered: OrderStatus.ORDER_STATUS_DELIVERED,
  cancelled: OrderStatus.ORDER_STATUS_CANCELLED,
  escalated: OrderStatus.ORDER_STATUS_ESCALATED,
};

const RIDER_STATUS: Record<EngineRiderStatus, RiderStatus> = {
  offline: RiderStatus.RIDER_STATUS_OFFLINE,
  available: RiderStatus.RIDER_STATUS_AVAILABLE,
  offered: RiderStatus.RIDER_STATUS_OFFERED,
  toPickup: RiderStatus.RIDER_STATUS_TO_PICKUP,
  atPickup: RiderStatus.RIDER_STATUS_AT_PICKUP,
  toDropoff: RiderStatus.RIDER_STATUS_TO_DROPOFF,
  atDropoff: RiderStatus.RIDER_STATUS_AT_DROPOFF,
  onBreak: RiderStatus.RIDER_STATUS_ON_BREAK,
};

const PAYMENT_MODE: Record<EnginePaymentMode, PaymentMode> = {
  prepaid: PaymentMode.PAYMENT_MODE_PREPAID,
  cod: PaymentMode.PAYMENT_MODE_COD,
};

/**
 * The engine has no "store" party: a store's cancellation is an operations
 * cancellation whose reason starts with this prefix (protos/README.md,
 * CancelOrder), and reads back as CANCEL_PARTY_STORE.
 */
export const STORE_CANCEL_PREFIX = 'store: ';

const CANCEL_PARTY: Record<CancelledBy, CancelParty> = {
  customer: CancelParty.CANCEL_PARTY_CUSTOMER,
  ops: CancelParty.CANCEL_PARTY_OPERATIONS,
  payment: CancelParty.CANCEL_PARTY_PAYMENT,
};

export const TERMINAL: ReadonlySet<EngineOrderStatus> = new Set(['delivered', 'cancelled']);

export const orderStatusOf = (s: EngineOrderStatus): OrderStatus => ORDER_STATUS[s] ?? OrderStatus.UNRECOGNIZED;
export const riderStatusOf = (s: EngineRiderStatus): RiderStatus => RIDER_STATUS[s] ?? RiderStatus.UNRECOGNIZED;

/** The engine's payment mode for a request's, or null for UNSPECIFIED and unknown values. */
export function paymentModeFromProto(m: PaymentMode): EnginePaymentMode | null {
  if (m === PaymentMode.PAYMENT_MODE_PREPAID) return 'prepaid';
  if (m === PaymentMode.PAYMENT_MODE_COD) return 'cod';
  return null;
}

const opt = <T>(v: T | null | undefined): T | undefined => (v === null ? undefined : v);

export function orderToProto(o: OrderView, x: OrderExtras): Order {
  let cancel: Order['cancel'];
  if (o.cancel) {
    const reason = o.cancel.reason;
    cancel =
      o.cancel.by === 'ops' && reason?.startsWith(STORE_CANCEL_PREFIX)
        ? { by: CancelParty.CANCEL_PARTY_STORE, reason: reason.slice(STORE_CANCEL_PREFIX.length) }
        : { by: CANCEL_PARTY[o.cancel.by] ?? CancelParty.UNRECOGNIZED, reason: opt(reason) };
  }
  return {
    orderId: o.orderId,
    status: orderStatusOf(o.status),
    seq: o.seq,
    storeId: o.storeId,
    customerId: o.customerId,
    pickup: { lat: o.pickup.lat, lng: o.pickup.lng },
    dropoff: { lat: o.dropoff.lat, lng: o.dropoff.lng },
    payment: {
      mode: PAYMENT_MODE[o.payment] ?? PaymentMode.UNRECOGNIZED,
      amountPaise: x.itemsTotalPaise + x.deliveryFeePaise,
      currency: x.currency,
      providerOrderId: o.payment === 'prepaid' ? x.providerOrderId : '',
      paymentId: opt(o.paymentId),
    },
    riderId: opt(o.riderId),
    offer: o.offer ? { riderId: o.offer.riderId, expiresAt: o.offer.expiresAt } : undefined,
    createdAt: o.createdAt,
    readyAt: o.readyAt,
    promisedAt: opt(o.promisedAt),
    assignedAt: opt(o.assignedAt),
    pickedUpAt: opt(o.pickedUpAt),
    deliveredAt: opt(o.deliveredAt),
    cancelledAt: opt(o.cancelledAt),
    cancel,
    escalation: o.escalation ? { reason: o.escalation.reason, at: o.escalation.at } : undefined,
    attempts: o.attempts,
    otp: o.otp,
    lines: x.lines.map((l) => ({ productId: l.productId, quantity: l.quantity, unitPricePaise: l.unitPricePaise })),
    itemsTotalPaise: x.itemsTotalPaise,
    deliveryFeePaise: x.deliveryFeePaise,
  };
}

export function orderEventToProto(position: string, u: OrderUpdate, x: OrderExtras): OrderEvent {
  return {
    position,
    orderId: u.orderId,
    seq: u.seq,
    event: u.event,
    status: orderStatusOf(u.order.status),
    at: u.at,
    order: orderToProto(u.order, x),
  };
}

export function intentToProto(i: EnginePaymentIntent): PaymentIntent {
  return { orderId: i.orderId, providerOrderId: i.providerOrderId, amountPaise: i.amountPaise, currency: i.currency };
}

export function riderToProto(r: RiderView): Rider {
  return {
    riderId: r.riderId,
    status: riderStatusOf(r.status),
    seq: r.seq,
    capacity: r.capacity,
    orderIds: [...r.orderIds],
    offer: r.offer
      ? {
          orderId: r.offer.orderId,
          storeId: r.offer.storeId,
          pickup: { lat: r.offer.pickup.lat, lng: r.offer.pickup.lng },
          dropoff: { lat: r.offer.dropoff.lat, lng: r.offer.dropoff.lng },
          expiresAt: r.offer.expiresAt,
        }
      : undefined,
    position: r.position ? { lat: r.position.lat, lng: r.position.lng, fixAt: r.position.ts } : undefined,
    shard: r.shard,
  };
}

export function nearbyRiderToProto(r: EngineNearbyRider): NearbyRider {
  return { riderId: r.riderId, status: riderStatusOf(r.status), position: { lat: r.position.lat, lng: r.position.lng }, distanceM: r.distanceM };
}

export function riderStatsToProto(s: EngineRiderDailyStats): RiderDailyStats {
  return {
    riderId: s.riderId,
    day: s.day,
    deliveries: s.deliveries,
    onTime: s.onTime,
    distanceM: s.distanceM,
    earningsPaise: s.earnings,
    offers: s.offers,
    accepts: s.accepts,
    onTimeRate: opt(s.onTimeRate),
    acceptanceRate: opt(s.acceptanceRate),
  };
}

/**
 * What the engine needs from the outside world besides its event store: the
 * catalog (stores, products, stock) and a payment provider. Adapters
 * implement these in adapters/ (Postgres, Razorpay), in-process or behind
 * gRPC; the engine and the services that take orders see only these shapes.
 *
 * Money is in minor units (paise) as integers, never floats.
 */
import type { LatLng, StoreId } from './types.ts';

export interface OrderLine {
  productId: string;
  quantity: number;
}

/** A store as the catalog knows it. */
export interface StoreInfo {
  storeId: StoreId;
  name: string;
  location: LatLng;
  /** IANA time zone its opening hours are in, e.g. "Asia/Kolkata". */
  timeZone: string;
  /** Whether it takes orders at the time asked about. */
  open: boolean;
  /** Minutes from order to handover, used as the order's ready time. */
  prepMinutes: number;
}

/** Stock held for one order: all of its lines, or none. */
export interface Reservation {
  orderId: string;
  storeId: StoreId;
  lines: Array<OrderLine & { unitPricePaise: number }>;
  totalPaise: number;
  store: StoreInfo;
  /** Where it stands: a repeated reserve() answers the existing reservation, which may be released or sold. */
  status: 'reserved' | 'released' | 'committed';
  /** True when the order had reserved before, so this call reserved nothing. */
  repeated: boolean;
}

/** What the catalog holds for an order, and whether it is still held, given back or sold. */
export interface ReservationRecord {
  orderId: string;
  storeId: StoreId;
  status: 'reserved' | 'released' | 'committed';
  lines: Array<OrderLine & { unitPricePaise: number }>;
  totalPaise: number;
  createdAt: number;
}

export interface CatalogPort {
  /** The store, with `open` evaluated at `at` (epoch ms). Throws QD_ERR_STORE_NOT_FOUND. */
  getStore(storeId: StoreId, at: number): Promise<StoreInfo>;
  /**
   * Reserves every line of an order at its store, all or nothing, safe under
   * any concurrency (nothing is ever oversold). Repeating it for the same
   * order returns the existing reservation and reserves nothing more.
   * Throws QD_ERR_STORE_NOT_FOUND, QD_ERR_STORE_CLOSED,
   * QD_ERR_PRODUCT_NOT_FOUND or QD_ERR_OUT_OF_STOCK (details name the product),
   * QD_ERR_INVALID_ARGUMENT (field: items).
   */
  reserve(orderId: string, storeId: StoreId, lines: OrderLine[], at: number): Promise<Reservation>;
  /** What was reserved for an order, or null if nothing ever was. */
  reservationOf(orderId: string): Promise<ReservationRecord | null>;
  /** Puts an order's reserved stock back. Idempotent; a no-op for an order that reserved nothing. */
  release(orderId: string): Promise<void>;
  /**
   * For an order that was never placed: puts its stock back and forgets its
   * reservation, so a retry of the same order reserves afresh. Idempotent.
   * Throws QD_ERR_INVALID_TRANSITION when the reservation was already sold.
   */
  abandon(orderId: string): Promise<void>;
  /** The order was delivered: its reservation becomes a sale and can no longer be released. Idempotent. */
  commit(orderId: string): Promise<void>;
}

/** A payment the customer is asked to make for one order. */
export interface PaymentIntent {
  orderId: string;
  /** The provider's order id (Razorpay `order_...`), which the app hands to the checkout. */
  providerOrderId: string;
  amountPaise: number;
  currency: string;
}

export interface Refund {
  orderId: string;
  providerRefundId: string;
  amountPaise: number;
}

export interface PaymentsPort {
  /**
   * Opens a payment for an order at the provider. Repeating it for the same
   * order returns the same intent. Throws QD_ERR_PAYMENT_TIMEOUT or
   * QD_ERR_PAYMENT_PROVIDER, never hangs.
   */
  createIntent(orderId: string, amountPaise: number, currency: string): Promise<PaymentIntent>;
  /** The intent opened for an order, or null if none was. */
  intentOf(orderId: string): Promise<PaymentIntent | null>;
  /**
   * Refunds a captured payment: `amountPaise` of it, or all of it when
   * omitted. Idempotent per order. Same errors as createIntent.
   */
  refund(orderId: string, paymentId: string, amountPaise?: number): Promise<Refund>;
}

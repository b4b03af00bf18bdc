/** Domain vocabulary shared by every part of the engine. */

export type OrderId = string;
export type RiderId = string;
export type StoreId = string;
export type ShardId = number;
/** An H3 cell index as h3-js returns it (hex string). */
export type Cell = string;

export interface LatLng {
  lat: number;
  lng: number;
}

/** How the customer pays: prepaid orders wait for the payment capture before dispatch. */
export type PaymentMode = 'prepaid' | 'cod';

/** What a caller supplies to create an order. */
export interface OrderSpec {
  orderId: OrderId;
  storeId: StoreId;
  customerId: string;
  pickup: LatLng;
  dropoff: LatLng;
  payment: PaymentMode;
  /** When the food / parcel is expected to be ready at the store (epoch ms). Defaults to creation time. */
  readyAt?: number;
  /** Promised delivery time (epoch ms), for on-time statistics. */
  promisedAt?: number;
  /** Rider's earnings for this delivery, in minor units (paise). */
  riderFee?: number;
  /** What the customer pays for delivery, in minor units (paise), as quoted when the order was placed. */
  deliveryFee?: number;
  /** Prep / handover minutes at the store and at the door, from the replay data or the store's settings. */
  pickupServiceMs?: number;
  dropoffServiceMs?: number;
}

export type OrderStatus =
  | 'awaitingPayment'
  | 'confirmed'
  | 'searching'
  | 'offered'
  | 'assigned'
  | 'atPickup'
  | 'pickedUp'
  | 'atDropoff'
  | 'delivered'
  | 'cancelled'
  | 'escalated';

export type RiderStatus =
  | 'offline'
  | 'available'
  | 'offered'
  | 'toPickup'
  | 'atPickup'
  | 'toDropoff'
  | 'atDropoff'
  | 'onBreak';

/** One GPS fix as a rider's phone reports it. */
export interface Fix {
  riderId: RiderId;
  lat: number;
  lng: number;
  /** Phone timestamp, epoch ms. */
  ts: number;
  /** Per-rider monotonically increasing sequence number. */
  seq: number;
}

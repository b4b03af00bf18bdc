/**
 * The rider machine's contract: input, context and events. As with orders,
 * every event carries `at` and the machine never reads time.
 */
import type { LatLng, OrderId, StoreId } from '../types.ts';

export interface RiderInput {
  riderId: string;
  /** Most orders held at once (a bundle from one store). */
  capacity: number;
  createdAt: number;
}

/** An order the rider holds. */
export interface RiderJob {
  orderId: OrderId;
  storeId: StoreId;
  pickup: LatLng;
  dropoff: LatLng;
  pickedUp: boolean;
}

export interface RiderOffer {
  orderId: OrderId;
  storeId: StoreId;
  pickup: LatLng;
  dropoff: LatLng;
  offeredAt: number;
  expiresAt: number;
}

export interface RiderContext {
  riderId: string;
  capacity: number;
  jobs: RiderJob[];
  offer: RiderOffer | null;
  /** The picked-up order whose drop-off the rider is heading to or standing at. */
  dropoffOrderId: OrderId | null;
  onlineSince: number | null;
  /** End of the rider's shift while online, if the rider app gave one. */
  shiftEndsAt: number | null;
  lastChangeAt: number;
}

export type RiderEvent =
  /** `shiftEndsAt`: the rider takes no order it could not pick up before then. */
  | { type: 'GO_ONLINE'; at: number; shiftEndsAt?: number }
  | { type: 'GO_OFFLINE'; at: number }
  | { type: 'START_BREAK'; at: number }
  | { type: 'END_BREAK'; at: number }
  | ({ type: 'OFFER'; at: number } & Omit<RiderOffer, 'offeredAt'>)
  | { type: 'ACCEPT'; at: number; orderId: OrderId }
  | { type: 'DECLINE'; at: number; orderId: OrderId }
  | { type: 'OFFER_EXPIRED'; at: number; orderId: OrderId }
  | { type: 'ARRIVED_PICKUP'; at: number }
  | { type: 'PICKED_UP'; at: number; orderId: OrderId }
  | { type: 'ARRIVED_DROPOFF'; at: number; orderId: OrderId }
  | { type: 'DELIVERED'; at: number; orderId: OrderId }
  /** An order the rider holds or was offered was cancelled or reassigned. */
  | { type: 'ORDER_REMOVED'; at: number; orderId: OrderId };

export type RiderEventType = RiderEvent['type'];

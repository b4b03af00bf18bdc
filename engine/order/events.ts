/**
 * The order machine's contract: its input, context and events. Every event
 * carries `at` (epoch ms, from the engine's clock) so the machine never reads
 * time itself: replaying the same events rebuilds the same order.
 * These events are also what the event log stores for an order's stream.
 */
import type { LatLng, OrderSpec, RiderId } from '../types.ts';

export interface OrderInput {
  spec: OrderSpec;
  /** One-time code the customer tells the rider at the door. */
  otp: string;
  createdAt: number;
  /** How long the order may search for a rider before escalating to operations. */
  searchLimitMs: number;
  /** Failed offers (declined or expired) before escalating. */
  maxAttempts: number;
}

export type CancelledBy = 'customer' | 'ops' | 'payment';

export interface OrderContext {
  orderId: string;
  storeId: string;
  customerId: string;
  pickup: LatLng;
  dropoff: LatLng;
  payment: OrderSpec['payment'];
  readyAt: number;
  promisedAt: number | null;
  riderFee: number;
  /** What the customer pays for delivery (paise), as quoted at placement; null for orders created without one. */
  deliveryFee: number | null;
  otp: string;
  createdAt: number;
  searchLimitMs: number;
  maxAttempts: number;
  /** Search deadline, set on entering searching from confirmation or redispatch. */
  searchDeadline: number | null;
  riderId: RiderId | null;
  offer: { riderId: RiderId; offeredAt: number; expiresAt: number } | null;
  /** Riders that declined or let an offer expire: never offered this order again. */
  excludedRiders: RiderId[];
  /** Offers that failed (declined, expired). */
  attempts: number;
  confirmedAt: number | null;
  assignedAt: number | null;
  arrivedPickupAt: number | null;
  pickedUpAt: number | null;
  arrivedDropoffAt: number | null;
  deliveredAt: number | null;
  cancelledAt: number | null;
  cancel: { by: CancelledBy; reason: string | null } | null;
  escalation: { reason: 'searchTimeout' | 'tooManyAttempts'; at: number } | null;
  proof: { kind: 'otp' } | { kind: 'ref'; ref: string } | null;
  paymentId: string | null;
}

export type ArrivalSource = 'geofence' | 'rider';

export type OrderEvent =
  | { type: 'PAYMENT_CAPTURED'; at: number; paymentId: string }
  | { type: 'PAYMENT_FAILED'; at: number; reason: string }
  | { type: 'OFFER'; at: number; riderId: RiderId; expiresAt: number }
  | { type: 'ACCEPT'; at: number; riderId: RiderId }
  | { type: 'DECLINE'; at: number; riderId: RiderId }
  | { type: 'OFFER_EXPIRED'; at: number; riderId: RiderId }
  /** The offered rider could not take it after all (went offline, taken by another order): not the rider's fault, not an attempt. */
  | { type: 'OFFER_VOID'; at: number; riderId: RiderId }
  | { type: 'ARRIVED_PICKUP'; at: number; riderId: RiderId; source: ArrivalSource }
  | { type: 'PICKED_UP'; at: number; riderId: RiderId }
  | { type: 'ARRIVED_DROPOFF'; at: number; riderId: RiderId; source: ArrivalSource }
  | { type: 'DELIVER'; at: number; riderId: RiderId; otp?: string; proofRef?: string }
  | { type: 'CANCEL'; at: number; by: CancelledBy; reason?: string }
  | { type: 'SEARCH_TIMEOUT'; at: number }
  /** The assigned rider is gone before pickup (offline, ops unassign): the order searches again. */
  | { type: 'RIDER_RELEASED'; at: number; riderId: RiderId; reason: string }
  /** Operations send an escalated order back to search with a fresh deadline and attempt count. */
  | { type: 'REDISPATCH'; at: number; reason: string };

export type OrderEventType = OrderEvent['type'];

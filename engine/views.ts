/** Read-side views of actors, the same whether built in a shard or folded from the log. */
import type { SnapshotFrom } from 'xstate';
import type { OrderView } from './api.ts';
import { orderStatus } from './order/index.ts';
import type { orderMachine } from './order/index.ts';

export function orderViewOf(snap: SnapshotFrom<typeof orderMachine>, seq: number): OrderView {
  const c = snap.context;
  return {
    orderId: c.orderId,
    status: orderStatus(snap),
    seq,
    storeId: c.storeId,
    customerId: c.customerId,
    pickup: c.pickup,
    dropoff: c.dropoff,
    payment: c.payment,
    paymentId: c.paymentId,
    deliveryFee: c.deliveryFee ?? null,
    riderId: c.riderId,
    offer: c.offer ? { riderId: c.offer.riderId, expiresAt: c.offer.expiresAt } : null,
    createdAt: c.createdAt,
    readyAt: c.readyAt,
    promisedAt: c.promisedAt,
    assignedAt: c.assignedAt,
    pickedUpAt: c.pickedUpAt,
    deliveredAt: c.deliveredAt,
    cancelledAt: c.cancelledAt,
    cancel: c.cancel,
    escalation: c.escalation,
    attempts: c.attempts,
    otp: c.otp,
  };
}

/** Public surface of engine/order: the order machine, its helpers and its event contract. */

// Machine
export { orderMachine, orderStatus, isFinalOrderStatus, explainOrderRefusal } from './machine.ts';
export type { OrderMachine, OrderSnapshot } from './machine.ts';

// Contract
export type { ArrivalSource, CancelledBy, OrderContext, OrderEvent, OrderEventType, OrderInput } from './events.ts';

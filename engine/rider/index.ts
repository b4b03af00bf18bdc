/** Public surface of engine/rider: the rider machine, its helpers and its event contract. */

// Machine
export { riderMachine, riderStatus, riderTarget, riderAcceptsNewOffer, riderCanBundle, explainRiderRefusal } from './machine.ts';
export type { RiderMachine, RiderSnapshot } from './machine.ts';

// Contract
export type { RiderContext, RiderEvent, RiderEventType, RiderInput, RiderJob, RiderOffer } from './events.ts';

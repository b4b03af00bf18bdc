/**
 * QuickDash client SDK for the rider and customer apps: the public surface.
 * Runs in browsers (globalThis.WebSocket) and in Node (the `ws` package,
 * loaded only when needed). See docs/protocol.md, "Client SDK".
 */

export { RiderClient } from './rider.ts';
export type { GpsFix, Offer, OfferGone, OnlineOptions, RiderClientOptions, RiderEvents, RiderState } from './rider.ts';

export { CustomerClient } from './customer.ts';
export type { CustomerClientOptions, CustomerEvents, OrderStatusEvent, RiderPositionEvent } from './customer.ts';

export type {
  ClientOptions,
  CommandResult,
  ConnectionEvents,
  ConnectionState,
  DisconnectInfo,
  FixReport,
  OpenInfo,
  WebSocketConstructor,
  WebSocketLike,
} from './connection.ts';

export { ClientErrorCodes, QuickDashError } from './errors.ts';
export type { ClientErrorCode } from './errors.ts';

export { Emitter } from './emitter.ts';
export type { Listener } from './emitter.ts';

export { PROTOCOL_VERSION } from './codec.ts';

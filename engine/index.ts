/**
 * QuickDash engine: the public surface. Transports (gateway, gRPC) and
 * adapters import from here only.
 */

// Engine
export { createEngine } from './engine.ts';
export type { EngineOptions } from './engine.ts';
export type {
  DispatchEngine,
  DispatchLatency,
  EngineCounters,
  FixRejection,
  FixRejectReason,
  IngestResult,
  NearbyRider,
  OperationsOrder,
  OperationsRider,
  OperationsSnapshot,
  OrderPricing,
  OrderUpdate,
  OrderView,
  RiderOnlineOptions,
  RiderUpdate,
  RiderView,
  Unsubscribe,
} from './api.ts';

// Configuration and time
export { defaultConfig, resolveConfig } from './config.ts';
export type { EngineConfig } from './config.ts';
export { ScaledClock, SystemClock, VirtualClock } from './clock.ts';
export type { Clock } from './clock.ts';

// Errors
export { DispatchError, ErrorCodes, GrpcStatus, invalidArgument } from './errors.ts';
export type { ErrorCode } from './errors.ts';

// Domain
export type { Cell, Fix, LatLng, OrderId, OrderSpec, OrderStatus, PaymentMode, RiderId, RiderStatus, StoreId } from './types.ts';
export type { CancelledBy } from './order/events.ts';

// Order intake: reservations, payments and compensations around the engine
export { DEFAULT_PRICING, OrderIntake, deliveryFee, surgeFactor } from './intake/index.ts';
export type { FeeBreakdown, OrderIntakeOptions, PlaceOrderRequest, PlacedOrder, PricingConfig, Quote, Supply } from './intake/index.ts';

// Catalog and payment ports
export type { CatalogPort, OrderLine, PaymentIntent, PaymentsPort, Refund, Reservation, ReservationRecord, StoreInfo } from './ports.ts';

// Durability port
export { MemoryEventStore } from './store/index.ts';
export type { EventStore, LiveStream, RiderDailyStats, RiderStatsDelta, Snapshot, StoredEvent } from './store/index.ts';

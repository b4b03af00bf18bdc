/**
 * adapters/grpc: the catalog, payments and persistence adapters behind gRPC
 * (quickdash.v1), so a node can use them running as separate services.
 * Servers wrap a SqlCatalog, any PaymentsPort or any EventStore; clients
 * implement the engine's ports over the wire with the same errors.
 */

// Servers
export { catalogServer, paymentsServer, persistenceServer } from './servers.ts';
export type { CatalogAdapterServer, ServerOptions } from './servers.ts';
export { SERVICE_NAMES, startAdapterServer } from './start.ts';
export type { AdapterServer, AdapterServerOptions, AdapterService, AdapterTls } from './start.ts';

// Who may call
export { AuthenticationError, bearerAuthorizer } from './authorize.ts';
export type { Authorize, Caller, TokenCheck } from './authorize.ts';

// Clients (the engine's ports over gRPC)
export { GrpcCatalog, GrpcEventStore, GrpcPayments, checkHealth } from './clients.ts';
export type { ClientTls, GrpcCatalogOptions, GrpcClientOptions, GrpcEventStoreOptions, GrpcPaymentsOptions, HealthProbeOptions, TokenSource } from './clients.ts';

// Wire definitions beyond the generated code
export { CatalogAdapterService, HealthService, ServingStatus } from './definitions.ts';

/**
 * QuickDash gateway: the public surface. The WebSocket edge for rider and
 * customer apps, its wire protocol and its authentication.
 */

// Server
export { loadUws } from './uws.ts';
export { Gateway, startGateway } from './server.ts';
export type { GatewayOptions, GatewayTuning, PostRoute } from './server.ts';

// Operations map and feed (/ops, /v1/ops)
export { DEFAULT_OPERATIONS_SETTINGS, OperationsFeed } from './ops.ts';
export type { OperationsFeedOptions, OperationsFeedSettings } from './ops.ts';

// DispatchService over gRPC, for backend services
export { startGrpcServer } from './grpc/server.ts';
export type { GrpcServer, GrpcServerOptions, GrpcTls } from './grpc/server.ts';
export { OrderFeed, DEFAULT_WATCH_BUFFER } from './grpc/order-feed.ts';
export type { FeedEntry, OrderFeedOptions } from './grpc/order-feed.ts';
export { DEFAULT_WATCH_MAX_LAG, RESUME_POSITION_KEY } from './grpc/watch-stream.ts';

// Authentication
export { authConfigFromEnv, canFollowOrder, developmentAuthConfig, signToken, verifyToken } from './auth.ts';
export type { AuthConfig, AuthFailure, Principal, Role } from './auth.ts';

// Protocol
export { CloseCodes, GatewayErrorCodes, Limits, MessageType, PROTOCOL_VERSION, decode, encode } from './protocol.ts';
export type { ClientMessage, Message, OpsCell, OpsCounters, OpsOrder, OpsRider, OpsSnapshotMessage, ServerMessage } from './protocol.ts';

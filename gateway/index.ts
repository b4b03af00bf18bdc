/**
 * QuickDash gateway: the public surface. The WebSocket edge for rider and
 * customer apps, its wire protocol and its authentication.
 */

// Server
export { Gateway, startGateway } from './server.ts';
export type { GatewayOptions, GatewayTuning, PostRoute } from './server.ts';

// Operations map and feed (/ops, /v1/ops)
export { DEFAULT_OPERATIONS_SETTINGS, OperationsFeed } from './ops.ts';
export type { OperationsFeedOptions, OperationsFeedSettings } from './ops.ts';

// Authentication
export { authConfigFromEnv, canFollowOrder, developmentAuthConfig, signToken, verifyToken } from './auth.ts';
export type { AuthConfig, AuthFailure, Principal, Role } from './auth.ts';

// Protocol
export { CloseCodes, GatewayErrorCodes, Limits, MessageType, PROTOCOL_VERSION, decode, encode } from './protocol.ts';
export type { ClientMessage, Message, OpsCell, OpsCounters, OpsOrder, OpsRider, OpsSnapshotMessage, ServerMessage } from './protocol.ts';

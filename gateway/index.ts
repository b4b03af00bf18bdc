/**
 * QuickDash gateway: the public surface. The WebSocket edge for rider and
 * customer apps, its wire protocol and its authentication.
 */

// Server
export { Gateway, startGateway } from './server.ts';
export type { GatewayOptions, GatewayTuning } from './server.ts';

// Authentication
export { authConfigFromEnv, canFollowOrder, developmentAuthConfig, signToken, verifyToken } from './auth.ts';
export type { AuthConfig, AuthFailure, Principal, Role } from './auth.ts';

// Protocol
export { CloseCodes, GatewayErrorCodes, Limits, MessageType, PROTOCOL_VERSION, decode, encode } from './protocol.ts';
export type { ClientMessage, Message, ServerMessage } from './protocol.ts';

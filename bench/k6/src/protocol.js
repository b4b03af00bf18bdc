// The gateway's wire protocol as the k6 scripts need it (docs/protocol.md).
//
// Codes are copied from gateway/protocol.ts rather than imported: that module
// pulls in the engine (xstate, h3-js, node:crypto), which neither fits in a
// small bundle nor runs in k6's JavaScript runtime. test/bench/k6.test.ts
// fails when these copies and gateway/protocol.ts disagree.
import { Packr } from 'msgpackr';

export const PROTOCOL_VERSION = 1;

export const MessageType = {
  // app -> gateway
  ping: 1,
  fix: 2,
  fixes: 3,
  online: 4,
  offline: 5,
  break: 6,
  accept: 7,
  decline: 8,
  arrived: 9,
  pickedUp: 10,
  delivered: 11,
  follow: 20,
  unfollow: 21,
  // gateway -> app
  hello: 64,
  ack: 65,
  error: 66,
  pong: 67,
  goAway: 68,
  offer: 70,
  offerGone: 71,
  riderState: 72,
  orderStatus: 80,
  riderPosition: 81,
  // gateway -> operations map (/v1/ops); no app receives it, listed so the table stays whole
  opsSnapshot: 96,
};

export const CloseCodes = {
  AUTH_FAILED: 4001,
  TOO_MANY_CONNECTIONS: 4002,
  RATE_LIMITED: 4003,
  PROTOCOL_VIOLATION: 4004,
  GOING_AWAY: 4005,
  SLOW_CONSUMER: 4006,
};

/** The gateway limits a load script has to stay within. */
export const Limits = {
  maxFixesPerFrame: 500,
  messagesPerSecond: 20,
  idleTimeoutMs: 60000,
  positionIntervalMs: 1000,
};

/**
 * What a development gateway accepts (developmentAuthConfig() in
 * gateway/auth.ts): a node started without QD_JWT_SECRET (`npm start`)
 * verifies HS256 tokens signed with this public secret, issuer and audience.
 */
export const DEV_AUTH = {
  issuer: 'quickdash',
  audience: 'quickdash-gateway',
  secret: 'quickdash-DEVELOPMENT-ONLY-jwt-secret-do-not-use-in-production',
};

// Plain msgpack maps, as the gateway reads and writes them.
const packr = new Packr({ useRecords: false });

/**
 * One frame as an ArrayBuffer of exactly its bytes. Undefined fields are left
 * out: msgpackr would write them as an extension the gateway refuses. The bytes
 * are copied because msgpackr reuses its output buffer for the next message,
 * while k6 hands an ArrayBuffer to its writer goroutine without copying it.
 */
export function encode(msg) {
  const clean = {};
  for (const key of Object.keys(msg)) if (msg[key] !== undefined) clean[key] = msg[key];
  const packed = packr.pack(clean);
  const out = new Uint8Array(packed.length);
  out.set(packed);
  return out.buffer;
}

/** The message in a binary frame (an ArrayBuffer), or null when it is not a msgpack map with a numeric `t`. */
export function decode(data) {
  if (typeof data === 'string') return null;
  let msg;
  try {
    msg = packr.unpack(new Uint8Array(data));
  } catch {
    return null;
  }
  return msg !== null && typeof msg === 'object' && typeof msg.t === 'number' ? msg : null;
}

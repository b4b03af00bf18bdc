/**
 * The wire format as the client needs it: message codes, the limits it
 * honours, and frame encoding/decoding.
 *
 * Why not gateway/protocol.ts's encode/decode at runtime: protocol.ts imports
 * DispatchError and ErrorCodes from engine/index.ts, which pulls in the whole
 * engine (worker threads, node:crypto, xstate, h3-js) and cannot be bundled
 * for a browser. So this module imports protocol.ts for types only (erased at
 * build time) and restates the few constants it needs with `satisfies`
 * against protocol.ts's own types: any drift in a code, limit or message
 * field is a compile error, and test/gateway/client.test.ts round-trips every
 * message through both codecs.
 */
import { Packr } from 'msgpackr';
import type {
  ClientMessage,
  CloseCodes as ProtocolCloseCodes,
  Limits as ProtocolLimits,
  MessageOf,
  MessageType as ProtocolMessageType,
  PROTOCOL_VERSION as ProtocolVersion,
  OpsSnapshotMessage,
  ServerMessage,
  ServerMessageName,
} from '../protocol.ts';

export const PROTOCOL_VERSION = 1 satisfies typeof ProtocolVersion;

export const MessageType = {
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
  // Sent on the operations socket (/v1/ops), never to apps; listed so the table stays exact.
  opsSnapshot: 96,
} as const satisfies typeof ProtocolMessageType;

/** The protocol limits the client itself enforces. */
export const Limits = {
  maxFixesPerFrame: 500,
  maxClientSeq: 4294967295,
  messagesPerSecond: 20,
  messageBurst: 60,
  idleTimeoutMs: 60000,
} as const satisfies Pick<
  typeof ProtocolLimits,
  'maxFixesPerFrame' | 'maxClientSeq' | 'messagesPerSecond' | 'messageBurst' | 'idleTimeoutMs'
>;

export const CloseCodes = {
  AUTH_FAILED: 4001,
  TOO_MANY_CONNECTIONS: 4002,
  RATE_LIMITED: 4003,
  PROTOCOL_VIOLATION: 4004,
  GOING_AWAY: 4005,
  SLOW_CONSUMER: 4006,
} as const satisfies typeof ProtocolCloseCodes;

// ---------------------------------------------------------------- Encoding

// Plain maps, never msgpackr records: the gateway's decoder accepts nothing else.
const packr = new Packr({ useRecords: false });

/**
 * Encodes one app message. Undefined fields are left out: msgpackr would
 * write them as an extension the gateway refuses.
 */
export function encodeFrame(msg: ClientMessage): Uint8Array {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(msg)) {
    if (v === undefined) continue;
    // The only nested map an app sends; rebuilt so stray keys never reach the strict decoder.
    out[k] = k === 'position' ? { lat: (v as { lat: number }).lat, lng: (v as { lng: number }).lng } : v;
  }
  return packr.pack(out);
}

// ---------------------------------------------------------------- Decoding

/** What the gateway sends on the app socket: everything but the operations map's frame. */
export type AppServerMessage = Exclude<ServerMessage, OpsSnapshotMessage>;
type AppServerMessageName = Exclude<ServerMessageName, 'opsSnapshot'>;

type Kind = 'number' | 'string' | 'boolean' | 'map' | 'array' | 'string|nil';
/** One entry per field of M (besides `t`), optional exactly where M says so: checked by the compiler. */
type Shape<M> = { [K in Exclude<keyof M, 't'>]-?: undefined extends M[K] ? `${Kind}?` : Kind };

/**
 * What the client checks in each gateway message: the JavaScript type of
 * every field it may read. Ranges are the gateway's business; a frame of the
 * wrong shape is refused rather than trusted.
 */
const SHAPES: { readonly [N in AppServerMessageName]: Shape<MessageOf<N>> } = {
  hello: { v: 'number', now: 'number', role: 'string', userId: 'string', session: 'string', resumed: 'boolean', lastS: 'number' },
  ack: { s: 'number', dup: 'boolean?', result: 'map?' },
  error: {
    s: 'number?',
    code: 'number',
    error: 'string',
    message: 'string',
    field: 'string?',
    state: 'string?',
    retryAfterMs: 'number?',
    dup: 'boolean?',
  },
  pong: { now: 'number', ts: 'number?' },
  goAway: { reason: 'string', reconnectAfterMs: 'number' },
  offer: { orderId: 'string', storeId: 'string', pickup: 'map', dropoff: 'map', expiresAt: 'number' },
  offerGone: { orderId: 'string', reason: 'string' },
  riderState: { status: 'string', orderIds: 'array', seq: 'number' },
  orderStatus: { orderId: 'string', seq: 'number', status: 'string', event: 'string', at: 'number', riderId: 'string|nil', eta: 'number?' },
  riderPosition: { orderId: 'string', lat: 'number', lng: 'number', ts: 'number' },
};

const nameByCode = new Map<number, AppServerMessageName>(
  (Object.keys(SHAPES) as AppServerMessageName[]).map((name) => [MessageType[name], name]),
);

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function fits(v: unknown, kind: Kind): boolean {
  switch (kind) {
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    case 'string':
      return typeof v === 'string';
    case 'boolean':
      return typeof v === 'boolean';
    case 'map':
      return isMap(v);
    case 'array':
      return Array.isArray(v);
    case 'string|nil':
      return v === null || typeof v === 'string';
  }
}

export type DecodedFrame =
  | { ok: true; msg: AppServerMessage }
  /** `unknown` marks a message type this client does not know: ignored, not an error. */
  | { ok: false; reason: string; unknown?: boolean };

/** Decodes one gateway frame. Never throws. */
export function decodeFrame(data: unknown): DecodedFrame {
  let bytes: Uint8Array;
  if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
  else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  else return { ok: false, reason: typeof data === 'string' ? 'text frame' : 'frame is not binary' };
  let raw: unknown;
  try {
    raw = packr.unpack(bytes);
  } catch (err) {
    return { ok: false, reason: `not msgpack: ${err instanceof Error ? err.message.slice(0, 80) : 'unreadable'}` };
  }
  if (!isMap(raw)) return { ok: false, reason: 'frame is not a map' };
  const t = raw.t;
  if (typeof t !== 'number' || !Number.isInteger(t)) return { ok: false, reason: 'frame has no integer t' };
  const name = nameByCode.get(t);
  if (!name) return { ok: false, reason: `unknown message type ${t}`, unknown: true };
  for (const [field, spec] of Object.entries(SHAPES[name]) as Array<[string, string]>) {
    const optional = spec.endsWith('?');
    const v = raw[field];
    // An optional field may be absent or nil (protocol: both mean absent).
    if (optional && (v === undefined || v === null)) {
      delete raw[field];
      continue;
    }
    if (!fits(v, (optional ? spec.slice(0, -1) : spec) as Kind)) return { ok: false, reason: `${name}.${field} must be ${spec}` };
  }
  return { ok: true, msg: raw as unknown as AppServerMessage };
}

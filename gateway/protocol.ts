/**
 * The binary WebSocket protocol between the rider and customer apps and the
 * gateway: the one place that names message types, their fields, the gateway's
 * own error codes, close codes and limits. docs/protocol.md describes the same
 * thing for app authors, and test/gateway/protocol.test.ts fails when the two
 * disagree.
 *
 * A frame is ONE msgpack map with a numeric `t` (message type, below 128 so it
 * is a one-byte positive fixint) and the message's fields. Frames are plain
 * maps (`useRecords: false`) so any msgpack decoder on a phone can read them.
 *
 * Every message is described once, as data (`schemas`): decode validates
 * against it, encode writes the fields it lists in its order, the docs test
 * reads it, and the compiler checks it against the TypeScript interfaces.
 */
import { Packr } from 'msgpackr';
import { DispatchError, ErrorCodes } from '../engine/index.ts';
import type { ErrorCode, LatLng, OrderStatus, RiderStatus } from '../engine/index.ts';
import type { Role } from './auth.ts';

// ---------------------------------------------------------------- Version, types, roles

/** Bumped on any change an existing app could not read; sent in `hello`. */
export const PROTOCOL_VERSION = 1;

/**
 * Message type codes. Client messages are below 64, gateway messages 64 and
 * up, so a code alone says which way a frame travels.
 */
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
  // gateway -> operations map (/v1/ops)
  opsSnapshot: 96,
} as const;

export type MessageName = keyof typeof MessageType;
export type MessageCode = (typeof MessageType)[MessageName];

/** Roles that may open the app socket; operations and services use gRPC. */
export type AppRole = Extract<Role, 'rider' | 'customer'>;
export const AppRoles = ['rider', 'customer'] as const satisfies readonly AppRole[];

// ---------------------------------------------------------------- Limits

/** Protocol limits the gateway enforces and apps must respect (docs/protocol.md "Limits"). */
export const Limits = {
  /** Largest frame decode accepts; 500 fixes as tuples take about 17 KiB. */
  maxFrameBytes: 32768,
  maxIdLength: 64,
  maxFixesPerFrame: 500,
  maxOrderIds: 16,
  maxOtpLength: 16,
  maxProofRefLength: 256,
  /** Longest error message text and other free text. */
  maxTextLength: 512,
  maxCapacity: 10,
  /** Largest client sequence number `s` (a msgpack uint32). */
  maxClientSeq: 4294967295,
  /** Sustained frames per second per connection (token bucket refill), pings and fixes batches count as one. */
  messagesPerSecond: 20,
  /** Token bucket size: a reconnecting app may replay this many frames at once. */
  messageBurst: 60,
  connectionsPerUser: 3,
  /** At most one riderPosition per followed order per interval. */
  positionIntervalMs: 1000,
  /** Outcomes remembered per session, for replays of an already answered `s`. */
  replayWindow: 256,
  /** How long a disconnected session (its last `s` and outcomes) is kept for resume. */
  sessionTtlMs: 300000,
  /** A connection silent this long is closed; apps ping when idle. */
  idleTimeoutMs: 60000,
  /** Malformed or refused frames tolerated on one connection before it is closed with PROTOCOL_VIOLATION. */
  malformedFramesBeforeClose: 10,
  /** Largest opsSnapshot frame (the whole city once a second); every other frame keeps maxFrameBytes. */
  maxOpsFrameBytes: 16777216,
} as const;

// ---------------------------------------------------------------- Errors and close codes

/**
 * Refusals that come from the gateway, not the engine. Engine refusals keep
 * their `QD_ERR_*` code and one-byte `ws` code from engine/errors.ts (1..63);
 * these start at 64 so the two never collide, and a field that fails
 * validation is the engine's own QD_ERR_INVALID_ARGUMENT (1). Codes are never
 * reused.
 */
export const GatewayErrorCodes = {
  QD_ERR_MALFORMED_FRAME: { ws: 64, message: 'frame is not one msgpack map with an integer t' },
  QD_ERR_UNKNOWN_MESSAGE_TYPE: { ws: 65, message: 'unknown message type' },
  QD_ERR_PAYLOAD_TOO_LARGE: { ws: 66, message: 'frame exceeds the size limit' },
  QD_ERR_RATE_LIMITED: { ws: 67, message: 'too many frames; retry after retryAfterMs' },
  QD_ERR_ROLE_NOT_ALLOWED: { ws: 68, message: 'this message is not allowed for your role' },
  QD_ERR_DUPLICATE_SEQUENCE: { ws: 69, message: 'command sequence already processed; outcome no longer held' },
  QD_ERR_UNAUTHENTICATED: { ws: 70, message: 'authentication missing or expired' },
} as const satisfies Record<string, { ws: number; message: string }>;

export type GatewayErrorCode = keyof typeof GatewayErrorCodes;
/** Every code an error frame may carry. */
export type WireErrorCode = ErrorCode | GatewayErrorCode;

/** WebSocket close codes (private-use range 4000-4999). */
export const CloseCodes = {
  AUTH_FAILED: 4001,
  TOO_MANY_CONNECTIONS: 4002,
  RATE_LIMITED: 4003,
  PROTOCOL_VIOLATION: 4004,
  GOING_AWAY: 4005,
  SLOW_CONSUMER: 4006,
} as const;
export type CloseCodeName = keyof typeof CloseCodes;

/** True for any engine or gateway error code. */
export function isWireErrorCode(code: unknown): code is WireErrorCode {
  return typeof code === 'string' && (Object.hasOwn(GatewayErrorCodes, code) || Object.hasOwn(ErrorCodes, code));
}

/** The one-byte code of an engine or gateway error code. */
export function wsCodeOf(code: WireErrorCode): number {
  return Object.hasOwn(GatewayErrorCodes, code) ? GatewayErrorCodes[code as GatewayErrorCode].ws : ErrorCodes[code as ErrorCode].ws;
}

const errorByWs = new Map<number, WireErrorCode>([
  ...Object.entries(ErrorCodes).map(([k, d]) => [d.ws, k as WireErrorCode] as const),
  ...Object.entries(GatewayErrorCodes).map(([k, d]) => [d.ws, k as WireErrorCode] as const),
]);

/** The `QD_ERR_*` code for a one-byte code, or undefined if none has it. */
export function errorCodeOfWs(ws: number): WireErrorCode | undefined {
  return errorByWs.get(ws);
}

// ---------------------------------------------------------------- Messages

/** One GPS fix in a `fixes` batch: a tuple, a third the size of a map. */
export type FixTuple = [lat: number, lng: number, ts: number, seq: number];
export type ArrivalPlace = 'pickup' | 'dropoff';
export type GoAwayReason = 'shutdown' | 'drain' | 'overload';
/** expired: not answered in time; cancelled: the order was cancelled; void: the engine withdrew it (the order or rider changed). */
export type OfferGoneReason = 'expired' | 'cancelled' | 'void';

// app -> gateway. Every one but ping is a command and carries `s`.
export interface PingMessage {
  t: typeof MessageType.ping;
  /** Client clock, echoed in pong for round-trip time. */
  ts?: number;
}
export interface FixMessage {
  t: typeof MessageType.fix;
  s: number;
  lat: number;
  lng: number;
  ts: number;
  seq: number;
}
export interface FixesMessage {
  t: typeof MessageType.fixes;
  s: number;
  fixes: FixTuple[];
}
export interface OnlineMessage {
  t: typeof MessageType.online;
  s: number;
  capacity?: number;
  position?: LatLng;
  shiftEndsAt?: number;
}
export interface OfflineMessage {
  t: typeof MessageType.offline;
  s: number;
}
export interface BreakMessage {
  t: typeof MessageType.break;
  s: number;
  on: boolean;
}
export interface AcceptMessage {
  t: typeof MessageType.accept;
  s: number;
  orderId: string;
}
export interface DeclineMessage {
  t: typeof MessageType.decline;
  s: number;
  orderId: string;
}
export interface ArrivedMessage {
  t: typeof MessageType.arrived;
  s: number;
  orderId: string;
  where: ArrivalPlace;
}
export interface PickedUpMessage {
  t: typeof MessageType.pickedUp;
  s: number;
  orderId: string;
}
export interface DeliveredMessage {
  t: typeof MessageType.delivered;
  s: number;
  orderId: string;
  otp?: string;
  proofRef?: string;
}
export interface FollowMessage {
  t: typeof MessageType.follow;
  s: number;
  orderId: string;
  /** Last status seq the app has seen; every later event is sent. Absent: the whole history. */
  afterSeq?: number;
}
export interface UnfollowMessage {
  t: typeof MessageType.unfollow;
  s: number;
  orderId: string;
}

// gateway -> app
export interface HelloMessage {
  t: typeof MessageType.hello;
  v: number;
  /** Server clock, epoch ms. */
  now: number;
  role: AppRole;
  userId: string;
  /** Session id to pass as `session` when reconnecting. */
  session: string;
  /** True when the session named on connect was still held. */
  resumed: boolean;
  /** Highest `s` processed in this session (0 for a new one). */
  lastS: number;
}
/** What a command changed, so the app need not wait for the next state message. */
export interface AckResult {
  orderId?: string;
  status?: OrderStatus | RiderStatus;
  seq?: number;
  accepted?: number;
  stale?: number;
  rejected?: number;
}
export interface AckMessage {
  t: typeof MessageType.ack;
  s: number;
  /** Set when this answers a replayed `s` from memory; nothing was applied again. */
  dup?: boolean;
  result?: AckResult;
}
export interface ErrorMessage {
  t: typeof MessageType.error;
  /** The command that caused it; absent for connection-level errors. */
  s?: number;
  /** One-byte code (engine codes 1..63, gateway codes 64+). */
  code: number;
  /** The `QD_ERR_*` name of `code`. */
  error: string;
  message: string;
  field?: string;
  /** Current state of the order or rider, when the command did not fit it. */
  state?: string;
  retryAfterMs?: number;
  dup?: boolean;
}
export interface PongMessage {
  t: typeof MessageType.pong;
  now: number;
  ts?: number;
}
export interface GoAwayMessage {
  t: typeof MessageType.goAway;
  reason: GoAwayReason;
  reconnectAfterMs: number;
}
export interface OfferMessage {
  t: typeof MessageType.offer;
  orderId: string;
  storeId: string;
  pickup: LatLng;
  dropoff: LatLng;
  expiresAt: number;
}
export interface OfferGoneMessage {
  t: typeof MessageType.offerGone;
  orderId: string;
  reason: OfferGoneReason;
}
export interface RiderStateMessage {
  t: typeof MessageType.riderState;
  status: RiderStatus;
  orderIds: string[];
  seq: number;
}
export interface OrderStatusMessage {
  t: typeof MessageType.orderStatus;
  orderId: string;
  seq: number;
  status: OrderStatus;
  /** The engine event that caused it: CREATED, OFFER, ACCEPT, ... */
  event: string;
  at: number;
  riderId: string | null;
  /** Estimated delivery time, epoch ms. */
  eta?: number;
}
export interface RiderPositionMessage {
  t: typeof MessageType.riderPosition;
  orderId: string;
  lat: number;
  lng: number;
  ts: number;
}

// gateway -> operations map

/** A rider on the map: [riderId, status, lat, lng]. */
export type OpsRider = [riderId: string, status: RiderStatus, lat: number, lng: number];
/** A live order: [orderId, status, pickupLat, pickupLng, dropoffLat, dropoffLng, riderId or nil]. */
export type OpsOrder = [
  orderId: string,
  status: OrderStatus,
  pickupLat: number,
  pickupLng: number,
  dropoffLat: number,
  dropoffLng: number,
  riderId: string | null,
];
/** An H3 cell with orders waiting for a rider (demand) or available riders (supply): [cell, demand, supply]. */
export type OpsCell = [cell: string, demand: number, supply: number];
/** Live figures for the operations panel. */
export interface OpsCounters {
  /** App sockets open on this gateway (operations sockets not included). */
  connections: number;
  /** Fixes the engine accepted per second since the previous frame. */
  fixesPerSecond: number;
  ordersLive: number;
  ridersOnline: number;
  /** Totals since the engine started. */
  offersMade: number;
  matcherRuns: number;
  /** Dispatch latency (searching to accepted) over the latest samples; nil before the first. */
  dispatchP50Ms: number | null;
  dispatchP95Ms: number | null;
  /** Worst event-loop delay of the gateway thread since the previous frame. */
  eventLoopLagMs: number;
}
export interface OpsSnapshotMessage {
  t: typeof MessageType.opsSnapshot;
  /** Server clock. */
  now: number;
  /** H3 resolution of `cells`. */
  res: number;
  riders: OpsRider[];
  orders: OpsOrder[];
  cells: OpsCell[];
  counters: OpsCounters;
}

export type ClientMessage =
  | PingMessage
  | FixMessage
  | FixesMessage
  | OnlineMessage
  | OfflineMessage
  | BreakMessage
  | AcceptMessage
  | DeclineMessage
  | ArrivedMessage
  | PickedUpMessage
  | DeliveredMessage
  | FollowMessage
  | UnfollowMessage;
/** Client messages that carry `s` and get exactly one ack or error. */
export type ClientCommand = Exclude<ClientMessage, PingMessage>;
export type ServerMessage =
  | HelloMessage
  | AckMessage
  | ErrorMessage
  | PongMessage
  | GoAwayMessage
  | OfferMessage
  | OfferGoneMessage
  | RiderStateMessage
  | OrderStatusMessage
  | RiderPositionMessage
  | OpsSnapshotMessage;
export type Message = ClientMessage | ServerMessage;

export type MessageOf<N extends MessageName> = Extract<Message, { t: (typeof MessageType)[N] }>;
type NameOfCode<C> = { [N in MessageName]: (typeof MessageType)[N] extends C ? N : never }[MessageName];
export type ClientMessageName = NameOfCode<ClientMessage['t']>;
export type ServerMessageName = NameOfCode<ServerMessage['t']>;

/** Which roles may send each client message; the gateway refuses others with QD_ERR_ROLE_NOT_ALLOWED. */
export const clientMessageRoles: { readonly [N in ClientMessageName]: readonly AppRole[] } = {
  ping: ['rider', 'customer'],
  fix: ['rider'],
  fixes: ['rider'],
  online: ['rider'],
  offline: ['rider'],
  break: ['rider'],
  accept: ['rider'],
  decline: ['rider'],
  arrived: ['rider'],
  pickedUp: ['rider'],
  delivered: ['rider'],
  follow: ['customer'],
  unfollow: ['customer'],
};

// ---------------------------------------------------------------- Field schemas

const ORDER_STATUSES = [
  'awaitingPayment',
  'confirmed',
  'searching',
  'offered',
  'assigned',
  'atPickup',
  'pickedUp',
  'atDropoff',
  'delivered',
  'cancelled',
  'escalated',
] as const satisfies readonly OrderStatus[];
const RIDER_STATUSES = [
  'offline',
  'available',
  'offered',
  'toPickup',
  'atPickup',
  'toDropoff',
  'atDropoff',
  'onBreak',
] as const satisfies readonly RiderStatus[];
// Compile-time: the lists above name every engine status, so a new status cannot be refused on the wire by omission.
const orderStatusesComplete: [Exclude<OrderStatus, (typeof ORDER_STATUSES)[number]>] extends [never] ? true : false = true;
const riderStatusesComplete: [Exclude<RiderStatus, (typeof RIDER_STATUSES)[number]>] extends [never] ? true : false = true;
void orderStatusesComplete;
void riderStatusesComplete;

/** Latest epoch ms a JavaScript Date can hold. */
const MAX_TIME = 8_640_000_000_000_000;

/** A refusal found while validating; thrown inside decode only and always caught there. */
class Fault {
  constructor(
    readonly code: WireErrorCode,
    readonly message: string,
    readonly field?: string,
  ) {}
}

function bad(field: string, reason: string): never {
  // Same wording as the engine's invalidArgument ('invalid {field}: {reason}').
  throw new Fault('QD_ERR_INVALID_ARGUMENT', `invalid ${field}: ${reason}`, field);
}

interface Field<T> {
  /** Shown in docs/protocol.md's field tables; the docs test compares it. */
  readonly type: string;
  readonly optional: boolean;
  /** Returns the value to keep, or throws a Fault naming `path`. `strict` refuses unknown keys in nested maps. */
  readonly check: (v: unknown, path: string, strict: boolean) => T;
  /** Rebuilds a nested value for encoding with only the keys the protocol lists (no undefined, no extras). */
  readonly wire?: (v: T) => unknown;
}
type Check<T> = Omit<Field<T>, 'optional'>;

const req = <T>(c: Check<T>): Field<T> & { optional: false } => ({ ...c, optional: false });
const opt = <T>(c: Check<T>): Field<T> & { optional: true } => ({ ...c, optional: true });

function isPlainMap(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Own property only: a decoded map inherits from Object.prototype, and `toString` is not a field. */
function own(obj: Record<string, unknown>, key: string): unknown {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

function str(min: number, max: number): Check<string> {
  return {
    type: `string(${min}..${max})`,
    check(v, path) {
      if (typeof v !== 'string') bad(path, 'must be a string');
      if (v.length < min || v.length > max) bad(path, `length must be ${min}..${max}`);
      return v;
    },
  };
}

/** A number field with a test that builds nothing, for hot loops that name the field only when it fails. */
interface NumberCheck extends Check<number> {
  accepts(v: unknown): v is number;
}

function int(min: number, max: number, type = `int(${min}..${max})`): NumberCheck {
  const accepts = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= min && (v as number) <= max;
  return {
    type,
    accepts,
    check(v, path) {
      if (accepts(v)) return v;
      if (typeof v !== 'number' || !Number.isInteger(v)) bad(path, 'must be an integer');
      return bad(path, `must be in [${min}, ${max}]`);
    },
  };
}

function float(min: number, max: number): NumberCheck {
  // NaN and the infinities fail the range test.
  const accepts = (v: unknown): v is number => typeof v === 'number' && v >= min && v <= max;
  return {
    type: `float(${min}..${max})`,
    accepts,
    check(v, path) {
      if (accepts(v)) return v;
      if (typeof v !== 'number' || !Number.isFinite(v)) bad(path, 'must be a finite number');
      return bad(path, `must be in [${min}, ${max}]`);
    },
  };
}

const bool: Check<boolean> = {
  type: 'bool',
  check(v, path) {
    if (typeof v !== 'boolean') bad(path, 'must be a boolean');
    return v;
  },
};

function oneOf<const V extends string>(values: readonly V[], type = values.join('/')): Check<V> {
  return {
    type,
    check(v, path) {
      if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) bad(path, `must be one of ${values.join(', ')}`);
      return v as V;
    },
  };
}

function orNil<T>(c: Check<T>): Check<T | null> {
  return { type: `${c.type} or nil`, check: (v, path, strict) => (v === null ? null : c.check(v, path, strict)) };
}

const id = str(1, Limits.maxIdLength);
const lat = float(-90, 90);
const lng = float(-180, 180);
const time = int(0, MAX_TIME, 'epoch ms');
const count = int(0, Number.MAX_SAFE_INTEGER, 'uint');
const clientSeq = int(1, Limits.maxClientSeq);

type Entries = ReadonlyArray<readonly [string, Field<unknown>]>;

/**
 * Validates a map against its fields and returns a fresh object holding only
 * them. nil for an optional field means absent: many phone encoders write
 * nil for unset optionals.
 */
function readMap(obj: Record<string, unknown>, entries: Entries, prefix: string, strict: boolean, skip?: string): Record<string, unknown> {
  if (strict) {
    for (const k of Object.keys(obj)) {
      if (k !== skip && !entries.some(([name]) => name === k)) bad(prefix + k, 'unknown field');
    }
  }
  const out: Record<string, unknown> = {};
  for (const [name, field] of entries) {
    const v = own(obj, name);
    const path = prefix + name;
    if (v === undefined || (v === null && field.optional)) {
      if (!field.optional) bad(path, 'is required');
      continue;
    }
    out[name] = field.check(v, path, strict);
  }
  return out;
}

/** Fields of a nested map, encoded with only the keys listed. */
function nested<T extends object>(type: string, fields: { [K in keyof T]-?: Field<Exclude<T[K], undefined>> }): Check<T> {
  const entries = Object.entries(fields) as unknown as Entries;
  return {
    type,
    check(v, path, strict) {
      if (!isPlainMap(v)) bad(path, 'must be a map');
      return readMap(v, entries, `${path}.`, strict) as T;
    },
    wire(v) {
      const out: Record<string, unknown> = {};
      for (const [name] of entries) {
        const x = (v as Record<string, unknown>)[name];
        if (x !== undefined) out[name] = x;
      }
      return out;
    },
  };
}

const latLng = nested<LatLng>('{lat, lng}', { lat: req(lat), lng: req(lng) });

const ackResult = nested<AckResult>('AckResult', {
  orderId: opt(id),
  status: opt(oneOf([...new Set([...ORDER_STATUSES, ...RIDER_STATUSES])], 'OrderStatus/RiderStatus')),
  seq: opt(count),
  accepted: opt(count),
  stale: opt(count),
  rejected: opt(count),
});

const FIX_PARTS = ['lat', 'lng', 'ts', 'seq'] as const;
const fixParts = [lat, lng, time, count] as const;

const fixTuples: Check<FixTuple[]> = {
  type: `[lat, lng, ts, seq][] (1..${Limits.maxFixesPerFrame})`,
  check(v, path, strict) {
    if (!Array.isArray(v)) bad(path, 'must be an array');
    if (v.length < 1 || v.length > Limits.maxFixesPerFrame) bad(path, `must hold 1..${Limits.maxFixesPerFrame} fixes`);
    // Up to 2,000 numbers a frame: each is tested without building its field name, which is made only to
    // name a refusal; the decoded arrays, fresh from the unpacker and holding only checked numbers, are kept.
    for (let i = 0; i < v.length; i++) {
      const f: unknown = v[i];
      if (!Array.isArray(f) || f.length !== 4) bad(`${path}[${i}]`, 'must be [lat, lng, ts, seq]');
      for (let j = 0; j < 4; j++) if (!fixParts[j].accepts(f[j])) fixParts[j].check(f[j], `${path}[${i}].${FIX_PARTS[j]}`, strict);
    }
    return v as FixTuple[];
  },
};

/** Arrays of fixed-length tuples, each part checked (the operations frame's rows). */
function tuples<T extends unknown[]>(type: string, names: readonly string[], parts: ReadonlyArray<Pick<Check<unknown>, 'check'>>): Check<T[]> {
  return {
    type,
    check(v, path, strict) {
      if (!Array.isArray(v)) bad(path, 'must be an array');
      const out = new Array<T>(v.length);
      for (let i = 0; i < v.length; i++) {
        const row: unknown = v[i];
        if (!Array.isArray(row) || row.length !== parts.length) bad(`${path}[${i}]`, `must be [${names.join(', ')}]`);
        out[i] = parts.map((c, j) => c.check(row[j], `${path}[${i}].${names[j]}`, strict)) as T;
      }
      return out;
    },
  };
}

const h3Cell: Check<string> = {
  type: 'H3 cell',
  check(v, path) {
    if (typeof v !== 'string' || !/^[0-9a-f]{15}$/.test(v)) bad(path, 'must be an H3 cell (15 hex digits)');
    return v;
  },
};

const nonNegative: Check<number> = {
  type: 'float >= 0',
  check(v, path) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) bad(path, 'must be a finite number >= 0');
    return v;
  },
};

const opsCounters = nested<OpsCounters>('OpsCounters', {
  connections: req(count),
  fixesPerSecond: req(nonNegative),
  ordersLive: req(count),
  ridersOnline: req(count),
  offersMade: req(count),
  matcherRuns: req(count),
  dispatchP50Ms: req(orNil(nonNegative)),
  dispatchP95Ms: req(orNil(nonNegative)),
  eventLoopLagMs: req(nonNegative),
});

function idList(max: number): Check<string[]> {
  return {
    type: `string[] (0..${max})`,
    check(v, path, strict) {
      if (!Array.isArray(v)) bad(path, 'must be an array');
      if (v.length > max) bad(path, `must hold at most ${max} ids`);
      return v.map((x, i) => id.check(x, `${path}[${i}]`, strict));
    },
  };
}

/** Requires one field spec per interface field (minus `t`), optional exactly where the interface says so. */
type FieldsOf<M> = {
  [K in Exclude<keyof M, 't'>]-?: undefined extends M[K] ? Field<Exclude<M[K], undefined>> & { optional: true } : Field<M[K]> & { optional: false };
};

const S = req(clientSeq);
const ORDER = req(id);

/** Every message's fields, in wire order. */
const schemas: { readonly [N in MessageName]: FieldsOf<MessageOf<N>> } = {
  ping: { ts: opt(time) },
  fix: { s: S, lat: req(lat), lng: req(lng), ts: req(time), seq: req(count) },
  fixes: { s: S, fixes: req(fixTuples) },
  online: { s: S, capacity: opt(int(1, Limits.maxCapacity)), position: opt(latLng), shiftEndsAt: opt(time) },
  offline: { s: S },
  break: { s: S, on: req(bool) },
  accept: { s: S, orderId: ORDER },
  decline: { s: S, orderId: ORDER },
  arrived: { s: S, orderId: ORDER, where: req(oneOf(['pickup', 'dropoff'] as const)) },
  pickedUp: { s: S, orderId: ORDER },
  delivered: { s: S, orderId: ORDER, otp: opt(str(1, Limits.maxOtpLength)), proofRef: opt(str(1, Limits.maxProofRefLength)) },
  follow: { s: S, orderId: ORDER, afterSeq: opt(count) },
  unfollow: { s: S, orderId: ORDER },

  hello: {
    v: req(int(1, 127)),
    now: req(time),
    role: req(oneOf(AppRoles)),
    userId: req(id),
    session: req(id),
    resumed: req(bool),
    lastS: req(int(0, Limits.maxClientSeq)),
  },
  ack: { s: S, dup: opt(bool), result: opt(ackResult) },
  error: {
    s: opt(clientSeq),
    code: req(int(1, 127)),
    error: req(id),
    message: req(str(0, Limits.maxTextLength)),
    field: opt(id),
    state: opt(id),
    retryAfterMs: opt(count),
    dup: opt(bool),
  },
  pong: { now: req(time), ts: opt(time) },
  goAway: { reason: req(oneOf(['shutdown', 'drain', 'overload'] as const)), reconnectAfterMs: req(count) },
  offer: { orderId: ORDER, storeId: req(id), pickup: req(latLng), dropoff: req(latLng), expiresAt: req(time) },
  offerGone: { orderId: ORDER, reason: req(oneOf(['expired', 'cancelled', 'void'] as const)) },
  riderState: { status: req(oneOf(RIDER_STATUSES, 'RiderStatus')), orderIds: req(idList(Limits.maxOrderIds)), seq: req(count) },
  orderStatus: {
    orderId: ORDER,
    seq: req(count),
    status: req(oneOf(ORDER_STATUSES, 'OrderStatus')),
    event: req(id),
    at: req(time),
    riderId: req(orNil(id)),
    eta: opt(time),
  },
  riderPosition: { orderId: ORDER, lat: req(lat), lng: req(lng), ts: req(time) },
  opsSnapshot: {
    now: req(time),
    res: req(int(0, 15)),
    riders: req(tuples<OpsRider>('[riderId, RiderStatus, lat, lng][]', ['riderId', 'status', 'lat', 'lng'], [id, oneOf(RIDER_STATUSES), lat, lng])),
    orders: req(
      tuples<OpsOrder>(
        '[orderId, OrderStatus, pickupLat, pickupLng, dropoffLat, dropoffLng, riderId or nil][]',
        ['orderId', 'status', 'pickupLat', 'pickupLng', 'dropoffLat', 'dropoffLng', 'riderId'],
        [id, oneOf(ORDER_STATUSES), lat, lng, lat, lng, orNil(id)],
      ),
    ),
    cells: req(tuples<OpsCell>('[cell, demand, supply][]', ['cell', 'demand', 'supply'], [h3Cell, count, count])),
    counters: req(opsCounters),
  },
};

interface Spec {
  name: MessageName;
  client: boolean;
  command: boolean;
  entries: Entries;
}

const specByCode = new Map<number, Spec>();
for (const name of Object.keys(MessageType) as MessageName[]) {
  const client = Object.hasOwn(clientMessageRoles, name);
  specByCode.set(MessageType[name], {
    name,
    client,
    command: client && name !== 'ping',
    entries: Object.entries(schemas[name]) as unknown as Entries,
  });
}

/** The name of a message type code, or undefined. */
export function messageName(code: number): MessageName | undefined {
  return specByCode.get(code)?.name;
}

/** True for messages apps send (the ones in clientMessageRoles). */
export function isClientMessageName(name: MessageName): name is ClientMessageName {
  return specByCode.get(MessageType[name])!.client;
}

/** Whether `role` may send this client message. */
export function roleMaySend(role: Role, msg: ClientMessage | FixFrame | ClientMessageName): boolean {
  // Defensive for untyped callers: a gateway message or unknown type is allowed to no one.
  const name = typeof msg === 'string' ? msg : specByCode.get(msg.t)?.name;
  if (name === undefined || !Object.hasOwn(clientMessageRoles, name)) return false;
  return (clientMessageRoles[name as ClientMessageName] as readonly Role[]).includes(role);
}

/** A message's fields as docs/protocol.md lists them (name, type, optional), `t` excluded. */
export function messageFields(name: MessageName): Array<{ name: string; type: string; optional: boolean }> {
  return specByCode.get(MessageType[name])!.entries.map(([n, f]) => ({ name: n, type: f.type, optional: f.optional }));
}

// ---------------------------------------------------------------- Encode / decode

// Plain maps, never msgpackr records, so any msgpack decoder can read our frames.
// int64AsType 'auto': other msgpack libraries write epoch-ms timestamps as 64-bit integers;
// they must decode as numbers (BigInt only beyond 2^53, which the validators then refuse).
const packr = new Packr({ useRecords: false, int64AsType: 'auto' as 'number' /* the runtime knows 'auto'; its types lag */ });

/**
 * Encodes one message as a msgpack map: `t` first, then the schema's fields
 * in order; undefined fields are left out (msgpackr would otherwise write an
 * extension only msgpackr can read). It trusts its input: the gateway builds
 * these from engine views, and tests decode what it sends.
 * @throws TypeError for a `t` that is no message type (a programming error).
 */
export function encode(msg: Message): Uint8Array {
  if (msg.t === MessageType.ack && msg.dup === undefined && isFixResult(msg.result)) {
    return encodeFixAck(msg.s, msg.result.accepted, msg.result.stale, msg.result.rejected);
  }
  const spec = specByCode.get(msg.t);
  if (!spec) throw new TypeError(`unknown message type ${String((msg as { t: unknown }).t)}`);
  const src = msg as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = { t: msg.t };
  for (const [name, field] of spec.entries) {
    const v = src[name];
    if (v !== undefined) out[name] = field.wire ? field.wire(v) : v;
  }
  return packr.pack(out);
}

/** The result of a fix ack: exactly accepted, stale and rejected, each a count of one frame's fixes. */
function isFixResult(r: AckResult | undefined): r is { accepted: number; stale: number; rejected: number } {
  return (
    r !== undefined &&
    r.orderId === undefined &&
    r.status === undefined &&
    r.seq === undefined &&
    isUint32(r.accepted) &&
    isUint32(r.stale) &&
    isUint32(r.rejected)
  );
}

const isUint32 = (v: unknown): v is number => typeof v === 'number' && v >>> 0 === v;

/** msgpack's shortest form of a uint32, as msgpackr writes it. */
const uintBytes = (v: number) => (v < 0x80 ? 1 : v < 0x100 ? 2 : v < 0x10000 ? 3 : 5);

function putUint(out: Uint8Array, at: number, v: number): number {
  if (v < 0x80) {
    out[at] = v;
    return at + 1;
  }
  if (v < 0x100) {
    out[at] = 0xcc;
    out[at + 1] = v;
    return at + 2;
  }
  if (v < 0x10000) {
    out[at] = 0xcd;
    out[at + 1] = v >>> 8;
    out[at + 2] = v & 0xff;
    return at + 3;
  }
  out[at] = 0xce;
  out[at + 1] = v >>> 24;
  out[at + 2] = (v >>> 16) & 0xff;
  out[at + 3] = (v >>> 8) & 0xff;
  out[at + 4] = v & 0xff;
  return at + 5;
}

const keyBytes = (...keys: string[]) => keys.flatMap((k) => [0xa0 | k.length, ...[...k].map((ch) => ch.charCodeAt(0))]);
// The map {t: ack, s, result: {accepted, stale, rejected}} around its four numbers, as encode's general path
// writes it (msgpackr writes every map as a map16).
const MAP16_OF_3 = [0xde, 0x00, 0x03];
const FIX_ACK_HEAD = Uint8Array.from([...MAP16_OF_3, ...keyBytes('t'), MessageType.ack, ...keyBytes('s')]);
const FIX_ACK_ACCEPTED = Uint8Array.from([...keyBytes('result'), ...MAP16_OF_3, ...keyBytes('accepted')]);
const FIX_ACK_STALE = Uint8Array.from(keyBytes('stale'));
const FIX_ACK_REJECTED = Uint8Array.from(keyBytes('rejected'));

/**
 * A fix ack written from a template: nearly every frame the gateway sends is
 * one, and packing it as a map costs more than the rest of its way out. The
 * bytes are the general path's (test/gateway/protocol.test.ts compares).
 */
export function encodeFixAck(s: number, accepted: number, stale: number, rejected: number): Uint8Array {
  const out = new Uint8Array(
    FIX_ACK_HEAD.length + FIX_ACK_ACCEPTED.length + FIX_ACK_STALE.length + FIX_ACK_REJECTED.length + uintBytes(s) + uintBytes(accepted) + uintBytes(stale) + uintBytes(rejected),
  );
  out.set(FIX_ACK_HEAD);
  let at = putUint(out, FIX_ACK_HEAD.length, s);
  out.set(FIX_ACK_ACCEPTED, at);
  at = putUint(out, at + FIX_ACK_ACCEPTED.length, accepted);
  out.set(FIX_ACK_STALE, at);
  at = putUint(out, at + FIX_ACK_STALE.length, stale);
  out.set(FIX_ACK_REJECTED, at);
  putUint(out, at + FIX_ACK_REJECTED.length, rejected);
  return out;
}

export interface DecodeFailure {
  ok: false;
  code: WireErrorCode;
  message: string;
  /** The field at fault (`fixes[3].lat`, `position.lng`, `t`). */
  field?: string;
  /** The command's `s` when it could be read, so the error frame can name the command. */
  s?: number;
  /** The message type when it could be read. */
  t?: number;
}
export type DecodeResult<M extends Message = Message> = { ok: true; msg: M } | DecodeFailure;
/** Who sent the frame: the gateway decodes with 'client' and refuses gateway-only types. */
export type Sender = 'client' | 'server';

function failure(code: WireErrorCode, message: string, field?: string, s?: number, t?: number): DecodeFailure {
  const f: DecodeFailure = { ok: false, code, message };
  if (field !== undefined) f.field = field;
  if (s !== undefined) f.s = s;
  if (t !== undefined) f.t = t;
  return f;
}

/** fixmap, map16, map32: the only first bytes a frame may have. */
function isMapHeader(b: number): boolean {
  return (b >= 0x80 && b <= 0x8f) || b === 0xde || b === 0xdf;
}

/**
 * Decodes and validates one frame. Never throws, whatever the bytes: it
 * returns the message, or a failure with the error code, a message and the
 * field at fault. Client messages are strict (an unknown field is refused);
 * gateway messages drop unknown fields, so a gateway may add optional fields
 * without breaking apps on the same protocol version.
 */
export function decode(bytes: ArrayBuffer | Uint8Array): DecodeResult;
export function decode(bytes: ArrayBuffer | Uint8Array, from: 'client'): DecodeResult<ClientMessage>;
export function decode(bytes: ArrayBuffer | Uint8Array, from: 'server'): DecodeResult<ServerMessage>;
export function decode(bytes: ArrayBuffer | Uint8Array, from?: Sender): DecodeResult {
  let view: Uint8Array;
  if (bytes instanceof Uint8Array) view = bytes;
  else if (bytes instanceof ArrayBuffer) view = new Uint8Array(bytes);
  else return failure('QD_ERR_MALFORMED_FRAME', 'frame must be binary');
  if (view.byteLength === 0) return failure('QD_ERR_MALFORMED_FRAME', 'empty frame');
  // Checked before decoding so a large frame costs nothing to refuse. Only a gateway's operations frame may be larger.
  const limit = from === 'server' ? Limits.maxOpsFrameBytes : Limits.maxFrameBytes;
  if (view.byteLength > limit) {
    return failure('QD_ERR_PAYLOAD_TOO_LARGE', `frame of ${view.byteLength} bytes exceeds ${limit}`);
  }
  if (!isMapHeader(view[0])) return failure('QD_ERR_MALFORMED_FRAME', 'frame is not a msgpack map');
  let raw: unknown;
  try {
    raw = packr.unpack(view);
  } catch (err) {
    // msgpackr's text can quote the data; keep it short.
    const why = err instanceof Error ? err.message : String(err);
    return failure('QD_ERR_MALFORMED_FRAME', `not one msgpack map: ${why.slice(0, 80)}`);
  }
  if (!isPlainMap(raw)) return failure('QD_ERR_MALFORMED_FRAME', 'frame is not a msgpack map');

  const t = own(raw, 't');
  if (t === undefined) return failure('QD_ERR_MALFORMED_FRAME', 'missing message type t', 't');
  if (typeof t !== 'number' || !Number.isInteger(t)) return failure('QD_ERR_MALFORMED_FRAME', 'message type t must be an integer', 't');
  const spec = specByCode.get(t);
  if (!spec) return failure('QD_ERR_UNKNOWN_MESSAGE_TYPE', `unknown message type ${t}`, 't', undefined, t);
  if ((from === 'client' && !spec.client) || (from === 'server' && spec.client)) {
    return failure('QD_ERR_UNKNOWN_MESSAGE_TYPE', `${spec.name} (${t}) is not sent by a ${from}`, 't', undefined, t);
  }
  if (view.byteLength > Limits.maxFrameBytes && spec.name !== 'opsSnapshot') {
    return failure('QD_ERR_PAYLOAD_TOO_LARGE', `frame of ${view.byteLength} bytes exceeds ${Limits.maxFrameBytes}`, undefined, undefined, t);
  }
  // Read s before the other fields, so a refusal can still be matched to its command.
  const sv = own(raw, 's');
  const s = typeof sv === 'number' && Number.isInteger(sv) && sv >= 1 && sv <= Limits.maxClientSeq ? sv : undefined;
  try {
    const fields = readMap(raw, spec.entries, '', spec.client, 't');
    return { ok: true, msg: { t, ...fields } as unknown as Message };
  } catch (err) {
    if (err instanceof Fault) return failure(err.code, err.message, err.field, s, t);
    // A bug in a check, not bad input: still an answer, never a throw.
    return failure('QD_ERR_MALFORMED_FRAME', `could not validate: ${err instanceof Error ? err.message : String(err)}`, undefined, s, t);
  }
}

/** A `fix` or `fixes` frame's fixes packed for the engine: [lat, lng, ts, seq] × n. */
export function packFixes(msg: FixMessage | FixesMessage): Float64Array {
  if (msg.t === MessageType.fix) return Float64Array.of(msg.lat, msg.lng, msg.ts, msg.seq);
  const packed = new Float64Array(msg.fixes.length * 4);
  for (let i = 0; i < msg.fixes.length; i++) packed.set(msg.fixes[i], i * 4);
  return packed;
}

/** A `fix` or `fixes` frame read straight from its bytes. */
export interface FixFrame {
  t: typeof MessageType.fix | typeof MessageType.fixes;
  s: number;
  /** [lat, lng, ts, seq] × n, as packFixes gives them; held only until the next readFixFrame (copy it to keep it). */
  fixes: Float64Array;
}

/** Where readFixFrame puts a frame's fixes: every frame's are handed on before the next is read, so one buffer serves all. */
const fixScratch = new Float64Array(Limits.maxFixesPerFrame * 4);

// The cursor of readFixFrame: one frame is read at a time, to the end, without yielding.
let frameBytes = new Uint8Array(0);
let frameView = new DataView(frameBytes.buffer);
let at = 0;

/** The number at the cursor, in any msgpack number encoding decode reads the same way; NaN for anything else. */
function readNumber(): number {
  const b = frameBytes[at++];
  if (b === undefined) return NaN;
  if (b < 0x80) return b;
  if (b >= 0xe0) return b - 0x100;
  if (b < 0xca || b > 0xd3) return NaN;
  const p = at;
  at += NUMBER_WIDTH[b - 0xca]!;
  if (at > frameBytes.length) return NaN;
  const v = frameView;
  switch (b) {
    case 0xca:
      return v.getFloat32(p);
    case 0xcb:
      return v.getFloat64(p);
    case 0xcc:
      return v.getUint8(p);
    case 0xcd:
      return v.getUint16(p);
    case 0xce:
      return v.getUint32(p);
    case 0xd0:
      return v.getInt8(p);
    case 0xd1:
      return v.getInt16(p);
    case 0xd2:
      return v.getInt32(p);
    default: {
      // uint64, int64: only safe integers; beyond them decode reads a BigInt, which every check refuses.
      const hi = b === 0xcf ? v.getUint32(p) : v.getInt32(p);
      return hi > -0x200000 && hi < 0x200000 ? hi * 0x100000000 + v.getUint32(p + 4) : NaN;
    }
  }
}
/** Bytes after the type byte of 0xca..0xd3: float32, float64, uint8..64, int8..64. */
const NUMBER_WIDTH = [4, 8, 1, 2, 4, 8, 1, 2, 4, 8];

/** The fixstr key at the cursor as one of FIX_KEYS' bits; 0 for any other key or encoding. */
function readFixKey(): number {
  const b = frameBytes[at++];
  if (b === undefined || b < 0xa1 || b > 0xa5 || at + (b - 0xa0) > frameBytes.length) return 0;
  const len = b - 0xa0;
  const c = frameBytes[at]!;
  let key = 0;
  if (len === 1) key = c === 0x74 ? KEY_T : c === 0x73 ? KEY_S : 0;
  else if (len === 2) key = c === 0x74 && frameBytes[at + 1] === 0x73 ? KEY_TS : 0;
  else if (len === 3) key = matches('lat') ? KEY_LAT : matches('lng') ? KEY_LNG : matches('seq') ? KEY_SEQ : 0;
  else if (len === 5) key = matches('fixes') ? KEY_FIXES : 0;
  at += len;
  return key;
}
const [KEY_T, KEY_S, KEY_FIXES, KEY_LAT, KEY_LNG, KEY_TS, KEY_SEQ] = [1, 2, 4, 8, 16, 32, 64];

function matches(name: string): boolean {
  for (let i = 0; i < name.length; i++) if (frameBytes[at + i] !== name.charCodeAt(i)) return false;
  return true;
}

/** Reads `n` fixes as [lat, lng, ts, seq] tuples into `out`; false at anything decode might see otherwise. */
function readFixTuples(out: Float64Array, n: number): boolean {
  for (let i = 0; i < n; i++) {
    if (frameBytes[at++] !== 0x94) return false;
    const la = readNumber();
    const ln = readNumber();
    const ts = readNumber();
    const seq = readNumber();
    if (!(lat.accepts(la) && lng.accepts(ln) && time.accepts(ts) && count.accepts(seq))) return false;
    out[i * 4] = la;
    out[i * 4 + 1] = ln;
    out[i * 4 + 2] = ts;
    out[i * 4 + 3] = seq;
  }
  return true;
}

/**
 * The gateway's hot path: a well-formed `fix` or `fixes` frame read from its
 * bytes into packed numbers, without the maps and arrays decode builds.
 * Anything else, and anything it is unsure of (another encoding of a key or
 * a length, a key unknown or repeated, a value out of range, trailing bytes),
 * gives undefined, and decode gives the answer, refusals included. So it
 * accepts only frames decode accepts, with the same values. The fixes it
 * returns are overwritten by the next call.
 */
export function readFixFrame(bytes: ArrayBuffer): FixFrame | undefined {
  const n = bytes.byteLength;
  if (n > Limits.maxFrameBytes) return undefined;
  frameBytes = new Uint8Array(bytes);
  frameView = new DataView(bytes);
  at = 0;
  // A fixmap, or a map16 as msgpackr writes every map: fixes {t, s, fixes}, fix {t, s, lat, lng, ts, seq}.
  let size = frameBytes[at++];
  if (size === 0xde && n >= 3) {
    const entries = frameView.getUint16(at);
    at += 2;
    size = entries < 0x10 ? 0x80 | entries : 0;
  }
  const t = size === 0x83 ? MessageType.fixes : size === 0x86 ? MessageType.fix : 0;
  if (t === 0) return undefined;
  const wanted = t === MessageType.fixes ? KEY_T | KEY_S | KEY_FIXES : KEY_T | KEY_S | KEY_LAT | KEY_LNG | KEY_TS | KEY_SEQ;
  let seen = 0;
  let s = NaN;
  let fixes = t === MessageType.fix ? fixScratch.subarray(0, 4) : undefined;
  for (let k = size & 0x0f; k > 0; k--) {
    const key = readFixKey();
    if (key === 0 || (wanted & key) === 0 || (seen & key) !== 0) return undefined;
    seen |= key;
    if (key === KEY_FIXES) {
      const h = frameBytes[at++];
      const len = h !== undefined && h >= 0x90 && h <= 0x9f ? h - 0x90 : h === 0xdc && at + 2 <= n ? frameView.getUint16((at += 2) - 2) : -1;
      if (len < 1 || len > Limits.maxFixesPerFrame) return undefined;
      fixes = fixScratch.subarray(0, len * 4);
      if (!readFixTuples(fixes, len)) return undefined;
      continue;
    }
    const v = readNumber();
    if (key === KEY_T) {
      if (v !== t) return undefined;
    } else if (key === KEY_S) s = v;
    else {
      const part = key === KEY_LAT ? 0 : key === KEY_LNG ? 1 : key === KEY_TS ? 2 : 3;
      if (!fixParts[part].accepts(v)) return undefined;
      fixes![part] = v;
    }
  }
  if (at !== n || !clientSeq.accepts(s) || !fixes) return undefined;
  return { t, s, fixes };
}

// ---------------------------------------------------------------- Error frames

const clip = (text: string, max: number) => (text.length > max ? text.slice(0, max) : text);

function isDecodeFailure(v: unknown): v is DecodeFailure {
  return isPlainMap(v) && v.ok === false && typeof v.code === 'string' && typeof v.message === 'string';
}

function build(code: WireErrorCode, message: string, extra: { s?: number; field?: unknown; state?: unknown; retryAfterMs?: number }): ErrorMessage {
  const frame: ErrorMessage = { t: MessageType.error, code: wsCodeOf(code), error: code, message: clip(message, Limits.maxTextLength) };
  if (extra.s !== undefined) frame.s = extra.s;
  // Clipped to what decode accepts, so an app never refuses our own error frame.
  if (typeof extra.field === 'string' && extra.field.length > 0) frame.field = clip(extra.field, Limits.maxIdLength);
  if (typeof extra.state === 'string' && extra.state.length > 0) frame.state = clip(extra.state, Limits.maxIdLength);
  if (extra.retryAfterMs !== undefined) frame.retryAfterMs = Math.max(0, Math.ceil(extra.retryAfterMs));
  return frame;
}

/**
 * The error frame for a failed command: a DispatchError keeps its code,
 * message and the `field`/`state` from its details; a DecodeFailure keeps its
 * code, message, field and `s`; anything else is QD_ERR_INTERNAL with a
 * generic message, since an unexpected error's text may hold internals (log
 * it, do not send it).
 */
export function errorFrame(err: unknown, s?: number): ErrorMessage {
  if (err instanceof DispatchError && Object.hasOwn(ErrorCodes, err.code)) {
    return build(err.code, err.message, { s, field: err.details.field, state: err.details.state });
  }
  if (isDecodeFailure(err) && isWireErrorCode(err.code)) {
    return build(err.code, err.message, { s: s ?? err.s, field: err.field });
  }
  return build('QD_ERR_INTERNAL', 'internal error', { s });
}

/** An error frame for a gateway refusal (rate limit, role, duplicate, auth...). */
export function gatewayErrorFrame(
  code: GatewayErrorCode,
  options: { s?: number; message?: string; field?: string; retryAfterMs?: number } = {},
): ErrorMessage {
  return build(code, options.message ?? GatewayErrorCodes[code].message, options);
}

// ---------------------------------------------------------------- Logging

/** Never written to logs. */
const REDACTED = new Set(['otp']);

function show(v: unknown): string {
  if (Array.isArray(v)) return `[${v.length}]`;
  if (isPlainMap(v)) {
    return `{${Object.entries(v)
      .map(([k, x]) => `${k}=${show(x)}`)
      .join(' ')}}`;
  }
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

/**
 * One line for logs: name, then the fields in wire order. Arrays show their
 * length (a fixes batch is not worth a log line per fix) and the delivery
 * OTP is masked.
 */
export function describe(msg: Message): string {
  const spec = specByCode.get(msg.t);
  if (!spec) return `unknown(t=${String((msg as { t: unknown }).t)})`;
  const src = msg as unknown as Record<string, unknown>;
  const parts: string[] = [spec.name];
  for (const [name] of spec.entries) {
    const v = src[name];
    if (v === undefined) continue;
    parts.push(`${name}=${REDACTED.has(name) ? '***' : name === 'orderIds' ? `[${(v as string[]).join(',')}]` : show(v)}`);
  }
  return parts.join(' ');
}

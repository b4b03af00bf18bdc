// The gateway under fuzz: rider and customer attackers send random and mutated frames (malformed msgpack, wrong
// types, NaN and huge numbers, 64-bit integers, extension types, deep nesting, text, empty and oversized frames,
// replayed and out-of-range s, bursts, other customers' orders, fixes claiming another rider) while a well-behaved
// rider delivers an order to a customer who follows it. A model of each attacker's sessions (last s, the outcomes
// remembered, kept across resumes) predicts the answer of every frame from docs/protocol.md and the protocol module:
// the exact refusal, an ack or engine error, a pong, the remembered outcome again with dup, or
// QD_ERR_DUPLICATE_SEQUENCE; in the order sent, pongs at once; and every close. Afterwards the good pair saw
// everything, the engine holds exactly what they did, a victim rider is untouched, and the gateway still serves.
//
// Reproduce a failure with the seed from the test name: QD_FUZZ_SEED=<seed> QD_FUZZ_FRAMES=<n> npx tap test/gateway/fuzz.test.ts
// (QD_FUZZ_ATTACKERS sets how many attackers, half riders and half customers.) Frame contents per attacker follow
// from the seed alone; only how they are cut into connections depends on timing (rate limits, closes).
import { isDeepStrictEqual } from 'node:util';
import t, { type Test } from 'tap';
import pino from 'pino';
import { Packr } from 'msgpackr';
import { mulberry32 } from '../../bench/random.ts';
import { ErrorCodes } from '../../engine/index.ts';
import type { LatLng, OrderSpec } from '../../engine/index.ts';
import {
  CloseCodes,
  GatewayErrorCodes,
  Limits,
  MessageType,
  clientMessageRoles,
  decode,
  encode,
  errorCodeOfWs,
  errorFrame,
  gatewayErrorFrame,
  roleMaySend,
  type ClientMessageName,
  type ErrorMessage,
  type ServerMessage,
} from '../../gateway/protocol.ts';
import { offset, orderSpec, STORE, T0 } from '../engine/harness.ts';
import { ackOf, connect, httpGet, setup, type Client } from './clients.ts';

const SEED = Number(process.env.QD_FUZZ_SEED ?? 20250917) >>> 0;
const FRAMES = Math.max(200, Math.floor(Number(process.env.QD_FUZZ_FRAMES ?? 25000)));
const ATTACKERS = Math.max(2, Math.floor(Number(process.env.QD_FUZZ_ATTACKERS ?? 4)));

type AppRole = 'rider' | 'customer';

// ---------------------------------------------------------------- Bytes

const packr = new Packr({ useRecords: false });
const pack = (v: unknown): Uint8Array => packr.pack(v);
const concat = (parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts));
const hex = (b: Uint8Array | string) =>
  typeof b === 'string' ? JSON.stringify(b.slice(0, 48)) : `${Buffer.from(b.subarray(0, 48)).toString('hex')}${b.length > 48 ? `…(${b.length} bytes)` : ''}`;

/** A msgpack map from already-encoded keys and values: lets a frame carry values no encoder writes (duplicates, extensions, uint64). */
function rawMap(entries: Array<[string, Uint8Array]>): Uint8Array {
  const n = entries.length;
  const head = n < 16 ? Uint8Array.of(0x80 | n) : Uint8Array.of(0xde, n >> 8, n & 0xff);
  return concat([head, ...entries.flatMap(([k, v]) => [pack(k), v])]);
}
const entriesOf = (m: Record<string, unknown>): Array<[string, Uint8Array]> => Object.keys(m).map((k) => [k, pack(m[k])]);

const MAX_TIME = 8_640_000_000_000_000;
const NUMBERS = [NaN, Infinity, -Infinity, -1, -0, 0, 0.5, 1e-320, -1e9, 91, -181, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 2 ** 64, 1e308, -1e308, MAX_TIME + 1];

class Rng {
  readonly #next: () => number;
  constructor(seed: number) {
    this.#next = mulberry32(seed);
  }
  float(): number {
    return this.#next();
  }
  int(n: number): number {
    return Math.floor(this.#next() * n);
  }
  chance(p: number): boolean {
    return this.#next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

/** Encoded values that no well-behaved app sends. */
function weirdValue(r: Rng): Uint8Array {
  switch (r.int(12)) {
    case 0:
      return pack(r.pick(NUMBERS));
    case 1:
      return pack(r.pick(['', '7', 'NaN', 'victim', 'x'.repeat(65), '\u0000', '🛵'.repeat(40), 'pickup', 'available']));
    case 2:
      return pack(r.pick([null, true, false]));
    case 3:
      return pack(r.pick([[], {}, [1, 2, 3, 4], [[12.9, 77.6, T0, 1]], { lat: 1, lng: 2 }, { lat: NaN, lng: 0 }, { riderId: 'victim' }]));
    case 4:
      return pack(r.bytes(r.int(8))); // bin
    case 5:
      return bigInt(r);
    case 6:
    case 7:
      return extension(r);
    case 8:
      return deep(r, 1 + r.int(300));
    case 9:
      return Uint8Array.of(0xa3, 0xff, 0xfe, 0xc0); // a string that is not UTF-8
    case 10:
      return Uint8Array.of(0xca, 0x7f, 0xc0, 0x00, 0x00); // float32 NaN
    default:
      return Uint8Array.of(0xd4, 0x00, 0x00); // ext 0, which msgpackr reads as undefined
  }
}

/** An integer as uint64 / int64, mostly beyond 2^53. */
function bigInt(r: Rng): Uint8Array {
  const b = Buffer.alloc(9);
  if (r.chance(0.5)) {
    b[0] = 0xcf;
    b.writeBigUInt64BE(r.pick([2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n, 5n, 1_700_000_000_000n]), 1);
  } else {
    b[0] = 0xd3;
    b.writeBigInt64BE(r.pick([-(2n ** 53n) - 1n, -(2n ** 63n), -1n]), 1);
  }
  return new Uint8Array(b);
}

/** A msgpack extension: the types msgpackr gives meaning to (undefined, Date, BigInt, Error, Set, RegExp, typed arrays, references, bundles, records) and random ones. */
function extension(r: Rng): Uint8Array {
  const type = r.pick([0x00, 0xff, 0x42, 0x65, 0x69, 0x70, 0x73, 0x74, 0x78, 0x62, 0x72, 0x01, 0x7f, 0x80, r.int(256)]);
  const fixed = [1, 2, 4, 8, 16];
  if (r.chance(0.6)) {
    const i = r.int(fixed.length);
    return concat([Uint8Array.of(0xd4 + i, type), r.bytes(fixed[i])]);
  }
  const len = r.int(40);
  return concat([Uint8Array.of(0xc7, len, type), r.bytes(len)]);
}

/** Nested arrays or maps `depth` deep around a 1. */
function deep(r: Rng, depth: number): Uint8Array {
  if (r.chance(0.5)) return concat([new Uint8Array(depth).fill(0x91), Uint8Array.of(0x01)]);
  const level = Uint8Array.of(0x81, 0xa1, 0x61);
  return concat([...Array.from({ length: depth }, () => level), Uint8Array.of(0x01)]);
}

// ---------------------------------------------------------------- What the gateway must answer
//
// docs/protocol.md, "Sequencing and acks", as the model holds it:
// * every frame whose s can be read (an integer 1..maxClientSeq) is processed at that s, refusals included (decode
//   failures, QD_ERR_ROLE_NOT_ALLOWED, QD_ERR_RATE_LIMITED): when s is above the session's last s it becomes the
//   last s and its outcome is remembered;
// * a frame whose s is at or below the last s is a replay: answered with the outcome remembered for s and dup: true,
//   or QD_ERR_DUPLICATE_SEQUENCE when s has none among the last replayWindow remembered (or never had one);
// * acks and errors come in the order the frames were sent, one chain per connection; pongs come at once;
// * a text frame gets QD_ERR_MALFORMED_FRAME, then close 4004; malformedFramesBeforeClose decode failures close 4004.
// What cannot be known when a frame is sent (which frames the token bucket refuses, how far the gateway got before
// a close, when a command's outcome was remembered) the model keeps as alternatives the answers must fit.

interface Shot {
  kind: string;
  data: Uint8Array | string;
  /** Bytes sent as a text frame. */
  text?: boolean;
  loose?: boolean;
}

const ENGINE_WS = new Set<number>(Object.values(ErrorCodes).map((d) => d.ws));
const INTERNAL_WS = ErrorCodes.QD_ERR_INTERNAL.ws;
const G = Object.fromEntries(Object.entries(GatewayErrorCodes).map(([k, d]) => [k, d.ws])) as Record<keyof typeof GatewayErrorCodes, number>;
const utf8 = new TextDecoder('utf-8', { fatal: true });
/** uWS cuts a connection sending a frame beyond this (the gateway's maxPayloadLength); up to it, QD_ERR_PAYLOAD_TOO_LARGE. */
const CUT_BYTES = Limits.maxFrameBytes * 8;
/** The gateway's rate-limit answer with the default tuning. */
const rateLimitedFrame = (s: number | undefined) => gatewayErrorFrame('QD_ERR_RATE_LIMITED', { s, retryAfterMs: Math.ceil(1000 / Limits.messagesPerSecond) });
/**
 * A gateway frame as the app receives it: strings travel as UTF-8, so a message clipped inside a surrogate pair
 * (msgpackr's error text quotes the frame's own strings) arrives with U+FFFD in its place.
 */
const onTheWire = (m: ErrorMessage): ServerMessage => {
  const d = decode(encode(m), 'server');
  if (!d.ok) throw new Error(`the gateway's own frame does not decode: ${JSON.stringify(m)}`);
  return d.msg;
};
const withDup = (m: object, dup: boolean) => (dup ? { ...m, dup: true } : m);
const withoutDup = (m: ServerMessage): ServerMessage => {
  const { dup: _dup, ...rest } = m as ServerMessage & { dup?: boolean };
  return rest as ServerMessage;
};

/**
 * What one frame must get, worked out when it is sent: `ping` a pong, `text` QD_ERR_MALFORMED_FRAME then close
 * 4004, `drop` nothing (uWS cuts the connection), `refused` the decode failure's error frame, `role`
 * QD_ERR_ROLE_NOT_ALLOWED, `command` an ack or an engine error; any binary frame past the burst allowance
 * QD_ERR_RATE_LIMITED instead; a frame with a replayed s, the replay answer whatever it holds.
 */
interface Frame {
  /** The attacker's frame number, for reports. */
  index: number;
  shot: Shot;
  kind: 'ping' | 'text' | 'drop' | 'refused' | 'role' | 'command';
  /** Order of receipt within the session, across its connections: bounds when outcomes were remembered. */
  seq: number;
  /** Binary frames sent before it on its connection (-1 for text): the first messageBurst are never rate limited. */
  tokenIndex: number;
  /** A ping's ts, echoed in its pong. */
  ts?: number;
  /** The s the gateway can read. */
  s?: number;
  /** The exact error frame of a refused frame (decode failure, role), as received. */
  refusal?: ServerMessage;
  /** Nested past any stack: QD_ERR_MALFORMED_FRAME or QD_ERR_INVALID_ARGUMENT, depending on where it overflows. */
  loose?: boolean;
  /** A fix or fixes command: how many fixes it carries. */
  fixes?: number;
  /** A decode failure: counts toward malformedFramesBeforeClose unless it was rate limited. */
  malformed: boolean;
  /** Its s is at or below the session's last: the outcome held for s, and whether it is still in the window. */
  replay?: { memo: Memo | undefined; window: 'kept' | 'evicted' | 'either' };
  /** A new s: the outcome it leaves in the session. */
  memo?: Memo;
}

/** An outcome the gateway remembers for one s. */
interface Memo {
  s: number;
  /** The frame that left it. */
  frame: Frame;
  /** As first answered (without dup), once seen. */
  outcome?: ServerMessage;
  /**
   * Remembered before the gateway received the session's frame with this seq; Infinity while unknown. Refusals are
   * remembered on receipt, commands when they finish (the window's order is the order of remembering).
   */
  by: number;
}

const rateLimitable = (f: Frame) => f.tokenIndex >= Limits.messageBurst;

/** One gateway session as the model holds it: its last s and the outcomes remembered. */
class SessionModel {
  lastS = 0;
  /** seq of the next frame sent on the session. */
  seq = 0;
  readonly memos = new Map<number, Memo>();
  /** Frames that raised lastS and may not have reached the gateway (its connection closed first), with the lastS before each. */
  raised: Array<{ frame: Frame; before: number }> = [];
  /** Frames up to this seq reached the gateway. */
  confirmed = -1;
  /** A violation was seen on it: the model may be wrong, so its answers are no longer judged. */
  broken = false;
  constructor(readonly id: string) {}

  /** Applies a frame with a readable s as the gateway does on receipt: a replay, or the new last s. */
  receive(f: Frame & { s: number }): void {
    if (f.s <= this.lastS) {
      const memo = this.memos.get(f.s);
      f.replay = { memo, window: memo ? this.window(memo, f.seq) : 'evicted' };
      return;
    }
    this.raised.push({ frame: f, before: this.lastS });
    this.lastS = f.s;
    f.memo = { s: f.s, frame: f, by: f.kind === 'command' ? Infinity : f.seq + 1 };
    this.memos.set(f.s, f.memo);
  }

  /**
   * Whether `memo` is among the last replayWindow outcomes remembered when frame `seq` arrives: 'evicted' when at
   * least that many were certainly remembered after it by then, 'kept' when fewer could have been, else 'either'.
   */
  window(memo: Memo, seq: number): 'kept' | 'evicted' | 'either' {
    let possible = 0;
    let definite = 0;
    for (const o of this.memos.values()) {
      if (o === memo || o.by <= memo.frame.seq) continue; // certainly remembered before it
      possible++;
      if (o.frame.seq >= memo.by && o.by <= seq) definite++;
    }
    return definite >= Limits.replayWindow ? 'evicted' : possible < Limits.replayWindow ? 'kept' : 'either';
  }

  confirm(seq: number): void {
    if (seq <= this.confirmed) return;
    this.confirmed = seq;
    while (this.raised.length > 0 && this.raised[0].frame.seq <= seq) this.raised.shift();
  }

  /**
   * On resume, hello.lastS says how far the gateway got with the frames sent before the last close: it processed
   * every frame up to the one that raised the last s to hello.lastS, and none after. Returns what is wrong, if anything.
   */
  resume(lastS: number): string | null {
    const open = this.raised;
    const possible = [open.length > 0 ? open[0].before : this.lastS, ...open.map((r) => r.frame.s!)];
    if (!possible.includes(lastS)) return `resumed with lastS ${lastS}; the frames sent allow only ${JSON.stringify(possible)}`;
    for (const r of open) if (r.frame.s! > lastS) this.memos.delete(r.frame.s!);
    this.raised = [];
    this.lastS = lastS;
    return null;
  }
}

// ---------------------------------------------------------------- The world the attackers aim at

interface World {
  goodOrderId: string;
  goodOtp: string;
  otherOrderId: string;
  attackerOrders: Map<string, string>;
  victimPosition: LatLng;
  sessions: string[];
}

const RIDER_MESSAGES: ClientMessageName[] = ['fix', 'fix', 'fix', 'fixes', 'fixes', 'online', 'online', 'offline', 'break', 'accept', 'decline', 'arrived', 'pickedUp', 'delivered', 'ping'];
const CUSTOMER_MESSAGES: ClientMessageName[] = ['follow', 'follow', 'follow', 'unfollow', 'ping'];
const ALL_MESSAGES = Object.keys(clientMessageRoles) as ClientMessageName[];
const FORGED_KEYS = ['riderId', 'rider', 'userId', 'sub', 'customerId', 'role', '__proto__', 'constructor', 'toString', 'zz', ''];

/** One attacker: a user of one role whose frames follow from its seed alone. */
class Attacker {
  readonly rng: Rng;
  /** Reconnect choices, apart so that timing (how often the server closes us) never shifts the frames. */
  readonly control: Rng;
  s = 0;
  fixSeq = 0;
  readonly used: number[] = [];
  session: string | null = null;
  /** The session of its latest connection, as the model holds it. */
  model: SessionModel | null = null;
  sent = 0;
  frame = 0;
  #tour: string[];

  constructor(
    readonly name: string,
    readonly role: AppRole,
    seed: number,
    readonly world: World,
  ) {
    this.rng = new Rng(seed);
    this.control = new Rng(seed ^ 0x9e3779b9);
    // Every kind once early on (in a seeded order), so even a short run covers them all.
    this.#tour = [...KINDS.map(([k]) => k)];
    for (let i = this.#tour.length - 1; i > 0; i--) {
      const j = this.rng.int(i + 1);
      [this.#tour[i], this.#tour[j]] = [this.#tour[j], this.#tour[i]];
    }
  }

  nextS(): number {
    this.s += 1 + (this.rng.chance(0.1) ? this.rng.int(5) : 0); // gaps are allowed
    this.used.push(this.s);
    return this.s;
  }

  near(): LatLng {
    return this.rng.chance(0.8) ? offset(STORE, this.rng.int(6000) - 3000, this.rng.int(6000) - 3000) : { lat: this.rng.float() * 180 - 90, lng: this.rng.float() * 360 - 180 };
  }

  orderId(): string {
    const w = this.world;
    return this.rng.pick([w.goodOrderId, w.goodOrderId, w.otherOrderId, ...w.attackerOrders.values(), 'o-nope', '../o-1', '🛵']);
  }

  /** A valid message of `name` with a fresh s (its orderId may still be someone else's). */
  template(name: ClientMessageName): Record<string, unknown> {
    const r = this.rng;
    const t = MessageType[name];
    if (name === 'ping') return r.chance(0.5) ? { t } : { t, ts: T0 + r.int(1_000_000) };
    const s = this.nextS();
    switch (name) {
      case 'fix': {
        const p = this.near();
        return { t, s, lat: p.lat, lng: p.lng, ts: T0 - r.int(60_000), seq: ++this.fixSeq };
      }
      case 'fixes': {
        const n = 1 + r.int(r.chance(0.1) ? Limits.maxFixesPerFrame : 5);
        const base = this.near();
        return { t, s, fixes: Array.from({ length: n }, (_, i) => [base.lat + i * 1e-5, base.lng, T0 - 60_000 + i * 100, ++this.fixSeq]) };
      }
      case 'online': {
        const m: Record<string, unknown> = { t, s };
        if (r.chance(0.5)) m.capacity = 1 + r.int(Limits.maxCapacity);
        if (r.chance(0.7)) m.position = this.near();
        if (r.chance(0.3)) m.shiftEndsAt = T0 + r.int(8 * 3_600_000);
        return m;
      }
      case 'offline':
        return { t, s };
      case 'break':
        return { t, s, on: r.chance(0.5) };
      case 'arrived':
        return { t, s, orderId: this.orderId(), where: r.pick(['pickup', 'dropoff']) };
      case 'delivered': {
        const m: Record<string, unknown> = { t, s, orderId: this.orderId() };
        if (r.chance(0.6)) m.otp = r.pick(['0000', '1234', this.world.goodOtp]);
        if (r.chance(0.3)) m.proofRef = `proofs/${r.int(1000)}.jpg`;
        return m;
      }
      case 'follow':
        return r.chance(0.5) ? { t, s, orderId: this.orderId() } : { t, s, orderId: this.orderId(), afterSeq: r.pick([0, 1, 3, 2 ** 31, Number.MAX_SAFE_INTEGER]) };
      default:
        return { t, s, orderId: this.orderId() };
    }
  }

  ownTemplate(): Record<string, unknown> {
    return this.template(this.rng.pick(this.role === 'rider' ? RIDER_MESSAGES : CUSTOMER_MESSAGES));
  }

  anyTemplate(): Record<string, unknown> {
    return this.template(this.rng.pick(ALL_MESSAGES));
  }

  /** The next batch of frames: usually one to four, a burst or a flood alone. */
  batch(): Shot[] {
    const kind = this.#tour.length > 0 ? this.#tour.pop()! : pickWeighted(this.rng);
    const out = this.shots(kind);
    if (kind !== 'burst' && kind !== 'flood' && kind !== 'oversize' && kind !== 'badUtf8Text') {
      const more = this.rng.chance(0.4) ? this.rng.int(4) : 0;
      for (let i = 0; i < more; i++) {
        const k = pickWeighted(this.rng);
        if (k === 'burst' || k === 'flood' || k === 'oversize' || k === 'badUtf8Text') continue;
        out.push(...this.shots(k));
      }
    }
    // Like an app, go on numbering after the highest s used, even in a mangled frame (one near the top of the range
    // ends the session's new commands: everything after it is a replay). From the frames alone, never from timing.
    for (const shot of out) {
      if (typeof shot.data === 'string' || shot.text || shot.data.byteLength > Limits.maxFrameBytes) continue;
      const d = decode(shot.data, 'client');
      const s = d.ok ? (d.msg as { s?: number }).s : d.s;
      if (s !== undefined && s > this.s && s < Limits.maxClientSeq - 2 ** 24) this.s = s;
    }
    return out;
  }

  shots(kind: string): Shot[] {
    const r = this.rng;
    const one = (data: Uint8Array | string, extra: Partial<Shot> = {}): Shot[] => [{ kind, data, ...extra }];
    switch (kind) {
      case 'random': {
        const b = r.bytes(1 + r.int(64));
        if (r.chance(0.5)) b[0] = 0x80 + r.int(16);
        return one(b);
      }
      case 'bitflip': {
        const b = new Uint8Array(pack(this.anyTemplate()));
        const flips = 1 + r.int(4);
        for (let i = 0; i < flips; i++) {
          const at = r.int(b.length);
          if (r.chance(0.5)) b[at] ^= 1 << r.int(8);
          else b[at] = r.int(256);
        }
        return one(b);
      }
      case 'truncate': {
        const b = pack(this.anyTemplate());
        return one(b.subarray(0, 1 + r.int(b.length - 1)));
      }
      case 'append':
        return one(concat([pack(this.anyTemplate()), r.bytes(1 + r.int(8))]));
      case 'typeSwap': {
        const e = entriesOf(this.anyTemplate());
        const i = r.int(e.length);
        e[i] = [e[i][0], weirdValue(r)];
        return one(rawMap(e));
      }
      case 'extraField': {
        const e = entriesOf(this.ownTemplate());
        e.splice(r.int(e.length + 1), 0, [r.pick(FORGED_KEYS), r.chance(0.5) ? pack('victim') : weirdValue(r)]);
        return one(rawMap(e));
      }
      case 'missingField': {
        const e = entriesOf(this.ownTemplate());
        e.splice(r.int(e.length), 1);
        return one(rawMap(e));
      }
      case 'badNumber': {
        const m = this.anyTemplate();
        const n = r.pick(NUMBERS);
        if (Array.isArray(m.fixes) && r.chance(0.5)) (m.fixes as number[][])[r.int(m.fixes.length)][r.int(4)] = n;
        else if (m.position && r.chance(0.5)) (m.position as Record<string, number>)[r.pick(['lat', 'lng'])] = n;
        else {
          const numeric = Object.keys(m).filter((k) => typeof m[k] === 'number');
          m[r.pick(numeric)] = n;
        }
        return one(pack(m));
      }
      case 'longString': {
        const m = this.anyTemplate();
        const strings = Object.keys(m).filter((k) => typeof m[k] === 'string');
        const len = r.pick([17, 65, 257, 513, 4096, 30_000]);
        m[strings.length > 0 ? r.pick(strings) : r.pick(Object.keys(m))] = 'x'.repeat(len);
        return one(pack(m));
      }
      case 'deep': {
        // Up to 1000 levels reads the same on any stack; 20000 always overflows it. Between, the outcome would depend on the caller's stack depth.
        const overflow = r.chance(0.3);
        // Where an overflowing frame breaks (reading the msgpack, or checking the fields with its s already read)
        // depends on the stack, so it carries no s: whether it consumes one must not depend on the stack either.
        const e = entriesOf(this.anyTemplate()).filter(([k]) => !overflow || k !== 's');
        const i = r.int(e.length);
        e[i] = [e[i][0], overflow ? concat([new Uint8Array(20_000).fill(0x91), Uint8Array.of(0x01)]) : deep(r, 10 + r.int(990))];
        return one(rawMap(e), overflow ? { loose: true } : {});
      }
      case 'ext': {
        const e = entriesOf(this.anyTemplate());
        if (r.chance(0.8)) {
          const i = r.int(e.length);
          e[i] = [e[i][0], extension(r)];
        } else e.push([r.pick(FORGED_KEYS), extension(r)]);
        return one(rawMap(e));
      }
      case 'bigInt': {
        const e = entriesOf(this.anyTemplate());
        const i = r.int(e.length);
        e[i] = [e[i][0], bigInt(r)];
        return one(rawMap(e));
      }
      case 'badSeq': {
        const e = entriesOf(this.ownTemplate());
        const v = r.pick<unknown>([0, -1, -(2 ** 32), 1.5, 2 ** 32, 2 ** 53, 2 ** 64, NaN, Infinity, -0, '1', true, null, [1], {}, Limits.maxClientSeq]);
        const i = e.findIndex(([k]) => k === 's');
        const value = r.chance(0.2) ? bigInt(r) : pack(v);
        if (i >= 0) e[i] = ['s', value];
        else e.push(['s', value]);
        return one(rawMap(e));
      }
      case 'replay': {
        // An s already used (answered from memory, or a different command under an old s), or the same frame twice in flight.
        const m = this.ownTemplate();
        if (m.s === undefined) return one(pack(m));
        if (r.chance(0.5)) {
          const b = pack(m);
          return [
            { kind, data: b },
            { kind, data: b },
          ];
        }
        m.s = r.pick(this.used);
        return one(pack(m));
      }
      case 'foreignOrder': {
        const w = this.world;
        const foreign = r.pick([w.goodOrderId, w.otherOrderId, ...w.attackerOrders.values()]);
        const m = this.template(r.pick(this.role === 'rider' ? (['accept', 'decline', 'arrived', 'pickedUp', 'delivered'] as const) : (['follow', 'unfollow'] as const)));
        m.orderId = foreign;
        if (m.t === MessageType.delivered) m.otp = w.goodOtp; // even the right code is not enough for another rider
        return one(pack(m));
      }
      case 'forgedFix': {
        const v = this.world.victimPosition;
        const s = this.nextS();
        const ts = T0 - r.int(1000);
        const seq = ++this.fixSeq;
        switch (r.int(6)) {
          case 0:
            return one(pack({ t: MessageType.fix, s, lat: v.lat, lng: v.lng, ts, seq, riderId: 'victim' }));
          case 1:
            return one(pack({ t: MessageType.fixes, s, fixes: [[v.lat, v.lng, ts, seq, 'victim']] }));
          case 2:
            return one(pack({ t: MessageType.fixes, s, fixes: [{ riderId: 'victim', lat: v.lat, lng: v.lng, ts, seq }] }));
          case 3:
            return one(pack({ t: MessageType.online, s, position: { ...v, riderId: 'victim' } }));
          case 4:
            // Valid: it moves the sender only, to where the victim is.
            return one(pack({ t: MessageType.fix, s, lat: v.lat + 0.01, lng: v.lng, ts, seq }));
          default:
            return one(pack({ t: MessageType.fixes, s, fixes: Array.from({ length: 50 }, (_, i) => [v.lat, v.lng + 0.01, ts + i, seq + i]) }));
        }
      }
      case 'valid':
        return one(pack(this.ownTemplate()));
      case 'wrongRole':
        return one(pack(this.template(this.rng.pick(this.role === 'rider' ? CUSTOMER_MESSAGES : RIDER_MESSAGES))));
      case 'serverType': {
        const code = r.pick([64, 65, 66, 67, 68, 70, 71, 72, 80, 81, 96]);
        return one(pack({ t: code, s: this.nextS(), orderId: 'o', status: 'delivered' }));
      }
      case 'unknownType':
        return one(rawMap([['t', r.chance(0.8) ? pack(r.pick([0, 12, 19, 22, 63, 99, 127, 128, 255, -1, 1000, 2 ** 32, 2.5])) : weirdValue(r)], ['s', pack(this.nextS())]]));
      case 'dupKeys': {
        const e = entriesOf(this.ownTemplate());
        const [k] = r.pick(e);
        e.push([k, r.chance(0.5) ? pack(r.pick(NUMBERS)) : weirdValue(r)]);
        if (r.chance(0.3)) e.push(['t', pack(r.pick([2, 4, 20, 66]))]);
        return one(rawMap(e));
      }
      case 'text':
        return one(r.pick([JSON.stringify(this.ownTemplate()), 'hello', '', '{"t":2,"s":1}', '🛵'.repeat(r.int(100))]));
      case 'badUtf8Text':
        return one(Uint8Array.of(0xff, 0xfe, 0x80), { text: true });
      case 'empty':
        return one(new Uint8Array(0));
      case 'oversize': {
        // A fixes batch an app might build that is just too big (QD_ERR_PAYLOAD_TOO_LARGE, no s read), garbage up to
        // maxFrameBytes * 8 (the same), or beyond it (uWS cuts the connection).
        if (r.chance(0.4)) {
          const n = 1000 + r.int(1000);
          return one(pack({ t: MessageType.fixes, s: this.nextS(), fixes: Array.from({ length: n }, (_, i) => [12.9 + i * 1e-6, 77.6, T0 + i, i]) }));
        }
        const size = r.pick([Limits.maxFrameBytes + 1, Limits.maxFrameBytes + 101, Limits.maxFrameBytes + 40_000, CUT_BYTES - 1, CUT_BYTES, CUT_BYTES + 1, CUT_BYTES + 5_000]);
        const b = r.bytes(size);
        b[0] = r.chance(0.5) ? 0xde : 0x82;
        return one(b);
      }
      case 'burst': {
        // Over the burst allowance, not enough to be closed: some are refused as rate limited.
        const n = Limits.messageBurst + 5 + r.int(30);
        return Array.from({ length: n }, () => ({ kind, data: pack(r.chance(0.5) ? { t: MessageType.ping } : this.ownTemplate()) }));
      }
      case 'flood':
        // Far over it: closed with RATE_LIMITED.
        return Array.from({ length: Limits.messageBurst * 3 }, () => ({ kind, data: pack({ t: MessageType.ping, ts: T0 }) }));
      default:
        throw new Error(`no generator for ${kind}`);
    }
  }
}

/** Kinds of batches and how often each comes after the first tour. */
const KINDS: Array<[string, number]> = [
  ['random', 6],
  ['bitflip', 8],
  ['truncate', 4],
  ['append', 2],
  ['typeSwap', 8],
  ['extraField', 4],
  ['missingField', 4],
  ['badNumber', 6],
  ['longString', 3],
  ['deep', 2],
  ['ext', 4],
  ['bigInt', 3],
  ['badSeq', 5],
  ['replay', 3],
  ['foreignOrder', 6],
  ['forgedFix', 5],
  ['valid', 12],
  ['wrongRole', 3],
  ['serverType', 2],
  ['unknownType', 2],
  ['dupKeys', 2],
  ['text', 2],
  ['badUtf8Text', 0.3],
  ['empty', 2],
  ['oversize', 0.6],
  ['burst', 0.4],
  ['flood', 0.15],
];
const TOTAL_WEIGHT = KINDS.reduce((a, [, w]) => a + w, 0);
function pickWeighted(r: Rng): string {
  let x = r.float() * TOTAL_WEIGHT;
  for (const [k, w] of KINDS) if ((x -= w) < 0) return k;
  return KINDS[0][0];
}

// ---------------------------------------------------------------- One attacker connection and its bookkeeping

interface Tally {
  violations: string[];
  codes: Map<string, number>;
  closes: Map<number, number>;
  kinds: Map<string, number>;
  acks: number;
  pongs: number;
  /** Answers with dup: true, and rate-limit errors naming their s. */
  dups: number;
  rateLimitedWithS: number;
  /** Replays answered with an outcome that was first rate limited. */
  rateLimitedReplays: number;
  /** Frames over maxFrameBytes * 8 or text that is not UTF-8: uWS cuts the connection. */
  cut: number;
  errorsCounted: number;
  connections: number;
  hijacks: number;
  resumes: number;
  /** Resumes that found frames sent before the last close not yet confirmed. */
  reconciled: number;
  /** Connections whose answers were no longer judged after a violation. */
  lenient: number;
}

/**
 * One alternative for where the answers stand: frames before `next` are answered, `pongs` of the pongs received are
 * theirs, `malformed` decode failures counted toward the close, and whether the gateway closes after the last answer.
 */
interface Hyp {
  next: number;
  pongs: number;
  malformed: number;
  closing: boolean;
}

type Verdict = string | { counted: number[]; learn?: () => void };

class Line {
  client!: Client;
  session!: SessionModel;
  /** Frames sent on this connection not yet settled, in order. */
  frames: Frame[] = [];
  /** ts of the pongs received for them, in order. */
  pongs: Array<number | undefined> = [];
  hyps: Hyp[] = [{ next: 0, pongs: 0, malformed: 0, closing: false }];
  /** Binary frames sent on this connection. */
  tokens = 0;
  expected = 0;
  answered = 0;
  sent = 0;
  rateLimitedTotal = 0;
  dropSent = false;
  helloSeen = false;
  lenient = false;

  constructor(
    readonly a: Attacker,
    readonly n: number,
    readonly query: { session?: string; kind: 'fresh' | 'own' | 'hijack' },
    readonly tally: Tally,
  ) {}

  fail(what: string, f?: Frame): void {
    const where = f ? ` frame #${f.index} (${f.shot.kind}) ${hex(f.shot.data)}` : '';
    this.tally.violations.push(`${this.a.name} connection ${this.n}: ${what}${where}`);
    // One violation is enough to fail; what the model holds may now be wrong, so stop judging this session.
    if (!this.lenient) this.tally.lenient++;
    this.lenient = true;
    if (this.session) this.session.broken = true;
  }

  /** What the gateway must do with one frame, applied to the session model as the gateway applies it on receipt. */
  classify(shot: Shot): Frame {
    const { data } = shot;
    const f: Frame = { index: ++this.a.frame, shot, kind: 'refused', seq: this.session.seq++, tokenIndex: -1, malformed: false };
    if (typeof data === 'string' || shot.text) {
      // A text frame: refused, then closed with PROTOCOL_VIOLATION. uWS itself cuts one that is not UTF-8.
      let valid = true;
      if (typeof data !== 'string') {
        try {
          utf8.decode(data);
        } catch {
          valid = false;
        }
      }
      f.kind = valid ? 'text' : 'drop';
      return f;
    }
    f.tokenIndex = this.tokens++;
    if (data.byteLength > CUT_BYTES) {
      f.kind = 'drop';
      return f;
    }
    const d = decode(data, 'client');
    if (!d.ok) {
      f.malformed = true;
      f.refusal = onTheWire(errorFrame(d));
      if (d.s !== undefined) f.s = d.s;
      // Too large is decided before decoding: only what the nesting does depends on the stack.
      if (shot.loose && d.code !== 'QD_ERR_PAYLOAD_TOO_LARGE') f.loose = true;
    } else if (d.msg.t === MessageType.ping) {
      f.kind = 'ping';
      if (d.msg.ts !== undefined) f.ts = d.msg.ts;
      return f;
    } else {
      const msg = d.msg;
      f.s = msg.s;
      if (!roleMaySend(this.a.role, msg)) {
        f.kind = 'role';
        f.refusal = gatewayErrorFrame('QD_ERR_ROLE_NOT_ALLOWED', { s: msg.s });
      } else {
        f.kind = 'command';
        if (msg.t === MessageType.fix) f.fixes = 1;
        if (msg.t === MessageType.fixes) f.fixes = msg.fixes.length;
      }
    }
    if (f.s !== undefined) this.session.receive(f as Frame & { s: number });
    return f;
  }

  /** Every frame the gateway sends this connection, in order. */
  onFrame(m: ServerMessage): void {
    const a = this.a;
    const tally = this.tally;
    const w = a.world;
    switch (m.t) {
      case MessageType.hello:
        return this.onHello(m);
      case MessageType.pong: {
        this.answered++;
        tally.pongs++;
        if (this.lenient) return;
        if (typeof m.now !== 'number') return this.fail(`pong without now: ${JSON.stringify(m)}`);
        // Whose pong it is shows once the answers around it come in (pongs come at once, in the order of the pings).
        this.pongs.push(m.ts);
        return;
      }
      case MessageType.ack:
      case MessageType.error: {
        this.answered++;
        if (m.t === MessageType.ack) tally.acks++;
        else {
          tally.codes.set(m.error, (tally.codes.get(m.error) ?? 0) + 1);
          if (errorCodeOfWs(m.code) !== m.error) this.fail(`error code ${m.code} named ${m.error}`);
          if (m.code === INTERNAL_WS) this.fail(`internal error ${JSON.stringify(m)}`);
          if (m.code === G.QD_ERR_RATE_LIMITED) {
            this.rateLimitedTotal++;
            if (m.s !== undefined && !m.dup) tally.rateLimitedWithS++;
            if (m.dup) tally.rateLimitedReplays++;
          }
        }
        if (m.dup) tally.dups++;
        if (this.lenient) return;
        const text = this.answer(m);
        if (m.t === MessageType.error && !m.dup && m.code !== G.QD_ERR_DUPLICATE_SEQUENCE && !text) tally.errorsCounted++;
        return;
      }
      case MessageType.offer:
      case MessageType.offerGone:
        if (a.role !== 'rider') return this.fail(`a customer got ${JSON.stringify(m)}`);
        if (m.orderId === w.goodOrderId || m.orderId === w.otherOrderId) this.fail(`offered someone else's order: ${JSON.stringify(m)}`);
        return;
      case MessageType.riderState:
        if (a.role !== 'rider') return this.fail(`a customer got ${JSON.stringify(m)}`);
        if (m.orderIds.includes(w.goodOrderId) || m.orderIds.includes(w.otherOrderId)) this.fail(`holds someone else's order: ${JSON.stringify(m)}`);
        return;
      case MessageType.orderStatus:
      case MessageType.riderPosition:
        if (a.role !== 'customer' || m.orderId !== w.attackerOrders.get(a.name)) this.fail(`saw an order not its own: ${JSON.stringify(m)}`);
        return;
      default:
        this.fail(`unexpected ${JSON.stringify(m)}`);
    }
  }

  onHello(m: Extract<ServerMessage, { t: 64 }>): void {
    const a = this.a;
    if (this.helloSeen) this.fail('a second hello');
    this.helloSeen = true;
    if (m.userId !== a.name || m.role !== a.role) this.fail(`hello for ${m.role}:${m.userId}`);
    let session: SessionModel | null = null;
    if (this.query.kind === 'own') {
      const held = a.model;
      if (!m.resumed || m.session !== this.query.session || held?.id !== m.session) {
        this.fail(`own session not resumed: ${JSON.stringify(m)}`);
      } else {
        session = held;
        if (held.raised.length > 0) this.tally.reconciled++;
        const wrong = held.broken ? null : held.resume(m.lastS);
        if (wrong) {
          this.session = held;
          this.fail(wrong);
        }
      }
    } else if (m.resumed || m.lastS !== 0 || m.session === this.query.session) {
      this.fail(`${this.query.kind === 'hijack' ? "took over another user's session" : 'a fresh connection resumed something'}: ${JSON.stringify(m)}`);
    }
    this.session = session ?? new SessionModel(m.session);
    if (this.session.broken && !this.lenient) {
      this.lenient = true;
      this.tally.lenient++;
    }
    a.model = this.session;
    a.session = m.session;
  }

  /**
   * An ack or error: the answer to the first frame not yet answered, once the pings before it have had their pongs
   * (or were rate limited: then this is the answer of the first of them). Keeps the alternatives it fits; returns
   * whether it answered a text frame.
   */
  answer(m: ServerMessage): boolean {
    const next = new Map<string, Hyp>();
    const learned = new Map<Frame, () => void>();
    let why: string | undefined;
    let at: Frame | undefined;
    let text = false;
    const add = (h: Hyp) => next.set(`${h.next}/${h.pongs}/${h.malformed}/${h.closing}`, h);
    const rateLimited = isDeepStrictEqual(m, rateLimitedFrame(undefined));
    for (const h of this.hyps) {
      if (h.closing) {
        why ??= 'an answer after the one the gateway closes after';
        continue;
      }
      let p = h.pongs;
      for (let i = h.next; ; i++) {
        const f = this.frames[i];
        if (!f) {
          why ??= 'an answer beyond the frames sent';
          break;
        }
        if (f.kind === 'drop') {
          why ??= 'an answer after a frame that cuts the connection';
          at ??= f;
          break;
        }
        if (f.kind === 'ping') {
          const limited = rateLimited && rateLimitable(f);
          if (limited) add({ ...h, next: i + 1, pongs: p });
          if (p < this.pongs.length && this.pongs[p] === f.ts) {
            p++;
            continue;
          }
          if (!limited) {
            why ??= `a ping before it has no pong yet (pongs come at once) and ${rateLimitable(f) ? 'this is not its rate-limit error' : 'it cannot be rate limited'}`;
            at ??= f;
          }
          break;
        }
        const v = this.judge(f, m);
        if (typeof v === 'string') {
          why ??= v;
          at ??= f;
          break;
        }
        if (f.kind === 'text') text = true;
        if (v.learn && !learned.has(f)) learned.set(f, v.learn);
        for (const counted of v.counted) {
          const malformed = h.malformed + counted;
          add({ next: i + 1, pongs: p, malformed, closing: f.kind === 'text' || (counted === 1 && malformed >= Limits.malformedFramesBeforeClose) });
        }
        break;
      }
    }
    if (next.size === 0) {
      this.fail(`unexpected ${JSON.stringify(m)}: ${why}; expected ${at ? this.describe(at) : 'nothing'}`, at);
      return text;
    }
    if (next.size > 500) {
      this.fail(`${next.size} alternatives after ${JSON.stringify(m)}: the model cannot tell the answers apart`);
      return text;
    }
    this.hyps = [...next.values()];
    for (const learn of learned.values()) learn();
    const done = Math.min(...this.hyps.map((h) => h.next));
    if (done > 0) this.session.confirm(this.frames[done - 1].seq);
    return text;
  }

  /** Whether `m` can answer frame `f`, and if so whether f counted as malformed (0, 1, or either when rate limiting would hide it). */
  judge(f: Frame, m: ServerMessage): Verdict {
    if (f.kind === 'text') {
      return m.t === MessageType.error && m.code === G.QD_ERR_MALFORMED_FRAME && m.s === undefined && m.field === undefined && m.dup === undefined
        ? { counted: [0] }
        : 'a text frame gets QD_ERR_MALFORMED_FRAME without s';
    }
    if (!f.replay) return this.judgeFirst(f, m, false);
    // A replay's answer comes from memory whatever the frame holds; only the malformed count still sees the frame.
    const counted = f.malformed ? (rateLimitable(f) ? [0, 1] : [1]) : [0];
    const { memo, window } = f.replay;
    const duplicate = gatewayErrorFrame('QD_ERR_DUPLICATE_SEQUENCE', { s: f.s });
    if (isDeepStrictEqual(m, duplicate)) {
      return !memo || window !== 'kept' ? { counted } : `QD_ERR_DUPLICATE_SEQUENCE for s ${f.s}, whose outcome is still among the last ${Limits.replayWindow}`;
    }
    if (!memo || window === 'evicted') return `s ${f.s} has no outcome remembered: QD_ERR_DUPLICATE_SEQUENCE`;
    if (memo.outcome) {
      return isDeepStrictEqual(m, { ...memo.outcome, dup: true }) ? { counted } : `the outcome remembered for s ${f.s} is ${JSON.stringify(memo.outcome)}, sent again with dup`;
    }
    // The original's answer was never seen (its connection closed first): whatever it could have got, with dup.
    const v = this.judgeFirst(memo.frame, m, true);
    return typeof v === 'string' ? `a replay of frame #${memo.frame.index}, never answered: ${v}` : { counted, learn: v.learn };
  }

  /** The answer to a frame with a new s, or without one: what it predicts, or a rate-limit error. */
  judgeFirst(f: Frame, m: ServerMessage, dup: boolean): Verdict {
    const memo = f.memo;
    const learn = (onReceipt: boolean) => () => {
      if (!memo) return;
      memo.outcome = withoutDup(m);
      // A refusal is remembered on receipt; a command when it finishes, before its answer was seen.
      memo.by = onReceipt ? f.seq + 1 : Math.min(memo.by, this.session.seq);
    };
    if (rateLimitable(f) && isDeepStrictEqual(m, withDup(rateLimitedFrame(f.s), dup))) return { counted: [0], learn: learn(true) };
    switch (f.kind) {
      case 'refused': {
        const fits = f.loose
          ? m.t === MessageType.error && (m.code === G.QD_ERR_MALFORMED_FRAME || m.code === ErrorCodes.QD_ERR_INVALID_ARGUMENT.ws) && m.s === f.s && m.dup === (dup || undefined)
          : isDeepStrictEqual(m, withDup(f.refusal!, dup));
        return fits ? { counted: [1], learn: learn(true) } : `expected ${JSON.stringify(withDup(f.refusal!, dup))}`;
      }
      case 'role':
        return isDeepStrictEqual(m, withDup(f.refusal!, dup)) ? { counted: [0], learn: learn(true) } : `expected ${JSON.stringify(withDup(f.refusal!, dup))}`;
      case 'command': {
        if (m.t !== MessageType.ack && m.t !== MessageType.error) return 'a command gets an ack or an error';
        if (m.s !== f.s || m.dup !== (dup || undefined)) return `a command's answer carries s ${f.s}${dup ? ' and dup' : ', no dup'}`;
        if (m.t === MessageType.error) {
          return ENGINE_WS.has(m.code) && m.code !== INTERNAL_WS ? { counted: [0], learn: learn(false) } : `a command is refused only by the engine, not ${m.error}`;
        }
        if (f.fixes !== undefined) {
          const r = m.result ?? {};
          if ((r.accepted ?? 0) + (r.stale ?? 0) + (r.rejected ?? 0) !== f.fixes) return `fix counts ${JSON.stringify(r)} for ${f.fixes} fixes`;
        }
        return { counted: [0], learn: learn(false) };
      }
      default:
        return `no answer of this kind for a ${f.kind} frame`;
    }
  }

  describe(f: Frame): string {
    const rl = rateLimitable(f) ? ' (or QD_ERR_RATE_LIMITED)' : '';
    if (f.replay) return `the replay answer for s ${f.s} (${f.replay.window}: ${JSON.stringify(f.replay.memo?.outcome ?? f.replay.memo?.frame.kind ?? 'none')})`;
    switch (f.kind) {
      case 'refused':
      case 'role':
        return `${JSON.stringify(f.refusal)}${rl}`;
      case 'command':
        return `an ack or engine error for s ${f.s}${rl}`;
      default:
        return `${f.kind}${rl}`;
    }
  }

  /** Sends a batch, as far as the connection stays open. */
  send(shots: Shot[]): void {
    for (const shot of shots) {
      if (this.client.ws.readyState !== this.client.ws.OPEN) return;
      const f = this.classify(shot);
      this.frames.push(f);
      if (f.kind === 'drop') {
        this.dropSent = true;
        this.tally.cut++;
      } else this.expected++;
      this.sent++;
      this.a.sent++;
      this.tally.kinds.set(shot.kind, (this.tally.kinds.get(shot.kind) ?? 0) + 1);
      if (shot.text) this.client.ws.send(shot.data, { binary: false });
      else this.client.sendRaw(shot.data);
    }
  }

  /**
   * Where `h` ends up once the pongs received are given to the pings left: with the connection open every frame
   * must be answered and every pong used; once it closes (or is closing) frames after the close are not answered,
   * but each pong must still be one of theirs.
   */
  finish(h: Hyp, open: boolean): Hyp | null {
    let p = h.pongs;
    let i = h.next;
    for (; i < this.frames.length && this.frames[i].kind === 'ping' && p < this.pongs.length && this.pongs[p] === this.frames[i].ts; i++) p++;
    if (open) return i === this.frames.length && p === this.pongs.length ? { next: i, pongs: p, malformed: h.malformed, closing: false } : null;
    for (; i < this.frames.length && p < this.pongs.length && this.frames[i].kind !== 'drop'; i++) {
      if (this.frames[i].kind === 'ping' && this.pongs[p] === this.frames[i].ts) p++;
    }
    return p === this.pongs.length ? h : null;
  }

  /** Whether the connection may be about to close: after a text frame or the last malformed frame tolerated, or cut by uWS. */
  mayClose(): boolean {
    return this.dropSent || (!this.lenient && this.hyps.some((h) => h.closing));
  }

  mustClose(): boolean {
    return this.dropSent || (!this.lenient && this.hyps.every((h) => h.closing));
  }

  /** A batch fully answered and the connection still open: keep the alternatives that fit, forget the frames. */
  settle(): void {
    if (this.lenient) return;
    const done = this.hyps.filter((h) => !h.closing).map((h) => this.finish(h, true));
    const alive = done.filter((h): h is Hyp => h !== null);
    if (alive.length === 0) {
      const h = this.hyps[0];
      const f = this.frames[h.next];
      this.fail(
        this.hyps.every((x) => x.closing)
          ? `not closed after ${h.malformed} malformed frames or a text frame`
          : `answers ${JSON.stringify(this.pongs.slice(h.pongs))} (pongs) left over or frames unanswered; next expected ${f ? this.describe(f) : 'nothing'}`,
        f,
      );
      return;
    }
    if (this.frames.length > 0) this.session.confirm(this.frames[this.frames.length - 1].seq);
    this.frames = [];
    this.pongs = [];
    const byCount = new Map(alive.map((h) => [h.malformed, { next: 0, pongs: 0, malformed: h.malformed, closing: false }]));
    this.hyps = [...byCount.values()];
  }

  /** After the gateway closed the connection: was it allowed to, with that code, then? */
  checkClose(code: number): void {
    this.tally.closes.set(code, (this.tally.closes.get(code) ?? 0) + 1);
    if (this.lenient) return;
    const allowed = (h: Hyp) =>
      code === CloseCodes.PROTOCOL_VIOLATION
        ? h.closing
        : code === CloseCodes.RATE_LIMITED
          ? // The token bucket starts full (messageBurst) and closes below -messageBurst: at twice the burst at the earliest.
            // (The rate-limit errors received can be fewer: a rate-limited frame with a replayed s gets the replay answer.)
            this.tokens > 2 * Limits.messageBurst
          : // uWS cuts a frame over its maxPayloadLength, and text that is not UTF-8, without a close frame.
            (code === 1006 || code === 1009) && this.frames.slice(h.next).some((f) => f.kind === 'drop');
    const alive = this.hyps.filter(allowed).map((h) => this.finish(h, false));
    if (!alive.some((h) => h !== null)) {
      const h = this.hyps[0];
      this.fail(
        `closed with ${code} after ${this.sent} frames (${h.malformed} malformed counted, ${this.rateLimitedTotal} rate limited, cut: ${this.dropSent}, ` +
          `${this.frames.length - h.next} unanswered, pongs left ${JSON.stringify(this.pongs.slice(h.pongs))})`,
        this.frames[h.next],
      );
      return;
    }
    const done = Math.min(...alive.filter((h): h is Hyp => h !== null).map((h) => h.next));
    if (done > 0) this.session.confirm(this.frames[done - 1].seq);
  }
}

// ---------------------------------------------------------------- The run

/** Resolves `at(f)` once the attackers have sent f of their frames (or finished). */
class Progress {
  sent = 0;
  done = false;
  #waiters: Array<{ n: number; resolve: () => void }> = [];
  add(n: number): void {
    this.sent += n;
    this.#wake();
  }
  finish(): void {
    this.done = true;
    this.#wake();
  }
  at(fraction: number): Promise<void> {
    const n = Math.floor(fraction * FRAMES);
    return new Promise((resolve) => {
      this.#waiters.push({ n, resolve });
      this.#wake();
    });
  }
  #wake(): void {
    this.#waiters = this.#waiters.filter((w) => {
      if (this.sent < w.n && !this.done) return true;
      w.resolve();
      return false;
    });
  }
}

async function metric(port: number, name: string): Promise<Map<string, number>> {
  const text = (await httpGet(port, '/metrics')).body;
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith(name) && (line[name.length] === ' ' || line[name.length] === '{')) {
      const at = line.lastIndexOf(' ');
      out.set(line.slice(name.length, at), Number(line.slice(at + 1)));
    }
  }
  return out;
}
const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

const statuses = (c: Client) => c.inbox.filter((m) => m.t === MessageType.orderStatus) as Array<Extract<ServerMessage, { t: 80 }>>;

t.test(
  `fuzz (seed ${SEED}, ${FRAMES} frames, ${ATTACKERS} attackers): every malformed frame is refused, the well-behaved rider and customer are served, nobody else is touched`,
  async (t: Test) => {
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown) => uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onUncaught);
    t.teardown(() => {
      process.off('uncaughtException', onUncaught);
      process.off('unhandledRejection', onUncaught);
    });
    // The gateway's own warnings and errors (an unexpected exception in a command is logged as 'command failed').
    const logged: Array<{ level: number; msg: string }> = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void logged.push(JSON.parse(line)) });
    const { engine, clock, gw } = await setup(t, { logger });
    const port = gw.port;
    const started = Date.now();

    // A victim rider on a break: nothing anyone else sends may change it.
    const victimAt = offset(STORE, -1200, 900);
    const victim = await connect(port, 'rider', 'victim');
    victim.send({ t: MessageType.online, s: 1, position: victimAt });
    t.match(await victim.next(ackOf(1), 'victim online'), { t: MessageType.ack });
    victim.send({ t: MessageType.fix, s: 2, lat: victimAt.lat, lng: victimAt.lng, ts: T0, seq: 1 });
    t.match(await victim.next(ackOf(2), 'victim fix'), { t: MessageType.ack, result: { accepted: 1 } });
    victim.send({ t: MessageType.break, s: 3, on: true });
    t.match(await victim.next(ackOf(3), 'victim break'), { t: MessageType.ack, result: { status: 'onBreak' } });
    const victimBefore = await engine.getRider('victim');
    const victimInbox = victim.inbox.length;

    // The well-behaved pair: a rider online near the store, an order, its customer following it.
    const rider = await connect(port, 'rider', 'good-rider');
    const riderSession = (rider.inbox[0] as { session: string }).session;
    const riderStart = offset(STORE, 300, 0);
    rider.send({ t: MessageType.online, s: 1, position: riderStart, capacity: 1 });
    t.match(await rider.next(ackOf(1), 'online ack'), { t: MessageType.ack, result: { status: 'available' } });
    const good = orderSpec({ customerId: 'good-customer' });
    const created = await engine.createOrder(good);
    // Another customer's order, too far away for anyone here to be offered it.
    const otherSpec = orderSpec({ customerId: 'other-customer', pickup: offset(STORE, 300_000, 0), dropoff: offset(STORE, 301_000, 0) });
    await engine.createOrder(otherSpec);
    let customer = await connect(port, 'customer', 'good-customer');
    const customerSession = (customer.inbox[0] as { session: string }).session;
    customer.send({ t: MessageType.follow, s: 1, orderId: good.orderId });
    t.match(await customer.next(ackOf(1), 'follow ack'), { t: MessageType.ack, result: { orderId: good.orderId, status: 'searching' } });
    clock.advance(1_000);
    await engine.tick();
    t.match(await rider.next((m) => m.t === MessageType.offer, 'offer'), { orderId: good.orderId });
    const refusedBefore = sum(await metric(port, 'quickdash_ws_refused_total'));

    // Attackers: half riders, half customers; each customer owns an order of its own (placed once the good order is taken).
    const attackerSpecs = new Map<string, OrderSpec>();
    const world: World = {
      goodOrderId: good.orderId,
      goodOtp: created.otp,
      otherOrderId: otherSpec.orderId,
      attackerOrders: new Map(),
      victimPosition: victimAt,
      sessions: [riderSession, customerSession, (victim.inbox[0] as { session: string }).session],
    };
    const attackers = Array.from({ length: ATTACKERS }, (_, i) => {
      const role: AppRole = i % 2 === 0 ? 'rider' : 'customer';
      const name = `mallory-${role}-${i}`;
      if (role === 'customer') {
        const spec = orderSpec({ customerId: name, pickup: offset(STORE, -3000, -2500), dropoff: offset(STORE, -4000, -2000) });
        attackerSpecs.set(name, spec);
        world.attackerOrders.set(name, spec.orderId);
      }
      return new Attacker(name, role, (SEED + Math.imul(i + 1, 0x2545f491)) >>> 0, world);
    });
    const tally: Tally = {
      violations: [],
      codes: new Map(),
      closes: new Map(),
      kinds: new Map(),
      acks: 0,
      pongs: 0,
      dups: 0,
      rateLimitedWithS: 0,
      rateLimitedReplays: 0,
      cut: 0,
      errorsCounted: 0,
      connections: 0,
      hijacks: 0,
      resumes: 0,
      reconciled: 0,
      lenient: 0,
    };
    const progress = new Progress();
    const quota = Math.ceil(FRAMES / ATTACKERS);

    async function attack(a: Attacker): Promise<void> {
      let line: Line | null = null;
      let n = 0;
      while (a.sent < quota) {
        if (!line) {
          const c = a.control.float();
          const query: Line['query'] =
            c < 0.15 && a.session ? { kind: 'own', session: a.session } : c < 0.3 ? { kind: 'hijack', session: a.control.pick(world.sessions) } : { kind: 'fresh' };
          if (query.kind === 'hijack') tally.hijacks++;
          if (query.kind === 'own') tally.resumes++;
          const next: Line = new Line(a, ++n, query, tally);
          tally.connections++;
          next.client = await connect(port, a.role, a.name, query.session ? `&session=${query.session}` : '', (m) => next.onFrame(m));
          line = next;
        }
        const l = line;
        if (l.client.ws.readyState !== l.client.ws.OPEN) {
          // Closing already (a close frame came in): wait for the close itself.
          await l.client.closed;
        } else {
          const before = a.sent;
          l.send(a.batch());
          progress.add(a.sent - before);
        }
        await l.client.until(
          () => l.client.closeCode !== null || l.answered >= l.expected,
          `${a.name} connection ${l.n}: answers to ${l.expected} frames (got ${l.answered})`,
          10_000,
        );
        if (l.client.closeCode === null && l.mayClose()) {
          // The gateway closes right after answering a text frame, or the last malformed frame it tolerates.
          // Once a violation is seen, waits are short: the run only has to end and report.
          const wait = l.mustClose() && tally.violations.length === 0 ? 2_000 : 200;
          await l.client.until(() => l.client.closeCode !== null, `${a.name} connection ${l.n} closed`, wait).catch(() => undefined);
        }
        if (l.client.closeCode !== null) {
          l.checkClose(l.client.closeCode);
          line = null;
        } else l.settle();
        // Let the other clients' I/O in between batches.
        await new Promise((r) => setImmediate(r));
      }
      if (line) await line.client.close();
    }

    async function goodFlow(): Promise<Client> {
      const step = async (s: number, msg: Record<string, unknown>, what: string) => {
        rider.send({ ...msg, s });
        const answer = await rider.next(ackOf(s), what, 0, 10_000);
        t.equal(answer.t, MessageType.ack, `${what}: acked (${JSON.stringify(answer)})`);
        return answer as Extract<ServerMessage, { t: 65 }>;
      };
      const statusSeen = (c: Client, status: string) =>
        c.next((m) => m.t === MessageType.orderStatus && m.status === status, `customer sees ${status}`, 0, 10_000);

      await progress.at(0.1);
      t.match(await step(2, { t: MessageType.accept, orderId: good.orderId }, 'accept'), { result: { orderId: good.orderId, status: 'assigned' } });
      for (const spec of attackerSpecs.values()) await engine.createOrder(spec);
      await progress.at(0.2);
      t.match(await step(3, { t: MessageType.fix, lat: STORE.lat, lng: STORE.lng, ts: clock.now(), seq: 1 }, 'fix at the store'), {
        result: { accepted: 1, stale: 0, rejected: 0 },
      });
      await engine.tick();
      await statusSeen(customer, 'atPickup');
      await progress.at(0.35);
      t.match(await step(4, { t: MessageType.pickedUp, orderId: good.orderId }, 'picked up'), { result: { status: 'pickedUp' } });
      await statusSeen(customer, 'pickedUp');

      // The customer's app reconnects mid-delivery and resumes from the last status it saw.
      await progress.at(0.45);
      const seenSeq = Math.max(...statuses(customer).map((m) => m.seq));
      await customer.close();
      const again = await connect(port, 'customer', 'good-customer', `&session=${customerSession}`);
      t.match(again.inbox[0], { t: MessageType.hello, resumed: true, lastS: 1, userId: 'good-customer' }, 'the customer resumes its session');
      again.send({ t: MessageType.follow, s: 2, orderId: good.orderId, afterSeq: seenSeq });
      t.match(await again.next(ackOf(2), 'follow again', 0, 10_000), { t: MessageType.ack, result: { status: 'pickedUp' } });

      await progress.at(0.55);
      clock.advance(120_000);
      t.match(await step(5, { t: MessageType.fixes, fixes: route }, 'fixes en route'), { result: { accepted: route.length, stale: 0, rejected: 0 } });
      const newest = route[route.length - 1];
      t.match(
        await again.next((m) => m.t === MessageType.riderPosition && m.ts === newest[2], 'the newest position', 0, 10_000),
        { orderId: good.orderId, lat: newest[0], lng: newest[1] },
      );
      await progress.at(0.7);
      t.match(await step(6, { t: MessageType.arrived, orderId: good.orderId, where: 'dropoff' }, 'arrived'), { result: { status: 'atDropoff' } });
      await progress.at(0.85);
      t.match(await step(7, { t: MessageType.delivered, orderId: good.orderId, otp: created.otp }, 'delivered'), { result: { status: 'delivered' } });
      await statusSeen(again, 'delivered');
      return again;
    }

    // The good rider's route toward the customer, stopping outside the drop-off geofence (so arrival is the rider's own command).
    const dropoff = good.dropoff;
    const route: Array<[number, number, number, number]> = [0.3, 0.6, 0.85].map((f, i) => [
      STORE.lat + (dropoff.lat - STORE.lat) * f,
      STORE.lng + (dropoff.lng - STORE.lng) * f,
      T0 + 1_000 + (i + 1) * 40_000,
      2 + i,
    ]);

    const firstCustomer = customer;
    // An attacker that stops early (a failure of its own) must not leave the good flow waiting on progress.
    const runs = await Promise.allSettled([goodFlow(), ...attackers.map((a) => attack(a).catch((err) => (progress.finish(), Promise.reject(err))))]);
    progress.finish();
    const fuzzMs = Date.now() - started;
    const [flow, ...attacks] = runs as [PromiseSettledResult<Client>, ...Array<PromiseSettledResult<unknown>>];
    for (const [i, r] of attacks.entries()) if (r.status === 'rejected') t.fail(`${attackers[i].name} stopped: ${(r.reason as Error)?.stack ?? String(r.reason)}`);
    if (flow.status === 'rejected') {
      t.fail(`the well-behaved pair was not served: ${(flow.reason as Error)?.stack ?? String(flow.reason)}`);
      return;
    }
    customer = flow.value;
    t.comment(
      `${FRAMES} frames in ${fuzzMs} ms over ${tally.connections} attacker connections (${tally.hijacks} naming another user's session, ` +
        `${tally.resumes} resuming their own); closes ${JSON.stringify(Object.fromEntries(tally.closes))}; errors ${JSON.stringify(Object.fromEntries(tally.codes))}; ` +
        `frames by kind ${JSON.stringify(Object.fromEntries(tally.kinds))}; ${tally.dups} answers with dup (${tally.rateLimitedReplays} of a rate-limit error), ` +
        `${tally.rateLimitedWithS} rate-limit errors naming their s, ${tally.reconciled} resumes after frames the gateway may not have received, ${tally.cut} frames cut by uWS`,
    );

    // Every attacker frame got the answer the protocol module predicts for it, or a documented close.
    t.same(tally.violations.slice(0, 25), [], `attackers got exactly the predicted answers (${tally.violations.length} violations)`);
    t.same(uncaught, [], 'no uncaught exception or unhandled rejection');
    t.same(
      logged.filter((l) => l.level >= 40),
      [],
      'the gateway logged no warning or error',
    );
    for (const c of [rider, firstCustomer, customer, victim]) t.same(c.undecodable, [], 'every gateway frame decodes');

    // The customer saw every status once, in order, across its reconnect, and only the good rider's own positions.
    const seen = [...statuses(firstCustomer), ...statuses(customer)];
    t.same(
      seen.map((m) => [m.orderId, m.seq, m.status]),
      ['searching', 'offered', 'assigned', 'atPickup', 'pickedUp', 'atDropoff', 'delivered'].map((status, i) => [good.orderId, i + 1, status]),
      'the customer saw every status of its order, in order, none twice',
    );
    t.ok(
      seen.slice(2).every((m) => m.riderId === 'good-rider'),
      'assigned to the good rider throughout',
    );
    const fixesSent = [[STORE.lat, STORE.lng, T0 + 1_000], ...route.map(([la, ln, ts]) => [la, ln, ts])];
    for (const c of [firstCustomer, customer]) {
      const other = c.inbox.filter((m) => ![MessageType.hello, MessageType.ack, MessageType.orderStatus, MessageType.riderPosition].includes(m.t as never));
      t.same(other, [], 'the customer got nothing but its hello, acks, statuses and positions');
      for (const m of c.inbox) {
        if (m.t !== MessageType.riderPosition) continue;
        t.ok(
          m.orderId === good.orderId && fixesSent.some(([la, ln, ts]) => m.lat === la && m.lng === ln && m.ts === ts),
          `position ${JSON.stringify(m)} is one of the good rider's own fixes`,
        );
      }
    }
    t.same(
      firstCustomer.inbox.filter((m) => m.t === MessageType.ack).map((m) => (m as { s: number }).s),
      [1],
      'follow acked once',
    );
    t.same(
      customer.inbox.filter((m) => m.t === MessageType.ack).map((m) => (m as { s: number }).s),
      [2],
      'the resumed follow acked once',
    );

    // The rider: one ack per command, no error, offers only of its own order, states in seq order ending free.
    t.same(
      rider.inbox.filter((m) => m.t === MessageType.ack || m.t === MessageType.error).map((m) => [m.t, (m as { s?: number }).s]),
      [1, 2, 3, 4, 5, 6, 7].map((s) => [MessageType.ack, s]),
      'the rider got exactly one ack for each of its commands, in order, and no error',
    );
    t.same(
      rider.inbox.filter((m) => m.t === MessageType.offer || m.t === MessageType.offerGone).map((m) => [m.t, (m as { orderId: string }).orderId]),
      [[MessageType.offer, good.orderId]],
      'the rider was offered its order once and nothing else',
    );
    const states = rider.inbox.filter((m) => m.t === MessageType.riderState) as Array<Extract<ServerMessage, { t: 72 }>>;
    t.ok(
      states.every((m, i) => i === 0 || m.seq > states[i - 1].seq),
      'rider states arrive in seq order',
    );
    t.ok(
      states.every((m) => m.orderIds.every((o) => o === good.orderId)),
      'the rider only ever held its own order',
    );
    const path = states.map((m) => m.status).filter((st, i, all) => i === 0 || st !== all[i - 1]);
    t.same(path.slice(path.indexOf('available')), ['available', 'offered', 'toPickup', 'atPickup', 'toDropoff', 'atDropoff', 'available'], 'the rider went through its delivery');

    // The engine holds exactly what the good pair did, and nothing of the attackers on their records.
    const newest = route[route.length - 1];
    t.match(await engine.getRider('good-rider'), {
      status: 'available',
      orderIds: [],
      offer: null,
      position: { lat: newest[0], lng: newest[1], ts: newest[2] },
    });
    t.match(await engine.getOrder(good.orderId), { status: 'delivered', riderId: 'good-rider', seq: 7, customerId: 'good-customer' });
    t.match(await engine.getOrder(otherSpec.orderId), { status: 'searching', riderId: null, seq: 1, offer: null }, "another customer's order is untouched");
    t.same(await engine.getRider('victim'), victimBefore, "no attacker moved or changed the victim rider (forged fixes included)");
    t.same(
      victim.inbox.slice(victimInbox).filter((m) => m.t !== MessageType.riderState || m.seq > victimBefore.seq),
      [],
      'the victim was sent nothing after its break',
    );

    // Still serving: fresh connections get hello and answers, health checks pass.
    const fresh = await connect(port, 'rider', 'fresh-rider');
    t.match(fresh.inbox[0], { t: MessageType.hello, userId: 'fresh-rider', resumed: false, lastS: 0 });
    fresh.send({ t: MessageType.online, s: 1, position: STORE });
    t.match(await fresh.next(ackOf(1), 'fresh online'), { t: MessageType.ack, result: { status: 'available' } });
    const freshCustomer = await connect(port, 'customer', 'fresh-customer');
    freshCustomer.send({ t: MessageType.ping, ts: 42 });
    t.match(await freshCustomer.next((m) => m.t === MessageType.pong, 'pong'), { ts: 42 });
    t.same(await httpGet(port, '/healthz'), { status: 200, body: 'ok\n' }, '/healthz ok');
    t.same(await httpGet(port, '/readyz'), { status: 200, body: 'ready\n' }, '/readyz ready');

    // Refusals were counted: at least one per error frame the attackers received (more were sent to connections already closing).
    const refusedAfter = sum(await metric(port, 'quickdash_ws_refused_total'));
    t.ok(refusedAfter > refusedBefore, `quickdash_ws_refused_total rose from ${refusedBefore} to ${refusedAfter}`);
    t.ok(refusedAfter - refusedBefore >= tally.errorsCounted, `counted at least the ${tally.errorsCounted} refusals the attackers received`);

    // Every socket closed is forgotten: the connection gauge returns to zero.
    await Promise.all([rider, customer, victim, fresh, freshCustomer].map((c) => c.close()));
    const deadline = Date.now() + 3_000;
    let open = sum(await metric(port, 'quickdash_ws_connections'));
    while (open !== 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      open = sum(await metric(port, 'quickdash_ws_connections'));
    }
    t.equal(open, 0, 'no connection left counted as open');

    // The run reached what it was meant to: each kind of refusal and close happened.
    for (const code of ['QD_ERR_MALFORMED_FRAME', 'QD_ERR_UNKNOWN_MESSAGE_TYPE', 'QD_ERR_INVALID_ARGUMENT', 'QD_ERR_RATE_LIMITED', 'QD_ERR_ROLE_NOT_ALLOWED', 'QD_ERR_ORDER_NOT_FOUND']) {
      t.ok((tally.codes.get(code) ?? 0) > 0, `attackers were refused with ${code} (${tally.codes.get(code) ?? 0})`);
    }
    t.ok((tally.closes.get(CloseCodes.PROTOCOL_VIOLATION) ?? 0) > 0, 'attackers were closed for malformed frames (4004)');
    t.ok((tally.closes.get(CloseCodes.RATE_LIMITED) ?? 0) > 0, 'a flooding attacker was closed as rate limited (4003)');
    t.ok((tally.codes.get('QD_ERR_PAYLOAD_TOO_LARGE') ?? 0) > 0, 'frames over maxFrameBytes were refused with QD_ERR_PAYLOAD_TOO_LARGE');
    t.ok(tally.cut > 0, `frames beyond maxFrameBytes * 8 (or text not UTF-8) were sent (${tally.cut})`);
    t.equal((tally.closes.get(1006) ?? 0) + (tally.closes.get(1009) ?? 0), tally.cut, 'each of them, and nothing else, cut its connection');
    // The sequencing rules were reached: replays answered from memory and as duplicates, rate-limit errors consuming s.
    t.ok(tally.dups > 0 && (tally.codes.get('QD_ERR_DUPLICATE_SEQUENCE') ?? 0) > 0, 'replays were answered from memory and as QD_ERR_DUPLICATE_SEQUENCE');
    t.ok(tally.rateLimitedWithS > 0, `rate-limit errors carried the frame's s (${tally.rateLimitedWithS})`);
    t.ok(tally.resumes > 0 && tally.reconciled > 0, `resumed sessions were checked against the frames sent before a close (${tally.reconciled})`);
    t.ok(tally.acks > 0 && tally.pongs > 0, `attackers' valid frames were served (${tally.acks} acks, ${tally.pongs} pongs)`);
    t.ok(tally.hijacks > 0, `attackers tried other users' sessions (${tally.hijacks})`);
  },
);

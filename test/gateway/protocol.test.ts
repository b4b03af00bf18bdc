// The app WebSocket protocol: round trips, strict refusals naming the field, a fuzz loop, and docs/protocol.md held to the module.
import t from 'tap';
import type { Test } from 'tap';
import { readFileSync } from 'node:fs';
import { Packr } from 'msgpackr';
import { mulberry32 } from '../../bench/random.ts';
import { DispatchError, ErrorCodes, invalidArgument } from '../../engine/index.ts';
import {
  AppRoles,
  CloseCodes,
  GatewayErrorCodes,
  Limits,
  MessageType,
  PROTOCOL_VERSION,
  clientMessageRoles,
  decode,
  describe,
  encode,
  errorCodeOfWs,
  encodeFixAck,
  errorFrame,
  gatewayErrorFrame,
  isClientMessageName,
  isWireErrorCode,
  messageFields,
  messageName,
  packFixes,
  readFixFrame,
  roleMaySend,
  wsCodeOf,
} from '../../gateway/protocol.ts';
import type { DecodeFailure, DecodeResult, FixTuple, Message, MessageName, MessageOf } from '../../gateway/protocol.ts';

// A raw packer for frames the protocol module would never write.
const raw = new Packr({ useRecords: false });
const pack = (v: unknown): Uint8Array => raw.pack(v);

const T0 = 1_700_000_000_000;
const fixes: FixTuple[] = [
  [12.9716, 77.5946, T0, 41],
  [12.9721, 77.5951, T0 + 1000, 42],
];

/** At least one sample per message type (the type forces every name); the first has every optional field. */
const samples: { [N in MessageName]: Array<MessageOf<N>> } = {
  ping: [{ t: 1, ts: T0 }, { t: 1 }],
  fix: [{ t: 2, s: 1, lat: -33.8688, lng: 151.2093, ts: T0, seq: 7 }],
  fixes: [{ t: 3, s: 2, fixes }],
  online: [{ t: 4, s: 3, capacity: 2, position: { lat: 12.97, lng: 77.59 }, shiftEndsAt: T0 + 8 * 3600_000 }, { t: 4, s: 3 }],
  offline: [{ t: 5, s: 4 }],
  break: [
    { t: 6, s: 5, on: true },
    { t: 6, s: 6, on: false },
  ],
  accept: [{ t: 7, s: 7, orderId: 'o-1' }],
  decline: [{ t: 8, s: 8, orderId: 'o-2' }],
  arrived: [
    { t: 9, s: 9, orderId: 'o-1', where: 'pickup' },
    { t: 9, s: 10, orderId: 'o-1', where: 'dropoff' },
  ],
  pickedUp: [{ t: 10, s: 11, orderId: 'o-1' }],
  delivered: [{ t: 11, s: 12, orderId: 'o-1', otp: '4821', proofRef: 'proofs/o-1.jpg' }, { t: 11, s: 12, orderId: 'o-1' }],
  follow: [{ t: 20, s: 1, orderId: 'o-1', afterSeq: 5 }, { t: 20, s: 1, orderId: 'o-1' }],
  unfollow: [{ t: 21, s: 2, orderId: 'o-1' }],
  hello: [{ t: 64, v: PROTOCOL_VERSION, now: T0, role: 'rider', userId: 'r-9', session: 'sess-abc', resumed: true, lastS: 12 }],
  ack: [
    { t: 65, s: 12, dup: true, result: { orderId: 'o-1', status: 'delivered', seq: 9, accepted: 0, stale: 0, rejected: 0 } },
    { t: 65, s: 2, result: { accepted: 2, stale: 0, rejected: 0 } },
    { t: 65, s: 4, result: { status: 'onBreak', seq: 3 } },
    { t: 65, s: 1 },
  ],
  error: [
    {
      t: 66,
      s: 7,
      code: 67,
      error: 'QD_ERR_RATE_LIMITED',
      message: 'too many frames',
      field: 'fixes[3].lat',
      state: 'offered',
      retryAfterMs: 250,
      dup: true,
    },
    { t: 66, code: 70, error: 'QD_ERR_UNAUTHENTICATED', message: '' },
  ],
  pong: [{ t: 67, now: T0, ts: T0 - 40 }, { t: 67, now: T0 }],
  goAway: [{ t: 68, reason: 'drain', reconnectAfterMs: 5000 }],
  offer: [{ t: 70, orderId: 'o-1', storeId: 's-1', pickup: { lat: 12.97, lng: 77.59 }, dropoff: { lat: 12.99, lng: 77.61 }, expiresAt: T0 + 30_000 }],
  offerGone: [{ t: 71, orderId: 'o-1', reason: 'expired' }],
  riderState: [
    { t: 72, status: 'toPickup', orderIds: ['o-1', 'o-3'], seq: 17 },
    { t: 72, status: 'available', orderIds: [], seq: 18 },
  ],
  orderStatus: [
    { t: 80, orderId: 'o-1', seq: 6, status: 'pickedUp', event: 'PICKED_UP', at: T0, riderId: 'r-9', eta: T0 + 600_000 },
    { t: 80, orderId: 'o-1', seq: 1, status: 'searching', event: 'CREATED', at: T0, riderId: null },
  ],
  riderPosition: [{ t: 81, orderId: 'o-1', lat: 12.98, lng: 77.6, ts: T0 }],
  opsSnapshot: [
    {
      t: 96,
      now: T0,
      res: 8,
      riders: [['r-9', 'toPickup', 12.98, 77.6], ['r-10', 'available', 12.99, 77.61]],
      orders: [
        ['o-1', 'assigned', 12.97, 77.59, 12.99, 77.61, 'r-9'],
        ['o-2', 'searching', 12.97, 77.59, 12.95, 77.58, null],
      ],
      cells: [['8860145b4bfffff', 1, 1]],
      counters: {
        connections: 3,
        fixesPerSecond: 2.5,
        ordersLive: 2,
        ridersOnline: 2,
        offersMade: 4,
        matcherRuns: 2,
        dispatchP50Ms: 1500,
        dispatchP95Ms: null,
        eventLoopLagMs: 0.4,
      },
    },
  ],
};
const allSamples: Message[] = Object.values(samples).flat();
const names = Object.keys(MessageType) as MessageName[];
const clientNames = names.filter(isClientMessageName);
const serverNames = names.filter((n) => !isClientMessageName(n));

function failed(r: DecodeResult): DecodeFailure {
  if (r.ok) throw new Error(`expected a refusal, decoded ${describe(r.msg)}`);
  return r;
}

t.test('message codes: unique, one byte, client below 64, gateway 64 and up', async (t) => {
  const codes = Object.values(MessageType);
  t.equal(new Set(codes).size, codes.length, 'unique');
  for (const n of names) {
    const c = MessageType[n];
    t.ok(Number.isInteger(c) && c > 0 && c < 128, `${n} fits a positive fixint`);
    t.equal(messageName(c), n);
    t.equal(isClientMessageName(n), c < 64, `${n} direction by code`);
  }
  t.equal(messageName(99), undefined);
  t.same(Object.keys(clientMessageRoles).sort(), [...clientNames].sort(), 'roles cover exactly the client messages');
  for (const [n, roles] of Object.entries(clientMessageRoles)) {
    t.ok(roles.length > 0 && roles.every((r) => (AppRoles as readonly string[]).includes(r)), `${n} roles are app roles`);
  }
});

t.test('roles: riders drive orders, customers follow, both ping, nobody else sends', async (t) => {
  t.ok(roleMaySend('rider', 'fix'));
  t.ok(roleMaySend('rider', { t: 7, s: 1, orderId: 'o' }));
  t.notOk(roleMaySend('rider', 'follow'));
  t.ok(roleMaySend('customer', 'follow'));
  t.notOk(roleMaySend('customer', 'accept'));
  t.notOk(roleMaySend('customer', { t: 3, s: 1, fixes }));
  t.ok(roleMaySend('customer', 'ping') && roleMaySend('rider', 'ping'));
  t.notOk(roleMaySend('operations', 'ping'));
  t.notOk(roleMaySend('service', 'accept'));
  t.notOk(roleMaySend('rider', samples.offer[0] as never), 'a gateway message is sent by no one');
  t.notOk(roleMaySend('rider', { t: 99 } as never));
});

t.test('error codes: gateway codes never collide with the engine, close codes in the private range', async (t) => {
  const engineWs = Object.values(ErrorCodes).map((d) => d.ws);
  const gatewayWs = Object.values(GatewayErrorCodes).map((d) => d.ws);
  t.equal(new Set(gatewayWs).size, gatewayWs.length, 'gateway codes unique');
  for (const c of gatewayWs) t.ok(c >= 64 && c < 128, `${c} in 64..127`);
  for (const c of engineWs) t.ok(c < 64, `engine code ${c} stays below the gateway range`);
  t.same(
    Object.keys(GatewayErrorCodes).filter((k) => Object.hasOwn(ErrorCodes, k)),
    [],
    'no gateway name is an engine name',
  );
  for (const code of [...Object.keys(ErrorCodes), ...Object.keys(GatewayErrorCodes)]) {
    t.ok(isWireErrorCode(code));
    t.equal(errorCodeOfWs(wsCodeOf(code as never)), code, `${code} round-trips through its byte`);
  }
  t.notOk(isWireErrorCode('QD_ERR_NOPE'));
  t.notOk(isWireErrorCode('toString'));
  t.equal(errorCodeOfWs(127), undefined);
  const close = Object.values(CloseCodes);
  t.equal(new Set(close).size, close.length, 'close codes unique');
  for (const c of close) t.ok(c >= 4000 && c <= 4999, `${c} in 4000..4999`);
});

t.test('every message type round-trips, from either side', async (t) => {
  for (const n of names) t.ok(samples[n].length > 0, `${n} has a sample`);
  for (const msg of allSamples) {
    const bytes = encode(msg);
    t.ok(bytes instanceof Uint8Array);
    t.ok(bytes.byteLength <= Limits.maxFrameBytes);
    t.ok(bytes[0] >= 0x80 && bytes[0] <= 0x8f || bytes[0] === 0xde || bytes[0] === 0xdf, 'a msgpack map');
    t.same(decode(bytes), { ok: true, msg }, describe(msg));
    const side = isClientMessageName(messageName(msg.t)!) ? 'client' : 'server';
    t.same(side === 'client' ? decode(bytes, 'client') : decode(bytes, 'server'), { ok: true, msg }, `${describe(msg)} from the ${side}`);
    // A plain msgpack reader sees the same map: no records, no extensions.
    t.same(new Packr({ useRecords: false, mapsAsObjects: true }).unpack(bytes), msg);
  }
  const copy = new Uint8Array(encode(samples.fix[0]));
  t.same(decode(copy.buffer), { ok: true, msg: samples.fix[0] }, 'an ArrayBuffer (what uWS hands over) decodes too');
});

t.test('encode writes only listed fields and leaves undefined out', async (t) => {
  const sparse = { t: 4, s: 3, capacity: undefined, position: undefined } as Message;
  t.same([...encode(sparse)], [...encode({ t: 4, s: 3 })], 'undefined is absent, not an extension');
  const extra = { ...samples.offer[0], pickup: { lat: 1, lng: 2, ts: 5 }, secret: 'x' } as unknown as Message;
  const back = decode(encode(extra));
  t.same(back, { ok: true, msg: { ...samples.offer[0], pickup: { lat: 1, lng: 2 } } }, 'extras on the object never reach the wire');
  t.throws(() => encode({ t: 99 } as unknown as Message), TypeError);
});

t.test('decode refuses each kind of malformed frame with the code and field', async (t) => {
  const fix = { t: 2, s: 7, lat: 12.9, lng: 77.6, ts: T0, seq: 1 };
  const withFix = (patch: Record<string, unknown>) => pack({ ...fix, ...patch });
  const long = (n: number) => 'x'.repeat(n);
  const tooMany = Array.from({ length: Limits.maxFixesPerFrame + 1 }, (_, i): FixTuple => [12.9, 77.6, T0 + i, i]);
  const noLat = { ...fix } as Record<string, unknown>;
  delete noLat.lat;
  const cases: Array<[string, Uint8Array | ArrayBuffer, string, string | undefined]> = [
    ['empty frame', new Uint8Array(0), 'QD_ERR_MALFORMED_FRAME', undefined],
    ['text, not msgpack', new TextEncoder().encode('{"t":2}'), 'QD_ERR_MALFORMED_FRAME', undefined],
    ['truncated map', pack(fix).subarray(0, 9), 'QD_ERR_MALFORMED_FRAME', undefined],
    ['map then trailing bytes', new Uint8Array([...pack(fix), 0x01]), 'QD_ERR_MALFORMED_FRAME', undefined],
    ['two maps in one frame', new Uint8Array([...pack(fix), ...pack(fix)]), 'QD_ERR_MALFORMED_FRAME', undefined],
    ['an array, not a map', pack([2, 7, 12.9]), 'QD_ERR_MALFORMED_FRAME', undefined],
    ['a number, not a map', pack(2), 'QD_ERR_MALFORMED_FRAME', undefined],
    ['a string, not a map', pack('fix'), 'QD_ERR_MALFORMED_FRAME', undefined],
    ['nil', new Uint8Array([0xc0]), 'QD_ERR_MALFORMED_FRAME', undefined],
    ['t missing', pack({ s: 1 }), 'QD_ERR_MALFORMED_FRAME', 't'],
    ['t a string', pack({ t: 'fix', s: 1 }), 'QD_ERR_MALFORMED_FRAME', 't'],
    ['t fractional', pack({ t: 2.5, s: 1 }), 'QD_ERR_MALFORMED_FRAME', 't'],
    ['t unknown', pack({ t: 99, s: 1 }), 'QD_ERR_UNKNOWN_MESSAGE_TYPE', 't'],
    ['t negative', pack({ t: -1 }), 'QD_ERR_UNKNOWN_MESSAGE_TYPE', 't'],
    ['t above a byte', pack({ t: 300 }), 'QD_ERR_UNKNOWN_MESSAGE_TYPE', 't'],
    ['s missing', pack({ t: 7, orderId: 'o-1' }), 'QD_ERR_INVALID_ARGUMENT', 's'],
    ['s zero', withFix({ s: 0 }), 'QD_ERR_INVALID_ARGUMENT', 's'],
    ['s fractional', withFix({ s: 1.5 }), 'QD_ERR_INVALID_ARGUMENT', 's'],
    ['s beyond uint32', withFix({ s: 2 ** 32 }), 'QD_ERR_INVALID_ARGUMENT', 's'],
    ['s a string', withFix({ s: '7' }), 'QD_ERR_INVALID_ARGUMENT', 's'],
    ['lat missing', pack(noLat), 'QD_ERR_INVALID_ARGUMENT', 'lat'],
    ['lat a string', withFix({ lat: '12.9' }), 'QD_ERR_INVALID_ARGUMENT', 'lat'],
    ['lat nil', withFix({ lat: null }), 'QD_ERR_INVALID_ARGUMENT', 'lat'],
    ['lat NaN', withFix({ lat: NaN }), 'QD_ERR_INVALID_ARGUMENT', 'lat'],
    ['lat Infinity', withFix({ lat: Infinity }), 'QD_ERR_INVALID_ARGUMENT', 'lat'],
    ['lng -Infinity', withFix({ lng: -Infinity }), 'QD_ERR_INVALID_ARGUMENT', 'lng'],
    ['lat above 90', withFix({ lat: 90.0001 }), 'QD_ERR_INVALID_ARGUMENT', 'lat'],
    ['lng below -180', withFix({ lng: -180.5 }), 'QD_ERR_INVALID_ARGUMENT', 'lng'],
    ['ts negative', withFix({ ts: -1 }), 'QD_ERR_INVALID_ARGUMENT', 'ts'],
    ['ts fractional', withFix({ ts: T0 + 0.5 }), 'QD_ERR_INVALID_ARGUMENT', 'ts'],
    ['ts a msgpack timestamp', withFix({ ts: new Date(T0) }), 'QD_ERR_INVALID_ARGUMENT', 'ts'],
    ['seq a uint64 beyond 2^53', withFix({ seq: 2n ** 63n }), 'QD_ERR_INVALID_ARGUMENT', 'seq'],
    ['seq negative', withFix({ seq: -3 }), 'QD_ERR_INVALID_ARGUMENT', 'seq'],
    ['unknown field', withFix({ speed: 3 }), 'QD_ERR_INVALID_ARGUMENT', 'speed'],
    ['inherited name as a field', withFix({ toString: 1 }), 'QD_ERR_INVALID_ARGUMENT', 'toString'],
    ['orderId a number', pack({ t: 7, s: 1, orderId: 42 }), 'QD_ERR_INVALID_ARGUMENT', 'orderId'],
    ['orderId empty', pack({ t: 7, s: 1, orderId: '' }), 'QD_ERR_INVALID_ARGUMENT', 'orderId'],
    ['orderId too long', pack({ t: 7, s: 1, orderId: long(Limits.maxIdLength + 1) }), 'QD_ERR_INVALID_ARGUMENT', 'orderId'],
    ['on not a boolean', pack({ t: 6, s: 1, on: 1 }), 'QD_ERR_INVALID_ARGUMENT', 'on'],
    ['where not a place', pack({ t: 9, s: 1, orderId: 'o', where: 'home' }), 'QD_ERR_INVALID_ARGUMENT', 'where'],
    ['capacity too large', pack({ t: 4, s: 1, capacity: Limits.maxCapacity + 1 }), 'QD_ERR_INVALID_ARGUMENT', 'capacity'],
    ['capacity zero', pack({ t: 4, s: 1, capacity: 0 }), 'QD_ERR_INVALID_ARGUMENT', 'capacity'],
    ['position not a map', pack({ t: 4, s: 1, position: [12.9, 77.6] }), 'QD_ERR_INVALID_ARGUMENT', 'position'],
    ['position.lat NaN', pack({ t: 4, s: 1, position: { lat: NaN, lng: 77.6 } }), 'QD_ERR_INVALID_ARGUMENT', 'position.lat'],
    ['position.lng missing', pack({ t: 4, s: 1, position: { lat: 12.9 } }), 'QD_ERR_INVALID_ARGUMENT', 'position.lng'],
    ['position extra key', pack({ t: 4, s: 1, position: { lat: 1, lng: 2, alt: 3 } }), 'QD_ERR_INVALID_ARGUMENT', 'position.alt'],
    ['otp too long', pack({ t: 11, s: 1, orderId: 'o', otp: long(Limits.maxOtpLength + 1) }), 'QD_ERR_INVALID_ARGUMENT', 'otp'],
    ['proofRef too long', pack({ t: 11, s: 1, orderId: 'o', proofRef: long(Limits.maxProofRefLength + 1) }), 'QD_ERR_INVALID_ARGUMENT', 'proofRef'],
    ['afterSeq negative', pack({ t: 20, s: 1, orderId: 'o', afterSeq: -1 }), 'QD_ERR_INVALID_ARGUMENT', 'afterSeq'],
    ['fixes not an array', pack({ t: 3, s: 1, fixes: { lat: 1 } }), 'QD_ERR_INVALID_ARGUMENT', 'fixes'],
    ['fixes empty', pack({ t: 3, s: 1, fixes: [] }), 'QD_ERR_INVALID_ARGUMENT', 'fixes'],
    ['too many fixes', pack({ t: 3, s: 1, fixes: tooMany }), 'QD_ERR_INVALID_ARGUMENT', 'fixes'],
    ['a fix of three numbers', pack({ t: 3, s: 1, fixes: [fixes[0], [1, 2, 3]] }), 'QD_ERR_INVALID_ARGUMENT', 'fixes[1]'],
    ['a fix as a map', pack({ t: 3, s: 1, fixes: [{ lat: 1, lng: 2, ts: 3, seq: 4 }] }), 'QD_ERR_INVALID_ARGUMENT', 'fixes[0]'],
    ['a NaN inside a batch', pack({ t: 3, s: 1, fixes: [fixes[0], fixes[1], [NaN, 77.6, T0, 3]] }), 'QD_ERR_INVALID_ARGUMENT', 'fixes[2].lat'],
    ['an out-of-range lng inside a batch', pack({ t: 3, s: 1, fixes: [[12.9, 181, T0, 3]] }), 'QD_ERR_INVALID_ARGUMENT', 'fixes[0].lng'],
    ['frame over the size limit', new Uint8Array(Limits.maxFrameBytes + 1).fill(0x80), 'QD_ERR_PAYLOAD_TOO_LARGE', undefined],
    ['huge string over the size limit', pack({ t: 7, s: 1, orderId: long(100_000) }), 'QD_ERR_PAYLOAD_TOO_LARGE', undefined],
  ];
  for (const [name, bytes, code, field] of cases) {
    const f = failed(decode(bytes));
    t.equal(f.code, code, `${name}: code`);
    t.equal(f.field, field, `${name}: field`);
    t.type(f.message, 'string');
    t.ok(f.message.length > 0 && f.message.length <= 200, `${name}: short message (${f.message})`);
  }
});

t.test('refusals carry s and t when readable, so the error frame names the command', async (t) => {
  const f = failed(decode(pack({ t: 2, s: 41, lat: NaN, lng: 1, ts: T0, seq: 1 })));
  t.equal(f.s, 41);
  t.equal(f.t, 2);
  t.match(f.message, /lat/);
  const frame = errorFrame(f);
  t.same(frame, { t: 66, s: 41, code: 1, error: 'QD_ERR_INVALID_ARGUMENT', message: f.message, field: 'lat' });
  t.equal(failed(decode(pack({ t: 2, s: -4, lat: 1 }))).s, undefined, 'an unreadable s is left out');
});

t.test('the gateway refuses gateway-only messages from apps, and apps the reverse', async (t) => {
  for (const n of serverNames) {
    const f = failed(decode(encode(samples[n][0]), 'client'));
    t.equal(f.code, 'QD_ERR_UNKNOWN_MESSAGE_TYPE', `${n} from a client`);
    t.equal(f.field, 't');
  }
  for (const n of clientNames) t.equal(failed(decode(encode(samples[n][0]), 'server')).code, 'QD_ERR_UNKNOWN_MESSAGE_TYPE', `${n} from the server`);
});

t.test('nil for an optional field is absent; apps are strict, gateway messages lenient', async (t) => {
  t.same(decode(pack({ t: 4, s: 3, capacity: null, position: null })), { ok: true, msg: { t: 4, s: 3 } });
  t.same(decode(pack({ t: 20, s: 1, orderId: 'o-1', afterSeq: null })), { ok: true, msg: { t: 20, s: 1, orderId: 'o-1' } });
  // A newer gateway may add optional fields; an app on the same version drops them.
  const ack = decode(pack({ t: 65, s: 3, result: { seq: 2, future: 'x' }, hint: 1 }), 'server');
  t.same(ack, { ok: true, msg: { t: 65, s: 3, result: { seq: 2 } } });
  t.equal(failed(decode(pack({ t: 7, s: 1, orderId: 'o', hint: 1 }))).field, 'hint', 'an app may not add fields');
  t.equal(failed(decode(pack({ t: 80, orderId: 'o', seq: 1, status: 'lost', event: 'X', at: 1, riderId: null }))).field, 'status');
  t.equal(failed(decode(pack({ t: 80, orderId: 'o', seq: 1, status: 'searching', event: 'X', at: 1 }))).field, 'riderId', 'nil is a value, absence is not');
  t.equal(failed(decode(pack({ t: 72, status: 'available', orderIds: Array(Limits.maxOrderIds + 1).fill('o'), seq: 1 }))).field, 'orderIds');
  t.equal(failed(decode(pack({ t: 72, status: 'available', orderIds: ['o', 7], seq: 1 }))).field, 'orderIds[1]');
});

t.test('a prototype key is just an unknown field', async (t) => {
  // 0x82 {t: 5, "__proto__": {s: 1}}: msgpackr renames the key, and nothing reaches Object.prototype.
  const bytes = new Uint8Array([0x82, 0xa1, 0x74, 0x05, 0xa9, ...new TextEncoder().encode('__proto__'), 0x81, 0xa1, 0x73, 0x01]);
  const f = failed(decode(bytes));
  t.equal(f.code, 'QD_ERR_INVALID_ARGUMENT');
  t.notOk(Object.hasOwn(Object.prototype, 's'));
  t.equal(({} as Record<string, unknown>).s, undefined);
});

t.test('decode answers whatever it is given and never throws', async (t) => {
  t.equal(failed(decode('{"t":1}' as unknown as Uint8Array)).code, 'QD_ERR_MALFORMED_FRAME', 'a text frame');
  t.equal(failed(decode(null as unknown as Uint8Array)).code, 'QD_ERR_MALFORMED_FRAME');
  // Deep nesting inside the size limit: a stack overflow in the msgpack reader is caught.
  const deep = new Uint8Array(30_000).fill(0x91);
  deep.set([0x81, 0xa1, 0x74], 0);
  deep[deep.length - 1] = 0x01;
  t.notOk(decode(deep).ok);
  t.same(decode(encode(samples.fix[0])), { ok: true, msg: samples.fix[0] }, 'still decodes after that');
});

t.test('fuzz: 20k random and mutated frames, decode never throws and accepts only what it re-encodes', async (t: Test) => {
  const rnd = mulberry32(20240601);
  const int = (n: number) => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  const valid = allSamples.map((m) => encode(m));
  const weird: unknown[] = [
    NaN, Infinity, -Infinity, -1, 0, 1, 0.5, 2 ** 31, 2 ** 32, 2 ** 53, -(2 ** 53), 1e308, 90.5, -181, '', 'o-1', 'x'.repeat(65),
    'x'.repeat(600), null, true, false, [], {}, [1, 2, 3, 4], [[1, 2, 3, 4]], { lat: 1, lng: 2 }, { lat: NaN, lng: 0 }, new Date(T0),
    2n ** 64n - 1n, -(2n ** 63n), new Uint8Array([1, 2, 3]), 'pickup', 'dropoff', 'offered', 'rider',
  ];
  const keys = [...new Set(names.flatMap((n) => messageFields(n).map((f) => f.name))), 't', '__proto__', 'constructor', 'zz'];
  const codes = Object.values(MessageType);
  // defineProperty, not assignment: m.__proto__ = x would change the prototype instead of adding a key.
  const set = (m: Record<string, unknown>, k: string, v: unknown) =>
    Object.defineProperty(m, k, { value: v, enumerable: true, writable: true, configurable: true });
  let throws = 0;
  let unstable = 0;
  let badFailure = 0;
  let accepted = 0;
  const seen = new Set<string>();
  for (let i = 0; i < 20_000; i++) {
    let bytes: Uint8Array;
    const mode = i % 4;
    if (mode === 0) {
      // Random bytes, half of them starting like a map so they get past the first check.
      bytes = new Uint8Array(int(48));
      for (let j = 0; j < bytes.length; j++) bytes[j] = int(256);
      if (bytes.length > 0 && rnd() < 0.5) bytes[0] = 0x80 + int(16);
    } else if (mode === 1) {
      // A valid frame with a few bytes flipped, cut short or grown.
      bytes = new Uint8Array(pick(valid));
      const flips = 1 + int(4);
      for (let k = 0; k < flips; k++) bytes[int(bytes.length)] = int(256);
      const r = rnd();
      if (r < 0.2) bytes = bytes.subarray(0, int(bytes.length));
      else if (r < 0.3) bytes = new Uint8Array([...bytes, int(256)]);
    } else if (mode === 2) {
      // A valid message with one or two fields replaced by odd values.
      const m = { ...(pick(allSamples) as unknown as Record<string, unknown>) };
      const edits = 1 + int(2);
      for (let k = 0; k < edits; k++) set(m, pick(keys), pick(weird));
      bytes = pack(m);
    } else {
      // A map of random keys and values under a real or random type.
      const m: Record<string, unknown> = { t: rnd() < 0.8 ? pick(codes) : pick(weird) };
      const n = int(8);
      for (let k = 0; k < n; k++) set(m, pick(keys), rnd() < 0.5 ? pick(weird) : int(1000));
      bytes = pack(m);
    }
    let r: DecodeResult;
    try {
      r = decode(bytes);
    } catch {
      throws++;
      continue;
    }
    if (r.ok) {
      accepted++;
      // Whatever decode accepts is a valid message: encoding it gives the same message back.
      let again: DecodeResult | undefined;
      try {
        again = decode(encode(r.msg));
      } catch {
        throws++;
      }
      if (!again || !again.ok || JSON.stringify(again.msg) !== JSON.stringify(r.msg)) unstable++;
    } else {
      seen.add(r.code);
      if (!isWireErrorCode(r.code) || typeof r.message !== 'string' || (r.field !== undefined && typeof r.field !== 'string')) badFailure++;
    }
  }
  t.equal(throws, 0, 'no throws');
  t.equal(unstable, 0, 'accepted frames re-encode to themselves');
  t.equal(badFailure, 0, 'every refusal has a known code and a message');
  t.ok(accepted > 100, `some frames survive mutation (${accepted})`);
  t.ok(accepted < 20_000 / 2, 'most are refused');
  for (const code of ['QD_ERR_MALFORMED_FRAME', 'QD_ERR_UNKNOWN_MESSAGE_TYPE', 'QD_ERR_INVALID_ARGUMENT']) t.ok(seen.has(code), `saw ${code}`);
  t.same(decode(valid[0]), { ok: true, msg: allSamples[0] }, 'the decoder is unharmed');
});

t.test('error frames from engine errors, decode failures and gateway refusals', async (t) => {
  const transition = new DispatchError('QD_ERR_INVALID_TRANSITION', { entity: 'order', id: 'o-1', action: 'pickUp', state: 'delivered' });
  t.same(errorFrame(transition, 9), {
    t: 66,
    s: 9,
    code: 5,
    error: 'QD_ERR_INVALID_TRANSITION',
    message: 'order o-1 cannot pickUp while delivered',
    state: 'delivered',
  });
  const arg = errorFrame(invalidArgument('capacity', 'must be an integer 1..10'), 3);
  t.equal(arg.code, ErrorCodes.QD_ERR_INVALID_ARGUMENT.ws);
  t.equal(arg.field, 'capacity');
  t.same(errorFrame(DispatchError.fromJSON({ code: 'QD_ERR_NO_OFFER', details: { riderId: 'r', orderId: 'o' } })).code, 7, 'an error rebuilt after a thread hop');
  const internal = errorFrame(new Error('pg: password authentication failed for user "qd"'), 4);
  t.same(internal, { t: 66, s: 4, code: 16, error: 'QD_ERR_INTERNAL', message: 'internal error' }, 'an unexpected error leaks nothing');
  t.equal(errorFrame('boom').error, 'QD_ERR_INTERNAL');
  t.equal(errorFrame({ ok: false, code: 'QD_ERR_NOPE', message: 'x' }).error, 'QD_ERR_INTERNAL', 'a forged failure code is not trusted');

  const limited = gatewayErrorFrame('QD_ERR_RATE_LIMITED', { s: 12, retryAfterMs: 249.2 });
  t.same(limited, { t: 66, s: 12, code: 67, error: 'QD_ERR_RATE_LIMITED', message: GatewayErrorCodes.QD_ERR_RATE_LIMITED.message, retryAfterMs: 250 });
  t.same(gatewayErrorFrame('QD_ERR_UNAUTHENTICATED'), { t: 66, code: 70, error: 'QD_ERR_UNAUTHENTICATED', message: GatewayErrorCodes.QD_ERR_UNAUTHENTICATED.message });
  for (const code of Object.keys(GatewayErrorCodes) as Array<keyof typeof GatewayErrorCodes>) {
    const frame = gatewayErrorFrame(code, { s: 1, field: 'f' });
    t.equal(frame.code, GatewayErrorCodes[code].ws);
    t.same(decode(encode(frame), 'server'), { ok: true, msg: frame }, `${code} frame decodes`);
  }
  // Oversized text is clipped so an app never refuses our own frame.
  const long = errorFrame(new DispatchError('QD_ERR_INVALID_ARGUMENT', { field: 'f'.repeat(100), reason: 'r'.repeat(2000) }), 1);
  t.equal(long.message.length, Limits.maxTextLength);
  t.equal(long.field!.length, Limits.maxIdLength);
  t.ok(decode(encode(long), 'server').ok);
});

t.test('describe names the message, shows batches by size and masks the OTP', async (t) => {
  t.equal(describe(samples.fix[0]), 'fix s=1 lat=-33.8688 lng=151.2093 ts=1700000000000 seq=7');
  t.equal(describe(samples.fixes[0]), 'fixes s=2 fixes=[2]');
  const d = describe(samples.delivered[0]);
  t.match(d, /^delivered s=12 orderId="o-1" otp=\*\*\* proofRef=/);
  t.notMatch(d, /4821/);
  t.equal(describe(samples.riderState[0]), 'riderState status="toPickup" orderIds=[o-1,o-3] seq=17');
  t.equal(describe(samples.ack[2]), 'ack s=4 result={status="onBreak" seq=3}');
  t.equal(describe({ t: 42 } as unknown as Message), 'unknown(t=42)');
});

t.test('packFixes packs fix messages as [lat, lng, ts, seq] per fix', async (t) => {
  t.same([...packFixes(samples.fix[0])], [-33.8688, 151.2093, T0, 7]);
  t.same([...packFixes(samples.fixes[0])], [12.9716, 77.5946, T0, 41, 12.9721, 77.5951, T0 + 1000, 42]);
});

// A frame as uWS hands it over: an ArrayBuffer of exactly its bytes (a Buffer's slice shares its pool).
const bufferOf = (bytes: Uint8Array): ArrayBuffer => new Uint8Array(bytes).buffer;

t.test('readFixFrame reads fix frames as decode does, and leaves every other frame to it', async (t) => {
  for (const msg of [...samples.fix, ...samples.fixes]) {
    const read = readFixFrame(bufferOf(encode(msg)));
    t.same(read && { t: read.t, s: read.s, fixes: [...read.fixes] }, { t: msg.t, s: msg.s, fixes: [...packFixes(msg)] }, `t ${msg.t} s ${msg.s}`);
  }
  // Other encoders' forms of the same numbers: uint64 and int64 times, float32, int8, key order.
  const other = pack({ fixes: [[12.5, -77, T0, 0]], s: 70_000, t: 3 });
  t.same([...readFixFrame(bufferOf(other))!.fixes], [12.5, -77, T0, 0]);
  for (const msg of [...allSamples.filter((m) => m.t !== MessageType.fix && m.t !== MessageType.fixes), { t: 3, s: 1, fixes: [] }, { t: 3, s: 0, fixes }, { t: 2, s: 1, lat: 91, lng: 0, ts: T0, seq: 1 }, { t: 3, s: 1, fixes, extra: 1 }]) {
    t.equal(readFixFrame(bufferOf(pack(msg))), undefined, `left to decode: ${JSON.stringify(msg).slice(0, 60)}`);
  }
  // Whatever the bytes: a frame it reads, decode reads the same.
  const rand = mulberry32(11);
  const base = encode({ t: 3, s: 9, fixes: [[12.9716, 77.5946, T0, 41], [-12.5, -170, T0 + 5, 3], [0, 0, 0, 0]] });
  let read = 0;
  for (let i = 0; i < 20_000; i++) {
    const bytes = Uint8Array.from(base.subarray(0, rand() < 0.1 ? Math.floor(rand() * base.length) : base.length));
    for (let k = 1 + Math.floor(rand() * 3); k > 0; k--) bytes[Math.floor(rand() * bytes.length)] = Math.floor(rand() * 256);
    const fast = readFixFrame(bufferOf(bytes));
    if (!fast) continue;
    read++;
    const slow = decode(bytes, 'client');
    if (!slow.ok || (slow.msg.t !== 2 && slow.msg.t !== 3)) {
      t.fail(`read a frame decode refuses: ${Buffer.from(bytes).toString('hex')}`);
      break;
    }
    const same = slow.msg.t === fast.t && slow.msg.s === fast.s && Object.is([...packFixes(slow.msg)].join(), [...fast.fixes].join());
    if (!same) {
      t.fail(`read differently: ${Buffer.from(bytes).toString('hex')}`);
      break;
    }
  }
  t.ok(read > 100, `${read} mutated frames read`);
});

t.test('a fix ack from its template is the bytes of the general encoding', async (t) => {
  const numbers = [0, 1, 127, 128, 255, 256, 500, 65535, 65536, Limits.maxClientSeq];
  for (const s of numbers.filter((n) => n > 0)) {
    for (const [accepted, stale, rejected] of [[0, 0, 0], [10, 0, 0], [127, 128, 255], [500, 256, 65535], [65536, 1, Limits.maxClientSeq]]) {
      const general = pack({ t: MessageType.ack, s, result: { accepted, stale, rejected } });
      t.same(Buffer.from(encodeFixAck(s, accepted!, stale!, rejected!)), Buffer.from(general), `s ${s} ${accepted}/${stale}/${rejected}`);
    }
  }
  const sent = encode({ t: MessageType.ack, s: 5, result: { accepted: 3, stale: 1, rejected: 0 } });
  t.same(decode(sent), { ok: true, msg: { t: MessageType.ack, s: 5, result: { accepted: 3, stale: 1, rejected: 0 } } }, 'encode writes fix acks from it');
});

t.test('a full batch of fixes fits the frame limit', async (t) => {
  const full = Array.from({ length: Limits.maxFixesPerFrame }, (_, i): FixTuple => [12.9 + i * 1e-5, 77.6 - i * 1e-5, T0 + i * 1000, 1_000_000 + i]);
  const bytes = encode({ t: 3, s: Limits.maxClientSeq, fixes: full });
  t.ok(bytes.byteLength < Limits.maxFrameBytes, `${bytes.byteLength} bytes`);
  const r = decode(bytes, 'client');
  t.ok(r.ok && r.msg.t === 3 && r.msg.fixes.length === Limits.maxFixesPerFrame);
});

// ---------------------------------------------------------------- docs/protocol.md

const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');

/** Text under a `## heading` up to the next `## `. */
function section(text: string, heading: string): string {
  const start = text.indexOf(`\n## ${heading}\n`);
  if (start < 0) return '';
  const end = text.indexOf('\n## ', start + 4);
  return text.slice(start, end < 0 ? undefined : end);
}

interface DocFacts {
  messages: Array<{ name: string; code: number; fromApp: boolean; roles: string[] }>;
  sections: Array<{ name: string; code: number; fields: Array<{ name: string; type: string; optional: boolean }> }>;
  errors: Array<[string, number]>;
  close: Array<[string, number]>;
  limits: Array<[string, number]>;
  version: number | undefined;
}

/** Everything the docs check compares, read from the markdown tables. */
function readDoc(text: string): DocFacts {
  const messagesText = section(text, 'Messages');
  const [table, ...parts] = messagesText.split(/^### /m);
  return {
    messages: [...table.matchAll(/^\| `(\w+)` \| (\d+) \| (app → gateway|gateway → app) \| ([\w, ]+) \|$/gm)].map((m) => ({
      name: m[1],
      code: +m[2],
      fromApp: m[3] === 'app → gateway',
      roles: m[4].split(', ').sort(),
    })),
    sections: parts.flatMap((part) => {
      const head = /^`(\w+)` \((\d+)\)$/.exec(part.split('\n')[0]);
      if (!head) return [];
      const fields = [...part.matchAll(/^\| `(\w+)` \| `([^`]+)` \| (yes|no) \|/gm)].map((m) => ({ name: m[1], type: m[2], optional: m[3] === 'no' }));
      return [{ name: head[1], code: +head[2], fields }];
    }),
    errors: [...section(text, 'Error codes').matchAll(/^\| `(QD_ERR_\w+)` \| (\d+) \|/gm)].map((m) => [m[1], +m[2]]),
    close: [...section(text, 'Close codes').matchAll(/^\| (\d{4}) \| `(\w+)` \|/gm)].map((m) => [m[2], +m[1]]),
    limits: [...section(text, 'Limits').matchAll(/^\| `(\w+)` \| (\d+) \|/gm)].map((m) => [m[1], +m[2]]),
    version: /Protocol version: \*\*(\d+)\*\*/.exec(text) ? +/Protocol version: \*\*(\d+)\*\*/.exec(text)![1] : undefined,
  };
}

/** Every disagreement between a doc and the module, one line each; empty when they agree. */
function disagreements(facts: DocFacts): string[] {
  const out: string[] = [];
  const same = (what: string, a: unknown, b: unknown) => {
    if (JSON.stringify(a) !== JSON.stringify(b)) out.push(`${what}: doc ${JSON.stringify(a)} vs module ${JSON.stringify(b)}`);
  };
  const byName = <V>(pairs: Array<[string, V]>) => Object.fromEntries([...pairs].sort(([a], [b]) => a.localeCompare(b)));
  const sorted = <V>(o: Record<string, V>) => byName(Object.entries(o));
  same('version', facts.version, PROTOCOL_VERSION);
  same('message codes', byName(facts.messages.map((m) => [m.name, m.code])), sorted(MessageType));
  same('message rows', facts.messages.length, names.length);
  for (const m of facts.messages) {
    if (!Object.hasOwn(MessageType, m.name)) continue;
    const name = m.name as MessageName;
    same(`${name} direction`, m.fromApp, isClientMessageName(name));
    if (isClientMessageName(name)) same(`${name} roles`, m.roles, [...clientMessageRoles[name]].sort());
  }
  same('message sections', facts.sections.map((s) => s.name).sort(), [...names].sort());
  for (const s of facts.sections) {
    if (!Object.hasOwn(MessageType, s.name)) continue;
    const name = s.name as MessageName;
    same(`${name} heading code`, s.code, MessageType[name]);
    same(`${name} fields`, s.fields, messageFields(name));
  }
  same('gateway error codes', byName(facts.errors), sorted(Object.fromEntries(Object.entries(GatewayErrorCodes).map(([k, d]) => [k, d.ws]))));
  same('gateway error rows', facts.errors.length, Object.keys(GatewayErrorCodes).length);
  same('close codes', byName(facts.close), sorted(CloseCodes));
  same('close rows', facts.close.length, Object.keys(CloseCodes).length);
  same('limits', byName(facts.limits), sorted(Limits));
  same('limit rows', facts.limits.length, Object.keys(Limits).length);
  return out;
}

t.test('docs/protocol.md lists exactly the module: messages, fields, error codes, close codes, limits', async (t) => {
  const facts = readDoc(doc);
  t.same(disagreements(facts), []);
  t.equal(facts.messages.length, names.length, 'message table read');
  t.equal(facts.sections.length, names.length, 'message sections read');
  t.equal(facts.sections.find((s) => s.name === 'fix')?.fields.length, 5, 'field tables read');
  t.equal(facts.errors.length, Object.keys(GatewayErrorCodes).length, 'error table read');
  t.match(section(doc, 'Error codes'), /\(errors\.md\)/, 'engine codes by reference to docs/errors.md');
});

t.test('the docs check sees each kind of disagreement', async (t) => {
  // Guards against a regex that reads nothing and so agrees with everything.
  const edits: Array<[string, string, string, RegExp]> = [
    ['a changed message code', '| `fix` | 2 |', '| `fix` | 12 |', /message codes/],
    ['a wrong role', '| `follow` | 20 | app → gateway | customer |', '| `follow` | 20 | app → gateway | rider |', /follow roles/],
    ['a missing field', '| `seq` | `uint` | yes | the rider\'s fix counter', '| `sequence` | `uint` | yes | the rider\'s fix counter', /fix fields/],
    ['a field marked optional', '| `on` | `bool` | yes |', '| `on` | `bool` | no |', /break fields/],
    ['a changed range', '| `capacity` | `int(1..10)` |', '| `capacity` | `int(1..12)` |', /online fields/],
    ['a changed gateway code', '| `QD_ERR_RATE_LIMITED` | 67 |', '| `QD_ERR_RATE_LIMITED` | 77 |', /gateway error codes/],
    ['a dropped close code', '| 4006 | `SLOW_CONSUMER` |', '| 4006 | SLOW_CONSUMER |', /close/],
    ['a changed limit', '| `maxFixesPerFrame` | 500 |', '| `maxFixesPerFrame` | 800 |', /limits/],
  ];
  for (const [what, from, to, expect] of edits) {
    t.ok(doc.includes(from), `${what}: the doc has the text to change`);
    const found = disagreements(readDoc(doc.replace(from, to)));
    t.ok(found.some((line) => expect.test(line)), `${what} is reported`);
  }
});

// The gateway end to end over real sockets: a rider's whole delivery while its customer watches, replays, refusals.
import t from 'tap';
import WebSocket from 'ws';
import { Packr } from 'msgpackr';
import { signToken } from '../../gateway/auth.ts';
import { CloseCodes, Limits, MessageType, gatewayErrorFrame, type ServerMessage } from '../../gateway/protocol.ts';
import { offset, orderSpec, STORE, T0 } from '../engine/harness.ts';
import { ackOf, auth, connect, setup, type Client } from './clients.ts';

const rawPackr = new Packr({ useRecords: false });
/** A msgpack map from already-encoded values: 64-bit integers as other msgpack libraries write them. */
const rawMap = (entries: Array<[string, Uint8Array | unknown]>): Uint8Array =>
  new Uint8Array(Buffer.concat([Uint8Array.of(0x80 | entries.length), ...entries.flatMap(([k, v]) => [rawPackr.pack(k), v instanceof Uint8Array ? v : rawPackr.pack(v)])]));
const uint64 = (n: bigint): Uint8Array => {
  const b = Buffer.alloc(9);
  b[0] = 0xcf;
  b.writeBigUInt64BE(n, 1);
  return new Uint8Array(b);
};
const int64 = (n: bigint): Uint8Array => {
  const b = Buffer.alloc(9);
  b[0] = 0xd3;
  b.writeBigInt64BE(n, 1);
  return new Uint8Array(b);
};
/** The acks and errors received, in order, as [s, code or 'ack', dup]. */
const answers = (c: Client) =>
  c.inbox
    .filter((m) => m.t === MessageType.ack || m.t === MessageType.error)
    .map((m) => [(m as { s?: number }).s, m.t === MessageType.ack ? 'ack' : (m as { error: string }).error, (m as { dup?: boolean }).dup ?? false]);

t.test('a rider delivers an order over the socket while its customer sees every step', async (t) => {
  const { engine, clock, gw } = await setup(t);
  const rider = await connect(gw.port, 'rider', 'rider-7');
  const hello = rider.inbox[0] as Extract<ServerMessage, { t: 64 }>;
  t.equal(hello.role, 'rider');
  t.equal(hello.userId, 'rider-7');

  const start = offset(STORE, 500, 0);
  rider.send({ t: MessageType.online, s: 1, position: start, capacity: 1 });
  const online = await rider.next(ackOf(1), 'online ack');
  t.match(online, { t: MessageType.ack, s: 1, result: { status: 'available' } });

  const spec = orderSpec({ customerId: 'cust-42' });
  const created = await engine.createOrder(spec);
  const customer = await connect(gw.port, 'customer', 'cust-42');
  customer.send({ t: MessageType.follow, s: 1, orderId: spec.orderId });
  t.match(await customer.next(ackOf(1), 'follow ack'), { t: MessageType.ack, result: { orderId: spec.orderId, status: 'searching' } });

  clock.advance(1_000);
  await engine.tick();
  const offer = await rider.next((m) => m.t === MessageType.offer, 'offer');
  t.match(offer, { orderId: spec.orderId, storeId: spec.storeId });
  t.ok((offer as { expiresAt: number }).expiresAt > clock.now(), 'the offer carries its expiry');

  rider.send({ t: MessageType.accept, s: 2, orderId: spec.orderId });
  t.match(await rider.next(ackOf(2), 'accept ack'), { t: MessageType.ack, result: { status: 'assigned' } });
  rider.send({ t: MessageType.fix, s: 3, lat: STORE.lat, lng: STORE.lng, ts: clock.now(), seq: 1 });
  t.match(await rider.next(ackOf(3), 'fix ack'), { result: { accepted: 1, stale: 0, rejected: 0 } });
  await engine.tick();
  rider.send({ t: MessageType.pickedUp, s: 4, orderId: spec.orderId });
  t.match(await rider.next(ackOf(4), 'pickup ack'), { result: { status: 'pickedUp' } });
  rider.send({ t: MessageType.arrived, s: 5, orderId: spec.orderId, where: 'dropoff' });
  await rider.next(ackOf(5), 'arrived ack');
  rider.send({ t: MessageType.delivered, s: 6, orderId: spec.orderId, otp: 'nope' });
  t.match(await rider.next(ackOf(6), 'bad proof'), { t: MessageType.error, error: 'QD_ERR_BAD_PROOF', code: 9 });
  rider.send({ t: MessageType.delivered, s: 7, orderId: spec.orderId, otp: created.otp });
  t.match(await rider.next(ackOf(7), 'delivered ack'), { t: MessageType.ack, result: { status: 'delivered' } });

  await customer.next((m) => m.t === MessageType.orderStatus && (m as { status: string }).status === 'delivered', 'delivered status');
  const seen = customer.inbox.filter((m) => m.t === MessageType.orderStatus).map((m) => (m as { status: string }).status);
  t.same(seen, ['searching', 'offered', 'assigned', 'atPickup', 'pickedUp', 'atDropoff', 'delivered'], 'the customer saw every step, in order');
  const states = rider.inbox.filter((m) => m.t === MessageType.riderState).map((m) => (m as { status: string }).status);
  t.equal(states[states.length - 1], 'available', 'the rider was told it is free again');

  // Resume: a reconnecting customer asks from the last seq it saw and misses nothing.
  await customer.close();
  const again = await connect(gw.port, 'customer', 'cust-42');
  again.send({ t: MessageType.follow, s: 1, orderId: spec.orderId, afterSeq: 4 });
  await again.next((m) => m.t === MessageType.orderStatus && (m as { status: string }).status === 'delivered', 'resumed to the end');
  t.same(
    again.inbox.filter((m) => m.t === MessageType.orderStatus).map((m) => (m as { seq: number }).seq),
    [5, 6, 7],
    'resume replays exactly what came after',
  );
  await Promise.all([rider.close(), again.close()]);
  await gw.drain(100);
  await engine.close();
});

t.test('a reconnecting rider replays its queue: duplicates are answered from memory, stale commands get the current state', async (t) => {
  const { engine, gw } = await setup(t);
  const first = await connect(gw.port, 'rider', 'rider-8');
  const session = (first.inbox[0] as { session: string }).session;
  first.send({ t: MessageType.online, s: 1, position: STORE });
  await first.next(ackOf(1), 'online');
  first.send({ t: MessageType.break, s: 2, on: true });
  await first.next(ackOf(2), 'break');
  await first.close();

  const second = await connect(gw.port, 'rider', 'rider-8', `&session=${session}`);
  t.match(second.inbox[0], { t: MessageType.hello, resumed: true, lastS: 2 });
  // Right after hello, before anything is sent: where the rider stands.
  t.match(await second.next((m) => m.t === MessageType.riderState, 'state after hello'), { status: 'onBreak', orderIds: [] });
  second.send({ t: MessageType.online, s: 1, position: STORE });
  second.send({ t: MessageType.break, s: 2, on: true });
  second.send({ t: MessageType.break, s: 3, on: true });
  t.match(await second.next(ackOf(1), 'replayed 1'), { t: MessageType.ack, dup: true });
  t.match(await second.next(ackOf(2), 'replayed 2'), { t: MessageType.ack, dup: true });
  const stale = await second.next(ackOf(3), 'stale break');
  t.match(stale, { t: MessageType.error, error: 'QD_ERR_INVALID_TRANSITION', state: 'onBreak' });
  t.equal((await engine.getRider('rider-8')).seq, 3, 'nothing was applied twice (registered, online, break)');

  const other = await connect(gw.port, 'rider', 'rider-9', `&session=${session}`);
  t.match(other.inbox[0], { t: MessageType.hello, resumed: false, lastS: 0 }, "another user cannot take over a session");
  await Promise.all([second.close(), other.close()]);
  await gw.drain(100);
  await engine.close();
});

t.test('a reconnecting rider is told its state and its pending offer right after hello', async (t) => {
  const { engine, clock, gw } = await setup(t);
  const first = await connect(gw.port, 'rider', 'rider-offered');
  const session = (first.inbox[0] as { session: string }).session;
  first.send({ t: MessageType.online, s: 1, position: offset(STORE, 300, 0), capacity: 1 });
  await first.next(ackOf(1), 'online');
  const spec = orderSpec({ customerId: 'cust-offered' });
  await engine.createOrder(spec);
  clock.advance(1_000);
  await engine.tick();
  await first.next((m) => m.t === MessageType.offer, 'offer');
  await first.close();
  for (const query of [`&session=${session}`, '']) {
    const again = await connect(gw.port, 'rider', 'rider-offered', query);
    t.match(await again.next((m) => m.t === MessageType.riderState, 'state'), { status: 'offered' });
    t.match(await again.next((m) => m.t === MessageType.offer, 'the offer again'), { orderId: spec.orderId, storeId: spec.storeId });
    t.same(answers(again), [], 'without sending anything');
    await again.close();
  }
});

t.test('auth refusals at upgrade', async (t) => {
  const { engine, gw } = await setup(t);
  const refuse = async (url: string, status: number, what: string) => {
    const ws = new WebSocket(url);
    const code = await new Promise<number>((resolve) => {
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => resolve(101));
      ws.on('error', () => undefined);
    });
    t.equal(code, status, what);
    ws.terminate();
  };
  const base = `ws://127.0.0.1:${gw.port}/v1/ws`;
  await refuse(base, 401, 'no token');
  await refuse(`${base}?token=garbage`, 401, 'garbage token');
  const expired = signToken({ sub: 'r', role: 'rider', ttlSec: 1 }, { ...auth, now: () => Date.now() - 3_600_000 });
  await refuse(`${base}?token=${expired}`, 401, 'expired token');
  const otherAudience = signToken({ sub: 'r', role: 'rider', ttlSec: 60 }, { ...auth, audience: 'elsewhere' });
  await refuse(`${base}?token=${otherAudience}`, 401, 'wrong audience');
  const ops = signToken({ sub: 'o', role: 'operations', ttlSec: 60 }, auth);
  await refuse(`${base}?token=${ops}`, 403, 'operations use the ops feed, not the app socket');
  const metrics = await (await fetch(`http://127.0.0.1:${gw.port}/metrics`)).text();
  t.match(metrics, /quickdash_ws_auth_failures_total\{reason="malformed"\} 2/);
  t.equal((await fetch(`http://127.0.0.1:${gw.port}/healthz`)).status, 200);
  t.equal((await fetch(`http://127.0.0.1:${gw.port}/readyz`)).status, 200);
  await gw.drain(100);
  await engine.close();
});

t.test('roles and ownership: a customer sees only its own orders, a rider acts only as itself', async (t) => {
  const { engine, gw } = await setup(t);
  const spec = orderSpec({ customerId: 'alice' });
  await engine.createOrder(spec);
  const mallory = await connect(gw.port, 'customer', 'mallory');
  mallory.send({ t: MessageType.follow, s: 1, orderId: spec.orderId });
  t.match(await mallory.next(ackOf(1), 'foreign follow'), { t: MessageType.error, error: 'QD_ERR_ORDER_NOT_FOUND' });
  mallory.send({ t: MessageType.accept, s: 2, orderId: spec.orderId });
  t.match(await mallory.next(ackOf(2), 'customer acting as rider'), { t: MessageType.error, error: 'QD_ERR_ROLE_NOT_ALLOWED' });
  const rider = await connect(gw.port, 'rider', 'rider-1');
  rider.send({ t: MessageType.follow, s: 1, orderId: spec.orderId });
  t.match(await rider.next(ackOf(1), 'rider following'), { t: MessageType.error, error: 'QD_ERR_ROLE_NOT_ALLOWED' });
  await Promise.all([mallory.close(), rider.close()]);
  await gw.drain(100);
  await engine.close();
});

// Sequencing: docs/protocol.md, "Sequencing and acks".

t.test('every frame whose s can be read is processed at that s, refusals included; replays are answered from memory, in order', async (t) => {
  const { engine, gw } = await setup(t);
  const rider = await connect(gw.port, 'rider', 'rider-seq');
  const session = (rider.inbox[0] as { session: string }).session;
  // All sent at once: the answers come in the order of the frames.
  rider.send({ t: MessageType.fix, s: 10, lat: NaN, lng: 77, ts: 1, seq: 1 }); // refused, but s 10 is processed
  rider.send({ t: MessageType.online, s: 5, position: STORE }); // below 10, never seen: a duplicate
  rider.send({ t: MessageType.online, s: 10, position: STORE }); // s 10 again: its refusal again
  rider.send({ t: MessageType.follow, s: 11, orderId: 'o-1' }); // not a rider's message, still processed at 11
  rider.sendRaw(rawMap([['t', MessageType.online], ['s', 11], ['capacity', 'many']])); // malformed, s 11 again: the role refusal again
  rider.send({ t: MessageType.online, s: 12, position: STORE });
  rider.send({ t: MessageType.ping, ts: 3 });
  rider.send({ t: MessageType.online, s: 12, position: STORE });
  rider.sendRaw(rawMap([['t', MessageType.online]])); // no s: refused, nothing processed
  rider.send({ t: MessageType.break, s: 13, on: true });
  await rider.until(() => answers(rider).length === 9, 'nine answers');
  t.same(
    answers(rider),
    [
      [10, 'QD_ERR_INVALID_ARGUMENT', false],
      [5, 'QD_ERR_DUPLICATE_SEQUENCE', false],
      [10, 'QD_ERR_INVALID_ARGUMENT', true],
      [11, 'QD_ERR_ROLE_NOT_ALLOWED', false],
      [11, 'QD_ERR_ROLE_NOT_ALLOWED', true],
      [12, 'ack', false],
      [12, 'ack', true],
      [undefined, 'QD_ERR_INVALID_ARGUMENT', false],
      [13, 'ack', false],
    ],
    'one answer per command, in order; replays carry dup',
  );
  const byS = (s: number) => rider.inbox.filter(ackOf(s));
  t.same(byS(10)[1], { ...byS(10)[0], dup: true }, 'the refusal is repeated exactly, with dup');
  t.same(byS(12)[1], { ...byS(12)[0], dup: true }, 'the ack is repeated exactly, with dup');
  t.match(rider.inbox.find((m) => m.t === MessageType.pong), { ts: 3 });
  t.equal((await engine.getRider('rider-seq')).seq, 3, 'applied once each: registered, online, break');

  // The last s survives a reconnect, and so do the outcomes.
  await rider.close();
  const again = await connect(gw.port, 'rider', 'rider-seq', `&session=${session}`);
  t.match(again.inbox[0], { t: MessageType.hello, resumed: true, lastS: 13 });
  again.send({ t: MessageType.online, s: 10, position: STORE });
  again.send({ t: MessageType.break, s: 14, on: true }); // new, checked against the state: already on a break
  await again.until(() => answers(again).length === 2, 'two answers');
  t.same(answers(again), [
    [10, 'QD_ERR_INVALID_ARGUMENT', true],
    [14, 'QD_ERR_INVALID_TRANSITION', false],
  ]);
  await again.close();
});

t.test('the last 256 outcomes are remembered; older replays and unseen s below the last get QD_ERR_DUPLICATE_SEQUENCE', async (t) => {
  const { gw } = await setup(t, { tuning: { messageBurst: 1_000, messagesPerSecond: 1_000 } });
  const customer = await connect(gw.port, 'customer', 'cust-window');
  for (let s = 1; s <= 300; s++) customer.send({ t: MessageType.unfollow, s, orderId: `o-${s}` });
  customer.send({ t: MessageType.unfollow, s: 302, orderId: 'o-302' }); // a gap at 301
  await customer.until(() => answers(customer).length === 301, '301 acks');
  customer.send({ t: MessageType.unfollow, s: 45, orderId: 'x' });
  customer.send({ t: MessageType.unfollow, s: 44, orderId: 'x' });
  customer.send({ t: MessageType.unfollow, s: 301, orderId: 'x' });
  customer.send({ t: MessageType.unfollow, s: 302, orderId: 'x' });
  await customer.until(() => answers(customer).length === 305, 'four more answers');
  // Remembered: 1..300 and 302, of which the last 256 are 46..300 and 302.
  t.same(answers(customer).slice(301), [
    [45, 'QD_ERR_DUPLICATE_SEQUENCE', false],
    [44, 'QD_ERR_DUPLICATE_SEQUENCE', false],
    [301, 'QD_ERR_DUPLICATE_SEQUENCE', false],
    [302, 'ack', true],
  ]);
  customer.send({ t: MessageType.unfollow, s: 46, orderId: 'x' });
  await customer.until(() => answers(customer).length === 306, 'the oldest kept');
  t.same(customer.inbox.filter(ackOf(46))[1], { t: MessageType.ack, s: 46, dup: true, result: { orderId: 'o-46' } }, 'the oldest outcome kept, as first sent');
  await customer.close();
});

t.test('a replay arriving while its original still runs is answered after it, with the same outcome; pongs do not wait', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const { engine, gw } = await setup(t, {
    // riderBreak waits until the test releases it.
    wrap: (e) =>
      new Proxy(e, {
        get: (target, prop) => {
          const v = Reflect.get(target, prop, target) as unknown;
          if (typeof v !== 'function') return v;
          if (prop === 'riderBreak') return async (...args: unknown[]) => (await gate, (v as (...a: unknown[]) => unknown).apply(target, args));
          return (v as (...a: unknown[]) => unknown).bind(target);
        },
      }),
  });
  const rider = await connect(gw.port, 'rider', 'rider-slow');
  rider.send({ t: MessageType.online, s: 1, position: STORE });
  await rider.next(ackOf(1), 'online');
  rider.send({ t: MessageType.break, s: 2, on: true }); // held
  rider.send({ t: MessageType.break, s: 2, on: true }); // its replay, while it runs
  rider.sendRaw(rawMap([['t', MessageType.break], ['s', 3]])); // a refusal: answered after both
  rider.send({ t: MessageType.ping, ts: 77 });
  t.match(await rider.next((m) => m.t === MessageType.pong, 'pong while the command is held'), { ts: 77 });
  await new Promise((r) => setTimeout(r, 100));
  t.same(answers(rider), [[1, 'ack', false]], 'nothing after the held command is answered before it');
  release();
  await rider.until(() => answers(rider).length === 4, 'the held answers');
  t.same(answers(rider), [
    [1, 'ack', false],
    [2, 'ack', false],
    [2, 'ack', true],
    [3, 'QD_ERR_INVALID_ARGUMENT', false],
  ]);
  const two = rider.inbox.filter(ackOf(2));
  t.same(two[1], { ...two[0], dup: true }, 'the replay got the same outcome');
  t.equal((await engine.getRider('rider-slow')).status, 'onBreak');
  t.equal((await engine.getRider('rider-slow')).seq, 3, 'the break was applied once');
  await rider.close();
});

t.test('a rate-limited frame is refused naming its s, which it consumes; a ping has none', async (t) => {
  const { engine, gw } = await setup(t, { tuning: { messageBurst: 3, messagesPerSecond: 10 } });
  const rider = await connect(gw.port, 'rider', 'rider-limited');
  for (const ts of [1, 2, 3]) rider.send({ t: MessageType.ping, ts }); // the whole burst
  rider.send({ t: MessageType.online, s: 7, position: STORE });
  rider.send({ t: MessageType.ping, ts: 4 });
  await rider.until(() => rider.inbox.filter((m) => m.t === MessageType.error).length === 2, 'two refusals');
  const limited = rider.inbox.filter((m) => m.t === MessageType.error);
  t.same(limited[0], gatewayErrorFrame('QD_ERR_RATE_LIMITED', { s: 7, retryAfterMs: 100 }), 'the command is refused with its s and when to retry');
  t.same(limited[1], gatewayErrorFrame('QD_ERR_RATE_LIMITED', { retryAfterMs: 100 }), 'the ping, without s');
  t.same(
    rider.inbox.filter((m) => m.t === MessageType.pong).map((m) => (m as { ts?: number }).ts),
    [1, 2, 3],
  );
  await new Promise((r) => setTimeout(r, 600)); // the bucket refills
  rider.send({ t: MessageType.online, s: 7, position: STORE }); // s 7 was processed: its refusal again
  rider.send({ t: MessageType.online, s: 8, position: STORE }); // a new s: applied
  await rider.until(() => answers(rider).length === 4, 'two more answers');
  t.same(answers(rider).slice(2), [
    [7, 'QD_ERR_RATE_LIMITED', true],
    [8, 'ack', false],
  ]);
  t.same(rider.inbox.filter(ackOf(7))[1], { ...limited[0], dup: true }, 'the same refusal, with dup');
  t.equal((await engine.getRider('rider-limited')).status, 'available');
  await rider.close();
});

t.test('64-bit msgpack integers are numbers when they fit in 2^53', async (t) => {
  const { clock, gw } = await setup(t);
  const rider = await connect(gw.port, 'rider', 'rider-int64');
  rider.send({ t: MessageType.online, s: 1, position: STORE });
  await rider.next(ackOf(1), 'online');
  const now = BigInt(clock.now());
  // t, s, ts and seq as uint64 (0xcf) and int64 (0xd3), as other msgpack libraries write epoch ms.
  rider.sendRaw(rawMap([['t', uint64(2n)], ['s', uint64(2n)], ['lat', STORE.lat], ['lng', STORE.lng], ['ts', uint64(now)], ['seq', int64(1n)]]));
  t.match(await rider.next(ackOf(2), 'uint64 ts'), { t: MessageType.ack, result: { accepted: 1, stale: 0, rejected: 0 } });
  clock.advance(1_000);
  rider.sendRaw(rawMap([['t', MessageType.fix], ['s', int64(3n)], ['lat', STORE.lat], ['lng', STORE.lng], ['ts', int64(now + 1_000n)], ['seq', uint64(2n)]]));
  t.match(await rider.next(ackOf(3), 'int64 ts'), { t: MessageType.ack, result: { accepted: 1, stale: 0, rejected: 0 } });
  // Beyond 2^53 they are refused by the checks, naming the field.
  rider.sendRaw(rawMap([['t', MessageType.fix], ['s', 4], ['lat', STORE.lat], ['lng', STORE.lng], ['ts', uint64(2n ** 53n + 1n)], ['seq', 3]]));
  t.match(await rider.next(ackOf(4), 'ts beyond 2^53'), { t: MessageType.error, error: 'QD_ERR_INVALID_ARGUMENT', field: 'ts' });
  rider.sendRaw(rawMap([['t', MessageType.fix], ['s', uint64(2n ** 63n)], ['lat', STORE.lat], ['lng', STORE.lng], ['ts', 1], ['seq', 4]]));
  t.match(await rider.next((m) => m.t === MessageType.error && (m as { field?: string }).field === 's', 's beyond 2^53'), {
    error: 'QD_ERR_INVALID_ARGUMENT',
    s: undefined,
  });
  await rider.close();
});

t.test('frames over maxFrameBytes are refused, without reading s; beyond 8 times that the socket layer cuts the connection', async (t) => {
  const { gw } = await setup(t);
  const rider = await connect(gw.port, 'rider', 'rider-large');
  // A fixes batch with s 5, just too large.
  const batch = rawPackr.pack({ t: MessageType.fixes, s: 5, fixes: Array.from({ length: 1_200 }, (_, i) => [STORE.lat, STORE.lng, T0, i]) });
  t.ok(batch.byteLength > Limits.maxFrameBytes && batch.byteLength < Limits.maxFrameBytes * 2, `a batch of ${batch.byteLength} bytes`);
  const refused = gatewayErrorFrame('QD_ERR_PAYLOAD_TOO_LARGE');
  rider.sendRaw(batch);
  const exactly = new Uint8Array(Limits.maxFrameBytes * 8);
  exactly[0] = 0xde;
  rider.sendRaw(exactly);
  rider.send({ t: MessageType.online, s: 5, position: STORE }); // s 5 was never read: a new command
  await rider.until(() => answers(rider).length === 3, 'three answers');
  t.same(answers(rider), [
    [undefined, 'QD_ERR_PAYLOAD_TOO_LARGE', false],
    [undefined, 'QD_ERR_PAYLOAD_TOO_LARGE', false],
    [5, 'ack', false],
  ]);
  t.match(rider.inbox.find((m) => m.t === MessageType.error), { code: refused.code, error: refused.error });
  t.equal(rider.closeCode, null, 'still connected');
  rider.sendRaw(new Uint8Array(Limits.maxFrameBytes * 8 + 1).fill(0xde));
  await rider.until(() => rider.closeCode !== null, 'the cut');
  t.ok(rider.closeCode === 1006 || rider.closeCode === 1009, `cut by the socket layer (${rider.closeCode})`);
  t.equal(answers(rider).length, 3, 'without an answer');
});

t.test('malformed frames get error frames; the gateway serves everyone else correctly afterwards', async (t) => {
  const { engine, gw } = await setup(t);
  const texter = await connect(gw.port, 'rider', 'fuzzer');
  const good = await connect(gw.port, 'rider', 'steady');
  texter.sendRaw(new Uint8Array([0xc1]));
  t.match(await texter.next((m) => m.t === MessageType.error, 'malformed'), { error: 'QD_ERR_MALFORMED_FRAME' });
  // A text frame is a protocol violation: refused (no s: nothing is read from it), then closed with 4004.
  const errors = () => texter.inbox.filter((m) => m.t === MessageType.error);
  texter.sendRaw('{"t":2,"s":1}');
  await texter.until(() => texter.closeCode !== null, 'the close after a text frame');
  t.equal(texter.closeCode, CloseCodes.PROTOCOL_VIOLATION, 'a text frame closes the connection with 4004');
  t.same(
    errors().map((m) => [(m as { error: string }).error, (m as { s?: number }).s]),
    [
      ['QD_ERR_MALFORMED_FRAME', undefined],
      ['QD_ERR_MALFORMED_FRAME', undefined],
    ],
    'the text frame was answered before the close',
  );

  const bad = await connect(gw.port, 'rider', 'fuzzer');
  bad.send({ t: MessageType.fix, s: 1, lat: NaN, lng: 77, ts: 1, seq: 1 });
  t.match(await bad.next((m) => m.t === MessageType.error && (m as { field?: string }).field === 'lat', 'NaN lat', 1), {
    error: 'QD_ERR_INVALID_ARGUMENT',
  });
  // Another rider's id cannot be smuggled in: the socket's own identity is used.
  bad.sendRaw(new Packr({ useRecords: false }).pack({ t: MessageType.online, s: 2, position: STORE, riderId: 'steady' }));
  t.match(await bad.next((m) => m.t === MessageType.error && (m as { s?: number }).s === 2, 'extra field'), { error: 'QD_ERR_INVALID_ARGUMENT' });
  let seed = 7;
  for (let i = 0; i < 300; i++) {
    const len = (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 64;
    const junk = new Uint8Array(len);
    for (let j = 0; j < len; j++) junk[j] = (seed = (seed * 1103515245 + 12345) & 0x7fffffff) & 0xff;
    if (bad.ws.readyState === WebSocket.OPEN) bad.sendRaw(junk);
  }
  await bad.until(() => bad.closeCode !== null, 'the close after garbage');
  t.equal(bad.closeCode, CloseCodes.PROTOCOL_VIOLATION, 'a connection sending garbage is closed');
  good.send({ t: MessageType.online, s: 1, position: STORE });
  t.match(await good.next(ackOf(1), 'still served'), { t: MessageType.ack, result: { status: 'available' } });
  t.equal((await engine.getRider('steady')).status, 'available');
  await rejectsCode(t, engine.getRider('fuzzer'), 'QD_ERR_RIDER_NOT_FOUND');
  await good.close();
  await gw.drain(100);
  await engine.close();
});

t.test('drain tells clients to go away, refuses new ones and closes the listen socket', async (t) => {
  const { engine, gw } = await setup(t);
  const rider = await connect(gw.port, 'rider', 'r-drain');
  const closed = new Promise<number>((r) => rider.ws.once('close', (code) => r(code)));
  const draining = gw.drain(500);
  t.match(await rider.next((m) => m.t === MessageType.goAway, 'goAway'), { reason: 'shutdown' });
  // Commands after goAway are refused (and, like any refusal, remembered at their s); pings are still answered.
  rider.send({ t: MessageType.online, s: 1, position: STORE });
  rider.send({ t: MessageType.online, s: 1, position: STORE });
  rider.send({ t: MessageType.ping, ts: 9 });
  const refused = await rider.next(ackOf(1), 'refused while draining');
  t.match(refused, { t: MessageType.error, s: 1, error: 'QD_ERR_SHUTTING_DOWN' });
  await rider.until(() => rider.inbox.filter(ackOf(1)).length === 2, 'the replay');
  t.same(rider.inbox.filter(ackOf(1))[1], { ...refused, dup: true }, 'a replay gets the same refusal');
  t.match(await rider.next((m) => m.t === MessageType.pong, 'pong'), { ts: 9 });
  await draining;
  t.equal(await closed, CloseCodes.GOING_AWAY);
  await t.rejects(fetch(`http://127.0.0.1:${gw.port}/healthz`), 'listen socket closed');
  await engine.close();
});

async function rejectsCode(t: Tap.Test, p: Promise<unknown>, code: string): Promise<void> {
  try {
    await p;
    t.fail(`expected ${code}`);
  } catch (err) {
    t.equal((err as { code?: string }).code, code);
  }
}

declare namespace Tap {
  type Test = import('tap').Test;
}

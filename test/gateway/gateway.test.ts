// The gateway end to end over real sockets: a rider's whole delivery while its customer watches, replays, refusals.
import t from 'tap';
import WebSocket from 'ws';
import { Packr } from 'msgpackr';
import { createEngine, MemoryEventStore, VirtualClock } from '../../engine/index.ts';
import type { DispatchEngine } from '../../engine/index.ts';
import { developmentAuthConfig, signToken } from '../../gateway/auth.ts';
import { CloseCodes, MessageType, decode, encode, type Message, type ServerMessage } from '../../gateway/protocol.ts';
import { startGateway, type Gateway } from '../../gateway/server.ts';
import { offset, orderSpec, STORE, T0 } from '../engine/harness.ts';

const auth = developmentAuthConfig();

interface Client {
  ws: WebSocket;
  inbox: ServerMessage[];
  send(msg: object): void;
  sendRaw(bytes: Uint8Array | string): void;
  /** Waits for the first message after `from` (an inbox index) that matches. */
  next(pred: (m: ServerMessage) => boolean, what: string, from?: number): Promise<ServerMessage>;
  close(): Promise<void>;
}

async function connect(port: number, role: 'rider' | 'customer' | 'operations', sub: string, query = ''): Promise<Client> {
  const token = signToken({ sub, role, ttlSec: 600 }, auth);
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/ws?token=${token}${query}`);
  const inbox: ServerMessage[] = [];
  const waiters: Array<() => void> = [];
  ws.on('message', (data: Buffer) => {
    const d = decode(new Uint8Array(data), 'server');
    if (d.ok) inbox.push(d.msg);
    for (const w of waiters.splice(0)) w();
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const client: Client = {
    ws,
    inbox,
    send: (msg) => ws.send(encode(msg as Message)),
    sendRaw: (bytes) => ws.send(bytes),
    async next(pred, what, from = 0) {
      const deadline = Date.now() + 3_000;
      for (;;) {
        const found = inbox.slice(from).find(pred);
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(inbox.slice(from))}`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 50);
        });
      }
    },
    close: () =>
      new Promise((r) => {
        if (ws.readyState === WebSocket.CLOSED) return r();
        ws.once('close', () => r());
        ws.close();
      }),
  };
  await client.next((m) => m.t === MessageType.hello, 'hello');
  return client;
}

const ackOf = (s: number) => (m: ServerMessage) => (m.t === MessageType.ack || m.t === MessageType.error) && (m as { s?: number }).s === s;

async function setup(t: Tap.Test): Promise<{ engine: DispatchEngine; clock: VirtualClock; gw: Gateway }> {
  const clock = new VirtualClock(T0);
  const engine = await createEngine({ store: new MemoryEventStore(), clock, threads: false, config: { shards: 1, matchWindowMs: 1_000 } });
  const gw = await startGateway({ engine, auth, logger: (await import('pino')).default({ level: 'silent' }) });
  // Even a failing test must not leave a listen socket open: Node would wait on it.
  t.teardown(async () => {
    await gw.drain(0);
    await engine.close();
  });
  return { engine, clock, gw };
}

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

t.test('malformed frames get error frames; the gateway serves everyone else correctly afterwards', async (t) => {
  const { engine, gw } = await setup(t);
  const bad = await connect(gw.port, 'rider', 'fuzzer');
  const good = await connect(gw.port, 'rider', 'steady');
  bad.sendRaw(new Uint8Array([0xc1]));
  t.match(await bad.next((m) => m.t === MessageType.error, 'malformed'), { error: 'QD_ERR_MALFORMED_FRAME' });
  bad.sendRaw('{"t":2}');
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
  await new Promise((r) => setTimeout(r, 200));
  t.equal(bad.ws.readyState, WebSocket.CLOSED, 'a connection sending garbage is closed');
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
  await gw.drain(200);
  t.match(rider.inbox.find((m) => m.t === MessageType.goAway), { reason: 'shutdown' });
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

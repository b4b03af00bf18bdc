// Rider positions reach following customers: pushed at once, at most once an
// interval, only the latest for a reader that has fallen behind, and a reader
// too slow even for status frames is closed. A raw TCP client lets the test
// stop reading at will.
import t, { type Test } from 'tap';
import pino from 'pino';
import { Opcode, FrameReader, clientFrame, openRaw, type Frame } from '../../bench/loadgen/wire.ts';
import { createEngine, MemoryEventStore, VirtualClock } from '../../engine/index.ts';
import type { DispatchEngine } from '../../engine/index.ts';
import { developmentAuthConfig, signToken } from '../../gateway/auth.ts';
import { CloseCodes, MessageType, decode, encode, type Message, type ServerMessage } from '../../gateway/protocol.ts';
import { startGateway, type Gateway, type GatewayTuning } from '../../gateway/server.ts';
import { offset, orderSpec, STORE, T0 } from '../engine/harness.ts';

const auth = developmentAuthConfig();

/** A WebSocket client on a raw socket that can stop reading, as a phone on a bad network does. */
class RawClient {
  readonly inbox: ServerMessage[] = [];
  closeCode: number | null = null;
  ended = false;
  #s = 0;
  #waiters: Array<() => void> = [];
  readonly #reader = new FrameReader();

  private constructor(readonly socket: import('node:net').Socket, rest: Buffer) {
    socket.on('data', (chunk: Buffer) => this.#onFrames(this.#reader.push(chunk)));
    socket.on('close', () => {
      this.ended = true;
      this.#wake();
    });
    socket.on('error', () => {});
    if (rest.length > 0) this.#onFrames(this.#reader.push(rest));
  }

  static async open(port: number, role: 'rider' | 'customer', sub: string): Promise<RawClient> {
    const token = signToken({ sub, role, ttlSec: 600 }, auth);
    const { socket, rest } = await openRaw({ host: '127.0.0.1', port, path: `/v1/ws?token=${token}` });
    const c = new RawClient(socket, rest);
    await c.next((m) => m.t === MessageType.hello, 'hello');
    return c;
  }

  #onFrames(frames: Frame[]): void {
    for (const f of frames) {
      if (f.opcode === Opcode.close) this.closeCode = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005;
      if (f.opcode !== Opcode.binary) continue;
      const d = decode(new Uint8Array(f.payload), 'server');
      if (d.ok) this.inbox.push(d.msg);
    }
    this.#wake();
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  /** Sends a command with the next sequence number; returns that number. */
  command(msg: Record<string, unknown>): number {
    const s = ++this.#s;
    this.socket.write(clientFrame(encode({ ...msg, s } as Message)));
    return s;
  }

  async next(pred: (m: ServerMessage) => boolean, what: string, timeoutMs = 5_000): Promise<ServerMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.inbox.find(pred);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  ack(s: number): Promise<ServerMessage> {
    return this.next((m) => (m.t === MessageType.ack || m.t === MessageType.error) && (m as { s?: number }).s === s, `ack ${s}`);
  }

  /** Resolves once the socket has ended (or a close frame arrived). */
  async closed(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended && this.closeCode === null) {
      if (Date.now() > deadline) throw new Error('socket still open');
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

const positions = (c: RawClient) => c.inbox.filter((m) => m.t === MessageType.riderPosition) as Array<Extract<ServerMessage, { t: 81 }>>;
const statuses = (c: RawClient) =>
  c.inbox.filter((m) => m.t === MessageType.orderStatus).map((m) => (m as { status: string }).status);

function metric(gw: Gateway, name: string): number {
  let sum = 0;
  for (const line of gw.metrics.render().split('\n')) if (line.startsWith(name)) sum += Number(line.split(' ').pop());
  return sum;
}

interface Scene {
  engine: DispatchEngine;
  clock: VirtualClock;
  gw: Gateway;
  rider: RawClient;
  customer: RawClient;
  orderId: string;
  otp: string;
  /** Where the rider is, for fixes that move it a plausible step. */
  at: { lat: number; lng: number; ts: number; seq: number };
}

/** A rider carrying an order its customer follows, over raw sockets. */
async function scene(t: Test, tuning: Partial<GatewayTuning>): Promise<Scene> {
  const clock = new VirtualClock(T0);
  const engine = await createEngine({ store: new MemoryEventStore(), clock, threads: false, config: { shards: 1, matchWindowMs: 1_000 } });
  const gw = await startGateway({ engine, auth, logger: pino({ level: 'silent' }), tuning });
  const sockets: RawClient[] = [];
  t.teardown(async () => {
    for (const c of sockets) c.close();
    await gw.drain(0);
    await engine.close();
  });
  const rider = await RawClient.open(gw.port, 'rider', 'rider-p');
  sockets.push(rider);
  const start = offset(STORE, 800, 0);
  await rider.ack(rider.command({ t: MessageType.online, position: start, capacity: 1 }));
  const spec = orderSpec({ customerId: 'cust-p' });
  const created = await engine.createOrder(spec);
  clock.advance(1_000);
  await engine.tick();
  await rider.next((m) => m.t === MessageType.offer, 'offer');
  t.match(await rider.ack(rider.command({ t: MessageType.accept, orderId: spec.orderId })), { t: MessageType.ack });
  const customer = await RawClient.open(gw.port, 'customer', 'cust-p');
  sockets.push(customer);
  t.match(await customer.ack(customer.command({ t: MessageType.follow, orderId: spec.orderId })), { result: { status: 'assigned' } });
  // Room ahead for fixes stamped a millisecond apart, none of them in the engine's future.
  const ts = clock.now();
  clock.advance(600_000);
  return { engine, clock, gw, rider, customer, orderId: spec.orderId, otp: created.otp, at: { ...start, ts, seq: 0 } };
}

/** Moves the rider 1 mm north per millisecond (1 m/s) and sends the fix. */
function step(sc: Scene): { s: number; ts: number } {
  const p = offset(sc.at, 0.001, 0);
  sc.at = { lat: p.lat, lng: p.lng, ts: sc.at.ts + 1, seq: sc.at.seq + 1 };
  const s = sc.rider.command({ t: MessageType.fix, lat: sc.at.lat, lng: sc.at.lng, ts: sc.at.ts, seq: sc.at.seq });
  return { s, ts: sc.at.ts };
}

t.test('a fix reaches the customer at once, then at most once an interval, and the latest one is sent at the end of it', async (t) => {
  const sc = await scene(t, { positionIntervalMs: 300 });
  const first = step(sc);
  await sc.rider.ack(first.s);
  const p1 = (await sc.customer.next((m) => m.t === MessageType.riderPosition, 'first position')) as Extract<ServerMessage, { t: 81 }>;
  t.match(p1, { orderId: sc.orderId, ts: first.ts, lat: sc.at.lat, lng: sc.at.lng }, 'the first fix is pushed straight away');
  const sentAt = Date.now();

  let last = first;
  for (let i = 0; i < 5; i++) last = step(sc);
  await sc.rider.ack(last.s);
  const p2 = (await sc.customer.next((m) => m.t === MessageType.riderPosition && (m as { ts: number }).ts !== first.ts, 'trailing position')) as Extract<ServerMessage, { t: 81 }>;
  t.equal(p2.ts, last.ts, 'the one sent at the end of the interval is the newest fix');
  t.ok(Date.now() - sentAt >= 250, 'and not before the interval is over');
  await new Promise((r) => setTimeout(r, 400));
  t.equal(positions(sc.customer).length, 2, 'the five fixes in between became one position');
  t.equal(metric(sc.gw, 'quickdash_ws_positions_total'), 2);
});

t.test('a reader that falls behind gets only the newest position, and every status event', async (t) => {
  // Positions wait as soon as anything is queued for the socket; nothing else is limited.
  const sc = await scene(t, { positionIntervalMs: 0, positionBackpressureBytes: 0, messagesPerSecond: 1e6, messageBurst: 1e6 });
  sc.customer.socket.pause();
  // Fill the kernel's buffers until the gateway has to queue: then positions stop.
  let sent = 0;
  let stalled = false;
  while (!stalled && sent < 200_000) {
    const before = metric(sc.gw, 'quickdash_ws_positions_total');
    let last = step(sc);
    for (let i = 1; i < 2_000; i++) last = step(sc);
    sent += 2_000;
    await sc.rider.ack(last.s);
    await new Promise((r) => setTimeout(r, 60));
    stalled = metric(sc.gw, 'quickdash_ws_positions_total') - before < 100;
  }
  t.ok(stalled, `positions stopped flowing to the stalled reader after ${sent} fixes`);
  const newest = sc.at.ts;

  // Status events meanwhile must all arrive, in order, after the backlog.
  for (const msg of [
    { t: MessageType.arrived, orderId: sc.orderId, where: 'pickup' },
    { t: MessageType.pickedUp, orderId: sc.orderId },
  ]) {
    t.match(await sc.rider.ack(sc.rider.command(msg)), { t: MessageType.ack });
  }
  sc.customer.socket.resume();
  await sc.customer.next((m) => m.t === MessageType.orderStatus && (m as { status: string }).status === 'pickedUp', 'pickedUp status', 15_000);
  await sc.customer.next((m) => m.t === MessageType.riderPosition && (m as { ts: number }).ts === newest, 'the newest position', 5_000);
  t.same(statuses(sc.customer), ['searching', 'offered', 'assigned', 'atPickup', 'pickedUp'], 'no status event was lost');
  const got = positions(sc.customer);
  t.ok(got.length < sent, `${got.length} positions for ${sent} fixes: stale ones were dropped`);
  const tss = got.map((p) => p.ts);
  t.same(tss, [...tss].sort((a, b) => a - b), 'positions never go backwards');
  t.equal(metric(sc.gw, 'quickdash_ws_slow_consumers_total'), 0, 'falling behind on positions alone is not a reason to close');
});

t.test('a reader too slow even for status frames is closed with SLOW_CONSUMER; the rider is unaffected', async (t) => {
  const sc = await scene(t, { positionIntervalMs: 0, positionBackpressureBytes: 1 << 30, slowConsumerBytes: 64 * 1024, messagesPerSecond: 1e6, messageBurst: 1e6 });
  sc.customer.socket.pause();
  let sent = 0;
  while (metric(sc.gw, 'quickdash_ws_slow_consumers_total') === 0 && sent < 400_000) {
    let last = step(sc);
    for (let i = 1; i < 2_000; i++) last = step(sc);
    sent += 2_000;
    await sc.rider.ack(last.s);
  }
  t.equal(metric(sc.gw, 'quickdash_ws_slow_consumers_total'), 1, `closed after ${sent} fixes`);
  sc.customer.socket.resume();
  await sc.customer.closed();
  if (sc.customer.closeCode !== null) t.equal(sc.customer.closeCode, CloseCodes.SLOW_CONSUMER, 'the close frame says why');
  // The rider goes on as if nothing happened.
  t.match(await sc.rider.ack(sc.rider.command({ t: MessageType.arrived, orderId: sc.orderId, where: 'pickup' })), { t: MessageType.ack, result: { status: 'atPickup' } });
  const view = await sc.engine.getRider('rider-p');
  t.equal(view.position?.ts, sc.at.ts, 'every fix reached the engine');
});

// The client SDK: end to end against a real gateway (delivery, drops and replays, resume, auth, goAway), a browser bundle, and wire details on a scripted socket.
import t from 'tap';
import type { Test } from 'tap';
import net from 'node:net';
import WebSocket from 'ws';
import { build } from 'esbuild';
import pino from 'pino';
import { createEngine, MemoryEventStore, VirtualClock } from '../../engine/index.ts';
import type { DispatchEngine, OrderStatus, OrderUpdate } from '../../engine/index.ts';
import { developmentAuthConfig, signToken } from '../../gateway/auth.ts';
import { MessageType as ProtocolMessageType, PROTOCOL_VERSION as ProtocolVersion, decode, encode } from '../../gateway/protocol.ts';
import type { ClientMessage, Message, ServerMessage } from '../../gateway/protocol.ts';
import { startGateway, type Gateway, type GatewayTuning } from '../../gateway/server.ts';
import { CustomerClient, Emitter, PROTOCOL_VERSION, QuickDashError, RiderClient } from '../../gateway/client/index.ts';
import type { ClientOptions, CustomerEvents, OrderStatusEvent, RiderEvents, WebSocketLike } from '../../gateway/client/index.ts';
import { MessageType, decodeFrame, encodeFrame } from '../../gateway/client/codec.ts';
import { offset, orderSpec, STORE, T0 } from '../engine/harness.ts';

const auth = developmentAuthConfig();
const silent = pino({ level: 'silent' });
/** Reconnect quickly: these tests wait on reconnections. */
const FAST = { minReconnectDelayMs: 20, maxReconnectDelayMs: 200 } satisfies Partial<ClientOptions>;

let jti = 0;
function tokenFor(role: 'rider' | 'customer' | 'operations', sub: string): string {
  // A fresh jti per token, so a token provider called again really hands out a new token.
  return signToken({ sub, role, ttlSec: 600, jti: `t${++jti}` }, auth);
}

// ---------------------------------------------------------------- waiting on events

type EventsOf<C> = C extends RiderClient ? RiderEvents : C extends CustomerClient ? CustomerEvents : never;

/** Records every payload of one event; until() waits for one matching (already seen or still to come). */
function collect<C extends RiderClient | CustomerClient, K extends keyof EventsOf<C>>(client: C, event: K) {
  type P = EventsOf<C>[K];
  const items: P[] = [];
  const waiters = new Set<() => void>();
  (client as unknown as Emitter<EventsOf<C>>).on(event, (p) => {
    items.push(p);
    for (const w of waiters) w();
  });
  return {
    items,
    until(pred: (p: P) => boolean, what: string, timeoutMs = 3_000): Promise<P> {
      return new Promise<P>((resolve, reject) => {
        const check = () => {
          const found = items.find(pred);
          if (found === undefined) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(found);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${what}; saw ${JSON.stringify(items)}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
  };
}

/** The next payload of `event` matching `pred`. */
function next<C extends RiderClient | CustomerClient, K extends keyof EventsOf<C>>(
  client: C,
  event: K,
  what: string,
  pred: (p: EventsOf<C>[K]) => boolean = () => true,
  timeoutMs = 3_000,
): Promise<EventsOf<C>[K]> {
  return collect(client, event).until(pred, what, timeoutMs);
}

/** Resolves when the order reaches `status` (from its log, then live). */
function orderReaches(engine: DispatchEngine, orderId: string, status: OrderStatus): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`order ${orderId} never reached ${status}`)), 3_000);
    const off = engine.watchOrder(orderId, (u) => {
      if (u.order.status !== status) return;
      clearTimeout(timer);
      queueMicrotask(() => off());
      resolve();
    });
  });
}

/** Every event of an order from its log, up to `seq`. */
function orderLog(engine: DispatchEngine, orderId: string, seq: number): Promise<OrderUpdate[]> {
  return new Promise((resolve, reject) => {
    const log: OrderUpdate[] = [];
    const timer = setTimeout(() => reject(new Error(`order ${orderId} log stopped at ${log.length}`)), 3_000);
    const off = engine.watchOrder(
      orderId,
      (u) => {
        log.push(u);
        if (u.seq < seq) return;
        clearTimeout(timer);
        queueMicrotask(() => off());
        resolve(log);
      },
      0,
    );
  });
}

/**
 * Marks a command promise the test awaits later as handled now, so that if an
 * assertion fails first, the close() in teardown rejecting it cannot crash the
 * whole file with an unhandled rejection.
 */
function keep<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/** `p`, or a failure naming `what` after `ms`: a client that never gives up must fail the test, not hang it. */
function within<T>(p: Promise<T>, what: string, ms = 3_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

const rejection = (p: Promise<unknown>): Promise<QuickDashError> =>
  p.then(
    (v) => {
      throw new Error(`expected a refusal, got ${JSON.stringify(v)}`);
    },
    (e: unknown) => {
      if (!(e instanceof QuickDashError)) throw e;
      return e;
    },
  );

// ---------------------------------------------------------------- a gateway, and a proxy that can cut it off

interface Rig {
  engine: DispatchEngine;
  clock: VirtualClock;
  gw: Gateway;
  url: string;
  rider(sub: string, options?: Partial<ClientOptions> & { fixBatchMs?: number }): RiderClient;
  customer(sub: string, options?: Partial<ClientOptions>): CustomerClient;
}

async function setup(t: Test, tuning: Partial<GatewayTuning> = {}): Promise<Rig> {
  const clock = new VirtualClock(T0);
  const engine = await createEngine({ store: new MemoryEventStore(), clock, threads: false, config: { shards: 1, matchWindowMs: 1_000 } });
  const gw = await startGateway({ engine, auth, logger: silent, tuning });
  const clients: Array<RiderClient | CustomerClient> = [];
  // Even a failing test must not leave a listen socket or a reconnecting client behind.
  t.teardown(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await gw.drain(0);
    await engine.close();
  });
  const url = `ws://127.0.0.1:${gw.port}/v1/ws`;
  return {
    engine,
    clock,
    gw,
    url,
    rider(sub, options = {}) {
      const c = new RiderClient({ url, token: () => tokenFor('rider', sub), ...FAST, ...options });
      clients.push(c);
      return c;
    },
    customer(sub, options = {}) {
      const c = new CustomerClient({ url, token: () => tokenFor('customer', sub), ...FAST, ...options });
      clients.push(c);
      return c;
    },
  };
}

/**
 * A TCP proxy in front of the gateway, standing in for the phone's network:
 * it can swallow bytes in either direction, cut every connection, and refuse
 * new ones.
 */
interface Proxy {
  url: string;
  /** Gateway-to-app bytes are dropped (acks lost on the way back). */
  dropDown: boolean;
  /** App-to-gateway bytes are dropped (commands lost on the way out). */
  dropUp: boolean;
  /** New connections are cut at once (no network). */
  refuse: boolean;
  kill(): void;
  close(): Promise<void>;
}

async function startProxy(t: Test, port: number): Promise<Proxy> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((app) => {
    if (proxy.refuse) return void app.destroy();
    const gateway = net.connect(port, '127.0.0.1');
    for (const s of [app, gateway]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        sockets.delete(s);
        app.destroy();
        gateway.destroy();
      });
    }
    app.on('data', (d) => void (proxy.dropUp || gateway.write(d)));
    gateway.on('data', (d) => void (proxy.dropDown || app.write(d)));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const proxy: Proxy = {
    url: `ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/v1/ws`,
    dropDown: false,
    dropUp: false,
    refuse: false,
    kill: () => {
      for (const s of sockets) s.destroy();
    },
    close: () =>
      new Promise<void>((r) => {
        proxy.kill();
        server.close(() => r());
      }),
  };
  t.teardown(() => proxy.close());
  return proxy;
}

// ---------------------------------------------------------------- end to end

t.test('a rider delivers through the SDK while a customer sees every status once, in order', async (t) => {
  const { engine, clock, rider: riderFor, customer: customerFor } = await setup(t, { positionIntervalMs: 50 });
  const rider = riderFor('rider-sdk-1');
  const states = collect(rider, 'state');
  const riderStates = collect(rider, 'riderState');
  const hello = await rider.connect();
  t.match(hello, { userId: 'rider-sdk-1', role: 'rider', resumed: false, lastS: 0 });
  t.same(
    states.items.map((s) => s.state),
    ['connecting', 'open'],
  );
  t.match(await rider.online({ position: offset(STORE, 500, 0), capacity: 1 }), { status: 'available', s: 1, dup: false });

  const spec = orderSpec({ customerId: 'cust-sdk-1' });
  const created = await engine.createOrder(spec);
  const customer = customerFor('cust-sdk-1');
  const statuses = collect(customer, 'status');
  const positions = collect(customer, 'position');
  await customer.connect();
  t.match(await customer.follow(spec.orderId), { orderId: spec.orderId, status: 'searching' });

  const offers = collect(rider, 'offer');
  clock.advance(1_000);
  await engine.tick();
  const offer = await offers.until((o) => o.orderId === spec.orderId, 'the offer');
  t.match(offer, { storeId: spec.storeId, pickup: spec.pickup, dropoff: spec.dropoff });
  t.same(rider.offer, offer, 'the pending offer is kept');
  t.match(await rider.accept(spec.orderId), { orderId: spec.orderId, status: 'assigned' });

  rider.sendFix({ lat: STORE.lat, lng: STORE.lng, ts: clock.now(), seq: 1 });
  t.same(await rider.flushFixes(), { accepted: 1, stale: 0, rejected: 0 });
  t.match(await positions.until(() => true, 'a rider position'), { orderId: spec.orderId, lat: STORE.lat, lng: STORE.lng });
  await engine.tick();
  t.match(await rider.pickedUp(spec.orderId), { status: 'pickedUp' });
  t.match(await rider.arrived(spec.orderId, 'dropoff'), { status: 'atDropoff' });
  const bad = await rejection(rider.delivered(spec.orderId, { otp: 'nope' }));
  t.match(bad, { code: 'QD_ERR_BAD_PROOF', wsCode: 9 });
  t.notOk(bad.retriable);
  t.match(await rider.delivered(spec.orderId, { otp: created.otp }), { status: 'delivered' });

  await statuses.until((s) => s.status === 'delivered', 'the delivered status');
  t.same(
    statuses.items.map((s) => s.status),
    ['searching', 'offered', 'assigned', 'atPickup', 'pickedUp', 'atDropoff', 'delivered'],
    'every step, in order',
  );
  t.same(
    statuses.items.map((s) => s.seq),
    [1, 2, 3, 4, 5, 6, 7],
    'each exactly once',
  );
  t.equal(customer.lastSeq(spec.orderId), 7);
  await riderStates.until((s) => s.status === 'available' && s.orderIds.length === 0, 'the rider free again');
  t.equal(rider.offer, null, 'the accepted offer is no longer pending');
  await customer.unfollow(spec.orderId);
  t.same(customer.following, []);
});

t.test('a dropped connection: in-flight and queued commands are replayed once, a stale one is refused with the state', async (t) => {
  const { engine, clock, gw, rider: riderFor } = await setup(t);
  const proxy = await startProxy(t, gw.port);
  let tokens = 0;
  const rider = riderFor('rider-sdk-2', {
    url: proxy.url,
    token: () => {
      tokens++;
      return tokenFor('rider', 'rider-sdk-2');
    },
  });
  await rider.connect();
  const session = rider.session;
  const near = offset(STORE, 400, 0);
  await rider.online({ position: near, capacity: 1 });
  const spec = orderSpec({ customerId: 'cust-sdk-2' });
  await engine.createOrder(spec);
  const offered = next(rider, 'offer', 'the offer');
  clock.advance(1_000);
  await engine.tick();
  await offered;

  // The accept reaches the gateway and is applied; its ack is lost on the way back.
  proxy.dropDown = true;
  const accepted = keep(rider.accept(spec.orderId));
  await orderReaches(engine, spec.orderId, 'assigned');
  // A fix leaves the phone and never arrives.
  proxy.dropUp = true;
  const fixAt = (seq: number) => ({ lat: near.lat, lng: near.lng, ts: clock.now() - 3_000 + seq * 1_000, seq });
  rider.sendFix(fixAt(1));
  t.equal(rider.inFlight, 2, 'the accept and the fix are in flight');

  // The network goes: the connection is cut and the gateway cannot be reached for a while.
  proxy.refuse = true;
  const lost = next(rider, 'disconnect', 'the disconnect');
  proxy.kill();
  t.match(await lost, { wasOpen: true });
  t.equal(rider.state, 'reconnecting');
  // The rider keeps working offline; a second arrival tap is now stale.
  rider.sendFixes([fixAt(2), fixAt(3)]);
  const arrived = keep(rider.arrived(spec.orderId, 'pickup'));
  const picked = keep(rider.pickedUp(spec.orderId));
  const again = keep(rider.arrived(spec.orderId, 'pickup'));
  const fixes = keep(rider.flushFixes());
  t.equal(rider.pending, 6, 'accept, fix, fixes, arrived, pickedUp, arrived');

  const reopened = next(rider, 'open', 'the reconnection');
  proxy.dropUp = proxy.dropDown = proxy.refuse = false;
  t.match(await reopened, { session, resumed: true, lastS: 2 }, 'the session resumed: online and accept were processed, the fix was not');

  const acceptAck = await accepted;
  t.match(acceptAck, { status: 'assigned', dup: true }, 'the accept is answered from the replay memory, not applied again');
  t.same(await fixes, { accepted: 3, stale: 0, rejected: 0 }, 'the lost fix and the queued ones are applied');
  const arrivedAck = await arrived;
  const pickedAck = await picked;
  t.match(arrivedAck, { status: 'atPickup', dup: false });
  t.match(pickedAck, { status: 'pickedUp', dup: false });
  const stale = await rejection(again);
  t.equal(stale.code, 'QD_ERR_INVALID_TRANSITION');
  t.ok(stale.state === 'pickedUp' || stale.state === 'toDropoff', `the error names the current state (${stale.state})`);
  t.ok(acceptAck.s < arrivedAck.s && arrivedAck.s < pickedAck.s && pickedAck.s < stale.s!, 'sequence numbers follow the order of issue');

  const log = await orderLog(engine, spec.orderId, 5);
  t.same(
    log.map((u) => u.event),
    ['CREATED', 'OFFER', 'ACCEPT', 'ARRIVED_PICKUP', 'PICKED_UP'],
    'nothing was applied twice',
  );
  t.same((await engine.getRider('rider-sdk-2')).position, { lat: near.lat, lng: near.lng, ts: fixAt(3).ts }, 'the newest fix is where the rider is');
  t.ok(tokens >= 2, 'every attempt asked the token provider');
  t.equal(rider.pending, 0);
});

t.test('a customer that reconnects resumes after the last status it saw, missing none and repeating none', async (t) => {
  const { engine, clock, gw, customer: customerFor } = await setup(t);
  const proxy = await startProxy(t, gw.port);
  await engine.riderOnline('rider-sdk-3', { position: offset(STORE, 300, 0), capacity: 1 });
  const spec = orderSpec({ customerId: 'cust-sdk-3' });
  await engine.createOrder(spec);

  const customer = customerFor('cust-sdk-3', { url: proxy.url });
  const statuses = collect(customer, 'status');
  await customer.connect();
  await customer.follow(spec.orderId);
  await statuses.until((s) => s.seq === 1, 'the first status');

  proxy.refuse = true;
  const lost = next(customer, 'disconnect', 'the disconnect');
  proxy.kill();
  await lost;
  // While it is away the order moves on.
  clock.advance(1_000);
  await engine.tick();
  await engine.acceptOffer('rider-sdk-3', spec.orderId);
  t.same(
    statuses.items.map((s) => s.seq),
    [1],
    'nothing arrives while disconnected',
  );

  const reopened = next(customer, 'open', 'the reconnection');
  proxy.refuse = false;
  await reopened;
  await statuses.until((s) => s.seq === 3, 'the statuses missed');
  await engine.arrivedPickup('rider-sdk-3', spec.orderId);
  await statuses.until((s) => s.seq === 4, 'a live status after the resume');
  t.same(
    statuses.items.map((s: OrderStatusEvent) => [s.seq, s.status, s.riderId]),
    [
      [1, 'searching', null],
      [2, 'offered', null],
      [3, 'assigned', 'rider-sdk-3'],
      [4, 'atPickup', 'rider-sdk-3'],
    ],
  );
});

t.test('a refused token stops the client and says why', async (t) => {
  const { url, gw } = await setup(t);
  const expired = signToken({ sub: 'r-old', role: 'rider', ttlSec: 1 }, { ...auth, now: () => Date.now() - 3_600_000 });
  let asked = 0;
  const rider = new RiderClient({
    url,
    token: () => {
      asked++;
      return expired;
    },
    ...FAST,
  });
  const errors = collect(rider, 'error');
  t.teardown(() => rider.close());
  const queued = keep(rider.online());
  const refused = await within(rejection(rider.connect()), 'the refusal');
  t.match(refused, { code: 'QD_CLIENT_AUTH_REFUSED', status: 401 });
  t.equal(rider.state, 'closed');
  t.match(await rejection(queued), { code: 'QD_CLIENT_AUTH_REFUSED' }, 'queued commands fail with the reason');
  t.match(errors.items, [{ code: 'QD_CLIENT_AUTH_REFUSED' }]);
  t.equal(errors.items.length, 1, 'reported once');
  t.match(await rejection(rider.setBreak(true)), { code: 'QD_CLIENT_AUTH_REFUSED' }, 'later commands too');
  // Ten times the first reconnect delay: a client that retried would have asked again.
  await new Promise((r) => setTimeout(r, 10 * FAST.minReconnectDelayMs));
  t.equal(asked, 1, 'no second attempt');
  t.match(await (await fetch(`http://127.0.0.1:${gw.port}/metrics`)).text(), /quickdash_ws_auth_failures_total\{reason="expired"\} 1\b/);

  const ops = new CustomerClient({ url, token: tokenFor('operations', 'ops-1'), ...FAST });
  t.teardown(() => ops.close());
  t.match(await within(rejection(ops.connect()), 'the 403'), { code: 'QD_CLIENT_AUTH_REFUSED', status: 403 });
  const mixedUp = new RiderClient({ url, token: tokenFor('customer', 'cust-9'), ...FAST });
  t.teardown(() => mixedUp.close());
  t.match(await within(rejection(mixedUp.connect()), 'the role check'), { code: 'QD_CLIENT_AUTH_REFUSED', message: /customer/ }, 'a customer token in the rider app');
});

t.test('goAway: the client leaves, waits reconnectAfterMs and comes back on another gateway', async (t) => {
  const { engine, gw, rider: riderFor } = await setup(t);
  const other = await startGateway({ engine, auth, logger: silent });
  t.teardown(() => other.drain(0));
  let port = gw.port;
  const rider = riderFor('rider-sdk-5', { url: () => `ws://127.0.0.1:${port}/v1/ws`, random: () => 0 });
  await rider.connect();
  await rider.online({ position: offset(STORE, 500, 0) });

  const goAway = next(rider, 'goAway', 'goAway');
  const reopened = next(rider, 'open', 'the reconnection', undefined, 4_000);
  // A load balancer would now send new connections elsewhere.
  port = other.port;
  const started = performance.now();
  let drainedAfter = 0;
  const drained = gw.drain(5_000).then(() => (drainedAfter = performance.now() - started));
  t.match(await goAway, { reason: 'shutdown', reconnectAfterMs: 1_000 });
  const queued = keep(rider.setBreak(true));
  const hello = await reopened;
  const reopenedAfter = performance.now() - started;
  await drained;
  t.ok(drainedAfter < 1_000, `the client left at once, so the drain did not wait for its grace (${Math.round(drainedAfter)} ms)`);
  t.ok(reopenedAfter >= 1_000, `it waited reconnectAfterMs before coming back (${Math.round(reopenedAfter)} ms)`);
  t.match(hello, { resumed: false }, 'a new session on the other node');
  t.match(await queued, { status: 'onBreak', dup: false }, 'the command issued meanwhile went to the new gateway');
  t.equal((await engine.getRider('rider-sdk-5')).status, 'onBreak');
});

t.test("a replayed queue stays within the gateway's rate limit", async (t) => {
  // A tight gateway limit so a naive replay would be refused within the first frames.
  const { engine, gw, rider: riderFor } = await setup(t, { messagesPerSecond: 200, messageBurst: 10 });
  const proxy = await startProxy(t, gw.port);
  const rider = riderFor('rider-sdk-6', { url: proxy.url, rateLimit: { perSecond: 150, burst: 8 } });
  const errors = collect(rider, 'error');
  await rider.connect();
  await rider.online({ position: offset(STORE, 500, 0) });
  proxy.refuse = true;
  const lost = next(rider, 'disconnect', 'the disconnect');
  proxy.kill();
  await lost;
  const toggles = Array.from({ length: 40 }, (_, i) => keep(rider.setBreak(i % 2 === 0)));
  const reopened = next(rider, 'open', 'the reconnection');
  proxy.refuse = false;
  await reopened;
  const acks = await Promise.all(toggles);
  t.same(
    acks.map((a) => a.status),
    Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? 'onBreak' : 'available')),
  );
  t.same(errors.items, [], 'no frame was refused');
  t.equal((await engine.getRider('rider-sdk-6')).seq, 42, 'registered, online and 40 toggles');
});

// ---------------------------------------------------------------- browsers

t.test('bundles for browsers without Node built-ins, and the bundle works on globalThis.WebSocket', async (t) => {
  const entry = new URL('../../gateway/client/index.ts', import.meta.url).pathname;
  const bundle = await build({ entryPoints: [entry], bundle: true, platform: 'browser', format: 'esm', write: false, metafile: true, external: ['ws'], logLevel: 'silent' });
  const inputs = Object.keys(bundle.metafile.inputs);
  t.same(
    inputs.filter((p) => !/(^|\/)gateway\/client\/[a-z]+\.ts$/.test(p) && !/(^|\/)node_modules\/msgpackr\//.test(p)),
    [],
    'only the SDK and msgpackr are bundled: no engine, no protocol.ts at runtime',
  );
  const output = Object.values(bundle.metafile.outputs)[0];
  t.same(output.imports, [{ path: 'ws', kind: 'dynamic-import', external: true }], "the only import is the lazy fallback to 'ws'");
  const code = bundle.outputFiles[0].text;
  t.notMatch(code, /["']node:/, 'no Node built-in');
  t.same(code.match(/["']ws["']/g), ['"ws"'], "'ws' is named once...");
  t.match(code, /import\("ws"\)/, '...in the dynamic import');

  // A bundler that follows the import uses ws's own browser stub: still no Node built-in.
  const followed = await build({ entryPoints: [entry], bundle: true, platform: 'browser', format: 'esm', write: false, metafile: true, logLevel: 'silent' });
  t.same(Object.values(followed.metafile.outputs)[0].imports, []);
  t.ok(Object.keys(followed.metafile.inputs).some((p) => p.endsWith('node_modules/ws/browser.js')), "ws's browser stub stands in for it");

  // Run the bundle as a page would: the SDK must pick the global WebSocket.
  const { engine, url } = await setup(t);
  let made = 0;
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket');
  class PageWebSocket extends WebSocket {
    constructor(address: string) {
      super(address);
      made++;
    }
  }
  Object.defineProperty(globalThis, 'WebSocket', { value: PageWebSocket, configurable: true, writable: true });
  t.teardown(() => {
    if (saved) Object.defineProperty(globalThis, 'WebSocket', saved);
    else delete (globalThis as { WebSocket?: unknown }).WebSocket;
  });
  const sdk = (await import(`data:text/javascript;base64,${Buffer.from(code).toString('base64')}`)) as typeof import('../../gateway/client/index.ts');
  const rider = new sdk.RiderClient({ url, token: tokenFor('rider', 'rider-page') });
  t.teardown(() => rider.close());
  await rider.connect();
  t.match(await rider.online({ position: offset(STORE, 500, 0) }), { status: 'available' });
  t.equal(made, 1, 'the global WebSocket was used');
  t.equal((await engine.getRider('rider-page')).status, 'available');
});

// ---------------------------------------------------------------- the wire, on a scripted socket

/** A WebSocket the test plays the gateway for: it reads what the SDK sends with the gateway's own strict decoder. */
function scriptedSockets() {
  const sockets: Scripted[] = [];
  const waiters: Array<() => void> = [];
  class Scripted implements WebSocketLike {
    binaryType = 'blob';
    readyState = 0;
    readonly sent: ClientMessage[] = [];
    onopen: ((e: unknown) => void) | null = null;
    onmessage: ((e: { data: unknown }) => void) | null = null;
    onerror: ((e: unknown) => void) | null = null;
    onclose: ((e: { code: number; reason: string }) => void) | null = null;
    constructor(readonly url: string) {
      sockets.push(this);
      for (const w of waiters.splice(0)) w();
      queueMicrotask(() => {
        this.readyState = 1;
        this.onopen?.({});
      });
    }
    send(data: Uint8Array): void {
      const d = decode(data, 'client');
      if (!d.ok) throw new Error(`the gateway would refuse this frame: ${d.message}`);
      this.sent.push(d.msg);
    }
    close(code = 1000, reason = ''): void {
      if (this.readyState === 3) return;
      this.readyState = 3;
      queueMicrotask(() => this.onclose?.({ code, reason }));
    }
    /** A frame from the gateway, as the ArrayBuffer a browser hands over. */
    serve(msg: ServerMessage): void {
      const bytes = encode(msg);
      this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
    }
    hello(session: string, role: 'rider' | 'customer', lastS = 0): void {
      this.serve({ t: 64, v: PROTOCOL_VERSION, now: Date.now(), role, userId: 'u-1', session, resumed: lastS > 0, lastS });
    }
    /** The network drops the connection. */
    drop(): void {
      this.readyState = 3;
      this.onclose?.({ code: 1006, reason: '' });
    }
  }
  return {
    Scripted,
    sockets,
    /** The n-th socket the SDK opens (0-based). */
    async socket(n: number): Promise<Scripted> {
      const deadline = Date.now() + 3_000;
      while (sockets.length <= n) {
        if (Date.now() > deadline) throw new Error(`socket ${n} was never opened`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 50);
        });
      }
      return sockets[n];
    },
  };
}

async function sentUntil(sock: { sent: ClientMessage[] }, count: number, what: string): Promise<ClientMessage[]> {
  const deadline = Date.now() + 3_000;
  while (sock.sent.length < count) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; sent ${JSON.stringify(sock.sent)}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return sock.sent;
}

t.test('the client codec agrees with gateway/protocol.ts in both directions', async (t) => {
  t.equal(PROTOCOL_VERSION, ProtocolVersion);
  t.same(MessageType, ProtocolMessageType);
  const fromApp: ClientMessage[] = [
    { t: 1, ts: T0 },
    { t: 2, s: 1, lat: 12.9, lng: 77.6, ts: T0, seq: 3 },
    { t: 3, s: 2, fixes: [[12.9, 77.6, T0, 4], [12.91, 77.61, T0 + 1_000, 5]] },
    { t: 4, s: 3, capacity: 2, position: { lat: 12.9, lng: 77.6 }, shiftEndsAt: T0 + 3_600_000 },
    { t: 5, s: 4 },
    { t: 6, s: 5, on: true },
    { t: 7, s: 6, orderId: 'o-1' },
    { t: 8, s: 7, orderId: 'o-1' },
    { t: 9, s: 8, orderId: 'o-1', where: 'dropoff' },
    { t: 10, s: 9, orderId: 'o-1' },
    { t: 11, s: 10, orderId: 'o-1', otp: '1234', proofRef: 'proofs/1.jpg' },
    { t: 20, s: 11, orderId: 'o-1', afterSeq: 4 },
    { t: 21, s: 12, orderId: 'o-1' },
  ];
  for (const msg of fromApp) t.same(decode(encodeFrame(msg), 'client'), { ok: true, msg }, `app message ${msg.t}`);
  t.same(
    decode(encodeFrame({ t: 4, s: 1, capacity: undefined, position: { lat: 1, lng: 2, extra: 3 } as never }), 'client'),
    { ok: true, msg: { t: 4, s: 1, position: { lat: 1, lng: 2 } } },
    'undefined fields and stray keys never reach the strict decoder',
  );
  const fromGateway: Message[] = [
    { t: 64, v: 1, now: T0, role: 'customer', userId: 'c-1', session: 'x', resumed: false, lastS: 0 },
    { t: 65, s: 3, dup: true, result: { orderId: 'o-1', status: 'assigned', seq: 3 } },
    { t: 66, s: 4, code: 5, error: 'QD_ERR_INVALID_TRANSITION', message: 'no', field: 'on', state: 'onBreak', retryAfterMs: 5, dup: true },
    { t: 67, now: T0, ts: T0 - 5 },
    { t: 68, reason: 'drain', reconnectAfterMs: 500 },
    { t: 70, orderId: 'o-1', storeId: 's-1', pickup: { lat: 1, lng: 2 }, dropoff: { lat: 3, lng: 4 }, expiresAt: T0 },
    { t: 71, orderId: 'o-1', reason: 'expired' },
    { t: 72, status: 'toPickup', orderIds: ['o-1'], seq: 9 },
    { t: 80, orderId: 'o-1', seq: 2, status: 'offered', event: 'OFFER', at: T0, riderId: null, eta: T0 + 60_000 },
    { t: 81, orderId: 'o-1', lat: 1, lng: 2, ts: T0 },
  ];
  for (const msg of fromGateway) t.same(decodeFrame(encode(msg)), { ok: true, msg }, `gateway message ${msg.t}`);
  t.match(decodeFrame(encode({ t: 72, status: 'available', orderIds: 'o-1', seq: 1 } as never)), { ok: false, reason: /orderIds/ });
  t.match(decodeFrame(new Uint8Array([0xc1])), { ok: false });
  t.match(decodeFrame('{"t":64}'), { ok: false, reason: 'text frame' });
  t.match(decodeFrame(encode({ t: 96 } as never)), { ok: false, unknown: true }, "the operations map's frame is not for apps");
});

t.test('scripted: a customer re-follows after its last seq and reports each status once', async (t) => {
  const net = scriptedSockets();
  const customer = new CustomerClient({ url: 'ws://gateway.test/v1/ws', token: 'tok-1', WebSocket: net.Scripted, minReconnectDelayMs: 1, random: () => 0 });
  t.teardown(() => customer.close());
  const statuses = collect(customer, 'status');
  const positions = collect(customer, 'position');
  const connected = customer.connect();
  const first = await net.socket(0);
  t.equal(first.binaryType, 'arraybuffer');
  t.same([...new URL(first.url).searchParams], [['token', 'tok-1']]);
  first.hello('sess-1', 'customer');
  await connected;

  const followed = keep(customer.follow('o-1'));
  t.same(await sentUntil(first, 1, 'the follow'), [{ t: 20, s: 1, orderId: 'o-1' }]);
  first.serve({ t: 65, s: 1, result: { orderId: 'o-1', status: 'searching', seq: 1 } });
  t.match(await followed, { s: 1, status: 'searching' });
  const status = (seq: number) => ({ t: 80, orderId: 'o-1', seq, status: 'searching', event: 'X', at: T0 + seq, riderId: null }) as const;
  for (const seq of [1, 2, 2, 1]) first.serve(status(seq));
  first.serve({ t: 81, orderId: 'o-1', lat: 1, lng: 2, ts: T0 + 10 });
  first.serve({ t: 81, orderId: 'o-1', lat: 1.5, lng: 2, ts: T0 + 5 });
  first.serve({ t: 80, orderId: 'o-other', seq: 1, status: 'searching', event: 'X', at: T0, riderId: null });

  first.drop();
  const second = await net.socket(1);
  t.equal(new URL(second.url).searchParams.get('session'), 'sess-1', 'reconnects with the session');
  second.hello('sess-1', 'customer', 1);
  t.same(await sentUntil(second, 1, 'the re-follow'), [{ t: 20, s: 2, orderId: 'o-1', afterSeq: 2 }], 'follows again after the last seq seen, with a new s');
  for (const seq of [2, 3]) second.serve(status(seq));
  t.same(
    statuses.items.map((s) => s.seq),
    [1, 2, 3],
  );
  t.same(
    positions.items.map((p) => p.ts),
    [T0 + 10],
    'an older position is dropped',
  );
});

t.test('scripted: offline fixes are batched and trimmed, commands keep their place, the bucket paces the replay', async (t) => {
  const net = scriptedSockets();
  const rider = new RiderClient({
    url: 'ws://gateway.test/v1/ws',
    token: 'tok',
    WebSocket: net.Scripted,
    maxQueuedFixes: 1_000,
    rateLimit: { perSecond: 200, burst: 3 },
  });
  t.teardown(() => rider.close());
  const fix = (seq: number) => ({ lat: 12.9, lng: 77.6, ts: T0 + seq, seq });
  t.throws(() => rider.sendFix({ ...fix(1), lat: Number.NaN }), RangeError, 'a bad fix is refused before it can spoil a batch');
  t.throws(() => rider.sendFixes([fix(1), { ...fix(2), seq: -1 }]), /fixes\[1\]\.seq/);
  // Queued before the first connection: 1,200 fixes around two commands.
  rider.sendFixes(Array.from({ length: 1_100 }, (_, i) => fix(i)));
  const online = keep(rider.online({ capacity: 2 }));
  rider.sendFixes(Array.from({ length: 100 }, (_, i) => fix(1_100 + i)));
  const brk = keep(rider.setBreak(true));
  t.equal(rider.droppedFixes, 200, 'the oldest fixes made room');

  const connected = rider.connect();
  const sock = await net.socket(0);
  sock.hello('sess-r', 'rider');
  await connected;
  t.equal(sock.sent.length, 3, 'the burst goes at once');
  const sent = await sentUntil(sock, 5, 'the paced rest');
  t.same(
    sent.map((m) => [m.t, 'fixes' in m ? m.fixes.length : null, 's' in m ? m.s : null]),
    [
      [MessageType.fixes, 500, 1],
      [MessageType.fixes, 400, 2],
      [MessageType.online, null, 3],
      [MessageType.fixes, 100, 4],
      [MessageType.break, null, 5],
    ],
  );
  t.equal((sent[0] as { fixes: number[][] }).fixes[0][3], 200, 'the batch starts at the oldest fix kept');
  const fixReports = collect(rider, 'fixes');
  for (const s of [1, 2, 4]) sock.serve({ t: 65, s, result: { accepted: 5, stale: 1, rejected: 0 } });
  sock.serve({ t: 65, s: 3, result: { status: 'available', seq: 2 } });
  sock.serve({ t: 66, s: 5, code: 10, error: 'QD_ERR_RIDER_BUSY', message: 'busy', state: 'toPickup' });
  t.match(await online, { s: 3, status: 'available' });
  t.match(await rejection(brk), { s: 5, code: 'QD_ERR_RIDER_BUSY', state: 'toPickup' });
  t.equal(fixReports.items.length, 3);
  t.same(await rider.flushFixes(), { accepted: 0, stale: 0, rejected: 0 }, 'nothing left to flush');
});

t.test('scripted: an idle socket is pinged, and a silent one is replaced', async (t) => {
  const net = scriptedSockets();
  const rider = new RiderClient({
    url: 'ws://gateway.test/v1/ws',
    token: 'tok',
    WebSocket: net.Scripted,
    pingIntervalMs: 40,
    pongTimeoutMs: 40,
    minReconnectDelayMs: 1,
  });
  t.teardown(() => rider.close());
  const connected = rider.connect();
  const first = await net.socket(0);
  first.hello('sess-p', 'rider');
  await connected;
  const [ping] = await sentUntil(first, 1, 'a ping');
  t.match(ping, { t: MessageType.ping });
  first.serve({ t: 67, now: Date.now(), ts: (ping as { ts: number }).ts });
  t.type(rider.rttMs, 'number');
  // No answer to the next pings: the socket is given up and a new one opened with the session.
  const second = await net.socket(1);
  t.equal(first.readyState, 3, 'the silent socket was closed');
  t.equal(new URL(second.url).searchParams.get('session'), 'sess-p');
});

t.test('scripted: goAway closes once in-flight commands are answered; a 4004 close stops the client', async (t) => {
  const net = scriptedSockets();
  const rider = new RiderClient({ url: 'ws://gateway.test/v1/ws', token: 'tok', WebSocket: net.Scripted, random: () => 0.5 });
  t.teardown(() => rider.close());
  const disconnects = collect(rider, 'disconnect');
  const connected = rider.connect();
  const first = await net.socket(0);
  first.hello('sess-g', 'rider');
  await connected;
  const online = keep(rider.online());
  await sentUntil(first, 1, 'the online');
  first.serve({ t: 68, reason: 'drain', reconnectAfterMs: 20 });
  const held = keep(rider.setBreak(true));
  t.equal(first.readyState, 1, 'still open: a command awaits its answer');
  t.equal(first.sent.length, 1, 'nothing new is sent to a node going away');
  first.serve({ t: 65, s: 1, result: { status: 'available', seq: 2 } });
  await online;
  t.match(await disconnects.until(() => true, 'the close'), { wasOpen: true, reconnectInMs: 30 }, 'reconnectAfterMs plus jitter');
  const second = await net.socket(1);
  second.hello('sess-g2', 'rider');
  t.match(await sentUntil(second, 1, 'the held command'), [{ t: MessageType.break, s: 2, on: true }]);
  second.serve({ t: 65, s: 2, result: { status: 'onBreak', seq: 3 } });
  t.match(await held, { status: 'onBreak' });

  const pending = keep(rider.offline());
  await sentUntil(second, 2, 'the offline');
  const errors = collect(rider, 'error');
  second.close(4004, 'too many malformed frames');
  t.match(await rejection(pending), { code: 'QD_CLIENT_PROTOCOL_VIOLATION' });
  t.equal(rider.state, 'closed');
  t.match(errors.items, [{ code: 'QD_CLIENT_PROTOCOL_VIOLATION' }]);
});

t.test('scripted: rider events: an offer once, stale riderStates ignored, an offer that ended while away reported gone', async (t) => {
  const net = scriptedSockets();
  let asked = 0;
  const rider = new RiderClient({
    url: 'ws://gateway.test/v1/ws',
    // The first call fails, as a token refresh on a flaky network would.
    token: async () => {
      if (++asked === 1) throw new Error('refresh failed');
      return 'tok';
    },
    WebSocket: net.Scripted,
    minReconnectDelayMs: 1,
  });
  t.teardown(() => rider.close());
  const errors = collect(rider, 'error');
  const offers = collect(rider, 'offer');
  const gone = collect(rider, 'offerGone');
  const states = collect(rider, 'riderState');
  const connected = rider.connect();
  const first = await net.socket(0);
  t.match(errors.items, [{ code: 'QD_CLIENT_CONNECT_FAILED', message: /refresh failed/ }], 'a failing token provider is reported, then retried');
  first.hello('sess-o', 'rider');
  await connected;

  const offer = { t: 70, orderId: 'o-9', storeId: 's-1', pickup: { lat: 1, lng: 2 }, dropoff: { lat: 3, lng: 4 }, expiresAt: Date.now() + 60_000 } as const;
  first.serve(offer);
  first.serve({ t: 72, status: 'offered', orderIds: [], seq: 5 });
  first.serve({ t: 72, status: 'available', orderIds: [], seq: 4 });
  t.same(
    states.items.map((s) => s.seq),
    [5],
    'an older riderState is ignored',
  );

  first.drop();
  const second = await net.socket(1);
  second.hello('sess-o', 'rider');
  second.serve(offer);
  t.equal(offers.items.length, 1, 'the same offer repeated on a new socket is reported once');
  second.serve({ t: 72, status: 'available', orderIds: [], seq: 7 });
  t.match(gone.items, [{ orderId: 'o-9', reason: 'void' }], 'gone without an offerGone frame: reported from the riderState');
  t.equal(rider.offer, null);

  second.serve({ ...offer, orderId: 'o-10' });
  const declined = keep(rider.decline('o-10'));
  second.serve({ t: 65, s: 1, result: { orderId: 'o-10', status: 'searching', seq: 3 } });
  await declined;
  second.serve({ t: 72, status: 'available', orderIds: [], seq: 9 });
  t.equal(gone.items.length, 1, 'an offer the rider declined is not reported gone');
  t.equal(rider.riderState?.seq, 9);
});

// The operations feed over a real socket: who may connect, what a frame holds, how it follows the engine; /metrics; the page's files.
import t from 'tap';
import type { Test } from 'tap';
import { get as httpGet } from 'node:http';
import WebSocket from 'ws';
import pino from 'pino';
import { cellToParent, getResolution, latLngToCell } from 'h3-js';
import { createEngine, MemoryEventStore, VirtualClock } from '../../engine/index.ts';
import type { DispatchEngine } from '../../engine/index.ts';
import { developmentAuthConfig, signToken, type Role } from '../../gateway/auth.ts';
import { CloseCodes, MessageType, decode, type OpsSnapshotMessage } from '../../gateway/protocol.ts';
import { startGateway, type Gateway, type GatewayOptions } from '../../gateway/server.ts';
import { offset, orderSpec, STORE, T0 } from '../engine/harness.ts';

const auth = developmentAuthConfig();
const token = (role: Role, sub = `${role}-1`) => signToken({ sub, role, ttlSec: 600 }, auth);

async function setup(t: Test, ops: GatewayOptions['ops'] = {}): Promise<{ engine: DispatchEngine; clock: VirtualClock; gw: Gateway }> {
  const clock = new VirtualClock(T0);
  const engine = await createEngine({ store: new MemoryEventStore(), clock, threads: false, config: { shards: 1, matchWindowMs: 1_000 } });
  const gw = await startGateway({ engine, auth, logger: pino({ level: 'silent' }), ops: { intervalMs: 100, ...ops } });
  t.teardown(async () => {
    await gw.drain(0);
    await engine.close();
  });
  return { engine, clock, gw };
}

/** An operations socket that keeps every frame it is sent, decoded and validated as a server message. */
class OpsClient {
  readonly frames: OpsSnapshotMessage[] = [];
  readonly closed: Promise<number>;
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      const d = decode(new Uint8Array(data), 'server');
      if (!d.ok) throw new Error(`undecodable ops frame: ${d.message}`);
      if (d.msg.t === MessageType.opsSnapshot) this.frames.push(d.msg);
    });
    this.closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
  }

  static async open(port: number): Promise<OpsClient> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/ops?token=${token('operations', 'ops-desk')}`);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new OpsClient(ws);
  }

  /** The first frame after `from` frames that satisfies `pred`. */
  async next(pred: (m: OpsSnapshotMessage) => boolean, what: string, from = 0): Promise<OpsSnapshotMessage> {
    const deadline = Date.now() + 3_000;
    for (;;) {
      const found = this.frames.slice(from).find(pred);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last frame ${JSON.stringify(this.frames.at(-1))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): void {
    this.ws.close();
  }
}

/** GET without keep-alive (fetch's pooled sockets would hold the test process for seconds after the server is gone). */
function get(port: number, path: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; text: string }> {
  return new Promise((resolve, reject) => {
    httpGet({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    }).on('error', reject);
  });
}

function refusal(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.on('unexpected-response', (req, res) => {
      // With this listener ws leaves the refused request open: end it, or it holds the process until the server's idle timeout.
      req.destroy();
      resolve(res.statusCode ?? 0);
    });
    ws.on('open', () => {
      ws.close();
      reject(new Error(`${url} was accepted`));
    });
    ws.on('error', () => undefined);
  });
}

t.test('the feed takes only operations tokens: 401 without a valid one, 403 for other roles', async (t) => {
  const { gw } = await setup(t);
  const base = `ws://127.0.0.1:${gw.port}/v1/ops`;
  t.equal(await refusal(base), 401, 'no token');
  t.equal(await refusal(`${base}?token=garbage`), 401, 'garbage token');
  const expired = signToken({ sub: 'ops-old', role: 'operations', ttlSec: 1 }, { ...auth, now: () => Date.now() - 3_600_000 });
  t.equal(await refusal(`${base}?token=${expired}`), 401, 'expired token');
  t.equal(await refusal(`${base}?token=${token('rider')}`), 403, 'a rider');
  t.equal(await refusal(`${base}?token=${token('customer')}`), 403, 'a customer');
  t.equal(await refusal(`${base}?token=${token('service')}`), 403, 'a service');
  const metrics = (await get(gw.port, '/metrics')).text;
  t.match(metrics, /quickdash_ops_refused_total\{reason="role"\} 3/);
  t.match(metrics, /quickdash_ops_refused_total\{reason="malformed"\} 2/);
  const ops = await OpsClient.open(gw.port);
  t.ok(await ops.next(() => true, 'a frame'), 'an operations token is let in');
  ops.close();
});

t.test('an operations client sees riders, orders, demand and supply cells and live counters, and riders move', async (t) => {
  const { engine, clock, gw } = await setup(t);
  const near = offset(STORE, 400, 0);
  const far = offset(STORE, -2500, 1800);
  await engine.riderOnline('r-near', { position: near });
  await engine.riderOnline('r-far', { position: far });
  await engine.riderOnline('r-nowhere');
  const spec = orderSpec();
  await engine.createOrder(spec);

  const ops = await OpsClient.open(gw.port);
  // An app socket is counted; the operations socket is not.
  const app = new WebSocket(`ws://127.0.0.1:${gw.port}/v1/ws?token=${token('customer', 'cust-ops')}`);
  await new Promise((r) => app.once('message', r));
  t.teardown(() => app.close());

  const first = await ops.next((m) => m.counters.connections === 1, 'a frame counting the app socket');
  t.equal(first.res, 8, 'default cell resolution');
  t.ok(Math.abs(first.now - Date.now()) < 5_000, 'server clock');
  const riders = new Map(first.riders.map(([id, status, lat, lng]) => [id, { status, lat, lng }]));
  t.same([...riders.keys()].sort(), ['r-far', 'r-near'], 'riders with a position, from the engine');
  t.same(riders.get('r-near'), { status: 'available', ...near });
  t.same(first.orders, [[spec.orderId, 'searching', spec.pickup.lat, spec.pickup.lng, spec.dropoff.lat, spec.dropoff.lng, null]]);
  const cells = new Map(first.cells.map(([cell, demand, supply]) => [cell, { demand, supply }]));
  const pickupCell = latLngToCell(spec.pickup.lat, spec.pickup.lng, 8);
  t.same(cells.get(pickupCell), { demand: 1, supply: latLngToCell(near.lat, near.lng, 8) === pickupCell ? 1 : 0 }, 'demand where the order waits');
  t.equal(cells.get(latLngToCell(far.lat, far.lng, 8))?.supply, 1, 'supply where an available rider is');
  t.match(first.counters, { ordersLive: 1, ridersOnline: 3, offersMade: 0, matcherRuns: 0, dispatchP50Ms: null, dispatchP95Ms: null });
  t.ok(first.counters.eventLoopLagMs >= 0);

  // A fix moves the rider in a later frame; the fixes rate follows.
  const moved = offset(far, 300, 300);
  clock.advance(30_000);
  const ingest = await engine.ingestFixes([{ riderId: 'r-far', lat: moved.lat, lng: moved.lng, ts: clock.now(), seq: 1 }]);
  t.equal(ingest.accepted, 1);
  const after = await ops.next((m) => m.riders.some(([id, , lat, lng]) => id === 'r-far' && lat === moved.lat && lng === moved.lng), 'the moved rider');
  t.ok(after.counters.fixesPerSecond > 0, 'the frame that shows the move counts its fix in the rate');

  // Dispatch: an offer, then an acceptance three seconds after the order began searching.
  clock.advance(1_000);
  await engine.tick();
  const offered = await engine.getOrder(spec.orderId);
  t.equal(offered.status, 'offered');
  clock.advance(2_000);
  await engine.acceptOffer(offered.offer!.riderId, spec.orderId);
  const assigned = await ops.next((m) => m.orders[0]?.[1] === 'assigned', 'the assigned order');
  t.equal(assigned.orders[0][6], offered.offer!.riderId, 'the order names its rider');
  t.notOk(assigned.cells.some(([, demand]) => demand > 0), 'an assigned order is no longer demand');
  t.match(assigned.counters, { offersMade: 1, matcherRuns: 1, dispatchP50Ms: 33_000, dispatchP95Ms: 33_000 });

  const metrics = (await get(gw.port, '/metrics')).text;
  t.match(metrics, /quickdash_shard_queue_depth\{shard="0"\} 0\n/, 'queue depth per shard');
  t.match(metrics, /# TYPE quickdash_dispatch_latency_seconds histogram\n/);
  t.match(metrics, /quickdash_dispatch_latency_seconds_bucket\{le="30"\} 0\nquickdash_dispatch_latency_seconds_bucket\{le="60"\} 1\n/);
  t.match(metrics, /quickdash_dispatch_latency_seconds_count 1\nquickdash_dispatch_latency_seconds_sum 33|quickdash_dispatch_latency_seconds_sum 33\nquickdash_dispatch_latency_seconds_count 1/);
  t.match(metrics, /quickdash_orders_live 1\n/);
  t.match(metrics, /quickdash_riders_online 3\n/);
  t.match(metrics, /# TYPE quickdash_engine_fixes_accepted_total counter\nquickdash_engine_fixes_accepted_total 1\n/);
  t.match(metrics, /quickdash_ops_connections 1\n/);
  t.match(metrics, /quickdash_ws_connections\{role="customer"\} 1\n/, 'the app socket, and only it, as a connection');
  t.match(metrics, /quickdash_event_loop_lag_seconds [0-9.e-]+\n/);
  t.match(metrics, /quickdash_fixes_accepted_total /, 'the gateway’s own fixes counter is still there');

  // Draining closes operations sockets too.
  await gw.drain(0);
  t.equal(await ops.closed, CloseCodes.GOING_AWAY);
});

t.test('cells at a coarser resolution than the engine index are the parents of its cells', async (t) => {
  const { engine, gw } = await setup(t, { cellRes: 7 });
  const at = offset(STORE, 900, -600);
  await engine.riderOnline('r-7', { position: at });
  const ops = await OpsClient.open(gw.port);
  const frame = await ops.next((m) => m.cells.length > 0, 'a frame with cells');
  t.equal(frame.res, 7);
  t.same(frame.cells, [[cellToParent(latLngToCell(at.lat, at.lng, 8), 7), 0, 1]]);
  t.equal(getResolution(frame.cells[0][0]), 7);
  ops.close();
});

t.test('the page and its scripts are served, with a policy that keeps the token in', async (t) => {
  const { gw } = await setup(t);
  const page = await get(gw.port, '/ops?token=x');
  t.equal(page.status, 200);
  t.match(page.headers['content-type'], /^text\/html/);
  t.equal(page.headers['referrer-policy'], 'no-referrer');
  t.match(page.headers['content-security-policy'], /script-src 'self'/);
  const html = page.text;
  for (const src of ['/ops/vendor/msgpackr.js', '/ops/vendor/h3.js', '/ops/app.js']) {
    t.ok(html.includes(`src="${src}"`), `the page loads ${src}`);
    const r = await get(gw.port, src);
    t.equal(r.status, 200, src);
    t.match(r.headers['content-type'], /^text\/javascript/);
    t.ok(r.text.length > 1000, `${src} has a body`);
  }
  t.equal((await get(gw.port, '/ops/nope.js')).status, 404, 'nothing else under /ops');
});

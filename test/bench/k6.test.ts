// The k6 load scripts (bench/k6): the checked-in bundles are current, their protocol copy matches the gateway's,
// and, run through a k6 shim against a real gateway, riders deliver an order while its customer watches.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import pino from 'pino';
import { buildK6Scripts, distPath, K6_DIR, K6_SCRIPTS } from '../../bench/k6/build.ts';
import { createEngine, MemoryEventStore, SystemClock } from '../../engine/index.ts';
import { developmentAuthConfig, signToken } from '../../gateway/auth.ts';
import { CloseCodes, Limits, MessageType, PROTOCOL_VERSION, decode, encode } from '../../gateway/protocol.ts';
import { startGateway, type Gateway } from '../../gateway/server.ts';
import { offset, orderSpec, STORE } from '../engine/harness.ts';
import { runK6, type K6RunResult } from './k6-shim.ts';

/** bench/k6/src/protocol.js, loaded at run time: plain JavaScript without type declarations. */
interface K6Protocol {
  PROTOCOL_VERSION: number;
  MessageType: Record<string, number>;
  CloseCodes: Record<string, number>;
  Limits: Record<string, number>;
  DEV_AUTH: { issuer: string; audience: string; secret: string };
  encode(msg: object): ArrayBuffer;
  decode(data: ArrayBuffer): Record<string, unknown> | null;
}
const k6Protocol = async (): Promise<K6Protocol> => (await import(pathToFileURL(join(K6_DIR, 'src', 'protocol.js')).href)) as K6Protocol;

t.test('the checked-in dist bundles are a fresh build of bench/k6/src', async (t) => {
  const fresh = await buildK6Scripts();
  for (const name of K6_SCRIPTS) {
    const stale = readFileSync(distPath(name), 'utf8') !== fresh.get(name);
    // A boolean, not t.equal: a diff of two 100 KiB bundles says less than the fix does.
    t.notOk(stale, `bench/k6/dist/${name}.js matches its sources (if not: npx tsx bench/k6/build.ts)`);
  }
});

t.test("the scripts' copy of the protocol is gateway/protocol.ts's", async (t) => {
  const p = await k6Protocol();
  t.equal(p.PROTOCOL_VERSION, PROTOCOL_VERSION);
  t.same(p.MessageType, MessageType, 'message type codes');
  t.same(p.CloseCodes, CloseCodes, 'close codes');
  for (const [k, v] of Object.entries(p.Limits)) t.equal(v, Limits[k as keyof typeof Limits], `Limits.${k}`);
  const dev = developmentAuthConfig();
  t.same(p.DEV_AUTH, { issuer: dev.issuer, audience: dev.audience, secret: dev.keys.hs256Secret }, 'development token settings');

  // Frames cross both ways: the gateway's strict decoder takes what the scripts encode, and the reverse.
  const fix = { t: MessageType.fixes, s: 7, fixes: [[12.9, 77.6, 1_764_000_000_123, 1_764_000_000_123]] };
  t.same(decode(new Uint8Array(p.encode({ ...fix, unused: undefined })), 'client'), { ok: true, msg: fix }, 'the gateway reads a script frame');
  const hello = { t: MessageType.hello, v: 1, now: 1_764_000_000_000, role: 'rider', userId: 'r-1', session: 's-1', resumed: false, lastS: 0 } as const;
  const bytes = encode(hello);
  t.same(p.decode(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer), hello, 'a script reads a gateway frame');
});

/** An engine on the wall clock (the scripts stamp fixes with Date.now()), ticking like a node, and a gateway in front. */
async function node(t: Tap.Test): Promise<{ engine: Awaited<ReturnType<typeof createEngine>>; gw: Gateway; url: string }> {
  const engine = await createEngine({ store: new MemoryEventStore(), clock: new SystemClock(), threads: false, config: { shards: 1, matchWindowMs: 100 } });
  const gw = await startGateway({ engine, auth: developmentAuthConfig(), logger: pino({ level: 'silent' }) });
  let ticking = false;
  const ticker = setInterval(() => {
    if (ticking) return;
    ticking = true;
    engine
      .tick()
      .catch(() => undefined)
      .finally(() => (ticking = false));
  }, 50);
  // Even a failing test must not leave a listen socket open: Node would wait on it.
  t.teardown(async () => {
    clearInterval(ticker);
    await gw.drain(0);
    await engine.close();
  });
  return { engine, gw, url: `ws://127.0.0.1:${gw.port}` };
}

/** Everything a failed assertion needs to explain a k6 run. */
function report(run: K6RunResult): string {
  const failed = run.thresholds.filter((x) => !x.ok);
  return JSON.stringify({ failures: run.failures, failedThresholds: failed, logs: run.logs.slice(-20) }, null, 1);
}

t.test('rider and customer scripts: riders deliver an order over a real gateway while its customer follows it', async (t) => {
  const { engine, url } = await node(t);
  // Created before the riders connect, so the first one online gets the offer.
  const spec = orderSpec({ customerId: 'k6-customer-1', pickup: STORE, dropoff: offset(STORE, 60, 80) });
  await engine.createOrder(spec);
  // Riders start 90-130 m from the store, outside the server's 75 m geofence, so they announce both arrivals
  // themselves (at QD_ARRIVE_M, 80 m) before any fix of theirs could trigger the geofence.
  const centre = offset(STORE, -110, 0);
  const dir = mkdtempSync(join(tmpdir(), 'k6-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ordersFile = join(dir, 'orders.txt');
  writeFileSync(ordersFile, `# customerId:orderId\nk6-customer-1:${spec.orderId}\n`);

  const [riders, customers] = await Promise.all([
    runK6({
      script: distPath('rider'),
      env: {
        QD_URL: url,
        QD_RIDERS: '2',
        QD_CENTER: `${centre.lat},${centre.lng}`,
        QD_RADIUS_M: '20',
        // Under the engine's 60 m/s teleport limit, fast enough to finish in about three seconds.
        QD_SPEED_MPS: '50',
        QD_FIX_INTERVAL_MS: '100',
        QD_ARRIVE_M: '80',
        QD_DWELL_MS: '100',
        QD_ACCEPT_DELAY_MS: '0',
        QD_SESSION_S: '1.5',
        QD_DRAIN_S: '6',
      },
      timeoutMs: 9_000,
    }),
    // The order list comes as a file, read by the script's open() in its init context.
    runK6({ script: distPath('customer'), env: { QD_URL: url, QD_ORDERS_FILE: ordersFile, QD_SESSION_S: '8' }, timeoutMs: 9_000 }),
  ]);

  t.same(riders.failures, [], `rider iterations completed ${report(riders)}`);
  t.equal(riders.iterations, 2);
  t.same(riders.values('checks', { check: 'rider went online' }), [1, 1], 'both riders went online');
  t.same(riders.values('checks', { check: 'rider went offline' }), [1, 1], 'and offline when their sessions ended');
  t.ok(riders.sum('qd_acks', { type: 'fix' }) >= 10, `fixes were acked (${riders.sum('qd_acks', { type: 'fix' })})`);
  t.equal(riders.sum('qd_fixes_accepted'), riders.sum('qd_fixes_sent'), 'the engine accepted every fix');
  t.equal(riders.sum('qd_errors'), 0, 'no command was refused');
  t.equal(riders.sum('qd_deliveries'), 1, 'the order was delivered');
  for (const type of ['accept', 'pickedUp', 'delivered']) t.equal(riders.sum('qd_acks', { type }), 1, `${type} acked once`);
  t.equal(riders.sum('qd_acks', { type: 'arrived' }), 2, 'arrived at pickup and at drop-off');
  t.equal(riders.sum('qd_geofence_arrivals'), 0, 'both before the geofence could');
  t.equal(riders.values('qd_ack_latency', { type: 'fix' }).length, riders.sum('qd_acks', { type: 'fix' }), 'every fix ack was timed');
  t.same(riders.thresholds.filter((x) => !x.ok), [], "the script's thresholds hold");

  const order = await engine.getOrder(spec.orderId);
  t.equal(order.status, 'delivered');
  for (const id of ['k6-rider-1', 'k6-rider-2']) t.equal((await engine.getRider(id)).status, 'offline', `${id} is offline`);

  t.same(customers.failures, [], `customer iteration completed ${report(customers)}`);
  t.same(
    customers.tagValues('qd_status_events', 'status'),
    ['searching', 'offered', 'assigned', 'atPickup', 'pickedUp', 'atDropoff', 'delivered'],
    'the customer saw every status, in order',
  );
  t.same(customers.values('checks', { check: 'follow acked' }), [1]);
  t.equal(customers.sum('qd_status_sequence_errors'), 0, 'no gap or repeat in status seqs');
  t.same(customers.tagValues('qd_orders_finished', 'status'), ['delivered']);
  const ages = customers.values('qd_position_latency');
  t.ok(ages.length >= 1, `rider positions reached the customer (${ages.length})`);
  t.ok(
    ages.every((ms) => ms >= 0 && ms < 1_500),
    `each position was fresh: fix ts to arrival ${JSON.stringify(ages)} ms`,
  );
  t.ok(customers.values('qd_status_latency').length >= 1, 'live status events were timed');
  t.same(customers.thresholds.filter((x) => !x.ok), [], "the script's thresholds hold");
});

t.test('rider script: batched fixes with a pre-issued token, and a wrong secret fails the thresholds', async (t) => {
  const { engine, url } = await node(t);
  const env = { QD_URL: url, QD_RIDERS: '1', QD_FIX_INTERVAL_MS: '50', QD_FIX_BATCH: '5', QD_SESSION_S: '1', QD_DRAIN_S: '2' };
  // QD_TOKENS instead of signing: the rider id is the token's subject.
  const token = signToken({ sub: 'issued-rider-9', role: 'rider', ttlSec: 600 }, developmentAuthConfig());
  const batched = await runK6({ script: distPath('rider'), env: { ...env, QD_TOKENS: token }, timeoutMs: 5_000 });
  t.same(batched.failures, [], report(batched));
  t.same(batched.values('checks', { check: 'hello names this rider' }), [1], "the gateway greeted the token's rider");
  t.equal((await engine.getRider('issued-rider-9')).status, 'offline', 'which went online and offline again');
  t.ok(batched.sum('qd_acks', { type: 'fixes' }) >= 3, `fixes batches were acked (${batched.sum('qd_acks', { type: 'fixes' })})`);
  t.equal(batched.sum('qd_acks', { type: 'fix' }), 0, 'no single fixes were sent');
  t.ok(batched.sum('qd_fixes_sent') >= 15, `fixes went out (${batched.sum('qd_fixes_sent')})`);
  t.equal(batched.sum('qd_fixes_accepted'), batched.sum('qd_fixes_sent'), 'the engine accepted every fix');
  t.same(batched.thresholds.filter((x) => !x.ok), [], 'thresholds hold, including p95 of the fixes acks');
  t.ok(batched.thresholds.some((x) => x.metric === 'qd_ack_latency{type:fixes}'), 'the fix latency threshold follows the batch setting');

  const refused = await runK6({ script: distPath('rider'), env: { ...env, QD_JWT_SECRET: 'not-the-secret-this-gateway-verifies-with' }, timeoutMs: 5_000 });
  t.same(refused.failures, [], 'a refused connection ends the iteration cleanly');
  t.equal(refused.sum('qd_errors', { code: 'CONNECT_FAILED' }), 1, 'the refused connection is counted');
  t.same(
    refused.thresholds.filter((x) => !x.ok).map((x) => x.metric),
    ['qd_errors', 'checks'],
    'and fails the run: the error threshold, and checks (no rider went online)',
  );
});

declare namespace Tap {
  type Test = import('tap').Test;
}

// docker-compose.yml replayed on loopback with the real programs (there is no Docker daemon here): the
// commands, environment, health checks, start order and stop grace of catalog, persistence and the node,
// read from the file itself, with compose's network mapped onto 127.0.0.1 and free ports. An order goes
// through the node; Postgres holds what the services say; every program exits 0 on SIGTERM; a restarted
// catalog keeps its live data.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { parse } from 'yaml';
import pg from 'pg';
import { credentials, type ServiceError } from '@grpc/grpc-js';
import { DispatchServiceClient, type CreateOrderResponse, type GetOrderResponse } from '../protos/gen/quickdash/v1/dispatch.ts';
import { OrderStatus, PaymentMode } from '../protos/gen/quickdash/v1/common.ts';
import { withBearer } from '../protos/rpc.ts';
import { authConfigFromEnv, signToken } from '../gateway/auth.ts';
import { DEFAULT_CATALOG_SCHEMA, demoCatalog, everyDay } from '../adapters/catalog/index.ts';
import { DEFAULT_SCHEMA } from '../adapters/sql/index.ts';
import { freePort, postgresUnavailable } from './support.ts';

const root = new URL('../', import.meta.url).pathname;
const PG_URL = process.env.QD_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
const DB = `qd_compose_${process.pid}_${Date.now().toString(36)}`;
const TEST_URL = Object.assign(new URL(PG_URL), { pathname: `/${DB}` }).href;

/** The services this test runs; postgres is replaced by the local server, payments is profile-only. */
const RUN = ['catalog', 'persistence', 'quickdash'] as const;
type Name = (typeof RUN)[number];
/** Every compose hostname resolves to loopback here. */
const HOSTS = [...RUN, 'postgres', 'payments'];

// A private secret (not the public development one): every service must verify the tokens the test signs.
const JWT_SECRET = randomBytes(32).toString('base64url');
/** What `${VAR...}` in the compose file sees (the shell running `docker compose up`); nothing else is set. */
const composeVars: Record<string, string> = { QD_JWT_SECRET: JWT_SECRET, QD_LOG_LEVEL: 'info' };

interface Healthcheck {
  test: string[];
  timeout?: string;
  start_period?: string;
}
interface Service {
  command?: string[];
  environment?: Record<string, string | number | boolean | null>;
  healthcheck?: Healthcheck;
  depends_on?: Record<string, { condition: string; required?: boolean }>;
  profiles?: string[];
  stop_grace_period?: string;
  ports?: string[];
  init?: boolean;
}
const compose = parse(readFileSync(join(root, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, Service> };

/** Compose durations ("20s", "1m30s", "500ms") in ms. */
function durationMs(s: string): number {
  let ms = 0;
  const rest = s.replace(/(\d+(?:\.\d+)?)(ms|h|m|s)/g, (_, n: string, unit: 'ms' | 'h' | 'm' | 's') => {
    ms += Number(n) * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[unit];
    return '';
  });
  if (rest !== '' || s === '') throw new Error(`not a compose duration: ${s}`);
  return ms;
}

/** Compose's interpolation: `$$` is a literal `$`; `${VAR}`, `${VAR:-default}`, `${VAR-default}`. Other operators are not used. */
function interpolate(s: string, vars: Record<string, string> = composeVars): string {
  return s.replace(
    /\$(?:(\$)|\{([A-Za-z_]\w*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_]\w*))/g,
    (_m, dollar: string | undefined, name: string | undefined, op: string | undefined, arg: string | undefined, bare: string | undefined) => {
      if (dollar) return '$';
      const v = vars[(name ?? bare)!];
      if (op === undefined) return v ?? '';
      if (op === ':-') return v ? v : arg!;
      if (op === '-') return v ?? arg!;
      throw new Error(`compose operator ${op} in ${s} is not handled by this test`);
    },
  );
}

/** The fixed ports the running services use: in their commands, health checks and published ports. */
function fixedPorts(): number[] {
  const found = new Set<number>();
  for (const name of RUN) {
    const svc = compose.services[name]!;
    const text = [...(svc.command ?? []), ...(svc.healthcheck?.test ?? [])].join(' ');
    for (const m of text.matchAll(/--[a-z-]*port\s+(\d+)/g)) found.add(Number(m[1]));
    for (const m of text.matchAll(new RegExp(`(?:${[...RUN, '127\\.0\\.0\\.1'].join('|')}):(\\d+)`, 'g'))) found.add(Number(m[1]));
    for (const p of svc.ports ?? []) found.add(Number(p.split(':').at(-1)));
  }
  return [...found].sort((a, b) => a - b);
}

// Compose's network on loopback: every service name is 127.0.0.1, every fixed port a free one, so parallel test
// files never collide. Rewritten in the file's text before interpolation, so the test's own values are never touched.
const portMap = new Map<number, number>();
for (const p of fixedPorts()) portMap.set(p, await freePort());
const hostRe = new RegExp(`(?<=^|[\\s"'=/@])(${HOSTS.join('|')})(?=:\\d)`, 'g');
const portRe = new RegExp(`(?<!\\d)(${[...portMap.keys()].join('|')})(?!\\d)`, 'g');
function onLoopback(s: string): string {
  return s
    .replace(hostRe, '127.0.0.1')
    .replace(portRe, (p) => String(portMap.get(Number(p))))
    .replaceAll('0.0.0.0', '127.0.0.1');
}
const resolve = (s: string, vars = composeVars) => interpolate(onLoopback(s), vars);

/** The Dockerfile's ENV: the containers run with it under the service's own environment. */
function imageEnv(): Record<string, string> {
  const out: Record<string, string> = {};
  const text = readFileSync(join(root, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  for (const line of text.split('\n')) {
    const m = /^ENV\s+(.*)$/.exec(line.trim());
    if (!m) continue;
    for (const pair of m[1]!.trim().split(/\s+/)) {
      const eq = pair.indexOf('=');
      if (eq <= 0 || /["']/.test(pair)) throw new Error(`Dockerfile ENV ${pair}: not handled by this test`);
      out[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
  }
  return out;
}
const IMAGE_ENV = imageEnv();

function serviceEnv(name: Name, vars = composeVars): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(compose.services[name]!.environment ?? {})) env[k] = resolve(v === null ? '' : String(v), vars);
  // The compose postgres service creates the `quickdash` user its URL names; the local server trusts `postgres`,
  // and the test's own database keeps the services' default schemas away from every other test.
  if ('QD_POSTGRES_URL' in env) env.QD_POSTGRES_URL = TEST_URL;
  return env;
}

interface Proc {
  name: string;
  child: ChildProcess;
  output: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}
const procs: Proc[] = [];

/** A program in its own process group, so teardown can kill whatever it started (sh leaves its child behind). */
function launch(name: string, argv: string[], env: Record<string, string>): Proc {
  const child = spawn(argv[0]!, argv.slice(1), { cwd: root, env: { ...process.env, ...IMAGE_ENV, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const output: string[] = [];
  const keep = (chunk: Buffer) => {
    output.push(chunk.toString());
    if (output.length > 400) output.splice(0, output.length - 400);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  child.once('error', (err) => output.push(`spawn failed: ${err.message}\n`));
  const p = { name, child, output, exited };
  procs.push(p);
  return p;
}

const alive = (p: Proc) => p.child.exitCode === null && p.child.signalCode === null;

function killAll(): void {
  for (const p of procs) {
    if (p.child.pid === undefined) continue;
    try {
      process.kill(-p.child.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}
process.once('exit', killAll);

/** `p`'s value, or null when it takes longer than `ms`. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<null>((r) => (timer = setTimeout(() => r(null), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

const tail = (p: Proc) => p.output.join('').slice(-3_000);

function probeArgv(hc: Healthcheck): string[] {
  const [kind, ...rest] = hc.test.map((a) => resolve(a));
  if (kind === 'CMD') return rest;
  if (kind === 'CMD-SHELL') return ['sh', '-c', rest.join(' ')];
  throw new Error(`health check ${kind} is not handled by this test`);
}

/** Runs the service's health check until it passes, as compose does before starting what depends on it. @returns ms taken. */
async function healthy(name: Name, server: Proc): Promise<number> {
  const hc = compose.services[name]!.healthcheck!;
  const started = Date.now();
  const deadline = started + durationMs(hc.start_period ?? '30s');
  const timeoutMs = durationMs(hc.timeout ?? '30s');
  let last = '';
  for (let attempt = 1; ; attempt++) {
    if (!alive(server)) throw new Error(`${name} exited (${server.child.exitCode ?? server.child.signalCode}) before it was healthy:\n${tail(server)}`);
    const probe = launch(`${name} healthcheck #${attempt}`, probeArgv(hc), serviceEnv(name));
    const timer = setTimeout(() => probe.child.kill('SIGKILL'), timeoutMs);
    const { code } = await probe.exited;
    clearTimeout(timer);
    procs.splice(procs.indexOf(probe), 1);
    if (code === 0) return Date.now() - started;
    last = tail(probe);
    if (Date.now() > deadline) throw new Error(`${name} not healthy within ${hc.start_period}; last probe exit ${code}: ${last}\n${name} output:\n${tail(server)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const pgSkip = await postgresUnavailable(PG_URL);

t.test('the compose file declares what this test relies on', async (t) => {
  const s = compose.services;
  t.same(s.payments?.profiles, ['razorpay'], 'payments is profile-only (it needs real Razorpay keys): not run here');
  t.same(s.quickdash?.depends_on?.payments, { condition: 'service_healthy', required: false }, 'the node does not wait for payments without the profile');
  t.notOk(s.redis, 'no Redis: nothing in QuickDash uses it');
  for (const name of RUN) {
    t.ok(s[name]?.command && s[name]?.healthcheck?.test, `${name} has a command and a health check`);
    t.equal(s[name]?.init, true, `${name} runs under an init that passes SIGTERM on`);
    for (const [dep, d] of Object.entries(s[name]?.depends_on ?? {})) t.equal(d.condition, 'service_healthy', `${name} waits for ${dep} to be healthy`);
  }
  t.same(fixedPorts(), [8080, 50051, 50061, 50063], 'the fixed ports found in the commands and health checks');
  t.same(s.quickdash?.ports, ['8080:8080', '50051:50051'], 'the node publishes its gateway and gRPC ports');
  t.equal(interpolate('a$$b ${QD_LOG_LEVEL:-x} ${QD_NOPE:-d} ${QD_NOPE:-}'), 'a$b info d ', 'interpolation as compose does it');
});

t.test("the node's sh -c command hands the node its arguments, with and without the razorpay profile", async (t) => {
  // A stand-in `node` first on PATH prints the arguments the shell gave it.
  const dir = mkdtempSync(join(tmpdir(), 'qd-compose-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'node'), '#!/bin/sh\nprintf "%s\\n" "$@"\n');
  chmodSync(join(dir, 'node'), 0o755);
  const argvOf = async (vars: Record<string, string>) => {
    const env = serviceEnv('quickdash', vars);
    const p = launch('quickdash (a node stand-in that prints its arguments)', compose.services.quickdash!.command!.map((a) => resolve(a, vars)), { ...env, PATH: `${dir}:${process.env.PATH}` });
    const exit = await within(p.exited, 10_000);
    t.same(exit, { code: 0, signal: null }, 'the command ran');
    return p.output.join('').split('\n').slice(0, -1);
  };
  const base = [
    ...['--import', 'tsx', 'bin/quickdash.ts', '--postgres', TEST_URL, '--host', '127.0.0.1', '--port', String(portMap.get(8080))],
    ...['--grpc-port', String(portMap.get(50051)), '--catalog-url', `127.0.0.1:${portMap.get(50061)}`, '--persistence-url', `127.0.0.1:${portMap.get(50063)}`],
  ];
  t.same(await argvOf(composeVars), base, 'no --payments-url without QD_PAYMENTS_URL: the embedded fake Razorpay');
  t.same(
    await argvOf({ ...composeVars, QD_PAYMENTS_URL: 'payments:50062' }),
    [...base, '--payments-url', 'payments:50062'],
    'QD_PAYMENTS_URL=payments:50062 adds --payments-url',
  );
});

t.test('compose topology on loopback: up, healthy, an order through the node, SIGTERM, a catalog restart', { skip: pgSkip ?? false }, async (t) => {
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${DB}`);
  const db = new pg.Client({ connectionString: TEST_URL });
  t.teardown(async () => {
    killAll();
    await Promise.all(procs.map((p) => within(p.exited, 5_000)));
    await db.end().catch(() => {});
    await admin.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
    await admin.end();
  });

  t.equal(serviceEnv('catalog').QD_JWT_SECRET, JWT_SECRET, "the test's secret reaches the services");

  // depends_on order: every running dependency healthy before a service starts (postgres is up already).
  const servers = new Map<Name, Proc>();
  const up = new Map<Name, Promise<void>>();
  const start = (name: Name): Promise<void> => {
    let p = up.get(name);
    if (!p) {
      p = (async () => {
        const deps = Object.keys(compose.services[name]!.depends_on ?? {}).filter((d): d is Name => (RUN as readonly string[]).includes(d));
        await Promise.all(deps.map(start));
        const command = compose.services[name]!.command!.map((a) => resolve(a));
        const server = launch(name, command, serviceEnv(name));
        servers.set(name, server);
        const ms = await healthy(name, server);
        t.pass(`${name} healthy after ${(ms / 1000).toFixed(1)} s`);
      })();
      up.set(name, p);
    }
    return p;
  };
  await Promise.all(RUN.map(start));

  await db.connect();
  // The demo stores close 02:00-06:00 Asia/Kolkata: open the test's store round the clock in the test's own
  // database so the run does not depend on the hour (before any order, so no cached store row is stale).
  const store = 'blr-koramangala';
  await db.query(`UPDATE ${DEFAULT_CATALOG_SCHEMA}.stores SET hours = $1 WHERE store_id = $2`, [JSON.stringify(everyDay(['00:00', '24:00'])), store]);

  const demo = demoCatalog();
  const location = demo.stores.find((s) => s.storeId === store)!.location;
  const [p1, p2] = demo.products.filter((p) => p.storeId === store);
  const lines = [
    { productId: p1!.productId, quantity: 2 },
    { productId: p2!.productId, quantity: 1 },
  ];
  const expected = [
    { productId: p1!.productId, quantity: 2, unitPricePaise: p1!.pricePaise },
    { productId: p2!.productId, quantity: 1, unitPricePaise: p2!.pricePaise },
  ].sort((a, b) => (a.productId < b.productId ? -1 : 1));
  const itemsTotal = expected.reduce((n, l) => n + l.quantity * l.unitPricePaise, 0);

  const auth = authConfigFromEnv({ QD_JWT_SECRET: JWT_SECRET, NODE_ENV: 'production' });
  const token = signToken({ sub: 'compose-test', role: 'service', ttlSec: 600 }, auth);
  const client = new DispatchServiceClient(`127.0.0.1:${portMap.get(50051)}`, credentials.createInsecure());
  t.teardown(() => client.close());
  const unary = <Res>(method: 'createOrder' | 'getOrder', req: unknown) =>
    new Promise<Res>((res, rej) =>
      (client[method] as unknown as (r: unknown, md: unknown, o: unknown, cb: (e: ServiceError | null, v: Res) => void) => void).call(
        client,
        req,
        withBearer(token),
        { deadline: Date.now() + 10_000 },
        (e, v) => (e ? rej(e) : res(v)),
      ),
    );

  const created = await unary<CreateOrderResponse>('createOrder', {
    idempotencyKey: 'compose-1',
    storeId: store,
    customerId: 'cust-compose',
    dropoff: { lat: location.lat + 0.009, lng: location.lng + 0.004 },
    lines,
    paymentMode: PaymentMode.PAYMENT_MODE_COD,
  });
  const order = created.order!;
  t.equal(created.replayed, false);
  // No rider is online: a confirmed COD order goes on to search for one.
  t.ok([OrderStatus.ORDER_STATUS_CONFIRMED, OrderStatus.ORDER_STATUS_SEARCHING].includes(order.status), `a COD order is confirmed (${OrderStatus[order.status]})`);
  t.same(order.lines, expected, 'lines priced by the catalog service from the seeded demo catalog');
  t.equal(order.itemsTotalPaise, itemsTotal);
  t.match(order.payment, { mode: PaymentMode.PAYMENT_MODE_COD, amountPaise: itemsTotal + order.deliveryFeePaise, currency: 'INR' });
  t.same(order.pickup, location, "picked up at the store's location");

  const got = await unary<GetOrderResponse>('getOrder', { orderId: order.orderId });
  t.equal(got.order?.orderId, order.orderId, 'GetOrder finds it');
  t.same(got.order?.lines, expected);
  t.equal(got.order?.storeId, store);

  // The catalog service's schema holds the reservation; the persistence service's holds the order's events.
  const res = await db.query(`SELECT store_id, status, total_paise FROM ${DEFAULT_CATALOG_SCHEMA}.reservations WHERE order_id = $1`, [order.orderId]);
  t.same(res.rows, [{ store_id: store, status: 'reserved', total_paise: String(itemsTotal) }], 'reserved in the catalog schema');
  const held = await db.query(
    `SELECT product_id AS "productId", quantity, unit_price_paise AS "unitPricePaise" FROM ${DEFAULT_CATALOG_SCHEMA}.reservation_lines WHERE order_id = $1 ORDER BY product_id COLLATE "C"`,
    [order.orderId],
  );
  t.same(held.rows, expected, 'with its lines');
  const events = await db.query(`SELECT seq, type FROM ${DEFAULT_SCHEMA}.events WHERE stream = $1 ORDER BY seq`, [`order:${order.orderId}`]);
  t.ok(events.rows.length >= order.seq && events.rows.length >= 1, `the order's ${events.rows.length} events in the persistence schema (${events.rows.map((r) => r.type).join(', ')})`);
  t.same(
    events.rows.map((r) => r.seq),
    events.rows.map((_, i) => i + 1),
    'in sequence from 1',
  );

  // No service fell back to the public development secret.
  for (const [name, p] of servers) t.notMatch(p.output.join(''), /development secret|development tokens/, `${name} uses QD_JWT_SECRET`);

  // docker compose stop: the node first (it still needs its adapters while it drains), then the adapters.
  const grace = (name: Name) => durationMs(compose.services[name]!.stop_grace_period ?? '10s');
  const stop = async (name: Name) => {
    const p = servers.get(name)!;
    const t0 = Date.now();
    p.child.kill('SIGTERM');
    const exit = await within(p.exited, grace(name));
    t.same(exit, { code: 0, signal: null }, `${name} exits 0 on SIGTERM in ${Date.now() - t0} ms (grace ${compose.services[name]!.stop_grace_period})`);
    if (!exit || exit.code !== 0) t.comment(tail(p));
  };
  await stop('quickdash');
  await Promise.all([stop('catalog'), stop('persistence')]);

  // restart: unless-stopped runs the catalog's command again: --seed-demo must leave a live catalog as it is
  // (the hours changed above, the units the order holds).
  const again = launch('catalog', compose.services.catalog!.command!.map((a) => resolve(a)), serviceEnv('catalog'));
  servers.set('catalog', again);
  await healthy('catalog', again);
  const hours = await db.query(`SELECT hours FROM ${DEFAULT_CATALOG_SCHEMA}.stores WHERE store_id = $1`, [store]);
  t.same(hours.rows[0]?.hours, everyDay(['00:00', '24:00']), 'a restarted catalog keeps the hours set since the seed');
  const stock = await db.query(`SELECT reserved FROM ${DEFAULT_CATALOG_SCHEMA}.stock WHERE store_id = $1 AND product_id = $2`, [store, p1!.productId]);
  t.equal(stock.rows[0]?.reserved, 2, 'and the units the order holds');
  t.match(again.output.join(''), /catalog not empty: demo catalog not loaded/, 'and says it did not seed');
  await stop('catalog');
});

/**
 * grpc-create: orders created per second over gRPC with durable
 * acknowledgement (CreateOrder answers only after the engine's group commit
 * to the event store), against a no-op unary CreateOrder measured in the same
 * run, plus the latency percentiles of both.
 *
 * Under test, in this process: the engine (shards on worker threads, as
 * many as the node starts by default on this machine: cores less one) on
 * Postgres (a schema of its own, dropped afterwards; embedded PGlite on disk
 * if Postgres cannot be reached), SqlCatalog and RazorpayPayments on the same
 * database, OrderIntake, and the real startGrpcServer. Orders are COD, so
 * payments are off the create path; prepaid orders through FakeRazorpay are a
 * secondary figure.
 *
 * Baseline: a second grpc-js server in this process with the same
 * DispatchService definition whose CreateOrder answers, at once, a fixed
 * CreateOrderResponse captured from a real create (same message sizes), with
 * no auth check. The same no-op plus the server's bearer verification is
 * measured too. Modes alternate over rounds so drift hits both alike.
 *
 * The load comes from forked client processes running one client code for
 * every mode, so the servers' event loop is not shared with the load.
 *
 * A fourth phase places the same orders through OrderIntake.placeOrder in
 * the servers' process, without gRPC, to show what the transport costs.
 *
 * Every phase also reports where the machine's CPU went per call (/proc):
 * the servers' main thread, the rest of this process (shard workers, GC),
 * the clients and Postgres. On a small machine all of them share the cores,
 * so the rate ratio is the machine-CPU ratio; `mainThreadCpuRatio` is what it
 * would tend to where the coordinator thread alone saturates.
 *
 *   npm run bench -- grpc-create [--duration 5] [--warmup 1] [--rounds 2] [--inflight 64] [--channels 4] [--clients 2]
 *                                [--shards N] [--stores 16] [--products 8] [--prepaid 3] [--postgres URL]
 *   node --cpu-prof --cpu-prof-dir tmp/prof --import tsx bench/grpc-create.ts   (profiles the servers' process only)
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import {
  Server,
  ServerCredentials,
  credentials,
  status,
  type Metadata,
  type ServerUnaryCall,
  type ServiceError,
  type UntypedServiceImplementation,
  type sendUnaryData,
} from '@grpc/grpc-js';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';
import pino from 'pino';
import { createEngine, OrderIntake, SystemClock, type DispatchEngine, type EventStore } from '../engine/index.ts';
import { PgClient, PgliteClient, createPostgresStore, createThreadedEmbeddedStore, type SqlClient } from '../adapters/sql/index.ts';
import { SqlCatalog, everyDay } from '../adapters/catalog/index.ts';
import { FakeRazorpay, RazorpayPayments } from '../adapters/razorpay/index.ts';
import { developmentAuthConfig, signToken, startGrpcServer, verifyToken } from '../gateway/index.ts';
import { can } from '../gateway/auth.ts';
import { DispatchServiceClient, DispatchServiceService, type CreateOrderRequest, type CreateOrderResponse } from '../protos/gen/quickdash/v1/dispatch.ts';
import { PaymentMode } from '../protos/gen/quickdash/v1/common.ts';
import { bearerToken, withBearer } from '../protos/rpc.ts';
import { percentile, writeResult } from './lib.ts';

const { values: args } = parseArgs({
  options: {
    role: { type: 'string', default: 'main' },
    duration: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '1' },
    rounds: { type: 'string', default: '2' },
    inflight: { type: 'string', default: '64' },
    channels: { type: 'string', default: '4' },
    clients: { type: 'string', default: '2' },
    shards: { type: 'string' },
    stores: { type: 'string', default: '16' },
    products: { type: 'string', default: '8' },
    prepaid: { type: 'string', default: '3' },
    'commerce-pool': { type: 'string', default: '10' },
    'tick-ms': { type: 'string', default: '250' },
    postgres: { type: 'string', default: process.env.QD_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test' },
  },
  allowPositionals: true,
});

type Mode = 'cod' | 'prepaid' | 'noop' | 'noop-auth' | 'intake';

interface StoreSpot {
  storeId: string;
  lat: number;
  lng: number;
}

interface LoadSpec {
  mode: Mode;
  port: number;
  token: string;
  warmMs: number;
  measureMs: number;
  inflight: number;
  channels: number;
  keyPrefix: string;
  stores: StoreSpot[];
  products: string[];
}

interface LoadResult {
  /** Calls answered OK inside the measured window. */
  measured: number;
  seconds: number;
  latencies: number[];
  errors: number;
  errorSample: string[];
  /** Idempotency keys of every create answered OK (warm-up and tail included), for the durability check. */
  ackedKeys: string[];
  replayed: number;
  /** Cores this client process used in the measured window: near 1 means the load, not the server, is the limit. */
  clientCores: number;
}

// ---------------------------------------------------------------- client processes

/** One channel (its own HTTP/2 connection: no shared subchannel pool) per client object, kept across phases. */
const channelCache = new Map<string, DispatchServiceClient[]>();
function channelsTo(port: number, n: number): DispatchServiceClient[] {
  const key = `${port}/${n}`;
  let list = channelCache.get(key);
  if (!list) {
    list = Array.from({ length: n }, () => new DispatchServiceClient(`127.0.0.1:${port}`, credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }));
    channelCache.set(key, list);
  }
  return list;
}

/** The same request shape for every mode, so the no-op carries the same bytes as a real create. */
function request(spec: LoadSpec, key: string): CreateOrderRequest {
  const s = spec.stores[Math.floor(Math.random() * spec.stores.length)];
  const a = Math.floor(Math.random() * spec.products.length);
  const lines = [{ productId: spec.products[a], quantity: 1 + Math.floor(Math.random() * 3) }];
  if (Math.random() < 0.5) lines.push({ productId: spec.products[(a + 1) % spec.products.length], quantity: 1 });
  return {
    idempotencyKey: key,
    storeId: s.storeId,
    customerId: `cust-${Math.floor(Math.random() * 10_000)}`,
    dropoff: { lat: s.lat + (Math.random() - 0.5) * 0.04, lng: s.lng + (Math.random() - 0.5) * 0.04 },
    lines,
    paymentMode: spec.mode === 'prepaid' ? PaymentMode.PAYMENT_MODE_PREPAID : PaymentMode.PAYMENT_MODE_COD,
  };
}

function call(client: DispatchServiceClient, req: CreateOrderRequest, md: Metadata): Promise<CreateOrderResponse> {
  return new Promise((resolve, reject) => {
    client.createOrder(req, md, { deadline: Date.now() + 10_000 }, (err: ServiceError | null, res?: CreateOrderResponse) => (err ? reject(err) : resolve(res!)));
  });
}

/** `inflight` lanes, each one call at a time, for warm-up then the measured window; waits for the tail. */
async function load(spec: LoadSpec): Promise<LoadResult> {
  const clients = channelsTo(spec.port, spec.channels);
  const md = withBearer(spec.token);
  const creates = spec.mode === 'cod' || spec.mode === 'prepaid';
  const out: LoadResult = { measured: 0, seconds: spec.measureMs / 1000, latencies: [], errors: 0, errorSample: [], ackedKeys: [], replayed: 0, clientCores: 0 };
  const from = performance.now() + spec.warmMs;
  const to = from + spec.measureMs;
  let cpu0 = process.cpuUsage();
  let wall0 = performance.now();
  const mark = setTimeout(() => {
    cpu0 = process.cpuUsage();
    wall0 = performance.now();
  }, spec.warmMs);
  let measuredCpu = false;
  const measureCpu = () => {
    if (measuredCpu || spec.measureMs === 0) return;
    measuredCpu = true;
    const c = process.cpuUsage(cpu0);
    out.clientCores = (c.user + c.system) / 1000 / (performance.now() - wall0);
  };
  const end = setTimeout(measureCpu, spec.warmMs + spec.measureMs);
  let n = 0;
  const lane = async (i: number) => {
    const client = clients[i % clients.length];
    while (performance.now() < to) {
      const key = `${spec.keyPrefix}-${process.pid}-${n++}`;
      const t0 = performance.now();
      try {
        const res = await call(client, request(spec, key), md);
        const t1 = performance.now();
        if (t1 >= from && t1 <= to) {
          out.measured++;
          out.latencies.push(Math.round((t1 - t0) * 1000) / 1000);
        }
        if (creates) {
          out.ackedKeys.push(key);
          if (res.replayed) out.replayed++;
        }
      } catch (err) {
        out.errors++;
        if (out.errorSample.length < 5) out.errorSample.push(`${(err as ServiceError).code}: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: spec.inflight }, (_, i) => lane(i)));
  clearTimeout(mark);
  clearTimeout(end);
  // The last calls can finish before the timer fires: then the window closes here, tail included.
  measureCpu();
  return out;
}

/** Request/reply over the fork IPC channel: {id, cmd, args} in, {id, ok, result | error} out. */
function serveChild(handlers: Record<string, (a: never) => unknown>): void {
  process.on('message', (m: { id: number; cmd: string; args: never }) => {
    Promise.resolve()
      .then(() => handlers[m.cmd](m.args))
      .then(
        (result) => process.send!({ id: m.id, ok: true, result }),
        (err: Error) => process.send!({ id: m.id, ok: false, error: err?.stack ?? String(err) }),
      );
  });
  process.send!({ ready: true });
}

class Child {
  readonly #proc: ChildProcess;
  readonly #waiters = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #next = 1;
  readonly ready: Promise<void>;

  constructor(role: string) {
    // A profile of this run is of the servers' process, not of the load.
    const execArgv: string[] = [];
    for (let i = 0; i < process.execArgv.length; i++) {
      const a = process.execArgv[i];
      if (!a.startsWith('--cpu-prof')) execArgv.push(a);
      else if (a !== '--cpu-prof' && !a.includes('=')) i++;
    }
    this.#proc = fork(fileURLToPath(import.meta.url), ['--role', role], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.ready = new Promise((resolve, reject) => {
      this.#proc.once('exit', (code) => {
        const err = new Error(`${role} process exited (${code})`);
        reject(err);
        for (const w of this.#waiters.values()) w.reject(err);
        this.#waiters.clear();
      });
      this.#proc.on('message', (m: { ready?: boolean; id: number; ok: boolean; result?: unknown; error?: string }) => {
        if (m.ready) return resolve();
        const w = this.#waiters.get(m.id);
        this.#waiters.delete(m.id);
        if (m.ok) w?.resolve(m.result);
        else w?.reject(new Error(m.error));
      });
    });
  }

  call<T>(cmd: string, args?: unknown): Promise<T> {
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#waiters.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#proc.send({ id, cmd, args });
    });
  }

  kill(): void {
    this.#proc.kill();
  }
}

if (args.role === 'client') {
  serveChild({ load: (spec: LoadSpec) => load(spec) });
} else if (args.role === 'razorpay') {
  // Razorpay is a remote service: its fake runs in a process of its own.
  const fake = await FakeRazorpay.start({ keyId: 'rzp_test_bench', keySecret: 'bench-secret', webhookSecret: 'bench-webhook' });
  serveChild({ url: () => fake.url });
} else {
  const cleanup: Array<() => Promise<unknown> | unknown> = [];
  try {
    await main(cleanup);
  } finally {
    // Newest first, and on failure too: no schema, child or server outlives the run.
    for (const fn of cleanup.reverse()) await Promise.resolve().then(fn).catch((err: unknown) => console.error('cleanup:', err));
  }
}

// ---------------------------------------------------------------- the servers' process

async function main(cleanup: Array<() => Promise<unknown> | unknown>): Promise<void> {
  const DURATION_MS = Number(args.duration) * 1000;
  const WARM_MS = Number(args.warmup) * 1000;
  const ROUNDS = Number(args.rounds);
  const INFLIGHT = Number(args.inflight);
  const CHANNELS = Number(args.channels);
  const CLIENTS = Number(args.clients);
  // As bin/quickdash.ts sizes a node: a core for the coordinator (gRPC, intake, commits), the rest for shards.
  const SHARDS = args.shards === undefined ? Math.max(1, availableParallelism() - 1) : Number(args.shards);
  const STORES = Number(args.stores);
  const PRODUCTS = Number(args.products);
  const PREPAID_MS = Number(args.prepaid) * 1000;
  const COMMERCE_POOL = Number(args['commerce-pool']);
  const TICK_MS = Number(args['tick-ms']);
  const PG_URL = args.postgres!;
  const log = pino({ level: 'silent' });
  const auth = developmentAuthConfig();
  const clock = new SystemClock();
  const started = performance.now();
  const loadAtStart = +loadavg()[0].toFixed(2);

  // Durable store: Postgres in a schema of its own, or PGlite on disk (the node's embedded default) if unreachable.
  const schema = `qdbench_grpc_${process.pid}_${Date.now().toString(36)}`;
  let backend: string;
  let store: EventStore;
  let sql: SqlClient;
  const probe = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 3_000 });
  const reachable = await probe.connect().then(
    () => true,
    (err: Error) => {
      console.error(`Postgres at ${PG_URL} unreachable (${err.message}); falling back to embedded PGlite`);
      return false;
    },
  );
  await probe.end().catch(() => {});
  if (reachable) {
    backend = 'postgres';
    store = await createPostgresStore({ connectionString: PG_URL, schema: `${schema}_events` });
    const pool = new pg.Pool({ connectionString: PG_URL, max: COMMERCE_POOL });
    pool.on('error', () => {});
    sql = new PgClient(pool);
    cleanup.push(async () => {
      for (const suffix of ['_events', '_catalog', '_payments']) await pool.query(`DROP SCHEMA IF EXISTS ${schema}${suffix} CASCADE`);
      await pool.end();
    });
  } else {
    backend = 'pglite-on-disk (fallback: Postgres unreachable; commits reach the OS page cache, not fsync)';
    const dir = mkdtempSync(join(tmpdir(), 'qd-grpc-create-'));
    store = await createThreadedEmbeddedStore({ dataDir: join(dir, 'events') });
    const db = await PGlite.create({ dataDir: join(dir, 'commerce') });
    sql = new PgliteClient(db);
    cleanup.push(async () => {
      await db.close();
      rmSync(dir, { recursive: true, force: true });
    });
  }

  const engine: DispatchEngine = await createEngine({ store, clock, config: { shards: SHARDS }, logger: log });
  cleanup.push(() => engine.close());
  const catalog = new SqlCatalog(sql, { schema: `${schema}_catalog`, logger: log });
  await catalog.init();
  // Orders spread over stores and products as real traffic does: one hot stock row would serialise every reservation.
  const stores: StoreSpot[] = [];
  const products = Array.from({ length: PRODUCTS }, (_, i) => `sku-${i}`);
  for (let i = 0; i < STORES; i++) {
    const angle = (2 * Math.PI * i) / STORES;
    const spot = { storeId: `store-${i}`, lat: 12.9716 + 0.08 * Math.cos(angle), lng: 77.5946 + 0.08 * Math.sin(angle) };
    stores.push(spot);
    await catalog.upsertStore({
      storeId: spot.storeId,
      name: `Store ${i}`,
      location: { lat: spot.lat, lng: spot.lng },
      timeZone: 'Asia/Kolkata',
      prepMinutes: 8,
      hours: everyDay(['00:00', '24:00']),
    });
    for (const [j, productId] of products.entries()) {
      await catalog.upsertProduct({ storeId: spot.storeId, productId, name: `Product ${j}`, pricePaise: 2_000 + 500 * j });
      await catalog.setStock(spot.storeId, productId, 10_000_000);
    }
  }

  const razorpay = new Child('razorpay');
  cleanup.push(() => razorpay.kill());
  await razorpay.ready;
  const payments = new RazorpayPayments({
    keyId: 'rzp_test_bench',
    keySecret: 'bench-secret',
    sql,
    schema: `${schema}_payments`,
    baseUrl: await razorpay.call<string>('url'),
    logger: log,
  });
  await payments.init();
  const intake = new OrderIntake({ engine, catalog, payments, clock, logger: log });
  intake.start();
  cleanup.push(() => intake.stop());
  const server = await startGrpcServer({ engine, intake, catalog, payments, auth, clock, logger: log });
  cleanup.push(() => server.close(1_000));
  // The node's tick, as bin/quickdash.ts runs it.
  let ticking = false;
  const ticker = setInterval(() => {
    if (ticking) return;
    ticking = true;
    void engine
      .tick()
      .catch(() => {})
      .finally(() => (ticking = false));
  }, TICK_MS);
  cleanup.push(() => clearInterval(ticker));

  const token = signToken({ sub: 'bench-orders-api', role: 'service', ttlSec: 3600 }, auth);

  // One real create gives the no-op its answer: the same response bytes a create sends.
  const probeSpec: LoadSpec = { mode: 'cod', port: server.port, token, warmMs: 0, measureMs: 0, inflight: 1, channels: 1, keyPrefix: 'prime', stores, products };
  const primeClient = new DispatchServiceClient(`127.0.0.1:${server.port}`, credentials.createInsecure());
  const fixed = await call(primeClient, request(probeSpec, 'prime-0'), withBearer(token));
  primeClient.close();
  const ackedKeys: string[] = ['prime-0'];

  const noop = await startNoop(fixed, null);
  cleanup.push(() => noop.close());
  const noopAuth = await startNoop(fixed, (md) => {
    const t = bearerToken(md);
    const v = t === null ? null : verifyToken(t, auth);
    return v !== null && v.ok && can(v.principal, 'service.call');
  });
  cleanup.push(() => noopAuth.close());

  const clients = Array.from({ length: CLIENTS }, () => new Child('client'));
  cleanup.push(() => clients.forEach((c) => c.kill()));
  await Promise.all(clients.map((c) => c.ready));

  interface Phase {
    rate: number;
    measured: number;
    seconds: number;
    latencies: number[];
    errors: number;
    errorSample: string[];
    replayed: number;
    /** Cores busy in this process (main thread and shard workers; Postgres is other processes) during the measured window. */
    serverCores: number;
    /** Event-loop utilisation of the main thread (gRPC, intake, engine coordinator) during the measured window. */
    serverMainElu: number;
    /** CPU of the whole machine (servers, shards, Postgres, load) per answered call, µs: steadier than rates on a noisy machine. */
    machineUsPerCall: number | null;
    /** Where that CPU went, µs per answered call (null parts: no /proc). */
    parts: CpuParts;
    clientCores: number[];
  }
  const totals = new Map<Mode, Phase[]>();
  const ports: Record<Mode, number> = { cod: server.port, prepaid: server.port, noop: noop.port, 'noop-auth': noopAuth.port, intake: 0 };

  /** The create without gRPC: `inflight` lanes calling OrderIntake.placeOrder in this process, as the gRPC handler does. */
  async function loadIntake(spec: LoadSpec): Promise<LoadResult> {
    const out: LoadResult = { measured: 0, seconds: spec.measureMs / 1000, latencies: [], errors: 0, errorSample: [], ackedKeys: [], replayed: 0, clientCores: 0 };
    const from = performance.now() + spec.warmMs;
    const to = from + spec.measureMs;
    let n = 0;
    const lane = async () => {
      while (performance.now() < to) {
        const key = `${spec.keyPrefix}-${n++}`;
        const r = request(spec, key);
        const t0 = performance.now();
        try {
          const placed = await intake.placeOrder({
            caller: 'bench-orders-api',
            idempotencyKey: key,
            storeId: r.storeId,
            customerId: r.customerId,
            dropoff: r.dropoff!,
            lines: r.lines,
            payment: 'cod',
          });
          const t1 = performance.now();
          if (t1 >= from && t1 <= to) {
            out.measured++;
            out.latencies.push(Math.round((t1 - t0) * 1000) / 1000);
          }
          out.ackedKeys.push(key);
          if (placed.replayed) out.replayed++;
        } catch (err) {
          out.errors++;
          if (out.errorSample.length < 5) out.errorSample.push(String(err));
        }
      }
    };
    await Promise.all(Array.from({ length: spec.inflight }, lane));
    return out;
  }

  let phaseNo = 0;
  /** Runs `mode` from every client process at once; a phase with no measured window only warms up (its creates still count as acks). */
  async function phase(mode: Mode, warmMs: number, measureMs: number): Promise<void> {
    phaseNo++;
    // The servers' CPU, and the machine's, over the measured window only.
    let cpu0 = process.cpuUsage();
    let elu0 = performance.eventLoopUtilization();
    let wall0 = performance.now();
    let busy0 = machineBusyMs();
    let main0 = threadCpuMs(process.pid);
    let pg0 = postgresCpuMs();
    const mark = setTimeout(() => {
      cpu0 = process.cpuUsage();
      elu0 = performance.eventLoopUtilization();
      wall0 = performance.now();
      busy0 = machineBusyMs();
      main0 = threadCpuMs(process.pid);
      pg0 = postgresCpuMs();
    }, warmMs);
    let busyMs: number | null = null;
    let mainMs: number | null = null;
    let pgMs: number | null = null;
    let serverMs = 0;
    let cores = 0;
    let elu = 0;
    let measured = false;
    const measure = () => {
      if (measured) return;
      measured = true;
      const b = machineBusyMs();
      busyMs = b === null || busy0 === null ? null : b - busy0;
      const m = threadCpuMs(process.pid);
      mainMs = m === null || main0 === null ? null : m - main0;
      const g = postgresCpuMs();
      pgMs = g === null || pg0 === null ? null : g - pg0;
      const c = process.cpuUsage(cpu0);
      serverMs = (c.user + c.system) / 1000;
      cores = (c.user + c.system) / 1000 / (performance.now() - wall0);
      elu = performance.eventLoopUtilization(elu0).utilization;
    };
    const end = setTimeout(measure, warmMs + measureMs);
    const parts = await Promise.all(
      mode === 'intake'
        ? [loadIntake({ mode, port: 0, token, warmMs, measureMs, inflight: INFLIGHT, channels: 0, keyPrefix: `${mode}-${phaseNo}`, stores, products })]
        : clients.map((c, i) =>
            c.call<LoadResult>('load', {
              mode,
              port: ports[mode],
              token,
              warmMs,
              measureMs,
              // Lanes and channels split evenly over the client processes.
              inflight: Math.floor(INFLIGHT / CLIENTS) + (i < INFLIGHT % CLIENTS ? 1 : 0),
              channels: Math.max(1, Math.floor(CHANNELS / CLIENTS) + (i < CHANNELS % CLIENTS ? 1 : 0)),
              keyPrefix: `${mode}-${phaseNo}-${i}`,
              stores,
              products,
            } satisfies LoadSpec),
          ),
    );
    clearTimeout(mark);
    clearTimeout(end);
    measure();
    const calls = parts.reduce((s, r) => s + r.measured, 0);
    const p: Phase = {
      rate: parts.reduce((s, r) => s + r.measured / r.seconds, 0),
      measured: calls,
      seconds: measureMs / 1000,
      latencies: parts.flatMap((r) => r.latencies),
      errors: parts.reduce((s, r) => s + r.errors, 0),
      errorSample: parts.flatMap((r) => r.errorSample).slice(0, 5),
      replayed: parts.reduce((s, r) => s + r.replayed, 0),
      serverCores: cores,
      serverMainElu: elu,
      machineUsPerCall: busyMs === null ? null : Math.round((busyMs * 1000) / Math.max(1, calls)),
      parts: cpuParts({ calls, busyMs, mainMs, serverMs, pgMs, clientMs: parts.reduce((s, r) => s + r.clientCores * measureMs, 0) }),
      clientCores: parts.map((r) => +r.clientCores.toFixed(2)),
    };
    for (const r of parts) for (const k of r.ackedKeys) ackedKeys.push(k);
    if (measureMs === 0) {
      if (p.errors) console.error(`  ${mode} warm-up: ${p.errors} errors, e.g. ${p.errorSample[0]}`);
      return;
    }
    totals.set(mode, [...(totals.get(mode) ?? []), p]);
    console.error(
      `  ${mode.padEnd(9)} ${Math.round(p.rate)}/s p50 ${percentile(p.latencies, 50).toFixed(2)} ms p99 ${percentile(p.latencies, 99).toFixed(2)} ms` +
        `${p.machineUsPerCall === null ? '' : ` machine ${p.machineUsPerCall} µs/call`} errors ${p.errors} server ${p.serverCores.toFixed(2)} cores, main ELU ${p.serverMainElu.toFixed(2)}, clients ${p.clientCores.join('+')} cores\n` +
        `            µs/call: main thread ${p.parts.serverMain ?? '?'}, shards+GC ${p.parts.serverOther ?? '?'}, clients ${p.parts.clients}, Postgres ${p.parts.postgres ?? '?'}, other ${p.parts.other ?? '?'}`,
    );
  }

  // Warm-up, unmeasured: JIT, connections and pools of every path before any window counts.
  for (const m of ['noop', 'noop-auth', 'cod', 'intake'] as const) await phase(m, WARM_MS, 0);
  const perRound = DURATION_MS / ROUNDS;
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate the order, so whatever drifts over the run (orders in memory, table size) weighs on both sides.
    const order: Mode[] = r % 2 === 0 ? ['noop', 'noop-auth', 'cod', 'intake'] : ['intake', 'cod', 'noop-auth', 'noop'];
    for (const m of order) await phase(m, 200, perRound);
  }
  if (PREPAID_MS > 0) await phase('prepaid', Math.min(WARM_MS, 500), PREPAID_MS);

  // Durable acknowledgement: every order a client was told exists is in the store, as recovery would load it.
  const live = await store.loadLive();
  const storedOrders = new Set(live.filter((s) => s.stream.startsWith('order:') && (s.snapshot !== null || s.events.length > 0)).map((s) => s.stream));
  const missing: string[] = [];
  for (const key of ackedKeys) {
    const stream = `order:${OrderIntake.orderIdFor('bench-orders-api', key)}`;
    // An order that already finished is no longer live: read its stream.
    if (!storedOrders.has(stream) && (await store.readStream(stream)).length === 0) missing.push(key);
  }

  const merged = (m: Mode) => {
    const ps = totals.get(m) ?? [];
    const measured = ps.reduce((s, p) => s + p.measured, 0);
    const seconds = ps.reduce((s, p) => s + p.seconds, 0);
    const lat = ps.flatMap((p) => p.latencies);
    return {
      rate: Math.round(measured / seconds),
      p50Ms: +percentile(lat, 50).toFixed(2),
      p99Ms: +percentile(lat, 99).toFixed(2),
      calls: measured,
      seconds,
      errors: ps.reduce((s, p) => s + p.errors, 0),
      errorSample: ps.flatMap((p) => p.errorSample).slice(0, 3),
      replayed: ps.reduce((s, p) => s + p.replayed, 0),
      rounds: ps.map((p) => Math.round(p.rate)),
      serverCores: ps.map((p) => +p.serverCores.toFixed(2)),
      serverMainElu: ps.map((p) => +p.serverMainElu.toFixed(2)),
      machineUsPerCall: ps.map((p) => p.machineUsPerCall),
      cpuParts: meanParts(ps.map((p) => p.parts)),
      clientCores: ps.map((p) => p.clientCores),
    };
  };
  const cod = merged('cod');
  const base = merged('noop');
  const baseAuth = merged('noop-auth');
  const inProcess = merged('intake');
  const prepaid = PREPAID_MS > 0 ? merged('prepaid') : null;
  const ratio = cod.rate / base.rate;
  writeResult({
    name: 'grpc-create',
    value: cod.rate,
    unit: 'creates/s',
    baseline: base.rate,
    baselineName:
      'no-op unary CreateOrder: second grpc-js server in this process, same DispatchService definition, same client code, ' +
      'same concurrency and duration, answers a fixed CreateOrderResponse captured from a real create; no auth check',
    ratio: +ratio.toFixed(3),
    target: '>= 0.7 of the no-op unary rate',
    pass: ratio >= 0.7 && missing.length === 0 && cod.errors === 0,
    createP50Ms: cod.p50Ms,
    createP99Ms: cod.p99Ms,
    noopP50Ms: base.p50Ms,
    noopP99Ms: base.p99Ms,
    create: cod,
    noop: base,
    noopAuth: { ...baseAuth, note: 'the same no-op plus the bearer check the real server does (verifyToken + can service.call)' },
    ratioVsNoopAuth: +(cod.rate / baseAuth.rate).toFixed(3),
    intake: {
      ...inProcess,
      note:
        'the same COD creates through OrderIntake.placeOrder called in the servers\' process, same concurrency, no gRPC: what the intake, engine, ' +
        'shard and adapters cost without the transport; the load\'s own cost (building requests) lands on the main thread',
    },
    machineCpuRatio: cpuRatio(base.machineUsPerCall, cod.machineUsPerCall),
    machineCpuRatioNote: 'machine CPU per no-op call over machine CPU per create, averaged over rounds: what the rate ratio tends to when both saturate the same cores; less noisy than rates',
    mainThreadCpuRatio: partRatio(base.cpuParts.serverMain, cod.cpuParts.serverMain),
    mainThreadCpuRatioNote:
      'main-thread CPU per no-op call over main-thread CPU per create: the ratio where the load, Postgres and the shards have cores of their own and the coordinator thread (gRPC, intake, engine) is what saturates',
    prepaid: prepaid && { ...prepaid, note: 'prepaid creates: RazorpayPayments over HTTP to FakeRazorpay in another process, ledger in the same database' },
    payments: 'COD orders (the headline): payments are not on the create path',
    store: backend,
    durability: {
      acked: ackedKeys.length,
      storedOrderStreams: storedOrders.size,
      ackedMissingFromStore: missing.length,
      check: 'after the last call, store.loadLive() (what recovery reads) holds an order stream for every acknowledged create',
    },
    settings: {
      inflight: INFLIGHT,
      channels: CHANNELS,
      clientProcesses: CLIENTS,
      warmupS: WARM_MS / 1000,
      durationS: DURATION_MS / 1000,
      rounds: ROUNDS,
      prepaidS: PREPAID_MS / 1000,
      shards: SHARDS,
      engineThreads: true,
      stores: STORES,
      productsPerStore: PRODUCTS,
      linesPerOrder: '1 or 2',
      commercePool: COMMERCE_POOL,
      eventStorePool: backend === 'postgres' ? 4 : null,
      tickMs: TICK_MS,
      riders: 0,
      tls: false,
      // Servers, shard threads, Postgres and the client processes share these cores; other work on the machine shows in the load.
      cpus: availableParallelism(),
      loadAvg1mAtStart: loadAtStart,
      postgres: backend === 'postgres' ? PG_URL.replace(/\/\/[^@/]*@/, '//…@') : null,
      schema,
      totalSeconds: +((performance.now() - started) / 1000).toFixed(1),
    },
  });
}

/** The baseline server: DispatchService's definition, CreateOrder answering `fixed` at once (after `check`, if given). */
async function startNoop(fixed: CreateOrderResponse, check: ((md: Metadata) => boolean) | null): Promise<{ port: number; close(): Promise<void> }> {
  const server = new Server();
  const impl = {
    createOrder: (c: ServerUnaryCall<CreateOrderRequest, CreateOrderResponse>, cb: sendUnaryData<CreateOrderResponse>) => {
      if (check && !check(c.metadata)) return cb({ code: status.UNAUTHENTICATED, details: 'bad token' }, null);
      cb(null, fixed);
    },
  };
  // The other methods answer UNIMPLEMENTED (grpc-js's default); only CreateOrder is called.
  server.addService(DispatchServiceService, impl as unknown as UntypedServiceImplementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { port, close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())) };
}

/** Busy CPU time of the whole machine so far (ms), from /proc/stat; null where there is none. */
function machineBusyMs(): number | null {
  try {
    const [, user, nice, system, , , irq, softirq] = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).map(Number);
    // Jiffies are 10 ms wherever USER_HZ is 100, which Linux fixes for /proc.
    return (user + nice + system + irq + softirq) * 10;
  } catch {
    return null;
  }
}

/** Where the machine's CPU went during a phase, µs per answered call. */
interface CpuParts {
  /** The servers' main thread: gRPC, intake, the engine's coordinator, the adapters' client side. */
  serverMain: number | null;
  /** The rest of this process: shard workers, V8's GC and compiler threads, libuv's pool. */
  serverOther: number | null;
  /** The load-generating client processes. */
  clients: number;
  /** Every postgres process on the machine (the bench's backends, WAL writer, checkpointer). */
  postgres: number | null;
  /** Whatever else ran (the kernel's own threads, other programs). */
  other: number | null;
}

function cpuParts(ms: { calls: number; busyMs: number | null; mainMs: number | null; serverMs: number; pgMs: number | null; clientMs: number }): CpuParts {
  const per = (x: number | null) => (x === null ? null : Math.round((x * 1000) / Math.max(1, ms.calls)));
  const known = ms.serverMs + ms.clientMs + (ms.pgMs ?? 0);
  return {
    serverMain: per(ms.mainMs),
    serverOther: ms.mainMs === null ? null : per(Math.max(0, ms.serverMs - ms.mainMs)),
    clients: per(ms.clientMs)!,
    postgres: per(ms.pgMs),
    other: ms.busyMs === null || ms.pgMs === null ? null : per(Math.max(0, ms.busyMs - known)),
  };
}

function meanParts(ps: CpuParts[]): CpuParts {
  const mean = (k: keyof CpuParts) => {
    const xs = ps.map((p) => p[k]);
    return xs.length > 0 && xs.every((x) => x !== null) ? Math.round((xs as number[]).reduce((a, b) => a + b, 0) / xs.length) : null;
  };
  return { serverMain: mean('serverMain'), serverOther: mean('serverOther'), clients: mean('clients') ?? 0, postgres: mean('postgres'), other: mean('other') };
}

function partRatio(noop: number | null, create: number | null): number | null {
  return noop === null || create === null || create === 0 ? null : +(noop / create).toFixed(3);
}

/** CPU time of one thread of this process so far (ms), from /proc; null where there is none. */
function threadCpuMs(tid: number): number | null {
  try {
    return ticksOf(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8'));
  } catch {
    return null;
  }
}

/** CPU time of every process named postgres so far (ms); null without /proc. Backends that exit in between are missed, so a phase keeps its pool. */
function postgresCpuMs(): number | null {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return null;
  }
  let ms = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) === 'postgres') ms += ticksOf(stat);
    } catch {
      // Gone between the listing and the read.
    }
  }
  return ms;
}

/** utime + stime of a /proc stat line, in ms (USER_HZ is 100 for /proc). */
function ticksOf(stat: string): number {
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

/** Mean µs per no-op call over mean µs per create; null without /proc. */
function cpuRatio(noop: Array<number | null>, create: Array<number | null>): number | null {
  const mean = (xs: Array<number | null>) => (xs.length > 0 && xs.every((x) => x !== null) ? (xs as number[]).reduce((a, b) => a + b, 0) / xs.length : null);
  const n = mean(noop);
  const c = mean(create);
  return n === null || c === null || c === 0 ? null : +(n / c).toFixed(3);
}

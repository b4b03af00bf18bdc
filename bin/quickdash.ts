/**
 * `npm start`: one QuickDash node on its embedded defaults (PGlite event
 * store on local disk, shards on worker threads, live clock). With --sim it
 * also drives a simulated city and prints a live one-line summary.
 *
 * The rider/customer WebSocket gateway listens on --port (default 8080) at /v1/ws,
 * with /ops, /v1/webhooks/razorpay, /healthz, /readyz and /metrics beside it;
 * DispatchService (gRPC, service tokens) on --grpc-port (default 50051; TLS
 * with QD_GRPC_TLS_CERT and QD_GRPC_TLS_KEY).
 *
 *   npm start -- [--sim] [--port N] [--host H] [--grpc-port N] [--riders N] [--orders-per-minute N] [--shards N]
 *                [--data-dir DIR | --memory | --postgres URL] [--duration SECONDS]
 *                [--catalog-url H:P] [--payments-url H:P] [--persistence-url H:P]   (adapters as services)
 *                [--speed N]   (the simulated city runs N times faster than real time)
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { createEngine, ScaledClock, SystemClock, type Clock, type EventStore } from '../engine/index.ts';
import { createPostgresStore, createThreadedEmbeddedStore } from '../adapters/sql/index.ts';
import { runCitySim } from '../bench/sim/city.ts';
import { openCommerce } from './commerce.ts';
import { authConfigFromEnv, developmentAuthConfig, signToken, startGateway, startGrpcServer } from '../gateway/index.ts';
import { GrpcCatalog, GrpcEventStore, GrpcPayments } from '../adapters/grpc/index.ts';

const { values: args } = parseArgs({
  options: {
    sim: { type: 'boolean', default: false },
    riders: { type: 'string', default: '200' },
    'orders-per-minute': { type: 'string', default: '60' },
    shards: { type: 'string' },
    'data-dir': { type: 'string', default: 'data/quickdash' },
    memory: { type: 'boolean', default: false },
    postgres: { type: 'string' },
    duration: { type: 'string' },
    'tick-ms': { type: 'string', default: '250' },
    speed: { type: 'string', default: '1' },
    port: { type: 'string', default: '8080' },
    host: { type: 'string', default: '127.0.0.1' },
    'grpc-port': { type: 'string', default: '50051' },
    'catalog-url': { type: 'string' },
    'payments-url': { type: 'string' },
    'persistence-url': { type: 'string' },
  },
});

const log = pino({ level: process.env.QD_LOG_LEVEL ?? 'info' });

function positiveInt(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`--${name} must be a positive integer, got ${raw}`);
    process.exit(2);
  }
  return n;
}

const shards = positiveInt('shards', args.shards, Math.max(1, availableParallelism() - 1));
const tickMs = positiveInt('tick-ms', args['tick-ms'], 250);

// Without a configured key the gateway accepts development tokens only (npm run token), and says so.
const auth = process.env.QD_JWT_SECRET || process.env.QD_JWT_PUBLIC_KEY ? authConfigFromEnv() : developmentAuthConfig();
if (!process.env.QD_JWT_SECRET && !process.env.QD_JWT_PUBLIC_KEY) log.warn('QD_JWT_SECRET is not set: the gateway accepts development tokens (npm run token)');

// Calls to adapter services carry a service token: QD_SERVICE_TOKEN, or a short-lived one this node signs.
let signed = { token: '', until: 0 };
const serviceToken = (): string => {
  if (process.env.QD_SERVICE_TOKEN) return process.env.QD_SERVICE_TOKEN;
  if (Date.now() > signed.until) signed = { token: signToken({ sub: 'quickdash-node', role: 'service', ttlSec: 600 }, auth), until: Date.now() + 300_000 };
  return signed.token;
};

let store: EventStore;
if (args['persistence-url']) store = new GrpcEventStore({ address: args['persistence-url'], token: serviceToken });
else if (args.postgres) store = await createPostgresStore({ connectionString: args.postgres });
// The embedded store writes on its own thread, so group commits never stall the coordinator.
else if (args.memory) store = await createThreadedEmbeddedStore({});
else store = await createThreadedEmbeddedStore({ dataDir: args['data-dir'] });

const speed = Number(args.speed);
if (!(Number.isFinite(speed) && speed > 0 && speed <= 1000)) {
  console.error(`--speed must be a number in (0, 1000], got ${args.speed}`);
  process.exit(2);
}
if (speed !== 1 && !args.sim) {
  console.error('--speed only makes sense with --sim: a live node runs on wall-clock time');
  process.exit(2);
}
const clock: Clock = speed === 1 ? new SystemClock() : new ScaledClock(speed);
const engine = await createEngine({ store, clock, config: { shards }, logger: log });
const storeLabel = args['persistence-url']
  ? `persistence-service:${args['persistence-url']}`
  : args.postgres
    ? 'postgres'
    : args.memory
      ? 'pglite-memory'
      : `pglite:${args['data-dir']}`;
log.info({ shards, store: storeLabel }, 'QuickDash node started');

const port = Number(args.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`--port must be 0..65535, got ${args.port}`);
  process.exit(2);
}
// Catalog, payments and order intake: embedded (PGlite, demo catalog, local fake Razorpay) or on --postgres.
const commerce = await openCommerce({
  engine,
  clock,
  logger: log,
  postgres: args.postgres,
  dataDir: args.postgres || args.memory ? undefined : `${args['data-dir']}-commerce`,
  remote: {
    ...(args['catalog-url'] ? { catalog: new GrpcCatalog({ address: args['catalog-url'], token: serviceToken }) } : {}),
    ...(args['payments-url'] ? { payments: new GrpcPayments({ address: args['payments-url'], token: serviceToken }) } : {}),
  },
});

const gateway = await startGateway({
  engine,
  auth,
  host: args.host,
  port,
  logger: log,
  posts: [{ path: '/v1/webhooks/razorpay', maxBodyBytes: 1 << 20, handle: (body, headers) => commerce.webhooks.handle(body, headers) }],
});
commerce.setWebhookUrl(`http://127.0.0.1:${gateway.port}/v1/webhooks/razorpay`);

// DispatchService for backend services (service-role tokens), on the gateway's host.
const grpcPort = Number(args['grpc-port']);
if (!Number.isInteger(grpcPort) || grpcPort < 0 || grpcPort > 65535) {
  console.error(`--grpc-port must be 0..65535, got ${args['grpc-port']}`);
  process.exit(2);
}
const grpc = await startGrpcServer({
  engine,
  intake: commerce.intake,
  catalog: commerce.catalog,
  payments: commerce.payments,
  auth,
  host: args.host,
  port: grpcPort,
  clock,
  logger: log,
  ...(process.env.QD_GRPC_TLS_CERT && process.env.QD_GRPC_TLS_KEY
    ? { tls: { certPem: readFileSync(process.env.QD_GRPC_TLS_CERT, 'utf8'), keyPem: readFileSync(process.env.QD_GRPC_TLS_KEY, 'utf8') } }
    : {}),
});

let ticking = false;
const ticker = setInterval(() => {
  if (ticking) return;
  ticking = true;
  engine
    .tick()
    .catch((err) => log.error({ err }, 'tick failed'))
    .finally(() => (ticking = false));
}, tickMs);

const sim = args.sim
  ? runCitySim(engine, clock, {
      riders: positiveInt('riders', args.riders, 200),
      ordersPerMinute: positiveInt('orders-per-minute', args['orders-per-minute'], 60),
      centre: { lat: 12.9716, lng: 77.5946 },
      radiusM: 6_000,
      speedMps: 7,
      stepMs: 1_000,
      realtime: true,
    })
  : null;

const summary = sim
  ? setInterval(() => {
      const s = sim.summary();
      process.stdout.write(`\r${formatSummary(s)}   `);
    }, 1_000)
  : null;

function formatSummary(s: Record<string, unknown>): string {
  return Object.entries(s)
    .map(([k, v]) => `${k}=${typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(1) : String(v)}`)
    .join(' ');
}

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'shutting down');
  await gateway.drain();
  await grpc.close(1_000);
  clearInterval(ticker);
  await commerce.close();
  if (summary) clearInterval(summary);
  if (sim) {
    await sim.stop();
    process.stdout.write(`\n${formatSummary(sim.summary())}\n`);
  }
  await engine.close();
  log.info('stopped');
  process.exit(0);
}

process.on('SIGINT', () => void shutdown('SIGINT'));
process.on('SIGTERM', () => void shutdown('SIGTERM'));
if (args.duration !== undefined) {
  setTimeout(() => void shutdown('duration'), positiveInt('duration', args.duration, 1) * 1000);
}

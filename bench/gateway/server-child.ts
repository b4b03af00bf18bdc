/**
 * A server under test, in its own process so its CPU, memory and file
 * descriptors are its own: the QuickDash gateway on a real engine (worker
 * shards, live clock, ticking like `npm start`), or one of the baselines.
 * Driven over IPC by bench/gateway/servers.ts.
 */
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import pino from 'pino';
import { createEngine, MemoryEventStore, SystemClock, type DispatchEngine, type EngineCounters, type EventStore, type OrderSpec } from '../../engine/index.ts';
import { createThreadedEmbeddedStore } from '../../adapters/sql/index.ts';
import { developmentAuthConfig, startGateway, type Gateway, type GatewayTuning } from '../../gateway/index.ts';
import { serveRpc } from '../loadgen/rpc.ts';
import { startBareUws, startWsRedis, type BaselineServer } from './baselines.ts';

export type ServerKind = 'quickdash' | 'uws' | 'ws-redis';

export interface ServerOptions {
  kind: ServerKind;
  /** quickdash: shard worker threads. */
  shards?: number;
  /** quickdash: 'memory' (MemoryEventStore) or 'pglite' (the embedded store on its own thread, in memory). */
  store?: 'memory' | 'pglite';
  tuning?: Partial<GatewayTuning>;
  redisUrl?: string;
}

export interface ServerStats {
  memory: NodeJS.MemoryUsage;
  /** User + system CPU of the whole process (worker threads included) since it started, µs. */
  cpuUs: number;
  /** Fixes the server accepted since start (engine counter for quickdash). */
  fixes: number;
  counters?: EngineCounters;
  /** quickdash: selected gateway metrics, summed over labels (`name{label}` kept apart). */
  metrics?: Record<string, number>;
  /** How late the main thread's event loop ran since the previous stats call (10 ms resolution): a stalled loop delays every ack. */
  loopDelayMs: { p50: number; p99: number; max: number };
  /** Main-thread garbage collections since the previous stats call: a long one stalls every socket at once. */
  gcPauses: { count: number; totalMs: number; maxMs: number };
}

// Only warnings and worse, on stderr: the parent's stdout carries the bench's JSON.
const log = pino({ level: process.env.QD_LOG_LEVEL ?? 'warn' }, pino.destination(2));

let engine: DispatchEngine | null = null;
let gateway: Gateway | null = null;
let baseline: BaselineServer | null = null;
let ticker: NodeJS.Timeout | null = null;
const delay = monitorEventLoopDelay({ resolution: 10 });
delay.enable();
let gc = { count: 0, totalMs: 0, maxMs: 0 };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gc.count++;
    gc.totalMs += e.duration;
    gc.maxMs = Math.max(gc.maxMs, e.duration);
  }
}).observe({ entryTypes: ['gc'] });

async function start(o: ServerOptions): Promise<number> {
  if (o.kind === 'uws') return (baseline = await startBareUws()).port;
  if (o.kind === 'ws-redis') return (baseline = await startWsRedis(o.redisUrl ? { redisUrl: o.redisUrl } : {})).port;
  const store: EventStore = o.store === 'pglite' ? await createThreadedEmbeddedStore({}) : new MemoryEventStore();
  engine = await createEngine({ store, clock: new SystemClock(), config: { shards: o.shards ?? 1 }, threads: true, logger: log });
  gateway = await startGateway({ engine, auth: developmentAuthConfig(), logger: log, ...(o.tuning ? { tuning: o.tuning } : {}) });
  // As npm start does: matcher windows and timers run on the engine's tick.
  let ticking = false;
  ticker = setInterval(() => {
    if (ticking || !engine) return;
    ticking = true;
    engine
      .tick()
      .catch((err) => log.error({ err }, 'tick failed'))
      .finally(() => (ticking = false));
  }, 250);
  return gateway.port;
}

const METRICS = ['quickdash_ws_positions_total', 'quickdash_ws_slow_consumers_total', 'quickdash_ws_refused_total', 'quickdash_ws_connections'];

function gatewayMetrics(g: Gateway): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of g.metrics.render().split('\n')) {
    if (line.startsWith('#')) continue;
    const name = METRICS.find((m) => line.startsWith(m));
    if (!name) continue;
    const key = line.slice(0, line.lastIndexOf(' '));
    out[key] = (out[key] ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return out;
}

async function stats(): Promise<ServerStats> {
  const cpu = process.cpuUsage();
  const ms = (ns: number) => +(ns / 1e6).toFixed(1);
  const loopDelayMs = { p50: ms(delay.percentile(50)), p99: ms(delay.percentile(99)), max: ms(delay.max) };
  delay.reset();
  const gcPauses = { count: gc.count, totalMs: +gc.totalMs.toFixed(1), maxMs: +gc.maxMs.toFixed(1) };
  gc = { count: 0, totalMs: 0, maxMs: 0 };
  const out: ServerStats = { memory: process.memoryUsage(), cpuUs: cpu.user + cpu.system, fixes: baseline?.fixes() ?? 0, loopDelayMs, gcPauses };
  if (engine) {
    out.counters = await engine.counters();
    out.fixes = out.counters.fixesAccepted;
  }
  if (gateway) out.metrics = gatewayMetrics(gateway);
  return out;
}

serveRpc({
  start: (o: ServerOptions) => start(o),
  stats,
  /** Memory after full collections (needs --expose-gc): what the live objects hold. */
  gc: async () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    if (!gc) throw new Error('start the server with --expose-gc');
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
    return stats();
  },
  /** Creates cash-on-delivery orders (they search at once); returns how many were created. */
  createOrders: async (orders: Array<Pick<OrderSpec, 'orderId' | 'customerId' | 'pickup' | 'dropoff'>>) => {
    if (!engine) throw new Error('orders need the quickdash server');
    let created = 0;
    for (let i = 0; i < orders.length; i += 500) {
      const chunk = orders.slice(i, i + 500);
      await Promise.all(chunk.map((o) => engine!.createOrder({ ...o, storeId: `store-${o.orderId}`, payment: 'cod' })));
      created += chunk.length;
    }
    return created;
  },
  stop: async () => {
    if (ticker) clearInterval(ticker);
    // The listen socket must be closed before exit (Node aborts at exit while uWS holds one).
    if (gateway) await gateway.drain(0);
    if (engine) await engine.close();
    if (baseline) await baseline.close();
    return true;
  },
});

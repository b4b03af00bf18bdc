/**
 * The gateway at scale on one machine: N riders online, each carrying an
 * order followed by its customer (N more sockets), riders sending fixes at an
 * aggregate 10,000 per second. Reports the gateway process's memory (and per
 * connection), accepted fixes per second, and how old each position is when
 * its customer gets it (p50/p95/p99; target p99 under 100 ms at 20,000 +
 * 20,000).
 *
 * One gateway process holds every socket, so the size is bounded by its file
 * descriptor limit: asked for more than fits, the run shrinks to what fits
 * and says so (in the JSON and on stderr).
 *
 * Positions are pushed at most once per positionIntervalMs per order. At
 * 20,000 riders and 10,000 fixes/s a rider sends every 2 s, so every fix is
 * pushed at once; with fewer riders at the same aggregate rate a rider sends
 * more often than once an interval and the throttle, not the pipeline, would
 * set the latency. Unless given, the interval is therefore lowered to 3/4 of
 * a rider's fix period when that is under 1.25 s (recorded in the result).
 *
 *   npm run bench -- gateway-scale [--riders 20000] [--customers 20000] [--fix-rate 10000] [--duration 30]
 *                                  [--warmup 5] [--shards N] [--store memory|pglite] [--position-interval-ms MS]
 */
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { Limits } from '../../gateway/index.ts';
import { writeResult } from '../lib.ts';
import { LoadGenerator, ordersNearRiders } from '../loadgen/loadgen.ts';
import { openFileLimit, startServer } from './servers.ts';

const { values } = parseArgs({
  options: {
    riders: { type: 'string', default: '20000' },
    customers: { type: 'string', default: '20000' },
    'fix-rate': { type: 'string', default: '10000' },
    duration: { type: 'string', default: '30' },
    warmup: { type: 'string', default: '5' },
    shards: { type: 'string' },
    store: { type: 'string', default: 'memory' },
    'position-interval-ms': { type: 'string' },
  },
  allowPositionals: true,
});

const log = (line: string) => console.error(`[gateway-scale] ${line}`);
const FIX_RATE = Number(values['fix-rate']);
const DURATION_S = Number(values.duration);
const WARMUP_S = Number(values.warmup);
const SHARDS = values.shards ? Number(values.shards) : Math.max(1, availableParallelism() - 1);
const STORE = values.store === 'pglite' ? 'pglite' : 'memory';
const TARGET_MS = 100;

// Descriptors the gateway process needs besides client sockets: stdio, IPC, epoll, worker threads, the event loop's own.
const RESERVED_FDS = 1_000;
const requested = { riders: Number(values.riders), customers: Number(values.customers) };
const fdLimit = openFileLimit();
let riders = requested.riders;
let customers = Math.min(requested.customers, riders);
let reduced: string | null = null;
if (riders + customers > fdLimit - RESERVED_FDS) {
  const scale = (fdLimit - RESERVED_FDS) / (riders + customers);
  riders = Math.floor(requested.riders * scale);
  customers = Math.min(Math.floor(requested.customers * scale), riders);
  reduced =
    `reduced from ${requested.riders} riders + ${requested.customers} customers to ${riders} + ${customers}: ` +
    `one gateway process holds every socket and RLIMIT_NOFILE is ${fdLimit} (${RESERVED_FDS} kept for the process itself)`;
  log(reduced);
}

const periodMs = (riders / FIX_RATE) * 1000;
const intervalMs = values['position-interval-ms']
  ? Number(values['position-interval-ms'])
  : periodMs >= 1.25 * Limits.positionIntervalMs
    ? Limits.positionIntervalMs
    : Math.max(50, Math.round(0.75 * periodMs));
if (intervalMs !== Limits.positionIntervalMs) {
  log(`positionIntervalMs ${intervalMs} (default ${Limits.positionIntervalMs}): a rider sends every ${Math.round(periodMs)} ms, so each fix is pushed at once as at 20,000 riders`);
}

const server = await startServer({ kind: 'quickdash', shards: SHARDS, store: STORE, tuning: { positionIntervalMs: intervalMs } });
const orders = ordersNearRiders(customers);
const mb = (b: number) => +(b / 2 ** 20).toFixed(1);
const phases: Record<string, { rssMB: number; heapUsedMB: number; externalMB: number }> = {};
const note = async (phase: string) => {
  const s = await server.gcStats();
  phases[phase] = { rssMB: mb(s.memory.rss), heapUsedMB: mb(s.memory.heapUsed), externalMB: mb(s.memory.external) };
  log(`${phase}: rss ${phases[phase].rssMB} MB, heap ${phases[phase].heapUsedMB} MB`);
  return s;
};

let result;
let a;
let b;
let windowS = 0;
let memConnected;
let memEmpty;
let memReady;
let memEnd;
let lg: LoadGenerator | null = null;
try {
  lg = await LoadGenerator.start({
    url: `ws://127.0.0.1:${server.port}`,
    riders,
    follows: orders,
    fixRate: FIX_RATE,
    batch: 1,
    warmupS: WARMUP_S,
    durationS: DURATION_S,
    log,
  });
  await note('started');
  await server.createOrders(orders);
  memEmpty = await note('orders created');
  await lg.connect();
  memConnected = await note('connected');
  await lg.prepare();
  memReady = await note('riders online, customers following');
  const running = lg.run();
  await new Promise((r) => setTimeout(r, WARMUP_S * 1000));
  a = await server.stats();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, DURATION_S * 1000));
  b = await server.stats();
  windowS = (performance.now() - t0) / 1000;
  result = await running;
  memEnd = await note('after the run');
} finally {
  await lg?.close();
  await server.stop();
}

const connections = result.connect.riders + result.connect.customers;
const storedAcks = Math.min(result.totals.acks, Limits.replayWindow * result.connect.riders);
const heapPerAck = storedAcks > 0 ? (memEnd.memory.heapUsed - memReady.memory.heapUsed) / storedAcks : 0;
const p99 = result.latencyMs?.p99 ?? NaN;
// The generator reads acks and positions: when its own loop stalls this long, the machine (not only the gateway) was starved.
const generatorStallMs = Math.max(...result.generator.perProcess.map((p) => p.loopDelayMs.max));
if (generatorStallMs > 250) log(`the generator's event loop stalled up to ${generatorStallMs} ms: latency includes contention for the machine`);
const positionsBy = (how: string) =>
  Math.round(((b.metrics?.[`quickdash_ws_positions_total{how="${how}"}`] ?? 0) - (a.metrics?.[`quickdash_ws_positions_total{how="${how}"}`] ?? 0)) / windowS);

writeResult({
  name: 'gateway-scale',
  value: p99,
  unit: 'ms',
  target: `p99 fix -> customer < ${TARGET_MS} ms at 10,000 fixes/s with 20,000 riders + 20,000 customers`,
  // An order with no free rider within the engine's search radius stays unassigned: a handful may miss out.
  pass: p99 < TARGET_MS && reduced === null && result.prepare.ready >= 0.99 * customers,
  reduced,
  requested,
  riders,
  customers,
  connections,
  fdLimit,
  fixRate: FIX_RATE,
  fixPeriodPerRiderMs: Math.round(periodMs),
  positionIntervalMs: intervalMs,
  shards: SHARDS,
  store: STORE,
  cpus: availableParallelism(),
  latencyMs: result.latencyMs,
  ackLatencyMs: result.ackLatencyMs,
  acceptedFixesPerSec: result.acceptedFixesPerSec,
  sentFixesPerSec: result.sentFixesPerSec,
  engineFixesPerSec: Math.round((b.fixes - a.fixes) / windowS),
  positionsPerSec: result.positionsPerSec,
  positionsSentPerSec: { push: positionsBy('push'), trailing: positionsBy('trailing'), poll: positionsBy('poll') },
  memory: {
    phases,
    rssMB: mb(memEnd.memory.rss),
    heapUsedMB: mb(memEnd.memory.heapUsed),
    // Connected but idle: what the sockets and sessions cost, before riders and follows add engine and gateway state.
    perConnectionBytes: Math.round((memConnected.memory.rss - memEmpty.memory.rss) / connections),
    perConnectionHeapBytes: Math.round((memConnected.memory.heapUsed - memEmpty.memory.heapUsed) / connections),
    // Everything a live rider + following customer pair adds, engine state included.
    perPairBytesLive: Math.round((memReady.memory.rss - memEmpty.memory.rss) / Math.max(1, Math.min(riders, customers))),
    // The gateway remembers each session's last replayWindow outcomes (docs/protocol.md), so the heap grows with every
    // ack until a rider has sent that many commands; a run this short stops before that.
    heapGrowthDuringRunMB: mb(memEnd.memory.heapUsed - memReady.memory.heapUsed),
    heapPerAckBytes: Math.round(heapPerAck),
    projectedHeapAtFullReplayWindowMB: mb(memReady.memory.heapUsed + heapPerAck * Limits.replayWindow * result.connect.riders),
  },
  serverCpuCores: +((b.cpuUs - a.cpuUs) / 1e6 / windowS).toFixed(3),
  serverLoopDelayMs: b.loopDelayMs,
  serverGcPauses: b.gcPauses,
  generator: result.generator,
  generatorStallMs,
  prepare: result.prepare,
  connect: result.connect,
  errors: result.window.errors,
  deferredFrames: result.window.deferred,
  closes: result.closes,
});

/**
 * GPS fixes per second accepted end to end by the gateway (decoded, validated,
 * in a shard's index, acked), driven closed-loop by the load generator: every
 * rider keeps `inflight` frames unanswered. In the same run, with the same
 * generator, rider count and batch size, two baselines (baselines.ts): a bare
 * uWS server that only decodes msgpack (target: the gateway reaches 0.6 of
 * it) and a typical Node stack, ws + JSON + one Redis GEOADD per fix (target:
 * 3 times it). Each server runs in its own process; the generator in others.
 * Per-connection rate limits are raised so the limit measured is the server's.
 * Frames carry 10 fixes by default (`fixes`); with --batch 1 (`fix`) per-frame
 * costs dominate and every server's figure falls.
 *
 *   npm run bench -- gateway-fixes [--riders 1000] [--batch 10] [--inflight 2] [--warmup 2] [--duration 8]
 *                                  [--rounds 3] [--shards N] [--store memory|pglite] [--redis URL]
 *
 * Writes gateway-fixes.json (both comparisons), gateway-fixes-vs-uws.json and gateway-fixes-vs-ws-redis.json.
 */
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { writeResult } from '../lib.ts';
import { LoadGenerator, type LoadResult } from '../loadgen/loadgen.ts';
import type { ServerKind } from './server-child.ts';
import { startServer } from './servers.ts';

const { values } = parseArgs({
  options: {
    riders: { type: 'string', default: '1000' },
    batch: { type: 'string', default: '10' },
    inflight: { type: 'string', default: '2' },
    warmup: { type: 'string', default: '2' },
    duration: { type: 'string', default: '8' },
    // The machine is shared and noisy: the three servers take turns, and each figure is the median of its rounds.
    rounds: { type: 'string', default: '3' },
    shards: { type: 'string' },
    store: { type: 'string', default: 'memory' },
    redis: { type: 'string', default: 'redis://127.0.0.1:6379' },
  },
  allowPositionals: true,
});

const RIDERS = Number(values.riders);
const BATCH = Number(values.batch);
const INFLIGHT = Number(values.inflight);
const WARMUP_S = Number(values.warmup);
const DURATION_S = Number(values.duration);
const ROUNDS = Number(values.rounds);
// As npm start: one core is left to the gateway's own thread.
const SHARDS = values.shards ? Number(values.shards) : Math.max(1, availableParallelism() - 1);
const STORE = values.store === 'pglite' ? 'pglite' : 'memory';
const log = (line: string) => console.error(`[gateway-fixes] ${line}`);

interface Measured {
  kind: ServerKind;
  acceptedFixesPerSec: number;
  framesPerSec: number;
  /** What the server itself counted over its window (engine counter for quickdash). */
  serverFixesPerSec: number;
  serverCpuCores: number;
  serverLoopDelayMs: { p50: number; p99: number; max: number };
  serverGcPauses: { count: number; totalMs: number; maxMs: number };
  generatorCpuCores: number;
  /** Event-loop utilisation of each generator process: near 1, the generator was the limit. */
  generatorElu: number[];
  serverRssMB: number;
  /** Fix frame to ack at the rider, ms. */
  ackLatencyMs: LoadResult['ackLatencyMs'];
  errors: Record<string, number>;
  connectFailures: Record<string, number>;
  unanswered: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function measure(kind: ServerKind): Promise<Measured> {
  const server = await startServer({
    kind,
    shards: SHARDS,
    store: STORE,
    redisUrl: values.redis!,
    // Real phones send a frame every second or so; a generator rider sends hundreds, so the per-connection limit goes.
    tuning: { messagesPerSecond: 1e9, messageBurst: 1e9 },
  });
  let lg: LoadGenerator | null = null;
  let r: LoadResult;
  let a;
  let b;
  let windowS;
  try {
    lg = await LoadGenerator.start({
      url: `ws://127.0.0.1:${server.port}`,
      riders: RIDERS,
      fixRate: 0,
      batch: BATCH,
      inflight: INFLIGHT,
      warmupS: WARMUP_S,
      durationS: DURATION_S,
      encoding: kind === 'ws-redis' ? 'json' : 'msgpack',
      riderPrefix: `${kind}-r`,
      log: (l) => log(`${kind}: ${l}`),
    });
    await lg.connect();
    await lg.prepare();
    const running = lg.run();
    await sleep(WARMUP_S * 1000);
    a = await server.stats();
    const t0 = performance.now();
    await sleep(DURATION_S * 1000);
    b = await server.stats();
    windowS = (performance.now() - t0) / 1000;
    r = await running;
  } finally {
    await lg?.close();
    await server.stop();
  }
  const m: Measured = {
    kind,
    acceptedFixesPerSec: r.acceptedFixesPerSec,
    framesPerSec: r.framesPerSec,
    serverFixesPerSec: Math.round((b.fixes - a.fixes) / windowS),
    serverCpuCores: +((b.cpuUs - a.cpuUs) / 1e6 / windowS).toFixed(3),
    serverLoopDelayMs: b.loopDelayMs,
    serverGcPauses: b.gcPauses,
    generatorCpuCores: r.generator.cpuCores,
    generatorElu: r.generator.perProcess.map((p) => p.elu),
    serverRssMB: Math.round(b.memory.rss / 2 ** 20),
    ackLatencyMs: r.ackLatencyMs,
    errors: r.window.errors,
    connectFailures: r.connect.failures,
    unanswered: r.totals.unanswered,
  };
  log(
    `${kind}: ${m.acceptedFixesPerSec} fixes/s accepted (${m.framesPerSec} frames/s), server ${m.serverCpuCores} cores, generator ${m.generatorCpuCores} cores (ELU ${m.generatorElu.join(', ')})`,
  );
  return m;
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor((xs.length - 1) / 2)]!;

const kinds: ServerKind[] = ['quickdash', 'uws', 'ws-redis'];
const runs: Measured[] = [];
for (let round = 0; round < ROUNDS; round++) for (const kind of kinds) runs.push(await measure(kind));
const rate = (k: ServerKind) => median(runs.filter((m) => m.kind === k).map((m) => m.acceptedFixesPerSec));
const qd = rate('quickdash');
const uws = rate('uws');
const wsRedis = rate('ws-redis');
const vsUws = { baseline: uws, ratio: +(qd / uws).toFixed(3), target: '>= 0.6', pass: qd >= 0.6 * uws };
const vsWs = { baseline: wsRedis, ratio: +(qd / wsRedis).toFixed(2), target: '>= 3', pass: qd >= 3 * wsRedis };
log(`median of ${ROUNDS}: quickdash ${qd}, bare uWS ${uws} (ratio ${vsUws.ratio}), ws + JSON + Redis ${wsRedis} (ratio ${vsWs.ratio}) fixes/s`);
const uwsElu = Math.max(...runs.filter((m) => m.kind === 'uws').flatMap((m) => m.generatorElu));
const setup = {
  riders: RIDERS,
  batch: BATCH,
  inflightPerRider: INFLIGHT,
  warmupS: WARMUP_S,
  durationS: DURATION_S,
  rounds: ROUNDS,
  shards: SHARDS,
  store: STORE,
  cpus: availableParallelism(),
  mode: 'closed loop: each rider keeps inflightPerRider frames unanswered; rate limits raised',
  // On a small machine the generator shares the cores: if it was saturated against bare uWS, that baseline (and so the ratio's denominator) is understated.
  generatorSaturatedAgainstUws: uwsElu > 0.95,
};

writeResult({
  name: 'gateway-fixes',
  value: qd,
  unit: 'fixes/s',
  baseline: uws,
  baselineName: 'bare uWS decoding msgpack, minimal ack',
  ratio: vsUws.ratio,
  target: '>= 0.6 x bare uWS and >= 3 x ws + JSON + Redis GEOADD',
  pass: vsUws.pass && vsWs.pass,
  comparisons: { uws: vsUws, wsRedis: vsWs },
  ...setup,
  runs,
});
writeResult({ name: 'gateway-fixes-vs-uws', value: qd, unit: 'fixes/s', baselineName: 'bare uWS decoding msgpack, minimal ack', ...vsUws, ...setup });
writeResult({ name: 'gateway-fixes-vs-ws-redis', value: qd, unit: 'fixes/s', baselineName: 'ws + JSON + one Redis GEOADD per fix (one await per message)', ...vsWs, ...setup });

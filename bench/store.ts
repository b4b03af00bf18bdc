/**
 * store-append: events per second through the GroupCommitter with 1,000
 * concurrent committers of one event each (each order command is one event),
 * on (a) PGlite in memory, (b) PGlite on disk, (c) Postgres. The headline is
 * PGlite on disk, the embedded default, against Postgres measured in the
 * same run.
 *
 * Each backend runs `rounds` measured rounds on one store after a warm-up;
 * throughput is the median round, latencies are pooled over all rounds.
 *
 *   npx tsx bench/store.ts [--events 20000] [--committers 1000] [--rounds 3] [--postgres URL]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createEmbeddedStore, createPostgresStore } from '../adapters/sql/index.ts';
import type { SqlEventStore } from '../adapters/sql/index.ts';
import { GroupCommitter } from '../engine/store/index.ts';
import type { StoredEvent } from '../engine/index.ts';
import { percentile, writeResult } from './lib.ts';

const { values: args } = parseArgs({
  options: {
    events: { type: 'string', default: '20000' },
    committers: { type: 'string', default: '1000' },
    rounds: { type: 'string', default: '3' },
    postgres: { type: 'string', default: process.env.QD_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test' },
  },
});
const EVENTS = Number(args.events);
const COMMITTERS = Number(args.committers);
const ROUNDS = Number(args.rounds);
const WARMUP = 5_000;

interface Figures {
  backend: string;
  startupMs: number;
  eventsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  appends: number;
  meanBatch: number;
  maxBatch: number;
  /** Gaps between turns of the event loop while appending: PGlite executes SQL synchronously on this thread. */
  loopGapP50Ms: number;
  loopGapP99Ms: number;
  loopGapMaxMs: number;
}

/** A realistic order event: a state change with a little context. */
function event(stream: string, seq: number, at: number): StoredEvent {
  return {
    stream,
    seq,
    type: seq === 1 ? 'CREATED' : 'OFFER',
    data: { riderId: `rider-${seq % 997}`, etaS: 420 + (seq % 60), pickup: { lat: 12.9352, lng: 77.6245 }, dropoff: { lat: 12.94, lng: 77.63 }, at },
    at,
  };
}

/** `committers` loops, each committing one event at a time to its own stream, until `total` events are durable. */
async function drive(gc: GroupCommitter, prefix: string, total: number, committers: number): Promise<{ ms: number; latencies: number[] }> {
  const latencies: number[] = [];
  let issued = 0;
  const start = performance.now();
  const worker = async (id: number) => {
    let seq = 0;
    while (issued < total) {
      issued++;
      seq++;
      const t0 = performance.now();
      await gc.commit([event(`order:${prefix}-${id}`, seq, Date.now())]);
      latencies.push(performance.now() - t0);
    }
  };
  await Promise.all(Array.from({ length: committers }, (_, i) => worker(i)));
  return { ms: performance.now() - start, latencies };
}

async function measure(backend: string, open: () => Promise<SqlEventStore>, cleanup: (store: SqlEventStore) => Promise<void>): Promise<Figures> {
  const t0 = performance.now();
  const store = await open();
  const startupMs = performance.now() - t0;
  try {
    // Warm-up: JIT, plan caches, first pages of each table.
    await drive(new GroupCommitter(store), 'warm', WARMUP, COMMITTERS);
    const gc = new GroupCommitter(store);
    const rates: number[] = [];
    const latencies: number[] = [];
    const loop = loopGaps();
    for (let r = 0; r < ROUNDS; r++) {
      const run = await drive(gc, `run${r}`, EVENTS, COMMITTERS);
      rates.push((EVENTS / run.ms) * 1000);
      for (const l of run.latencies) latencies.push(l);
    }
    const gaps = loop.stop();
    const c = gc.counters;
    // Every acknowledged event must be there: a fast store that loses events is no result.
    const stored = (await store.loadLive()).filter((s) => s.stream.startsWith('order:run')).reduce((n, s) => n + s.events.length, 0);
    if (stored !== EVENTS * ROUNDS) throw new Error(`${backend}: ${stored} of ${EVENTS * ROUNDS} events stored`);
    const figures: Figures = {
      backend,
      startupMs: round(startupMs),
      eventsPerSec: Math.round(percentile(rates, 50)),
      p50Ms: round(percentile(latencies, 50)),
      p99Ms: round(percentile(latencies, 99)),
      appends: c.batches,
      meanBatch: round(c.events / c.batches),
      maxBatch: c.maxBatchSize,
      loopGapP50Ms: round(percentile(gaps, 50)),
      loopGapP99Ms: round(percentile(gaps, 99)),
      loopGapMaxMs: round(Math.max(...gaps)),
    };
    console.log(JSON.stringify(figures));
    return figures;
  } finally {
    await cleanup(store);
  }
}

/**
 * Samples the gaps between timer callbacks (1 ms apart when the loop is free).
 * A timer, not monitorEventLoopDelay: that histogram records nothing if the
 * loop never turns, which is exactly the case to see.
 */
function loopGaps(): { stop(): number[] } {
  const gaps: number[] = [];
  let last = performance.now();
  let timer: NodeJS.Timeout;
  const tick = () => {
    const now = performance.now();
    gaps.push(now - last);
    last = now;
    timer = setTimeout(tick, 1);
  };
  timer = setTimeout(tick, 1);
  return {
    stop() {
      clearTimeout(timer);
      gaps.push(performance.now() - last);
      return gaps;
    },
  };
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

const memory = await measure(
  'pglite-memory',
  () => createEmbeddedStore({}),
  (s) => s.close(),
);

const dir = mkdtempSync(join(tmpdir(), 'qd-bench-'));
const disk = await measure(
  'pglite-disk',
  () => createEmbeddedStore({ dataDir: join(dir, 'db') }),
  async (s) => {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  },
);

let postgres: Figures | null = null;
let postgresError: string | null = null;
try {
  const schema = `qd_bench_${process.pid}`;
  postgres = await measure(
    'postgres',
    () => createPostgresStore({ connectionString: args.postgres, schema }),
    async (s) => {
      await s.drop();
      await s.close();
    },
  );
} catch (err) {
  // The embedded figures stand on their own; say why there is no baseline.
  postgresError = (err as Error).message;
  console.error(`postgres skipped: ${postgresError}`);
}

writeResult({
  name: 'store-append',
  value: disk.eventsPerSec,
  unit: 'events/s',
  ...(postgres ? { baseline: postgres.eventsPerSec, ratio: round(disk.eventsPerSec / postgres.eventsPerSec) } : { baselineError: postgresError }),
  events: EVENTS,
  rounds: ROUNDS,
  committers: COMMITTERS,
  eventsPerCommit: 1,
  pgliteMemoryEventsPerSec: memory.eventsPerSec,
  pgliteDiskEventsPerSec: disk.eventsPerSec,
  postgresEventsPerSec: postgres?.eventsPerSec ?? null,
  p50Ms: { pgliteMemory: memory.p50Ms, pgliteDisk: disk.p50Ms, postgres: postgres?.p50Ms ?? null },
  p99Ms: { pgliteMemory: memory.p99Ms, pgliteDisk: disk.p99Ms, postgres: postgres?.p99Ms ?? null },
  startupMs: { pgliteMemory: memory.startupMs, pgliteDisk: disk.startupMs, postgres: postgres?.startupMs ?? null },
  meanBatch: { pgliteMemory: memory.meanBatch, pgliteDisk: disk.meanBatch, postgres: postgres?.meanBatch ?? null },
  appends: { pgliteMemory: memory.appends, pgliteDisk: disk.appends, postgres: postgres?.appends ?? null },
  loopGapP50Ms: { pgliteMemory: memory.loopGapP50Ms, pgliteDisk: disk.loopGapP50Ms, postgres: postgres?.loopGapP50Ms ?? null },
  loopGapP99Ms: { pgliteMemory: memory.loopGapP99Ms, pgliteDisk: disk.loopGapP99Ms, postgres: postgres?.loopGapP99Ms ?? null },
  loopGapMaxMs: { pgliteMemory: memory.loopGapMaxMs, pgliteDisk: disk.loopGapMaxMs, postgres: postgres?.loopGapMaxMs ?? null },
});

/**
 * Replays a real Grubhub delivery day (an MDRP instance) through the engine,
 * once per matcher, each on a fresh engine with its own event store (embedded
 * PGlite in memory by default), and
 * prints the MDRP measures as JSON on stdout (progress goes to stderr).
 *
 *   npm run replay -- --mdrp <instance dir> [--matcher batch|greedy|both] [--shards N] [--store pglite|memory] [--capacity N] [--out file.json]
 *
 * Output: { "instance": name, "wallSeconds": n, "matchers": { "batch": {...}, "greedy": {...} } }
 */
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { loadInstance, MdrpFormatError } from './mdrp/instance.ts';
import type { MdrpInstance } from './mdrp/instance.ts';
import { replayEngineConfig, replayInstance } from './mdrp/replay.ts';
import type { EngineFactory, MatcherName, ReplayMetrics } from './mdrp/replay.ts';

export interface ReplayReport {
  instance: string;
  wallSeconds: number;
  matchers: Partial<Record<MatcherName, ReplayMetrics>>;
}

export interface EngineChoice {
  shards?: number;
  /** Shards on worker threads (the engine's default) or inline. */
  threads?: boolean;
  /** Event store: the embedded default (PGlite in memory, on its own thread) or the plain memory store. */
  store?: 'pglite' | 'memory';
  /** Orders a courier may carry at once (bundles from one restaurant); the engine's default when absent. */
  capacity?: number;
}

/**
 * The real engine, fresh per call, with an in-memory store and the settings
 * that match the instance. Imported lazily so this module loads (and its
 * types check) independently of the engine's build state.
 */
export async function engineFactoryFor(instance: MdrpInstance, choice: EngineChoice = {}): Promise<EngineFactory> {
  const { createEngine, MemoryEventStore } = await import('../engine/index.ts');
  const { createThreadedEmbeddedStore } = await import('../adapters/sql/index.ts');
  return async (matcher, clock) =>
    createEngine({
      clock,
      store: choice.store === 'memory' ? new MemoryEventStore() : await createThreadedEmbeddedStore({}),
      threads: choice.threads,
      config: { ...replayEngineConfig(instance), matcher, ...(choice.shards === undefined ? {} : { shards: choice.shards }) },
    });
}

/** Runs the chosen matchers one after the other on one instance. */
export async function runReplay(
  dir: string,
  matchers: readonly MatcherName[],
  choice: EngineChoice = {},
  log: (line: string) => void = () => {},
): Promise<ReplayReport> {
  const started = performance.now();
  const instance = await loadInstance(dir);
  log(`${instance.name}: ${instance.orders.length} orders, ${instance.couriers.length} couriers, ${instance.restaurants.length} restaurants`);
  const factory = await engineFactoryFor(instance, choice);
  const report: ReplayReport = { instance: instance.name, wallSeconds: 0, matchers: {} };
  for (const matcher of matchers) {
    report.matchers[matcher] = await replayInstance(instance, factory, {
      matcher,
      ...(choice.capacity === undefined ? {} : { capacity: choice.capacity }),
      onProgress: (p) => log(`${matcher} minute ${p.minute}: ${p.placed} placed, ${p.delivered} delivered, ${p.couriersOnline} couriers online`),
    });
  }
  report.wallSeconds = (performance.now() - started) / 1000;
  return report;
}

const USAGE = 'usage: npm run replay -- --mdrp <instance dir> [--matcher batch|greedy|both] [--shards N] [--store pglite|memory] [--capacity N] [--out file.json]';

async function main(): Promise<number> {
  let values: { mdrp?: string; matcher?: string; shards?: string; store?: string; capacity?: string; out?: string };
  try {
    ({ values } = parseArgs({
      options: {
        mdrp: { type: 'string' },
        matcher: { type: 'string', default: 'both' },
        shards: { type: 'string' },
        store: { type: 'string', default: 'pglite' },
        capacity: { type: 'string' },
        out: { type: 'string' },
      },
    }));
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!values.mdrp) {
    console.error(`--mdrp is required\n${USAGE}`);
    return 2;
  }
  const matcher = values.matcher ?? 'both';
  if (matcher !== 'batch' && matcher !== 'greedy' && matcher !== 'both') {
    console.error(`--matcher must be batch, greedy or both, got ${matcher}\n${USAGE}`);
    return 2;
  }
  const matchers: MatcherName[] = matcher === 'both' ? ['batch', 'greedy'] : [matcher];
  let shards: number | undefined;
  if (values.shards !== undefined) {
    shards = Number(values.shards);
    if (!Number.isInteger(shards) || shards < 1) {
      console.error(`--shards must be a positive integer, got ${values.shards}\n${USAGE}`);
      return 2;
    }
  }
  const store = values.store ?? 'pglite';
  if (store !== 'pglite' && store !== 'memory') {
    console.error(`--store must be pglite or memory, got ${store}\n${USAGE}`);
    return 2;
  }
  let capacity: number | undefined;
  if (values.capacity !== undefined) {
    capacity = Number(values.capacity);
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 10) {
      console.error(`--capacity must be an integer 1..10, got ${values.capacity}\n${USAGE}`);
      return 2;
    }
  }
  let report: ReplayReport;
  try {
    report = await runReplay(values.mdrp, matchers, { shards, store, capacity }, (line) => console.error(line));
  } catch (err) {
    // A malformed instance is the user's to fix: say where, without a stack.
    if (err instanceof MdrpFormatError) {
      console.error(err.message);
      return 2;
    }
    throw err;
  }
  const json = JSON.stringify(report, roundFloats, 2);
  process.stdout.write(`${json}\n`);
  if (values.out) await writeFile(values.out, `${json}\n`);
  return 0;
}

/** Three decimals are plenty for minutes and ratios, and keep the output readable. */
function roundFloats(_key: string, value: unknown): unknown {
  return typeof value === 'number' && !Number.isInteger(value) ? Math.round(value * 1000) / 1000 : value;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  process.exitCode = await main();
}

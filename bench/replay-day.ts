/**
 * A full Grubhub day through the real engine (worker shards, actors, batch
 * matcher, embedded PGlite event store) in virtual time: wall seconds.
 * Baseline, same run: the same day with the plain in-memory event store, so
 * the ratio is what durability costs the replay.
 *
 *   npm run bench -- replay-day [instance dir]   (default ../shared/data/mdrp/8o100t100s1p100)
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { runReplay } from './replay.ts';
import { writeResult } from './lib.ts';

const dir = resolve(process.argv[2] ?? '../shared/data/mdrp/8o100t100s1p100');
if (!existsSync(dir)) {
  console.error(`no MDRP instance at ${dir}; pass its folder: npm run bench -- replay-day <dir>`);
  process.exit(2);
}

const durable = await runReplay(dir, ['batch'], { store: 'pglite' });
const memory = await runReplay(dir, ['batch'], { store: 'memory' });
const m = durable.matchers.batch!;
writeResult({
  name: 'replay-day',
  value: +durable.wallSeconds.toFixed(2),
  unit: 's',
  baseline: +memory.wallSeconds.toFixed(2),
  baselineName: 'same day, in-memory event store',
  ratio: +(durable.wallSeconds / memory.wallSeconds).toFixed(2),
  target: '< 60 s for 8o100t100s1p100 (2,444 orders)',
  pass: durable.wallSeconds < 60,
  instance: durable.instance,
  ordersPlaced: m.ordersPlaced,
  ordersDelivered: m.ordersDelivered,
  clickToDoorMeanMin: m.clickToDoorMeanMin,
  clickToDoorP90Min: m.clickToDoorP90Min,
});

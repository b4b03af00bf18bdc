/**
 * The shard's GPS hot path in-process, no workers and no engine: one Fleet
 * of riders driving ~10 m/s with a fix every second, each fix through
 * Fleet.applyFix and, when the cell changes, SpatialIndex.set.
 * Baseline, same run and same fixes: a Fleet with cellRecomputeM 0, which
 * calls h3 latLngToCell on every fix (the design the threshold avoids).
 *
 *   npm run bench -- fleet-apply [--riders 20000] [--rounds 60] [--trials 3]
 */
import { parseArgs } from 'node:util';
import { greatCircleDistance, latLngToCell, UNITS } from 'h3-js';
import { Fleet, FixOutcome } from '../engine/shard/fleet.ts';
import { SpatialIndex } from '../engine/shard/spatial-index.ts';
import { CellGeometry, haversineM } from '../engine/geo/index.ts';
import { percentile, writeResult } from './lib.ts';

const { values } = parseArgs({
  options: {
    riders: { type: 'string', default: '20000' },
    rounds: { type: 'string', default: '60' },
    trials: { type: 'string', default: '3' },
  },
  allowPositionals: true,
});
const RIDERS = Number(values.riders);
const ROUNDS = Number(values.rounds);
const TRIALS = Number(values.trials);

const CENTRE = { lat: 12.9716, lng: 77.5946 };
const T0 = Date.UTC(2026, 10, 24, 9);
const M_PER_DEG = 111_195;
const INDEX_RES = 8;
const TARGET = 250_000;

// Deterministic, so runs compare.
let seed = 12345;
const rand = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);

/** Start positions, then ROUNDS rounds of one fix per rider, packed [slot, lat, lng, ts, seq] in a shuffled order per round. */
function makeFixes(): { start: Float64Array; fixes: Float64Array } {
  const start = new Float64Array(RIDERS * 2);
  const lat = new Float64Array(RIDERS);
  const lng = new Float64Array(RIDERS);
  const heading = new Float64Array(RIDERS);
  const speed = new Float64Array(RIDERS);
  for (let i = 0; i < RIDERS; i++) {
    // A 40 km wide city.
    lat[i] = start[2 * i] = CENTRE.lat + (rand() - 0.5) * 0.36;
    lng[i] = start[2 * i + 1] = CENTRE.lng + (rand() - 0.5) * 0.36;
    heading[i] = rand() * 2 * Math.PI;
    speed[i] = 6 + rand() * 8;
  }
  const order = Array.from({ length: RIDERS }, (_, i) => i);
  const fixes = new Float64Array(RIDERS * ROUNDS * 5);
  let n = 0;
  for (let r = 1; r <= ROUNDS; r++) {
    // Fixes from different riders arrive interleaved, not slot by slot.
    for (let i = RIDERS - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    for (const i of order) {
      if (rand() < 0.02) heading[i] += (rand() - 0.5) * Math.PI; // turns at junctions
      const noise = (rand() - 0.5) * 6; // GPS wobble, metres
      lat[i] += (speed[i] * Math.cos(heading[i]) + noise) / M_PER_DEG;
      lng[i] += (speed[i] * Math.sin(heading[i]) + noise) / (M_PER_DEG * Math.cos((lat[i] * Math.PI) / 180));
      fixes[n++] = i;
      fixes[n++] = lat[i];
      fixes[n++] = lng[i];
      fixes[n++] = T0 + r * 1_000 + Math.floor(rand() * 200);
      fixes[n++] = r;
    }
  }
  return { start, fixes };
}

interface Trial {
  fixesPerS: number;
  roundMs: number[];
  cellLookups: number;
  cellChanges: number;
  accepted: number;
}

/** A fresh fleet and index (the fixes carry rising ts/seq, so each trial needs new state), then every fix timed round by round. */
function trial(start: Float64Array, fixes: Float64Array, cellRecomputeM: number | undefined): Trial {
  const fleet = new Fleet({ indexRes: INDEX_RES, maxSpeedMps: 60, maxFutureSkewMs: 30_000, cellRecomputeM });
  const index = new SpatialIndex(new CellGeometry());
  const ids: string[] = [];
  for (let i = 0; i < RIDERS; i++) {
    const id = `r${i}`;
    ids.push(id);
    const slot = fleet.place(id, start[2 * i], start[2 * i + 1], T0, 0);
    index.set(id, fleet.cell(slot));
  }
  const slotOf = Int32Array.from(ids, (id) => fleet.slotOf(id));
  const lookupsBefore = fleet.counters().cellLookups;
  const roundMs: number[] = [];
  let changes = 0;
  const perRound = RIDERS * 5;
  const t0 = performance.now();
  for (let r = 0; r < ROUNDS; r++) {
    const rs = performance.now();
    const end = (r + 1) * perRound;
    for (let i = r * perRound; i < end; i += 5) {
      const slot = slotOf[fixes[i]];
      const now = fixes[i + 3];
      const o = fleet.applyFix(slot, fixes[i + 1], fixes[i + 2], now, fixes[i + 4], now);
      if (o === FixOutcome.AcceptedCellChanged) {
        changes++;
        index.set(ids[fixes[i]], fleet.cell(slot));
      }
    }
    roundMs.push(performance.now() - rs);
  }
  const ms = performance.now() - t0;
  const c = fleet.counters();
  return { fixesPerS: (RIDERS * ROUNDS) / (ms / 1000), roundMs, cellLookups: c.cellLookups - lookupsBefore, cellChanges: changes, accepted: c.accepted };
}

/** Calls per second of one small function, for the figures that explain the result. */
function rate(n: number, f: (i: number) => unknown): number {
  let sink: unknown;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) sink = f(i);
  const ms = performance.now() - t0;
  if (sink === Symbol.for('never')) console.log(sink);
  return Math.round(n / (ms / 1000));
}

const { start, fixes } = makeFixes();
const total = RIDERS * ROUNDS;

// Warm the JIT on both paths before measuring.
trial(start, fixes, undefined);
trial(start, fixes, 0);

const ours: Trial[] = [];
const base: Trial[] = [];
for (let i = 0; i < TRIALS; i++) {
  ours.push(trial(start, fixes, undefined));
  base.push(trial(start, fixes, 0));
}
const median = (xs: number[]): number => percentile(xs, 50);
const value = Math.round(median(ours.map((x) => x.fixesPerS)));
const baseline = Math.round(median(base.map((x) => x.fixesPerS)));
const best = ours[0];
const perFixUs = (t: Trial[]) => t.flatMap((x) => x.roundMs.map((ms) => (ms * 1000) / RIDERS));

writeResult({
  name: 'fleet-apply',
  value,
  unit: 'fixes/s',
  baseline,
  ratio: Math.round((value / baseline) * 100) / 100,
  target: `>= ${TARGET} fixes/s on one shard`,
  pass: value >= TARGET,
  riders: RIDERS,
  fixesPerTrial: total,
  trials: TRIALS,
  p50FixUs: Math.round(percentile(perFixUs(ours), 50) * 1000) / 1000,
  p99FixUs: Math.round(percentile(perFixUs(ours), 99) * 1000) / 1000,
  baselineP50FixUs: Math.round(percentile(perFixUs(base), 50) * 1000) / 1000,
  acceptedShare: Math.round((best.accepted / total) * 1000) / 1000,
  cellLookupsPerFix: Math.round((best.cellLookups / total) * 1000) / 1000,
  cellChangesPerFix: Math.round((best.cellChanges / total) * 1000) / 1000,
  h3LatLngToCellPerS: rate(1_000_000, (i) => latLngToCell(CENTRE.lat + i * 1e-7, CENTRE.lng, INDEX_RES)),
  haversinePerS: rate(5_000_000, (i) => haversineM(CENTRE.lat, CENTRE.lng, CENTRE.lat + i * 1e-9, CENTRE.lng + 0.01)),
  h3GreatCirclePerS: rate(1_000_000, (i) => greatCircleDistance([CENTRE.lat, CENTRE.lng], [CENTRE.lat + i * 1e-9, CENTRE.lng + 0.01], UNITS.m)),
});

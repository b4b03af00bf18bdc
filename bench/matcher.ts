/**
 * One dispatch batch solved in-process: 500 orders × 2,000 riders over a
 * 10 km × 10 km Bengaluru, each order offered its 40 nearest riders (found
 * by brute force in setup, not timed, standing in for the H3 ring search).
 * Orders come from store hubs and half the riders loiter near hubs, so
 * candidate lists overlap the way they do at lunch time. Baseline, measured
 * in the same run: the greedy nearest-first solver on the same input.
 *
 *   npm run bench -- matcher [--orders 500] [--riders 2000] [--k 40] [--runs 21] [--seed 7]
 */
import { parseArgs } from 'node:util';
import { HaversineRouter, solveBatch, solveGreedy } from '../engine/dispatch/index.ts';
import type { Assignment, MatchOptions, MatchOrder, MatchRider } from '../engine/dispatch/index.ts';
import { percentile, writeResult } from './lib.ts';
import { mulberry32 as rng } from './random.ts';

const { values } = parseArgs({
  options: {
    orders: { type: 'string', default: '500' },
    riders: { type: 'string', default: '2000' },
    k: { type: 'string', default: '40' },
    runs: { type: 'string', default: '21' },
    seed: { type: 'string', default: '7' },
  },
  allowPositionals: true,
});

const ORDERS = Number(values.orders);
const RIDERS = Number(values.riders);
const K = Number(values.k);
const RUNS = Number(values.runs);
const WARMUP = 10;
const TARGET_MS = 50;
const CENTRE = { lat: 12.97, lng: 77.59 };
// 10 km spans about 0.09° of latitude and 0.092° of longitude at this latitude.
const HALF_LAT = 0.045;
const HALF_LNG = 0.046;
const HUBS = 60;
const NOW = Date.UTC(2026, 10, 24, 7, 30); // 13:00 IST, the lunch peak
const MIN = 60_000;


function setup(): { orders: MatchOrder[]; riders: Map<string, MatchRider> } {
  const rand = rng(Number(values.seed));
  const uniformLat = () => CENTRE.lat + (rand() * 2 - 1) * HALF_LAT;
  const uniformLng = () => CENTRE.lng + (rand() * 2 - 1) * HALF_LNG;
  // Within about 600 m of a point.
  const near = (v: number) => v + (rand() * 2 - 1) * 0.0055;

  const hubLat = Float64Array.from({ length: HUBS }, uniformLat);
  const hubLng = Float64Array.from({ length: HUBS }, uniformLng);

  const riders = new Map<string, MatchRider>();
  const rLat = new Float64Array(RIDERS);
  const rLng = new Float64Array(RIDERS);
  const rId: string[] = [];
  for (let r = 0; r < RIDERS; r++) {
    const h = Math.floor(rand() * HUBS);
    const atHub = rand() < 0.5;
    rLat[r] = atHub ? near(hubLat[h]) : uniformLat();
    rLng[r] = atHub ? near(hubLng[h]) : uniformLng();
    const id = `rider-${r}`;
    rId.push(id);
    riders.set(id, { riderId: id, lat: rLat[r], lng: rLng[r], idleSince: NOW - Math.floor(rand() * 45 * MIN) });
  }

  const orders: MatchOrder[] = [];
  const d2 = new Float64Array(RIDERS);
  const idx = new Int32Array(RIDERS);
  const cosLat = Math.cos((CENTRE.lat * Math.PI) / 180);
  for (let o = 0; o < ORDERS; o++) {
    // Most orders come from hubs (dark stores, food courts), a few from anywhere.
    const h = Math.floor(rand() * HUBS);
    const fromHub = rand() < 0.8;
    const lat = fromHub ? hubLat[h] : uniformLat();
    const lng = fromHub ? hubLng[h] : uniformLng();
    // K nearest riders by equirectangular distance: ordering only, exact enough at city scale.
    for (let r = 0; r < RIDERS; r++) {
      const dy = rLat[r] - lat;
      const dx = (rLng[r] - lng) * cosLat;
      d2[r] = dx * dx + dy * dy;
      idx[r] = r;
    }
    idx.sort((a, b) => d2[a] - d2[b]);
    const candidates: string[] = [];
    for (let c = 0; c < K && c < RIDERS; c++) candidates.push(rId[idx[c]]);
    orders.push({
      orderId: `order-${o}`,
      pickupLat: lat,
      pickupLng: lng,
      readyAt: NOW + Math.floor(rand() * 15 * MIN),
      createdAt: NOW - Math.floor(rand() * 30_000), // gathered over a 30 s window
      candidates,
    });
  }
  return { orders, riders };
}

type Solver = (orders: readonly MatchOrder[], riders: ReadonlyMap<string, MatchRider>, options: MatchOptions) => Assignment[];

function time(solve: Solver, orders: MatchOrder[], riders: Map<string, MatchRider>, options: MatchOptions): { times: number[]; out: Assignment[] } {
  let out: Assignment[] = [];
  for (let i = 0; i < WARMUP; i++) out = solve(orders, riders, options);
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    out = solve(orders, riders, options);
    times.push(performance.now() - t0);
  }
  return { times, out };
}

const total = (as: readonly Assignment[]) => as.reduce((s, a) => s + a.cost, 0);
const round = (x: number, digits = 3) => Number(x.toFixed(digits));

const { orders, riders } = setup();
const options: MatchOptions = { now: NOW, router: new HaversineRouter() };
const batch = time(solveBatch, orders, riders, options);
const greedy = time(solveGreedy, orders, riders, options);

const value = percentile(batch.times, 50);
const baseline = percentile(greedy.times, 50);
const totalCostBatch = total(batch.out);
const totalCostGreedy = total(greedy.out);
writeResult({
  name: 'matcher',
  value: round(value),
  unit: 'ms',
  baseline: round(baseline),
  ratio: round(value / baseline),
  target: `< ${TARGET_MS} ms`,
  pass: value < TARGET_MS,
  p90Ms: round(percentile(batch.times, 90)),
  greedyP90Ms: round(percentile(greedy.times, 90)),
  totalCostBatch: Math.round(totalCostBatch),
  totalCostGreedy: Math.round(totalCostGreedy),
  // Per assigned order, in seconds-equivalent: what the optimum saves over greedy.
  meanCostBatchS: round(totalCostBatch / batch.out.length / 1000, 1),
  meanCostGreedyS: round(totalCostGreedy / greedy.out.length / 1000, 1),
  assignedBatch: batch.out.length,
  assignedGreedy: greedy.out.length,
  orders: ORDERS,
  riders: RIDERS,
  candidatesPerOrder: K,
  runs: RUNS,
});

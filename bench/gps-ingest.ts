/**
 * GPS fixes absorbed per second by the shards (worker threads, in-process),
 * through the engine's public ingestFixes: validated, stored, indexed.
 * Baseline, measured in the same run: the same engine fed one fix per call,
 * which costs one postMessage per fix, the design this one avoids.
 *
 *   npm run bench -- gps-ingest [--shards 2] [--riders 20000] [--fixes 4000000]
 */
import { parseArgs } from 'node:util';
import { createEngine, MemoryEventStore, VirtualClock } from '../engine/index.ts';
import type { DispatchEngine, Fix } from '../engine/index.ts';
import { writeResult } from './lib.ts';

const { values } = parseArgs({
  options: {
    shards: { type: 'string', default: '2' },
    riders: { type: 'string', default: '20000' },
    fixes: { type: 'string', default: '4000000' },
    batch: { type: 'string', default: '10000' },
    inflight: { type: 'string', default: '4' },
  },
  allowPositionals: true,
});

const SHARDS = Number(values.shards);
const RIDERS = Number(values.riders);
const TOTAL = Number(values.fixes);
const BATCH = Number(values.batch);
const INFLIGHT = Number(values.inflight);
const CENTRE = { lat: 12.9716, lng: 77.5946 };
const T0 = Date.UTC(2026, 10, 24, 9);

async function setup(): Promise<{ engine: DispatchEngine; clock: VirtualClock; lat: Float64Array; lng: Float64Array; heading: Float64Array }> {
  const clock = new VirtualClock(T0);
  const engine = await createEngine({ store: new MemoryEventStore(), clock, config: { shards: SHARDS } });
  const lat = new Float64Array(RIDERS);
  const lng = new Float64Array(RIDERS);
  const heading = new Float64Array(RIDERS);
  // A 40 km wide city, so riders spread over several shard cells.
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < RIDERS; i++) {
    lat[i] = CENTRE.lat + (Math.random() - 0.5) * 0.36;
    lng[i] = CENTRE.lng + (Math.random() - 0.5) * 0.36;
    heading[i] = Math.random() * 2 * Math.PI;
    pending.push(engine.riderOnline(`r${i}`, { position: { lat: lat[i], lng: lng[i] } }));
    if (pending.length >= 2000) await Promise.all(pending.splice(0));
  }
  await Promise.all(pending);
  return { engine, clock, lat, lng, heading };
}

/** Per-rider sequence numbers keep rising across every batch set this run builds. */
let seq = 1;

/** Builds `count` fixes: every rider moves ~8 m per second along its heading. */
function makeBatches(s: { lat: Float64Array; lng: Float64Array; heading: Float64Array }, count: number, size: number, t0: number): Fix[][] {
  const batches: Fix[][] = [];
  let t = t0;
  let batch: Fix[] = [];
  for (let n = 0; n < count; n++) {
    const i = n % RIDERS;
    if (i === 0) {
      t += 1000;
      seq++;
    }
    s.lat[i] += Math.cos(s.heading[i]) * 0.00007;
    s.lng[i] += Math.sin(s.heading[i]) * 0.00007;
    batch.push({ riderId: `r${i}`, lat: s.lat[i], lng: s.lng[i], ts: t, seq });
    if (batch.length === size) {
      batches.push(batch);
      batch = [];
    }
  }
  if (batch.length) batches.push(batch);
  return batches;
}

async function pump(engine: DispatchEngine, batches: Fix[][], inflight: number): Promise<{ accepted: number; seconds: number }> {
  let next = 0;
  let accepted = 0;
  const started = performance.now();
  async function lane(): Promise<void> {
    while (next < batches.length) {
      const b = batches[next++];
      const r = await engine.ingestFixes(b);
      accepted += r.accepted;
    }
  }
  await Promise.all(Array.from({ length: inflight }, lane));
  return { accepted, seconds: (performance.now() - started) / 1000 };
}

const s = await setup();
// The clock runs ahead of the fixes' timestamps as a live node's would.
s.clock.set(T0 + 10 * 3600_000);
const warm = makeBatches(s, Math.min(TOTAL / 10, 400_000), BATCH, T0);
await pump(s.engine, warm, INFLIGHT);
const batches = makeBatches(s, TOTAL, BATCH, T0 + 3600_000);
const batched = await pump(s.engine, batches, INFLIGHT);
const rate = batched.accepted / batched.seconds;

// Baseline: one fix per call (one postMessage per fix), on a smaller sample.
const single = makeBatches(s, Math.min(TOTAL / 20, 100_000), 1, T0 + 7200_000);
const naive = await pump(s.engine, single, 64);
const naiveRate = naive.accepted / naive.seconds;
const counters = await s.engine.counters();
await s.engine.close();

writeResult({
  name: 'gps-ingest',
  value: Math.round(rate),
  unit: 'fixes/s',
  baseline: Math.round(naiveRate),
  baselineName: 'one fix per ingestFixes call (64 calls in flight, so a flush carries few fixes)',
  ratio: +(rate / naiveRate).toFixed(2),
  target: '>= 500000 fixes/s with 2 shards',
  pass: rate >= 500_000,
  shards: SHARDS,
  riders: RIDERS,
  fixes: batched.accepted,
  seconds: +batched.seconds.toFixed(3),
  batchSize: BATCH,
  rejected: counters.fixesRejected,
});

// Fleet: every fix outcome, cell recompute threshold, slot reuse and growth, distance, export/import.
import t from 'tap';
import { latLngToCell } from 'h3-js';
import { Fleet, FixOutcome, fixRejectReason, isAccepted, CELL_RECOMPUTE_FRACTION } from '../../engine/shard/fleet.ts';
import type { FleetRecord } from '../../engine/shard/fleet.ts';
import { edgeLengthM, haversineM } from '../../engine/geo/index.ts';

const BLR = { lat: 12.9716, lng: 77.5946 };
const T0 = Date.UTC(2026, 10, 24, 9);
const M_PER_DEG_LAT = 111_195;

const opts = { indexRes: 8, maxSpeedMps: 60, maxFutureSkewMs: 30_000 };

/** A point `north` and `east` metres from `p`. */
function offset(p: { lat: number; lng: number }, north: number, east: number): { lat: number; lng: number } {
  return { lat: p.lat + north / M_PER_DEG_LAT, lng: p.lng + east / (M_PER_DEG_LAT * Math.cos((p.lat * Math.PI) / 180)) };
}

t.test('slots: add is idempotent, remove frees, freed slots are reused clean', async (t) => {
  const f = new Fleet(opts);
  const a = f.add('a');
  t.equal(f.add('a'), a);
  const b = f.add('b');
  t.not(a, b);
  t.equal(f.size, 2);
  t.equal(f.slotOf('b'), b);
  t.equal(f.slotOf('nobody'), -1);
  t.equal(f.riderIdAt(a), 'a');
  t.notOk(f.hasPosition(a));
  t.equal(f.cell(a), '');

  f.applyFix(a, BLR.lat, BLR.lng, T0, 1, T0);
  t.ok(f.hasPosition(a));
  t.ok(f.remove('a'));
  t.notOk(f.remove('a'), 'second remove finds nothing');
  t.equal(f.slotOf('a'), -1);
  t.equal(f.riderIdAt(a), undefined);
  t.equal(f.size, 1);

  const c = f.add('c');
  t.equal(c, a, 'the freed slot is reused');
  t.notOk(f.hasPosition(c), 'without the old rider position');
  t.equal(f.cell(c), '');
  t.equal(f.seq(c), -1);
  t.equal(f.takeDistance(c), 0);
  t.equal(f.applyFix(c, BLR.lat + 1, BLR.lng, T0 - 5_000, 0, T0), FixOutcome.AcceptedCellChanged, 'nothing of the old rider blocks the first fix');
});

t.test('arrays grow by doubling and keep their contents', async (t) => {
  const f = new Fleet({ ...opts, initialCapacity: 2 });
  for (let i = 0; i < 100; i++) f.place(`r${i}`, BLR.lat + i * 0.001, BLR.lng, T0 + i, i);
  t.equal(f.size, 100);
  t.equal(f.capacity, 128);
  for (let i = 0; i < 100; i++) {
    const s = f.slotOf(`r${i}`);
    t.equal(f.lat(s), BLR.lat + i * 0.001);
    t.equal(f.ts(s), T0 + i);
    t.equal(f.seq(s), i);
    t.equal(f.cell(s), latLngToCell(BLR.lat + i * 0.001, BLR.lng, 8));
  }
});

t.test('the first fix is accepted and sets the cell', async (t) => {
  const f = new Fleet(opts);
  const s = f.add('r');
  t.equal(f.applyFix(s, BLR.lat, BLR.lng, T0, 7, T0), FixOutcome.AcceptedCellChanged);
  t.equal(f.lat(s), BLR.lat);
  t.equal(f.lng(s), BLR.lng);
  t.equal(f.ts(s), T0);
  t.equal(f.seq(s), 7);
  t.equal(f.cell(s), latLngToCell(BLR.lat, BLR.lng, 8));
  t.equal(f.takeDistance(s), 0, 'no distance from nowhere');
});

t.test('stale fixes are ignored: older ts, repeated or lower seq', async (t) => {
  const f = new Fleet(opts);
  const s = f.add('r');
  f.applyFix(s, BLR.lat, BLR.lng, T0, 10, T0);
  const near = offset(BLR, 10, 0);
  t.equal(f.applyFix(s, near.lat, near.lng, T0 - 1, 11, T0), FixOutcome.Stale, 'older ts, even with a higher seq');
  t.equal(f.applyFix(s, near.lat, near.lng, T0 + 1_000, 10, T0), FixOutcome.Stale, 'same seq, newer ts');
  t.equal(f.applyFix(s, near.lat, near.lng, T0 + 1_000, 9, T0), FixOutcome.Stale, 'lower seq');
  t.equal(f.applyFix(s, BLR.lat, BLR.lng, T0, 10, T0), FixOutcome.Stale, 'exact repeat');
  t.equal(f.lat(s), BLR.lat, 'position unchanged');
  t.equal(f.seq(s), 10);
  t.equal(f.ts(s), T0);
  t.equal(f.counters().stale, 4);
  t.equal(f.applyFix(s, near.lat, near.lng, T0 + 1_000, 11, T0), FixOutcome.Accepted, 'the next one in order goes through');
  const tiny = offset(near, 2, 0);
  t.equal(f.applyFix(s, tiny.lat, tiny.lng, T0 + 1_000, 12, T0), FixOutcome.Accepted, 'same ts, higher seq, jitter-sized move');
});

t.test('NaN and out-of-range fixes are rejected and change nothing', async (t) => {
  const f = new Fleet(opts);
  const s = f.add('r');
  f.applyFix(s, BLR.lat, BLR.lng, T0, 1, T0);
  const cases: Array<[number, number, number, number, FixOutcome]> = [
    [NaN, BLR.lng, T0 + 1, 2, FixOutcome.RejectedNaN],
    [BLR.lat, Infinity, T0 + 1, 2, FixOutcome.RejectedNaN],
    [BLR.lat, BLR.lng, NaN, 2, FixOutcome.RejectedNaN],
    [BLR.lat, BLR.lng, T0 + 1, NaN, FixOutcome.RejectedNaN],
    [90.0001, BLR.lng, T0 + 1, 2, FixOutcome.RejectedRange],
    [-91, BLR.lng, T0 + 1, 2, FixOutcome.RejectedRange],
    [BLR.lat, 180.5, T0 + 1, 2, FixOutcome.RejectedRange],
    [BLR.lat, -181, T0 + 1, 2, FixOutcome.RejectedRange],
  ];
  for (const [lat, lng, ts, seq, want] of cases) t.equal(f.applyFix(s, lat, lng, ts, seq, T0), want, `${lat},${lng} ts=${ts} seq=${seq}`);
  t.equal(f.lat(s), BLR.lat);
  t.equal(f.seq(s), 1, 'a rejected fix does not use up its seq');
  t.same(f.counters().rejected, { nan: 4, outOfRange: 4, teleport: 0, future: 0 });

  const edge = new Fleet(opts);
  for (const [lat, lng] of [[90, 180], [-90, -180]]) {
    t.ok(isAccepted(edge.applyFix(edge.add(`${lat}`), lat, lng, T0, 1, T0)), `${lat},${lng} is on the globe`);
  }
});

t.test('fixes stamped too far ahead of the clock are rejected', async (t) => {
  const f = new Fleet(opts);
  const s = f.add('r');
  t.equal(f.applyFix(s, BLR.lat, BLR.lng, T0 + 30_001, 1, T0), FixOutcome.RejectedFuture, 'even a first fix');
  t.notOk(f.hasPosition(s));
  t.equal(f.applyFix(s, BLR.lat, BLR.lng, T0 + 30_000, 1, T0), FixOutcome.AcceptedCellChanged, 'exactly the allowed skew is fine');
  const p = offset(BLR, 50, 0);
  t.equal(f.applyFix(s, p.lat, p.lng, T0 + 90_000, 2, T0 + 50_000), FixOutcome.RejectedFuture);
  t.equal(f.counters().rejected.future, 2);
});

t.test('teleports: faster than maxSpeedMps since the last accepted fix', async (t) => {
  const f = new Fleet(opts);
  const s = f.add('r');
  f.applyFix(s, BLR.lat, BLR.lng, T0, 1, T0);
  const km = offset(BLR, 1_000, 0);
  t.equal(f.applyFix(s, km.lat, km.lng, T0 + 1_000, 2, T0 + 1_000), FixOutcome.RejectedTeleport, '1 km in 1 s');
  t.equal(f.lat(s), BLR.lat, 'position unchanged');
  t.equal(f.applyFix(s, km.lat, km.lng, T0 + 10_000, 3, T0 + 10_000), FixOutcome.RejectedTeleport, '100 m/s is still too fast');
  // Measured from the last accepted fix, so the allowance grows and a real jump is accepted in time.
  t.ok(isAccepted(f.applyFix(s, km.lat, km.lng, T0 + 20_000, 4, T0 + 20_000)), '50 m/s is allowed');

  const z = f.add('zero-dt');
  f.applyFix(z, BLR.lat, BLR.lng, T0, 1, T0);
  const ten = offset(BLR, 10, 0);
  t.equal(f.applyFix(z, ten.lat, ten.lng, T0, 2, T0), FixOutcome.RejectedTeleport, 'same timestamp, 10 m apart');
  const three = offset(BLR, 3, 0);
  t.equal(f.applyFix(z, three.lat, three.lng, T0, 2, T0), FixOutcome.Accepted, 'same timestamp, 3 m of jitter');

  const strict = new Fleet({ ...opts, jitterM: 0 });
  const q = strict.add('q');
  strict.applyFix(q, BLR.lat, BLR.lng, T0, 1, T0);
  t.equal(strict.applyFix(q, three.lat, three.lng, T0, 2, T0), FixOutcome.RejectedTeleport, 'jitterM 0 allows no movement at dt 0');

  const far = f.add('far');
  f.place('far', BLR.lat, BLR.lng, T0, 1);
  t.ok(isAccepted(f.applyFix(f.add('fresh'), 40, -70, T0, 1, T0)), 'a first fix is never a teleport');
  t.equal(f.counters().rejected.teleport, 3);
  t.equal(f.slotOf('far'), far);
});

t.test('the cell is recomputed only after moving cellRecomputeM', async (t) => {
  // Find an east-west cell edge near the city, metre by metre.
  let boundary = BLR;
  const c0 = latLngToCell(BLR.lat, BLR.lng, 8);
  for (let m = 1; m < 2_000; m++) {
    const p = offset(BLR, 0, m);
    if (latLngToCell(p.lat, p.lng, 8) !== c0) {
      boundary = p;
      break;
    }
  }
  t.not(boundary, BLR, 'found a cell edge');
  const f = new Fleet({ ...opts, cellRecomputeM: 50 });
  const s = f.add('r');
  const west = offset(boundary, 0, -30);
  t.equal(f.applyFix(s, west.lat, west.lng, T0, 1, T0), FixOutcome.AcceptedCellChanged);
  t.equal(f.cell(s), c0);
  t.equal(f.counters().cellLookups, 1);

  const over = offset(boundary, 0, 10);
  const cellOver = latLngToCell(over.lat, over.lng, 8);
  t.not(cellOver, c0, 'this point is in the next cell');
  t.equal(f.applyFix(s, over.lat, over.lng, T0 + 10_000, 2, T0 + 10_000), FixOutcome.Accepted, '40 m from the last computation: no look-up');
  t.equal(f.cell(s), c0, 'the cell lags by design');
  t.equal(f.counters().cellLookups, 1);

  const further = offset(boundary, 0, 25);
  t.equal(f.applyFix(s, further.lat, further.lng, T0 + 20_000, 3, T0 + 20_000), FixOutcome.AcceptedCellChanged, '55 m: looked up, changed');
  t.equal(f.cell(s), latLngToCell(further.lat, further.lng, 8));
  t.equal(f.counters().cellLookups, 2);

  const back = offset(further, 0, 60);
  const sameCell = latLngToCell(back.lat, back.lng, 8) === f.cell(s);
  const outcome = f.applyFix(s, back.lat, back.lng, T0 + 30_000, 4, T0 + 30_000);
  t.equal(f.counters().cellLookups, 3, 'moved past the threshold again');
  t.equal(outcome, sameCell ? FixOutcome.Accepted : FixOutcome.AcceptedCellChanged, 'a look-up that finds the same cell reports no change');
});

t.test('a rider driving 10 m/s at 1 Hz looks its cell up about once per threshold', async (t) => {
  const f = new Fleet(opts);
  t.equal(f.cellRecomputeM, CELL_RECOMPUTE_FRACTION * edgeLengthM(8), 'default threshold');
  const s = f.add('r');
  let changes = 0;
  let refused = 0;
  for (let i = 0; i < 1_000; i++) {
    const p = offset(BLR, i * 10, 0);
    const o = f.applyFix(s, p.lat, p.lng, T0 + i * 1_000, i, T0 + i * 1_000);
    if (!isAccepted(o)) refused++;
    if (o === FixOutcome.AcceptedCellChanged) changes++;
  }
  t.equal(refused, 0, 'every fix accepted');
  const lookups = f.counters().cellLookups;
  const perThreshold = 10_000 / f.cellRecomputeM;
  t.ok(lookups >= perThreshold * 0.8 && lookups <= perThreshold + 2, `${lookups} look-ups for 10 km`);
  t.ok(changes >= 10 && changes < lookups, `${changes} cell changes`);
  t.equal(f.cell(s), latLngToCell(...([offset(BLR, 9_990, 0).lat, offset(BLR, 9_990, 0).lng] as [number, number]), 8));
});

t.test('distance accumulates over accepted fixes only and is taken once', async (t) => {
  const f = new Fleet(opts);
  const s = f.add('r');
  let want = 0;
  let prev = BLR;
  f.applyFix(s, BLR.lat, BLR.lng, T0, 0, T0);
  for (let i = 1; i <= 20; i++) {
    const p = offset(BLR, i * 8, i * 3);
    want += haversineM(prev.lat, prev.lng, p.lat, p.lng);
    prev = p;
    f.applyFix(s, p.lat, p.lng, T0 + i * 1_000, i, T0 + i * 1_000);
    // Noise between the real fixes: stale, teleport, NaN. None may add distance.
    f.applyFix(s, BLR.lat, BLR.lng, T0, i, T0 + i * 1_000);
    f.applyFix(s, BLR.lat + 1, BLR.lng, T0 + i * 1_000 + 1, i + 1_000, T0 + i * 1_000);
    f.applyFix(s, NaN, BLR.lng, T0 + i * 1_000 + 2, i + 2_000, T0 + i * 1_000);
  }
  const got = f.takeDistance(s);
  t.ok(Math.abs(got - want) < 1e-6, `${got} vs ${want}`);
  t.ok(got > 170 && got < 180, 'about 20 × 8.5 m');
  t.equal(f.takeDistance(s), 0, 'zeroed by the take');
  const c = f.counters();
  t.equal(c.accepted, 21);
  t.equal(c.stale, 20);
  t.same(c.rejected, { nan: 20, outOfRange: 0, teleport: 20, future: 0 });
});

t.test('place sets a position without checks or distance, and validates it', async (t) => {
  const f = new Fleet(opts);
  const s = f.place('r', BLR.lat, BLR.lng, T0, -1);
  t.equal(f.slotOf('r'), s, 'adds the rider');
  t.ok(f.hasPosition(s));
  t.equal(f.cell(s), latLngToCell(BLR.lat, BLR.lng, 8));
  t.equal(f.place('r', 40, -70, T0, -1), s, 'a jump across the world: no teleport check');
  t.equal(f.cell(s), latLngToCell(40, -70, 8), 'cell always recomputed');
  t.equal(f.takeDistance(s), 0);
  t.equal(f.applyFix(s, 40, -70, T0 - 1, 0, T0), FixOutcome.Stale, 'fixes older than the placement are stale');
  t.ok(isAccepted(f.applyFix(s, 40, -70, T0 + 1, 0, T0 + 1)), 'seq -1 lets the phone start at 0');
  t.throws(() => f.place('r', NaN, 0, T0, 1), RangeError);
  t.throws(() => f.place('r', 91, 0, T0, 1), RangeError);
  t.throws(() => f.place('x', 0, 0, Infinity, 1), RangeError);
  t.equal(f.slotOf('x'), -1, 'a refused placement adds nobody');
});

t.test('export / import round-trips through JSON between two fleets', async (t) => {
  const a = new Fleet(opts);
  const s = a.add('r');
  a.applyFix(s, BLR.lat, BLR.lng, T0, 5, T0);
  const p = offset(BLR, 30, 40);
  a.applyFix(s, p.lat, p.lng, T0 + 5_000, 6, T0 + 5_000);
  const rec = a.export('r')!;
  t.same(rec, { riderId: 'r', hasPosition: true, lat: p.lat, lng: p.lng, ts: T0 + 5_000, seq: 6, distanceM: a.takeDistance(s) });
  a.remove('r');

  const b = new Fleet({ ...opts, initialCapacity: 1 });
  b.add('other');
  const moved: FleetRecord = JSON.parse(JSON.stringify(rec));
  const bs = b.import(moved);
  t.equal(b.slotOf('r'), bs);
  t.equal(b.lat(bs), p.lat);
  t.equal(b.lng(bs), p.lng);
  t.equal(b.ts(bs), T0 + 5_000);
  t.equal(b.seq(bs), 6);
  t.equal(b.cell(bs), latLngToCell(p.lat, p.lng, 8), 'cell recomputed on arrival');
  t.same(b.export('r'), rec, 'export of the import is the same record');
  t.equal(b.applyFix(bs, p.lat, p.lng, T0 + 6_000, 6, T0 + 6_000), FixOutcome.Stale, 'dedupe survives the hand-off');
  const q = offset(p, 10, 0);
  t.equal(b.applyFix(bs, q.lat, q.lng, T0 + 6_000, 7, T0 + 6_000), FixOutcome.Accepted, 'teleport check continues from the handed-off fix');
  t.ok(Math.abs(b.takeDistance(bs) - (rec.distanceM + haversineM(p.lat, p.lng, q.lat, q.lng))) < 1e-9, 'distance carried over');

  const idle = new Fleet(opts);
  idle.add('idle');
  const none = idle.export('idle')!;
  t.same(JSON.parse(JSON.stringify(none)), none, 'JSON-safe without a position');
  t.equal(none.hasPosition, false);
  const c = new Fleet(opts);
  const cs = c.import(none);
  t.notOk(c.hasPosition(cs));
  t.equal(c.cell(cs), '');
  t.equal(idle.export('nobody'), null);

  t.throws(() => c.import({ ...rec, lat: 200 }), RangeError);
  t.throws(() => c.import({ ...rec, distanceM: -1 }), RangeError);
});

t.test('fixRejectReason maps rejections to wire reasons', async (t) => {
  t.equal(fixRejectReason(FixOutcome.RejectedNaN), 'nan');
  t.equal(fixRejectReason(FixOutcome.RejectedRange), 'outOfRange');
  t.equal(fixRejectReason(FixOutcome.RejectedTeleport), 'teleport');
  t.equal(fixRejectReason(FixOutcome.RejectedFuture), 'future');
  t.throws(() => fixRejectReason(FixOutcome.Accepted), RangeError);
  t.throws(() => fixRejectReason(FixOutcome.AcceptedCellChanged), RangeError);
  t.throws(() => fixRejectReason(FixOutcome.Stale), RangeError);
  t.ok(isAccepted(FixOutcome.Accepted) && isAccepted(FixOutcome.AcceptedCellChanged));
  t.notOk(isAccepted(FixOutcome.Stale) || isAccepted(FixOutcome.RejectedTeleport));
});

t.test('options are validated', async (t) => {
  t.throws(() => new Fleet({ ...opts, maxSpeedMps: -1 }), RangeError);
  t.throws(() => new Fleet({ ...opts, cellRecomputeM: NaN }), RangeError);
  t.throws(() => new Fleet({ ...opts, indexRes: 16 }), RangeError);
  t.throws(() => new Fleet({ ...opts, indexRes: 16, cellRecomputeM: 10 }), RangeError, 'even with an explicit threshold');
  t.throws(() => new Fleet({ ...opts, initialCapacity: 0 }), RangeError);
});

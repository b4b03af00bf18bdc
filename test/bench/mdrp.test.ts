// MDRP replay parts: the instance loader, the plane projection and the measures, on a 30-order excerpt of a real instance.
import t from 'tap';
import type { Test } from 'tap';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_ORIGIN, EARTH_RADIUS_M, loadInstance, MdrpFormatError, PlaneProjection } from '../../bench/mdrp/instance.ts';
import { computeMetrics, quantile } from '../../bench/mdrp/metrics.ts';
import type { CourierRecord, OrderRecord } from '../../bench/mdrp/metrics.ts';

const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'mdrp-excerpt');

/** A scratch copy of the fixture with one file rewritten by `edit`. */
function brokenCopy(t: Test, file: string, edit: (text: string) => string): string {
  const dir = mkdtempSync(join(tmpdir(), 'mdrp-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(FIXTURE, dir, { recursive: true });
  const path = join(dir, file);
  writeFileSync(path, edit(readFileSync(path, 'utf8')));
  return dir;
}

/** Replaces the n-th line (1-based) of a text. */
function withLine(text: string, n: number, replace: (line: string) => string): string {
  const lines = text.split('\n');
  lines[n - 1] = replace(lines[n - 1]);
  return lines.join('\n');
}

const RAD = Math.PI / 180;
function sphereM(a: { lat: number; lng: number }, b: { lat: number; lng: number }): number {
  const s1 = Math.sin(((b.lat - a.lat) * RAD) / 2);
  const s2 = Math.sin(((b.lng - a.lng) * RAD) / 2);
  const h = s1 * s1 + Math.cos(a.lat * RAD) * Math.cos(b.lat * RAD) * s2 * s2;
  return 2 * EARTH_RADIUS_M * Math.asin(Math.sqrt(h));
}

t.test('the loader reads the excerpt by column name', async (t) => {
  const inst = await loadInstance(FIXTURE);
  t.equal(inst.name, 'mdrp-excerpt');
  t.equal(inst.orders.length, 30);
  t.equal(inst.restaurants.length, 22);
  t.equal(inst.couriers.length, 25);
  t.same(inst.params, {
    metersPerMinute: 320,
    pickupServiceMin: 4,
    dropoffServiceMin: 4,
    targetClickToDoorMin: 40,
    maxClickToDoorMin: 90,
    payPerOrder: 10,
    guaranteedPayPerHour: 15,
  });
  // orders.txt line "o306	3960	8075	4	r99	11"
  const o306 = inst.orders.find((o) => o.id === 'o306')!;
  t.match(o306, { id: 'o306', x: 3960, y: 8075, placementMin: 4, restaurantId: 'r99', readyMin: 11 });
  // couriers.txt line "c22	9556	7777	90	293"
  t.match(
    inst.couriers.find((c) => c.id === 'c22'),
    { x: 9556, y: 7777, onMin: 90, offMin: 293 },
  );
  t.same(inst.restaurantById.get('r99'), inst.restaurants.find((r) => r.id === 'r99'));
  for (const o of inst.orders) t.ok(inst.restaurantById.has(o.restaurantId), `restaurant of ${o.id} is loaded`);
  // Each point is projected with the instance's projection, both forms kept.
  const back = inst.projection.toPlane(o306.latLng);
  t.ok(Math.abs(back.x - 3960) < 1e-6 && Math.abs(back.y - 8075) < 1e-6, 'latLng projects back to x, y');
  // The plane is centred on the data, so the data sits around the origin city.
  const lats = [...inst.orders, ...inst.restaurants, ...inst.couriers].map((p) => p.latLng.lat);
  t.ok(Math.min(...lats) < DEFAULT_ORIGIN.lat && Math.max(...lats) > DEFAULT_ORIGIN.lat, 'points lie on both sides of the origin');
});

t.test('columns are found by name, not position', async (t) => {
  // Same orders with the columns reversed: the parse must not change.
  const dir = brokenCopy(t, 'orders.txt', (text) =>
    text
      .split('\n')
      .map((l) => (l.length === 0 ? l : l.split('\t').reverse().join('\t')))
      .join('\n'),
  );
  const [a, b] = await Promise.all([loadInstance(FIXTURE), loadInstance(dir)]);
  t.same(
    b.orders.map(({ id, x, y, placementMin, restaurantId, readyMin }) => ({ id, x, y, placementMin, restaurantId, readyMin })),
    a.orders.map(({ id, x, y, placementMin, restaurantId, readyMin }) => ({ id, x, y, placementMin, restaurantId, readyMin })),
  );
});

t.test('a malformed copy is rejected naming the file and the line', async (t) => {
  const cases: Array<{ name: string; file: string; edit: (s: string) => string; line: number; message: RegExp }> = [
    {
      name: 'a placement time that is not a number',
      file: 'orders.txt',
      edit: (s) => withLine(s, 5, (l) => l.split('\t').map((f, i) => (i === 3 ? 'abc' : f)).join('\t')),
      line: 5,
      message: /orders\.txt:5: column placement_time: 'abc' is not a number$/,
    },
    {
      name: 'a row with a field missing',
      file: 'couriers.txt',
      edit: (s) => withLine(s, 3, (l) => l.split('\t').slice(0, 4).join('\t')),
      line: 3,
      message: /couriers\.txt:3: expected 5 fields \(courier, x, y, on_time, off_time\), found 4$/,
    },
    {
      name: 'a renamed column',
      file: 'couriers.txt',
      edit: (s) => s.replace('off_time', 'shift_end'),
      line: 1,
      message: /couriers\.txt:1: missing column off_time \(header has: courier, x, y, on_time, shift_end\)$/,
    },
    {
      name: 'an order of an unknown restaurant',
      file: 'orders.txt',
      edit: (s) => withLine(s, 2, (l) => l.replace(/\tr\d+\t/, '\tr9999\t')),
      line: 2,
      message: /orders\.txt:2: restaurant r9999 is not in restaurants\.txt$/,
    },
    {
      name: 'a shift that ends before it starts',
      file: 'couriers.txt',
      edit: (s) => withLine(s, 4, (l) => l.replace(/\t(\d+)\t(\d+)$/, '\t$2\t$1')),
      line: 4,
      message: /couriers\.txt:4: off_time \d+ is not after on_time \d+$/,
    },
    {
      name: 'a repeated id',
      file: 'restaurants.txt',
      edit: (s) => withLine(s, 3, (l) => l.replace(/^r\d+/, s.split('\n')[1].split('\t')[0])),
      line: 3,
      message: /restaurants\.txt:3: id r\d+ repeats \(first on line 2\)$/,
    },
    {
      name: 'two rows of parameters',
      file: 'instance_parameters.txt',
      edit: (s) => s.trimEnd() + '\n' + s.trimEnd().split('\n')[1] + '\n',
      line: 3,
      message: /instance_parameters\.txt:3: expected exactly one row of parameters, found 2$/,
    },
  ];
  for (const c of cases) {
    const dir = brokenCopy(t, c.file, c.edit);
    const err = await loadInstance(dir).then(
      () => null,
      (e: unknown) => e,
    );
    t.ok(err instanceof MdrpFormatError, `${c.name}: MdrpFormatError`);
    const e = err as MdrpFormatError;
    t.equal(e.file, join(dir, c.file), `${c.name}: names the file`);
    t.equal(e.line, c.line, `${c.name}: names the line`);
    t.match(e.message, c.message, `${c.name}: says what is wrong`);
  }
});

t.test('a missing file is named', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mdrp-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(FIXTURE, dir, { recursive: true });
  rmSync(join(dir, 'couriers.txt'));
  await t.rejects(loadInstance(dir), { name: 'MdrpFormatError', line: 0, message: `${join(dir, 'couriers.txt')}: cannot read the file (ENOENT)` });
});

t.test('projection: metres to lat/lng and back within 1 m over 20 km', async (t) => {
  const p = new PlaneProjection(DEFAULT_ORIGIN, 12_000, 7_000);
  let worstRoundTrip = 0;
  let worstRel = 0;
  for (let x = -10_000; x <= 10_000; x += 2_500) {
    for (let y = -10_000; y <= 10_000; y += 2_500) {
      const px = 12_000 + x;
      const py = 7_000 + y;
      const back = p.toPlane(p.toLatLng(px, py));
      worstRoundTrip = Math.max(worstRoundTrip, Math.hypot(back.x - px, back.y - py));
      // Distances of 20 km seen on the sphere: a fraction of a percent off at most.
      for (const [dx, dy] of [
        [20_000, 0],
        [0, 20_000],
        [14_142, 14_142],
      ]) {
        const d = sphereM(p.toLatLng(px, py), p.toLatLng(px + dx, py + dy));
        worstRel = Math.max(worstRel, Math.abs(d - Math.hypot(dx, dy)) / Math.hypot(dx, dy));
      }
    }
  }
  t.ok(worstRoundTrip < 1, `round trip error ${worstRoundTrip} m < 1 m`);
  t.ok(worstRel < 0.001, `distance error ${(worstRel * 100).toFixed(3)} % < 0.1 %`);
  // Along the axes through the origin the scale is right to within a metre over 20 km.
  for (const [x, y] of [
    [32_000, 7_000],
    [-8_000, 7_000],
    [12_000, 27_000],
    [12_000, -13_000],
  ]) {
    const d = sphereM(p.origin, p.toLatLng(x, y));
    t.ok(Math.abs(d - 20_000) < 1, `origin to (${x}, ${y}): ${d.toFixed(3)} m`);
  }
  t.same(p.toLatLng(12_000, 7_000), DEFAULT_ORIGIN, 'the plane origin maps to the origin');
  t.throws(() => new PlaneProjection({ lat: 89, lng: 0 }), RangeError, 'no projection near a pole');
});

t.test('metrics on hand-computed records', async (t) => {
  // τ = 40. Click-to-door = delivery − placement; ready-to-pickup = pickup − ready; ready-to-door = delivery − ready.
  const orders: OrderRecord[] = [
    { orderId: 'a', placementMin: 0, readyMin: 10, pickupMin: 15, deliveryMin: 30 }, // ctd 30, r2p 5,  r2d 20, overage 0
    { orderId: 'b', placementMin: 5, readyMin: 20, pickupMin: 20, deliveryMin: 50 }, // ctd 45, r2p 0,  r2d 30, overage 5
    { orderId: 'c', placementMin: 10, readyMin: 12, pickupMin: 30, deliveryMin: 71 }, // ctd 61, r2p 18, r2d 59, overage 21
    { orderId: 'd', placementMin: 20, readyMin: 26, pickupMin: 29, deliveryMin: 60 }, // ctd 40 (= τ, not over), r2p 3, r2d 34
    { orderId: 'e', placementMin: 30, readyMin: 35, pickupMin: 41, deliveryMin: 56 }, // ctd 26, r2p 6,  r2d 21, overage 0
    { orderId: 'f', placementMin: 40, readyMin: 50, pickupMin: 63, deliveryMin: 90 }, // ctd 50, r2p 13, r2d 40, overage 10
    { orderId: 'g', placementMin: 50, readyMin: 60, pickupMin: 70, deliveryMin: null }, // picked up, never delivered: left out
    { orderId: 'h', placementMin: 60, readyMin: 70, pickupMin: null, deliveryMin: null }, // never served
  ];
  // p1 = 10 per order, p2 = 15 per hour.
  const couriers: CourierRecord[] = [
    { courierId: 'x', onMin: 0, offMin: 120, busyMin: 60, deliveries: 3 }, // util 0.5,  1.5/h, max(30, 30) = 30, not below
    { courierId: 'y', onMin: 60, offMin: 300, busyMin: 60, deliveries: 2 }, // util 0.25, 0.5/h, max(20, 60) = 60, below
    { courierId: 'z', onMin: 0, offMin: 60, busyMin: 45, deliveries: 1 }, // util 0.75, 1/h,   max(10, 15) = 15, below
  ];
  const m = computeMetrics(orders, couriers, { targetClickToDoorMin: 40, payPerOrder: 10, guaranteedPayPerHour: 15 });
  t.same(m, {
    ordersPlaced: 8,
    ordersDelivered: 6,
    clickToDoorMeanMin: 42, // (30 + 45 + 61 + 40 + 26 + 50) / 6 = 252 / 6
    clickToDoorP90Min: 55.5, // sorted 26 30 40 45 50 61, rank 5 × 0.9 = 4.5: (50 + 61) / 2
    overTarget: 3, // 45, 61, 50
    readyToPickupMeanMin: 7.5, // 45 / 6
    readyToDoorMeanMin: 34, // 204 / 6
    courierUtilisation: 0.5, // (0.5 + 0.25 + 0.75) / 3
    ordersPerCourierHour: 1, // (1.5 + 0.5 + 1) / 3
    clickToDoorOverageMeanMin: 6, // (0 + 5 + 21 + 0 + 0 + 10) / 6
    totalCompensation: 105, // 30 + 60 + 15
    guaranteedMinimumShare: 2 / 3, // y and z earn less per order than the guarantee
  });
});

t.test('metrics of an empty day are null, not NaN', async (t) => {
  const m = computeMetrics([], [], { targetClickToDoorMin: 40, payPerOrder: 10, guaranteedPayPerHour: 15 });
  t.same(m, {
    ordersPlaced: 0,
    ordersDelivered: 0,
    clickToDoorMeanMin: null,
    clickToDoorP90Min: null,
    overTarget: 0,
    readyToPickupMeanMin: null,
    readyToDoorMeanMin: null,
    courierUtilisation: null,
    ordersPerCourierHour: null,
    clickToDoorOverageMeanMin: null,
    totalCompensation: 0,
    guaranteedMinimumShare: null,
  });
  t.equal(JSON.parse(JSON.stringify(m)).clickToDoorMeanMin, null, 'serialises as null');
});

t.test('metrics refuse inconsistent records', async (t) => {
  const params = { targetClickToDoorMin: 40, payPerOrder: 10, guaranteedPayPerHour: 15 };
  t.throws(
    () => computeMetrics([{ orderId: 'q', placementMin: 0, readyMin: 5, pickupMin: null, deliveryMin: 30 }], [], params),
    new RangeError('order q: delivered without a pickup time'),
  );
  t.throws(
    () => computeMetrics([], [{ courierId: 'k', onMin: 60, offMin: 60, busyMin: 0, deliveries: 0 }], params),
    new RangeError('courier k: duty period must be positive, got 60..60'),
  );
});

t.test('quantiles interpolate between ranks like the MDRP evaluator (pandas)', async (t) => {
  t.equal(quantile([10, 0, 20], 0.75), 15, 'rank 1.5 of 0 10 20');
  t.equal(quantile([0, 10], 0.25), 2.5);
  t.equal(quantile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 0.9), 10, 'rank 9 exactly');
  t.equal(quantile([7], 0.9), 7);
  t.throws(() => quantile([], 0.9), RangeError);
  t.throws(() => quantile([1], 1.5), RangeError);
});

t.test('replaying the excerpt through the engine serves every order by the MDRP rules', async (t) => {
  // Loaded here, not at the top: the replay pulls in the engine, and the loader and metrics tests above must not depend on it.
  const { replayInstance } = await import('../../bench/mdrp/replay.ts');
  const { engineFactoryFor } = await import('../../bench/replay.ts');
  const inst = await loadInstance(FIXTURE);
  const { pickupServiceMin: sr, dropoffServiceMin: so, metersPerMinute } = inst.params;
  const factory = await engineFactoryFor(inst, { shards: 1, threads: false });
  for (const matcher of ['batch', 'greedy'] as const) {
    let orders: readonly OrderRecord[] = [];
    let couriers: readonly CourierRecord[] = [];
    const m = await replayInstance(inst, factory, {
      matcher,
      onRecords: (o, c) => {
        orders = o;
        couriers = c;
      },
    });
    t.equal(m.ordersPlaced, 30, `${matcher}: all placed`);
    t.equal(m.ordersDelivered, 30, `${matcher}: all delivered`);
    t.match(
      m.replay,
      { matcher, ordersUnfinished: 0, couriersStillOnline: 0, pickupsAfterShiftEnd: 0, fixesRejected: 0, offersAccepted: 30 },
      `${matcher}: every courier finished and went offline, no fix refused`,
    );
    t.ok(m.replay.fixesSent > 0, `${matcher}: couriers reported GPS`);
    // The measures are exactly those of the records handed out.
    const { replay: _diagnostics, ...measures } = m;
    t.same(measures, computeMetrics(orders, couriers, { targetClickToDoorMin: 40, payPerOrder: 10, guaranteedPayPerHour: 15 }), `${matcher}: measures match records`);
    t.equal(
      couriers.reduce((n, c) => n + c.deliveries, 0),
      30,
      `${matcher}: courier deliveries add up`,
    );
    for (const o of orders) {
      const order = inst.orders.find((x) => x.id === o.orderId)!;
      const r = inst.restaurantById.get(order.restaurantId)!;
      const ride = Math.ceil(Math.hypot(order.x - r.x, order.y - r.y) / metersPerMinute);
      const pickup = o.pickupMin!;
      const dropoff = o.deliveryMin!;
      // Minutes come from epoch milliseconds: allow for the last bits of the division.
      const eps = 1e-9;
      // Pickup never before the food is ready; the drop-off at least half a pickup service, the ride and half a drop-off service later.
      t.ok(pickup >= o.readyMin - eps, `${matcher} ${o.orderId}: picked up at ${pickup}, ready at ${o.readyMin}`);
      t.ok(dropoff - pickup >= sr / 2 + ride + so / 2 - eps, `${matcher} ${o.orderId}: ${dropoff - pickup} min from pickup to door, ride ${ride}`);
      // Rides are whole minutes and services whole or half: pickup and drop-off happen at exact moments, not at the next GPS step.
      t.ok(Math.abs((dropoff - pickup) * 2 - Math.round((dropoff - pickup) * 2)) < eps, `${matcher} ${o.orderId}: pickup to door ${dropoff - pickup} is a multiple of half a minute`);
    }
    for (const c of couriers) {
      t.ok(c.busyMin >= c.deliveries * so, `${matcher} ${c.courierId}: busy ${c.busyMin} min covers its drop-off services`);
    }
  }
});

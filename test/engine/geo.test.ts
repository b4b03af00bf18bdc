// engine/geo: haversine against known distances and h3, memoised cell look-ups, shard ownership at a real shard edge.
import t from 'tap';
import {
  cellToLatLng,
  cellToParent,
  getHexagonEdgeLengthAvg,
  getPentagons,
  gridDisk,
  gridDiskDistances,
  greatCircleDistance,
  latLngToCell,
  UNITS,
} from 'h3-js';
import { CellGeometry, EARTH_RADIUS_M, PointCells, ShardMap, cellOf, edgeLengthM, haversineM, shardOfCell } from '../../engine/geo/index.ts';

const BLR = { lat: 12.9716, lng: 77.5946 };

t.test('haversine matches known distances', async (t) => {
  t.equal(haversineM(BLR.lat, BLR.lng, BLR.lat, BLR.lng), 0, 'same point');
  const degree = (EARTH_RADIUS_M * Math.PI) / 180;
  t.ok(Math.abs(haversineM(10, 20, 11, 20) - degree) < 1e-6, 'one degree of latitude is R·π/180');
  t.ok(Math.abs(haversineM(0, 20, 0, 21) - degree) < 1e-6, 'one degree of longitude on the equator too');
  t.ok(Math.abs(haversineM(0, 0, 0, 180) - Math.PI * EARTH_RADIUS_M) < 1e-3, 'antipodes: half the circumference, no NaN');
  t.ok(Math.abs(haversineM(0, 179.9995, 0, -179.9995) - degree * 0.001) < 1e-6, 'across the antimeridian is short');
  // Rosetta Code's reference: Nashville BNA to LAX is 2887.2599506 km on a 6372.8 km sphere.
  const bnaLax = haversineM(36.12, -86.67, 33.94, -118.4) * (6_372_800 / EARTH_RADIUS_M);
  t.ok(Math.abs(bnaLax - 2_887_259.9506) < 0.01, `BNA-LAX ${bnaLax}`);
  t.equal(haversineM(1, 2, 3, 4), haversineM(3, 4, 1, 2), 'symmetric');
  t.ok(Number.isNaN(haversineM(NaN, 0, 0, 0)), 'NaN in, NaN out');
});

t.test('haversine agrees with h3 greatCircleDistance (same radius)', async (t) => {
  let worst = 0;
  let seed = 7;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  for (let i = 0; i < 1000; i++) {
    const a = [rand() * 170 - 85, rand() * 360 - 180];
    // Half the pairs are a few hundred metres apart, the scale fixes are compared at.
    const b = i % 2 ? [a[0] + (rand() - 0.5) * 0.01, a[1] + (rand() - 0.5) * 0.01] : [rand() * 170 - 85, rand() * 360 - 180];
    const ours = haversineM(a[0], a[1], b[0], b[1]);
    const h3 = greatCircleDistance(a, b, UNITS.m);
    worst = Math.max(worst, Math.abs(ours - h3) / Math.max(h3, 1));
  }
  t.ok(worst < 1e-9, `worst relative difference ${worst}`);
});

t.test('shardOfCell is FNV-1a, so stable across processes', async (t) => {
  // Published FNV-1a 32-bit test vectors; a modulus of 2^32 exposes the raw hash.
  t.equal(shardOfCell('', 2 ** 32), 0x811c9dc5);
  t.equal(shardOfCell('a', 2 ** 32), 0xe40c292c);
  t.equal(shardOfCell('foobar', 2 ** 32), 0xbf9cf968);
  const cell = latLngToCell(BLR.lat, BLR.lng, 5);
  t.equal(shardOfCell(cell, 8), shardOfCell(cell, 8));
  t.equal(shardOfCell(cell, 1), 0);
  t.throws(() => shardOfCell(cell, 0), RangeError);
  t.throws(() => shardOfCell(cell, 1.5), RangeError);
});

t.test('shard-resolution cells spread over the shards', async (t) => {
  const cells = gridDisk(latLngToCell(BLR.lat, BLR.lng, 5), 10);
  const counts = [0, 0, 0, 0];
  for (const c of cells) counts[shardOfCell(c, 4)]++;
  for (const n of counts) t.ok(n > cells.length / 8 && n < cells.length / 2, `shard share ${n}/${cells.length}`);
});

t.test('ShardMap.shardOf hashes the shard-resolution ancestor', async (t) => {
  const map = new ShardMap({ shardRes: 5, shardCount: 4, indexRes: 8 });
  for (const c of gridDisk(latLngToCell(BLR.lat, BLR.lng, 8), 20)) {
    t.equal(map.shardOf(c), shardOfCell(cellToParent(c, 5), 4));
  }
  const res5 = latLngToCell(BLR.lat, BLR.lng, 5);
  t.equal(map.shardOf(res5), shardOfCell(res5, 4), 'a shard-resolution cell is its own ancestor');
  t.equal(map.shardOfLatLng(BLR.lat, BLR.lng), map.shardOf(latLngToCell(BLR.lat, BLR.lng, 8)));
  t.throws(() => map.shardOf(latLngToCell(BLR.lat, BLR.lng, 4)), RangeError, 'coarser than shardRes');
  const again = new ShardMap({ shardRes: 5, shardCount: 4, indexRes: 8 });
  t.equal(again.shardOf(latLngToCell(BLR.lat, BLR.lng, 8)), map.shardOf(latLngToCell(BLR.lat, BLR.lng, 8)), 'a second map agrees');
  t.throws(() => new ShardMap({ shardRes: 9, shardCount: 2, indexRes: 8 }), RangeError);
  t.throws(() => new ShardMap({ shardRes: 5, shardCount: 0, indexRes: 8 }), RangeError);
  t.throws(() => new ShardMap({ shardRes: 5, shardCount: 2, indexRes: 16 }), RangeError);
});

/** Walks east in index-resolution cells until ownership changes: the last cell before and the first after. */
function shardEdge(map: ShardMap): { a: string; b: string } {
  let prev = latLngToCell(BLR.lat, BLR.lng, map.indexRes);
  for (let i = 1; i < 20_000; i++) {
    const c = latLngToCell(BLR.lat, BLR.lng + i * 0.001, map.indexRes);
    if (map.shardOf(c) !== map.shardOf(prev)) return { a: prev, b: c };
    prev = c;
  }
  throw new Error('no shard edge within 20 degrees');
}

t.test('shardsNear at a real shard edge', async (t) => {
  const map = new ShardMap({ shardRes: 5, shardCount: 2, indexRes: 8 });
  const { a, b } = shardEdge(map);
  const sa = map.shardOf(a);
  const sb = map.shardOf(b);
  t.not(sa, sb);
  t.same(map.shardsNear(a, 0), [sa], 'k = 0: only its own shard');
  t.same(map.shardsNear(a, 2), [sa, sb].sort(), 'within two rings the other shard is reached');
  t.same(map.shardsNear(b, 2), [sa, sb].sort(), 'and from the other side');
  t.equal(map.shardsNear(a, 2), map.shardsNear(a, 2), 'memoised: the same frozen array');
  t.ok(Object.isFrozen(map.shardsNear(a, 2)));

  // Against a direct computation over the disk, for cells around the edge and several radii.
  for (const c of gridDisk(a, 6)) {
    for (const k of [0, 1, 3, 12]) {
      const want = [...new Set(gridDisk(c, k).map((d) => shardOfCell(cellToParent(d, 5), 2)))].sort();
      t.same(map.shardsNear(c, k), want, `${c} k=${k}`);
    }
  }

  // Deep inside a shard cell nothing else is near.
  const inner = cellToParent(a, 5);
  const centreChild = latLngToCell(...(cellToLatLng(inner) as [number, number]), 8);
  t.same(map.shardsNear(centreChild, 2), [map.shardOf(centreChild)]);

  const single = new ShardMap({ shardRes: 5, shardCount: 1, indexRes: 8 });
  t.same(single.shardsNear(a, 12), [0]);
  t.throws(() => map.shardsNear(a, -1), RangeError);
});

t.test('CellGeometry memoises pure look-ups', async (t) => {
  const g = new CellGeometry();
  const cell = latLngToCell(BLR.lat, BLR.lng, 8);
  t.equal(g.parent(cell, 5), cellToParent(cell, 5));
  t.equal(g.parent(cell, 8), cell, 'its own resolution gives the cell');
  t.equal(g.cached().parents, 2);
  g.parent(cell, 5);
  t.equal(g.cached().parents, 2, 'a hit adds nothing');
  t.throws(() => g.parent(cell, 16), RangeError);

  const d = g.disk(cell, 3);
  t.same([...d].sort(), gridDisk(cell, 3).sort());
  t.equal(g.disk(cell, 3), d, 'same array on a hit');
  t.ok(Object.isFrozen(d), 'shared, so frozen');
  t.equal(g.cached().disks, 37, 'weighted by cells held');

  const rings = gridDiskDistances(cell, 4);
  for (let k = 0; k <= 4; k++) t.same([...g.ring(cell, k)].sort(), [...rings[k]].sort(), `ring ${k}`);
  t.same(g.ring(cell, 0), [cell]);
  t.throws(() => g.ring(cell, -1), RangeError);

  const pentagon = getPentagons(8)[0];
  const pr = gridDiskDistances(pentagon, 3);
  for (let k = 0; k <= 3; k++) t.same([...g.ring(pentagon, k)].sort(), [...pr[k]].sort(), `pentagon ring ${k}`);

  const [lat, lng] = cellToLatLng(cell);
  t.same(g.center(cell), { lat, lng });
  t.equal(g.center(cell), g.center(cell), 'same object on a hit');

  g.clear();
  t.same(g.cached(), { parents: 0, disks: 0, rings: 0, centers: 0 });
});

t.test('CellGeometry caches stay within their budget', async (t) => {
  const g = new CellGeometry({ cacheBudget: 50 });
  const cells = gridDisk(latLngToCell(BLR.lat, BLR.lng, 8), 10);
  for (const c of cells) {
    g.parent(c, 5);
    g.center(c);
    g.disk(c, 1);
    t.ok(g.cached().parents <= 50 && g.cached().centers <= 50 && g.cached().disks <= 50);
  }
  t.ok(g.cached().parents > 0, 'cleared, then refilled');
  t.equal(g.parent(cells[0], 5), cellToParent(cells[0], 5), 'answers stay right after clearing');
});

t.test('cellOf and edgeLengthM', async (t) => {
  t.equal(cellOf(BLR.lat, BLR.lng, 8), latLngToCell(BLR.lat, BLR.lng, 8));
  t.equal(edgeLengthM(8), getHexagonEdgeLengthAvg(8, UNITS.m));
  t.ok(edgeLengthM(8) > 400 && edgeLengthM(8) < 600, 'res 8 edges are about half a kilometre');
  t.ok(edgeLengthM(5) > edgeLengthM(8));
  t.throws(() => edgeLengthM(16), RangeError);
});

t.test('PointCells answers what cellOf answers, for repeated points and past its bound', async (t) => {
  const memo = new PointCells(8, 50);
  const points = Array.from({ length: 120 }, (_, i) => ({ lat: 12.9 + (i % 70) * 0.003, lng: 77.5 + (i % 13) * 0.004 }));
  let same = 0;
  for (let round = 0; round < 3; round++) for (const p of points) if (memo.cellOf(p.lat, p.lng) === cellOf(p.lat, p.lng, 8)) same++;
  t.equal(same, 3 * points.length, 'every answer, first look or repeat, before and after it starts over');
  t.equal(new PointCells(5).cellOf(-33.86, 151.21), cellOf(-33.86, 151.21, 5), 'any resolution');
  t.throws(() => new PointCells(16), RangeError, 'resolution checked');
  t.throws(() => new PointCells(8, 0), RangeError, 'bound checked');
});

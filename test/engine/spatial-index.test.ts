// SpatialIndex: insert / move / remove, and ring search (nearest ring first, limit, accept, maxK) against brute force.
import t from 'tap';
import { getPentagons, gridDiskDistances, gridDistance, latLngToCell } from 'h3-js';
import { SpatialIndex } from '../../engine/shard/spatial-index.ts';
import { CellGeometry } from '../../engine/geo/index.ts';

const ORIGIN = latLngToCell(12.9716, 77.5946, 8);
const RINGS = gridDiskDistances(ORIGIN, 4);

t.test('set, move, remove', async (t) => {
  const idx = new SpatialIndex();
  const [a, b] = [RINGS[0][0], RINGS[1][0]];
  idx.set('r1', a);
  idx.set('r2', a);
  t.equal(idx.size, 2);
  t.equal(idx.cellCount, 1);
  t.ok(idx.has('r1'));
  t.equal(idx.cellOf('r1'), a);
  t.same([...idx.ridersIn(a)], ['r1', 'r2']);

  idx.set('r1', b);
  t.equal(idx.cellOf('r1'), b, 'moved');
  t.same([...idx.ridersIn(a)], ['r2']);
  t.same([...idx.ridersIn(b)], ['r1']);
  idx.set('r1', b);
  t.equal(idx.size, 2, 'setting the same cell again changes nothing');

  t.ok(idx.remove('r2'));
  t.notOk(idx.remove('r2'));
  t.notOk(idx.has('r2'));
  t.equal(idx.cellOf('r2'), undefined);
  t.equal(idx.ridersIn(a).size, 0);
  t.equal(idx.cellCount, 1, 'the emptied cell is dropped');
  idx.clear();
  t.equal(idx.size, 0);
  t.equal(idx.cellCount, 0);
});

t.test('search returns nearest rings first', async (t) => {
  const idx = new SpatialIndex();
  // Insert outer rings first, so insertion order cannot explain the result order.
  for (let k = 4; k >= 0; k--) idx.set(`ring${k}`, RINGS[k][RINGS[k].length - 1]);
  idx.set('ring2b', RINGS[2][0]);
  const got = idx.search(ORIGIN, { maxK: 4, limit: 100 });
  t.equal(got.length, 6);
  t.same(got.slice(0, 2), ['ring0', 'ring1']);
  t.same([...got.slice(2, 4)].sort(), ['ring2', 'ring2b']);
  t.same(got.slice(4), ['ring3', 'ring4']);
});

t.test('search respects limit, accept and maxK', async (t) => {
  const idx = new SpatialIndex();
  for (let i = 0; i < 3; i++) idx.set(`a${i}`, ORIGIN);
  idx.set('b0', RINGS[1][0]);
  idx.set('b1', RINGS[1][3]);
  idx.set('far', RINGS[3][2]);

  t.same(idx.search(ORIGIN, { maxK: 4, limit: 2 }), ['a0', 'a1'], 'stops inside the first ring');
  const four = idx.search(ORIGIN, { maxK: 4, limit: 4 });
  t.equal(four.length, 4);
  t.same(four.slice(0, 3), ['a0', 'a1', 'a2']);
  t.ok(four[3] === 'b0' || four[3] === 'b1');
  t.same(idx.search(ORIGIN, { maxK: 4, limit: 0 }), []);

  t.same(idx.search(ORIGIN, { maxK: 2, limit: 100 }).sort(), ['a0', 'a1', 'a2', 'b0', 'b1'], 'maxK 2 misses ring 3');
  t.same(idx.search(ORIGIN, { maxK: 3, limit: 100 }).includes('far'), true);
  t.same(idx.search(ORIGIN, { maxK: 0, limit: 100 }), ['a0', 'a1', 'a2']);
  t.same(idx.search(ORIGIN, { maxK: -1, limit: 100 }), []);

  const skipped: string[] = [];
  const got = idx.search(ORIGIN, {
    maxK: 4,
    limit: 3,
    accept: (id) => {
      if (id.startsWith('a') && id !== 'a2') {
        skipped.push(id);
        return false;
      }
      return true;
    },
  });
  t.same(skipped, ['a0', 'a1']);
  t.equal(got.length, 3, 'rejected riders do not count toward the limit');
  t.equal(got[0], 'a2');
  t.same(got.slice(1).sort(), ['b0', 'b1']);
});

t.test('search asks for no ring beyond what it needs', async (t) => {
  const g = new CellGeometry();
  const idx = new SpatialIndex(g);
  t.same(idx.search(ORIGIN, { maxK: 12, limit: 10 }), []);
  t.equal(g.cached().rings, 0, 'an empty index computes no rings');
  idx.set('only', RINGS[1][2]);
  t.same(idx.search(ORIGIN, { maxK: 12, limit: 10 }), ['only']);
  t.equal(g.cached().rings, 1 + 6, 'stopped after ring 1: every indexed rider was met');
});

t.test('search works next to a pentagon', async (t) => {
  const pentagon = getPentagons(8)[3];
  const rings = gridDiskDistances(pentagon, 3);
  const idx = new SpatialIndex();
  for (let k = 0; k <= 3; k++) for (const c of rings[k]) idx.set(`${k}:${c}`, c);
  const got = idx.search(pentagon, { maxK: 3, limit: 1_000 });
  t.equal(got.length, rings.flat().length);
  const ks = got.map((id) => Number(id.split(':')[0]));
  t.same(ks, [...ks].sort((a, b) => a - b), 'ring order');
});

t.test('randomised: search matches brute force by grid distance', async (t) => {
  let seed = 11;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const disk = gridDiskDistances(ORIGIN, 10).flat();
  const idx = new SpatialIndex(new CellGeometry());
  const where = new Map<string, string>();
  for (let i = 0; i < 600; i++) {
    const id = `r${Math.floor(rand() * 400)}`;
    if (rand() < 0.15) {
      idx.remove(id);
      where.delete(id);
    } else {
      const c = disk[Math.floor(rand() * disk.length)];
      idx.set(id, c);
      where.set(id, c);
    }
  }
  t.equal(idx.size, where.size);
  let bad = 0;
  for (let q = 0; q < 60; q++) {
    const origin = disk[Math.floor(rand() * 100)];
    const maxK = Math.floor(rand() * 8);
    const limit = 1 + Math.floor(rand() * 40);
    const accept = (id: string) => Number(id.slice(1)) % 3 !== 0;
    const got = idx.search(origin, { maxK, limit, accept });
    const dist = (id: string) => gridDistance(origin, where.get(id)!);
    const eligible = [...where.keys()].filter((id) => accept(id) && dist(id) <= maxK);
    const ds = got.map(dist);
    // Exactly min(limit, eligible) riders, all eligible, in ring order, and no one skipped from a nearer ring.
    const ok =
      got.length === Math.min(limit, eligible.length) &&
      got.every((id) => accept(id) && dist(id) <= maxK) &&
      ds.every((d, i) => i === 0 || ds[i - 1] <= d) &&
      eligible.filter((id) => dist(id) < (ds.at(-1) ?? 0)).every((id) => got.includes(id)) &&
      new Set(got).size === got.length;
    if (!ok) bad++;
  }
  t.equal(bad, 0);
});

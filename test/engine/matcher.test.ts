// The batch matcher against exhaustive search, a dense reference solver and hand-built cases.
import t from 'tap';
import type { Test } from 'tap';
import {
  DEFAULT_COST_WEIGHTS,
  HaversineRouter,
  assignmentCost,
  solveBatch,
  solveGreedy,
} from '../../engine/dispatch/index.ts';
import type { Assignment, MatchOptions, MatchOrder, MatchRider, TravelTimeRouter } from '../../engine/dispatch/index.ts';
import { DispatchError } from '../../engine/errors.ts';
import { mulberry32 as rng } from '../../bench/random.ts';

const NOW = 1_700_000_000_000;
const MIN = 60_000;


/**
 * Travel times from a table: rider r stands at lat = r, order o's store at lat = o,
 * so tests can dictate every edge exactly (NaN = unreachable).
 */
class TableRouter implements TravelTimeRouter {
  constructor(private readonly table: number[][]) {}
  travelTimeMs(fromLat: number, _fromLng: number, toLat: number): number {
    return this.table[fromLat][toLat];
  }
}

/** Orders and riders for a TableRouter: no wait (ready long ago) and no idle bonus, so cost = travel. */
function tableCase(table: number[][], candidates: string[][]): { orders: MatchOrder[]; riders: Map<string, MatchRider> } {
  const riders = new Map<string, MatchRider>();
  for (let r = 0; r < table.length; r++) riders.set(`r${r}`, { riderId: `r${r}`, lat: r, lng: 0, idleSince: NOW });
  const orders = candidates.map((c, o) => ({
    orderId: `o${o}`,
    pickupLat: o,
    pickupLng: 0,
    readyAt: NOW - MIN,
    createdAt: NOW - 10 * MIN + o, // o0 is the oldest
    candidates: c,
  }));
  return { orders, riders };
}

const total = (as: readonly Assignment[]) => as.reduce((s, a) => s + a.cost, 0);

/** Best (count, cost) over every assignment, by enumeration: the ground truth for small batches. */
function bruteForce(
  orders: readonly MatchOrder[],
  riders: ReadonlyMap<string, MatchRider>,
  options: MatchOptions,
): { count: number; cost: number } {
  const edges = orders.map((o) => {
    const list: { rider: string; cost: number }[] = [];
    for (const id of new Set(o.candidates)) {
      const r = riders.get(id);
      if (r === undefined) continue;
      const { cost } = assignmentCost(o, r, options);
      if (cost !== Infinity) list.push({ rider: id, cost });
    }
    return list;
  });
  let best = { count: -1, cost: Infinity };
  const used = new Set<string>();
  const walk = (i: number, count: number, cost: number) => {
    if (i === orders.length) {
      if (count > best.count || (count === best.count && cost < best.cost)) best = { count, cost };
      return;
    }
    walk(i + 1, count, cost);
    for (const e of edges[i]) {
      if (used.has(e.rider)) continue;
      used.add(e.rider);
      walk(i + 1, count + 1, cost + e.cost);
      used.delete(e.rider);
    }
  };
  walk(0, 0, 0);
  return best;
}

/** Checks every structural promise of a solver's output and returns how many failures it saw. */
function checkValid(
  t: Test,
  label: string,
  out: readonly Assignment[],
  orders: readonly MatchOrder[],
  riders: ReadonlyMap<string, MatchRider>,
  options: MatchOptions,
): boolean {
  const riderSeen = new Set<string>();
  const orderIndex = new Map(orders.map((o, i) => [o.orderId, i]));
  let ok = true;
  let lastIndex = -1;
  for (const a of out) {
    const i = orderIndex.get(a.orderId);
    const order = i === undefined ? undefined : orders[i];
    const rider = riders.get(a.riderId);
    const edge = order && rider ? assignmentCost(order, rider, options) : undefined;
    const good =
      i !== undefined &&
      i > lastIndex && // input order, each order at most once
      !riderSeen.has(a.riderId) &&
      order!.candidates.includes(a.riderId) &&
      edge !== undefined &&
      edge.cost === a.cost &&
      edge.pickupEtaMs === a.pickupEtaMs;
    if (!good) {
      t.fail(`${label}: bad assignment ${JSON.stringify(a)}`);
      ok = false;
    }
    riderSeen.add(a.riderId);
    if (i !== undefined) lastIndex = i;
  }
  return ok;
}

// Bengaluru centre; random points within about ±3 km.
const LAT0 = 12.97;
const LNG0 = 77.59;

function randomBatch(seed: number) {
  const rand = rng(seed);
  const nOrders = Math.floor(rand() * 7); // 0..6
  const nRiders = Math.floor(rand() * 8); // 0..7
  const riders = new Map<string, MatchRider>();
  const ids: string[] = [];
  for (let r = 0; r < nRiders; r++) {
    const id = `r${r}`;
    ids.push(id);
    riders.set(id, {
      riderId: id,
      lat: LAT0 + (rand() - 0.5) * 0.055,
      lng: LNG0 + (rand() - 0.5) * 0.055,
      idleSince: NOW - Math.floor(rand() * 60 * MIN),
    });
  }
  const orders: MatchOrder[] = [];
  for (let o = 0; o < nOrders; o++) {
    const candidates: string[] = [];
    // Sparse lists of 0..4 riders, so riders are shared and some orders have none.
    const k = Math.floor(rand() * 5);
    for (let c = 0; c < k && nRiders > 0; c++) {
      const id = ids[Math.floor(rand() * nRiders)];
      if (!candidates.includes(id)) candidates.push(id);
    }
    if (rand() < 0.15) candidates.push('ghost'); // a rider that went offline since the ring search
    orders.push({
      orderId: `o${o}`,
      pickupLat: LAT0 + (rand() - 0.5) * 0.055,
      pickupLng: LNG0 + (rand() - 0.5) * 0.055,
      readyAt: NOW + Math.floor(rand() * 20 * MIN),
      createdAt: NOW - Math.floor(rand() * 10 * MIN),
      candidates,
    });
  }
  const options: MatchOptions = {
    now: NOW,
    router: new HaversineRouter({ speedMps: 5.5, detourFactor: 1.3 }),
    // Sometimes a pickup limit, which drops the far edges.
    maxPickupMs: rand() < 0.3 ? 10 * MIN : undefined,
  };
  return { orders, riders, options };
}

t.test('solveBatch matches exhaustive search on random small batches', async (t) => {
  const CASES = 600;
  let countOk = 0;
  let costOk = 0;
  let valid = 0;
  let contested = 0;
  for (let seed = 1; seed <= CASES; seed++) {
    const { orders, riders, options } = randomBatch(seed);
    const out = solveBatch(orders, riders, options);
    const best = bruteForce(orders, riders, options);
    if (checkValid(t, `seed ${seed}`, out, orders, riders, options)) valid++;
    if (out.length === best.count) countOk++;
    else t.fail(`seed ${seed}: assigned ${out.length}, best possible ${best.count}`);
    if (Math.abs(total(out) - best.cost) <= 1e-6) costOk++;
    else t.fail(`seed ${seed}: cost ${total(out)}, optimum ${best.cost}`);
    if (best.count < orders.filter((o) => o.candidates.some((c) => riders.has(c))).length) contested++;
  }
  t.equal(valid, CASES, 'every output is a valid matching over candidate edges');
  t.equal(countOk, CASES, 'assigns the maximum possible number of orders');
  t.equal(costOk, CASES, 'total cost equals the optimum');
  // Guards the generator: the cases must include batches where orders compete for too few riders.
  t.ok(contested > 50, `${contested} cases had more orders than could be served`);
});

t.test('scarce riders: many orders fight over one to three riders', async (t) => {
  let ok = 0;
  const CASES = 300;
  for (let seed = 1; seed <= CASES; seed++) {
    const rand = rng(10_000 + seed);
    const nRiders = 1 + Math.floor(rand() * 3);
    const riders = new Map<string, MatchRider>();
    for (let r = 0; r < nRiders; r++) {
      riders.set(`r${r}`, {
        riderId: `r${r}`,
        lat: LAT0 + (rand() - 0.5) * 0.05,
        lng: LNG0 + (rand() - 0.5) * 0.05,
        idleSince: NOW - Math.floor(rand() * 40 * MIN),
      });
    }
    const orders: MatchOrder[] = [];
    for (let o = 0; o < 6; o++) {
      const candidates = [...riders.keys()].filter(() => rand() < 0.6);
      orders.push({
        orderId: `o${o}`,
        pickupLat: LAT0 + (rand() - 0.5) * 0.05,
        pickupLng: LNG0 + (rand() - 0.5) * 0.05,
        readyAt: NOW + Math.floor(rand() * 15 * MIN),
        createdAt: NOW - o,
        candidates,
      });
    }
    const options: MatchOptions = { now: NOW, router: new HaversineRouter() };
    const out = solveBatch(orders, riders, options);
    const best = bruteForce(orders, riders, options);
    if (
      checkValid(t, `scarce seed ${seed}`, out, orders, riders, options) &&
      out.length === best.count &&
      Math.abs(total(out) - best.cost) <= 1e-6
    ) {
      ok++;
    } else {
      t.fail(`scarce seed ${seed}: got ${out.length}/${total(out)}, best ${best.count}/${best.cost}`);
    }
  }
  t.equal(ok, CASES, 'optimal in every scarce case');
});

/**
 * Dense reference: textbook O(n²m) Hungarian on a full matrix with one private
 * "unassigned" column per order at cost BIG and forbidden edges at a cost no
 * optimum can afford. Integer costs keep both solvers exact.
 */
function denseReference(table: number[][], candidates: string[][]): { count: number; cost: number } {
  const n = candidates.length;
  const m = table.length;
  let maxC = 0;
  for (const row of table) for (const c of row) if (Number.isFinite(c)) maxC = Math.max(maxC, c);
  const BIG = (maxC + 1) * (n + 1);
  const FORBID = BIG * (n + 2);
  const cols = m + n;
  const a: number[][] = [];
  for (let i = 0; i < n; i++) {
    const row = new Array<number>(cols).fill(FORBID);
    for (const id of candidates[i]) {
      const r = Number(id.slice(1));
      if (Number.isFinite(table[r][i])) row[r] = table[r][i];
    }
    row[m + i] = BIG;
    a.push(row);
  }
  // e-maxx formulation, 1-based with a virtual column 0.
  const u = new Array<number>(n + 1).fill(0);
  const v = new Array<number>(cols + 1).fill(0);
  const p = new Array<number>(cols + 1).fill(0);
  const way = new Array<number>(cols + 1).fill(0);
  for (let i = 1; i <= n; i++) {
    p[0] = i;
    let j0 = 0;
    const minv = new Array<number>(cols + 1).fill(Infinity);
    const used = new Array<boolean>(cols + 1).fill(false);
    do {
      used[j0] = true;
      const i0 = p[j0];
      let delta = Infinity;
      let j1 = 0;
      for (let j = 1; j <= cols; j++) {
        if (used[j]) continue;
        const cur = a[i0 - 1][j - 1] - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (let j = 0; j <= cols; j++) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] !== 0);
    do {
      const j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0 !== 0);
  }
  let count = 0;
  let cost = 0;
  for (let j = 1; j <= m; j++) {
    if (p[j] !== 0) {
      count++;
      cost += a[p[j] - 1][j - 1];
    }
  }
  return { count, cost };
}

t.test('solveBatch matches a dense Hungarian reference on medium batches', async (t) => {
  const shapes = [
    { n: 30, m: 40, k: 5 },
    { n: 40, m: 15, k: 4 }, // more orders than riders
    { n: 25, m: 25, k: 3 },
    { n: 60, m: 80, k: 8 },
  ];
  let ok = 0;
  let cases = 0;
  for (const [s, shape] of shapes.entries()) {
    for (let rep = 0; rep < 15; rep++) {
      cases++;
      const rand = rng(50_000 + s * 100 + rep);
      // Integer minutes-scale travel times with many ties, some unreachable pairs.
      const table = Array.from({ length: shape.m }, () =>
        Array.from({ length: shape.n }, () => (rand() < 0.1 ? NaN : 1000 * Math.floor(rand() * 20))),
      );
      const candidates = Array.from({ length: shape.n }, () => {
        const c = new Set<string>();
        const k = Math.floor(rand() * (shape.k + 1));
        while (c.size < k) c.add(`r${Math.floor(rand() * shape.m)}`);
        return [...c];
      });
      const { orders, riders } = tableCase(table, candidates);
      const options: MatchOptions = { now: NOW, router: new TableRouter(table) };
      const out = solveBatch(orders, riders, options);
      const ref = denseReference(table, candidates);
      if (checkValid(t, `shape ${s} rep ${rep}`, out, orders, riders, options) && out.length === ref.count && total(out) === ref.cost) ok++;
      else t.fail(`shape ${s} rep ${rep}: got ${out.length}/${total(out)}, reference ${ref.count}/${ref.cost}`);
    }
  }
  t.equal(ok, cases, `all ${cases} medium batches agree with the reference`);
});

t.test('greedy is never cheaper than batch when both assign as many', async (t) => {
  let compared = 0;
  let worse = 0;
  for (let seed = 1; seed <= 600; seed++) {
    const { orders, riders, options } = randomBatch(seed);
    const batch = solveBatch(orders, riders, options);
    const greedy = solveGreedy(orders, riders, options);
    checkValid(t, `greedy seed ${seed}`, greedy, orders, riders, options);
    if (greedy.length > batch.length) t.fail(`seed ${seed}: greedy assigned more (${greedy.length} > ${batch.length})`);
    if (greedy.length !== batch.length) continue;
    compared++;
    if (total(greedy) < total(batch) - 1e-6) t.fail(`seed ${seed}: greedy ${total(greedy)} < batch ${total(batch)}`);
    if (total(greedy) > total(batch) + 1e-6) worse++;
  }
  t.ok(compared > 300, `${compared} batches compared`);
  t.ok(worse > 0, `greedy strictly worse in ${worse} of them`);
});

t.test('greedy is clearly worse when the oldest order takes the rider another needs', async (t) => {
  // r0 is near both stores; r1 is fine for o0 but far from o1.
  const table = [
    [1 * MIN, 2 * MIN],
    [3 * MIN, 20 * MIN],
  ];
  const { orders, riders } = tableCase(table, [['r0', 'r1'], ['r0', 'r1']]);
  const options = { now: NOW, router: new TableRouter(table) };
  const greedy = solveGreedy(orders, riders, options);
  const batch = solveBatch(orders, riders, options);
  t.same(
    greedy.map((a) => [a.orderId, a.riderId]),
    [['o0', 'r0'], ['o1', 'r1']],
    'greedy: oldest order grabs its nearest rider',
  );
  t.equal(total(greedy), 21 * MIN);
  t.same(
    batch.map((a) => [a.orderId, a.riderId]),
    [['o0', 'r1'], ['o1', 'r0']],
    'batch: swaps them',
  );
  t.equal(total(batch), 5 * MIN, 'a quarter of greedy total');
});

t.test('greedy serves orders oldest first, whatever the input order', async (t) => {
  const table = [[1 * MIN, 2 * MIN]];
  const { orders, riders } = tableCase(table, [['r0'], ['r0']]);
  orders[0].createdAt = NOW; // o1 is now the older
  const out = solveGreedy(orders, riders, { now: NOW, router: new TableRouter(table) });
  t.same(out.map((a) => a.orderId), ['o1']);
});

t.test('contention: the cheaper order wins the only rider, in either input order', async (t) => {
  const table = [[10 * MIN, 5 * MIN]];
  const { orders, riders } = tableCase(table, [['r0'], ['r0']]);
  const options = { now: NOW, router: new TableRouter(table) };
  t.same(solveBatch(orders, riders, options).map((a) => a.orderId), ['o1']);
  t.same(solveBatch([...orders].reverse(), riders, options).map((a) => a.orderId), ['o1']);
});

t.test('assigning more orders beats a cheaper total', async (t) => {
  // o0 alone would take r0 at 1 min, but then o1 (only r0) goes unserved.
  const table = [
    [1 * MIN, 50 * MIN],
    [100 * MIN, NaN],
  ];
  const { orders, riders } = tableCase(table, [['r0', 'r1'], ['r0']]);
  const out = solveBatch(orders, riders, { now: NOW, router: new TableRouter(table) });
  t.same(out.map((a) => [a.orderId, a.riderId]), [['o0', 'r1'], ['o1', 'r0']]);
  t.equal(total(out), 150 * MIN);
});

t.test('cost model: travel, wait at the store and the capped idle bonus', async (t) => {
  const router = new HaversineRouter({ speedMps: 5, detourFactor: 1 });
  const order: MatchOrder = { orderId: 'o', pickupLat: LAT0, pickupLng: LNG0, readyAt: NOW, createdAt: NOW, candidates: ['r'] };
  const rider: MatchRider = { riderId: 'r', lat: LAT0, lng: LNG0, idleSince: NOW };
  t.same(assignmentCost(order, rider, { now: NOW, router }), { cost: 0, pickupEtaMs: 0 }, 'same place, food ready, just freed');

  const travel = router.travelTimeMs(LAT0 + 0.01, LNG0, LAT0, LNG0);
  const far = { ...rider, lat: LAT0 + 0.01 };
  t.equal(assignmentCost(order, far, { now: NOW, router }).pickupEtaMs, travel, 'eta is the router time');
  const early = assignmentCost({ ...order, readyAt: NOW + travel + 4 * MIN }, far, { now: NOW, router });
  t.equal(early.cost, travel + DEFAULT_COST_WEIGHTS.waitWeight * 4 * MIN, 'waiting 4 min at the store costs half of it');

  const idle10 = assignmentCost(order, { ...rider, idleSince: NOW - 10 * MIN }, { now: NOW, router });
  t.equal(idle10.cost, -DEFAULT_COST_WEIGHTS.idleWeight * 10 * MIN, 'idle time earns a small bonus');
  const idle5h = assignmentCost(order, { ...rider, idleSince: NOW - 300 * MIN }, { now: NOW, router });
  t.equal(idle5h.cost, -DEFAULT_COST_WEIGHTS.idleWeight * DEFAULT_COST_WEIGHTS.idleCapMs, 'bonus is capped');
  t.equal(idle5h.cost, -90_000, 'at 90 s by default');
  const future = assignmentCost(order, { ...rider, idleSince: NOW + MIN }, { now: NOW, router });
  t.equal(future.cost, 0, 'an idleSince in the future earns nothing');

  const custom = assignmentCost({ ...order, readyAt: NOW + travel + 4 * MIN }, { ...far, idleSince: NOW - 10 * MIN }, {
    now: NOW,
    router,
    weights: { waitWeight: 1, idleWeight: 0.5 },
  });
  t.equal(custom.cost, travel + 4 * MIN - 5 * MIN, 'partial weights override the defaults');

  t.equal(assignmentCost(order, far, { now: NOW, router, maxPickupMs: travel - 1 }).cost, Infinity, 'beyond maxPickupMs is infeasible');
  const nanRouter: TravelTimeRouter = { travelTimeMs: () => NaN };
  t.equal(assignmentCost(order, rider, { now: NOW, router: nanRouter }).cost, Infinity, 'unreachable is infeasible');
});

t.test('fairness: among equally near riders the longest idle one is chosen', async (t) => {
  const riders = new Map<string, MatchRider>([
    ['a', { riderId: 'a', lat: LAT0 + 0.01, lng: LNG0, idleSince: NOW - 2 * MIN }],
    ['b', { riderId: 'b', lat: LAT0 - 0.01, lng: LNG0, idleSince: NOW - 25 * MIN }],
  ]);
  const order: MatchOrder = { orderId: 'o', pickupLat: LAT0, pickupLng: LNG0, readyAt: NOW, createdAt: NOW, candidates: ['a', 'b'] };
  const out = solveBatch([order], riders, { now: NOW, router: new HaversineRouter() });
  t.equal(out[0].riderId, 'b');
});

t.test('infeasible edges are dropped by both solvers', async (t) => {
  const table = [
    [5 * MIN, NaN],
    [30 * MIN, 2 * MIN],
  ];
  const { orders, riders } = tableCase(table, [['r1', 'r0'], ['r0']]);
  const router = new TableRouter(table);
  const options = { now: NOW, router, maxPickupMs: 10 * MIN };
  // o0 may only use r0 (r1 is too far), o1 may only use r0's NaN edge: so only o0 is served.
  t.same(solveBatch(orders, riders, options).map((a) => [a.orderId, a.riderId]), [['o0', 'r0']]);
  t.same(solveGreedy(orders, riders, options).map((a) => [a.orderId, a.riderId]), [['o0', 'r0']]);
});

t.test('riders missing from the map are skipped', async (t) => {
  const table = [[3 * MIN, 4 * MIN]];
  const { orders, riders } = tableCase(table, [['gone', 'r0'], ['gone']]);
  const options = { now: NOW, router: new TableRouter(table) };
  for (const [name, solve] of [
    ['batch', solveBatch],
    ['greedy', solveGreedy],
  ] as const) {
    const out = solve(orders, riders, options);
    t.same(out.map((a) => [a.orderId, a.riderId]), [['o0', 'r0']], name);
  }
});

t.test('empty inputs', async (t) => {
  const router = new HaversineRouter();
  const options = { now: NOW, router };
  const order: MatchOrder = { orderId: 'o', pickupLat: LAT0, pickupLng: LNG0, readyAt: NOW, createdAt: NOW, candidates: [] };
  for (const solve of [solveBatch, solveGreedy]) {
    t.same(solve([], new Map(), options), [], `${solve.name}: no orders`);
    t.same(solve([order], new Map(), options), [], `${solve.name}: no riders`);
    t.same(solve([{ ...order, candidates: ['x'] }], new Map(), options), [], `${solve.name}: candidates not in the map`);
    const riders = new Map([['x', { riderId: 'x', lat: LAT0, lng: LNG0, idleSince: NOW }]]);
    t.same(solve([order], riders, options), [], `${solve.name}: an order with no candidates`);
  }
});

t.test('duplicate candidate ids behave like one', async (t) => {
  const table = [[3 * MIN, 4 * MIN], [5 * MIN, 9 * MIN]];
  const { orders, riders } = tableCase(table, [['r0', 'r0', 'r1'], ['r0', 'r0']]);
  const out = solveBatch(orders, riders, { now: NOW, router: new TableRouter(table) });
  t.same(out.map((a) => [a.orderId, a.riderId]), [['o0', 'r1'], ['o1', 'r0']]);
});

t.test('deterministic: same input, same output, including ties', async (t) => {
  // Every edge costs the same, so only the tie-breaking decides.
  const m = 12;
  const table = Array.from({ length: m }, () => Array.from({ length: 10 }, () => 2 * MIN));
  const candidates = Array.from({ length: 10 }, (_, o) => [`r${o}`, `r${(o + 3) % m}`, `r${(o + 7) % m}`]);
  const { orders, riders } = tableCase(table, candidates);
  const options = { now: NOW, router: new TableRouter(table) };
  const first = solveBatch(orders, riders, options);
  t.equal(first.length, 10);
  for (let k = 0; k < 5; k++) t.same(solveBatch(orders, riders, options), first, `run ${k + 2} equals run 1`);
  t.same(solveGreedy(orders, riders, options), solveGreedy(orders, riders, options), 'greedy too');

  const { orders: big, riders: bigRiders, options: bigOptions } = randomBatch(4242);
  t.same(solveBatch(big, bigRiders, bigOptions), solveBatch(big, bigRiders, bigOptions));
});

t.test('input order does not change the optimum', async (t) => {
  let ok = 0;
  for (let seed = 1; seed <= 100; seed++) {
    const { orders, riders, options } = randomBatch(seed);
    const a = solveBatch(orders, riders, options);
    const b = solveBatch([...orders].reverse(), riders, options);
    if (a.length === b.length && Math.abs(total(a) - total(b)) <= 1e-6) ok++;
    else t.fail(`seed ${seed}`);
  }
  t.equal(ok, 100);
});

t.test('invalid options are refused with QD_ERR_INVALID_ARGUMENT', async (t) => {
  const router = new HaversineRouter();
  const bad: [string, MatchOptions][] = [
    ['now', { now: NaN, router }],
    ['weights.waitWeight', { now: NOW, router, weights: { waitWeight: -1 } }],
    ['weights.idleCapMs', { now: NOW, router, weights: { idleCapMs: Infinity } }],
    ['maxPickupMs', { now: NOW, router, maxPickupMs: NaN }],
  ];
  for (const [field, options] of bad) {
    let caught: unknown;
    try {
      solveBatch([], new Map(), options);
    } catch (e) {
      caught = e;
    }
    t.ok(caught instanceof DispatchError, `${field}: throws DispatchError`);
    t.match((caught as DispatchError).details, { field }, `${field}: names the field`);
    t.equal((caught as DispatchError).code, 'QD_ERR_INVALID_ARGUMENT');
  }
});

t.test('HaversineRouter: distance × detour / speed', async (t) => {
  const plain = new HaversineRouter({ speedMps: 5, detourFactor: 1 });
  // 0.009° of latitude is about 1,000.8 m on h3's sphere.
  const ms = plain.travelTimeMs(LAT0, LNG0, LAT0 + 0.009, LNG0);
  t.ok(Math.abs(ms - 200_000) < 500, `about 200 s for 1 km at 5 m/s (${ms})`);
  const detour = new HaversineRouter({ speedMps: 5, detourFactor: 1.5 });
  t.ok(Math.abs(detour.travelTimeMs(LAT0, LNG0, LAT0 + 0.009, LNG0) - ms * 1.5) < 1e-6, 'scales with the detour');
  t.equal(plain.travelTimeMs(LAT0, LNG0, LAT0, LNG0), 0);
  const def = new HaversineRouter();
  t.equal(def.speedMps, 5.5);
  t.equal(def.detourFactor, 1.3);
  t.throws(() => new HaversineRouter({ speedMps: 0 }), DispatchError);
  t.throws(() => new HaversineRouter({ detourFactor: 0.9 }), DispatchError);
});

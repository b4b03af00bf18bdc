/**
 * Batch dispatch: a shard gathers unassigned orders over a short window,
 * hands each one's candidate riders (from the spatial index's ring search)
 * to solveBatch, and offers the result. solveBatch is an exact rectangular
 * min-cost assignment over the sparse candidate edges; solveGreedy is the
 * nearest-first baseline it is measured against.
 *
 * Both are pure: same input, same output, no clock read, no I/O.
 */
import { invalidArgument } from '../errors.ts';
import type { OrderId, RiderId } from '../types.ts';
import type { TravelTimeRouter } from './router.ts';

export interface MatchOrder {
  orderId: OrderId;
  /** The store, where the rider collects the order. */
  pickupLat: number;
  pickupLng: number;
  /** When the food / parcel will be ready at the store (epoch ms). */
  readyAt: number;
  /** When the order was placed (epoch ms); the greedy baseline serves oldest first. */
  createdAt: number;
  /** Rider ids that may take this order, already filtered for exclusions (declined, blocked). */
  candidates: readonly RiderId[];
}

export interface MatchRider {
  riderId: RiderId;
  lat: number;
  lng: number;
  /** When the rider last became free (epoch ms). */
  idleSince: number;
  /**
   * Time the rider owes earlier orders before this one can reach its customer
   * (a bundle: the drop-offs ahead of it). Added to every edge's cost.
   */
  committedMs?: number;
  /** Orders the rider already holds: each of them waits too while the rider waits for this one's food. */
  heldOrders?: number;
}

export interface Assignment {
  orderId: OrderId;
  riderId: RiderId;
  /** The edge cost (see CostWeights), in milliseconds-equivalent. */
  cost: number;
  /** Rider's travel time to the store from `now`, in ms. */
  pickupEtaMs: number;
}

/**
 * Edge cost of giving order o to rider r, in milliseconds-equivalent:
 *
 *   cost = travel + waitWeight × max(0, readyAt − (now + travel)) − idleWeight × min(idle, idleCapMs)
 *
 * where travel is the router's time from the rider to the store and idle is
 * now − idleSince. Travel counts in full (the rider is riding, not earning,
 * and the customer waits); waiting at the store counts less (the rider rests
 * but is tied up); the idle bonus is small and capped so it only breaks
 * near-ties in favour of riders who have waited longest for work and can
 * never pull a far rider past a near one by more than idleWeight × idleCapMs.
 * No order-age term: every order in the batch is assigned when any feasible
 * matching can assign it, so age would not change who gets served.
 */
export interface CostWeights {
  /** Weight of the rider's wait at the store for the food. Default 0.5. */
  waitWeight: number;
  /** Weight of the rider's idle time, subtracted. Default 0.05. */
  idleWeight: number;
  /** Idle time beyond this counts no more (ms). Default 30 minutes, so the bonus is at most 90 s. */
  idleCapMs: number;
}

export const DEFAULT_COST_WEIGHTS: Readonly<CostWeights> = Object.freeze({
  waitWeight: 0.5,
  idleWeight: 0.05,
  idleCapMs: 30 * 60_000,
});

export interface MatchOptions {
  /** The batch's decision time (epoch ms): travel and waits are measured from here. */
  now: number;
  router: TravelTimeRouter;
  weights?: Partial<CostWeights>;
  /** Edges whose travel time exceeds this are dropped. Default: no limit (the ring search already bounds distance). */
  maxPickupMs?: number;
}

/** Options after validation, shared by both solvers and assignmentCost. */
interface Resolved {
  now: number;
  router: TravelTimeRouter;
  waitWeight: number;
  idleWeight: number;
  idleCapMs: number;
  maxPickupMs: number;
}

function resolve(options: MatchOptions): Resolved {
  const { now, router } = options;
  if (!Number.isFinite(now)) throw invalidArgument('now', 'must be a finite epoch ms');
  const w = { ...DEFAULT_COST_WEIGHTS, ...options.weights };
  for (const field of ['waitWeight', 'idleWeight', 'idleCapMs'] as const) {
    const v = w[field];
    if (!(v >= 0) || !Number.isFinite(v)) throw invalidArgument(`weights.${field}`, 'must be a finite number >= 0');
  }
  const maxPickupMs = options.maxPickupMs ?? Infinity;
  if (!(maxPickupMs >= 0)) throw invalidArgument('maxPickupMs', 'must be a number >= 0');
  return { now, router, waitWeight: w.waitWeight, idleWeight: w.idleWeight, idleCapMs: w.idleCapMs, maxPickupMs };
}

/**
 * Cost of an edge whose travel time is known; Infinity when the edge is
 * infeasible. Split from assignmentCost so the solvers' loops allocate nothing.
 */
function costOf(travel: number, order: MatchOrder, rider: MatchRider, o: Resolved): number {
  // `!(travel >= 0)` also catches NaN: the router's way of saying unreachable.
  if (!(travel >= 0) || travel === Infinity || travel > o.maxPickupMs) return Infinity;
  const wait = order.readyAt - (o.now + travel);
  let idle = o.now - rider.idleSince;
  // A clock skew (idleSince in the future) or a missing value earns no bonus rather than poisoning the cost.
  if (!(idle > 0)) idle = 0;
  else if (idle > o.idleCapMs) idle = o.idleCapMs;
  const waitCost = wait > 0 ? (o.waitWeight + (rider.heldOrders ?? 0)) * wait : 0;
  const cost = travel + (rider.committedMs ?? 0) + waitCost - o.idleWeight * idle;
  return Number.isFinite(cost) ? cost : Infinity;
}

/**
 * The edge cost both solvers use (see CostWeights). pickupEtaMs is the
 * router's travel time; cost is Infinity when the edge is infeasible
 * (router says unreachable, or travel beyond maxPickupMs).
 * @throws DispatchError QD_ERR_INVALID_ARGUMENT when now, a weight or maxPickupMs is invalid.
 */
export function assignmentCost(order: MatchOrder, rider: MatchRider, options: MatchOptions): { cost: number; pickupEtaMs: number } {
  const o = resolve(options);
  const travel = o.router.travelTimeMs(rider.lat, rider.lng, order.pickupLat, order.pickupLng);
  return { cost: costOf(travel, order, rider, o), pickupEtaMs: travel };
}

/**
 * Nearest-first baseline: orders oldest first (createdAt, then input order),
 * each takes its still-free candidate with the lowest pickup time (earlier
 * in its candidate list on a tie), among feasible edges. Riders missing from
 * `riders` are skipped. Returns assignments in input order of the orders.
 * @throws DispatchError QD_ERR_INVALID_ARGUMENT when an option is invalid.
 */
export function solveGreedy(
  orders: readonly MatchOrder[],
  riders: ReadonlyMap<RiderId, MatchRider>,
  options: MatchOptions,
): Assignment[] {
  const o = resolve(options);
  const n = orders.length;
  const byAge = new Int32Array(n);
  for (let i = 0; i < n; i++) byAge[i] = i;
  // Index tie-break keeps the order stable and the output deterministic whatever the sort's implementation.
  byAge.sort((a, b) => orders[a].createdAt - orders[b].createdAt || a - b);
  const taken = new Set<RiderId>();
  const chosen: (Assignment | undefined)[] = new Array(n);
  for (let k = 0; k < n; k++) {
    const i = byAge[k];
    const order = orders[i];
    let best: RiderId | undefined;
    let bestTravel = Infinity;
    let bestCost = Infinity;
    for (const id of order.candidates) {
      if (taken.has(id)) continue;
      const rider = riders.get(id);
      if (rider === undefined) continue;
      const travel = o.router.travelTimeMs(rider.lat, rider.lng, order.pickupLat, order.pickupLng);
      if (!(travel < bestTravel)) continue;
      const cost = costOf(travel, order, rider, o);
      if (cost === Infinity) continue;
      best = id;
      bestTravel = travel;
      bestCost = cost;
    }
    if (best !== undefined) {
      taken.add(best);
      chosen[i] = { orderId: order.orderId, riderId: best, cost: bestCost, pickupEtaMs: bestTravel };
    }
  }
  const out: Assignment[] = [];
  for (let i = 0; i < n; i++) if (chosen[i] !== undefined) out.push(chosen[i]!);
  return out;
}

/**
 * Exact batch assignment: assigns as many orders as any matching over the
 * candidate edges can, and among those matchings returns one of minimum total
 * cost; each rider takes at most one order. Riders missing from `riders` and
 * infeasible edges (see assignmentCost) are skipped. Returns assignments in
 * input order of the orders; unassigned orders are absent.
 *
 * Method: successive shortest augmenting paths (the Jonker–Volgenant /
 * Crouse scheme: Dijkstra on reduced costs with row and column potentials),
 * one order at a time, restricted to candidate edges held in CSR typed
 * arrays. Each order's search stops at the first free rider it pops, so with
 * plenty of riders a search touches a handful of edges: the cost tracks the
 * edges near the contention, not orders × riders.
 *
 * Maximum cardinality first: conceptually each order also has a private
 * "unassigned" rider at a huge cost. Such a rider is only ever a path's end,
 * so it is never materialised: when an order's search runs out of reachable
 * riders without finding a free one, the order either stays unassigned or
 * takes its place in the exhausted tree by pushing out whichever tree order
 * makes the cheaper swap, exactly what the huge-cost edges would choose, and
 * without huge numbers in the potentials to eat floating-point precision.
 * An order left unassigned can never be reached again (it holds no rider),
 * which is right: matching theory says an order with no augmenting path now
 * never gets one later.
 *
 * @throws DispatchError QD_ERR_INVALID_ARGUMENT when an option is invalid.
 */
export function solveBatch(
  orders: readonly MatchOrder[],
  riders: ReadonlyMap<RiderId, MatchRider>,
  options: MatchOptions,
): Assignment[] {
  const o = resolve(options);
  const n = orders.length;
  if (n === 0) return [];

  // --- Build the sparse graph: rows are orders, columns the riders that appear as feasible candidates.
  let edgeCap = 0;
  for (let i = 0; i < n; i++) edgeCap += orders[i].candidates.length;
  const rowStart = new Int32Array(n + 1);
  const edgeCol = new Int32Array(edgeCap);
  const edgeCost = new Float64Array(edgeCap);
  const edgeEta = new Float64Array(edgeCap);
  const colOf = new Map<RiderId, number>();
  // Ids as the caller keyed them in `riders`, which is what its candidate lists name.
  const colId: RiderId[] = [];
  let e = 0;
  for (let i = 0; i < n; i++) {
    rowStart[i] = e;
    const order = orders[i];
    for (const id of order.candidates) {
      const rider = riders.get(id);
      if (rider === undefined) continue;
      const travel = o.router.travelTimeMs(rider.lat, rider.lng, order.pickupLat, order.pickupLng);
      const cost = costOf(travel, order, rider, o);
      if (cost === Infinity) continue;
      let col = colOf.get(id);
      if (col === undefined) {
        col = colId.length;
        colOf.set(id, col);
        colId.push(id);
      }
      edgeCol[e] = col;
      edgeCost[e] = cost;
      edgeEta[e] = travel;
      e++;
    }
  }
  rowStart[n] = e;
  const m = colId.length;

  // --- Solver state. Potentials: reduced cost of edge (i, j) is cost − u[i] − v[j], kept ≥ 0, and 0 on matched edges.
  const u = new Float64Array(n);
  const v = new Float64Array(m);
  const col4row = new Int32Array(n).fill(-1);
  const edge4row = new Int32Array(n).fill(-1);
  const row4col = new Int32Array(m).fill(-1);
  // Starting each row at its cheapest edge makes reduced costs non-negative even when costs are negative (idle bonus).
  for (let i = 0; i < n; i++) {
    let min = Infinity;
    for (let k = rowStart[i]; k < rowStart[i + 1]; k++) if (edgeCost[k] < min) min = edgeCost[k];
    u[i] = min === Infinity ? 0 : min;
  }

  // Per-search scratch, reset through the touched lists so a search costs what it visits, not m.
  const dist = new Float64Array(m).fill(Infinity);
  const pathRow = new Int32Array(m);
  const pathEdge = new Int32Array(m);
  const scanned = new Uint8Array(m);
  const touched = new Int32Array(m);
  const scannedRows = new Int32Array(n);
  const heap = new MinHeap(dist, m);

  for (let cur = 0; cur < n; cur++) {
    if (rowStart[cur] === rowStart[cur + 1]) continue; // no feasible candidate: stays unassigned
    let nTouched = 0;
    let nRows = 0;
    let minVal = 0; // distance label of the row being scanned
    let i = cur;
    let sink = -1;
    for (;;) {
      scannedRows[nRows++] = i;
      const ui = u[i];
      for (let k = rowStart[i], end = rowStart[i + 1]; k < end; k++) {
        const j = edgeCol[k];
        if (scanned[j] === 1) continue;
        const d = minVal + edgeCost[k] - ui - v[j];
        if (d < dist[j]) {
          if (dist[j] === Infinity) touched[nTouched++] = j;
          dist[j] = d;
          pathRow[j] = i;
          pathEdge[j] = k;
          heap.pushOrDecrease(j);
        }
      }
      if (heap.size === 0) break; // tree exhausted: no free rider reachable
      const j = heap.pop();
      scanned[j] = 1;
      minVal = dist[j];
      if (row4col[j] === -1) {
        sink = j;
        break;
      }
      i = row4col[j];
    }

    // Without a free rider, pick the order in the tree whose removal makes the cheapest swap; the
    // newcomer itself (change 0) wins ties, so equal-cost alternatives never churn existing matches.
    // True cost change of moving the tree along the path to col4row[k]: dist[col4row[k]] + u[cur] − u[k].
    let drop = -1;
    if (sink === -1) {
      let bestDelta = 0;
      for (let r = 1; r < nRows; r++) {
        const k = scannedRows[r];
        const delta = dist[col4row[k]] + u[cur] - u[k];
        if (delta < bestDelta) {
          bestDelta = delta;
          drop = k;
        }
      }
    }

    // Dual update (before augmenting, since it reads the old matching). In the exhausted case minVal is
    // the largest label in the tree, which keeps every edge into it non-negative.
    u[cur] += minVal;
    for (let r = 1; r < nRows; r++) {
      const k = scannedRows[r];
      u[k] += minVal - dist[col4row[k]];
    }
    for (let t = 0; t < nTouched; t++) {
      const j = touched[t];
      if (scanned[j] === 1) v[j] -= minVal - dist[j];
    }

    if (sink === -1 && drop !== -1) {
      sink = col4row[drop];
      col4row[drop] = -1;
      edge4row[drop] = -1;
    }
    if (sink !== -1) {
      // Augment: flip the alternating path from the sink back to cur.
      let j = sink;
      for (;;) {
        const r = pathRow[j];
        row4col[j] = r;
        edge4row[r] = pathEdge[j];
        const prev = col4row[r];
        col4row[r] = j;
        if (r === cur) break;
        j = prev;
      }
    }

    for (let t = 0; t < nTouched; t++) {
      const j = touched[t];
      dist[j] = Infinity;
      scanned[j] = 0;
    }
    heap.clear();
  }

  const out: Assignment[] = [];
  for (let r = 0; r < n; r++) {
    const k = edge4row[r];
    if (k === -1) continue;
    out.push({ orderId: orders[r].orderId, riderId: colId[edgeCol[k]], cost: edgeCost[k], pickupEtaMs: edgeEta[k] });
  }
  return out;
}

/**
 * Binary min-heap of column indices keyed by an external Float64Array, with
 * decrease-key through a position table. Ties go to the lower column index,
 * so the solver's choices never depend on insertion history.
 */
class MinHeap {
  readonly #key: Float64Array;
  readonly #items: Int32Array;
  readonly #pos: Int32Array;
  size = 0;

  constructor(key: Float64Array, capacity: number) {
    this.#key = key;
    this.#items = new Int32Array(capacity);
    this.#pos = new Int32Array(capacity).fill(-1);
  }

  #less(a: number, b: number): boolean {
    const ka = this.#key[a];
    const kb = this.#key[b];
    return ka < kb || (ka === kb && a < b);
  }

  pushOrDecrease(x: number): void {
    let p = this.#pos[x];
    if (p === -1) {
      p = this.size++;
      this.#items[p] = x;
      this.#pos[x] = p;
    }
    this.#up(p);
  }

  pop(): number {
    const items = this.#items;
    const top = items[0];
    this.#pos[top] = -1;
    const last = items[--this.size];
    if (this.size > 0) {
      items[0] = last;
      this.#pos[last] = 0;
      this.#down(0);
    }
    return top;
  }

  /** Empties the heap, touching only what is still in it. */
  clear(): void {
    for (let p = 0; p < this.size; p++) this.#pos[this.#items[p]] = -1;
    this.size = 0;
  }

  #up(p: number): void {
    const items = this.#items;
    const x = items[p];
    while (p > 0) {
      const parent = (p - 1) >> 1;
      const y = items[parent];
      if (!this.#less(x, y)) break;
      items[p] = y;
      this.#pos[y] = p;
      p = parent;
    }
    items[p] = x;
    this.#pos[x] = p;
  }

  #down(p: number): void {
    const items = this.#items;
    const x = items[p];
    const size = this.size;
    for (;;) {
      let c = 2 * p + 1;
      if (c >= size) break;
      if (c + 1 < size && this.#less(items[c + 1], items[c])) c++;
      const y = items[c];
      if (!this.#less(y, x)) break;
      items[p] = y;
      this.#pos[y] = p;
      p = c;
    }
    items[p] = x;
    this.#pos[x] = p;
  }
}

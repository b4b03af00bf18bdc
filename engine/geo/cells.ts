/**
 * H3 helpers for the hot path. h3-js crosses into its wasm heap and allocates
 * a fresh string or array on every call, so everything here that is a pure
 * function of a cell is memoised. Caches are bounded by clearing: the working
 * set (cells with riders, store cells) refills in a few calls, and clearing
 * is cheaper than keeping LRU order on every hit.
 */
import {
  UNITS,
  cellToLatLng,
  cellToParent,
  getHexagonEdgeLengthAvg,
  getResolution,
  gridDisk,
  gridRing,
  latLngToCell,
} from 'h3-js';
import type { Cell, LatLng, ShardId } from '../types.ts';

/** Default budget of one cache: entries, or for cell-list caches, cells held in all lists together. */
export const DEFAULT_CACHE_BUDGET = 1_000_000;

/**
 * Maps from a cell to a value, one map per small integer (a resolution or a
 * ring radius) so look-ups need no composite string key. Cleared as a whole
 * when the summed weight passes the budget.
 */
class BoundedCellCache<V> {
  readonly #maps: Array<Map<Cell, V> | undefined> = [];
  readonly #budget: number;
  #weight = 0;

  constructor(budget: number) {
    this.#budget = budget;
  }

  get(slot: number, cell: Cell): V | undefined {
    const m = this.#maps[slot];
    return m === undefined ? undefined : m.get(cell);
  }

  set(slot: number, cell: Cell, value: V, weight: number): void {
    if (this.#weight + weight > this.#budget) this.clear();
    let m = this.#maps[slot];
    if (m === undefined) {
      m = new Map();
      this.#maps[slot] = m;
    }
    m.set(cell, value);
    this.#weight += weight;
  }

  clear(): void {
    this.#maps.length = 0;
    this.#weight = 0;
  }

  get weight(): number {
    return this.#weight;
  }
}

function checkRes(res: number, what: string): void {
  if (!Number.isInteger(res) || res < 0 || res > 15) throw new RangeError(`${what} must be an H3 resolution 0..15, got ${res}`);
}

function checkK(k: number): void {
  if (!Number.isInteger(k) || k < 0) throw new RangeError(`ring radius k must be a non-negative integer, got ${k}`);
}

export interface CellGeometryOptions {
  /** Entries (or cells, for disks and rings) each cache may hold before it is cleared. */
  cacheBudget?: number;
}

/**
 * Memoised pure look-ups on cells. Returned arrays and points are frozen and
 * shared between callers. Throws what h3-js throws for an invalid cell, and
 * RangeError for a bad resolution or radius.
 */
export class CellGeometry {
  readonly #parents: BoundedCellCache<Cell>;
  readonly #disks: BoundedCellCache<readonly Cell[]>;
  readonly #rings: BoundedCellCache<readonly Cell[]>;
  readonly #centers: BoundedCellCache<Readonly<LatLng>>;

  constructor(options: CellGeometryOptions = {}) {
    const budget = options.cacheBudget ?? DEFAULT_CACHE_BUDGET;
    this.#parents = new BoundedCellCache(budget);
    this.#disks = new BoundedCellCache(budget);
    this.#rings = new BoundedCellCache(budget);
    this.#centers = new BoundedCellCache(budget);
  }

  /** The ancestor of `cell` at resolution `res` (the cell itself when res equals its own). */
  parent(cell: Cell, res: number): Cell {
    const hit = this.#parents.get(res, cell);
    if (hit !== undefined) return hit;
    checkRes(res, 'parent resolution');
    const p = cellToParent(cell, res);
    this.#parents.set(res, cell, p, 1);
    return p;
  }

  /** Every cell within k steps of `cell`, the cell included (gridDisk; order unspecified). */
  disk(cell: Cell, k: number): readonly Cell[] {
    const hit = this.#disks.get(k, cell);
    if (hit !== undefined) return hit;
    checkK(k);
    const d = Object.freeze(gridDisk(cell, k));
    this.#disks.set(k, cell, d, d.length);
    return d;
  }

  /**
   * The cells exactly k steps from `cell` (k = 0 gives the cell alone). Uses
   * h3's gridRing, which unlike gridRingUnsafe also works next to pentagons.
   */
  ring(cell: Cell, k: number): readonly Cell[] {
    const hit = this.#rings.get(k, cell);
    if (hit !== undefined) return hit;
    checkK(k);
    const r = Object.freeze(k === 0 ? [cell] : gridRing(cell, k));
    this.#rings.set(k, cell, r, r.length);
    return r;
  }

  /** The centre point of a cell. */
  center(cell: Cell): Readonly<LatLng> {
    const hit = this.#centers.get(0, cell);
    if (hit !== undefined) return hit;
    const [lat, lng] = cellToLatLng(cell);
    const c = Object.freeze({ lat, lng });
    this.#centers.set(0, cell, c, 1);
    return c;
  }

  /** Drops every memoised entry. */
  clear(): void {
    this.#parents.clear();
    this.#disks.clear();
    this.#rings.clear();
    this.#centers.clear();
  }

  /** How much the caches hold now (entries, or cells for disks and rings); for metrics and tests. */
  cached(): { parents: number; disks: number; rings: number; centers: number } {
    return { parents: this.#parents.weight, disks: this.#disks.weight, rings: this.#rings.weight, centers: this.#centers.weight };
  }
}

/** The H3 cell containing a point: a plain h3 call (allocates its result string). Throws on an invalid resolution. */
export function cellOf(lat: number, lng: number, res: number): Cell {
  return latLngToCell(lat, lng, res);
}

/**
 * cellOf for points that come back again and again (stores, as pickups):
 * nested maps on the coordinates, so a hit builds no string. Holds at most
 * `max` points, then starts over.
 */
export class PointCells {
  readonly #res: number;
  readonly #max: number;
  #size = 0;
  readonly #byLat = new Map<number, Map<number, Cell>>();

  /** @throws RangeError on a bad resolution or bound. */
  constructor(res: number, max = 10_000) {
    checkRes(res, 'resolution');
    if (!(Number.isInteger(max) && max > 0)) throw new RangeError(`max must be a positive integer: ${max}`);
    this.#res = res;
    this.#max = max;
  }

  cellOf(lat: number, lng: number): Cell {
    let row = this.#byLat.get(lat);
    const hit = row?.get(lng);
    if (hit !== undefined) return hit;
    const cell = latLngToCell(lat, lng, this.#res);
    if (this.#size >= this.#max) {
      this.#byLat.clear();
      this.#size = 0;
      row = undefined;
    }
    if (row === undefined) {
      row = new Map();
      this.#byLat.set(lat, row);
    }
    row.set(lng, cell);
    this.#size++;
    return cell;
  }
}

const edgeLengths: number[] = [];

/** Average hexagon edge length at a resolution, in metres. Throws RangeError on a bad resolution. */
export function edgeLengthM(res: number): number {
  const hit = edgeLengths[res];
  if (hit !== undefined) return hit;
  checkRes(res, 'resolution');
  const m = getHexagonEdgeLengthAvg(res, UNITS.m);
  edgeLengths[res] = m;
  return m;
}

/**
 * The shard that owns a shard-resolution cell: FNV-1a (32-bit) over the
 * cell string, modulo shardCount. Stable across processes and restarts,
 * which Map iteration order or h3's numeric split would not guarantee as
 * simply. Throws RangeError when shardCount is not a positive integer.
 */
export function shardOfCell(parentCell: Cell, shardCount: number): ShardId {
  if (!Number.isInteger(shardCount) || shardCount < 1) throw new RangeError(`shardCount must be a positive integer, got ${shardCount}`);
  let h = 0x811c9dc5;
  for (let i = 0; i < parentCell.length; i++) {
    h ^= parentCell.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % shardCount;
}

export interface ShardMapOptions {
  /** Resolution whose cells are the unit of ownership. */
  shardRes: number;
  shardCount: number;
  /** Resolution of the cells callers ask about (the spatial index's). */
  indexRes: number;
  /** Entries each memo may hold before it is cleared. */
  cacheBudget?: number;
}

/**
 * Which shard owns which cell. A cell belongs to the shard its ancestor at
 * shardRes hashes to, so ownership moves in whole shard-resolution cells and
 * every node computes the same map with no coordination.
 */
export class ShardMap {
  readonly shardRes: number;
  readonly shardCount: number;
  readonly indexRes: number;
  readonly #owner: Map<Cell, ShardId> = new Map();
  readonly #near: BoundedCellCache<readonly ShardId[]>;
  readonly #budget: number;
  /** The answer for a single shard, shared so that case allocates nothing. */
  readonly #only: readonly ShardId[] = Object.freeze([0]);

  /** Throws RangeError when a resolution is outside 0..15, shardRes > indexRes or shardCount is not a positive integer. */
  constructor(options: ShardMapOptions) {
    checkRes(options.shardRes, 'shardRes');
    checkRes(options.indexRes, 'indexRes');
    if (options.shardRes > options.indexRes) {
      throw new RangeError(`shardRes (${options.shardRes}) must not be finer than indexRes (${options.indexRes})`);
    }
    if (!Number.isInteger(options.shardCount) || options.shardCount < 1) {
      throw new RangeError(`shardCount must be a positive integer, got ${options.shardCount}`);
    }
    this.shardRes = options.shardRes;
    this.shardCount = options.shardCount;
    this.indexRes = options.indexRes;
    this.#budget = options.cacheBudget ?? DEFAULT_CACHE_BUDGET;
    this.#near = new BoundedCellCache(this.#budget);
  }

  /** The shard owning `cell`. Throws RangeError when the cell is coarser than shardRes. */
  shardOf(cell: Cell): ShardId {
    const hit = this.#owner.get(cell);
    if (hit !== undefined) return hit;
    const res = getResolution(cell);
    if (res < this.shardRes) throw new RangeError(`cell ${cell} (res ${res}) is coarser than shardRes ${this.shardRes}`);
    const s = shardOfCell(res === this.shardRes ? cell : cellToParent(cell, this.shardRes), this.shardCount);
    if (this.#owner.size >= this.#budget) this.#owner.clear();
    this.#owner.set(cell, s);
    return s;
  }

  /** The shard owning the index cell that contains a point. */
  shardOfLatLng(lat: number, lng: number): ShardId {
    return this.shardOf(latLngToCell(lat, lng, this.indexRes));
  }

  /**
   * The shards owning any cell within k steps of `cell`, ascending, the
   * cell's own shard included. More than one entry means a search of radius k
   * from here crosses a shard edge, and a rider here is a border rider to be
   * mirrored to the others. The array is frozen and shared.
   */
  shardsNear(cell: Cell, k: number): readonly ShardId[] {
    if (this.shardCount === 1) return this.#only;
    const hit = this.#near.get(k, cell);
    if (hit !== undefined) return hit;
    checkK(k);
    // Many disk cells share an ancestor: hash each distinct ancestor once.
    const parents = new Set<Cell>();
    for (const c of gridDisk(cell, k)) parents.add(cellToParent(c, this.shardRes));
    const shards = new Set<ShardId>();
    for (const p of parents) shards.add(shardOfCell(p, this.shardCount));
    const out = Object.freeze([...shards].sort((a, b) => a - b));
    this.#near.set(k, cell, out, 1);
    return out;
  }
}

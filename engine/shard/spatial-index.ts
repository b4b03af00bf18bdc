/**
 * Which riders that can take work are in which H3 cell. Holds only ids and
 * cells (positions live in the Fleet), and is searched in rings of cells
 * outward from an order's pickup, the rings coming from CellGeometry's memo
 * so a search costs map look-ups, not h3 calls.
 */
import { CellGeometry } from '../geo/index.ts';
import type { Cell, RiderId } from '../types.ts';

export interface SearchOptions {
  /** Last ring searched (0 = the origin cell only). */
  maxK: number;
  /** Riders wanted; the search stops at this many. */
  limit: number;
  /** Riders for whom this returns false are skipped (and not counted). */
  accept?: (riderId: RiderId) => boolean;
}

const EMPTY: ReadonlySet<RiderId> = new Set();

export class SpatialIndex {
  readonly #geometry: CellGeometry;
  readonly #byCell = new Map<Cell, Set<RiderId>>();
  readonly #cellOf = new Map<RiderId, Cell>();

  /** Pass the shard's CellGeometry so the ring memo is shared with everything else on the shard. */
  constructor(geometry: CellGeometry = new CellGeometry()) {
    this.#geometry = geometry;
  }

  /** Riders indexed. */
  get size(): number {
    return this.#cellOf.size;
  }

  /** Cells holding at least one rider. */
  get cellCount(): number {
    return this.#byCell.size;
  }

  /** Inserts the rider in `cell`, moving it out of its previous cell. */
  set(riderId: RiderId, cell: Cell): void {
    const prev = this.#cellOf.get(riderId);
    if (prev === cell) return;
    if (prev !== undefined) this.#leave(riderId, prev);
    let riders = this.#byCell.get(cell);
    if (riders === undefined) {
      riders = new Set();
      this.#byCell.set(cell, riders);
    }
    riders.add(riderId);
    this.#cellOf.set(riderId, cell);
  }

  /** Takes the rider out; false when it was not indexed. */
  remove(riderId: RiderId): boolean {
    const prev = this.#cellOf.get(riderId);
    if (prev === undefined) return false;
    this.#leave(riderId, prev);
    this.#cellOf.delete(riderId);
    return true;
  }

  has(riderId: RiderId): boolean {
    return this.#cellOf.has(riderId);
  }

  cellOf(riderId: RiderId): Cell | undefined {
    return this.#cellOf.get(riderId);
  }

  /** The riders in one cell: a live view, not to be mutated or held across changes. */
  ridersIn(cell: Cell): ReadonlySet<RiderId> {
    return this.#byCell.get(cell) ?? EMPTY;
  }

  /**
   * Riders found ring by ring from `origin` out to maxK, nearest ring first,
   * at most `limit` of them; a ring is only started while fewer than `limit`
   * were found. Within a ring the order is insertion order of each cell.
   * Throws (from h3) on an invalid origin cell; a negative maxK finds nothing.
   */
  search(origin: Cell, opts: SearchOptions): RiderId[] {
    const { maxK, limit, accept } = opts;
    const out: RiderId[] = [];
    if (limit <= 0) return out;
    // The ring memo is asked only while the index holds someone: an empty shard never pays for h3.
    const total = this.#cellOf.size;
    if (total === 0) return out;
    // Once every indexed rider was met, outer rings cannot add anyone: stop before asking for them.
    let seen = 0;
    for (let k = 0; k <= maxK && seen < total; k++) {
      const ring = this.#geometry.ring(origin, k);
      for (let i = 0; i < ring.length; i++) {
        const riders = this.#byCell.get(ring[i]);
        if (riders === undefined) continue;
        seen += riders.size;
        for (const id of riders) {
          if (accept !== undefined && !accept(id)) continue;
          out.push(id);
          if (out.length >= limit) return out;
        }
      }
    }
    return out;
  }

  /** Empties the index. */
  clear(): void {
    this.#byCell.clear();
    this.#cellOf.clear();
  }

  #leave(riderId: RiderId, cell: Cell): void {
    const riders = this.#byCell.get(cell);
    if (riders === undefined) return;
    riders.delete(riderId);
    // Empty cells are dropped so the map tracks where riders are, not everywhere they have been.
    if (riders.size === 0) this.#byCell.delete(cell);
  }
}

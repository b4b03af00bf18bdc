/**
 * Compact per-shard GPS storage: one slot per rider in parallel typed arrays
 * (struct of arrays), so a fix touches a few numbers and never a statechart
 * or a fresh object. Like tile38's collection it is a pure data structure:
 * no sockets, no clock of its own (callers pass `now`), no locking.
 */
import { latLngToCell } from 'h3-js';
import type { FixRejectReason } from '../api.ts';
import type { Cell, RiderId } from '../types.ts';
import { edgeLengthM, haversineM } from '../geo/index.ts';

/** What applyFix did with a fix. Small ints so the hot loop compares numbers, not strings. */
export const FixOutcome = {
  Accepted: 0,
  /** Accepted, and the rider's index cell is now a different one. */
  AcceptedCellChanged: 1,
  /** Older than (or a repeat of) a fix already applied, by timestamp or seq: ignored, nothing changed. */
  Stale: 2,
  RejectedNaN: 3,
  RejectedRange: 4,
  RejectedTeleport: 5,
  RejectedFuture: 6,
} as const;
export type FixOutcome = (typeof FixOutcome)[keyof typeof FixOutcome];

/** The reasons the fleet itself rejects a fix for ('unknownRider' and 'offline' are the shard's). */
export type FleetRejectReason = Extract<FixRejectReason, 'nan' | 'outOfRange' | 'teleport' | 'future'>;

const REASONS: readonly (FleetRejectReason | undefined)[] = [undefined, undefined, undefined, 'nan', 'outOfRange', 'teleport', 'future'];

/** The wire reason for a rejecting outcome. Throws RangeError for Accepted, AcceptedCellChanged and Stale. */
export function fixRejectReason(outcome: FixOutcome): FleetRejectReason {
  const r = REASONS[outcome];
  if (r === undefined) throw new RangeError(`fix outcome ${outcome} is not a rejection`);
  return r;
}

/** True for Accepted and AcceptedCellChanged. */
export function isAccepted(outcome: FixOutcome): boolean {
  return outcome <= FixOutcome.AcceptedCellChanged;
}

/** By default the cell is recomputed after moving this fraction of the index resolution's average edge. */
export const CELL_RECOMPUTE_FRACTION = 0.1;
/** Default allowance for GPS jitter in the teleport test, so two fixes with the same timestamp may differ a little. */
export const DEFAULT_JITTER_M = 5;
const DEFAULT_CAPACITY = 1024;

export interface FleetOptions {
  /** H3 resolution of the cell kept per rider (the spatial index's). */
  indexRes: number;
  /** A fix implying a faster speed since the last accepted one is a teleport. */
  maxSpeedMps: number;
  /** A fix stamped further than this ahead of `now` is rejected as future. */
  maxFutureSkewMs: number;
  /**
   * Movement since the cell was last computed that triggers a recompute.
   * The stored cell may therefore lag the true one by up to this distance,
   * near a cell edge. Default CELL_RECOMPUTE_FRACTION of the edge length.
   */
  cellRecomputeM?: number;
  /** Metres of movement always allowed between fixes, whatever the time between them. */
  jitterM?: number;
  /** Slots allocated up front; arrays double when full. */
  initialCapacity?: number;
}

/** A slot as plain JSON-safe data, for handing a rider to another shard. */
export interface FleetRecord {
  riderId: RiderId;
  hasPosition: boolean;
  /** Degrees; 0 when hasPosition is false. */
  lat: number;
  lng: number;
  /** Phone time of the last accepted fix (epoch ms); 0 when hasPosition is false. */
  ts: number;
  /** Seq of the last accepted fix; -1 when none. */
  seq: number;
  /** Metres ridden and not yet taken by takeDistance. */
  distanceM: number;
}

export interface FleetCounters {
  accepted: number;
  stale: number;
  rejected: Record<FleetRejectReason, number>;
  /** latLngToCell calls made: what the recompute threshold saves. */
  cellLookups: number;
}

function validPoint(lat: number, lng: number, ts: number, seq: number): boolean {
  return (
    Number.isFinite(lat) && Number.isFinite(lng) && Number.isFinite(ts) && Number.isFinite(seq) &&
    lat >= -90 && lat <= 90 && lng >= -180 && lng <= 180
  );
}

export class Fleet {
  readonly indexRes: number;
  readonly maxSpeedMps: number;
  readonly maxFutureSkewMs: number;
  readonly cellRecomputeM: number;
  readonly jitterM: number;

  #capacity: number;
  #lat: Float64Array;
  #lng: Float64Array;
  #ts: Float64Array;
  /** Float64 rather than Uint32: seq -1 means "none yet" and phones may count past 2^32 over a long life. */
  #seq: Float64Array;
  #cellLat: Float64Array;
  #cellLng: Float64Array;
  #distance: Float64Array;
  #has: Uint8Array;
  readonly #cell: Cell[] = [];
  /** '' marks a free slot. */
  readonly #ids: RiderId[] = [];
  readonly #free: number[] = [];
  readonly #slots = new Map<RiderId, number>();
  /** Slots handed out so far (the high-water mark); slots below it are live or on the free list. */
  #used = 0;

  #accepted = 0;
  #stale = 0;
  #nan = 0;
  #range = 0;
  #teleport = 0;
  #future = 0;
  #lookups = 0;

  /** Throws RangeError on a bad resolution or capacity, or a negative / non-finite limit. */
  constructor(options: FleetOptions) {
    for (const k of ['maxSpeedMps', 'maxFutureSkewMs', 'cellRecomputeM', 'jitterM'] as const) {
      const v = options[k];
      if (v !== undefined && !(Number.isFinite(v) && v >= 0)) throw new RangeError(`fleet ${k} must be a non-negative number, got ${v}`);
    }
    if (!Number.isInteger(options.indexRes) || options.indexRes < 0 || options.indexRes > 15) {
      throw new RangeError(`fleet indexRes must be an H3 resolution 0..15, got ${options.indexRes}`);
    }
    const capacity = options.initialCapacity ?? DEFAULT_CAPACITY;
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`fleet initialCapacity must be a positive integer, got ${capacity}`);
    this.indexRes = options.indexRes;
    this.maxSpeedMps = options.maxSpeedMps;
    this.maxFutureSkewMs = options.maxFutureSkewMs;
    this.cellRecomputeM = options.cellRecomputeM ?? CELL_RECOMPUTE_FRACTION * edgeLengthM(options.indexRes);
    this.jitterM = options.jitterM ?? DEFAULT_JITTER_M;
    this.#capacity = capacity;
    this.#lat = new Float64Array(this.#capacity);
    this.#lng = new Float64Array(this.#capacity);
    this.#ts = new Float64Array(this.#capacity);
    this.#seq = new Float64Array(this.#capacity);
    this.#cellLat = new Float64Array(this.#capacity);
    this.#cellLng = new Float64Array(this.#capacity);
    this.#distance = new Float64Array(this.#capacity);
    this.#has = new Uint8Array(this.#capacity);
  }

  /** Riders held. */
  get size(): number {
    return this.#slots.size;
  }

  /** Allocated slots (live plus free); grows by doubling. */
  get capacity(): number {
    return this.#capacity;
  }

  /** The rider's slot, allocating one (a freed one first) when it has none. */
  add(riderId: RiderId): number {
    const existing = this.#slots.get(riderId);
    if (existing !== undefined) return existing;
    let slot: number;
    if (this.#free.length > 0) slot = this.#free.pop()!;
    else {
      if (this.#used === this.#capacity) this.#grow();
      slot = this.#used++;
    }
    this.#reset(slot);
    this.#ids[slot] = riderId;
    this.#slots.set(riderId, slot);
    return slot;
  }

  /** Frees the rider's slot for reuse; false when the rider was not here. */
  remove(riderId: RiderId): boolean {
    const slot = this.#slots.get(riderId);
    if (slot === undefined) return false;
    this.#slots.delete(riderId);
    this.#reset(slot);
    this.#ids[slot] = '';
    this.#free.push(slot);
    return true;
  }

  /** The rider's slot, or -1. */
  slotOf(riderId: RiderId): number {
    return this.#slots.get(riderId) ?? -1;
  }

  /** The rider in a slot, or undefined for a free or never-used slot. */
  riderIdAt(slot: number): RiderId | undefined {
    const id = this.#ids[slot];
    return id === undefined || id === '' ? undefined : id;
  }

  // Getters take a live slot and do no bounds checks: they sit on hot paths.
  lat(slot: number): number {
    return this.#lat[slot];
  }

  lng(slot: number): number {
    return this.#lng[slot];
  }

  /** Phone time of the last accepted fix. */
  ts(slot: number): number {
    return this.#ts[slot];
  }

  seq(slot: number): number {
    return this.#seq[slot];
  }

  /** The rider's cell at indexRes; '' until it has a position. */
  cell(slot: number): Cell {
    return this.#cell[slot];
  }

  hasPosition(slot: number): boolean {
    return this.#has[slot] === 1;
  }

  /** Metres accumulated since the last call; zeroes the counter. */
  takeDistance(slot: number): number {
    const d = this.#distance[slot];
    this.#distance[slot] = 0;
    return d;
  }

  /**
   * Sets a position outright (rider coming online at a known point, hand-off),
   * bypassing the stale / teleport / future checks and adding no distance. The
   * cell is always recomputed. Adds the rider if needed; returns its slot.
   * Throws RangeError on a non-finite or out-of-range point.
   */
  place(riderId: RiderId, lat: number, lng: number, ts: number, seq: number): number {
    if (!validPoint(lat, lng, ts, seq)) throw new RangeError(`invalid position for ${riderId}: ${lat},${lng} ts=${ts} seq=${seq}`);
    const slot = this.add(riderId);
    this.#lat[slot] = lat;
    this.#lng[slot] = lng;
    this.#ts[slot] = ts;
    this.#seq[slot] = seq;
    this.#has[slot] = 1;
    this.#computeCell(slot, lat, lng);
    return slot;
  }

  /**
   * Applies one GPS fix to a live slot and says what happened. Checks, in
   * order: non-finite → RejectedNaN; outside lat ±90 / lng ±180 →
   * RejectedRange; ts before the stored ts or seq not above the stored seq →
   * Stale; ts beyond now + maxFutureSkewMs → RejectedFuture; covering more
   * than maxSpeedMps × dt + jitterM since the last accepted fix →
   * RejectedTeleport. A rider's first fix skips the stale and teleport
   * checks. Only accepted fixes change the slot. Never throws, never
   * allocates unless the cell must be recomputed.
   */
  applyFix(slot: number, lat: number, lng: number, ts: number, seq: number, now: number): FixOutcome {
    if (!(Number.isFinite(lat) && Number.isFinite(lng) && Number.isFinite(ts) && Number.isFinite(seq))) {
      this.#nan++;
      return FixOutcome.RejectedNaN;
    }
    if (lat < -90 || lat > 90 || lng < -180 || lng > 180) {
      this.#range++;
      return FixOutcome.RejectedRange;
    }
    const had = this.#has[slot] === 1;
    // Retransmits and reordered packets are normal on mobile links: drop them silently.
    if (had && (ts < this.#ts[slot] || seq <= this.#seq[slot])) {
      this.#stale++;
      return FixOutcome.Stale;
    }
    if (ts > now + this.maxFutureSkewMs) {
      this.#future++;
      return FixOutcome.RejectedFuture;
    }
    if (had) {
      const moved = haversineM(this.#lat[slot], this.#lng[slot], lat, lng);
      // Measured against the last accepted fix, so after a real jump the allowance grows with time and the rider recovers.
      if (moved > (this.maxSpeedMps * (ts - this.#ts[slot])) / 1000 + this.jitterM) {
        this.#teleport++;
        return FixOutcome.RejectedTeleport;
      }
      this.#distance[slot] += moved;
    }
    this.#lat[slot] = lat;
    this.#lng[slot] = lng;
    this.#ts[slot] = ts;
    this.#seq[slot] = seq;
    this.#has[slot] = 1;
    this.#accepted++;
    // latLngToCell costs about a microsecond and a string: skip it while the rider stays near where it was last computed.
    if (had && haversineM(this.#cellLat[slot], this.#cellLng[slot], lat, lng) <= this.cellRecomputeM) return FixOutcome.Accepted;
    return this.#computeCell(slot, lat, lng) ? FixOutcome.AcceptedCellChanged : FixOutcome.Accepted;
  }

  /** The slot as plain data, or null when the rider is not here. */
  export(riderId: RiderId): FleetRecord | null {
    const slot = this.#slots.get(riderId);
    if (slot === undefined) return null;
    const has = this.#has[slot] === 1;
    return {
      riderId,
      hasPosition: has,
      lat: has ? this.#lat[slot] : 0,
      lng: has ? this.#lng[slot] : 0,
      ts: has ? this.#ts[slot] : 0,
      seq: this.#seq[slot],
      distanceM: this.#distance[slot],
    };
  }

  /**
   * Restores a record made by export (on another shard), adding the rider if
   * needed and overwriting its slot; the cell is recomputed here. Returns the
   * slot. Throws RangeError when the record's position is invalid.
   */
  import(record: FleetRecord): number {
    if (!(Number.isFinite(record.distanceM) && record.distanceM >= 0)) {
      throw new RangeError(`invalid distanceM for ${record.riderId}: ${record.distanceM}`);
    }
    let slot: number;
    if (record.hasPosition) slot = this.place(record.riderId, record.lat, record.lng, record.ts, record.seq);
    else {
      slot = this.add(record.riderId);
      this.#reset(slot);
      if (Number.isFinite(record.seq)) this.#seq[slot] = record.seq;
    }
    this.#distance[slot] = record.distanceM;
    return slot;
  }

  /** A copy of the running counts since construction. */
  counters(): FleetCounters {
    return {
      accepted: this.#accepted,
      stale: this.#stale,
      rejected: { nan: this.#nan, outOfRange: this.#range, teleport: this.#teleport, future: this.#future },
      cellLookups: this.#lookups,
    };
  }

  /** Recomputes the cell at (lat, lng) and remembers where; true when it differs from the stored one. */
  #computeCell(slot: number, lat: number, lng: number): boolean {
    this.#lookups++;
    this.#cellLat[slot] = lat;
    this.#cellLng[slot] = lng;
    const c = latLngToCell(lat, lng, this.indexRes);
    if (c === this.#cell[slot]) return false;
    this.#cell[slot] = c;
    return true;
  }

  #reset(slot: number): void {
    this.#lat[slot] = 0;
    this.#lng[slot] = 0;
    this.#ts[slot] = 0;
    this.#seq[slot] = -1;
    this.#cellLat[slot] = 0;
    this.#cellLng[slot] = 0;
    this.#distance[slot] = 0;
    this.#has[slot] = 0;
    this.#cell[slot] = '';
  }

  #grow(): void {
    const cap = this.#capacity * 2;
    const grow64 = (a: Float64Array): Float64Array => {
      const b = new Float64Array(cap);
      b.set(a);
      return b;
    };
    this.#lat = grow64(this.#lat);
    this.#lng = grow64(this.#lng);
    this.#ts = grow64(this.#ts);
    this.#seq = grow64(this.#seq);
    this.#cellLat = grow64(this.#cellLat);
    this.#cellLng = grow64(this.#cellLng);
    this.#distance = grow64(this.#distance);
    const has = new Uint8Array(cap);
    has.set(this.#has);
    this.#has = has;
    this.#capacity = cap;
  }
}

/**
 * Loads one Meal Delivery Routing Problem instance (Reyes et al., "Meal
 * Delivery Routing: The Grubhub Instances", 2018; github.com/grubhub/mdrplib).
 *
 * An instance is a folder of tab-separated text files, each with a header
 * line. Columns are found by name, never by position, so any instance of the
 * set loads:
 *
 *   restaurants.txt          restaurant  x  y
 *   orders.txt               order  x  y  placement_time  restaurant  ready_time
 *   couriers.txt             courier  x  y  on_time  off_time
 *   instance_parameters.txt  meters_per_minute  pickup service minutes  dropoff service minutes
 *                            target click-to-door  maximum click-to-door  pay per order  guaranteed pay per hour
 *
 * Coordinates are metres on a plane (UTM with the zone dropped), times are
 * minutes from the start of the day. The engine works in degrees, so every
 * point is also projected to lat/lng (see PlaneProjection).
 */
import { readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import type { LatLng } from '../../engine/index.ts';

/** Earth's authalic radius, the one h3 and the engine's haversine use, so projected distances agree with the engine's. */
export const EARTH_RADIUS_M = 6_371_007.180918475;

/**
 * Bengaluru, MG Road: the city the engine's tests and the simulator use. The
 * MDRP data carries no real place (the UTM zone was discarded), so any origin
 * will do; a low latitude keeps the equirectangular error small.
 */
export const DEFAULT_ORIGIN: LatLng = { lat: 12.9716, lng: 77.5946 };

const RAD = Math.PI / 180;

/**
 * Equirectangular projection between a local plane in metres and lat/lng.
 * The plane point (originX, originY) maps to `origin`; x grows east, y north.
 * Exact both ways (it is linear), and distances computed on the sphere from
 * the projected points stay within a fraction of a percent of the planar
 * ones over a city: the east-west scale is right at the origin's latitude
 * and off by tan(lat) × Δy / R elsewhere (0.04 % 10 km north of Bengaluru).
 */
export class PlaneProjection {
  readonly origin: LatLng;
  readonly originX: number;
  readonly originY: number;
  readonly #mPerDegLat: number;
  readonly #mPerDegLng: number;

  /** @throws RangeError when the origin is not a finite point with |lat| < 85°. */
  constructor(origin: LatLng, originX = 0, originY = 0) {
    if (!(Number.isFinite(origin.lat) && Number.isFinite(origin.lng) && Math.abs(origin.lat) < 85 && Math.abs(origin.lng) <= 180)) {
      throw new RangeError(`projection origin must be a finite point with |lat| < 85, got ${origin.lat},${origin.lng}`);
    }
    if (!(Number.isFinite(originX) && Number.isFinite(originY))) throw new RangeError('projection plane origin must be finite');
    this.origin = { lat: origin.lat, lng: origin.lng };
    this.originX = originX;
    this.originY = originY;
    this.#mPerDegLat = EARTH_RADIUS_M * RAD;
    this.#mPerDegLng = EARTH_RADIUS_M * RAD * Math.cos(origin.lat * RAD);
  }

  toLatLng(x: number, y: number): LatLng {
    return {
      lat: this.origin.lat + (y - this.originY) / this.#mPerDegLat,
      lng: this.origin.lng + (x - this.originX) / this.#mPerDegLng,
    };
  }

  toPlane(p: LatLng): { x: number; y: number } {
    return {
      x: this.originX + (p.lng - this.origin.lng) * this.#mPerDegLng,
      y: this.originY + (p.lat - this.origin.lat) * this.#mPerDegLat,
    };
  }
}

/** instance_parameters.txt, in the units of the file. */
export interface MdrpParameters {
  /** Courier speed; the travel time of a move is ceil(distance / metersPerMinute) minutes. */
  metersPerMinute: number;
  /** s_r: park, walk in, collect, walk out. Pickup happens after the first half, departure after the second. */
  pickupServiceMin: number;
  /** s_o: the same at the customer. */
  dropoffServiceMin: number;
  /** τ: target click-to-door time. */
  targetClickToDoorMin: number;
  /** τ_max: maximum allowed click-to-door time. */
  maxClickToDoorMin: number;
  /** p1: paid per delivered order. */
  payPerOrder: number;
  /** p2: guaranteed minimum per hour on duty. */
  guaranteedPayPerHour: number;
}

export interface MdrpRestaurant {
  id: string;
  x: number;
  y: number;
  latLng: LatLng;
}

export interface MdrpOrder {
  id: string;
  /** Drop-off location, plane metres. */
  x: number;
  y: number;
  /** Drop-off location, projected. */
  latLng: LatLng;
  placementMin: number;
  restaurantId: string;
  readyMin: number;
}

export interface MdrpCourier {
  id: string;
  /** On-location: where the courier is at its on-time. */
  x: number;
  y: number;
  latLng: LatLng;
  onMin: number;
  offMin: number;
}

export interface MdrpInstance {
  /** The folder's name, e.g. 8o100t100s1p100. */
  name: string;
  dir: string;
  params: MdrpParameters;
  restaurants: MdrpRestaurant[];
  restaurantById: Map<string, MdrpRestaurant>;
  /** In file order. */
  orders: MdrpOrder[];
  couriers: MdrpCourier[];
  /** Maps this instance's plane (centred on its bounding box) to lat/lng. */
  projection: PlaneProjection;
}

/** A malformed instance file: names the file and the 1-based line at fault (0 when the file itself is missing). */
export class MdrpFormatError extends Error {
  override readonly name = 'MdrpFormatError';
  readonly file: string;
  readonly line: number;
  constructor(file: string, line: number, reason: string, options?: ErrorOptions) {
    super(line > 0 ? `${file}:${line}: ${reason}` : `${file}: ${reason}`, options);
    this.file = file;
    this.line = line;
  }
}

export interface LoadOptions {
  /** Where the centre of the instance's bounding box lands. Default DEFAULT_ORIGIN. */
  origin?: LatLng;
}

/**
 * Reads and checks the four files of an instance folder.
 * @throws MdrpFormatError naming the file and line when a file is missing, a
 * column is missing, a field is not a number, an id repeats, an order names
 * an unknown restaurant, or times are inconsistent (off before on, ready
 * before placement).
 */
export async function loadInstance(dir: string, options: LoadOptions = {}): Promise<MdrpInstance> {
  const root = resolve(dir);
  const [restaurantsTable, ordersTable, couriersTable, paramsTable] = await Promise.all([
    readTable(join(root, 'restaurants.txt')),
    readTable(join(root, 'orders.txt')),
    readTable(join(root, 'couriers.txt')),
    readTable(join(root, 'instance_parameters.txt')),
  ]);

  const params = parseParameters(paramsTable);

  const rawRestaurants = restaurantsTable.rows.map((row) => ({
    id: restaurantsTable.id(row, ['restaurant', 'restaurant_id', 'id']),
    x: restaurantsTable.num(row, ['x']),
    y: restaurantsTable.num(row, ['y']),
    line: row.line,
  }));
  const restaurantLines = uniqueIds(restaurantsTable.file, rawRestaurants);

  const rawOrders = ordersTable.rows.map((row) => {
    const placementMin = ordersTable.time(row, ['placement_time', 'placement']);
    const readyMin = ordersTable.time(row, ['ready_time', 'ready']);
    const restaurantId = ordersTable.id(row, ['restaurant', 'restaurant_id']);
    if (readyMin < placementMin) throw new MdrpFormatError(ordersTable.file, row.line, `ready_time ${readyMin} is before placement_time ${placementMin}`);
    if (!restaurantLines.has(restaurantId)) {
      throw new MdrpFormatError(ordersTable.file, row.line, `restaurant ${restaurantId} is not in restaurants.txt`);
    }
    return {
      id: ordersTable.id(row, ['order', 'order_id', 'id']),
      x: ordersTable.num(row, ['x']),
      y: ordersTable.num(row, ['y']),
      placementMin,
      restaurantId,
      readyMin,
      line: row.line,
    };
  });
  uniqueIds(ordersTable.file, rawOrders);

  const rawCouriers = couriersTable.rows.map((row) => {
    const onMin = couriersTable.time(row, ['on_time', 'on']);
    const offMin = couriersTable.time(row, ['off_time', 'off']);
    if (!(offMin > onMin)) throw new MdrpFormatError(couriersTable.file, row.line, `off_time ${offMin} is not after on_time ${onMin}`);
    return {
      id: couriersTable.id(row, ['courier', 'courier_id', 'id']),
      x: couriersTable.num(row, ['x']),
      y: couriersTable.num(row, ['y']),
      onMin,
      offMin,
      line: row.line,
    };
  });
  uniqueIds(couriersTable.file, rawCouriers);

  // Centre the plane on the data so the projection's error is smallest where the points are.
  const all = [...rawRestaurants, ...rawOrders, ...rawCouriers];
  let minX = Infinity;
  let maxX = -Infinity;
  let minY = Infinity;
  let maxY = -Infinity;
  for (const p of all) {
    minX = Math.min(minX, p.x);
    maxX = Math.max(maxX, p.x);
    minY = Math.min(minY, p.y);
    maxY = Math.max(maxY, p.y);
  }
  const projection = all.length > 0 ? new PlaneProjection(options.origin ?? DEFAULT_ORIGIN, (minX + maxX) / 2, (minY + maxY) / 2) : new PlaneProjection(options.origin ?? DEFAULT_ORIGIN);

  const restaurants: MdrpRestaurant[] = rawRestaurants.map(({ id, x, y }) => ({ id, x, y, latLng: projection.toLatLng(x, y) }));
  const orders: MdrpOrder[] = rawOrders.map(({ id, x, y, placementMin, restaurantId, readyMin }) => ({
    id,
    x,
    y,
    latLng: projection.toLatLng(x, y),
    placementMin,
    restaurantId,
    readyMin,
  }));
  const couriers: MdrpCourier[] = rawCouriers.map(({ id, x, y, onMin, offMin }) => ({ id, x, y, latLng: projection.toLatLng(x, y), onMin, offMin }));

  return {
    name: basename(root),
    dir: root,
    params,
    restaurants,
    restaurantById: new Map(restaurants.map((r) => [r.id, r])),
    orders,
    couriers,
    projection,
  };
}

function parseParameters(table: Table): MdrpParameters {
  if (table.rows.length !== 1) {
    const line = table.rows[1]?.line ?? table.headerLine;
    throw new MdrpFormatError(table.file, line, `expected exactly one row of parameters, found ${table.rows.length}`);
  }
  const row = table.rows[0];
  let metersPerMinute: number;
  if (table.has(['meters_per_minute'])) {
    metersPerMinute = table.num(row, ['meters_per_minute']);
  } else {
    // The paper's wording: travel time = ceil(γ × distance), so γ is minutes per metre.
    const gamma = table.num(row, ['travel_time_multiplier', 'multiplier']);
    if (!(gamma > 0)) throw new MdrpFormatError(table.file, row.line, `travel time multiplier must be positive, got ${gamma}`);
    metersPerMinute = 1 / gamma;
  }
  if (!(metersPerMinute > 0)) throw new MdrpFormatError(table.file, row.line, `meters_per_minute must be positive, got ${metersPerMinute}`);
  const params: MdrpParameters = {
    metersPerMinute,
    pickupServiceMin: table.time(row, ['pickup_service_minutes', 'service_time_at_pickup']),
    dropoffServiceMin: table.time(row, ['dropoff_service_minutes', 'service_time_at_drop_off', 'service_time_at_dropoff']),
    targetClickToDoorMin: table.time(row, ['target_click_to_door', 'target_click_to_door_time']),
    maxClickToDoorMin: table.time(row, ['maximum_click_to_door', 'maximum_click_to_door_time']),
    payPerOrder: table.time(row, ['pay_per_order', 'per_order_pay']),
    guaranteedPayPerHour: table.time(row, ['guaranteed_pay_per_hour', 'per_hour_pay']),
  };
  if (params.maxClickToDoorMin < params.targetClickToDoorMin) {
    throw new MdrpFormatError(table.file, row.line, `maximum click-to-door ${params.maxClickToDoorMin} is below the target ${params.targetClickToDoorMin}`);
  }
  return params;
}

/** Ids must be unique within a file; returns id → line. */
function uniqueIds(file: string, rows: Array<{ id: string; line: number }>): Map<string, number> {
  const seen = new Map<string, number>();
  for (const r of rows) {
    const first = seen.get(r.id);
    if (first !== undefined) throw new MdrpFormatError(file, r.line, `id ${r.id} repeats (first on line ${first})`);
    seen.set(r.id, r.line);
  }
  return seen;
}

// ---------------------------------------------------------------- tables

interface Row {
  /** 1-based line in the file. */
  line: number;
  fields: string[];
}

/** A parsed header plus rows, with typed accessors that name the file, line and column on failure. */
class Table {
  readonly file: string;
  readonly headerLine: number;
  readonly rows: Row[];
  readonly #columns: Map<string, number>;
  readonly #header: string[];

  constructor(file: string, headerLine: number, header: string[], rows: Row[]) {
    this.file = file;
    this.headerLine = headerLine;
    this.#header = header;
    this.#columns = new Map(header.map((h, i) => [normalise(h), i]));
    this.rows = rows;
  }

  has(names: string[]): boolean {
    return names.some((n) => this.#columns.has(n));
  }

  /** Index of the first of `names` present; the first name is the canonical one used in messages. */
  #column(names: string[]): number {
    for (const n of names) {
      const i = this.#columns.get(n);
      if (i !== undefined) return i;
    }
    throw new MdrpFormatError(this.file, this.headerLine, `missing column ${names[0]} (header has: ${this.#header.join(', ')})`);
  }

  id(row: Row, names: string[]): string {
    const v = row.fields[this.#column(names)];
    if (v.length === 0) throw new MdrpFormatError(this.file, row.line, `column ${names[0]} is empty`);
    return v;
  }

  num(row: Row, names: string[]): number {
    const raw = row.fields[this.#column(names)];
    const v = raw.length === 0 ? NaN : Number(raw);
    if (!Number.isFinite(v)) throw new MdrpFormatError(this.file, row.line, `column ${names[0]}: '${raw}' is not a number`);
    return v;
  }

  /** A non-negative number: times, durations and pay. */
  time(row: Row, names: string[]): number {
    const v = this.num(row, names);
    if (v < 0) throw new MdrpFormatError(this.file, row.line, `column ${names[0]}: ${v} is negative`);
    return v;
  }
}

/** "pickup service minutes", "target click-to-door", "on_time" → pickup_service_minutes, target_click_to_door, on_time. */
function normalise(name: string): string {
  return name
    .trim()
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '');
}

async function readTable(file: string): Promise<Table> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
    throw new MdrpFormatError(file, 0, `cannot read the file (${code})`, { cause: err });
  }
  const lines = text.split(/\r?\n/);
  const headerIndex = lines.findIndex((l) => l.trim().length > 0);
  if (headerIndex < 0) throw new MdrpFormatError(file, 1, 'the file is empty; expected a header line');
  const header = lines[headerIndex];
  // The published files are tab-separated (names such as "pickup service minutes" hold spaces); commas or runs of spaces are accepted for hand-made copies.
  const split: (l: string) => string[] = header.includes('\t')
    ? (l) => l.split('\t').map((f) => f.trim())
    : header.includes(',')
      ? (l) => l.split(',').map((f) => f.trim())
      : (l) => l.trim().split(/\s+/);
  const columns = split(header);
  const rows: Row[] = [];
  for (let i = headerIndex + 1; i < lines.length; i++) {
    const l = lines[i];
    if (l.trim().length === 0) continue;
    const fields = split(l);
    if (fields.length !== columns.length) {
      throw new MdrpFormatError(file, i + 1, `expected ${columns.length} fields (${columns.join(', ')}), found ${fields.length}`);
    }
    rows.push({ line: i + 1, fields });
  }
  return new Table(file, headerIndex + 1, columns, rows);
}

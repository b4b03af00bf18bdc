/**
 * Engine shapes <-> quickdash.v1 messages, in both directions, so servers and
 * clients convert the same way. What the wire cannot carry exactly (a
 * fractional int32/int64, data JSON cannot hold) is refused here with the
 * same error classes the SQL store throws, before anything is sent.
 */
import type {
  LiveStream,
  PaymentIntent,
  Refund,
  RiderDailyStats,
  RiderStatsDelta,
  Snapshot,
  StoreInfo,
  StoredEvent,
} from '../../engine/index.ts';
import type { CatalogReservation, ReservationStatus, StockLevel, StoreRecord, StoredReservation, WeeklyHours } from '../catalog/index.ts';
import { WEEKDAYS } from '../catalog/index.ts';
import { ReservationStatus as PbReservationStatus, Weekday as PbWeekday } from '../../protos/gen/quickdash/v1/catalog.ts';
import type {
  OpeningHours as PbOpeningHours,
  Reservation as PbReservation,
  StockLevel as PbStockLevel,
  UpsertStoreRequest,
} from '../../protos/gen/quickdash/v1/catalog.ts';
import type {
  PaymentIntent as PbPaymentIntent,
  RiderDailyStats as PbRiderDailyStats,
  Store as PbStore,
} from '../../protos/gen/quickdash/v1/common.ts';
import type {
  LiveStream as PbLiveStream,
  RiderStatsDelta as PbRiderStatsDelta,
  Snapshot as PbSnapshot,
  StoredEvent as PbStoredEvent,
} from '../../protos/gen/quickdash/v1/persistence.ts';
import type { RefundResponse } from '../../protos/gen/quickdash/v1/payments.ts';

const INT32_MAX = 2 ** 31 - 1;
const EMPTY = Buffer.alloc(0);

// ------------------------------------------------------------------ JSON as bytes

/** persistence.proto: undefined travels as empty bytes, anything else as its JSON text. */
export function jsonBytes(value: unknown): Buffer {
  if (value === undefined) return EMPTY;
  // JSON.stringify throws on BigInt and cycles; a bare function or symbol gives undefined, which would vanish.
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError('value is not JSON-serialisable');
  return Buffer.from(text, 'utf8');
}

export function fromJsonBytes(bytes: Uint8Array): unknown {
  return bytes.length === 0 ? undefined : JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
}

// ------------------------------------------------------------------ checks the wire needs

function int32(name: string, v: unknown, min = -INT32_MAX - 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > INT32_MAX) throw new RangeError(`${name} must be an integer in ${min}..${INT32_MAX}: ${String(v)}`);
  return v;
}

function int64(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw new RangeError(`${name} must be a safe integer: ${String(v)}`);
  return v;
}

// ------------------------------------------------------------------ persistence

export function eventToPb(e: StoredEvent): PbStoredEvent {
  if (typeof e.stream !== 'string' || e.stream.length === 0) throw new TypeError('event stream must be a non-empty string');
  if (typeof e.type !== 'string' || e.type.length === 0) throw new TypeError('event type must be a non-empty string');
  return { stream: e.stream, seq: int32('event seq', e.seq, 1), type: e.type, dataJson: jsonBytes(e.data), at: int64('event at', e.at), final: e.final === true };
}

export function eventFromPb(p: PbStoredEvent): StoredEvent {
  const e: StoredEvent = { stream: p.stream, seq: p.seq, type: p.type, data: fromJsonBytes(p.dataJson), at: p.at };
  // The port's events carry `final` only when set (the stores read them back that way).
  if (p.final) e.final = true;
  return e;
}

export function snapshotToPb(s: Snapshot): PbSnapshot {
  if (typeof s.stream !== 'string' || s.stream.length === 0) throw new TypeError('snapshot stream must be a non-empty string');
  return { stream: s.stream, seq: int32('snapshot seq', s.seq, 0), stateJson: jsonBytes(s.state), at: int64('snapshot at', s.at) };
}

export function snapshotFromPb(p: PbSnapshot): Snapshot {
  return { stream: p.stream, seq: p.seq, state: fromJsonBytes(p.stateJson), at: p.at };
}

/** Earnings are whole paise on the wire (int64 earnings_paise); a fraction would otherwise be cut silently. */
export function deltaToPb(d: RiderStatsDelta): PbRiderStatsDelta {
  const distanceM = d.distanceM ?? 0;
  if (typeof distanceM !== 'number') throw new RangeError(`stats distanceM must be a number: ${String(distanceM)}`);
  return {
    riderId: d.riderId,
    day: d.day,
    deliveries: int32('stats deliveries', d.deliveries ?? 0),
    onTime: int32('stats onTime', d.onTime ?? 0),
    // NaN and infinities travel as doubles; the store refuses them with its own error.
    distanceM,
    earningsPaise: int64('stats earnings (paise)', d.earnings ?? 0),
    offers: int32('stats offers', d.offers ?? 0),
    accepts: int32('stats accepts', d.accepts ?? 0),
  };
}

/** Zero fields change nothing (persistence.proto), so they are left out of the port's delta. */
export function deltaFromPb(p: PbRiderStatsDelta): RiderStatsDelta {
  const d: RiderStatsDelta = { riderId: p.riderId, day: p.day };
  if (p.deliveries) d.deliveries = p.deliveries;
  if (p.onTime) d.onTime = p.onTime;
  if (p.distanceM || Number.isNaN(p.distanceM)) d.distanceM = p.distanceM;
  if (p.earningsPaise) d.earnings = p.earningsPaise;
  if (p.offers) d.offers = p.offers;
  if (p.accepts) d.accepts = p.accepts;
  return d;
}

export function liveToPb(l: LiveStream): PbLiveStream {
  return { stream: l.stream, snapshot: l.snapshot ? snapshotToPb(l.snapshot) : undefined, events: l.events.map(eventToPb) };
}

export function liveFromPb(p: PbLiveStream): LiveStream {
  return { stream: p.stream, snapshot: p.snapshot ? snapshotFromPb(p.snapshot) : null, events: p.events.map(eventFromPb) };
}

export function statsToPb(s: RiderDailyStats): PbRiderDailyStats {
  return {
    riderId: s.riderId,
    day: s.day,
    deliveries: s.deliveries,
    onTime: s.onTime,
    distanceM: s.distanceM,
    // The SQL column is a double; the wire carries whole paise, which is all the engine ever adds.
    earningsPaise: Math.round(s.earnings),
    offers: s.offers,
    accepts: s.accepts,
    onTimeRate: s.onTimeRate ?? undefined,
    acceptanceRate: s.acceptanceRate ?? undefined,
  };
}

export function statsFromPb(p: PbRiderDailyStats): RiderDailyStats {
  return {
    riderId: p.riderId,
    day: p.day,
    deliveries: p.deliveries,
    onTime: p.onTime,
    distanceM: p.distanceM,
    earnings: p.earningsPaise,
    offers: p.offers,
    accepts: p.accepts,
    onTimeRate: p.onTimeRate ?? null,
    acceptanceRate: p.acceptanceRate ?? null,
  };
}

// ------------------------------------------------------------------ catalog

export function storeToPb(s: StoreInfo): PbStore {
  return { storeId: s.storeId, name: s.name, location: { lat: s.location.lat, lng: s.location.lng }, timeZone: s.timeZone, open: s.open, prepMinutes: s.prepMinutes };
}

export function storeFromPb(p: PbStore | undefined): StoreInfo {
  if (!p) throw new TypeError('response has no store');
  return { storeId: p.storeId, name: p.name, location: { lat: p.location?.lat ?? 0, lng: p.location?.lng ?? 0 }, timeZone: p.timeZone, open: p.open, prepMinutes: p.prepMinutes };
}

const STATUS_TO_PB: Record<ReservationStatus, PbReservationStatus> = {
  reserved: PbReservationStatus.RESERVATION_STATUS_RESERVED,
  released: PbReservationStatus.RESERVATION_STATUS_RELEASED,
  committed: PbReservationStatus.RESERVATION_STATUS_COMMITTED,
};

function statusFromPb(s: PbReservationStatus): ReservationStatus {
  if (s === PbReservationStatus.RESERVATION_STATUS_RELEASED) return 'released';
  if (s === PbReservationStatus.RESERVATION_STATUS_COMMITTED) return 'committed';
  if (s === PbReservationStatus.RESERVATION_STATUS_RESERVED) return 'reserved';
  throw new TypeError(`unknown reservation status ${s}`);
}

/** A reservation as stored (no store attached) or as reserve() returns it (with the store and `repeated`). */
export function reservationToPb(r: StoredReservation & { store?: StoreInfo; repeated?: boolean }): PbReservation {
  return {
    orderId: r.orderId,
    storeId: r.storeId,
    lines: r.lines.map((l) => ({ productId: l.productId, quantity: l.quantity, unitPricePaise: l.unitPricePaise })),
    totalPaise: r.totalPaise,
    store: r.store ? storeToPb(r.store) : undefined,
    status: STATUS_TO_PB[r.status],
    createdAt: r.createdAt,
    repeated: r.repeated ?? false,
  };
}

export function storedReservationFromPb(p: PbReservation): StoredReservation {
  return {
    orderId: p.orderId,
    storeId: p.storeId,
    status: statusFromPb(p.status),
    lines: p.lines.map((l) => ({ productId: l.productId, quantity: l.quantity, unitPricePaise: l.unitPricePaise })),
    totalPaise: p.totalPaise,
    createdAt: p.createdAt,
  };
}

export function reservationFromPb(p: PbReservation | undefined): CatalogReservation {
  if (!p) throw new TypeError('response has no reservation');
  return { ...storedReservationFromPb(p), store: storeFromPb(p.store), repeated: p.repeated };
}

/** hours.ts keys weekdays from Sunday; the proto numbers them ISO 8601, Monday = 1 ... Sunday = 7. */
const WEEKDAY_OF_PB = new Map<number, (typeof WEEKDAYS)[number]>([
  [PbWeekday.WEEKDAY_MONDAY, 'mon'],
  [PbWeekday.WEEKDAY_TUESDAY, 'tue'],
  [PbWeekday.WEEKDAY_WEDNESDAY, 'wed'],
  [PbWeekday.WEEKDAY_THURSDAY, 'thu'],
  [PbWeekday.WEEKDAY_FRIDAY, 'fri'],
  [PbWeekday.WEEKDAY_SATURDAY, 'sat'],
  [PbWeekday.WEEKDAY_SUNDAY, 'sun'],
]);
const PB_OF_WEEKDAY = new Map([...WEEKDAY_OF_PB].map(([k, v]) => [v, k]));

export function hoursToPb(hours: WeeklyHours): PbOpeningHours[] {
  const out: PbOpeningHours[] = [];
  for (const day of WEEKDAYS) for (const [start, end] of hours[day] ?? []) out.push({ weekday: PB_OF_WEEKDAY.get(day)!, start, end });
  return out;
}

/** @returns null when a weekday is unspecified or unknown (the caller refuses the field). */
export function hoursFromPb(list: PbOpeningHours[]): WeeklyHours | null {
  const hours: Partial<Record<(typeof WEEKDAYS)[number], Array<readonly [string, string]>>> = {};
  for (const h of list) {
    const day = WEEKDAY_OF_PB.get(h.weekday);
    if (!day) return null;
    (hours[day] ??= []).push([h.start, h.end]);
  }
  return hours;
}

export function storeRecordToPb(s: StoreRecord): UpsertStoreRequest {
  return {
    storeId: s.storeId,
    name: s.name,
    location: { lat: s.location.lat, lng: s.location.lng },
    timeZone: s.timeZone,
    prepMinutes: s.prepMinutes,
    hours: hoursToPb(s.hours),
    paused: s.paused ?? false,
  };
}

export function stockToPb(s: StockLevel): PbStockLevel {
  return { onHand: s.onHand, reserved: s.reserved, available: s.available };
}

// ------------------------------------------------------------------ payments

export function intentToPb(i: PaymentIntent): PbPaymentIntent {
  return { orderId: i.orderId, providerOrderId: i.providerOrderId, amountPaise: i.amountPaise, currency: i.currency };
}

export function intentFromPb(p: PbPaymentIntent): PaymentIntent {
  return { orderId: p.orderId, providerOrderId: p.providerOrderId, amountPaise: p.amountPaise, currency: p.currency };
}

export function refundFromPb(p: RefundResponse): Refund {
  return { orderId: p.orderId, providerRefundId: p.providerRefundId, amountPaise: p.amountPaise };
}

/**
 * CatalogPort over SQL: stores, products and stock on Postgres (pg) or
 * embedded PGlite, with the same statements on both.
 *
 * reserve(): the orders that arrive while earlier reservations are in
 * flight go together to reserve_orders() (schema.ts), one statement and so
 * one transaction: claims, then every stock row locked in one global order,
 * then per order an all-or-nothing check and take. Nothing is ever
 * oversold, a refused order holds nothing, and two batches cannot deadlock.
 * release() and commit() lock the reservation row, then its stock rows in
 * the same byte order, then apply all lines in one statement.
 */
import pino, { type Logger } from 'pino';
import { DispatchError, invalidArgument } from '../../engine/index.ts';
import type { CatalogPort, ErrorCode, LatLng, OrderLine, Reservation, StoreId, StoreInfo } from '../../engine/index.ts';
import { checkSchemaName } from '../sql/index.ts';
import type { SqlClient, SqlQueryable } from '../sql/index.ts';
import { checkHours, checkTimeZone, localTime, openAt, type WeeklyHours } from './hours.ts';
import { DEFAULT_CATALOG_SCHEMA, catalogStatements } from './schema.ts';

/** Most lines one order may have. */
export const MAX_LINES = 100;
/** Most units of one product one order may ask for (after merging repeated lines). */
export const MAX_QUANTITY = 1000;
/** Longest store, product or order id accepted. */
export const MAX_ID_LENGTH = 200;
const INT4_MAX = 2 ** 31 - 1;
/** Most store rows cached at once; past it the cache starts over. */
const STORE_CACHE_MAX = 10_000;

/** A store as an administrator or the seed writes it. */
export interface StoreRecord {
  storeId: StoreId;
  name: string;
  location: LatLng;
  timeZone: string;
  prepMinutes: number;
  /** Paused stores take no orders whatever their hours (default false). */
  paused?: boolean;
  hours: WeeklyHours;
}

export interface ProductRecord {
  storeId: StoreId;
  productId: string;
  name: string;
  pricePaise: number;
  /** Inactive products cannot be reserved (default true). */
  active?: boolean;
}

export interface StockLevel {
  onHand: number;
  reserved: number;
  /** onHand - reserved: what the next order can take. */
  available: number;
}

export type ReservationStatus = 'reserved' | 'released' | 'committed';

/** A Reservation plus when it was taken; what SqlCatalog.reserve() returns. */
export interface CatalogReservation extends Reservation {
  status: ReservationStatus;
  /** The `at` of the reserve() that created it (epoch ms). */
  createdAt: number;
}

export interface StoredReservation {
  orderId: string;
  storeId: StoreId;
  status: ReservationStatus;
  lines: Array<OrderLine & { unitPricePaise: number }>;
  totalPaise: number;
  createdAt: number;
}

export interface CatalogCounts {
  stores: number;
  products: number;
  activeProducts: number;
  unitsOnHand: number;
  unitsReserved: number;
  reservations: number;
}

export interface SqlCatalogOptions {
  /** Schema holding the tables (default `catalog`); plain lower-case identifier. */
  schema?: string;
  /** Structured log (default pino at QD_LOG_LEVEL or warn). */
  logger?: Logger;
  /**
   * How long reserve() trusts a store row it read (default 2,000 ms; 0 reads
   * it every time). Bounds how late another node's change of hours, location
   * or prep time is seen; pauses are never late.
   */
  storeCacheMs?: number;
  /**
   * Reservation batches in flight at once (default 2). Orders that arrive
   * while they are busy wait and go together in the next batch: one round
   * trip and one commit for all of them. Batches that share stock rows queue
   * on their locks anyway, and each call has a fixed cost, so fewer, larger
   * batches cost less per order; two keep one forming while one commits.
   */
  reserveConcurrency?: number;
  /** Most orders in one reservation batch (default 256). */
  reserveBatch?: number;
}

interface StoreRow {
  store_id: string;
  name: string;
  lat: number;
  lng: number;
  time_zone: string;
  prep_minutes: number;
  paused: boolean;
  hours: WeeklyHours | string;
}

/** What reserve_orders() answers for one order (see schema.ts). */
type ReserveResult =
  | { repeated: false; prices: number[] }
  | {
      repeated: true;
      storeId: string;
      status: ReservationStatus;
      totalPaise: number | string;
      createdAt: number | string;
      paused: boolean;
      lines: Array<OrderLine & { unitPricePaise: number }>;
    }
  | { refusal: ErrorCode; details: Record<string, unknown> };

/** One order waiting for the next reserve_orders() batch; keys as the SQL reads them. */
interface PendingReserve {
  request: { o: string; s: string; p: string[]; q: number[]; at: number; c: string | null };
  resolve: (r: ReserveResult) => void;
  reject: (err: unknown) => void;
}

interface LineRow {
  product_id: string;
  quantity: number;
  unit_price_paise: number;
}

interface ReservationRow {
  order_id: string;
  store_id: string;
  status: ReservationStatus;
  total_paise: number | string;
  created_at: number | string;
}

/** UTF-8 byte order, the same order as Postgres' COLLATE "C": JS and SQL must lock rows in one order. */
const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

function checkId(field: string, v: unknown): string {
  if (typeof v !== 'string' || v.trim().length === 0) throw invalidArgument(field, 'must be a non-empty string');
  if (v.length > MAX_ID_LENGTH) throw invalidArgument(field, `must be at most ${MAX_ID_LENGTH} characters`);
  return v;
}

function checkInt(field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw invalidArgument(field, `must be an integer from ${min} to ${max}`);
  return v;
}

/**
 * Validates an order's lines and merges repeated products, returned in
 * product-id byte order (the order stock rows are locked in).
 * @throws QD_ERR_INVALID_ARGUMENT naming `items` or `items[i].productId` / `items[i].quantity`.
 */
export function normaliseLines(lines: unknown): OrderLine[] {
  if (!Array.isArray(lines) || lines.length === 0) throw invalidArgument('items', 'must list at least one product');
  if (lines.length > MAX_LINES) throw invalidArgument('items', `at most ${MAX_LINES} lines, got ${lines.length}`);
  const merged = new Map<string, number>();
  lines.forEach((line: unknown, i) => {
    if (line === null || typeof line !== 'object') throw invalidArgument(`items[${i}]`, 'must be {productId, quantity}');
    const { productId, quantity } = line as Partial<OrderLine>;
    checkId(`items[${i}].productId`, productId);
    checkInt(`items[${i}].quantity`, quantity, 1, MAX_QUANTITY);
    merged.set(productId!, (merged.get(productId!) ?? 0) + quantity!);
  });
  for (const [productId, q] of merged) {
    if (q > MAX_QUANTITY) throw invalidArgument('items', `product ${productId} asked ${q} times in all, more than ${MAX_QUANTITY}`);
  }
  return [...merged].sort(([a], [b]) => byteOrder(a, b)).map(([productId, quantity]) => ({ productId, quantity }));
}

export class SqlCatalog implements CatalogPort {
  readonly schema: string;
  readonly #client: SqlClient;
  readonly #log: Logger;
  readonly #storeCacheMs: number;
  readonly #stores = new Map<StoreId, { row: StoreRow; until: number }>();
  readonly #reserveConcurrency: number;
  readonly #reserveBatch: number;
  #pending: PendingReserve[] = [];
  #batchesInFlight = 0;
  #pumpScheduled = false;
  readonly #t: {
    stores: string;
    products: string;
    stock: string;
    reservations: string;
    lines: string;
  };

  constructor(client: SqlClient, options: SqlCatalogOptions = {}) {
    this.schema = checkSchemaName(options.schema ?? DEFAULT_CATALOG_SCHEMA);
    this.#client = client;
    this.#log = (options.logger ?? pino({ level: process.env.QD_LOG_LEVEL ?? 'warn' })).child({ component: 'catalog', schema: this.schema });
    this.#storeCacheMs = options.storeCacheMs ?? 2_000;
    this.#reserveConcurrency = Math.max(1, options.reserveConcurrency ?? 2);
    this.#reserveBatch = Math.max(1, options.reserveBatch ?? 256);
    const s = this.schema;
    this.#t = { stores: `${s}.stores`, products: `${s}.products`, stock: `${s}.stock`, reservations: `${s}.reservations`, lines: `${s}.reservation_lines` };
  }

  /** Creates the schema and tables if missing. Safe to run from several nodes at once. */
  async init(): Promise<void> {
    await this.#client.transaction(async (tx) => {
      // CREATE ... IF NOT EXISTS still races on the system catalogue; serialise concurrent inits of one schema.
      await tx.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [`quickdash-catalog-schema:${this.schema}`]);
      for (const s of catalogStatements(this.schema)) await tx.query(s);
    });
  }

  // ------------------------------------------------------------ administration

  /**
   * Creates or updates a store. @returns whether anything changed (a repeat with the same data changes nothing).
   * @throws QD_ERR_INVALID_ARGUMENT naming the field.
   */
  async upsertStore(store: StoreRecord): Promise<boolean> {
    checkId('storeId', store.storeId);
    if (typeof store.name !== 'string' || store.name.length === 0) throw invalidArgument('name', 'must be non-empty');
    const { lat, lng } = store.location ?? {};
    if (!Number.isFinite(lat) || !Number.isFinite(lng) || Math.abs(lat) > 90 || Math.abs(lng) > 180) {
      throw invalidArgument('location', 'must be a latitude in [-90, 90] and a longitude in [-180, 180]');
    }
    checkTimeZone(store.timeZone);
    checkInt('prepMinutes', store.prepMinutes, 0, 24 * 60);
    if (store.paused !== undefined && typeof store.paused !== 'boolean') throw invalidArgument('paused', 'must be a boolean');
    checkHours(store.hours);
    const { stores } = this.#t;
    const r = await this.#client.query(
      `INSERT INTO ${stores} (store_id, name, lat, lng, time_zone, prep_minutes, paused, hours)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)
       ON CONFLICT (store_id) DO UPDATE SET
         name = EXCLUDED.name, lat = EXCLUDED.lat, lng = EXCLUDED.lng, time_zone = EXCLUDED.time_zone,
         prep_minutes = EXCLUDED.prep_minutes, paused = EXCLUDED.paused, hours = EXCLUDED.hours, updated_at = now()
       WHERE (${stores}.name, ${stores}.lat, ${stores}.lng, ${stores}.time_zone, ${stores}.prep_minutes, ${stores}.paused, ${stores}.hours)
         IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.lat, EXCLUDED.lng, EXCLUDED.time_zone, EXCLUDED.prep_minutes, EXCLUDED.paused, EXCLUDED.hours)
       RETURNING store_id`,
      [store.storeId, store.name, lat, lng, store.timeZone, store.prepMinutes, store.paused ?? false, JSON.stringify(store.hours)],
    );
    this.#stores.delete(store.storeId);
    return r.rows.length > 0;
  }

  /** Pauses or resumes a store (operations: short of staff, flooding). @throws QD_ERR_STORE_NOT_FOUND. */
  async setPaused(storeId: StoreId, paused: boolean): Promise<void> {
    const r = await this.#client.query(`UPDATE ${this.#t.stores} SET paused = $2, updated_at = now() WHERE store_id = $1 RETURNING store_id`, [storeId, paused]);
    this.#stores.delete(storeId);
    if (r.rows.length === 0) throw new DispatchError('QD_ERR_STORE_NOT_FOUND', { storeId });
  }

  /**
   * Creates or updates a product at a store, with an empty stock row when new.
   * @returns whether anything changed. @throws QD_ERR_STORE_NOT_FOUND, QD_ERR_INVALID_ARGUMENT.
   */
  async upsertProduct(product: ProductRecord): Promise<boolean> {
    checkId('storeId', product.storeId);
    checkId('productId', product.productId);
    if (typeof product.name !== 'string' || product.name.length === 0) throw invalidArgument('name', 'must be non-empty');
    checkInt('pricePaise', product.pricePaise, 0, INT4_MAX);
    if (product.active !== undefined && typeof product.active !== 'boolean') throw invalidArgument('active', 'must be a boolean');
    const { stores, products, stock } = this.#t;
    return this.#client.transaction(async (tx) => {
      const s = await tx.query(`SELECT 1 FROM ${stores} WHERE store_id = $1`, [product.storeId]);
      if (s.rows.length === 0) throw new DispatchError('QD_ERR_STORE_NOT_FOUND', { storeId: product.storeId });
      const r = await tx.query(
        `INSERT INTO ${products} (store_id, product_id, name, price_paise, active) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (store_id, product_id) DO UPDATE SET
           name = EXCLUDED.name, price_paise = EXCLUDED.price_paise, active = EXCLUDED.active, updated_at = now()
         WHERE (${products}.name, ${products}.price_paise, ${products}.active) IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.price_paise, EXCLUDED.active)
         RETURNING product_id`,
        [product.storeId, product.productId, product.name, product.pricePaise, product.active ?? true],
      );
      await tx.query(`INSERT INTO ${stock} (store_id, product_id, on_hand) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING`, [product.storeId, product.productId]);
      return r.rows.length > 0;
    });
  }

  /**
   * Sets the units on hand (a stock count). Units held by open reservations
   * stay held, so the count may not go below them.
   * @returns whether it changed. @throws QD_ERR_PRODUCT_NOT_FOUND, QD_ERR_INVALID_ARGUMENT (onHand).
   */
  async setStock(storeId: StoreId, productId: string, onHand: number): Promise<boolean> {
    checkId('storeId', storeId);
    checkId('productId', productId);
    checkInt('onHand', onHand, 0, INT4_MAX);
    const { stock } = this.#t;
    return this.#client.transaction(async (tx) => {
      const r = await tx.query<{ on_hand: number; reserved: number }>(
        `SELECT on_hand, reserved FROM ${stock} WHERE store_id = $1 AND product_id = $2 FOR UPDATE`,
        [storeId, productId],
      );
      const row = r.rows[0];
      if (!row) throw new DispatchError('QD_ERR_PRODUCT_NOT_FOUND', { storeId, productId });
      if (Number(row.on_hand) === onHand) return false;
      if (onHand < Number(row.reserved)) throw invalidArgument('onHand', `${onHand} is below the ${row.reserved} units reserved for open orders`);
      await tx.query(`UPDATE ${stock} SET on_hand = $3 WHERE store_id = $1 AND product_id = $2`, [storeId, productId, onHand]);
      return true;
    });
  }

  /** Stock of one product at one store, or null if the store does not sell it. */
  async stockOf(storeId: StoreId, productId: string): Promise<StockLevel | null> {
    const r = await this.#client.query<{ on_hand: number; reserved: number }>(
      `SELECT on_hand, reserved FROM ${this.#t.stock} WHERE store_id = $1 AND product_id = $2`,
      [storeId, productId],
    );
    const row = r.rows[0];
    if (!row) return null;
    const onHand = Number(row.on_hand);
    const reserved = Number(row.reserved);
    return { onHand, reserved, available: onHand - reserved };
  }

  /** An order's reservation as stored, or null if it never reserved. */
  async reservationOf(orderId: string): Promise<StoredReservation | null> {
    return this.#readReservation(this.#client, orderId);
  }

  /** Totals over the whole catalog (seed summary, health pages). */
  async counts(): Promise<CatalogCounts> {
    const { stores, products, stock, reservations } = this.#t;
    const r = await this.#client.query<Record<keyof CatalogCounts, number | string>>(
      `SELECT (SELECT count(*) FROM ${stores}) AS stores,
              (SELECT count(*) FROM ${products}) AS products,
              (SELECT count(*) FROM ${products} WHERE active) AS "activeProducts",
              (SELECT coalesce(sum(on_hand), 0) FROM ${stock}) AS "unitsOnHand",
              (SELECT coalesce(sum(reserved), 0) FROM ${stock}) AS "unitsReserved",
              (SELECT count(*) FROM ${reservations}) AS reservations`,
    );
    const row = r.rows[0];
    return {
      stores: Number(row.stores),
      products: Number(row.products),
      activeProducts: Number(row.activeProducts),
      unitsOnHand: Number(row.unitsOnHand),
      unitsReserved: Number(row.unitsReserved),
      reservations: Number(row.reservations),
    };
  }

  // ------------------------------------------------------------ the port

  async getStore(storeId: StoreId, at: number): Promise<StoreInfo> {
    checkId('storeId', storeId);
    if (!Number.isFinite(at)) throw invalidArgument('at', 'must be epoch milliseconds');
    const row = await this.#storeRow(this.#client, storeId);
    if (!row) throw new DispatchError('QD_ERR_STORE_NOT_FOUND', { storeId });
    return storeInfo(row, at).info;
  }

  async reserve(orderId: string, storeId: StoreId, lines: OrderLine[], at: number): Promise<CatalogReservation> {
    checkId('orderId', orderId);
    checkId('storeId', storeId);
    if (!Number.isFinite(at)) throw invalidArgument('at', 'must be epoch milliseconds');
    const wanted = normaliseLines(lines);
    const createdAt = Math.trunc(at);
    const row = await this.#cachedStoreRow(storeId);
    if (!row) throw new DispatchError('QD_ERR_STORE_NOT_FOUND', { storeId });
    // Hours are judged here from the (briefly cached) row; reserve_orders() reads `paused` itself.
    const hours = storeInfo({ ...row, paused: false }, at);
    const result = await new Promise<ReserveResult>((resolve, reject) => {
      const request = { o: orderId, s: storeId, p: wanted.map((l) => l.productId), q: wanted.map((l) => l.quantity), at: createdAt, c: hours.reason };
      this.#pending.push({ request, resolve, reject });
      this.#schedulePump();
    });
    if ('refusal' in result) throw new DispatchError(result.refusal, result.details);

    if (result.repeated) {
      // The caller compares what it asked with what is held (the port's contract): answer what is held.
      const heldRow = result.storeId === storeId ? row : await this.#cachedStoreRow(result.storeId);
      this.#log.debug({ orderId, status: result.status }, 'reserve repeated: returning the existing reservation');
      return {
        orderId,
        storeId: result.storeId,
        status: result.status,
        lines: result.lines,
        totalPaise: Number(result.totalPaise),
        createdAt: Number(result.createdAt),
        store: storeInfo({ ...heldRow!, paused: result.paused }, at).info,
        repeated: true,
      };
    }
    const held = wanted.map((l, i) => ({ ...l, unitPricePaise: result.prices[i] }));
    const totalPaise = held.reduce((sum, l) => sum + l.quantity * l.unitPricePaise, 0);
    this.#log.debug({ orderId, storeId, lines: held.length, totalPaise }, 'stock reserved');
    return { orderId, storeId, lines: held, totalPaise, store: { ...hours.info, open: true }, status: 'reserved', createdAt, repeated: false };
  }

  async release(orderId: string): Promise<void> {
    checkId('orderId', orderId);
    await this.#settle(orderId, 'released');
  }

  /** Stock back and the reservation gone, for an order that was never placed. @throws QD_ERR_INVALID_TRANSITION once sold. */
  async abandon(orderId: string): Promise<void> {
    checkId('orderId', orderId);
    await this.#settle(orderId, 'abandoned');
  }

  /**
   * The reservation becomes a sale: its units leave on_hand and reserved.
   * Idempotent. An order that never reserved is logged and ignored (orders
   * can reach delivery without the catalog, e.g. simulated ones).
   * @throws QD_ERR_INVALID_TRANSITION when the reservation was released (its stock is gone back).
   */
  async commit(orderId: string): Promise<void> {
    checkId('orderId', orderId);
    await this.#settle(orderId, 'committed');
  }

  /** Drops this catalog's schema and everything in it (tests). */
  async drop(): Promise<void> {
    await this.#client.query(`DROP SCHEMA IF EXISTS ${this.schema} CASCADE`);
  }

  /** Closes the client (ends the pool, or shuts the embedded database down). */
  async close(): Promise<void> {
    await this.#client.close();
  }

  // ------------------------------------------------------------ internals

  async #settle(orderId: string, to: 'released' | 'committed' | 'abandoned'): Promise<void> {
    const { stock, reservations, lines } = this.#t;
    await this.#client.transaction(async (tx) => {
      // Locks the reservation: a concurrent release/commit of the same order waits and then sees the new status.
      const r = await tx.query<{ status: ReservationStatus; store_id: string }>(
        `SELECT status, store_id FROM ${reservations} WHERE order_id = $1 FOR UPDATE`,
        [orderId],
      );
      const res = r.rows[0];
      if (!res) {
        if (to === 'committed') this.#log.warn({ orderId }, 'commit of an order that reserved nothing: ignored');
        return;
      }
      if (res.status === to) return;
      if (res.status === 'committed' || (res.status === 'released' && to === 'committed')) {
        if (to === 'released') {
          this.#log.warn({ orderId, storeId: res.store_id }, 'release after commit ignored: the stock was sold');
          return;
        }
        throw new DispatchError('QD_ERR_INVALID_TRANSITION', { entity: 'reservation', id: orderId, action: to === 'committed' ? 'commit' : 'abandon', state: res.status });
      }
      if (res.status === 'reserved') {
        // Same lock order as reserve() (byte order of product ids), so the two never deadlock.
        await tx.query(
          `SELECT 1 FROM ${stock} s JOIN ${lines} l ON l.product_id = s.product_id
           WHERE l.order_id = $1 AND s.store_id = $2 ORDER BY s.product_id COLLATE "C" FOR UPDATE OF s`,
          [orderId, res.store_id],
        );
        const sold = to === 'committed' ? 'on_hand = s.on_hand - l.quantity,' : '';
        await tx.query(
          `UPDATE ${stock} s SET ${sold} reserved = s.reserved - l.quantity
           FROM ${lines} l WHERE l.order_id = $1 AND s.store_id = $2 AND s.product_id = l.product_id`,
          [orderId, res.store_id],
        );
      }
      if (to === 'abandoned') {
        // Its lines go with it (ON DELETE CASCADE): the order id can reserve again.
        await tx.query(`DELETE FROM ${reservations} WHERE order_id = $1`, [orderId]);
        this.#log.debug({ orderId, storeId: res.store_id }, 'reservation abandoned');
        return;
      }
      await tx.query(`UPDATE ${reservations} SET status = $2, updated_at = now() WHERE order_id = $1`, [orderId, to]);
      this.#log.debug({ orderId, storeId: res.store_id, status: to }, to === 'committed' ? 'reservation sold' : 'reservation released');
    });
  }

  /** Sends waiting reservations at the end of this turn, so the orders of one turn share a batch. */
  #schedulePump(): void {
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    setImmediate(() => {
      this.#pumpScheduled = false;
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#pending.length > 0 && this.#batchesInFlight < this.#reserveConcurrency) {
      // A repeat of an order already in this batch waits for the next one, where it finds the claim.
      const batch: PendingReserve[] = [];
      const later: PendingReserve[] = [];
      const orders = new Set<string>();
      for (const p of this.#pending) {
        if (batch.length < this.#reserveBatch && !orders.has(p.request.o)) {
          orders.add(p.request.o);
          batch.push(p);
        } else later.push(p);
      }
      this.#pending = later;
      this.#batchesInFlight++;
      void this.#reserveBatchOf(batch).finally(() => {
        this.#batchesInFlight--;
        this.#pump();
      });
    }
  }

  async #reserveBatchOf(batch: PendingReserve[]): Promise<void> {
    try {
      const r = await this.#client.query<{ r: ReserveResult[] | string }>(`SELECT ${this.schema}.reserve_orders($1::jsonb) AS r`, [
        JSON.stringify(batch.map((p) => p.request)),
      ]);
      const out = r.rows[0].r;
      const results = typeof out === 'string' ? (JSON.parse(out) as ReserveResult[]) : out;
      batch.forEach((p, i) => p.resolve(results[i]));
      if (batch.length > 1) this.#log.trace({ orders: batch.length }, 'reservation batch');
    } catch (err) {
      // The statement is its own transaction: it failed whole, and nothing of the batch is held.
      for (const p of batch) p.reject(err);
    }
  }

  /**
   * The store row, from a cache of `storeCacheMs`: a create reads its store
   * every time, and stores change rarely. This node's own upserts and pauses
   * clear it at once; another node's reach it within `storeCacheMs` (a pause
   * is re-read by reserve_orders() itself, so it is never late).
   */
  async #cachedStoreRow(storeId: string): Promise<StoreRow | null> {
    const hit = this.#stores.get(storeId);
    const now = performance.now();
    if (hit && hit.until > now) return hit.row;
    const row = await this.#storeRow(this.#client, storeId);
    // Unknown stores are not cached: a mistyped id must not fill the map.
    if (row && this.#storeCacheMs > 0) {
      if (this.#stores.size >= STORE_CACHE_MAX) this.#stores.clear();
      this.#stores.set(storeId, { row, until: now + this.#storeCacheMs });
    }
    return row;
  }

  async #storeRow(q: SqlQueryable, storeId: string): Promise<StoreRow | null> {
    const r = await q.query<StoreRow>(
      `SELECT store_id, name, lat, lng, time_zone, prep_minutes, paused, hours FROM ${this.#t.stores} WHERE store_id = $1`,
      [storeId],
    );
    return r.rows[0] ?? null;
  }

  async #readReservation(q: SqlQueryable, orderId: string): Promise<StoredReservation | null> {
    const r = await q.query<ReservationRow>(
      `SELECT order_id, store_id, status, total_paise, created_at FROM ${this.#t.reservations} WHERE order_id = $1`,
      [orderId],
    );
    const res = r.rows[0];
    if (!res) return null;
    const l = await q.query<LineRow>(
      `SELECT product_id, quantity, unit_price_paise FROM ${this.#t.lines} WHERE order_id = $1 ORDER BY product_id COLLATE "C"`,
      [orderId],
    );
    return {
      orderId: res.order_id,
      storeId: res.store_id,
      status: res.status,
      lines: l.rows.map((x) => ({ productId: x.product_id, quantity: Number(x.quantity), unitPricePaise: Number(x.unit_price_paise) })),
      totalPaise: Number(res.total_paise),
      createdAt: Number(res.created_at),
    };
  }
}

/** StoreInfo at `at`, with why it is closed when it is. */
function storeInfo(row: StoreRow, at: number): { info: StoreInfo; reason: string | null } {
  // Both drivers parse jsonb; a string means a driver configured not to.
  const hours = (typeof row.hours === 'string' ? JSON.parse(row.hours) : row.hours) as WeeklyHours;
  const state = row.paused ? ({ open: false, reason: 'paused' } as const) : openAt(hours, localTime(row.time_zone, at), row.time_zone);
  return {
    info: {
      storeId: row.store_id,
      name: row.name,
      location: { lat: Number(row.lat), lng: Number(row.lng) },
      timeZone: row.time_zone,
      open: state.open,
      prepMinutes: Number(row.prep_minutes),
    },
    reason: state.open ? null : state.reason,
  };
}

/**
 * Order intake: what happens around the engine when a backend places an
 * order. Reserves the items at the store, opens a payment for a prepaid
 * order, creates the order; and follows every order so stock and money are
 * put right whichever way it ends (delivered: the sale is committed;
 * cancelled for any reason: stock released, a captured payment refunded).
 *
 * Idempotency: the order id is derived from the caller and its idempotency
 * key, and every step (reserve, open payment, create) is idempotent per
 * order, so a retry after any failure finishes the same order and never
 * makes a second one.
 */
import { hash } from 'node:crypto';
import { gridDisk } from 'h3-js';
import pino, { type Logger } from 'pino';
import type { DispatchEngine, OrderPricing, OrderUpdate, OrderView, Unsubscribe } from '../api.ts';
import type { Clock } from '../clock.ts';
import { DispatchError, invalidArgument } from '../errors.ts';
import { PointCells, cellOf, haversineM } from '../geo/index.ts';
import type { CatalogPort, OrderLine, PaymentIntent, PaymentsPort, Reservation } from '../ports.ts';
import type { Cell, LatLng, OrderStatus, PaymentMode } from '../types.ts';
import { DEFAULT_PRICING, checkPricing, priceDelivery, type DeliveryQuote, type PricingConfig } from '../dispatch/index.ts';

export interface PlaceOrderRequest {
  /** Who is calling (a service name): keys of different callers never collide. */
  caller: string;
  /** Chosen by the caller; a retry with the same key returns the same order. */
  idempotencyKey: string;
  storeId: string;
  customerId: string;
  dropoff: LatLng;
  lines: OrderLine[];
  payment: PaymentMode;
  /** Promised delivery time (epoch ms); defaults to now + the quoted ETA. */
  promisedAt?: number;
}

export interface PlacedOrder {
  order: OrderView;
  reservation: Reservation;
  /** For a prepaid order: what the customer's app pays. */
  intent: PaymentIntent | null;
  deliveryFeePaise: number;
  /** True when this key had already placed the order: nothing new was done. */
  replayed: boolean;
}

export interface Quote extends DeliveryQuote {
  /** The pickup's H3 cell demand and supply were counted around. */
  cell: Cell;
}

export interface OrderIntakeOptions {
  engine: DispatchEngine;
  catalog: CatalogPort;
  payments: PaymentsPort;
  clock: Clock;
  logger?: Logger;
  pricing?: Partial<PricingConfig>;
  currency?: string;
}

/** Statuses in which an order waits for a rider: the demand side of surge. */
const WAITING: ReadonlySet<OrderStatus> = new Set(['confirmed', 'searching', 'offered', 'escalated']);

const KEY_PATTERN = /^[\x21-\x7e]{1,128}$/;

export class OrderIntake {
  readonly #engine: DispatchEngine;
  readonly #catalog: CatalogPort;
  readonly #payments: PaymentsPort;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #pricing: PricingConfig;
  readonly #currency: string;
  /** Waiting orders by pickup cell, kept from the order feed. */
  readonly #waiting = new Map<string, Cell>();
  readonly #waitingByCell = new Map<Cell, number>();
  /** A cell and its neighbours, per pickup cell: h3 allocates on every call. */
  readonly #disks = new Map<Cell, Cell[]>();
  /** Pickup cells at the pricing resolution: pickups are stores, the same few points over and over. */
  readonly #pickupCells: PointCells;
  /** Compensations (release, refund) that failed and are being retried. */
  readonly #retrying = new Set<string>();
  #unwatch: Unsubscribe | null = null;

  constructor(options: OrderIntakeOptions) {
    this.#engine = options.engine;
    this.#catalog = options.catalog;
    this.#payments = options.payments;
    this.#clock = options.clock;
    this.#log = options.logger ?? pino({ level: 'silent' });
    this.#pricing = checkPricing({ ...DEFAULT_PRICING, ...options.pricing });
    this.#pickupCells = new PointCells(this.#pricing.cellRes);
    this.#currency = options.currency ?? 'INR';
  }

  /** Starts following all orders (compensations and demand). */
  start(): void {
    if (this.#unwatch) return;
    this.#unwatch = this.#engine.watchOrders((u) => this.#onOrder(u));
  }

  stop(): void {
    this.#unwatch?.();
    this.#unwatch = null;
  }

  /** Compensations still being retried (for readiness and tests). */
  get pendingCompensations(): number {
    return this.#retrying.size;
  }

  /** The order id a caller's idempotency key stands for. */
  static orderIdFor(caller: string, idempotencyKey: string): string {
    return `o-${hash('sha256', `${caller}\u0000${idempotencyKey}`, 'hex').slice(0, 24)}`;
  }

  async placeOrder(req: PlaceOrderRequest): Promise<PlacedOrder> {
    validate(req);
    const orderId = OrderIntake.orderIdFor(req.caller, req.idempotencyKey);
    const now = this.#clock.now();
    // Reserving first is also the idempotency check: only a key that reserved
    // before (a retry, a replay) costs a look at the engine.
    const reservation = await this.#catalog.reserve(orderId, req.storeId, req.lines, now);
    if (reservation.repeated) {
      const existing = await this.#engine.getOrder(orderId).catch((err: unknown) => {
        if (err instanceof DispatchError && err.code === 'QD_ERR_ORDER_NOT_FOUND') return null;
        throw err;
      });
      if (existing) return this.#replay(existing, reservation, req);
      // Reserved by an attempt that is still running or died before creating the order: finish it with what is held.
      if (reservation.status !== 'reserved' || reservation.storeId !== req.storeId || !sameLines(reservation.lines, req.lines)) {
        throw new DispatchError('QD_ERR_IDEMPOTENCY_CONFLICT', { key: req.idempotencyKey, orderId });
      }
    }

    let intent: PaymentIntent | null = null;
    try {
      const store = reservation.store;
      const spec = {
        orderId,
        storeId: req.storeId,
        customerId: req.customerId,
        pickup: store.location,
        dropoff: req.dropoff,
        payment: req.payment,
        readyAt: now + store.prepMinutes * 60_000,
        promisedAt: req.promisedAt,
      };
      let order: OrderView;
      if (req.payment === 'prepaid') {
        // The amount to charge includes the fee, so the quote comes first.
        const quote = await this.quote(store.location, req.dropoff, store.prepMinutes);
        intent = await this.#payments.createIntent(orderId, reservation.totalPaise + quote.feePaise, this.#currency);
        order = await this.#engine.createOrder({
          ...spec,
          promisedAt: req.promisedAt ?? now + quote.etaSeconds * 1000,
          riderFee: quote.riderFeePaise,
          deliveryFee: quote.feePaise,
        });
      } else {
        // Cash on delivery: priced by the shard that creates it, in the same round trip.
        const pricing: OrderPricing = { demand: this.#demandAround(store.location), prepMinutes: store.prepMinutes, config: this.#pricing };
        order = await this.#engine.createOrder(spec, pricing);
      }
      const deliveryFeePaise = order.deliveryFee ?? 0;
      // Debug: the transport logs the placement with its request id.
      this.#log.debug(
        { orderId, storeId: req.storeId, customerId: req.customerId, payment: req.payment, totalPaise: reservation.totalPaise, feePaise: deliveryFeePaise },
        'order placed',
      );
      return { order, reservation, intent, deliveryFeePaise, replayed: false };
    } catch (err) {
      // A concurrent retry of the same key won the race: answer as a replay.
      if (err instanceof DispatchError && err.code === 'QD_ERR_ORDER_EXISTS') return this.#replay(await this.#engine.getOrder(orderId), reservation, req);
      // Nothing was created: give the stock back and forget the reservation, so a retry reserves afresh.
      await this.#catalog.abandon(orderId).catch((e: unknown) => this.#log.error({ err: e, orderId }, 'abandoning the reservation of a failed placement failed'));
      throw err;
    }
  }

  async #replay(order: OrderView, reservation: Reservation, req: PlaceOrderRequest): Promise<PlacedOrder> {
    const same =
      order.storeId === req.storeId &&
      order.customerId === req.customerId &&
      order.payment === req.payment &&
      haversineM(order.dropoff.lat, order.dropoff.lng, req.dropoff.lat, req.dropoff.lng) < 1;
    if (!same || !sameLines(reservation.lines, req.lines)) {
      throw new DispatchError('QD_ERR_IDEMPOTENCY_CONFLICT', { key: req.idempotencyKey, orderId: order.orderId });
    }
    const intent = req.payment === 'prepaid' ? await this.#payments.intentOf(order.orderId) : null;
    // The fee quoted at placement; only orders placed before the engine kept it are quoted again.
    const deliveryFeePaise = intent
      ? intent.amountPaise - reservation.totalPaise
      : (order.deliveryFee ?? (await this.quote(order.pickup, order.dropoff, reservation.store.prepMinutes)).feePaise);
    return { order, reservation, intent, deliveryFeePaise, replayed: true };
  }

  /** The provider captured a payment: the order may dispatch. A payment for an order already cancelled is refunded. */
  async paymentCaptured(orderId: string, paymentId: string): Promise<OrderView> {
    try {
      return await this.#engine.capturePayment(orderId, paymentId);
    } catch (err) {
      if (err instanceof DispatchError && err.code === 'QD_ERR_INVALID_TRANSITION') {
        const order = await this.#engine.getOrder(orderId);
        if (order.status === 'cancelled') {
          this.#log.warn({ orderId, paymentId }, 'payment captured for a cancelled order: refunding');
          await this.#payments.refund(orderId, paymentId);
          return order;
        }
        // Already captured (a webhook delivered twice): nothing more to do.
        if (order.paymentId === paymentId) return order;
      }
      throw err;
    }
  }

  /** The provider reports a failed payment: the order is cancelled and its stock released. */
  async paymentFailed(orderId: string, reason: string): Promise<OrderView> {
    const order = await this.#engine.failPayment(orderId, reason);
    await this.#catalog.release(orderId);
    return order;
  }

  /** Cancels an order and puts stock and money right before answering. */
  async cancel(orderId: string, by: 'customer' | 'ops', reason?: string): Promise<OrderView> {
    const order = await this.#engine.cancelOrder(orderId, by, reason);
    await this.#compensate(order);
    return order;
  }

  /**
   * Fee, rider pay and ETA from a pickup to a drop-off. Surge comes from the
   * orders waiting in the pickup's cell and its neighbours against the
   * available riders near it.
   */
  async quote(pickup: LatLng, dropoff: LatLng, prepMinutes = 0): Promise<Quote> {
    const p = this.#pricing;
    const demand = this.#demandAround(pickup);
    const supply = await this.#engine.supplyNear(pickup, p.supplyRadiusM);
    const quote = priceDelivery(haversineM(pickup.lat, pickup.lng, dropoff.lat, dropoff.lng), prepMinutes, demand, supply, p);
    return { ...quote, cell: cellOf(pickup.lat, pickup.lng, p.cellRes) };
  }

  /** Orders waiting for a rider in the pickup's cell and its neighbours. */
  #demandAround(pickup: LatLng): number {
    const cell = this.#pickupCells.cellOf(pickup.lat, pickup.lng);
    let disk = this.#disks.get(cell);
    if (disk === undefined) {
      // Pickups are stores: few cells. The bound only guards against a flood of odd ones.
      if (this.#disks.size >= 10_000) this.#disks.clear();
      disk = gridDisk(cell, 1);
      this.#disks.set(cell, disk);
    }
    let demand = 0;
    for (const c of disk) demand += this.#waitingByCell.get(c) ?? 0;
    return demand;
  }

  // ---------------------------------------------------------------- the feed

  #onOrder(u: OrderUpdate): void {
    const o = u.order;
    // A pickup never moves: its cell is looked up once, when the order starts waiting.
    if (WAITING.has(o.status)) {
      if (!this.#waiting.has(o.orderId)) this.#setWaiting(o.orderId, this.#pickupCells.cellOf(o.pickup.lat, o.pickup.lng));
    } else this.#setWaiting(o.orderId, null);
    if (o.status === 'delivered') void this.#withRetry(`commit:${o.orderId}`, () => this.#catalog.commit(o.orderId));
    if (o.status === 'cancelled') void this.#withRetry(`compensate:${o.orderId}`, () => this.#compensate(o));
  }

  #setWaiting(orderId: string, cell: Cell | null): void {
    const before = this.#waiting.get(orderId);
    if (before === cell) return;
    if (before !== undefined) {
      const n = (this.#waitingByCell.get(before) ?? 1) - 1;
      if (n <= 0) this.#waitingByCell.delete(before);
      else this.#waitingByCell.set(before, n);
      this.#waiting.delete(orderId);
    }
    if (cell !== null) {
      this.#waiting.set(orderId, cell);
      this.#waitingByCell.set(cell, (this.#waitingByCell.get(cell) ?? 0) + 1);
    }
  }

  /** Stock back, money back. Both ports are idempotent, so running this twice is harmless. */
  async #compensate(order: OrderView): Promise<void> {
    await this.#catalog.release(order.orderId);
    if (order.paymentId) {
      const refund = await this.#payments.refund(order.orderId, order.paymentId);
      this.#log.info({ orderId: order.orderId, refundId: refund.providerRefundId, amountPaise: refund.amountPaise }, 'payment refunded');
    }
  }

  /** Retries a compensation with growing pauses; a refund must not be lost to one timeout. */
  async #withRetry(key: string, fn: () => Promise<void>): Promise<void> {
    if (this.#retrying.has(key)) return;
    this.#retrying.add(key);
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          await fn();
          return;
        } catch (err) {
          const code = err instanceof DispatchError ? err.code : 'unknown';
          if (attempt >= 5 || !this.#unwatch) {
            this.#log.error({ err, key, code, attempt }, 'compensation failed; giving up');
            return;
          }
          this.#log.warn({ key, code, attempt }, 'compensation failed; retrying');
          await new Promise((r) => setTimeout(r, 200 * 4 ** attempt).unref());
        }
      }
    } finally {
      this.#retrying.delete(key);
    }
  }
}

function validate(req: PlaceOrderRequest): void {
  if (typeof req.idempotencyKey !== 'string' || !KEY_PATTERN.test(req.idempotencyKey)) {
    throw invalidArgument('idempotencyKey', 'must be 1 to 128 printable ASCII characters');
  }
  if (typeof req.caller !== 'string' || req.caller.length === 0) throw invalidArgument('caller', 'must be non-empty');
  if (typeof req.storeId !== 'string' || req.storeId.length === 0) throw invalidArgument('storeId', 'must be non-empty');
  if (typeof req.customerId !== 'string' || req.customerId.length === 0) throw invalidArgument('customerId', 'must be non-empty');
  const d = req.dropoff;
  if (!d || !Number.isFinite(d.lat) || !Number.isFinite(d.lng) || Math.abs(d.lat) > 90 || Math.abs(d.lng) > 180) {
    throw invalidArgument('dropoff', 'must be a latitude in [-90, 90] and a longitude in [-180, 180]');
  }
  if (req.payment !== 'prepaid' && req.payment !== 'cod') throw invalidArgument('payment', 'must be prepaid or cod');
  if (req.promisedAt !== undefined && !Number.isFinite(req.promisedAt)) throw invalidArgument('promisedAt', 'must be epoch milliseconds');
}

function sameLines(held: OrderLine[], asked: OrderLine[]): boolean {
  const sum = (lines: OrderLine[]) => {
    const m = new Map<string, number>();
    for (const l of lines) m.set(l.productId, (m.get(l.productId) ?? 0) + l.quantity);
    return m;
  };
  const a = sum(held);
  const b = sum(asked);
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

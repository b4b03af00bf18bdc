/**
 * quickdash.v1.DispatchService over grpc-js: backend services place, cancel,
 * read and watch orders, quote deliveries, look at riders and pause zones.
 * Each call is authenticated with a service JWT, validated with errors that
 * name the proto field, and answered through the shared error convention
 * (protos/rpc.ts): a handler never throws past its wrapper, so no call can
 * end in an unhandled rejection.
 */
import { randomUUID } from 'node:crypto';
import {
  Metadata,
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceError,
  type sendUnaryData,
} from '@grpc/grpc-js';
import { getResolution, isValidCell, latLngToCell } from 'h3-js';
import pino, { type Logger } from 'pino';
import {
  DispatchError,
  OrderIntake,
  SystemClock,
  invalidArgument,
  type CatalogPort,
  type Clock,
  type DispatchEngine,
  type LatLng,
  type OrderUpdate,
  type OrderView,
  type PaymentsPort,
} from '../../engine/index.ts';
import { bearerToken, toServiceError, unauthenticated } from '../../protos/rpc.ts';
import type { LatLng as ProtoLatLng } from '../../protos/gen/quickdash/v1/common.ts';
import { CancelParty } from '../../protos/gen/quickdash/v1/common.ts';
import {
  DispatchServiceService,
  type CancelOrderRequest,
  type CancelOrderResponse,
  type CreateOrderRequest,
  type CreateOrderResponse,
  type DispatchServiceServer,
  type GetOrderRequest,
  type GetOrderResponse,
  type GetRiderRequest,
  type GetRiderResponse,
  type GetRiderStatsRequest,
  type GetRiderStatsResponse,
  type NearbyRidersRequest,
  type NearbyRidersResponse,
  type PauseZoneRequest,
  type PauseZoneResponse,
  type QuoteDeliveryRequest,
  type QuoteDeliveryResponse,
  type ResumeZoneRequest,
  type ResumeZoneResponse,
  type WatchOrdersRequest,
  type WatchOrdersResponse,
} from '../../protos/gen/quickdash/v1/dispatch.ts';
import { can, verifyToken, type AuthConfig, type Principal } from '../auth.ts';
import {
  NO_EXTRAS,
  STORE_CANCEL_PREFIX,
  TERMINAL,
  intentToProto,
  nearbyRiderToProto,
  orderToProto,
  paymentModeFromProto,
  riderStatsToProto,
  riderToProto,
  type OrderExtras,
} from './codec.ts';
import { DEFAULT_WATCH_BUFFER, OrderFeed } from './order-feed.ts';
import { DEFAULT_WATCH_MAX_LAG, WatchStream } from './watch-stream.ts';

export interface GrpcTls {
  /** PEM certificate chain and private key of the server. */
  certPem: string | Buffer;
  keyPem: string | Buffer;
  /** PEM CA bundle for client certificates; required with requireClientCert. */
  caPem?: string | Buffer;
  /** Mutual TLS: refuse clients without a certificate signed by caPem (default false). */
  requireClientCert?: boolean;
}

export interface GrpcServerOptions {
  engine: DispatchEngine;
  /** Started by the caller (its compensations and surge demand follow the order feed). */
  intake: OrderIntake;
  catalog: CatalogPort;
  /**
   * For the provider order id and exact amount of prepaid orders in
   * GetOrder and WatchOrders (CreateOrder has them from the intake). Without
   * it those fields are known only for orders this node placed recently.
   */
  payments?: PaymentsPort;
  auth: AuthConfig;
  /** Default 127.0.0.1: listening on every interface is a deliberate choice. */
  host?: string;
  /** 0 (default) picks a free port; the chosen one is returned. */
  port?: number;
  /** Without it the server speaks plain text: loopback or a trusted network only (tokens would travel in the clear). */
  tls?: GrpcTls;
  logger?: Logger;
  /** Order changes kept for resuming store, zone and cell watches (default 100,000). */
  watchBuffer?: number;
  /** Events a watcher may fall behind before it is cut off with RESOURCE_EXHAUSTED (default 10,000). */
  watchMaxLag?: number;
  /** For the opening-hours evaluation of QuoteDelivery's store (default the system clock; pass the engine's). */
  clock?: Clock;
  /** Currency of orders without a payment intent (COD), default INR. */
  currency?: string;
}

export interface GrpcServer {
  port: number;
  /** The node-local order feed behind store, zone and cell watches. */
  feed: OrderFeed;
  /**
   * Ends open watches with UNAVAILABLE (QD_ERR_SHUTTING_DOWN), stops taking
   * calls, lets calls in flight finish within `graceMs`, then cuts the rest.
   */
  close(graceMs?: number): Promise<void>;
}

/** Who is calling, for logs and idempotency. */
class CallContext {
  readonly requestId: string;
  readonly method: string;
  principal: Principal | null = null;
  readonly #base: Logger;
  #log: Logger | null = null;

  constructor(base: Logger, requestId: string, method: string) {
    this.#base = base;
    this.requestId = requestId;
    this.method = method;
  }

  /** Made on first use: most calls log nothing at the configured level, and a child logger per call is not free. */
  get log(): Logger {
    // A silent logger's children are silent too: no need to make one.
    if (!this.#base.isLevelEnabled('fatal')) return this.#base;
    this.#log ??= this.#base.child(
      this.principal ? { requestId: this.requestId, method: this.method, caller: this.principal.sub } : { requestId: this.requestId, method: this.method },
    );
    return this.#log;
  }
}

/** Most verified tokens remembered; past it the memory starts over. */
const VERIFIED_TOKENS_MAX = 1_000;

class Unauthenticated extends Error {
  constructor(readonly reason: string) {
    super(`unauthenticated: ${reason}`);
  }
}

const KEY_PATTERN = /^[\x21-\x7e]{1,128}$/;
const REQUEST_ID = /^[\x21-\x7e]{1,128}$/;
const MAX_ID_LENGTH = 200;
const MAX_LINES = 100;
const MAX_QUANTITY = 1000;
const MAX_CELLS = 10_000;
const EXTRAS_CACHE_SIZE = 50_000;

// ---------------------------------------------------------------- validation (proto field names)

function requireId(field: string, v: string): string {
  if (typeof v !== 'string' || v.trim().length === 0) throw invalidArgument(field, 'is required');
  if (v.length > MAX_ID_LENGTH) throw invalidArgument(field, `must be at most ${MAX_ID_LENGTH} characters`);
  return v;
}

function requireLatLng(field: string, p: ProtoLatLng | undefined): LatLng {
  if (!p) throw invalidArgument(field, 'is required');
  if (!Number.isFinite(p.lat) || !Number.isFinite(p.lng) || Math.abs(p.lat) > 90 || Math.abs(p.lng) > 180) {
    throw invalidArgument(field, 'must be a latitude in [-90, 90] and a longitude in [-180, 180]');
  }
  return { lat: p.lat, lng: p.lng };
}

function requireCells(field: string, cells: string[]): string[] {
  if (cells.length === 0) throw invalidArgument(field, 'must list at least one H3 cell');
  if (cells.length > MAX_CELLS) throw invalidArgument(field, `at most ${MAX_CELLS} cells`);
  cells.forEach((c, i) => {
    if (!isValidCell(c)) throw invalidArgument(`${field}[${i}]`, 'is not an H3 cell');
  });
  return cells;
}

/**
 * Engine and catalog errors name fields in their own words (`items[0].productId`,
 * `payment`); rewrite them to the request's proto names before toServiceError,
 * which maps only the leading name.
 */
function withProtoField(err: unknown, aliases: Record<string, string>): unknown {
  if (!(err instanceof DispatchError) || typeof err.details.field !== 'string') return err;
  const field = err.details.field;
  const head = /^[A-Za-z_]+/.exec(field)?.[0] ?? field;
  const rest = field.slice(head.length).replace(/\.([A-Za-z]+)/g, (_, seg: string) => `.${seg.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`);
  const renamed = (aliases[head] ?? head) + rest;
  return renamed === field ? err : new DispatchError(err.code, { ...err.details, field: renamed }, { cause: err.cause });
}

// ---------------------------------------------------------------- order extras (lines, fee, payment)

/**
 * Lines, totals, fee and payment of orders, which the engine's view does not
 * carry. Fixed once an order is placed, so kept per order (bounded, least
 * recently used first out); concurrent misses share one read.
 */
class OrderExtrasCache {
  readonly #entries = new Map<string, Promise<OrderExtras>>();
  readonly #catalog: CatalogPort;
  readonly #payments: PaymentsPort | undefined;
  readonly #intake: OrderIntake;
  readonly #currency: string;

  constructor(catalog: CatalogPort, payments: PaymentsPort | undefined, intake: OrderIntake, currency: string) {
    this.#catalog = catalog;
    this.#payments = payments;
    this.#intake = intake;
    this.#currency = currency;
  }

  set(orderId: string, extras: OrderExtras): void {
    this.#entries.delete(orderId);
    this.#entries.set(orderId, Promise.resolve(extras));
    this.#trim();
  }

  has(orderId: string): boolean {
    return this.#entries.has(orderId);
  }

  get(order: OrderView): Promise<OrderExtras> {
    const hit = this.#entries.get(order.orderId);
    if (hit) {
      this.#entries.delete(order.orderId);
      this.#entries.set(order.orderId, hit);
      return hit;
    }
    const p = this.#load(order);
    this.#entries.set(order.orderId, p);
    this.#trim();
    // A failed read is not kept: the next event of the order tries again.
    p.catch(() => {
      if (this.#entries.get(order.orderId) === p) this.#entries.delete(order.orderId);
    });
    return p;
  }

  async #load(order: OrderView): Promise<OrderExtras> {
    const reservation = await this.#catalog.reservationOf(order.orderId);
    // An order created without intake (tests, replays) has no lines or prices.
    if (!reservation) return { ...NO_EXTRAS, currency: this.#currency };
    const base = { lines: reservation.lines, itemsTotalPaise: reservation.totalPaise, currency: this.#currency, providerOrderId: '' };
    const intent = order.payment === 'prepaid' && this.#payments ? await this.#payments.intentOf(order.orderId) : null;
    if (intent) {
      return { ...base, deliveryFeePaise: intent.amountPaise - reservation.totalPaise, currency: intent.currency, providerOrderId: intent.providerOrderId };
    }
    // A COD order keeps its quoted fee; one placed before the engine kept it is quoted again (surge may differ).
    const deliveryFeePaise = order.deliveryFee ?? (await this.#intake.quote(order.pickup, order.dropoff)).feePaise;
    return { ...base, deliveryFeePaise };
  }

  #trim(): void {
    while (this.#entries.size > EXTRAS_CACHE_SIZE) this.#entries.delete(this.#entries.keys().next().value!);
  }
}

// ---------------------------------------------------------------- the service

class DispatchService {
  readonly #engine: DispatchEngine;
  readonly #intake: OrderIntake;
  readonly #catalog: CatalogPort;
  readonly #auth: AuthConfig;
  readonly #verifiedTokens = new Map<string, Principal>();
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #currency: string;
  readonly #maxLag: number;
  readonly feed: OrderFeed;
  readonly #extras: OrderExtrasCache;
  readonly #streams = new Set<WatchStream>();

  constructor(o: GrpcServerOptions) {
    this.#engine = o.engine;
    this.#intake = o.intake;
    this.#catalog = o.catalog;
    this.#auth = o.auth;
    this.#log = o.logger ?? pino({ level: process.env.QD_LOG_LEVEL ?? 'warn' });
    this.#clock = o.clock ?? new SystemClock();
    this.#currency = o.currency ?? 'INR';
    this.#maxLag = o.watchMaxLag ?? DEFAULT_WATCH_MAX_LAG;
    this.feed = new OrderFeed(o.engine, { capacity: o.watchBuffer ?? DEFAULT_WATCH_BUFFER, logger: this.#log });
    this.#extras = new OrderExtrasCache(o.catalog, o.payments, o.intake, this.#currency);
  }

  handlers(): DispatchServiceServer {
    return {
      createOrder: this.#unary('CreateOrder', (req: CreateOrderRequest, ctx) => this.#createOrder(req, ctx), CREATE_ALIASES),
      cancelOrder: this.#unary('CancelOrder', (req: CancelOrderRequest, ctx) => this.#cancelOrder(req, ctx)),
      getOrder: this.#unary('GetOrder', (req: GetOrderRequest) => this.#getOrder(req)),
      watchOrders: (call) => this.#watchOrders(call),
      quoteDelivery: this.#unary('QuoteDelivery', (req: QuoteDeliveryRequest) => this.#quote(req)),
      nearbyRiders: this.#unary('NearbyRiders', (req: NearbyRidersRequest) => this.#nearbyRiders(req)),
      getRider: this.#unary('GetRider', async (req: GetRiderRequest): Promise<GetRiderResponse> => {
        return { rider: riderToProto(await this.#engine.getRider(requireId('rider_id', req.riderId))) };
      }),
      getRiderStats: this.#unary('GetRiderStats', async (req: GetRiderStatsRequest): Promise<GetRiderStatsResponse> => {
        const stats = await this.#engine.riderStats(requireId('rider_id', req.riderId), req.day);
        return { stats: riderStatsToProto(stats) };
      }),
      pauseZone: this.#unary('PauseZone', (req: PauseZoneRequest, ctx) => this.#pauseZone(req, ctx)),
      resumeZone: this.#unary('ResumeZone', async (req: ResumeZoneRequest, ctx): Promise<ResumeZoneResponse> => {
        await this.#engine.resumeZone(requireId('zone_id', req.zoneId));
        ctx.log.info({ zoneId: req.zoneId }, 'zone resumed');
        return {};
      }),
    };
  }

  /** Ends every open watch: the node is going away, clients should reconnect elsewhere. */
  shutdownStreams(): void {
    for (const s of this.#streams) s.fail(toServiceError(new DispatchError('QD_ERR_SHUTTING_DOWN')));
    this.#streams.clear();
  }

  // ---------------------------------------------------------------- plumbing

  #context(metadata: Metadata, method: string): CallContext {
    const [given] = metadata.get('x-request-id');
    const requestId = typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    return new CallContext(this.#log, requestId, method);
  }

  /** The caller, or a refusal: no or bad token, UNAUTHENTICATED; another role, QD_ERR_PERMISSION_DENIED. */
  #authenticate(metadata: Metadata, ctx: CallContext): Principal {
    const token = bearerToken(metadata);
    if (token === null) throw new Unauthenticated('no bearer token');
    const p = this.#verified(token);
    if (!can(p, 'service.call')) throw new DispatchError('QD_ERR_PERMISSION_DENIED', { role: p.role, action: `call ${ctx.method}` });
    ctx.principal = p;
    return p;
  }

  /**
   * A backend sends the same token with every call: its signature is checked
   * once and the principal remembered until the token expires (after that
   * verifyToken decides again, clock skew allowance included).
   */
  #verified(token: string): Principal {
    const known = this.#verifiedTokens.get(token);
    if (known && known.exp * 1000 > Date.now()) return known;
    this.#verifiedTokens.delete(token);
    const checked = verifyToken(token, this.#auth);
    if (!checked.ok) throw new Unauthenticated(checked.reason);
    if (checked.principal.exp * 1000 > Date.now()) {
      if (this.#verifiedTokens.size >= VERIFIED_TOKENS_MAX) this.#verifiedTokens.clear();
      this.#verifiedTokens.set(token, checked.principal);
    }
    return checked.principal;
  }

  /** The status for anything a handler threw; unknown errors are logged here, with the request id, and answered INTERNAL. */
  #errorFor(err: unknown, ctx: CallContext, aliases: Record<string, string> = {}): Partial<ServiceError> {
    let answer: Partial<ServiceError>;
    if (err instanceof Unauthenticated) {
      ctx.log.info({ reason: err.reason }, 'unauthenticated call refused');
      answer = unauthenticated(err.reason);
    } else if (err instanceof DispatchError) {
      if (err.code === 'QD_ERR_INTERNAL') ctx.log.error({ err }, 'call failed');
      else ctx.log.info({ code: err.code, details: err.details }, 'call refused');
      answer = toServiceError(withProtoField(err, aliases));
    } else {
      ctx.log.error({ err }, 'call failed with an unexpected error');
      answer = toServiceError(err);
    }
    answer.metadata?.set('x-request-id', ctx.requestId);
    return answer;
  }

  #unary<Req, Res>(
    method: string,
    fn: (req: Req, ctx: CallContext & { principal: Principal }) => Promise<Res>,
    aliases: Record<string, string> = {},
  ): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void {
    return (call, callback) => {
      const ctx = this.#context(call.metadata, method);
      const run = async () => {
        this.#authenticate(call.metadata, ctx);
        return fn(call.request, ctx as CallContext & { principal: Principal });
      };
      run().then(
        (res) => {
          const md = new Metadata();
          md.set('x-request-id', ctx.requestId);
          call.sendMetadata(md);
          callback(null, res);
        },
        (err: unknown) => callback(this.#errorFor(err, ctx, aliases), null),
      )
        // Only a bug in answering could land here; it must not become an unhandled rejection.
        .catch((err: unknown) => ctx.log.error({ err }, 'answering the call failed'));
    };
  }

  // ---------------------------------------------------------------- orders

  async #createOrder(req: CreateOrderRequest, ctx: CallContext & { principal: Principal }): Promise<CreateOrderResponse> {
    const caller = ctx.principal.sub;
    if (typeof req.idempotencyKey !== 'string' || !KEY_PATTERN.test(req.idempotencyKey)) {
      throw invalidArgument('idempotency_key', 'must be 1 to 128 printable ASCII characters');
    }
    // The id must stay a function of (caller, key) so that every retry names the same order.
    const derived = OrderIntake.orderIdFor(caller, req.idempotencyKey);
    if (req.orderId !== undefined && req.orderId !== derived) {
      throw invalidArgument('order_id', `must be left unset (or be ${derived}, the id this caller's idempotency_key stands for)`);
    }
    const storeId = requireId('store_id', req.storeId);
    const customerId = requireId('customer_id', req.customerId);
    const dropoff = requireLatLng('dropoff', req.dropoff);
    if (req.lines.length === 0) throw invalidArgument('lines', 'must list at least one product');
    if (req.lines.length > MAX_LINES) throw invalidArgument('lines', `at most ${MAX_LINES} lines, got ${req.lines.length}`);
    req.lines.forEach((l, i) => {
      requireId(`lines[${i}].product_id`, l.productId);
      if (!Number.isInteger(l.quantity) || l.quantity < 1 || l.quantity > MAX_QUANTITY) {
        throw invalidArgument(`lines[${i}].quantity`, `must be an integer from 1 to ${MAX_QUANTITY}`);
      }
    });
    const payment = paymentModeFromProto(req.paymentMode);
    if (!payment) throw invalidArgument('payment_mode', 'must be PAYMENT_MODE_PREPAID or PAYMENT_MODE_COD');
    if (req.promisedAt !== undefined && !(Number.isSafeInteger(req.promisedAt) && req.promisedAt > 0)) {
      throw invalidArgument('promised_at', 'must be epoch milliseconds');
    }

    const placed = await this.#intake.placeOrder({
      caller,
      idempotencyKey: req.idempotencyKey,
      storeId,
      customerId,
      dropoff,
      lines: req.lines.map((l) => ({ productId: l.productId, quantity: l.quantity })),
      payment,
      promisedAt: req.promisedAt,
    });
    const orderId = placed.order.orderId;
    const extras: OrderExtras =
      placed.replayed && this.#extras.has(orderId)
        ? await this.#extras.get(placed.order)
        : {
            lines: placed.reservation.lines,
            itemsTotalPaise: placed.reservation.totalPaise,
            deliveryFeePaise: placed.deliveryFeePaise,
            currency: placed.intent?.currency ?? this.#currency,
            providerOrderId: placed.intent?.providerOrderId ?? '',
          };
    this.#extras.set(orderId, extras);
    ctx.log.info({ orderId, storeId, payment, replayed: placed.replayed, status: placed.order.status }, placed.replayed ? 'order replayed' : 'order placed');
    return {
      order: orderToProto(placed.order, extras),
      paymentIntent: placed.intent ? intentToProto(placed.intent) : undefined,
      replayed: placed.replayed,
    };
  }

  async #cancelOrder(req: CancelOrderRequest, ctx: CallContext): Promise<CancelOrderResponse> {
    const orderId = requireId('order_id', req.orderId);
    const reason = req.reason.trim();
    let order: OrderView;
    switch (req.by) {
      case CancelParty.CANCEL_PARTY_CUSTOMER:
        order = await this.#intake.cancel(orderId, 'customer', reason || undefined);
        break;
      case CancelParty.CANCEL_PARTY_OPERATIONS:
        order = await this.#intake.cancel(orderId, 'ops', reason || undefined);
        break;
      case CancelParty.CANCEL_PARTY_STORE:
        // The engine knows customers, operations and payments: a store cancels with operations' rights, marked in the reason.
        if (!reason) throw new DispatchError('QD_ERR_REASON_REQUIRED', { action: 'cancel', orderId });
        order = await this.#intake.cancel(orderId, 'ops', `${STORE_CANCEL_PREFIX}${reason}`);
        break;
      default:
        throw invalidArgument('by', 'must be CANCEL_PARTY_CUSTOMER, CANCEL_PARTY_OPERATIONS or CANCEL_PARTY_STORE');
    }
    ctx.log.info({ orderId, by: CancelParty[req.by], reason }, 'order cancelled');
    return { order: orderToProto(order, await this.#extras.get(order)) };
  }

  async #getOrder(req: GetOrderRequest): Promise<GetOrderResponse> {
    const order = await this.#engine.getOrder(requireId('order_id', req.orderId));
    return { order: orderToProto(order, await this.#extras.get(order)) };
  }

  // ---------------------------------------------------------------- watching

  #watchOrders(call: ServerWritableStream<WatchOrdersRequest, WatchOrdersResponse>): void {
    const ctx = this.#context(call.metadata, 'WatchOrders');
    let stream: WatchStream | null = null;
    const refuse = (err: unknown) => {
      const answer = this.#errorFor(err, ctx, WATCH_ALIASES);
      if (stream) stream.fail(answer);
      else call.emit('error', answer);
    };
    try {
      const principal = this.#authenticate(call.metadata, ctx);
      const md = new Metadata();
      md.set('x-request-id', ctx.requestId);
      call.sendMetadata(md);
      const s = new WatchStream(call, {
        maxLag: this.#maxLag,
        enrich: (order) => this.#extras.get(order),
        errorFor: (err) => this.#errorFor(err, ctx, WATCH_ALIASES),
        log: ctx.log,
        startPosition: call.request.afterPosition,
      });
      stream = s;
      this.#streams.add(s);
      s.onClose(() => this.#streams.delete(s));
      // A stream must not outlive its token (auth.ts: Principal.exp).
      const expiry = setTimeout(() => s.fail(unauthenticated('token expired')), Math.min(2 ** 31 - 1, Math.max(0, principal.exp * 1000 - Date.now())));
      expiry.unref();
      s.onClose(() => clearTimeout(expiry));
      this.#startWatch(call.request, s, ctx)
        .catch(refuse)
        .catch((err: unknown) => ctx.log.error({ err }, 'refusing the watch failed'));
    } catch (err) {
      refuse(err);
    }
  }

  async #startWatch(req: WatchOrdersRequest, s: WatchStream, ctx: CallContext): Promise<void> {
    const scope = req.scope;
    if (!scope) throw invalidArgument('scope', 'set one of order_id, store_id, zone_id or cells');
    if (scope.$case === 'orderId') return this.#watchOne(requireId('order_id', scope.orderId), req.afterPosition, s, ctx);

    let matches: (u: OrderUpdate) => boolean;
    let label: Record<string, unknown>;
    if (scope.$case === 'storeId') {
      const storeId = requireId('store_id', scope.storeId);
      matches = (u) => u.order.storeId === storeId;
      label = { storeId };
    } else if (scope.$case === 'zoneId') {
      const zoneId = requireId('zone_id', scope.zoneId);
      const cells = await this.#engine.zoneCells(zoneId);
      if (!cells) throw invalidArgument('zone_id', `no zone ${zoneId} was ever paused`);
      matches = pickupIn(cells);
      label = { zoneId, cells: cells.length };
    } else {
      const cells = requireCells('cells.cells', scope.cells?.cells ?? []);
      matches = pickupIn(cells);
      label = { cells: cells.length };
    }
    if (s.closed) return;
    // Resolving the cursor and subscribing happen in one synchronous step: no change can fall between them.
    const after = this.feed.resolve(req.afterPosition);
    s.startPosition = this.feed.position(after);
    const unfollow = this.feed.follow(after, (e, replayed) => {
      if (matches(e.update)) s.push(this.feed.position(e.n), e.update, { replayed });
    });
    s.onClose(unfollow);
    ctx.log.debug({ ...label, after }, 'watching orders');
  }

  async #watchOne(orderId: string, afterPosition: string, s: WatchStream, ctx: CallContext): Promise<void> {
    let after: number | undefined;
    if (afterPosition !== '') {
      if (!/^\d{1,9}$/.test(afterPosition)) throw invalidArgument('after_position', "must be the decimal seq of one of this order's events");
      after = Number(afterPosition);
    }
    // Subscribe before looking the order up, holding updates back, so nothing between the two is lost.
    const held: OrderUpdate[] = [];
    let checked = false;
    const relay = (u: OrderUpdate) => {
      if (!checked) held.push(u);
      else s.push(String(u.seq), u, { last: TERMINAL.has(u.order.status) });
    };
    s.onClose(this.#engine.watchOrder(orderId, relay, after));
    const view = await this.#engine.getOrder(orderId);
    if (s.closed) return;
    ctx.log.debug({ orderId, after }, 'watching one order');
    // Finished, and nothing after the position: nothing will ever come.
    if (TERMINAL.has(view.status) && (after === undefined || after >= view.seq)) {
      s.end();
      return;
    }
    checked = true;
    for (const u of held.splice(0)) relay(u);
  }

  // ---------------------------------------------------------------- quotes, riders, zones

  async #quote(req: QuoteDeliveryRequest): Promise<QuoteDeliveryResponse> {
    const origin = req.origin;
    if (!origin) throw invalidArgument('origin', 'set pickup or store_id');
    const dropoff = requireLatLng('dropoff', req.dropoff);
    let pickup: LatLng;
    let prepMinutes = 0;
    if (origin.$case === 'pickup') {
      pickup = requireLatLng('pickup', origin.pickup);
    } else {
      const store = await this.#catalog.getStore(requireId('store_id', origin.storeId), this.#clock.now());
      pickup = store.location;
      prepMinutes = store.prepMinutes;
    }
    const q = await this.#intake.quote(pickup, dropoff, prepMinutes);
    return {
      feePaise: q.feePaise,
      riderFeePaise: q.riderFeePaise,
      etaSeconds: q.etaSeconds,
      distanceM: q.distanceM,
      surgeFactor: q.surgeFactor,
      cell: q.cell,
      demand: q.demand,
      supply: q.supply,
    };
  }

  async #nearbyRiders(req: NearbyRidersRequest): Promise<NearbyRidersResponse> {
    const at = requireLatLng('at', req.at);
    const riders = await this.#engine.nearbyRiders(at, req.radiusM, req.limit === 0 ? undefined : req.limit);
    return { riders: riders.map(nearbyRiderToProto) };
  }

  async #pauseZone(req: PauseZoneRequest, ctx: CallContext): Promise<PauseZoneResponse> {
    const zoneId = requireId('zone_id', req.zoneId);
    const cells = requireCells('cells', req.cells);
    const reason = req.reason.trim();
    if (!reason) throw new DispatchError('QD_ERR_REASON_REQUIRED', { action: 'pause a zone', zoneId });
    await this.#engine.pauseZone(zoneId, cells);
    // The engine keeps no reason: this log line is the audit record.
    ctx.log.info({ zoneId, cells: cells.length, reason }, 'zone paused');
    return {};
  }
}

/** Engine and catalog field names in CreateOrder's words. */
const CREATE_ALIASES: Record<string, string> = { items: 'lines', payment: 'payment_mode' };
const WATCH_ALIASES: Record<string, string> = { orderId: 'order_id' };

/** Whether an order's pickup lies in one of `cells` (any resolutions). */
function pickupIn(cells: string[]): (u: OrderUpdate) => boolean {
  const byRes = new Map<number, Set<string>>();
  for (const c of cells) {
    const r = getResolution(c);
    let set = byRes.get(r);
    if (!set) byRes.set(r, (set = new Set()));
    set.add(c);
  }
  return (u) => {
    const { lat, lng } = u.order.pickup;
    for (const [r, set] of byRes) if (set.has(latLngToCell(lat, lng, r))) return true;
    return false;
  };
}

// ---------------------------------------------------------------- start and stop

/** Starts DispatchService on host:port (TLS when configured) and the order feed behind its watches. */
export async function startGrpcServer(options: GrpcServerOptions): Promise<GrpcServer> {
  const host = options.host ?? '127.0.0.1';
  const log = options.logger ?? pino({ level: process.env.QD_LOG_LEVEL ?? 'warn' });
  let credentials: ServerCredentials;
  if (options.tls) {
    const { certPem, keyPem, caPem, requireClientCert = false } = options.tls;
    if (requireClientCert && !caPem) throw new TypeError('tls.requireClientCert needs tls.caPem to check client certificates against');
    credentials = ServerCredentials.createSsl(
      caPem ? Buffer.from(caPem) : null,
      [{ cert_chain: Buffer.from(certPem), private_key: Buffer.from(keyPem) }],
      requireClientCert,
    );
  } else {
    credentials = ServerCredentials.createInsecure();
  }
  const service = new DispatchService({ ...options, logger: log });
  const server = new Server();
  server.addService(DispatchServiceService, service.handlers());
  // Numbering starts before the first call can ask for a position.
  service.feed.start();
  const address = `${host.includes(':') ? `[${host}]` : host}:${options.port ?? 0}`;
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) => server.bindAsync(address, credentials, (err, p) => (err ? reject(err) : resolve(p))));
  } catch (err) {
    service.feed.stop();
    server.forceShutdown();
    throw err;
  }
  log.info({ host, port, tls: Boolean(options.tls) }, 'DispatchService listening');

  let closing: Promise<void> | null = null;
  return {
    port,
    feed: service.feed,
    close(graceMs = 5_000) {
      closing ??= new Promise<void>((resolve) => {
        service.shutdownStreams();
        service.feed.stop();
        const force = setTimeout(() => {
          log.warn({ graceMs }, 'calls still open after the grace period; cutting them');
          server.forceShutdown();
          resolve();
        }, graceMs);
        force.unref();
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      return closing;
    },
  };
}

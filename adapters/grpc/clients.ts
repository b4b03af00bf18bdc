/**
 * The engine's ports over gRPC: GrpcCatalog (CatalogPort), GrpcPayments
 * (PaymentsPort) and GrpcEventStore (EventStore), so a node can run with
 * catalog, payments and its event log in other processes. Each holds one
 * channel; every call carries the bearer token and a deadline, and every
 * failure comes back as the DispatchError the in-process adapter would
 * have thrown (server refusals keep their code and details; an unreachable
 * or silent service becomes the code the port uses for that).
 */
import { Client, credentials, type ChannelCredentials, type ChannelOptions, type ServiceError } from '@grpc/grpc-js';
import { DispatchError, type ErrorCode } from '../../engine/index.ts';
import type {
  CatalogPort,
  EventStore,
  LiveStream,
  OrderLine,
  PaymentIntent,
  PaymentsPort,
  Refund,
  RiderDailyStats,
  RiderStatsDelta,
  Snapshot,
  StoreInfo,
  StoredEvent,
} from '../../engine/index.ts';
import type { CatalogReservation, ProductRecord, StockLevel, StoreRecord, StoredReservation } from '../catalog/index.ts';
import { withBearer } from '../../protos/rpc.ts';
import { PaymentsServiceService } from '../../protos/gen/quickdash/v1/payments.ts';
import { PersistenceServiceService } from '../../protos/gen/quickdash/v1/persistence.ts';
import {
  deltaToPb,
  eventFromPb,
  eventToPb,
  intentFromPb,
  liveFromPb,
  refundFromPb,
  reservationFromPb,
  snapshotToPb,
  statsFromPb,
  storeFromPb,
  storeRecordToPb,
  storedReservationFromPb,
} from './codec.ts';
import { CatalogAdapterService, HealthService, ServingStatus } from './definitions.ts';
import { clientError } from './errors.ts';

/** A bearer token, or something that returns the current one (called per call, so it may rotate). */
export type TokenSource = string | (() => string | Promise<string>);

export interface ClientTls {
  /** PEM CA bundle trusted for the server's certificate; default: the system roots. */
  ca?: Buffer | string;
  /** Client certificate and key, for a server that requires mutual TLS. */
  cert?: Buffer | string;
  key?: Buffer | string;
  /** The name the server's certificate carries when it is not the address's host (connecting by IP). */
  serverName?: string;
}

export interface GrpcClientOptions {
  /** host:port of the service, e.g. catalog:50061. */
  address: string;
  /** Sent as `authorization: Bearer <token>`; the service wants role `service`. */
  token: TokenSource;
  /** Deadline of each call, ms (defaults per client below). */
  deadlineMs?: number;
  /** TLS (true: system roots). Without it the channel is plain text: loopback or a trusted network only. */
  tls?: ClientTls | true;
  /** Extra grpc-js channel options. */
  channelOptions?: ChannelOptions;
}

interface Unary<Req, Res> {
  path: string;
  requestSerialize: (value: Req) => Buffer;
  responseDeserialize: (value: Buffer) => Res;
}

interface Behaviour {
  service: string;
  deadlineMs: number;
  unavailable: ErrorCode;
  deadline: ErrorCode;
  fieldRenames?: Record<string, string>;
  channelOptions?: ChannelOptions;
}

function channelCredentials(tls: GrpcClientOptions['tls']): ChannelCredentials {
  if (!tls) return credentials.createInsecure();
  if (tls === true) return credentials.createSsl();
  const buf = (v: Buffer | string | undefined) => (v === undefined ? null : Buffer.from(v));
  return credentials.createSsl(buf(tls.ca), buf(tls.key), buf(tls.cert));
}

function positiveMs(name: string, v: number): number {
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`${name} must be a positive number of milliseconds: ${v}`);
  return v;
}

/** One channel and the call plumbing the three clients share. */
class Remote {
  readonly #client: Client;
  readonly #token: TokenSource;
  readonly #b: Behaviour;
  readonly #label: string;
  #closed = false;

  constructor(options: GrpcClientOptions, behaviour: Behaviour) {
    if (typeof options.address !== 'string' || options.address.length === 0) throw new RangeError('address must be host:port');
    if (typeof options.token !== 'function' && (typeof options.token !== 'string' || options.token.length === 0)) {
      throw new RangeError('token must be a non-empty string or a function returning one');
    }
    this.#b = { ...behaviour, deadlineMs: positiveMs('deadlineMs', options.deadlineMs ?? behaviour.deadlineMs) };
    this.#token = options.token;
    this.#label = `${behaviour.service} at ${options.address}`;
    const tls = options.tls && options.tls !== true ? options.tls : null;
    this.#client = new Client(options.address, channelCredentials(options.tls), {
      // Finds a dead peer between calls (a restarted container) instead of at the next call's deadline.
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      ...(tls?.serverName ? { 'grpc.ssl_target_name_override': tls.serverName, 'grpc.default_authority': tls.serverName } : {}),
      ...behaviour.channelOptions,
      ...options.channelOptions,
    });
  }

  get deadlineMs(): number {
    return this.#b.deadlineMs;
  }

  #fail(reason: string, cause?: unknown): DispatchError {
    return new DispatchError(this.#b.unavailable, { reason: `${this.#label}: ${reason}`, retryable: true }, cause === undefined ? undefined : { cause });
  }

  #error(err: ServiceError): DispatchError {
    return clientError(err, { ...this.#b, service: this.#label });
  }

  async #metadata() {
    if (this.#closed) throw this.#fail('client closed');
    let token: string;
    try {
      token = typeof this.#token === 'string' ? this.#token : await this.#token();
    } catch (err) {
      throw this.#fail('token source failed', err);
    }
    return withBearer(token);
  }

  async unary<Req, Res>(def: Unary<Req, Res>, request: Req, deadlineMs = this.#b.deadlineMs): Promise<Res> {
    const metadata = await this.#metadata();
    return new Promise<Res>((resolve, reject) => {
      this.#client.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, request, metadata, { deadline: Date.now() + deadlineMs }, (err, res) =>
        err ? reject(this.#error(err)) : resolve(res!),
      );
    });
  }

  /** A server stream, every message handed to `onMessage` in order; resolves once the stream ended well. */
  async stream<Req, Res>(def: Unary<Req, Res>, request: Req, onMessage: (msg: Res) => void, deadlineMs = this.#b.deadlineMs): Promise<void> {
    const metadata = await this.#metadata();
    return new Promise<void>((resolve, reject) => {
      const call = this.#client.makeServerStreamRequest(def.path, def.requestSerialize, def.responseDeserialize, request, metadata, { deadline: Date.now() + deadlineMs });
      let failed = false;
      call.on('data', (msg: Res) => {
        if (failed) return;
        try {
          onMessage(msg);
        } catch (err) {
          // A message we cannot read spoils the whole answer: stop the stream rather than return part of it.
          failed = true;
          call.cancel();
          reject(err);
        }
      });
      // grpc-js emits 'error' before 'end' when the status is not OK, so a failed stream never resolves.
      call.on('error', (err: ServiceError) => {
        if (!failed) reject(this.#error(err));
        failed = true;
      });
      call.on('end', () => {
        if (!failed) resolve();
      });
    });
  }

  /** Resolves once the channel is connected; rejects with the port's unavailable code after `ms`. */
  waitForReady(ms: number): Promise<void> {
    if (this.#closed) return Promise.reject(this.#fail('client closed'));
    return new Promise((resolve, reject) =>
      this.#client.waitForReady(Date.now() + ms, (err) => (err ? reject(this.#fail(`not reachable within ${ms} ms`, err)) : resolve())),
    );
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#client.close();
  }
}

// ------------------------------------------------------------------ catalog

export interface GrpcCatalogOptions extends GrpcClientOptions {
  /** Default 3,000 ms: a reservation is one short transaction. */
  deadlineMs?: number;
}

/**
 * CatalogPort over CatalogService, plus the seed / admin calls with
 * SqlCatalog's signatures (so loadDemoCatalog works through it).
 *
 * A catalog that cannot be reached (or does not answer in time) gives
 * QD_ERR_STORE_UNAVAILABLE: CatalogPort documents no code of its own for
 * it, and this is the retryable UNAVAILABLE that order intake already
 * treats as transient (nothing was reserved or released).
 */
export class GrpcCatalog implements CatalogPort {
  readonly #r: Remote;

  constructor(options: GrpcCatalogOptions) {
    this.#r = new Remote(options, {
      service: 'catalog',
      deadlineMs: 3000,
      unavailable: 'QD_ERR_STORE_UNAVAILABLE',
      deadline: 'QD_ERR_STORE_UNAVAILABLE',
      // The engine calls an order's lines `items`; the proto `lines`.
      fieldRenames: { lines: 'items' },
    });
  }

  async getStore(storeId: string, at: number): Promise<StoreInfo> {
    const res = await this.#r.unary(CatalogAdapterService.getStore, { storeId, at });
    return storeFromPb(res.store);
  }

  async reserve(orderId: string, storeId: string, lines: OrderLine[], at: number): Promise<CatalogReservation> {
    if (!Array.isArray(lines)) throw new DispatchError('QD_ERR_INVALID_ARGUMENT', { field: 'items', reason: 'must list at least one product' });
    // A quantity the wire cannot carry (fractional, beyond int32) is refused as the catalog would, not cut.
    lines.forEach((l, i) => {
      if (!Number.isInteger(l?.quantity) || l.quantity < 1 || l.quantity > 2 ** 31 - 1) {
        throw new DispatchError('QD_ERR_INVALID_ARGUMENT', { field: `items[${i}].quantity`, reason: 'must be an integer from 1 to 1000' });
      }
    });
    const res = await this.#r.unary(CatalogAdapterService.reserve, { orderId, storeId, lines: lines.map((l) => ({ productId: l.productId, quantity: l.quantity })), at });
    return reservationFromPb(res.reservation);
  }

  async reservationOf(orderId: string): Promise<StoredReservation | null> {
    const res = await this.#r.unary(CatalogAdapterService.getReservation, { orderId });
    return res.reservation ? storedReservationFromPb(res.reservation) : null;
  }

  async release(orderId: string): Promise<void> {
    await this.#r.unary(CatalogAdapterService.release, { orderId });
  }

  async abandon(orderId: string): Promise<void> {
    await this.#r.unary(CatalogAdapterService.abandon, { orderId });
  }

  async commit(orderId: string): Promise<void> {
    await this.#r.unary(CatalogAdapterService.commit, { orderId });
  }

  /** Seed / admin: creates or replaces a store. @returns whether anything changed. */
  async upsertStore(store: StoreRecord): Promise<boolean> {
    return (await this.#r.unary(CatalogAdapterService.upsertStore, storeRecordToPb(store))).changed;
  }

  /** Seed / admin: creates or replaces a product. @returns whether anything changed. */
  async upsertProduct(product: ProductRecord): Promise<boolean> {
    const { storeId, productId, name, pricePaise, active } = product;
    return (await this.#r.unary(CatalogAdapterService.upsertProduct, { storeId, productId, name, pricePaise, active })).changed;
  }

  /** Seed / admin: sets units on hand. @returns whether it changed. */
  async setStock(storeId: string, productId: string, onHand: number): Promise<boolean> {
    return (await this.#r.unary(CatalogAdapterService.setStock, { storeId, productId, onHand })).changed;
  }

  /** Seed / admin: sets units on hand and returns the stock after it. */
  async setStockLevel(storeId: string, productId: string, onHand: number): Promise<{ stock: StockLevel; changed: boolean }> {
    const res = await this.#r.unary(CatalogAdapterService.setStock, { storeId, productId, onHand });
    return { stock: { onHand: res.stock?.onHand ?? 0, reserved: res.stock?.reserved ?? 0, available: res.stock?.available ?? 0 }, changed: res.changed };
  }

  /** Resolves once connected; QD_ERR_STORE_UNAVAILABLE after `ms`. */
  waitForReady(ms = 5000): Promise<void> {
    return this.#r.waitForReady(ms);
  }

  close(): void {
    this.#r.close();
  }
}

// ------------------------------------------------------------------ payments

export interface GrpcPaymentsOptions extends GrpcClientOptions {
  /**
   * Default 10,000 ms. Keep it above the payments service's own provider
   * deadline (RazorpayPayments: 8,000 ms by default), so the service's
   * precise QD_ERR_PAYMENT_TIMEOUT / QD_ERR_PAYMENT_PROVIDER answer arrives
   * before this client gives up.
   */
  deadlineMs?: number;
}

/**
 * PaymentsPort over PaymentsService. Never hangs: a service that does not
 * answer within the deadline gives QD_ERR_PAYMENT_TIMEOUT, one that cannot
 * be reached QD_ERR_PAYMENT_PROVIDER (both retryable, as the port says).
 */
export class GrpcPayments implements PaymentsPort {
  readonly #r: Remote;

  constructor(options: GrpcPaymentsOptions) {
    this.#r = new Remote(options, {
      service: 'payments',
      deadlineMs: 10_000,
      unavailable: 'QD_ERR_PAYMENT_PROVIDER',
      deadline: 'QD_ERR_PAYMENT_TIMEOUT',
      fieldRenames: {},
    });
  }

  async createIntent(orderId: string, amountPaise: number, currency: string): Promise<PaymentIntent> {
    if (!Number.isSafeInteger(amountPaise)) throw new DispatchError('QD_ERR_INVALID_ARGUMENT', { field: 'amountPaise', reason: 'must be an integer number of paise' });
    const res = await this.#r.unary(PaymentsServiceService.createIntent, { orderId, amountPaise, currency });
    if (!res.intent) throw new DispatchError('QD_ERR_INTERNAL', { reason: 'payments service answered CreateIntent without an intent' });
    return intentFromPb(res.intent);
  }

  async intentOf(orderId: string): Promise<PaymentIntent | null> {
    const res = await this.#r.unary(PaymentsServiceService.getIntent, { orderId });
    return res.intent ? intentFromPb(res.intent) : null;
  }

  async refund(orderId: string, paymentId: string, amountPaise?: number): Promise<Refund> {
    if (amountPaise !== undefined && (!Number.isSafeInteger(amountPaise) || amountPaise <= 0)) {
      throw new DispatchError('QD_ERR_INVALID_ARGUMENT', { field: 'amountPaise', reason: 'must be a positive integer number of paise' });
    }
    return refundFromPb(await this.#r.unary(PaymentsServiceService.refund, { orderId, paymentId, amountPaise }));
  }

  waitForReady(ms = 5000): Promise<void> {
    return this.#r.waitForReady(ms);
  }

  close(): void {
    this.#r.close();
  }
}

// ------------------------------------------------------------------ persistence

export interface GrpcEventStoreOptions extends GrpcClientOptions {
  /** Default 10,000 ms for append, readStream, saveSnapshots and riderDailyStats. */
  deadlineMs?: number;
  /** Default 300,000 ms: recovery reads every live stream in one call. */
  loadLiveDeadlineMs?: number;
  /** init() waits this long for the service to be reachable (default 10,000 ms). */
  connectTimeoutMs?: number;
}

/**
 * EventStore over PersistenceService. One append() is one Append call, which
 * the service stores as one transaction with its statistics; a failure of
 * any kind (refused, unreachable, deadline) rejects and the engine treats the
 * batch as not durable, exactly as with an in-process store. Data and
 * snapshot states travel as JSON text, so they read back as they would from
 * the SQL store. Earnings in statistics deltas must be whole paise (the
 * wire's int64); the engine only ever adds whole paise.
 */
export class GrpcEventStore implements EventStore {
  readonly #r: Remote;
  readonly #loadLiveMs: number;
  readonly #connectMs: number;

  constructor(options: GrpcEventStoreOptions) {
    this.#r = new Remote(options, {
      service: 'persistence',
      deadlineMs: 10_000,
      unavailable: 'QD_ERR_STORE_UNAVAILABLE',
      deadline: 'QD_ERR_STORE_UNAVAILABLE',
      // One Append carries a whole group commit; one LoadLive message a batch of streams.
      channelOptions: { 'grpc.max_receive_message_length': 64 << 20, 'grpc.max_send_message_length': 64 << 20 },
    });
    this.#loadLiveMs = positiveMs('loadLiveDeadlineMs', options.loadLiveDeadlineMs ?? 300_000);
    this.#connectMs = positiveMs('connectTimeoutMs', options.connectTimeoutMs ?? 10_000);
  }

  /** The service created its schema when it started; this checks that it can be reached. */
  init(): Promise<void> {
    return this.#r.waitForReady(this.#connectMs);
  }

  async append(events: StoredEvent[], stats: RiderStatsDelta[] = []): Promise<void> {
    if (events.length === 0 && stats.length === 0) return;
    // Converted before anything is sent: a row the wire cannot carry fails the whole batch, as in the SQL store.
    const request = { events: events.map(eventToPb), stats: stats.map(deltaToPb) };
    await this.#r.unary(PersistenceServiceService.append, request);
  }

  async readStream(stream: string, afterSeq = 0): Promise<StoredEvent[]> {
    const out: StoredEvent[] = [];
    await this.#r.stream(PersistenceServiceService.readStream, { stream, afterSeq }, (msg) => {
      for (const e of msg.events) out.push(eventFromPb(e));
    });
    return out;
  }

  async saveSnapshots(snapshots: Snapshot[]): Promise<void> {
    if (snapshots.length === 0) return;
    await this.#r.unary(PersistenceServiceService.saveSnapshots, { snapshots: snapshots.map(snapshotToPb) });
  }

  async loadLive(): Promise<LiveStream[]> {
    const out: LiveStream[] = [];
    await this.#r.stream(
      PersistenceServiceService.loadLive,
      {},
      (msg) => {
        for (const s of msg.streams) out.push(liveFromPb(s));
      },
      this.#loadLiveMs,
    );
    return out;
  }

  async riderDailyStats(riderId: string, day: string): Promise<RiderDailyStats | null> {
    const res = await this.#r.unary(PersistenceServiceService.riderDailyStats, { riderId, day });
    return res.stats ? statsFromPb(res.stats) : null;
  }

  /** Closes the channel; later calls reject with QD_ERR_STORE_UNAVAILABLE. The remote store stays open. */
  async close(): Promise<void> {
    this.#r.close();
  }
}

// ------------------------------------------------------------------ health

export interface HealthProbeOptions {
  address: string;
  /** Service to ask about ('' or absent: the server as a whole). */
  service?: string;
  timeoutMs?: number;
  tls?: ClientTls | true;
  /** Skips the certificate's host name check (a probe dialling 127.0.0.1 on a certificate issued to the service's DNS name). */
  skipHostnameCheck?: boolean;
}

/** grpc.health.v1 Check: true when the server reports SERVING; false for anything else, including no answer. */
export async function checkHealth(options: HealthProbeOptions): Promise<boolean> {
  const ms = options.timeoutMs ?? 2000;
  const tls = options.tls;
  const channelOptions: ChannelOptions = {};
  let creds: ChannelCredentials | undefined;
  if (tls && options.skipHostnameCheck) {
    const t = tls === true ? {} : tls;
    const buf = (v: Buffer | string | undefined) => (v === undefined ? null : Buffer.from(v));
    creds = credentials.createSsl(buf(t.ca), buf(t.key), buf(t.cert), { checkServerIdentity: () => undefined });
  }
  const client = new Client(options.address, creds ?? channelCredentials(tls), channelOptions);
  try {
    const res = await new Promise<{ status: number }>((resolve, reject) =>
      client.makeUnaryRequest(
        HealthService.check.path,
        HealthService.check.requestSerialize,
        HealthService.check.responseDeserialize,
        { service: options.service ?? '' },
        { deadline: Date.now() + ms },
        (err, r) => (err ? reject(err) : resolve(r!)),
      ),
    );
    return res.status === ServingStatus.SERVING;
  } catch {
    return false;
  } finally {
    client.close();
  }
}

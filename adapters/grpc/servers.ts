/**
 * The adapters served over gRPC: CatalogService over a SqlCatalog,
 * PaymentsService over any PaymentsPort, PersistenceService over any
 * EventStore. Every call is authorized first (the `authorize` option) and
 * every failure is answered through protos/rpc.ts, so a client sees the
 * same code and details the adapter threw in-process.
 */
import { type ServerUnaryCall, type ServerWritableStream, type sendUnaryData } from '@grpc/grpc-js';
import pino, { type Logger } from 'pino';
import { DispatchError, invalidArgument } from '../../engine/index.ts';
import type { EventStore, PaymentsPort, StoredEvent } from '../../engine/index.ts';
import type { SqlCatalog } from '../catalog/index.ts';
import { toServiceError, unauthenticated } from '../../protos/rpc.ts';
import type { CatalogServiceServer } from '../../protos/gen/quickdash/v1/catalog.ts';
import type { PaymentsServiceServer } from '../../protos/gen/quickdash/v1/payments.ts';
import type { LoadLiveResponse, PersistenceServiceServer, ReadStreamResponse } from '../../protos/gen/quickdash/v1/persistence.ts';
import { AuthenticationError, type Authorize, type Caller } from './authorize.ts';
import {
  deltaFromPb,
  eventFromPb,
  eventToPb,
  hoursFromPb,
  intentToPb,
  liveToPb,
  reservationToPb,
  snapshotFromPb,
  statsToPb,
  stockToPb,
  storeToPb,
} from './codec.ts';
import type { GetReservationRequest } from './definitions.ts';
import { databaseReason, isDatabaseUnavailable } from './errors.ts';

export interface ServerOptions {
  /** Runs before every call; see Authorize. */
  authorize: Authorize;
  /** Structured log (default: pino at QD_LOG_LEVEL or warn). */
  logger?: Logger;
}

/** CatalogService as generated. */
export type CatalogAdapterServer = CatalogServiceServer;

/** Streamed responses are cut at about this many bytes of payload: well under grpc's 4 MiB default receive limit. */
const CHUNK_BYTES = 1 << 20;

/** What a service turns an unknown thrown value into before it is answered (a DispatchError, or the value for INTERNAL). */
type Classify = (err: unknown, method: string) => unknown;

interface Context {
  service: string;
  authorize: Authorize;
  log: Logger;
  classify: Classify;
}

function context(service: string, options: ServerOptions, classify: Classify): Context {
  const log = (options.logger ?? pino({ level: process.env.QD_LOG_LEVEL ?? 'warn' })).child({ component: 'grpc-adapter', service });
  return { service, authorize: options.authorize, log, classify };
}

/** The status a failed call is answered with, logged by how much it matters to an operator. */
function refusal(ctx: Context, method: string, err: unknown, caller: Caller | null, started: number) {
  const ms = Math.round(performance.now() - started);
  if (err instanceof AuthenticationError) {
    ctx.log.warn({ method, reason: err.reason }, 'call refused: unauthenticated');
    return unauthenticated(err.reason);
  }
  const e = err instanceof DispatchError ? err : ctx.classify(err, method);
  if (!(e instanceof DispatchError) || e.code === 'QD_ERR_INTERNAL') ctx.log.error({ method, sub: caller?.sub, err, ms }, 'call failed');
  else if (e.code === 'QD_ERR_STORE_UNAVAILABLE') ctx.log.error({ method, sub: caller?.sub, code: e.code, err, ms }, 'call failed: backend unavailable');
  else ctx.log.debug({ method, sub: caller?.sub, code: e.code, ms }, 'call refused');
  return toServiceError(e);
}

/** Authorizes, then runs `fn`: a refused caller never reaches the implementation. */
function unary<Req, Res>(ctx: Context, method: string, fn: (req: Req, caller: Caller) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
    const started = performance.now();
    let caller: Caller | null = null;
    void (async () => {
      caller = await ctx.authorize(call.metadata);
      return fn(call.request, caller);
    })().then(
      (res) => {
        ctx.log.debug({ method, sub: caller?.sub, ms: Math.round(performance.now() - started) }, 'call answered');
        callback(null, res);
      },
      (err: unknown) => callback(refusal(ctx, method, err, caller, started)),
    );
  };
}

/**
 * A server stream: `fn` hands its messages to `send`, which waits while the
 * client is not reading (flow control) and reports whether the client is
 * still there.
 */
function serverStream<Req, Res>(ctx: Context, method: string, fn: (req: Req, send: (msg: Res) => Promise<boolean>, caller: Caller) => Promise<void>) {
  return (call: ServerWritableStream<Req, Res>): void => {
    const started = performance.now();
    let caller: Caller | null = null;
    let cancelled = false;
    call.on('cancelled', () => (cancelled = true));
    const send = async (msg: Res): Promise<boolean> => {
      if (cancelled) return false;
      if (!call.write(msg)) {
        // Not events.once: its leftover listener would turn a later 'error' emit into an unhandled rejection.
        await new Promise<void>((resolve) => {
          const go = () => {
            call.off('drain', go);
            call.off('cancelled', go);
            resolve();
          };
          call.on('drain', go);
          call.on('cancelled', go);
        });
      }
      return !cancelled;
    };
    void (async () => {
      caller = await ctx.authorize(call.metadata);
      await fn(call.request, send, caller);
    })().then(
      () => {
        ctx.log.debug({ method, sub: caller?.sub, cancelled, ms: Math.round(performance.now() - started) }, 'stream ended');
        if (!cancelled) call.end();
      },
      (err: unknown) => {
        // grpc-js ends a server stream with the status of an emitted error.
        if (!cancelled) call.emit('error', refusal(ctx, method, err, caller, started));
      },
    );
  };
}

/** Epoch ms for a request's `at`, where the protos say 0 means now. */
const atOrNow = (at: number) => (at === 0 ? Date.now() : at);

// ------------------------------------------------------------------ catalog

/** A catalog database that stopped answering is a retryable UNAVAILABLE, not an INTERNAL bug. */
function classifyCatalog(err: unknown): unknown {
  return isDatabaseUnavailable(err) ? new DispatchError('QD_ERR_STORE_UNAVAILABLE', { reason: `catalog ${databaseReason(err)}` }, { cause: err }) : err;
}

export function catalogServer(catalog: SqlCatalog, options: ServerOptions): CatalogAdapterServer {
  const ctx = context('catalog', options, classifyCatalog);
  return {
    getStore: unary(ctx, 'GetStore', async (req) => ({ store: storeToPb(await catalog.getStore(req.storeId, atOrNow(req.at))) })),
    reserve: unary(ctx, 'Reserve', async (req) => {
      const lines = req.lines.map((l) => ({ productId: l.productId, quantity: l.quantity }));
      return { reservation: reservationToPb(await catalog.reserve(req.orderId, req.storeId, lines, atOrNow(req.at))) };
    }),
    release: unary(ctx, 'Release', async (req) => {
      await catalog.release(req.orderId);
      return {};
    }),
    abandon: unary(ctx, 'Abandon', async (req) => {
      await catalog.abandon(req.orderId);
      return {};
    }),
    commit: unary(ctx, 'Commit', async (req) => {
      await catalog.commit(req.orderId);
      return {};
    }),
    getReservation: unary(ctx, 'GetReservation', async (req: GetReservationRequest) => {
      const r = await catalog.reservationOf(req.orderId);
      return { reservation: r ? reservationToPb(r) : undefined };
    }),
    upsertStore: unary(ctx, 'UpsertStore', async (req) => {
      if (!req.location) throw invalidArgument('location', 'is required');
      const hours = hoursFromPb(req.hours);
      if (!hours) throw invalidArgument('hours', 'every interval needs a weekday, MONDAY to SUNDAY');
      const changed = await catalog.upsertStore({
        storeId: req.storeId,
        name: req.name,
        location: { lat: req.location.lat, lng: req.location.lng },
        timeZone: req.timeZone,
        prepMinutes: req.prepMinutes,
        paused: req.paused,
        hours,
      });
      return { store: storeToPb(await catalog.getStore(req.storeId, Date.now())), changed };
    }),
    upsertProduct: unary(ctx, 'UpsertProduct', async (req) => ({
      changed: await catalog.upsertProduct({ storeId: req.storeId, productId: req.productId, name: req.name, pricePaise: req.pricePaise, active: req.active }),
    })),
    setStock: unary(ctx, 'SetStock', async (req) => {
      const changed = await catalog.setStock(req.storeId, req.productId, req.onHand);
      const stock = await catalog.stockOf(req.storeId, req.productId);
      if (!stock) throw new DispatchError('QD_ERR_PRODUCT_NOT_FOUND', { storeId: req.storeId, productId: req.productId });
      return { stock: stockToPb(stock), changed };
    }),
  };
}

// ------------------------------------------------------------------ payments

export function paymentsServer(payments: PaymentsPort, options: ServerOptions): PaymentsServiceServer {
  // RazorpayPayments reports every failure as a DispatchError already; anything else is a bug (INTERNAL).
  const ctx = context('payments', options, (err) => err);
  return {
    createIntent: unary(ctx, 'CreateIntent', async (req) => {
      if (req.amountPaise <= 0) throw invalidArgument('amountPaise', 'must be greater than 0');
      return { intent: intentToPb(await payments.createIntent(req.orderId, req.amountPaise, req.currency)) };
    }),
    getIntent: unary(ctx, 'GetIntent', async (req) => {
      const intent = await payments.intentOf(req.orderId);
      return { intent: intent ? intentToPb(intent) : undefined };
    }),
    refund: unary(ctx, 'Refund', async (req) => {
      const r = await payments.refund(req.orderId, req.paymentId, req.amountPaise);
      return { orderId: r.orderId, providerRefundId: r.providerRefundId, amountPaise: r.amountPaise };
    }),
  };
}

// ------------------------------------------------------------------ persistence

/** The request field each method's malformed input is blamed on. */
const PERSISTENCE_FIELDS: Record<string, string> = { Append: 'events', SaveSnapshots: 'snapshots', ReadStream: 'stream', LoadLive: 'request', RiderDailyStats: 'day' };

/**
 * The stores throw TypeError/RangeError for input they refuse (and JSON.parse
 * a SyntaxError for bytes that are not JSON): the caller's fault. Anything
 * else is the database failing: QD_ERR_STORE_UNAVAILABLE, as the proto says.
 */
function classifyPersistence(err: unknown, method: string): unknown {
  if (err instanceof TypeError || err instanceof RangeError || err instanceof SyntaxError) {
    let field = PERSISTENCE_FIELDS[method] ?? 'request';
    // The stores' messages name what they refuse ("stats offers must be...", "day must be..."): blame the deltas for those.
    if (method === 'Append' && /^(stats|day) /.test(err.message)) field = 'stats';
    return new DispatchError('QD_ERR_INVALID_ARGUMENT', { field, reason: err.message }, { cause: err });
  }
  return new DispatchError('QD_ERR_STORE_UNAVAILABLE', { reason: databaseReason(err) }, { cause: err });
}

/** Sends items in messages of about CHUNK_BYTES, never splitting one item. */
async function chunked<T, M>(items: T[], size: (item: T) => number, wrap: (items: T[]) => M, send: (msg: M) => Promise<boolean>): Promise<void> {
  let batch: T[] = [];
  let bytes = 0;
  for (const item of items) {
    batch.push(item);
    bytes += size(item);
    if (bytes >= CHUNK_BYTES) {
      if (!(await send(wrap(batch)))) return;
      batch = [];
      bytes = 0;
    }
  }
  // An empty result is still answered by the stream ending; one message keeps clients simple either way.
  if (batch.length > 0) await send(wrap(batch));
}

const EVENT_OVERHEAD = 32;
const eventBytes = (e: { stream: string; type: string; dataJson: Uint8Array }) => e.stream.length + e.type.length + e.dataJson.length + EVENT_OVERHEAD;

export function persistenceServer(store: EventStore, options: ServerOptions): PersistenceServiceServer {
  const ctx = context('persistence', options, classifyPersistence);
  return {
    append: unary(ctx, 'Append', async (req) => {
      // Decode everything first: a malformed row fails the call before the store sees any of it.
      const events: StoredEvent[] = req.events.map(eventFromPb);
      await store.append(events, req.stats.map(deltaFromPb));
      return {};
    }),
    saveSnapshots: unary(ctx, 'SaveSnapshots', async (req) => {
      await store.saveSnapshots(req.snapshots.map(snapshotFromPb));
      return {};
    }),
    riderDailyStats: unary(ctx, 'RiderDailyStats', async (req) => {
      const stats = await store.riderDailyStats(req.riderId, req.day);
      return { stats: stats ? statsToPb(stats) : undefined };
    }),
    readStream: serverStream<{ stream: string; afterSeq: number }, ReadStreamResponse>(ctx, 'ReadStream', async (req, send) => {
      const events = (await store.readStream(req.stream, req.afterSeq)).map(eventToPb);
      await chunked(events, eventBytes, (batch) => ({ events: batch }), send);
    }),
    loadLive: serverStream<object, LoadLiveResponse>(ctx, 'LoadLive', async (_req, send) => {
      const live = (await store.loadLive()).map(liveToPb);
      const size = (l: ReturnType<typeof liveToPb>) =>
        l.stream.length + (l.snapshot ? l.snapshot.stateJson.length + EVENT_OVERHEAD : 0) + l.events.reduce((n, e) => n + eventBytes(e), 0);
      await chunked(live, size, (streams) => ({ streams }), send);
    }),
  };
}

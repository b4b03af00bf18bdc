// DispatchService over grpc-js on loopback with everything real: the engine (inline shards, memory event store,
// virtual clock), the catalog and the payments ledger on the local Postgres (own schemas, dropped afterwards),
// RazorpayPayments against FakeRazorpay, OrderIntake, and the generated client with service tokens.
import t from 'tap';
import type { Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { Metadata, credentials, status, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { cellToParent, latLngToCell } from 'h3-js';
import pg from 'pg';
import pino from 'pino';
import { MemoryEventStore, OrderIntake, VirtualClock, createEngine, type CatalogPort, type DispatchEngine, type OrderUpdate } from '../../engine/index.ts';
import { PgClient } from '../../adapters/sql/index.ts';
import { SqlCatalog, everyDay } from '../../adapters/catalog/index.ts';
import { FakeRazorpay, RazorpayPayments } from '../../adapters/razorpay/index.ts';
import { RESUME_POSITION_KEY, developmentAuthConfig, signToken, startGrpcServer, type GrpcServer, type GrpcServerOptions } from '../../gateway/index.ts';
import { CancelParty, ErrorDetail, OrderStatus, PaymentMode, type LatLng, type Order, type PaymentIntent } from '../../protos/gen/quickdash/v1/common.ts';
import {
  DispatchServiceClient,
  type CreateOrderRequest,
  type OrderEvent,
  type WatchOrdersRequest,
  type WatchOrdersResponse,
} from '../../protos/gen/quickdash/v1/dispatch.ts';
import { withBearer } from '../../protos/rpc.ts';

const PG_URL = process.env.QD_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
const RUN = `qdgrpc_${process.pid}_${Date.now().toString(36)}`;
/** Tuesday 24 Nov 2026, 14:30 in Asia/Kolkata: the stores are open. */
const T0 = Date.UTC(2026, 10, 24, 9, 0, 0);
const HOURS = everyDay(['06:00', '02:00']);
const auth = developmentAuthConfig();
const log = pino({ level: 'silent' });

const KORAMANGALA = { lat: 12.9352, lng: 77.6245 };
const INDIRANAGAR = { lat: 12.9784, lng: 77.6408 };
const HSR = { lat: 12.9116, lng: 77.6474 };
const MALLESHWARAM = { lat: 13.0035, lng: 77.5709 };

const service = signToken({ sub: 'orders-api', role: 'service', ttlSec: 600 }, auth);
const otherService = signToken({ sub: 'billing-api', role: 'service', ttlSec: 600 }, auth);

/** A point `n` metres north and `e` metres east of `p`. */
function offset(p: LatLng, n: number, e: number): LatLng {
  return { lat: p.lat + n / 111_320, lng: p.lng + e / (111_320 * Math.cos((p.lat * Math.PI) / 180)) };
}

interface World {
  engine: DispatchEngine;
  clock: VirtualClock;
  catalog: SqlCatalog;
  fake: FakeRazorpay;
  intake: OrderIntake;
  server: GrpcServer;
  client: DispatchServiceClient;
  /** Every order change the engine reported, in order (the truth watchers are compared with). */
  changes: OrderUpdate[];
  /** Another server on the same engine with other options, closed in teardown. */
  extra(t: Test, o: Partial<GrpcServerOptions>): Promise<{ server: GrpcServer; client: DispatchServiceClient }>;
}

async function world(t: Test): Promise<World> {
  const pool = new pg.Pool({ connectionString: PG_URL, max: 8 });
  const sql = new PgClient(pool);
  const clock = new VirtualClock(T0);
  const engine = await createEngine({
    store: new MemoryEventStore(),
    clock,
    threads: false,
    // Searches stay within about 1.5 km, so riders of one part of town never take another part's orders.
    config: { shards: 1, matchWindowMs: 1_000, searchMaxK: 3 },
  });
  const changes: OrderUpdate[] = [];
  engine.watchOrders((u) => changes.push(u));
  const catalog = new SqlCatalog(sql, { schema: `${RUN}_cat`, logger: log });
  await catalog.init();
  const stores: Array<[string, LatLng, boolean]> = [
    ['st-a', KORAMANGALA, false],
    ['st-b', INDIRANAGAR, false],
    ['st-c', HSR, false],
    ['st-d', MALLESHWARAM, false],
    ['st-closed', offset(KORAMANGALA, 400, 0), true],
  ];
  for (const [storeId, location, paused] of stores) {
    await catalog.upsertStore({ storeId, name: storeId, location, timeZone: 'Asia/Kolkata', prepMinutes: 8, paused, hours: HOURS });
    await catalog.upsertProduct({ storeId, productId: 'milk', name: 'Milk 1 l', pricePaise: 6_800 });
    await catalog.upsertProduct({ storeId, productId: 'bread', name: 'Bread', pricePaise: 4_500 });
    await catalog.setStock(storeId, 'milk', 100);
    await catalog.setStock(storeId, 'bread', 50);
  }
  const fake = await FakeRazorpay.start();
  const payments = new RazorpayPayments({
    keyId: fake.keyId,
    keySecret: fake.keySecret,
    sql,
    schema: `${RUN}_pay`,
    baseUrl: fake.url,
    requestTimeoutMs: 2_000,
    deadlineMs: 3_000,
    logger: log,
  });
  await payments.init();
  const intake = new OrderIntake({ engine, catalog, payments, clock, logger: log });
  intake.start();
  const options: GrpcServerOptions = { engine, intake, catalog, payments, auth, clock, logger: log };
  const server = await startGrpcServer(options);
  const client = new DispatchServiceClient(`127.0.0.1:${server.port}`, credentials.createInsecure());
  t.teardown(async () => {
    client.close();
    await server.close(500);
    intake.stop();
    await fake.close();
    await engine.close();
    await pool.query(`DROP SCHEMA IF EXISTS ${RUN}_cat CASCADE`);
    await pool.query(`DROP SCHEMA IF EXISTS ${RUN}_pay CASCADE`);
    await pool.end();
  });
  return {
    engine,
    clock,
    catalog,
    fake,
    intake,
    server,
    client,
    changes,
    async extra(t, o) {
      const server = await startGrpcServer({ ...options, ...o });
      const client = o.tls
        ? new DispatchServiceClient(`localhost:${server.port}`, credentials.createSsl(Buffer.from(o.tls.certPem)))
        : new DispatchServiceClient(`127.0.0.1:${server.port}`, credentials.createInsecure());
      t.teardown(async () => {
        client.close();
        await server.close(200);
      });
      return { server, client };
    },
  };
}

type Unary = (req: unknown, md: unknown, opts: unknown, cb: (e: ServiceError | null, v: unknown) => void) => void;

/** One unary call with a deadline; rejects with the ServiceError. */
function call<Res>(client: DispatchServiceClient, method: string, req: unknown, token: string | null = service): Promise<Res> {
  const fn = (client as unknown as Record<string, Unary>)[method]!;
  const md = token === null ? new Metadata() : withBearer(token);
  return new Promise((resolve, reject) => fn.call(client, req, md, { deadline: Date.now() + 5_000 }, (e, v) => (e ? reject(e) : resolve(v as Res))));
}

/** The ServiceError a call fails with; a success fails the test. */
async function refusal(t: Test, p: Promise<unknown>, code: number, qdCode: string | null, what: string): Promise<ServiceError> {
  try {
    await p;
  } catch (err) {
    const e = err as ServiceError;
    t.equal(e.code, code, `${what}: gRPC status ${status[code]}`);
    if (qdCode !== null) t.equal(e.metadata.get('qd-error-code')[0], qdCode, `${what}: ${qdCode}`);
    return e;
  }
  t.fail(`${what}: expected ${status[code]}, but it succeeded`);
  return { code: status.OK } as ServiceError;
}

const fieldOf = (e: ServiceError) => e.metadata?.get('qd-error-field')[0];
const detailOf = (e: ServiceError) => {
  const [bin] = e.metadata?.get('qd-error-detail-bin') ?? [];
  return bin ? ErrorDetail.decode(bin as Buffer) : null;
};

function createRequest(key: string, over: Partial<CreateOrderRequest> = {}): CreateOrderRequest {
  return {
    idempotencyKey: key,
    storeId: 'st-a',
    customerId: 'cust-1',
    dropoff: offset(KORAMANGALA, 1_200, 600),
    lines: [
      { productId: 'milk', quantity: 2 },
      { productId: 'bread', quantity: 1 },
    ],
    paymentMode: PaymentMode.PAYMENT_MODE_PREPAID,
    ...over,
  };
}

interface CreateOrderResult {
  order: Order;
  paymentIntent?: PaymentIntent;
  replayed: boolean;
}

/** A watch stream collecting what it receives. */
function watch(client: DispatchServiceClient, req: Partial<WatchOrdersRequest>, token = service) {
  const stream: ClientReadableStream<WatchOrdersResponse> = client.watchOrders({ afterPosition: '', ...req } as WatchOrdersRequest, withBearer(token));
  const events: OrderEvent[] = [];
  let outcome: { ok: true } | { ok: false; error: ServiceError } | null = null;
  const waiters = new Set<() => void>();
  const poke = () => {
    for (const w of waiters) w();
  };
  stream.on('data', (r: WatchOrdersResponse) => {
    events.push(r.event!);
    poke();
  });
  stream.on('error', (error: ServiceError) => {
    outcome = { ok: false, error };
    poke();
  });
  stream.on('end', () => {
    outcome ??= { ok: true };
    poke();
  });
  const until = (done: () => boolean, what: string, ms = 5_000) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (done()) {
          waiters.delete(check);
          clearTimeout(timer);
          resolve();
        } else if (outcome) {
          waiters.delete(check);
          clearTimeout(timer);
          reject(new Error(`${what}: the stream ended first (${outcome.ok ? 'OK' : outcome.error.message})`));
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`${what}: timed out with ${events.length} events`));
      }, ms);
      waiters.add(check);
      check();
    });
  const ended = () =>
    new Promise<{ ok: true } | { ok: false; error: ServiceError }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('stream did not end')), 5_000);
      const check = () => {
        if (!outcome) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve(outcome);
      };
      waiters.add(check);
      check();
    });
  return { stream, events, until, ended, count: (n: number, what: string) => until(() => events.length >= n, what) };
}

/** Resolves after the server had time to act on something the client did (a cancel). */
const settle = (ms = 50) => new Promise((r) => setTimeout(r, ms));

/** The server's feed position now: a watch started from it misses nothing done after this line, however late the server subscribes. */
const here = (server: GrpcServer) => server.feed.position(server.feed.last);

t.test('DispatchService', async (t) => {
  const w = await world(t);
  const { client, catalog, engine, clock } = w;

  t.test('auth: no token, a bad token, another role', async (t) => {
    const get = (token: string | null) => call(client, 'getOrder', { orderId: 'o-x' }, token);
    const none = await refusal(t, get(null), status.UNAUTHENTICATED, 'QD_ERR_UNAUTHENTICATED', 'no token');
    t.match(none.details, /no bearer token/);
    await refusal(t, get('not-a-jwt'), status.UNAUTHENTICATED, 'QD_ERR_UNAUTHENTICATED', 'garbage token');
    const expired = signToken({ sub: 'orders-api', role: 'service', ttlSec: 60 }, { ...auth, now: () => Date.now() - 3_600_000 });
    await refusal(t, get(expired), status.UNAUTHENTICATED, 'QD_ERR_UNAUTHENTICATED', 'expired token');
    const rider = signToken({ sub: 'rider-1', role: 'rider', ttlSec: 60 }, auth);
    await refusal(t, get(rider), status.PERMISSION_DENIED, 'QD_ERR_PERMISSION_DENIED', 'rider token');
    const ops = signToken({ sub: 'ops-1', role: 'operations', ttlSec: 60 }, auth);
    await refusal(t, get(ops), status.PERMISSION_DENIED, 'QD_ERR_PERMISSION_DENIED', 'operations token (ops tools call as a service)');
    const stream = watch(client, { scope: { $case: 'storeId', storeId: 'st-a' } }, rider);
    const out = await stream.ended();
    t.equal(out.ok ? status.OK : out.error.code, status.PERMISSION_DENIED, 'a stream refuses the wrong role too');
    const found = await refusal(t, get(service), status.NOT_FOUND, 'QD_ERR_ORDER_NOT_FOUND', 'a service token gets through to the engine');
    t.ok(found.metadata.get('x-request-id')[0], 'refusals carry the request id');
  });

  t.test('CreateOrder prepaid: intent, awaiting payment, idempotent retries, conflicts', async (t) => {
    const before = await catalog.stockOf('st-a', 'milk');
    const first = await call<CreateOrderResult>(client, 'createOrder', createRequest('checkout-1'));
    const o = first.order;
    t.equal(first.replayed, false);
    t.equal(o.status, OrderStatus.ORDER_STATUS_AWAITING_PAYMENT, 'a prepaid order waits for its payment');
    t.equal(o.orderId, OrderIntake.orderIdFor('orders-api', 'checkout-1'), 'the id derives from the caller and the key');
    t.equal(o.orderId, 'o-5d47742fdf5c37920101271f', 'the same way in every version: stored ids and retries keep meaning the same order');
    t.strictSame(o.lines, [
      { productId: 'bread', quantity: 1, unitPricePaise: 4_500 },
      { productId: 'milk', quantity: 2, unitPricePaise: 6_800 },
    ]);
    t.equal(o.itemsTotalPaise, 18_100);
    t.ok(o.deliveryFeePaise > 0, 'a delivery fee');
    const intent = first.paymentIntent!;
    t.ok(intent.providerOrderId.startsWith('order_'), 'a Razorpay order for the app to pay');
    t.equal(intent.amountPaise, o.itemsTotalPaise + o.deliveryFeePaise, 'the intent is items plus fee');
    t.match(o.payment, { mode: PaymentMode.PAYMENT_MODE_PREPAID, amountPaise: intent.amountPaise, currency: 'INR', providerOrderId: intent.providerOrderId });
    t.equal(o.payment?.paymentId, undefined, 'no payment id before the capture');
    t.equal((await catalog.stockOf('st-a', 'milk'))!.reserved, before!.reserved + 2, 'two milk reserved');

    const again = await call<CreateOrderResult>(client, 'createOrder', createRequest('checkout-1'));
    t.equal(again.replayed, true, 'the retry is a replay');
    t.equal(again.order.orderId, o.orderId, 'the same order');
    t.strictSame(again.paymentIntent, intent, 'the same intent');
    t.equal(again.order.deliveryFeePaise, o.deliveryFeePaise);
    t.equal((await catalog.stockOf('st-a', 'milk'))!.reserved, before!.reserved + 2, 'nothing reserved twice');
    t.equal(w.fake.requests.filter((r) => r.method === 'POST' && r.path === '/v1/orders').length, 1, 'one Razorpay order');
    const sameId = await call<CreateOrderResult>(client, 'createOrder', createRequest('checkout-1', { orderId: o.orderId }));
    t.equal(sameId.order.orderId, o.orderId, 'order_id may name the derived id');

    const conflict = await refusal(
      t,
      call(client, 'createOrder', createRequest('checkout-1', { lines: [{ productId: 'milk', quantity: 3 }] })),
      status.ALREADY_EXISTS,
      'QD_ERR_IDEMPOTENCY_CONFLICT',
      'same key, other lines',
    );
    t.equal(detailOf(conflict)?.details.orderId, o.orderId, 'the detail names the order the key placed');
    const own = await refusal(t, call(client, 'createOrder', createRequest('checkout-1', { orderId: 'my-id' })), status.INVALID_ARGUMENT, 'QD_ERR_INVALID_ARGUMENT', 'own order id');
    t.equal(fieldOf(own), 'order_id');
    const other = await call<CreateOrderResult>(client, 'createOrder', createRequest('checkout-1'), otherService);
    t.not(other.order.orderId, o.orderId, "another caller's same key is another order");
    t.equal(other.replayed, false);

    const got = await call<{ order: CreateOrderResult['order'] }>(client, 'getOrder', { orderId: o.orderId });
    t.strictSame(got.order, again.order, 'GetOrder answers the same order, lines and payment included');
  });

  t.test('CreateOrder after an attempt that reserved and died before creating: finishes it with what is held', async (t) => {
    const before = (await catalog.stockOf('st-a', 'milk'))!.reserved;
    const orderId = OrderIntake.orderIdFor('orders-api', 'died-1');
    await catalog.reserve(orderId, 'st-a', createRequest('died-1').lines, clock.now());
    const res = await call<CreateOrderResult>(client, 'createOrder', createRequest('died-1', { paymentMode: PaymentMode.PAYMENT_MODE_COD }));
    t.equal(res.order.orderId, orderId);
    t.equal(res.replayed, false, 'placed now, not a replay');
    t.equal((await catalog.stockOf('st-a', 'milk'))!.reserved, before + 2, 'the held stock, reserved once');

    await catalog.reserve(OrderIntake.orderIdFor('orders-api', 'died-2'), 'st-a', [{ productId: 'bread', quantity: 1 }], clock.now());
    await refusal(t, call(client, 'createOrder', createRequest('died-2')), status.ALREADY_EXISTS, 'QD_ERR_IDEMPOTENCY_CONFLICT', 'held lines other than asked');
  });

  t.test('CreateOrder COD goes straight to searching', async (t) => {
    const res = await call<CreateOrderResult>(client, 'createOrder', createRequest('cod-1', { paymentMode: PaymentMode.PAYMENT_MODE_COD }));
    t.equal(res.order.status, OrderStatus.ORDER_STATUS_SEARCHING);
    t.equal(res.paymentIntent, undefined, 'no payment intent');
    t.equal(res.order.payment?.providerOrderId, '');
    t.equal(res.order.payment?.amountPaise, 18_100 + res.order.deliveryFeePaise, 'the rider collects items plus fee');
  });

  t.test('CreateOrder refusals name the code and the field', async (t) => {
    const bread = (await catalog.stockOf('st-a', 'bread'))!;
    const oos = await refusal(
      t,
      call(client, 'createOrder', createRequest('oos-1', { lines: [{ productId: 'bread', quantity: bread.available + 1 }] })),
      status.FAILED_PRECONDITION,
      'QD_ERR_OUT_OF_STOCK',
      'out of stock',
    );
    t.match(detailOf(oos)?.details, { productId: 'bread', available: String(bread.available), requested: String(bread.available + 1) });
    t.strictSame(await catalog.stockOf('st-a', 'bread'), bread, 'a refused order holds nothing');
    const closed = await refusal(t, call(client, 'createOrder', createRequest('closed-1', { storeId: 'st-closed' })), status.FAILED_PRECONDITION, 'QD_ERR_STORE_CLOSED', 'closed store');
    t.equal(detailOf(closed)?.details.reason, 'paused');
    await refusal(t, call(client, 'createOrder', createRequest('nostore-1', { storeId: 'st-nowhere' })), status.NOT_FOUND, 'QD_ERR_STORE_NOT_FOUND', 'unknown store');
    const unknown = await refusal(
      t,
      call(client, 'createOrder', createRequest('noprod-1', { lines: [{ productId: 'caviar', quantity: 1 }] })),
      status.NOT_FOUND,
      'QD_ERR_PRODUCT_NOT_FOUND',
      'unknown product',
    );
    t.equal(detailOf(unknown)?.details.productId, 'caviar');

    const fields: Array<[string, Partial<CreateOrderRequest>, string]> = [
      ['a latitude beyond 90', { dropoff: { lat: 95, lng: 77.6 } }, 'dropoff'],
      ['no dropoff', { dropoff: undefined }, 'dropoff'],
      ['no lines', { lines: [] }, 'lines'],
      ['a zero quantity', { lines: [{ productId: 'milk', quantity: 1 }, { productId: 'bread', quantity: 0 }] }, 'lines[1].quantity'],
      ['an empty product id', { lines: [{ productId: '', quantity: 1 }] }, 'lines[0].product_id'],
      ['no payment mode', { paymentMode: PaymentMode.PAYMENT_MODE_UNSPECIFIED }, 'payment_mode'],
      ['no store', { storeId: '' }, 'store_id'],
      ['no customer', { customerId: '' }, 'customer_id'],
      ['a key with a space', { idempotencyKey: 'a b' }, 'idempotency_key'],
      ['a repeated product beyond 1,000 in all', { lines: [{ productId: 'milk', quantity: 600 }, { productId: 'milk', quantity: 600 }] }, 'lines'],
    ];
    for (const [what, over, field] of fields) {
      const e = await refusal(t, call(client, 'createOrder', createRequest(`bad-${field}`, over)), status.INVALID_ARGUMENT, 'QD_ERR_INVALID_ARGUMENT', what);
      t.equal(fieldOf(e), field, `${what}: qd-error-field ${field}`);
      t.equal(detailOf(e)?.field, field, `${what}: the binary detail agrees`);
    }
  });

  t.test('CancelOrder of a paid order refunds and releases stock; store cancellations', async (t) => {
    const before = (await catalog.stockOf('st-a', 'milk'))!;
    const placed = await call<CreateOrderResult>(client, 'createOrder', createRequest('paid-1'));
    const orderId = placed.order.orderId;
    const paid = await w.fake.pay(placed.paymentIntent!.providerOrderId, { deliver: false });
    const captured = await w.intake.paymentCaptured(orderId, paid.payment.id);
    t.equal(captured.paymentId, paid.payment.id, 'captured');
    t.equal((await catalog.stockOf('st-a', 'milk'))!.reserved, before.reserved + 2);

    const res = await call<{ order: CreateOrderResult['order'] }>(client, 'cancelOrder', { orderId, by: CancelParty.CANCEL_PARTY_CUSTOMER, reason: 'changed my mind' });
    t.equal(res.order.status, OrderStatus.ORDER_STATUS_CANCELLED);
    t.strictSame(res.order.cancel, { by: CancelParty.CANCEL_PARTY_CUSTOMER, reason: 'changed my mind' });
    t.equal(res.order.payment?.paymentId, paid.payment.id);
    const refunds = w.fake.requests.filter((r) => r.method === 'POST' && r.path === `/v1/payments/${paid.payment.id}/refund`);
    t.equal(refunds.length, 1, 'Razorpay was asked for one refund before the answer');
    t.equal(w.fake.payment(paid.payment.id)?.amount_refunded, placed.paymentIntent!.amountPaise, 'the whole amount refunded');
    t.equal((await catalog.stockOf('st-a', 'milk'))!.reserved, before.reserved, 'stock released before the answer');
    t.equal((await catalog.reservationOf(orderId))?.status, 'released');

    const again = await refusal(t, call(client, 'cancelOrder', { orderId, by: CancelParty.CANCEL_PARTY_CUSTOMER, reason: '' }), status.FAILED_PRECONDITION, 'QD_ERR_CANCEL_NOT_ALLOWED', 'a second cancel');
    t.equal(detailOf(again)?.details.state, 'cancelled');

    const cod = await call<CreateOrderResult>(client, 'createOrder', createRequest('store-cancel', { paymentMode: PaymentMode.PAYMENT_MODE_COD }));
    const noReason = await refusal(
      t,
      call(client, 'cancelOrder', { orderId: cod.order.orderId, by: CancelParty.CANCEL_PARTY_STORE, reason: ' ' }),
      status.INVALID_ARGUMENT,
      'QD_ERR_REASON_REQUIRED',
      'a store cancels without a reason',
    );
    t.equal(fieldOf(noReason), undefined);
    const byStore = await call<{ order: CreateOrderResult['order'] }>(client, 'cancelOrder', { orderId: cod.order.orderId, by: CancelParty.CANCEL_PARTY_STORE, reason: 'freezer broke' });
    t.strictSame(byStore.order.cancel, { by: CancelParty.CANCEL_PARTY_STORE, reason: 'freezer broke' }, 'reads back as the store, with its reason');
    const view = await engine.getOrder(cod.order.orderId);
    t.strictSame(view.cancel, { by: 'ops', reason: 'store: freezer broke' }, 'the engine holds it as an operations cancel');
    const payer = await refusal(t, call(client, 'cancelOrder', { orderId: cod.order.orderId, by: CancelParty.CANCEL_PARTY_PAYMENT, reason: 'x' }), status.INVALID_ARGUMENT, 'QD_ERR_INVALID_ARGUMENT', 'PAYMENT party');
    t.equal(fieldOf(payer), 'by');
    await refusal(t, call(client, 'cancelOrder', { orderId: 'o-none', by: CancelParty.CANCEL_PARTY_OPERATIONS, reason: 'x' }), status.NOT_FOUND, 'QD_ERR_ORDER_NOT_FOUND', 'unknown order');
  });

  t.test('WatchOrders on one order: resumes after a position, every later event exactly once, ends at delivery', async (t) => {
    const rider = 'rider-d';
    await engine.riderOnline(rider, { position: offset(MALLESHWARAM, 300, 0), capacity: 1 });
    const res = await call<CreateOrderResult>(
      client,
      'createOrder',
      createRequest('deliver-1', { storeId: 'st-d', dropoff: offset(MALLESHWARAM, 1_000, 500), paymentMode: PaymentMode.PAYMENT_MODE_COD }),
    );
    const orderId = res.order.orderId;
    const first = watch(client, { scope: { $case: 'orderId', orderId }, afterPosition: '0' });
    await first.count(1, 'the history from the start');
    clock.advance(1_000);
    await engine.tick();
    await engine.acceptOffer(rider, orderId);
    await first.count(3, 'CREATED, OFFER, ACCEPT');
    first.stream.cancel();
    await settle();
    const seen = first.events.map((e) => e.seq);
    await engine.arrivedPickup(rider, orderId);
    await engine.pickedUp(rider, orderId);

    const last = first.events[first.events.length - 1];
    const second = watch(client, { scope: { $case: 'orderId', orderId }, afterPosition: last.position });
    await second.count(2, 'what happened while away');
    await engine.arrivedDropoff(rider, orderId);
    await engine.deliver(rider, orderId, { otp: (await engine.getOrder(orderId)).otp });
    const end = await second.ended();
    t.ok(end.ok, 'the stream ends with OK after the terminal event');
    const all = [...seen, ...second.events.map((e) => e.seq)];
    const truth = w.changes.filter((u) => u.orderId === orderId).map((u) => u.seq);
    t.strictSame(all, truth, 'every event exactly once, in order, across the reconnect');
    t.strictSame(
      [...first.events, ...second.events].map((e) => e.position),
      truth.map(String),
      'the position is the seq',
    );
    const done = second.events[second.events.length - 1];
    t.equal(done.status, OrderStatus.ORDER_STATUS_DELIVERED);
    t.equal(done.order?.status, OrderStatus.ORDER_STATUS_DELIVERED);
    t.equal(done.order?.riderId, rider);
    t.equal(done.order?.itemsTotalPaise, 18_100, 'every event carries the whole order, lines included');

    const live = watch(client, { scope: { $case: 'orderId', orderId } });
    t.ok((await live.ended()).ok, 'a live watch of a finished order ends at once');
    t.equal(live.events.length, 0);
    const missing = watch(client, { scope: { $case: 'orderId', orderId: 'o-none' } });
    const out = await missing.ended();
    t.equal(out.ok ? 0 : out.error.metadata.get('qd-error-code')[0], 'QD_ERR_ORDER_NOT_FOUND');
    const bad = watch(client, { scope: { $case: 'orderId', orderId }, afterPosition: 'abc' });
    const badOut = await bad.ended();
    t.equal(badOut.ok ? '' : fieldOf(badOut.error), 'after_position');
  });

  t.test('WatchOrders on a store: only that store, resumable from a cursor; stale cursors refused', async (t) => {
    const stream = watch(client, { scope: { $case: 'storeId', storeId: 'st-b' }, afterPosition: here(w.server) });
    const place = (key: string, storeId: string) =>
      call<CreateOrderResult>(client, 'createOrder', createRequest(key, { storeId, dropoff: offset(INDIRANAGAR, 800, 0), paymentMode: PaymentMode.PAYMENT_MODE_COD }));
    const mark = w.changes.length;
    await place('sb-1', 'st-b');
    await place('sa-x', 'st-a');
    await place('sb-2', 'st-b');
    await stream.count(2, 'two st-b orders');
    t.strictSame(
      stream.events.map((e) => e.order?.storeId),
      ['st-b', 'st-b'],
      'orders of other stores are not sent',
    );
    stream.stream.cancel();
    await settle();
    const cursor = stream.events[1].position;
    t.match(cursor, new RegExp(`^${w.server.feed.bootId}\\.\\d+$`), 'the cursor is <bootId>.<n>');
    const sb3 = await place('sb-3', 'st-b');
    await call(client, 'cancelOrder', { orderId: sb3.order.orderId, by: CancelParty.CANCEL_PARTY_CUSTOMER, reason: '' });
    await place('sa-y', 'st-a');

    const resumed = watch(client, { scope: { $case: 'storeId', storeId: 'st-b' }, afterPosition: cursor });
    await resumed.count(2, 'sb-3 created and cancelled, replayed from the buffer');
    await place('sb-4', 'st-b');
    await resumed.count(3, 'then live');
    resumed.stream.cancel();
    const truth = w.changes.slice(mark).filter((u) => u.order.storeId === 'st-b').map((u) => `${u.orderId}#${u.seq}`);
    t.strictSame(
      [...stream.events, ...resumed.events].map((e) => `${e.orderId}#${e.seq}`),
      truth,
      'no gap and no repeat across the reconnect',
    );
    t.equal(resumed.events[1].order?.cancel?.by, CancelParty.CANCEL_PARTY_CUSTOMER);

    // A server keeping two changes: a cursor three changes old is refused.
    const small = await w.extra(t, { watchBuffer: 2 });
    const s1 = watch(small.client, { scope: { $case: 'storeId', storeId: 'st-b' }, afterPosition: here(small.server) });
    await place('sb-5', 'st-b');
    await s1.count(1, 'one event on the small server');
    s1.stream.cancel();
    await place('sb-6', 'st-b');
    await place('sb-7', 'st-b');
    await place('sb-8', 'st-b');
    const stale = watch(small.client, { scope: { $case: 'storeId', storeId: 'st-b' }, afterPosition: s1.events[0].position });
    const out = await stale.ended();
    t.equal(out.ok ? status.OK : out.error.code, status.INVALID_ARGUMENT, 'too old: INVALID_ARGUMENT (the contract)');
    if (!out.ok) {
      t.equal(fieldOf(out.error), 'after_position');
      t.match(out.error.details, /GetOrder/, 'the message says how to recover');
    }
    const foreign = watch(small.client, { scope: { $case: 'storeId', storeId: 'st-b' }, afterPosition: cursor });
    const fout = await foreign.ended();
    t.equal(fout.ok ? '' : fieldOf(fout.error), 'after_position', "another server's cursor is refused");
    const garbage = watch(client, { scope: { $case: 'storeId', storeId: 'st-b' }, afterPosition: '12' });
    const gout = await garbage.ended();
    t.equal(gout.ok ? '' : fieldOf(gout.error), 'after_position', 'a one-order position is not a store cursor');
  });

  t.test('PauseZone, WatchOrders on a zone and on cells, ResumeZone', async (t) => {
    const cell7 = cellToParent(latLngToCell(INDIRANAGAR.lat, INDIRANAGAR.lng, 9), 7);
    const missing = await refusal(t, call(client, 'pauseZone', { zoneId: 'z-east', cells: [cell7], reason: '' }), status.INVALID_ARGUMENT, 'QD_ERR_REASON_REQUIRED', 'no reason');
    t.ok(missing);
    const badCell = await refusal(t, call(client, 'pauseZone', { zoneId: 'z-east', cells: [cell7, 'zz'], reason: 'rain' }), status.INVALID_ARGUMENT, 'QD_ERR_INVALID_ARGUMENT', 'bad cell');
    t.equal(fieldOf(badCell), 'cells[1]');
    const noZone = await refusal(t, call(client, 'pauseZone', { zoneId: '', cells: [cell7], reason: 'rain' }), status.INVALID_ARGUMENT, 'QD_ERR_INVALID_ARGUMENT', 'no zone id');
    t.equal(fieldOf(noZone), 'zone_id');

    const unknown = watch(client, { scope: { $case: 'zoneId', zoneId: 'z-east' } });
    const uout = await unknown.ended();
    t.equal(uout.ok ? '' : fieldOf(uout.error), 'zone_id', 'a zone never paused is unknown');

    await call(client, 'pauseZone', { zoneId: 'z-east', cells: [cell7], reason: 'rain' });
    t.strictSame(await engine.zoneCells('z-east'), [cell7], 'the engine keeps the cells');
    const from = here(w.server);
    const zone = watch(client, { scope: { $case: 'zoneId', zoneId: 'z-east' }, afterPosition: from });
    const cells = watch(client, { scope: { $case: 'cells', cells: { cells: [latLngToCell(KORAMANGALA.lat, KORAMANGALA.lng, 8)] } }, afterPosition: from });
    const east = await call<CreateOrderResult>(client, 'createOrder', createRequest('zone-1', { storeId: 'st-b', paymentMode: PaymentMode.PAYMENT_MODE_COD }));
    const south = await call<CreateOrderResult>(client, 'createOrder', createRequest('zone-2', { storeId: 'st-a', paymentMode: PaymentMode.PAYMENT_MODE_COD }));
    await zone.count(1, 'the zone sees its order');
    await cells.count(1, 'the cells see theirs');
    t.equal(east.order.status, OrderStatus.ORDER_STATUS_SEARCHING);
    await settle();
    t.strictSame(zone.events.map((e) => e.orderId), [east.order.orderId], 'only orders picked up in the zone');
    t.strictSame(cells.events.map((e) => e.orderId), [south.order.orderId], 'only orders picked up in the cells');
    zone.stream.cancel();
    cells.stream.cancel();

    await call(client, 'resumeZone', { zoneId: 'z-east' });
    t.strictSame(await engine.zoneCells('z-east'), [cell7], 'a resumed zone is still known, from the log');
    t.equal(await engine.zoneCells('z-never'), null);
    const again = await refusal(t, call(client, 'resumeZone', { zoneId: 'z-east' }), status.INVALID_ARGUMENT, 'QD_ERR_INVALID_ARGUMENT', 'resume twice');
    t.equal(fieldOf(again), 'zone_id');
    const emptyCells = watch(client, { scope: { $case: 'cells', cells: { cells: [] } } });
    const eout = await emptyCells.ended();
    t.equal(eout.ok ? '' : fieldOf(eout.error), 'cells.cells');
    const noScope = watch(client, {});
    const nout = await noScope.ended();
    t.equal(nout.ok ? '' : fieldOf(nout.error), 'scope');
  });

  t.test('QuoteDelivery: surge rises when orders wait and no riders are near', async (t) => {
    const dropoff = offset(HSR, 1_500, 0);
    type Quote = { feePaise: number; surgeFactor: number; demand: number; supply: number; cell: string; etaSeconds: number; distanceM: number };
    const calm = await call<Quote>(client, 'quoteDelivery', { origin: { $case: 'storeId', storeId: 'st-c' }, dropoff });
    t.equal(calm.surgeFactor, 1, 'no waiting orders: no surge');
    t.equal(calm.demand, 0);
    t.equal(calm.supply, 0);
    t.ok(calm.etaSeconds >= 8 * 60, "the store's prep time counts");
    t.ok(calm.distanceM > 1_500, 'road distance');
    const placed: CreateOrderResult[] = [];
    for (const key of ['hsr-1', 'hsr-2', 'hsr-3']) {
      placed.push(await call<CreateOrderResult>(client, 'createOrder', createRequest(key, { storeId: 'st-c', dropoff, paymentMode: PaymentMode.PAYMENT_MODE_COD })));
    }
    const busy = await call<Quote>(client, 'quoteDelivery', { origin: { $case: 'pickup', pickup: HSR }, dropoff });
    t.equal(busy.demand, 3, 'three orders wait');
    t.ok(busy.surgeFactor > calm.surgeFactor, `surge rose to ${busy.surgeFactor}`);
    t.ok(busy.feePaise > calm.feePaise, 'and the fee with it');

    // A COD order keeps the fee it was placed at, wherever it is read after the surge, even on a node that never saw it placed.
    const first = placed[0].order;
    t.ok(first.deliveryFeePaise < busy.feePaise, 'the first order was placed before the surge');
    const other = await w.extra(t, {});
    const got = await call<{ order: Order }>(other.client, 'getOrder', { orderId: first.orderId });
    t.equal(got.order.deliveryFeePaise, first.deliveryFeePaise, 'GetOrder on another node: the fee it was placed at');
    const replay = await call<CreateOrderResult>(other.client, 'createOrder', createRequest('hsr-1', { storeId: 'st-c', dropoff, paymentMode: PaymentMode.PAYMENT_MODE_COD }));
    t.equal(replay.replayed, true);
    t.equal(replay.order.deliveryFeePaise, first.deliveryFeePaise, 'a replay on another node: the same fee');
    t.equal(busy.cell, calm.cell, 'counted around the same cell');
    const noOrigin = await refusal(t, call(client, 'quoteDelivery', { dropoff }), status.INVALID_ARGUMENT, 'QD_ERR_INVALID_ARGUMENT', 'no origin');
    t.equal(fieldOf(noOrigin), 'origin');
    const badPickup = await refusal(t, call(client, 'quoteDelivery', { origin: { $case: 'pickup', pickup: { lat: 0, lng: 200 } }, dropoff }), status.INVALID_ARGUMENT, null, 'bad pickup');
    t.equal(fieldOf(badPickup), 'pickup');
    await refusal(t, call(client, 'quoteDelivery', { origin: { $case: 'storeId', storeId: 'st-none' }, dropoff }), status.NOT_FOUND, 'QD_ERR_STORE_NOT_FOUND', 'unknown store');
  });

  t.test('NearbyRiders, GetRider, GetRiderStats', async (t) => {
    await engine.riderOnline('rider-n', { position: offset(KORAMANGALA, 200, 0) });
    const near = await call<{ riders: Array<{ riderId: string; distanceM: number }> }>(client, 'nearbyRiders', { at: KORAMANGALA, radiusM: 1_000, limit: 0 });
    t.strictSame(near.riders.map((r) => r.riderId), ['rider-n']);
    t.ok(Math.abs(near.riders[0].distanceM - 200) < 5, 'with its distance');
    const radius = await refusal(t, call(client, 'nearbyRiders', { at: KORAMANGALA, radiusM: 0, limit: 0 }), status.INVALID_ARGUMENT, 'QD_ERR_INVALID_ARGUMENT', 'radius 0');
    t.equal(fieldOf(radius), 'radius_m');
    const noAt = await refusal(t, call(client, 'nearbyRiders', { radiusM: 10, limit: 0 }), status.INVALID_ARGUMENT, 'QD_ERR_INVALID_ARGUMENT', 'no point');
    t.equal(fieldOf(noAt), 'at');
    const rider = await call<{ rider: { riderId: string; status: number; position?: { lat: number } } }>(client, 'getRider', { riderId: 'rider-n' });
    t.match(rider.rider, { riderId: 'rider-n' });
    t.ok(rider.rider.position, 'with its position');
    await refusal(t, call(client, 'getRider', { riderId: 'rider-none' }), status.NOT_FOUND, 'QD_ERR_RIDER_NOT_FOUND', 'unknown rider');
    const stats = await call<{ stats: { riderId: string; deliveries: number; onTimeRate?: number } }>(client, 'getRiderStats', { riderId: 'rider-d', day: '2026-11-24' });
    t.match(stats.stats, { riderId: 'rider-d', deliveries: 1 }, 'the delivery of the watch test counts');
    const day = await refusal(t, call(client, 'getRiderStats', { riderId: 'rider-d', day: '24/11/2026' }), status.INVALID_ARGUMENT, 'QD_ERR_INVALID_ARGUMENT', 'bad day');
    t.equal(fieldOf(day), 'day');
  });

  t.test('a watcher that stops reading is cut off with RESOURCE_EXHAUSTED and resumes from the position it got', async (t) => {
    const slow = await w.extra(t, { watchMaxLag: 50 });
    const flood = { lat: 13.1, lng: 77.7 };
    const scope = { $case: 'storeId' as const, storeId: 'flood' };
    const N = 600;
    // Orders first, read once by a quick watcher so that their lines and fees are cached: then only the client's pace can hold the stream back.
    const warm = watch(slow.client, { scope, afterPosition: here(slow.server) });
    for (let i = 0; i < N; i++) {
      await engine.createOrder({ orderId: `flood-${i}`, storeId: 'flood', customerId: 'c', pickup: flood, dropoff: offset(flood, 500, 0), payment: 'cod' });
      // One at a time: the warm-up must not itself fall 50 behind while each new order is read from the catalog.
      await warm.count(i + 1, 'the warm-up watcher reads each order');
    }
    warm.stream.cancel();

    const stream = watch(slow.client, { scope, afterPosition: here(slow.server) });
    stream.stream.pause();
    const mark = w.changes.length;
    for (let i = 0; i < N; i++) await engine.cancelOrder(`flood-${i}`, 'ops', 'flood');
    stream.stream.resume();
    const out = await stream.ended();
    t.equal(out.ok ? status.OK : out.error.code, status.RESOURCE_EXHAUSTED, 'cut off');
    if (out.ok) return;
    t.ok(stream.events.length > 0 && stream.events.length < N, `it was sent ${stream.events.length} of ${N} before the cut`);
    const resumeAt = out.error.metadata.get(RESUME_POSITION_KEY)[0] as string;
    t.equal(resumeAt, stream.events[stream.events.length - 1]?.position, 'the trailer names the last event it received');
    const rest = watch(slow.client, { scope, afterPosition: resumeAt });
    const truth = w.changes.slice(mark).filter((u) => u.order.storeId === 'flood').map((u) => `${u.orderId}#${u.seq}`);
    t.equal(truth.length, N);
    await rest.count(N - stream.events.length, 'the rest, replayed');
    rest.stream.cancel();
    t.strictSame([...stream.events, ...rest.events].map((e) => `${e.orderId}#${e.seq}`), truth, 'nothing lost, nothing twice');
  });

  t.test('unexpected errors: INTERNAL without their message, logged with the request id; calls logged with caller and order', async (t) => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'info' }, new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l));
        cb();
      },
    }));
    const broken: CatalogPort = {
      getStore: async () => {
        throw new Error('disk on fire');
      },
      reserve: (...a) => catalog.reserve(...a),
      reservationOf: (id) => catalog.reservationOf(id),
      release: (id) => catalog.release(id),
      abandon: (id) => catalog.abandon(id),
      commit: (id) => catalog.commit(id),
    };
    const odd = await w.extra(t, { catalog: broken, logger });
    const md = withBearer(service);
    md.set('x-request-id', 'req-42');
    const err = await new Promise<ServiceError>((resolve, reject) =>
      odd.client.quoteDelivery({ origin: { $case: 'storeId', storeId: 'st-a' }, dropoff: KORAMANGALA }, md, (e) => (e ? resolve(e) : reject(new Error('expected an error')))),
    );
    t.equal(err.code, status.INTERNAL);
    t.equal(err.metadata.get('qd-error-code')[0], 'QD_ERR_INTERNAL');
    t.notMatch(err.details, /disk on fire/, 'the cause stays in the log');
    t.equal(err.metadata.get('x-request-id')[0], 'req-42');
    const logged = lines.find((l) => l.requestId === 'req-42');
    t.match(logged, { level: 50, method: 'QuoteDelivery', caller: 'orders-api', err: { message: 'disk on fire' } }, 'logged as an error with the request id and caller');

    const placed = await call<CreateOrderResult>(odd.client, 'createOrder', createRequest('logged-1', { paymentMode: PaymentMode.PAYMENT_MODE_COD }));
    t.match(
      lines.find((l) => l.msg === 'order placed'),
      { orderId: placed.order.orderId, caller: 'orders-api', method: 'CreateOrder', requestId: String },
      'a placed order is logged with its id, the caller and a request id',
    );
  });

  t.test('a watch ends when its token expires, and when the server closes', async (t) => {
    const brief = signToken({ sub: 'orders-api', role: 'service', ttlSec: 1 }, auth);
    const short = watch(client, { scope: { $case: 'storeId', storeId: 'st-a' } }, brief);
    const out = await short.ended();
    t.equal(out.ok ? status.OK : out.error.code, status.UNAUTHENTICATED, 'cut at the expiry of its token');

    const node = await w.extra(t, {});
    const open = watch(node.client, { scope: { $case: 'storeId', storeId: 'st-a' }, afterPosition: here(node.server) });
    const order = await call<CreateOrderResult>(node.client, 'createOrder', createRequest('before-close', { paymentMode: PaymentMode.PAYMENT_MODE_COD }));
    await open.count(1, 'the watch is live');
    await node.server.close(1_000);
    const closed = await open.ended();
    t.equal(closed.ok ? status.OK : closed.error.code, status.UNAVAILABLE, 'told to go elsewhere');
    t.equal(closed.ok ? '' : closed.error.metadata.get('qd-error-code')[0], 'QD_ERR_SHUTTING_DOWN');
    t.equal(open.events[0].orderId, order.order.orderId);
  });

  t.test('TLS: the same service over createSsl with a throwaway certificate', async (t) => {
    // node:crypto makes keys but not X.509 certificates: the key-only check runs everywhere, the certificate part needs openssl.
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const ownKey = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    await t.rejects(
      startGrpcServer({ engine, intake: w.intake, catalog, auth, logger: log, tls: { certPem: 'unused', keyPem: ownKey, requireClientCert: true } }),
      TypeError,
      'mutual TLS needs a CA to check client certificates against',
    );
    let openssl = true;
    try {
      execFileSync('openssl', ['version'], { stdio: 'ignore' });
    } catch {
      openssl = false;
    }
    if (!openssl) {
      t.pass('calls over TLS', { skip: 'openssl is not installed, so no X.509 certificate can be made here' });
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), 'qd-grpc-tls-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-days', '1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')],
      { stdio: 'ignore' },
    );
    const certPem = readFileSync(join(dir, 'cert.pem'), 'utf8');
    const keyPem = readFileSync(join(dir, 'key.pem'), 'utf8');
    const secure = await w.extra(t, { tls: { certPem, keyPem } });
    const quote = await call<{ feePaise: number }>(secure.client, 'quoteDelivery', { origin: { $case: 'storeId', storeId: 'st-a' }, dropoff: offset(KORAMANGALA, 1_000, 0) });
    t.ok(quote.feePaise > 0, 'a call over TLS');
    await refusal(t, call(secure.client, 'getOrder', { orderId: 'o-x' }, null), status.UNAUTHENTICATED, 'QD_ERR_UNAUTHENTICATED', 'TLS does not replace the token');
    const plain = new DispatchServiceClient(`127.0.0.1:${secure.server.port}`, credentials.createInsecure());
    t.teardown(() => plain.close());
    await refusal(t, call(plain, 'getOrder', { orderId: 'o-x' }), status.UNAVAILABLE, null, 'a plain-text client cannot talk to the TLS port');
  });
});

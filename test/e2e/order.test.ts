// A whole order end to end, over real sockets and real Postgres: a backend creates
// a prepaid order over gRPC; the fake Razorpay takes the payment and signs the
// webhook, which the gateway verifies; the engine dispatches; a rider on the
// WebSocket SDK accepts, picks up and delivers while the gRPC watch stream and the
// customer's SDK see every step; Postgres holds the event log; the catalog sold the
// items; the rider's daily statistics count the delivery. Then the ways an order
// goes wrong: racing for the last units, payment failure, refund on cancel, and a
// Razorpay that does not answer.
import t, { type Test } from 'tap';
import { credentials, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import pg from 'pg';
import pino from 'pino';
import WebSocket from 'ws';
import { createEngine, OrderIntake, SystemClock, type DispatchEngine } from '../../engine/index.ts';
import { createPostgresStore, PgClient } from '../../adapters/sql/index.ts';
import { SqlCatalog, everyDay } from '../../adapters/catalog/index.ts';
import { FakeRazorpay, RazorpayPayments, RazorpayWebhooks } from '../../adapters/razorpay/index.ts';
import { developmentAuthConfig, signToken, startGateway, startGrpcServer } from '../../gateway/index.ts';
import { CustomerClient, RiderClient, type OrderStatusEvent } from '../../gateway/client/index.ts';
import { DispatchServiceClient, type CreateOrderRequest, type CreateOrderResponse, type WatchOrdersResponse } from '../../protos/gen/quickdash/v1/dispatch.ts';
import { OrderStatus, PaymentMode, CancelParty } from '../../protos/gen/quickdash/v1/common.ts';
import { withBearer } from '../../protos/rpc.ts';

const PG_URL = process.env.QD_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
const STORE = { lat: 12.9352, lng: 77.6245 };
const DOOR = { lat: 12.9411, lng: 77.6302 };
const auth = developmentAuthConfig();
const log = pino({ level: 'silent' });

interface World {
  engine: DispatchEngine;
  pool: pg.Pool;
  schema: string;
  catalog: SqlCatalog;
  fake: FakeRazorpay;
  intake: OrderIntake;
  grpc: DispatchServiceClient;
  wsUrl: string;
  call<Req, Res>(method: string, req: Req): Promise<Res>;
}

async function world(t: Test, options: { paymentDeadlineMs?: number } = {}): Promise<World> {
  const schema = `qde2e_${process.pid}_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 6)}`;
  const pool = new pg.Pool({ connectionString: PG_URL, max: 12 });
  const sql = new PgClient(pool);
  const store = await createPostgresStore({ connectionString: PG_URL, schema: `${schema}_events`, poolSize: 4 });
  const clock = new SystemClock();
  const engine = await createEngine({ store, clock, threads: false, config: { shards: 1, matchWindowMs: 100 } });
  const catalog = new SqlCatalog(sql, { schema: `${schema}_catalog`, logger: log });
  await catalog.init();
  await catalog.upsertStore({ storeId: 'store-k', name: 'Koramangala', location: STORE, timeZone: 'Asia/Kolkata', prepMinutes: 5, hours: everyDay(['00:00', '24:00']) });
  await catalog.upsertProduct({ storeId: 'store-k', productId: 'milk', name: 'Milk 1 l', pricePaise: 6_800 });
  await catalog.upsertProduct({ storeId: 'store-k', productId: 'bread', name: 'Bread', pricePaise: 4_500 });
  await catalog.setStock('store-k', 'milk', 50);
  await catalog.setStock('store-k', 'bread', 10);
  const fake = await FakeRazorpay.start({ keyId: 'rzp_test_e2e', keySecret: 'e2e-secret', webhookSecret: 'e2e-webhook' });
  const payments = new RazorpayPayments({
    keyId: 'rzp_test_e2e',
    keySecret: 'e2e-secret',
    sql,
    schema: `${schema}_payments`,
    baseUrl: fake.url,
    requestTimeoutMs: 400,
    deadlineMs: options.paymentDeadlineMs ?? 800,
    logger: log,
  });
  await payments.init();
  const intake = new OrderIntake({ engine, catalog, payments, clock, logger: log });
  intake.start();
  const webhooks = new RazorpayWebhooks({
    secret: 'e2e-webhook',
    sql,
    schema: `${schema}_payments`,
    logger: log,
    onEvent: async (e) => {
      if (e.kind === 'captured') await intake.paymentCaptured(e.orderId, e.paymentId);
      else if (e.kind === 'failed') await intake.paymentFailed(e.orderId, e.reason);
    },
  });
  const gw = await startGateway({
    engine,
    auth,
    logger: log,
    posts: [{ path: '/v1/webhooks/razorpay', maxBodyBytes: 1 << 20, handle: (b, h) => webhooks.handle(b, h) }],
  });
  fake.webhookUrl = `http://127.0.0.1:${gw.port}/v1/webhooks/razorpay`;
  const server = await startGrpcServer({ engine, intake, catalog, auth, logger: log });
  const grpc = new DispatchServiceClient(`127.0.0.1:${server.port}`, credentials.createInsecure());
  const ticker = setInterval(() => void engine.tick().catch(() => {}), 50);
  t.teardown(async () => {
    clearInterval(ticker);
    grpc.close();
    await server.close(0);
    await gw.drain(0);
    intake.stop();
    await fake.close();
    await engine.close();
    for (const suffix of ['_events', '_catalog', '_payments']) await pool.query(`DROP SCHEMA IF EXISTS ${schema}${suffix} CASCADE`);
    await pool.end();
  });
  const token = signToken({ sub: 'orders-api', role: 'service', ttlSec: 600 }, auth);
  return {
    engine,
    pool,
    schema,
    catalog,
    fake,
    intake,
    grpc,
    wsUrl: `ws://127.0.0.1:${gw.port}/v1/ws`,
    call<Req, Res>(method: string, req: Req): Promise<Res> {
      return new Promise((resolve, reject) => {
        const fn = (grpc as unknown as Record<string, (r: Req, m: unknown, o: unknown, cb: (e: ServiceError | null, v: Res) => void) => void>)[method]!;
        fn.call(grpc, req, withBearer(token), { deadline: Date.now() + 10_000 }, (err, res) => (err ? reject(err) : resolve(res)));
      });
    },
  };
}

function createRequest(key: string, over: Partial<CreateOrderRequest> = {}): CreateOrderRequest {
  return {
    idempotencyKey: key,
    storeId: 'store-k',
    customerId: 'cust-e2e',
    dropoff: DOOR,
    lines: [{ productId: 'milk', quantity: 2 }],
    paymentMode: PaymentMode.PAYMENT_MODE_PREPAID,
    ...over,
  } as CreateOrderRequest;
}

async function until<T>(find: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await find();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const codeOf = (err: unknown) => (err as ServiceError).metadata?.get('qd-error-code')[0];

t.test('a prepaid order from gRPC to the door, seen by the backend and the customer at every step', async (t) => {
  const w = await world(t);
  const created = await w.call<CreateOrderRequest, CreateOrderResponse>('createOrder', createRequest('e2e-1'));
  const orderId = created.order!.orderId;
  t.equal(created.order!.status, OrderStatus.ORDER_STATUS_AWAITING_PAYMENT, 'a prepaid order waits for its payment');
  t.ok(created.paymentIntent?.providerOrderId.startsWith('order_'), 'with a Razorpay order for the app to pay');
  t.equal((await w.catalog.stockOf('store-k', 'milk'))?.reserved, 2, 'its items are reserved');

  // The backend watches the order; the customer follows it on the socket.
  const watched: WatchOrdersResponse[] = [];
  const stream: ClientReadableStream<WatchOrdersResponse> = w.grpc.watchOrders(
    { scope: { $case: 'orderId', orderId }, afterPosition: '0' } as never,
    withBearer(signToken({ sub: 'orders-api', role: 'service', ttlSec: 600 }, auth)),
  );
  stream.on('data', (m: WatchOrdersResponse) => watched.push(m));
  stream.on('error', () => {});
  t.teardown(() => stream.cancel());
  const customer = new CustomerClient({ url: w.wsUrl, token: signToken({ sub: 'cust-e2e', role: 'customer', ttlSec: 600 }, auth), WebSocket: WebSocket as never });
  const seen: OrderStatusEvent[] = [];
  customer.on('status', (e) => void seen.push(e));
  await customer.connect();
  await customer.follow(orderId);
  t.teardown(() => customer.close());

  // A rider waits at the store.
  const rider = new RiderClient({ url: w.wsUrl, token: signToken({ sub: 'rider-e2e', role: 'rider', ttlSec: 600 }, auth), WebSocket: WebSocket as never });
  await rider.connect();
  t.teardown(() => rider.close());
  await rider.online({ position: STORE, capacity: 1 });

  // The customer pays: Razorpay captures and signs a webhook to the gateway.
  const paid = await w.fake.pay(created.paymentIntent!.providerOrderId);
  t.ok(paid.webhooks.every((d) => d.status === 200), 'the gateway accepted the signed webhooks');
  const offer = await until(() => rider.offer ?? undefined, 'an offer to the rider');
  t.equal(offer.orderId, orderId);
  await rider.accept(orderId);
  await rider.arrived(orderId, 'pickup');
  await rider.pickedUp(orderId);
  await rider.arrived(orderId, 'dropoff');
  await rider.delivered(orderId, { proofRef: 'photo://door/e2e-1' });

  const steps = ['awaitingPayment', 'searching', 'offered', 'assigned', 'atPickup', 'pickedUp', 'atDropoff', 'delivered'];
  await until(() => seen.some((e) => e.status === 'delivered'), 'the customer to see the delivery');
  t.same(
    seen.map((e) => e.status).filter((s) => steps.includes(s)),
    steps.filter((s) => seen.some((e) => e.status === s)),
    'the customer saw the steps in order',
  );
  for (const s of ['searching', 'assigned', 'pickedUp', 'delivered']) t.ok(seen.some((e) => e.status === s), `customer saw ${s}`);
  await until(() => watched.some((m) => m.event?.status === OrderStatus.ORDER_STATUS_DELIVERED), 'the watch stream to see the delivery');
  const seqs = watched.map((m) => m.event!.seq);
  t.same(seqs, seqs.map((_, i) => i + 1), 'the watch stream saw every event once, in order, from the first');

  // Durable: the log in Postgres, the sale in the catalog, the rider's day.
  const { rows } = await w.pool.query(`SELECT count(*)::int AS n FROM ${w.schema}_events.events WHERE stream = $1`, [`order:${orderId}`]);
  t.equal(rows[0].n, seqs.length, 'Postgres holds every event of the order');
  // The sale is committed from the order feed, just after the delivery is acknowledged.
  await until(async () => (await w.catalog.stockOf('store-k', 'milk'))?.onHand === 48, 'the sale to be committed');
  t.same(await w.catalog.stockOf('store-k', 'milk'), { onHand: 48, reserved: 0, available: 48 }, 'the two units were sold');
  const day = new Date().toISOString().slice(0, 10);
  t.match(await w.engine.riderStats('rider-e2e', day), { deliveries: 1 }, "the rider's day counts the delivery");
});

t.test('100 orders race for the last 10 loaves: exactly 10 are placed', async (t) => {
  const w = await world(t);
  const results = await Promise.allSettled(
    Array.from({ length: 100 }, (_, i) =>
      w.call<CreateOrderRequest, CreateOrderResponse>('createOrder', createRequest(`race-${i}`, { lines: [{ productId: 'bread', quantity: 1 }], paymentMode: PaymentMode.PAYMENT_MODE_COD })),
    ),
  );
  const placed = results.filter((r) => r.status === 'fulfilled');
  const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  t.equal(placed.length, 10, 'ten orders placed');
  t.ok(refused.every((r) => codeOf(r.reason) === 'QD_ERR_OUT_OF_STOCK'), 'the other ninety were told the bread is gone');
  t.same(await w.catalog.stockOf('store-k', 'bread'), { onHand: 10, reserved: 10, available: 0 });
});

t.test('a retried create makes no second order; a reused key with another basket is refused', async (t) => {
  const w = await world(t);
  const first = await w.call<CreateOrderRequest, CreateOrderResponse>('createOrder', createRequest('same-key'));
  const again = await w.call<CreateOrderRequest, CreateOrderResponse>('createOrder', createRequest('same-key'));
  t.equal(again.order!.orderId, first.order!.orderId, 'same order');
  t.equal(again.replayed, true, 'marked as a replay');
  t.equal(again.paymentIntent?.providerOrderId, first.paymentIntent?.providerOrderId, 'same payment');
  t.equal((await w.catalog.stockOf('store-k', 'milk'))?.reserved, 2, 'reserved once');
  const err = await w.call('createOrder', createRequest('same-key', { lines: [{ productId: 'milk', quantity: 5 }] })).catch((e: unknown) => e);
  t.equal(codeOf(err), 'QD_ERR_IDEMPOTENCY_CONFLICT');
});

t.test('a failed payment cancels the order and puts the stock back; a paid order cancelled is refunded', async (t) => {
  const w = await world(t);
  const failing = await w.call<CreateOrderRequest, CreateOrderResponse>('createOrder', createRequest('pay-fails'));
  await w.fake.pay(failing.paymentIntent!.providerOrderId, { fail: { code: 'BAD_REQUEST_ERROR', description: 'Payment failed due to insufficient balance' } });
  const failed = await w.engine.getOrder(failing.order!.orderId);
  t.equal(failed.status, 'cancelled', 'the order is cancelled');
  t.equal(failed.cancel?.by, 'payment');
  await until(async () => (await w.catalog.stockOf('store-k', 'milk'))?.reserved === 0, 'stock released');
  t.equal((await w.catalog.stockOf('store-k', 'milk'))?.reserved, 0, 'and its stock released');

  const paid = await w.call<CreateOrderRequest, CreateOrderResponse>('createOrder', createRequest('pay-then-cancel'));
  await w.fake.pay(paid.paymentIntent!.providerOrderId);
  const captured = await w.engine.getOrder(paid.order!.orderId);
  t.ok(captured.paymentId?.startsWith('pay_'), 'the payment was captured');
  await w.call('cancelOrder', { orderId: paid.order!.orderId, by: CancelParty.CANCEL_PARTY_CUSTOMER, reason: 'changed my mind' });
  const refunds = w.fake.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/refund'));
  t.equal(refunds.length, 1, 'Razorpay was asked for one refund');
  t.equal((await w.catalog.stockOf('store-k', 'milk'))?.reserved, 0, 'the stock is back');
});

t.test('Razorpay not answering: create fails fast with a clear status and holds no stock', async (t) => {
  const w = await world(t, { paymentDeadlineMs: 600 });
  w.fake.hang = true;
  const started = Date.now();
  const err = await w.call('createOrder', createRequest('rzp-down')).catch((e: unknown) => e);
  t.ok(Date.now() - started < 3_000, 'no hang');
  t.equal(codeOf(err), 'QD_ERR_PAYMENT_TIMEOUT');
  t.equal((err as ServiceError).code, 4, 'DEADLINE_EXCEEDED');
  t.equal((await w.catalog.stockOf('store-k', 'milk'))?.reserved, 0, 'the reservation was released');
  w.fake.hang = false;
  const retried = await w.call<CreateOrderRequest, CreateOrderResponse>('createOrder', createRequest('rzp-down'));
  t.equal(retried.order!.status, OrderStatus.ORDER_STATUS_AWAITING_PAYMENT, 'a retry with the same key places the order');
  t.equal(retried.replayed, false, 'as a new placement');
  t.equal((await w.catalog.stockOf('store-k', 'milk'))?.reserved, 2, 'holding its stock afresh');
});

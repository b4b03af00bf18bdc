// The adapters behind gRPC on loopback, on the local Postgres: the whole EventStore contract through
// GrpcEventStore -> persistenceServer -> SqlEventStore (and an engine recovering through it), the catalog
// racing for stock over the wire, payments against RazorpayPayments on a FakeRazorpay (including a hung
// provider and a hung service), authentication, unreachable services, TLS, and bin/adapter.ts as a process.
import t from 'tap';
import type { Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Metadata, credentials, status, type ServiceError } from '@grpc/grpc-js';
import pg from 'pg';
import pino from 'pino';
import { DispatchError, MemoryEventStore } from '../../engine/index.ts';
import type { ErrorCode, EventStore, PaymentIntent, PaymentsPort, Refund } from '../../engine/index.ts';
import { PgClient, SqlEventStore } from '../../adapters/sql/index.ts';
import type { SqlClient } from '../../adapters/sql/index.ts';
import { DEMO_STORES, SqlCatalog, everyDay } from '../../adapters/catalog/index.ts';
import type { StoreRecord } from '../../adapters/catalog/index.ts';
import { FakeRazorpay, RazorpayPayments } from '../../adapters/razorpay/index.ts';
import {
  GrpcCatalog,
  GrpcEventStore,
  GrpcPayments,
  bearerAuthorizer,
  checkHealth,
  startAdapterServer,
  type AdapterServer,
  type AdapterService,
  type AdapterTls,
  type ClientTls,
} from '../../adapters/grpc/index.ts';
import { PersistenceServiceClient } from '../../protos/gen/quickdash/v1/persistence.ts';
import { ERROR_CODE_KEY } from '../../protos/rpc.ts';
import { developmentAuthConfig, signToken, verifyToken } from '../../gateway/auth.ts';
import { eventStoreContract } from './event-store.contract.ts';
import { rig, orderSpec, offset, STORE } from '../engine/harness.ts';
import { freePort, postgresUnavailable } from '../support.ts';

const PG_URL = process.env.QD_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
/** Unique per run, so test files and concurrent runs never share tables. */
const RUN = `qdgrpc_${process.pid}_${Date.now().toString(36)}`;
const root = new URL('../../', import.meta.url).pathname;
const DAY = '2026-11-24';
const T0 = Date.UTC(2026, 10, 24, 9, 0, 0);

const auth = developmentAuthConfig();
const serviceToken = signToken({ sub: 'grpc-test-node', role: 'service', ttlSec: 600 }, auth);
const riderToken = signToken({ sub: 'rider-1', role: 'rider', ttlSec: 600 }, auth);
const authorize = bearerAuthorizer((token) => verifyToken(token, auth), 'service');
const quiet = pino({ level: 'silent' });

/** The DispatchError a promise rejects with; a fulfilment or another kind of error fails the test. */
async function refusal(t: Test, p: Promise<unknown>, code: ErrorCode, msg: string): Promise<DispatchError> {
  try {
    await p;
  } catch (err) {
    if (!(err instanceof DispatchError)) throw err;
    t.equal(err.code, code, msg);
    return err;
  }
  t.fail(`${msg}: expected ${code}, but it succeeded`);
  return new DispatchError('QD_ERR_INTERNAL', { reason: 'no refusal' });
}

/** A client sharing `inner` whose close() leaves it open: many schemas on one pool. */
function shared(inner: SqlClient): SqlClient {
  return { query: (q, p) => inner.query(q, p), transaction: (fn) => inner.transaction(fn), close: async () => {} };
}


const pgSkip = await postgresUnavailable(PG_URL);

const pool = new pg.Pool({ connectionString: PG_URL, max: 24 });
const sql = new PgClient(pool);
const schemas: string[] = [];
const servers: AdapterServer[] = [];
const nextSchema = () => {
  const s = `${RUN}_${schemas.length}`;
  schemas.push(s);
  return s;
};
t.teardown(async () => {
  await Promise.all(servers.map((s) => s.close()));
  // Every schema this run made, whichever subtests failed.
  if (!pgSkip) for (const s of schemas) await pool.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  await pool.end();
});

async function serve(service: AdapterService, extra: { tls?: AdapterTls } = {}): Promise<AdapterServer> {
  const server = await startAdapterServer({ services: [service], authorize, logger: quiet, shutdownGraceMs: 1000, ...extra });
  servers.push(server);
  return server;
}

const addr = (s: AdapterServer) => `127.0.0.1:${s.port}`;

// ---------------------------------------------------------------- persistence

t.test('persistence over gRPC', { skip: pgSkip ?? false }, async (t) => {
  /** Each store: its own schema, a SqlEventStore served by its own server, and a client. */
  const schemaOf = new Map<EventStore, string>();
  const serverOf = new Map<EventStore, AdapterServer>();
  const open = async (schema: string): Promise<EventStore> => {
    const backend = new SqlEventStore(shared(sql), { schema });
    await backend.init();
    const server = await serve({ store: backend });
    const client = new GrpcEventStore({ address: addr(server), token: serviceToken, deadlineMs: 5000 });
    await client.init();
    schemaOf.set(client, schema);
    serverOf.set(client, server);
    return client;
  };

  eventStoreContract(t, 'grpc-postgres', () => open(nextSchema()), {
    // A restart of both sides: the client closes, the service stops, a new service and client open on the same schema.
    reopen: async (store) => {
      await store.close();
      await serverOf.get(store)!.close();
      return open(schemaOf.get(store)!);
    },
  });

  t.test('statistics over the wire: deltas add up in the append that carries them, rates computed', async (t) => {
    const store = await open(nextSchema());
    const d = (x: Record<string, number | string>) => ({ riderId: 'r1', day: DAY, ...x });
    await store.append([{ stream: 'rider:r1', seq: 1, type: 'REGISTERED', data: {}, at: T0 }], [d({ offers: 1 }), d({ offers: 1, accepts: 1 })]);
    await store.append([], [d({ deliveries: 1, onTime: 1, distanceM: 1234.5, earnings: 4550 })]);
    await store.append([], [d({ deliveries: 1, distanceM: 765.5, earnings: 3000 }), d({ riderId: 'r2', offers: 2 })]);
    t.strictSame(
      await store.riderDailyStats('r1', DAY),
      { riderId: 'r1', day: DAY, deliveries: 2, onTime: 1, distanceM: 2000, earnings: 7550, offers: 2, accepts: 1, onTimeRate: 0.5, acceptanceRate: 0.5 },
      'the same numbers as in-process',
    );
    t.strictSame((await store.riderDailyStats('r2', DAY))?.onTimeRate, null, 'no deliveries: null rate survives the wire (absent optional)');
    t.equal(await store.riderDailyStats('nobody', DAY), null);
    // Refused before anything is sent, like the stores' own refusals of malformed batches: nothing of it is stored.
    await t.rejects(store.append([{ stream: 'order:x', seq: 1, type: 'C', data: {}, at: T0 }], [d({ earnings: 45.5 })]), RangeError, 'fractional paise are refused');
    t.same(await store.readStream('order:x'), [], 'and the batch stored nothing');
    const day = await refusal(t, store.append([], [d({ day: '2026-02-30', deliveries: 1 })]), 'QD_ERR_INVALID_ARGUMENT', 'a day that does not exist, refused by the service');
    t.equal(day.details.field, 'stats', 'blamed on the deltas');
    await store.close();
  });

  t.test('the database behind the service fails: QD_ERR_STORE_UNAVAILABLE, nothing acknowledged, health NOT_SERVING', async (t) => {
    const schema = nextSchema();
    const own = new pg.Pool({ connectionString: PG_URL, max: 2 });
    const backend = new SqlEventStore(new PgClient(own), { schema });
    await backend.init();
    const server = await startAdapterServer({ services: [{ store: backend }], authorize, logger: quiet, ready: () => own.query('SELECT 1') });
    servers.push(server);
    const store = new GrpcEventStore({ address: addr(server), token: serviceToken });
    t.ok(await checkHealth({ address: addr(server), service: 'quickdash.v1.PersistenceService' }), 'serving while the database answers');
    await own.end();
    const e = await refusal(t, store.append([{ stream: 'order:a', seq: 1, type: 'CREATED', data: {}, at: T0 }]), 'QD_ERR_STORE_UNAVAILABLE', 'append');
    t.notMatch(e.message, /pool/, 'the driver\'s message stays in the service log');
    await refusal(t, store.loadLive(), 'QD_ERR_STORE_UNAVAILABLE', 'loadLive ends its stream with the same code');
    t.same(await new SqlEventStore(shared(sql), { schema }).readStream('order:a'), [], 'nothing was stored');
    t.notOk(await checkHealth({ address: addr(server), service: 'quickdash.v1.PersistenceService' }), 'health: not serving');
    t.notOk(await checkHealth({ address: addr(server), service: 'quickdash.v1.CatalogService' }), 'a service it does not host is not serving either');
    await store.close();
  });
});

t.test('an engine on GrpcEventStore: what it acknowledged, a new node recovers through the service', { skip: pgSkip ?? false }, async (t) => {
  const backend = new SqlEventStore(shared(sql), { schema: nextSchema() });
  await backend.init();
  const server = await serve({ store: backend });
  const a = await rig({ store: new GrpcEventStore({ address: addr(server), token: serviceToken }) });
  const spec = orderSpec();
  await a.engine.riderOnline('rider-g', { position: offset(STORE, 500, 0) });
  await a.engine.createOrder(spec);
  await a.advance(1_000);
  t.equal((await a.engine.getOrder(spec.orderId)).status, 'offered', 'matched on the first window');
  await a.engine.acceptOffer('rider-g', spec.orderId);
  await a.engine.close();

  const b = await rig({ store: new GrpcEventStore({ address: addr(server), token: serviceToken }), clock: a.clock });
  const order = await b.engine.getOrder(spec.orderId);
  t.equal(order.status, 'assigned', 'the order is rebuilt from LoadLive');
  t.equal(order.riderId, 'rider-g');
  t.equal((await b.engine.getRider('rider-g')).status, 'toPickup', 'and so is its rider');
  t.same((await backend.readStream(`order:${spec.orderId}`)).map((e) => e.type).slice(0, 1), ['CREATED'], 'the log is in the service\'s Postgres');
  await b.engine.close();
});

// ---------------------------------------------------------------- catalog

const ALWAYS_OPEN: StoreRecord = {
  storeId: 'st-grpc',
  name: 'gRPC Store',
  location: { lat: 12.93, lng: 77.62 },
  timeZone: 'Asia/Kolkata',
  prepMinutes: 9,
  hours: everyDay(['00:00', '24:00']),
};

t.test('catalog over gRPC', { skip: pgSkip ?? false }, async (t) => {
  const catalog = new SqlCatalog(shared(sql), { schema: nextSchema(), logger: quiet });
  await catalog.init();
  const server = await serve({ catalog });
  const remote = new GrpcCatalog({ address: addr(server), token: serviceToken });
  t.teardown(() => remote.close());

  t.test('admin calls seed the catalog through the wire', async (t) => {
    t.equal(await remote.upsertStore(ALWAYS_OPEN), true, 'store created');
    t.equal(await remote.upsertStore(ALWAYS_OPEN), false, 'a repeat changes nothing: hours survived the round trip exactly');
    t.equal(await remote.upsertProduct({ storeId: ALWAYS_OPEN.storeId, productId: 'milk', name: 'Milk 1L', pricePaise: 6800 }), true);
    t.equal(await remote.upsertProduct({ storeId: ALWAYS_OPEN.storeId, productId: 'bread', name: 'Bread', pricePaise: 4500 }), true);
    t.same(await remote.setStockLevel(ALWAYS_OPEN.storeId, 'milk', 10), { stock: { onHand: 10, reserved: 0, available: 10 }, changed: true });
    t.equal(await remote.setStock(ALWAYS_OPEN.storeId, 'bread', 5), true);
    const e = await refusal(t, remote.upsertProduct({ storeId: 'nowhere', productId: 'x', name: 'X', pricePaise: 1 }), 'QD_ERR_STORE_NOT_FOUND', 'a product for no store');
    t.equal(e.details.storeId, 'nowhere', 'details cross the wire');
  });

  t.test('getStore', async (t) => {
    t.same(
      await remote.getStore(ALWAYS_OPEN.storeId, T0),
      { storeId: 'st-grpc', name: 'gRPC Store', location: { lat: 12.93, lng: 77.62 }, timeZone: 'Asia/Kolkata', open: true, prepMinutes: 9 },
      'the StoreInfo the SqlCatalog answers',
    );
    const e = await refusal(t, remote.getStore('st-none', T0), 'QD_ERR_STORE_NOT_FOUND', 'an unknown store');
    t.equal(e.details.storeId, 'st-none');
    t.equal(e.message, 'store st-none not found', 'the engine message, rebuilt from the code and details');
  });

  t.test('100 concurrent reserves race for 10 units: exactly 10 win, the rest are OUT_OF_STOCK with details', async (t) => {
    const ids = Array.from({ length: 100 }, (_, i) => `o-race-${i}`);
    const results = await Promise.allSettled(ids.map((id) => remote.reserve(id, ALWAYS_OPEN.storeId, [{ productId: 'milk', quantity: 1 }], T0)));
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as DispatchError);
    t.equal(won.length, 10, 'ten reservations');
    t.equal(lost.length, 90, 'ninety refusals');
    t.ok(lost.every((e) => e instanceof DispatchError && e.code === 'QD_ERR_OUT_OF_STOCK'), 'every refusal is QD_ERR_OUT_OF_STOCK');
    t.ok(
      lost.every((e) => e.details.productId === 'milk' && e.details.available === 0 && e.details.requested === 1 && e.details.storeId === 'st-grpc'),
      'with productId, available (a number again), requested and storeId intact',
    );
    t.same(await catalog.stockOf(ALWAYS_OPEN.storeId, 'milk'), { onHand: 10, reserved: 10, available: 0 }, 'nothing oversold');
    const first = (won[0] as PromiseFulfilledResult<Awaited<ReturnType<GrpcCatalog['reserve']>>>).value;
    t.match(first, { storeId: 'st-grpc', lines: [{ productId: 'milk', quantity: 1, unitPricePaise: 6800 }], totalPaise: 6800, status: 'reserved', createdAt: T0 });
    t.equal(first.store.open, true, 'the store travels with the reservation');
  });

  t.test('reservationOf, release, commit, and repeats', async (t) => {
    const r = await remote.reserve('o-life', ALWAYS_OPEN.storeId, [{ productId: 'bread', quantity: 2 }, { productId: 'bread', quantity: 1 }], T0);
    t.same(r.lines, [{ productId: 'bread', quantity: 3, unitPricePaise: 4500 }], 'repeated lines merged by the catalog');
    t.same(await remote.reservationOf('o-life'), { orderId: 'o-life', storeId: 'st-grpc', status: 'reserved', lines: r.lines, totalPaise: 13_500, createdAt: T0 });
    t.same(await remote.reservationOf('o-life'), await catalog.reservationOf('o-life'), 'the same record as in-process');
    t.equal(await remote.reservationOf('o-never'), null, 'an order that reserved nothing');
    const again = await remote.reserve('o-life', ALWAYS_OPEN.storeId, [{ productId: 'bread', quantity: 1 }], T0);
    t.same(again.lines, r.lines, 'a repeat returns the existing reservation and reserves nothing more');
    await remote.release('o-life');
    await remote.release('o-life');
    t.equal((await remote.reservationOf('o-life'))?.status, 'released', 'released (twice: idempotent)');
    t.same(await catalog.stockOf(ALWAYS_OPEN.storeId, 'bread'), { onHand: 5, reserved: 0, available: 5 }, 'the stock went back');
    const e = await refusal(t, remote.commit('o-life'), 'QD_ERR_INVALID_TRANSITION', 'a released reservation cannot be sold');
    t.equal(e.details.state, 'released');

    await remote.reserve('o-sold', ALWAYS_OPEN.storeId, [{ productId: 'bread', quantity: 2 }], T0);
    await remote.commit('o-sold');
    await remote.commit('o-sold');
    t.equal((await remote.reservationOf('o-sold'))?.status, 'committed');
    t.same(await catalog.stockOf(ALWAYS_OPEN.storeId, 'bread'), { onHand: 3, reserved: 0, available: 3 }, 'sold units left on_hand');
    await remote.release('o-sold');
    t.equal((await remote.reservationOf('o-sold'))?.status, 'committed', 'a release after the sale is ignored');
    await remote.release('o-nothing');
    t.pass('releasing an order that reserved nothing is a no-op');
  });

  t.test('a catalog database that is gone: QD_ERR_STORE_UNAVAILABLE (retry), not INTERNAL', async (t) => {
    const own = new pg.Pool({ connectionString: PG_URL, max: 1 });
    const gone = await serve({ catalog: new SqlCatalog(new PgClient(own), { schema: catalog.schema, logger: quiet }) });
    const client = new GrpcCatalog({ address: addr(gone), token: serviceToken });
    t.teardown(() => client.close());
    await own.end();
    await refusal(t, client.reserve('o-gone', ALWAYS_OPEN.storeId, [{ productId: 'milk', quantity: 1 }], T0), 'QD_ERR_STORE_UNAVAILABLE', 'reserve');
  });

  t.test('argument errors name the engine field', async (t) => {
    const empty = await refusal(t, remote.reserve('o-bad', ALWAYS_OPEN.storeId, [], T0), 'QD_ERR_INVALID_ARGUMENT', 'no lines');
    t.equal(empty.details.field, 'items', 'the proto says lines; the port says items, as in-process');
    const q = await refusal(t, remote.reserve('o-bad', ALWAYS_OPEN.storeId, [{ productId: 'milk', quantity: 1.5 }], T0), 'QD_ERR_INVALID_ARGUMENT', 'a fractional quantity');
    t.equal(q.details.field, 'items[0].quantity', 'refused, not truncated by the int32 field');
    const p = await refusal(t, remote.reserve('o-bad', ALWAYS_OPEN.storeId, [{ productId: 'nope', quantity: 1 }], T0), 'QD_ERR_PRODUCT_NOT_FOUND', 'an unknown product');
    t.equal(p.details.productId, 'nope');
  });
});

// ---------------------------------------------------------------- payments

t.test('payments over gRPC', { skip: pgSkip ?? false }, async (t) => {
  const fake = await FakeRazorpay.start();
  t.teardown(() => fake.close());
  const schema = nextSchema();
  const razorpay = (extra: { requestTimeoutMs?: number; deadlineMs?: number } = {}) =>
    new RazorpayPayments({ keyId: fake.keyId, keySecret: fake.keySecret, sql: shared(sql), schema, baseUrl: fake.url, logger: quiet, ...extra });
  const payments = razorpay({ requestTimeoutMs: 2000, deadlineMs: 3000 });
  await payments.init();
  const server = await serve({ payments });
  const remote = new GrpcPayments({ address: addr(server), token: serviceToken, deadlineMs: 5000 });
  t.teardown(() => remote.close());
  let n = 0;
  const orderId = () => `o-gp-${process.pid}-${++n}`;

  t.test('createIntent, intentOf, refund through the service', async (t) => {
    const id = orderId();
    const intent = await remote.createIntent(id, 45_000, 'INR');
    t.match(intent, { orderId: id, providerOrderId: /^order_/, amountPaise: 45_000, currency: 'INR' });
    t.same(await remote.createIntent(id, 45_000, 'INR'), intent, 'a repeat returns the same intent');
    t.same(await remote.intentOf(id), intent, 'intentOf');
    t.equal(await remote.intentOf(orderId()), null, 'no intent: null (absent on the wire)');
    t.equal(fake.requests.filter((r) => r.path === '/v1/orders').length, 1, 'one Razorpay order');
    const paid = await fake.pay(intent.providerOrderId);
    const refund: Refund = await remote.refund(id, paid.payment.id);
    t.match(refund, { orderId: id, providerRefundId: /^rfnd_/, amountPaise: 45_000 });
    t.same(await remote.refund(id, paid.payment.id), refund, 'refund is idempotent');
    t.equal(fake.refund(refund.providerRefundId)?.amount, 45_000);

    const other = orderId();
    const p2 = await fake.pay((await remote.createIntent(other, 30_000, 'INR')).providerOrderId);
    t.equal((await remote.refund(other, p2.payment.id, 12_500)).amountPaise, 12_500, 'a partial refund carries its amount');
    const bad = await refusal(t, remote.refund(other, 'not-a-payment'), 'QD_ERR_INVALID_ARGUMENT', 'a malformed payment id');
    t.equal(bad.details.field, 'paymentId');
  });

  t.test('a provider refusal keeps its details', async (t) => {
    fake.failNext(400, { code: 'BAD_REQUEST_ERROR', description: 'Currency is not supported', field: 'currency' });
    const e = await refusal(t, remote.createIntent(orderId(), 1000, 'INR'), 'QD_ERR_PAYMENT_PROVIDER', 'Razorpay said no');
    t.equal(e.details.status, 400, 'HTTP status as a number');
    t.equal(e.details.retryable, false, 'retryable as a boolean');
    t.match(e.message, /Currency is not supported/);
  });

  t.test('Razorpay hangs: the client gets QD_ERR_PAYMENT_TIMEOUT well within its deadline', async (t) => {
    const slow = razorpay({ requestTimeoutMs: 10_000, deadlineMs: 300 });
    const slowServer = await serve({ payments: slow });
    const client = new GrpcPayments({ address: addr(slowServer), token: serviceToken, deadlineMs: 2000 });
    fake.hang = true;
    t.teardown(() => {
      fake.hang = false;
      client.close();
    });
    const started = Date.now();
    const e = await refusal(t, client.createIntent(orderId(), 10_000, 'INR'), 'QD_ERR_PAYMENT_TIMEOUT', 'the adapter\'s deadline, answered over the wire');
    const ms = Date.now() - started;
    t.equal(e.details.timeoutMs, 300, 'the adapter\'s deadline, not the client\'s');
    t.ok(ms >= 250 && ms < 1500, `after about 300 ms (${ms} ms), not the client's 2,000`);
  });

  t.test('the payments service itself hangs: the client\'s deadline ends it with QD_ERR_PAYMENT_TIMEOUT', async (t) => {
    const never: PaymentsPort = {
      createIntent: () => new Promise<PaymentIntent>(() => {}),
      intentOf: () => new Promise<PaymentIntent | null>(() => {}),
      refund: () => new Promise<Refund>(() => {}),
    };
    const stuck = await serve({ payments: never });
    const client = new GrpcPayments({ address: addr(stuck), token: serviceToken, deadlineMs: 300 });
    t.teardown(() => client.close());
    const started = Date.now();
    const e = await refusal(t, client.intentOf('o-stuck'), 'QD_ERR_PAYMENT_TIMEOUT', 'no answer in time');
    const ms = Date.now() - started;
    t.equal(e.details.timeoutMs, 300);
    t.ok(ms >= 250 && ms < 1500, `within the deadline (${ms} ms)`);
    t.equal(((e.cause as ServiceError).code), status.DEADLINE_EXCEEDED, 'the transport status is kept as the cause');
  });
});

// ---------------------------------------------------------------- authentication

t.test('authentication and roles', async (t) => {
  let reached = 0;
  const spy: PaymentsPort = {
    createIntent: async (orderId, amountPaise, currency) => {
      reached++;
      return { orderId, providerOrderId: 'order_x', amountPaise, currency };
    },
    intentOf: async () => {
      reached++;
      return null;
    },
    refund: async (orderId) => {
      reached++;
      return { orderId, providerRefundId: 'rfnd_x', amountPaise: 1 };
    },
  };
  const server = await startAdapterServer({ services: [{ payments: spy }, { store: new MemoryEventStore() }], authorize, logger: quiet });
  servers.push(server);

  // A raw generated client, to see the status itself.
  const raw = new PersistenceServiceClient(addr(server), credentials.createInsecure());
  t.teardown(() => raw.close());
  const unaryStatus = (md: Metadata) =>
    new Promise<ServiceError>((resolve, reject) =>
      raw.riderDailyStats({ riderId: 'r', day: DAY }, md, { deadline: Date.now() + 2000 }, (err) => (err ? resolve(err) : reject(new Error('accepted')))),
    );
  const none = await unaryStatus(new Metadata());
  t.equal(none.code, status.UNAUTHENTICATED, 'no token: UNAUTHENTICATED');
  t.equal(none.metadata.get(ERROR_CODE_KEY)[0], 'QD_ERR_UNAUTHENTICATED');
  const forged = new Metadata();
  forged.set('authorization', `Bearer ${signToken({ sub: 'x', role: 'service', ttlSec: 60 }, { ...auth, keys: { hs256Secret: 'another-secret-of-at-least-thirty-two-bytes!!' } })}`);
  t.equal((await unaryStatus(forged)).code, status.UNAUTHENTICATED, 'a token signed with another key: UNAUTHENTICATED');
  const rider = new Metadata();
  rider.set('authorization', `Bearer ${riderToken}`);
  const denied = await unaryStatus(rider);
  t.equal(denied.code, status.PERMISSION_DENIED, 'a rider token: PERMISSION_DENIED');
  t.equal(denied.metadata.get(ERROR_CODE_KEY)[0], 'QD_ERR_PERMISSION_DENIED');

  // A server stream is guarded the same way.
  const stream = raw.loadLive({}, new Metadata(), { deadline: Date.now() + 2000 });
  const [streamErr] = (await once(stream, 'error')) as [ServiceError];
  t.equal(streamErr.code, status.UNAUTHENTICATED, 'LoadLive without a token: UNAUTHENTICATED');

  // Through the port clients: a DispatchError the caller can act on.
  const asRider = new GrpcPayments({ address: addr(server), token: riderToken });
  const asNobody = new GrpcPayments({ address: addr(server), token: () => 'not.a.jwt' });
  t.teardown(() => {
    asRider.close();
    asNobody.close();
  });
  const pd = await refusal(t, asRider.createIntent('o-1', 100, 'INR'), 'QD_ERR_PERMISSION_DENIED', 'wrong role through GrpcPayments');
  t.equal(pd.details.role, 'rider');
  const un = await refusal(t, asNobody.intentOf('o-1'), 'QD_ERR_INTERNAL', 'a bad token is a configuration fault, not a payment failure');
  t.equal((un.cause as ServiceError).code, status.UNAUTHENTICATED, 'with UNAUTHENTICATED as its cause');
  t.equal(reached, 0, 'no refused call reached the implementation');

  const ok = new GrpcPayments({ address: addr(server), token: async () => serviceToken });
  t.teardown(() => ok.close());
  t.equal(await ok.intentOf('o-1'), null, 'a service token (from a provider) gets through');
  t.equal(reached, 1);
});

// ---------------------------------------------------------------- unreachable

t.test('a service nobody answers at: each port\'s unreachable code, quickly', async (t) => {
  const address = `127.0.0.1:${await freePort()}`;
  const catalog = new GrpcCatalog({ address, token: serviceToken, deadlineMs: 1000 });
  const payments = new GrpcPayments({ address, token: serviceToken, deadlineMs: 1000 });
  const store = new GrpcEventStore({ address, token: serviceToken, deadlineMs: 1000, connectTimeoutMs: 300 });
  t.teardown(() => {
    catalog.close();
    payments.close();
  });
  const started = Date.now();
  const c = await refusal(t, catalog.getStore('st-1', T0), 'QD_ERR_STORE_UNAVAILABLE', 'catalog');
  t.match(c.details, { retryable: true, reason: new RegExp(`catalog at ${address}`) }, 'names the service');
  await refusal(t, catalog.reserve('o-1', 'st-1', [{ productId: 'p', quantity: 1 }], T0), 'QD_ERR_STORE_UNAVAILABLE', 'catalog reserve');
  await refusal(t, payments.createIntent('o-1', 100, 'INR'), 'QD_ERR_PAYMENT_PROVIDER', 'payments');
  await refusal(t, store.append([{ stream: 'order:a', seq: 1, type: 'CREATED', data: {}, at: T0 }]), 'QD_ERR_STORE_UNAVAILABLE', 'persistence append');
  await refusal(t, store.loadLive(), 'QD_ERR_STORE_UNAVAILABLE', 'persistence loadLive (a stream)');
  await refusal(t, store.init(), 'QD_ERR_STORE_UNAVAILABLE', 'persistence init waits for the service, then gives up');
  t.ok(Date.now() - started < 5000, 'no call waited for a deadline it did not need');
  await store.close();
  await refusal(t, store.readStream('order:a'), 'QD_ERR_STORE_UNAVAILABLE', 'a closed client refuses');
  t.notOk(await checkHealth({ address, timeoutMs: 500 }), 'health: not serving');
});

// ---------------------------------------------------------------- TLS

const openssl = spawnSync('openssl', ['version'], { encoding: 'utf8' });
t.test('TLS: a CA-verified channel; a client without the CA is refused', { skip: openssl.status === 0 ? false : 'openssl not found' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qd-grpc-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const made = spawnSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=catalog.test', '-addext', 'subjectAltName=DNS:catalog.test', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')],
    { encoding: 'utf8' },
  );
  t.equal(made.status, 0, 'a self-signed certificate for catalog.test');
  const cert = readFileSync(join(dir, 'cert.pem'));
  const key = readFileSync(join(dir, 'key.pem'));
  const catalog = new SqlCatalog(shared(sql), { schema: nextSchema(), logger: quiet });
  if (!pgSkip) {
    await catalog.init();
    await catalog.upsertStore({ ...ALWAYS_OPEN, storeId: 'st-tls' });
  }
  const server = await serve({ catalog }, { tls: { cert, key } });
  const tls: ClientTls = { ca: cert, serverName: 'catalog.test' };
  const good = new GrpcCatalog({ address: addr(server), token: serviceToken, tls });
  const untrusting = new GrpcCatalog({ address: addr(server), token: serviceToken, tls: true, deadlineMs: 1500 });
  const plain = new GrpcCatalog({ address: addr(server), token: serviceToken, deadlineMs: 1500 });
  t.teardown(() => {
    good.close();
    untrusting.close();
    plain.close();
  });
  if (!pgSkip) t.equal((await good.getStore('st-tls', T0)).storeId, 'st-tls', 'a call over TLS');
  else await refusal(t, good.getStore('st-tls', T0), 'QD_ERR_STORE_UNAVAILABLE', 'a call over TLS reaches the server (its database is down)');
  await refusal(t, untrusting.getStore('st-tls', T0), 'QD_ERR_STORE_UNAVAILABLE', 'system roots do not trust a self-signed certificate');
  await refusal(t, plain.getStore('st-tls', T0), 'QD_ERR_STORE_UNAVAILABLE', 'plain text to a TLS port fails');
  t.ok(await checkHealth({ address: addr(server), service: 'quickdash.v1.CatalogService', tls: { ca: cert }, skipHostnameCheck: true }), 'the probe over TLS');
});

// ---------------------------------------------------------------- the process

t.test('bin/adapter.ts: listens, serves, answers probes, exits 0 on SIGTERM', { skip: pgSkip ?? false }, async (t) => {
  const schema = nextSchema();
  const env = { ...process.env, QD_LOG_LEVEL: 'info', QD_JWT_SECRET: '', QD_JWT_PUBLIC_KEY: '', QD_POSTGRES_URL: PG_URL };
  const child = spawn(process.execPath, ['--import', 'tsx', 'bin/adapter.ts', '--service', 'catalog', '--port', '0', '--schema', schema, '--seed-demo'], {
    cwd: root,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const logs: Array<Record<string, unknown>> = [];
  let buffered = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`adapter did not start: ${JSON.stringify(logs)}`)), 20_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          const entry = JSON.parse(line) as Record<string, unknown>;
          logs.push(entry);
          if (entry.msg === 'adapter listening') {
            clearTimeout(timer);
            resolve(entry.port as number);
          }
        } catch {
          // not a log line
        }
      }
    });
    void exited.then((code) => reject(new Error(`adapter exited with ${code} before listening: ${JSON.stringify(logs)}`)));
  });
  t.match(logs.find((l) => l.msg === 'adapter listening'), { service: 'catalog', port: Number }, 'the listening line names the service and port');
  t.ok(logs.some((l) => l.level === 40 && /development secret/.test(String(l.msg))), 'warns that development tokens are accepted');

  const remote = new GrpcCatalog({ address: `127.0.0.1:${port}`, token: serviceToken });
  const demo = DEMO_STORES[0]!;
  t.equal((await remote.getStore(demo.storeId, T0)).name, demo.name, 'the demo catalog is served');
  remote.close();
  t.ok(await checkHealth({ address: `127.0.0.1:${port}`, service: 'quickdash.v1.CatalogService' }), 'health: serving');
  const probe = spawnSync(process.execPath, ['--import', 'tsx', 'bin/adapter.ts', '--probe', '--service', 'catalog', '--port', String(port)], { cwd: root, env, encoding: 'utf8' });
  t.equal(probe.status, 0, 'the --probe mode exits 0 against it');

  child.kill('SIGTERM');
  t.equal(await exited, 0, 'exits 0 on SIGTERM');
  t.ok(logs.some((l) => l.msg === 'stopped'), 'after closing the server and the pool');

  const payments = spawnSync(process.execPath, ['--import', 'tsx', 'bin/adapter.ts', '--service', 'payments', '--port', '0'], {
    cwd: root,
    env: { ...env, QD_RAZORPAY_KEY_ID: '', QD_RAZORPAY_KEY_SECRET: '' },
    encoding: 'utf8',
  });
  t.equal(payments.status, 2, 'payments without Razorpay keys refuses to start');
  t.match(payments.stderr, /QD_RAZORPAY_KEY_ID and QD_RAZORPAY_KEY_SECRET/, 'and says what to set');
});

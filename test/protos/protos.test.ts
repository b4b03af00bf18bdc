// The gRPC contract (protos/quickdash/v1): buf lint clean, protos/gen exactly what buf.gen.yaml
// generates, the generated code round-trips messages and serves DispatchService over loopback,
// and the contract's enums cover the engine's vocabulary.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Metadata, Server, ServerCredentials, credentials, status, type ServiceError } from '@grpc/grpc-js';
import type {
  CancelledBy as EngineCancelledBy,
  OrderStatus as EngineOrderStatus,
  OrderView,
  PaymentMode as EnginePaymentMode,
  RiderDailyStats as EngineRiderDailyStats,
  RiderStatus as EngineRiderStatus,
  RiderView,
} from '../../engine/index.ts';
import {
  CancelParty,
  ErrorDetail,
  Order,
  OrderStatus,
  PaymentMode,
  RiderDailyStats,
  Rider,
  RiderStatus,
} from '../../protos/gen/quickdash/v1/common.ts';
import {
  CreateOrderRequest,
  DispatchServiceClient,
  DispatchServiceService,
  GetOrderRequest,
  OrderEvent,
  WatchOrdersRequest,
  type DispatchServiceServer,
  type WatchOrdersResponse,
} from '../../protos/gen/quickdash/v1/dispatch.ts';
import { StoredEvent } from '../../protos/gen/quickdash/v1/persistence.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const protosDir = join(root, 'protos');
const genDir = join(protosDir, 'gen');
const buf = join(root, 'node_modules', '.bin', 'buf');

function runBuf(args: string[], cwd: string) {
  const r = spawnSync(buf, args, { cwd, encoding: 'utf8', timeout: 120_000 });
  if (r.error) throw r.error;
  return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() };
}

/** Every file under dir, as paths relative to it, sorted. */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

const T0 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, epoch ms: well beyond 32 bits

// ---------------------------------------------------------------- buf

t.test('buf lint: the contract is clean under the STANDARD rules', async (t) => {
  const r = runBuf(['lint', '--error-format=json'], protosDir);
  t.equal(r.status, 0, 'buf lint exits 0');
  t.equal(r.out, '', 'buf lint reports nothing');
  const f = runBuf(['format', '--diff', '--exit-code'], protosDir);
  t.equal(f.status, 0, `the .proto files are in buf's canonical format (npm run protos formats them)${f.out ? `:\n${f.out}` : ''}`);
});

t.test('buf lint: the check itself sees a violation', async (t) => {
  // Guards against a configuration that lints no file (a wrong module path would pass silently).
  const dir = mkdtempSync(join(tmpdir(), 'qd-buf-lint-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(join(protosDir, 'buf.yaml'), join(dir, 'buf.yaml'));
  mkdirSync(join(dir, 'quickdash', 'v1'), { recursive: true });
  writeFileSync(join(dir, 'quickdash', 'v1', 'bad.proto'), 'syntax = "proto3";\npackage quickdash.v1;\nenum Colour {\n  RED = 0;\n}\n');
  const r = runBuf(['lint', '--error-format=json'], dir);
  t.not(r.status, 0, 'buf lint fails');
  t.match(r.out, /ENUM_ZERO_VALUE_SUFFIX/, 'names the broken rule');
  t.match(r.out, /bad\.proto/, 'names the file');
});

t.test('protos/gen is exactly what buf.gen.yaml generates (run `npm run protos` after editing a .proto)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qd-buf-gen-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // --output prefixes the template's `out: gen`, so the fresh copy lands in <dir>/gen.
  const r = runBuf(['generate', '--output', dir], protosDir);
  t.equal(r.status, 0, `buf generate exits 0${r.out ? `: ${r.out}` : ''}`);
  const freshDir = join(dir, 'gen');
  const fresh = filesUnder(freshDir);
  const committed = filesUnder(genDir);
  t.ok(fresh.length >= 5, `generated ${fresh.length} files (${fresh.join(', ')})`);

  const missing = fresh.filter((f) => !committed.includes(f));
  const extra = committed.filter((f) => !fresh.includes(f));
  const drifted = fresh.filter((f) => committed.includes(f) && !readFileSync(join(freshDir, f)).equals(readFileSync(join(genDir, f))));
  t.same(missing, [], 'no generated file is missing from protos/gen');
  t.same(extra, [], 'protos/gen holds no file the generator does not write');
  t.same(drifted, [], 'every file in protos/gen is byte for byte what the generator writes');
});

t.test('every generated module loads at runtime and its services have the wire paths of the contract', async (t) => {
  // The generated files import each other with a .js suffix; tsx must resolve those to the .ts files.
  const services: string[] = [];
  for (const f of filesUnder(genDir)) {
    const mod = (await import(pathToFileURL(join(genDir, f)).href)) as Record<string, unknown>;
    t.equal(mod.protobufPackage, 'quickdash.v1', `${f} loads`);
    for (const [exported, def] of Object.entries(mod)) {
      // ts-proto names a service's grpc-js definition <Service>Service: DispatchServiceService.
      if (!/ServiceService$/.test(exported) || typeof def !== 'object' || def === null) continue;
      const name = exported.slice(0, -'Service'.length);
      services.push(name);
      for (const [method, d] of Object.entries(def as Record<string, { path: string }>)) {
        const rpc = method[0].toUpperCase() + method.slice(1);
        t.equal(d.path, `/quickdash.v1.${name}/${rpc}`, `${name}.${method}`);
      }
      t.type(mod[`${name}Client`], 'function', `${name}Client is generated`);
    }
  }
  t.same(services.sort(), ['CatalogService', 'DispatchService', 'PaymentsService', 'PersistenceService'], 'the four services');
});

// ---------------------------------------------------------------- messages

t.test('CreateOrderRequest round-trips, optional fields absent or present', async (t) => {
  const full = CreateOrderRequest.create({
    idempotencyKey: 'checkout-7f3a:1',
    orderId: 'o-42',
    storeId: 'store-koramangala',
    customerId: 'cust-9',
    dropoff: { lat: 12.9352, lng: 77.6245 },
    lines: [
      { productId: 'milk-1l', quantity: 2 },
      { productId: 'bread', quantity: 1 },
    ],
    paymentMode: PaymentMode.PAYMENT_MODE_PREPAID,
    promisedAt: T0 + 30 * 60_000,
  });
  const bytes = CreateOrderRequest.encode(full).finish();
  t.strictSame(CreateOrderRequest.decode(bytes), full, 'every field survives encode/decode');

  const minimal = CreateOrderRequest.create({ idempotencyKey: 'k', storeId: 's', customerId: 'c', paymentMode: PaymentMode.PAYMENT_MODE_COD });
  const back = CreateOrderRequest.decode(CreateOrderRequest.encode(minimal).finish());
  t.equal(back.orderId, undefined, 'unset optional order_id stays absent (server assigns it)');
  t.equal(back.promisedAt, undefined, 'unset optional promised_at stays absent');
  t.equal(back.dropoff, undefined, 'unset message field stays absent');
  t.equal(back.paymentMode, PaymentMode.PAYMENT_MODE_COD);

  // Epoch ms are int64 on the wire and plain numbers in TypeScript (forceLong=number).
  t.equal(typeof back.idempotencyKey, 'string');
  t.equal(CreateOrderRequest.decode(bytes).promisedAt, T0 + 30 * 60_000, 'an epoch-ms int64 decodes to the same number');
});

function sampleOrder(seq: number, status: OrderStatus): Order {
  return Order.create({
    orderId: 'o-42',
    status,
    seq,
    storeId: 'store-koramangala',
    customerId: 'cust-9',
    pickup: { lat: 12.9345, lng: 77.6268 },
    dropoff: { lat: 12.9352, lng: 77.6245 },
    payment: {
      mode: PaymentMode.PAYMENT_MODE_PREPAID,
      amountPaise: 51_900,
      currency: 'INR',
      providerOrderId: 'order_Nx81',
      paymentId: 'pay_Q2',
    },
    riderId: 'rider-7',
    offer: undefined,
    createdAt: T0,
    readyAt: T0 + 8 * 60_000,
    promisedAt: T0 + 30 * 60_000,
    assignedAt: T0 + 60_000,
    cancel: { by: CancelParty.CANCEL_PARTY_OPERATIONS, reason: 'store flooded' },
    escalation: { reason: 'searchTimeout', at: T0 + 5 * 60_000 },
    attempts: 1,
    otp: '4821',
    lines: [{ productId: 'milk-1l', quantity: 2, unitPricePaise: 6_800 }],
    itemsTotalPaise: 13_600,
    deliveryFeePaise: 3_300,
  });
}

t.test('OrderEvent round-trips with its whole Order snapshot', async (t) => {
  const event = OrderEvent.create({
    position: '3',
    orderId: 'o-42',
    seq: 3,
    event: 'ACCEPT',
    status: OrderStatus.ORDER_STATUS_ASSIGNED,
    at: T0 + 60_000,
    order: sampleOrder(3, OrderStatus.ORDER_STATUS_ASSIGNED),
  });
  const back = OrderEvent.decode(OrderEvent.encode(event).finish());
  t.strictSame(back, event, 'every field, nested ones included, survives encode/decode');
  t.equal(back.order?.pickedUpAt, undefined, 'a null time (never picked up) stays absent, not 0');
  t.equal(back.order?.payment?.amountPaise, 51_900);
  t.strictSame(OrderEvent.fromJSON(OrderEvent.toJSON(event)), event, 'the proto3 JSON mapping round-trips too');
});

t.test('ErrorDetail and StoredEvent carry what the engine produces', async (t) => {
  const detail = ErrorDetail.create({
    code: 'QD_ERR_OUT_OF_STOCK',
    field: 'lines[0].quantity',
    details: { productId: 'milk-1l', available: '1', requested: '2' },
  });
  t.strictSame(ErrorDetail.decode(ErrorDetail.encode(detail).finish()), detail);

  // Free-form engine data travels as JSON text: integers, nested objects and null come back exactly.
  const data = { spec: { orderId: 'o-42', riderFee: 2_640, pickup: { lat: 12.9345, lng: 77.6268 }, promisedAt: null }, otp: '4821' };
  const ev = StoredEvent.create({ stream: 'order:o-42', seq: 1, type: 'CREATED', dataJson: Buffer.from(JSON.stringify(data)), at: T0, final: false });
  const back = StoredEvent.decode(StoredEvent.encode(ev).finish());
  t.strictSame(JSON.parse(Buffer.from(back.dataJson).toString('utf8')), data);
  t.equal(back.at, T0);
});

// ---------------------------------------------------------------- the contract covers the engine

/** SCREAMING_SNAKE name of an engine value under an enum prefix: 'awaitingPayment' -> ORDER_STATUS_AWAITING_PAYMENT. */
const protoName = (prefix: string, v: string) => `${prefix}_${v.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;

/** Enum values a server may send (the zero value and ts-proto's UNRECOGNIZED excluded). */
const realValues = (e: Record<string, string | number>) =>
  Object.entries(e)
    .filter(([k, v]) => typeof v === 'number' && v > 0)
    .map(([k]) => k)
    .sort();

t.test('every engine status has its proto enum value and no proto value is left over', async (t) => {
  // Keyed by the engine's unions: tsc fails here when the engine gains a status the contract lacks.
  const orderStatuses = {
    awaitingPayment: OrderStatus.ORDER_STATUS_AWAITING_PAYMENT,
    confirmed: OrderStatus.ORDER_STATUS_CONFIRMED,
    searching: OrderStatus.ORDER_STATUS_SEARCHING,
    offered: OrderStatus.ORDER_STATUS_OFFERED,
    assigned: OrderStatus.ORDER_STATUS_ASSIGNED,
    atPickup: OrderStatus.ORDER_STATUS_AT_PICKUP,
    pickedUp: OrderStatus.ORDER_STATUS_PICKED_UP,
    atDropoff: OrderStatus.ORDER_STATUS_AT_DROPOFF,
    delivered: OrderStatus.ORDER_STATUS_DELIVERED,
    cancelled: OrderStatus.ORDER_STATUS_CANCELLED,
    escalated: OrderStatus.ORDER_STATUS_ESCALATED,
  } satisfies Record<EngineOrderStatus, OrderStatus>;
  const riderStatuses = {
    offline: RiderStatus.RIDER_STATUS_OFFLINE,
    available: RiderStatus.RIDER_STATUS_AVAILABLE,
    offered: RiderStatus.RIDER_STATUS_OFFERED,
    toPickup: RiderStatus.RIDER_STATUS_TO_PICKUP,
    atPickup: RiderStatus.RIDER_STATUS_AT_PICKUP,
    toDropoff: RiderStatus.RIDER_STATUS_TO_DROPOFF,
    atDropoff: RiderStatus.RIDER_STATUS_AT_DROPOFF,
    onBreak: RiderStatus.RIDER_STATUS_ON_BREAK,
  } satisfies Record<EngineRiderStatus, RiderStatus>;
  const paymentModes = { prepaid: PaymentMode.PAYMENT_MODE_PREPAID, cod: PaymentMode.PAYMENT_MODE_COD } satisfies Record<
    EnginePaymentMode,
    PaymentMode
  >;
  const cancelParties = {
    customer: CancelParty.CANCEL_PARTY_CUSTOMER,
    ops: CancelParty.CANCEL_PARTY_OPERATIONS,
    payment: CancelParty.CANCEL_PARTY_PAYMENT,
  } satisfies Record<EngineCancelledBy, CancelParty>;

  for (const [engine, proto] of Object.entries(orderStatuses)) t.equal(OrderStatus[proto], protoName('ORDER_STATUS', engine), engine);
  for (const [engine, proto] of Object.entries(riderStatuses)) t.equal(RiderStatus[proto], protoName('RIDER_STATUS', engine), engine);
  for (const [engine, proto] of Object.entries(paymentModes)) t.equal(PaymentMode[proto], protoName('PAYMENT_MODE', engine), engine);
  t.same(realValues(OrderStatus), Object.values(orderStatuses).map((v) => OrderStatus[v]).sort(), 'OrderStatus has no value the engine lacks');
  t.same(realValues(RiderStatus), Object.values(riderStatuses).map((v) => RiderStatus[v]).sort(), 'RiderStatus has no value the engine lacks');
  t.same(realValues(PaymentMode), Object.values(paymentModes).map((v) => PaymentMode[v]).sort(), 'PaymentMode has no value the engine lacks');
  // STORE is the contract's one addition: a store cancelling an order it cannot fulfil.
  t.same(
    realValues(CancelParty),
    [...Object.values(cancelParties).map((v) => CancelParty[v]), 'CANCEL_PARTY_STORE'].sort(),
    'CancelParty: the engine parties plus STORE',
  );
});

t.test('Order, Rider and RiderDailyStats have a field for every engine view field', async (t) => {
  // Where a view field lives under another name in the message.
  const orderMoved: Record<string, string> = { payment: 'payment.mode', paymentId: 'payment.paymentId', deliveryFee: 'deliveryFeePaise' };
  const riderMoved: Record<string, string> = {};
  const statsMoved: Record<string, string> = { earnings: 'earningsPaise' };
  const check = (name: string, viewKeys: string[], message: object, moved: Record<string, string>) => {
    const fields = new Set(Object.keys(message));
    const lacking = viewKeys.filter((k) => !fields.has(k) && !(k in moved && fields.has(moved[k].split('.')[0])));
    t.same(lacking, [], `${name} covers the engine view`);
  };
  // Keyed by the view types: tsc fails when the engine adds a field that is not listed here.
  const orderKeys = {
    orderId: 1, status: 1, seq: 1, storeId: 1, customerId: 1, pickup: 1, dropoff: 1, payment: 1, paymentId: 1, riderId: 1, offer: 1,
    createdAt: 1, readyAt: 1, promisedAt: 1, assignedAt: 1, pickedUpAt: 1, deliveredAt: 1, cancelledAt: 1, cancel: 1, escalation: 1,
    attempts: 1, otp: 1, deliveryFee: 1,
  } satisfies Record<keyof OrderView, 1>;
  const riderKeys = { riderId: 1, status: 1, seq: 1, capacity: 1, orderIds: 1, offer: 1, position: 1, shard: 1 } satisfies Record<keyof RiderView, 1>;
  const statsKeys = {
    riderId: 1, day: 1, deliveries: 1, onTime: 1, distanceM: 1, earnings: 1, offers: 1, accepts: 1, onTimeRate: 1, acceptanceRate: 1,
  } satisfies Record<keyof EngineRiderDailyStats, 1>;
  // create() spells out every field (absent ones as undefined keys), so its keys are the message's fields.
  check('Order', Object.keys(orderKeys), Order.create(), orderMoved);
  check('Rider', Object.keys(riderKeys), Rider.create(), riderMoved);
  check('RiderDailyStats', Object.keys(statsKeys), RiderDailyStats.create(), statsMoved);
});

// ---------------------------------------------------------------- gRPC over loopback

t.test('DispatchService over a real grpc-js server on 127.0.0.1: unary, error trailers, server stream', async (t) => {
  const seen: { authorization: string[] } = { authorization: [] };
  const getOrder: DispatchServiceServer['getOrder'] = (call, callback) => {
    seen.authorization.push(...call.metadata.get('authorization').map(String));
    if (call.request.orderId !== 'o-42') {
      const trailers = new Metadata();
      trailers.set('qd-error-code', 'QD_ERR_ORDER_NOT_FOUND');
      trailers.set('qd-error-field', 'order_id');
      trailers.set(
        'qd-error-detail-bin',
        Buffer.from(ErrorDetail.encode({ code: 'QD_ERR_ORDER_NOT_FOUND', field: 'order_id', details: { orderId: call.request.orderId } }).finish()),
      );
      callback({ code: status.NOT_FOUND, details: `order ${call.request.orderId} not found`, metadata: trailers });
      return;
    }
    callback(null, { order: sampleOrder(3, OrderStatus.ORDER_STATUS_ASSIGNED) });
  };
  // A one-order stream replaying seq after `after_position`, then ending (the order is delivered).
  const watchOrders: DispatchServiceServer['watchOrders'] = (call) => {
    const scope = call.request.scope;
    if (scope?.$case !== 'orderId') {
      call.emit('error', { code: status.INVALID_ARGUMENT, details: 'only one-order scopes here' });
      return;
    }
    const names = ['CREATED', 'OFFER', 'ACCEPT', 'PICKED_UP', 'DELIVER'];
    const statuses = [
      OrderStatus.ORDER_STATUS_CONFIRMED,
      OrderStatus.ORDER_STATUS_OFFERED,
      OrderStatus.ORDER_STATUS_ASSIGNED,
      OrderStatus.ORDER_STATUS_PICKED_UP,
      OrderStatus.ORDER_STATUS_DELIVERED,
    ];
    const after = call.request.afterPosition === '' ? 0 : Number(call.request.afterPosition);
    for (let seq = after + 1; seq <= names.length; seq++) {
      call.write({
        event: {
          position: String(seq),
          orderId: scope.orderId,
          seq,
          event: names[seq - 1],
          status: statuses[seq - 1],
          at: T0 + seq * 1000,
          order: sampleOrder(seq, statuses[seq - 1]),
        },
      });
    }
    call.end();
  };

  const server = new Server();
  server.addService(DispatchServiceService, { getOrder, watchOrders });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? rej(err) : res(p))),
  );
  const client = new DispatchServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
  t.teardown(async () => {
    client.close();
    // Graceful first; a call left open by a failing assertion must not hang the run.
    await new Promise<void>((res) => {
      const force = setTimeout(() => {
        server.forceShutdown();
        res();
      }, 2_000);
      server.tryShutdown(() => {
        clearTimeout(force);
        res();
      });
    });
  });
  const md = new Metadata();
  md.set('authorization', 'Bearer test-token');

  const ok = await new Promise<Order | undefined>((res, rej) =>
    client.getOrder(GetOrderRequest.create({ orderId: 'o-42' }), md, (err, r) => (err ? rej(err) : res(r.order))),
  );
  t.strictSame(ok, sampleOrder(3, OrderStatus.ORDER_STATUS_ASSIGNED), 'the Order arrives whole');
  t.same(seen.authorization, ['Bearer test-token'], 'call metadata reaches the server');

  const err = await new Promise<ServiceError>((res, rej) =>
    client.getOrder({ orderId: 'o-missing' }, md, (e) => (e ? res(e) : rej(new Error('expected an error')))),
  );
  t.equal(err.code, status.NOT_FOUND, 'gRPC status NOT_FOUND');
  t.strictSame(err.metadata.get('qd-error-code'), ['QD_ERR_ORDER_NOT_FOUND'], 'qd-error-code trailer');
  t.strictSame(err.metadata.get('qd-error-field'), ['order_id'], 'qd-error-field trailer');
  const [detailBytes] = err.metadata.get('qd-error-detail-bin');
  t.ok(Buffer.isBuffer(detailBytes), 'qd-error-detail-bin arrives as bytes');
  t.strictSame(
    ErrorDetail.decode(detailBytes as Buffer),
    ErrorDetail.create({ code: 'QD_ERR_ORDER_NOT_FOUND', field: 'order_id', details: { orderId: 'o-missing' } }),
    'ErrorDetail decodes from the -bin trailer',
  );

  const watch = (req: WatchOrdersRequest) =>
    new Promise<OrderEvent[]>((res, rej) => {
      const got: OrderEvent[] = [];
      const stream = client.watchOrders(req, md);
      stream.on('data', (m: WatchOrdersResponse) => got.push(m.event!));
      stream.on('error', rej);
      stream.on('end', () => res(got));
    });
  const resumed = await watch({ scope: { $case: 'orderId', orderId: 'o-42' }, afterPosition: '2' });
  t.same(
    resumed.map((e) => [e.position, e.seq, e.event]),
    [
      ['3', 3, 'ACCEPT'],
      ['4', 4, 'PICKED_UP'],
      ['5', 5, 'DELIVER'],
    ],
    'the stream resumes after position 2, in order',
  );
  t.equal(resumed[2].order?.status, OrderStatus.ORDER_STATUS_DELIVERED, 'each event carries its Order snapshot');
  const refused = await watch({ scope: { $case: 'storeId', storeId: 'store-1' }, afterPosition: '' }).then(
    () => null,
    (e: ServiceError) => e,
  );
  t.equal(refused?.code, status.INVALID_ARGUMENT, 'a stream error reaches the client with its status');
});

// Payments through Razorpay: the real `razorpay` SDK against FakeRazorpay (Razorpay's wire shapes),
// signed webhooks received over HTTP, the ledger on the local Postgres (and the end-to-end flow on PGlite).
import t from 'tap';
import type { Test } from 'tap';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import pg from 'pg';
import pino from 'pino';
import { PGlite } from '@electric-sql/pglite';
import { DispatchError } from '../../engine/index.ts';
import { PgClient, PgliteClient } from '../../adapters/sql/index.ts';
import type { SqlClient } from '../../adapters/sql/index.ts';
import { FakeRazorpay, RazorpayPayments, RazorpayWebhooks, verifyRazorpaySignature } from '../../adapters/razorpay/index.ts';
import type { PaymentEvent, RazorpayPaymentsOptions, WebhookResult } from '../../adapters/razorpay/index.ts';

const PG_URL = process.env.QD_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
/** Unique per run, so test files and concurrent runs never share tables. */
const RUN = `qdrzp_${process.pid}_${Date.now().toString(36)}`;
const ID14 = /^[A-Za-z0-9]{14}$/;
let seq = 0;
const newOrderId = () => `o-rzp-${RUN.slice(-6)}-${++seq}`;

/** A webhook endpoint as the gateway will serve it: raw body in, handle(), status and body out. Round-robins over handlers (nodes). */
async function receiver(handlers: RazorpayWebhooks[]) {
  const results: Array<{ eventId: string; result: WebhookResult }> = [];
  let next = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const h = handlers[next++ % handlers.length];
      h.handle(Buffer.concat(chunks), req.headers as Record<string, string>).then(
        (result) => {
          results.push({ eventId: String(req.headers['x-razorpay-event-id'] ?? ''), result });
          res.writeHead(result.status, { 'content-type': 'application/json' }).end(result.body);
        },
        () => res.writeHead(500).end(),
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/razorpay`,
    results,
    resultOf: (eventId: string) => results.filter((r) => r.eventId === eventId).map((r) => r.result),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

async function rejection(t: Test, p: Promise<unknown>, msg: string): Promise<DispatchError> {
  try {
    await p;
  } catch (err) {
    t.ok(err instanceof DispatchError, `${msg}: rejects with a DispatchError`);
    return err as DispatchError;
  }
  t.fail(`${msg}: expected a rejection`);
  return new DispatchError('QD_ERR_INTERNAL', { reason: 'did not reject' });
}

/** Log lines captured as objects, to check they are structured and name the order. */
function captureLogs() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { lines, logger: pino({ level: 'info' }, stream) };
}

/** Everything one backend needs: a fake, the adapter, two webhook handlers (two "nodes") and a receiver. */
async function rig(t: Test, sql: SqlClient, schema: string, extra: Partial<RazorpayPaymentsOptions> = {}) {
  const fake = await FakeRazorpay.start();
  t.teardown(() => fake.close());
  const logs = captureLogs();
  const payments = new RazorpayPayments({
    keyId: fake.keyId,
    keySecret: fake.keySecret,
    sql,
    schema,
    baseUrl: fake.url,
    requestTimeoutMs: 2000,
    deadlineMs: 3000,
    logger: logs.logger,
    ...extra,
  });
  await payments.init();
  await payments.init(); // idempotent
  const hooks = [new RazorpayWebhooks({ secret: fake.webhookSecret, sql, schema }), new RazorpayWebhooks({ secret: fake.webhookSecret, sql, schema })];
  await hooks[0].init();
  const rx = await receiver(hooks);
  t.teardown(() => rx.close());
  fake.webhookUrl = rx.url;
  return { fake, payments, hooks, rx, logs };
}

/** The flow every backend must support: intent, idempotency, checkout, webhook, replay, refund. */
async function endToEnd(t: Test, sql: SqlClient, schema: string): Promise<void> {
  const { fake, payments, rx } = await rig(t, sql, schema);
  const orderId = newOrderId();
  const intent = await payments.createIntent(orderId, 45_000, 'INR');
  t.match(intent, { orderId, amountPaise: 45_000, currency: 'INR' });
  t.same(await payments.createIntent(orderId, 45_000, 'INR'), intent, 'repeat returns the same intent');
  t.equal(fake.requests.filter((r) => r.path === '/v1/orders').length, 1, 'one Razorpay order');
  const paid = await fake.pay(intent.providerOrderId);
  const captured = rx.resultOf(paid.webhooks[0].eventId)[0];
  t.same(captured.event, { kind: 'captured', orderId, paymentId: paid.payment.id, amountPaise: 45_000 });
  t.match(JSON.parse((await fake.replay(paid.webhooks[0].eventId)).response!), { duplicate: true }, 'replay is a duplicate');
  const refund = await payments.refund(orderId, paid.payment.id);
  t.same(await payments.refund(orderId, paid.payment.id), refund, 'refund is idempotent');
  t.equal(fake.refund(refund.providerRefundId)?.amount, 45_000);
}

t.test('verifyRazorpaySignature: HMAC-SHA256 hex of the raw bytes', async (t) => {
  const body = Buffer.from('{"entity":"event","event":"payment.captured"}');
  const sig = createHmac('sha256', 'whsec').update(body).digest('hex');
  t.ok(verifyRazorpaySignature(body, sig, 'whsec'), 'the right signature');
  t.notOk(verifyRazorpaySignature(body, sig, 'other'), 'another secret');
  t.notOk(verifyRazorpaySignature(Buffer.from(body.toString().replace('captured', 'failed')), sig, 'whsec'), 'a changed body');
  t.notOk(verifyRazorpaySignature(body, sig.slice(0, 63), 'whsec'), 'a shorter signature (length checked first)');
  t.notOk(verifyRazorpaySignature(body, sig.toUpperCase(), 'whsec'), 'not the hex Razorpay sends');
  t.notOk(verifyRazorpaySignature(body, '', 'whsec'), 'an empty signature');
  // Re-serialising the JSON would change the bytes: the raw body is what is signed.
  const reserialised = Buffer.from(JSON.stringify(JSON.parse(' { "a" : 1 } ')));
  t.notOk(verifyRazorpaySignature(reserialised, createHmac('sha256', 'whsec').update(' { "a" : 1 } ').digest('hex'), 'whsec'), 'bytes, not JSON');
});

t.test('on Postgres', async (t) => {
  const pool = new pg.Pool({ connectionString: PG_URL, max: 6 });
  const sql = new PgClient(pool);
  const schema = RUN;
  t.teardown(async () => {
    await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await pool.end();
  });
  const { fake, payments, hooks, rx, logs } = await rig(t, sql, schema);

  t.test('createIntent opens a Razorpay order through the SDK', async (t) => {
    const orderId = newOrderId();
    const intent = await payments.createIntent(orderId, 25_900, 'INR');
    t.equal(intent.orderId, orderId);
    t.match(intent.providerOrderId, /^order_[A-Za-z0-9]{14}$/, 'a Razorpay order id');
    t.same({ amount: intent.amountPaise, currency: intent.currency }, { amount: 25_900, currency: 'INR' });
    const req = fake.requests.at(-1)!;
    t.equal(req.method, 'POST');
    t.equal(req.path, '/v1/orders', 'the SDK asked for /v1/orders on the fake');
    t.equal(req.headers.authorization, `Basic ${Buffer.from(`${fake.keyId}:${fake.keySecret}`).toString('base64')}`, 'Basic auth with key_id:key_secret');
    t.ok(req.authorized);
    t.match(String(req.headers['user-agent']), /^razorpay-node@/, 'sent by the official SDK');
    t.same(req.body, { currency: 'INR', amount: 25_900, receipt: orderId, notes: { order_id: orderId } });
    const order = fake.order(intent.providerOrderId)!;
    t.match(order, { entity: 'order', amount: 25_900, amount_paid: 0, amount_due: 25_900, status: 'created', attempts: 0, receipt: orderId });
    t.equal(order.created_at, Math.floor(order.created_at), 'created_at in seconds');
    t.same(await payments.intentOf(orderId), intent, 'intentOf reads the ledger');
    t.equal(await payments.intentOf(newOrderId()), null, 'no intent, null');
    t.ok(
      logs.lines.some((l) => l.msg === 'payment intent opened' && l.orderId === orderId && l.providerOrderId === intent.providerOrderId),
      'a structured log line names the order',
    );
  });

  t.test('createIntent is idempotent per order', async (t) => {
    const orderId = newOrderId();
    const before = fake.requests.length;
    const all = await Promise.all(Array.from({ length: 5 }, () => payments.createIntent(orderId, 10_000, 'INR')));
    const again = await payments.createIntent(orderId, 10_000, 'INR');
    t.equal(new Set([...all, again].map((i) => i.providerOrderId)).size, 1, 'one intent for concurrent and repeated calls');
    t.equal(fake.requests.length - before, 1, 'one request to Razorpay');
    // A fresh adapter (a restart) finds it in the ledger.
    const restarted = new RazorpayPayments({ keyId: fake.keyId, keySecret: fake.keySecret, sql, schema, baseUrl: fake.url });
    t.same(await restarted.createIntent(orderId, 10_000, 'INR'), again, 'after a restart too');
    t.equal(fake.requests.length - before, 1, 'still one request');

    // The amount changed before payment (a re-quoted retry): a new Razorpay order replaces the unpaid one.
    const requoted = await payments.createIntent(orderId, 12_000, 'INR');
    t.not(requoted.providerOrderId, again.providerOrderId, 'a new Razorpay order');
    t.equal(requoted.amountPaise, 12_000);
    t.same(await payments.intentOf(orderId), requoted);
    await fake.pay(requoted.providerOrderId);
    const conflict = await rejection(t, payments.createIntent(orderId, 15_000, 'INR'), 'another amount once paid');
    t.equal(conflict.code, 'QD_ERR_IDEMPOTENCY_CONFLICT');
    t.same(await payments.createIntent(orderId, 12_000, 'INR'), requoted, 'the paid intent is still returned for its own amount');
  });

  t.test('checkout: a signed payment.captured webhook becomes a captured event', async (t) => {
    const orderId = newOrderId();
    const intent = await payments.createIntent(orderId, 34_500, 'INR');
    const { payment, order, webhooks } = await fake.pay(intent.providerOrderId, { method: 'upi' });
    t.match(payment, { entity: 'payment', status: 'captured', captured: true, order_id: intent.providerOrderId, method: 'upi', amount: 34_500 });
    t.match(payment.id, /^pay_[A-Za-z0-9]{14}$/);
    t.match(order, { status: 'paid', amount_paid: 34_500, amount_due: 0, attempts: 1 });
    t.same(
      webhooks.map((w) => w.event),
      ['payment.captured', 'order.paid'],
      'Razorpay sends payment.captured and order.paid',
    );
    const [capturedHook, paidHook] = webhooks;
    t.match(capturedHook.eventId, ID14, 'x-razorpay-event-id');
    const envelope = JSON.parse(capturedHook.body);
    t.match(envelope, { entity: 'event', account_id: fake.accountId, event: 'payment.captured', contains: ['payment'] });
    t.equal(envelope.payload.payment.entity.id, payment.id);
    t.ok(verifyRazorpaySignature(Buffer.from(capturedHook.body), capturedHook.signature, fake.webhookSecret), 'signed with the webhook secret');

    t.equal(capturedHook.status, 200);
    const [first] = rx.resultOf(capturedHook.eventId);
    t.same(first.event, { kind: 'captured', orderId, paymentId: payment.id, amountPaise: 34_500 } satisfies PaymentEvent);
    t.same(JSON.parse(first.body), { ok: true });
    // order.paid reports the same capture: acknowledged, nothing new.
    t.equal(paidHook.status, 200);
    t.same(JSON.parse(paidHook.response!), { ok: true, duplicate: true });
    t.equal(rx.resultOf(paidHook.eventId)[0].event, undefined);
    t.match(await payments.ledger.intent(orderId), { status: 'paid', paymentId: payment.id }, 'the ledger records the capture');
  });

  t.test('forged, unsigned, malformed and oversized webhooks are refused', async (t) => {
    const orderId = newOrderId();
    const intent = await payments.createIntent(orderId, 20_000, 'INR');
    const { webhooks } = await fake.pay(intent.providerOrderId, { deliver: false });
    const genuine = webhooks[0];
    const forged = await fake.forge(genuine.body, { eventId: 'FORGED00000001' });
    t.equal(forged.status, 401, 'the genuine body signed with another secret');
    const tampered = await fake.forge(genuine.body.replace('"amount":20000', '"amount":1'), { signature: genuine.signature });
    t.equal(tampered.status, 401, 'a changed body under the genuine signature');
    t.equal(rx.resultOf('FORGED00000001')[0].event, undefined, 'no event from a forgery');
    const h = hooks[0];
    t.equal((await h.handle(Buffer.from(genuine.body), { 'x-razorpay-event-id': genuine.eventId })).status, 401, 'no signature header');
    const junk = Buffer.from('{"entity":"event", not json');
    const sign = (b: Buffer) => createHmac('sha256', fake.webhookSecret).update(b).digest('hex');
    t.equal((await h.handle(junk, { 'X-Razorpay-Signature': sign(junk) })).status, 400, 'signed but not JSON: 400');
    const big = Buffer.alloc((1 << 20) + 1, 0x20);
    t.equal((await h.handle(big, { 'x-razorpay-signature': sign(big) })).status, 413, 'over 1 MiB: 413');
    const other = Buffer.from(JSON.stringify({ entity: 'event', account_id: fake.accountId, event: 'settlement.processed', contains: [], payload: {}, created_at: 1 }));
    const ignored = await h.handle(other, { 'x-razorpay-signature': sign(other), 'x-razorpay-event-id': 'OTHER000000001' });
    t.same([ignored.status, JSON.parse(ignored.body), ignored.event], [200, { ok: true, ignored: true }, undefined], 'an event QuickDash does not use');
    // The genuine delivery still goes through after all that.
    const ok = await fake.replay(genuine.eventId);
    t.equal(ok.status, 200);
    t.match(rx.resultOf(genuine.eventId)[0].event, { kind: 'captured', orderId });
  });

  t.test('a replayed event is acknowledged as a duplicate, also by another node and after a restart', async (t) => {
    const orderId = newOrderId();
    const intent = await payments.createIntent(orderId, 15_000, 'INR');
    const { webhooks } = await fake.pay(intent.providerOrderId);
    const id = webhooks[0].eventId;
    await fake.replay(id); // handled by the other handler (round-robin)
    const restarted = new RazorpayWebhooks({ secret: fake.webhookSecret, sql, schema });
    const third = await restarted.handle(Buffer.from(webhooks[0].body), { 'x-razorpay-signature': webhooks[0].signature, 'x-razorpay-event-id': id });
    const results = [...rx.resultOf(id), third];
    t.equal(results.length, 3);
    t.equal(results.filter((r) => r.event).length, 1, 'one event');
    t.same(
      results.slice(1).map((r) => [r.status, JSON.parse(r.body)]),
      [
        [200, { ok: true, duplicate: true }],
        [200, { ok: true, duplicate: true }],
      ],
    );
  });

  t.test('one event delivered several times at once yields exactly one event', async (t) => {
    const orderId = newOrderId();
    const intent = await payments.createIntent(orderId, 18_000, 'INR');
    const { webhooks } = await fake.pay(intent.providerOrderId, { fail: { code: 'BAD_REQUEST_ERROR', description: 'Card declined' }, deliver: false });
    const id = webhooks[0].eventId;
    await Promise.all(Array.from({ length: 6 }, () => fake.replay(id)));
    const results = rx.resultOf(id);
    t.equal(results.length, 6);
    t.ok(results.every((r) => r.status === 200), 'all acknowledged');
    t.equal(results.filter((r) => r.event).length, 1, 'exactly one non-duplicate');
    t.equal(results.filter((r) => JSON.parse(r.body).duplicate === true).length, 5);
  });

  t.test('a failed payment becomes a failed event with the reason; a later attempt can still pay', async (t) => {
    const orderId = newOrderId();
    const intent = await payments.createIntent(orderId, 22_000, 'INR');
    const failed = await fake.pay(intent.providerOrderId, {
      fail: { code: 'BAD_REQUEST_ERROR', description: 'Payment failed due to insufficient balance', reason: 'insufficient_balance' },
    });
    t.match(failed.payment, { status: 'failed', captured: false, error_code: 'BAD_REQUEST_ERROR', error_reason: 'insufficient_balance' });
    t.match(failed.order, { status: 'attempted', attempts: 1, amount_paid: 0 });
    t.same(failed.webhooks.map((w) => w.event), ['payment.failed']);
    t.same(rx.resultOf(failed.webhooks[0].eventId)[0].event, {
      kind: 'failed',
      orderId,
      paymentId: failed.payment.id,
      reason: 'Payment failed due to insufficient balance',
    });
    t.match(await payments.ledger.intent(orderId), { status: 'failed', lastError: 'Payment failed due to insufficient balance' });
    const retried = await fake.pay(intent.providerOrderId);
    t.match(rx.resultOf(retried.webhooks[0].eventId)[0].event, { kind: 'captured', orderId, paymentId: retried.payment.id });
    t.match(await payments.ledger.intent(orderId), { status: 'paid', paymentId: retried.payment.id });
  });

  t.test('refund: a Razorpay refund entity, once per order, then refund.processed', async (t) => {
    const orderId = newOrderId();
    const intent = await payments.createIntent(orderId, 30_000, 'INR');
    const { payment } = await fake.pay(intent.providerOrderId);
    const refund = await payments.refund(orderId, payment.id);
    t.match(refund.providerRefundId, /^rfnd_[A-Za-z0-9]{14}$/);
    t.same(refund, { orderId, providerRefundId: refund.providerRefundId, amountPaise: 30_000 });
    const req = fake.requests.at(-1)!;
    t.same([req.method, req.path, req.body], ['POST', `/v1/payments/${payment.id}/refund`, { receipt: orderId, notes: { order_id: orderId } }]);
    t.match(fake.refund(refund.providerRefundId), { entity: 'refund', amount: 30_000, currency: 'INR', payment_id: payment.id, status: 'processed' });
    t.match(fake.payment(payment.id), { status: 'refunded', amount_refunded: 30_000, refund_status: 'full' });
    const refunds = () => fake.requests.filter((r) => r.path.endsWith('/refund')).length;
    const n = refunds();
    const again = await Promise.all([payments.refund(orderId, payment.id), payments.refund(orderId, payment.id)]);
    t.same(again, [refund, refund], 'repeats return the same refund');
    t.equal(refunds(), n, 'and ask Razorpay nothing');
    // refund.processed follows the API answer.
    await waitFor(() => fake.webhooks.some((w) => w.event === 'refund.processed' && w.status !== null));
    const hook = fake.webhooks.find((w) => w.event === 'refund.processed' && JSON.parse(w.body).payload.refund.entity.id === refund.providerRefundId)!;
    t.match(JSON.parse(hook.body), { contains: ['refund', 'payment'] });
    t.same(rx.resultOf(hook.eventId)[0].event, { kind: 'refunded', orderId, refundId: refund.providerRefundId });

    // Partial refund of another order.
    const other = newOrderId();
    const i2 = await payments.createIntent(other, 50_000, 'INR');
    const p2 = await fake.pay(i2.providerOrderId);
    const part = await payments.refund(other, p2.payment.id, 12_500);
    t.equal(part.amountPaise, 12_500);
    t.match(fake.payment(p2.payment.id), { status: 'captured', amount_refunded: 12_500, refund_status: 'partial' });
    t.same(fake.requests.at(-1)!.body, { amount: 12_500, receipt: other, notes: { order_id: other } });
  });

  t.test('Razorpay times out: QD_ERR_PAYMENT_TIMEOUT within the deadline, never a hang', async (t) => {
    const slowSdk = new RazorpayPayments({ keyId: fake.keyId, keySecret: fake.keySecret, sql, schema, baseUrl: fake.url, requestTimeoutMs: 300, deadlineMs: 2000 });
    const slowRequest = new RazorpayPayments({ keyId: fake.keyId, keySecret: fake.keySecret, sql, schema, baseUrl: fake.url, requestTimeoutMs: 10_000, deadlineMs: 300 });
    fake.hang = true;
    t.teardown(() => {
      fake.hang = false;
    });
    let started = Date.now();
    const viaSdk = await rejection(t, slowSdk.createIntent(newOrderId(), 10_000, 'INR'), 'the SDK request times out');
    const sdkMs = Date.now() - started;
    t.equal(viaSdk.code, 'QD_ERR_PAYMENT_TIMEOUT');
    t.match(viaSdk.details, { timeoutMs: 300, op: 'orders.create', transport: /^(ECONNABORTED|ETIMEDOUT)$/ }, 'the axios timeout, seen through the SDK');
    t.ok(sdkMs >= 250 && sdkMs < 1500, `after the 300 ms request timeout (${sdkMs} ms)`);
    started = Date.now();
    const viaDeadline = await rejection(t, slowRequest.createIntent(newOrderId(), 10_000, 'INR'), 'the overall deadline');
    const deadlineMs = Date.now() - started;
    t.equal(viaDeadline.code, 'QD_ERR_PAYMENT_TIMEOUT');
    t.equal(viaDeadline.details.timeoutMs, 300);
    t.ok(deadlineMs >= 250 && deadlineMs < 1500, `after the 300 ms deadline (${deadlineMs} ms)`);
    t.match(viaDeadline.message, /did not answer within 300 ms/);
    fake.hang = false;
    const orderId = newOrderId();
    t.match(await slowSdk.createIntent(orderId, 10_000, 'INR'), { orderId }, 'works again once Razorpay answers');
  });

  t.test('a refund that timed out is found at Razorpay on the next attempt, not made twice', async (t) => {
    const quick = new RazorpayPayments({
      keyId: fake.keyId,
      keySecret: fake.keySecret,
      sql,
      schema,
      baseUrl: fake.url,
      requestTimeoutMs: 150,
      deadlineMs: 1000,
      refundClaimTtlMs: 400,
    });
    const orderId = newOrderId();
    const intent = await quick.createIntent(orderId, 40_000, 'INR');
    const { payment } = await fake.pay(intent.providerOrderId);
    fake.delayMs = 300; // Razorpay carries the refund out, but answers after the client gave up.
    t.teardown(() => {
      fake.delayMs = 0;
    });
    t.equal((await rejection(t, quick.refund(orderId, payment.id), 'slow refund')).code, 'QD_ERR_PAYMENT_TIMEOUT');
    const busy = await rejection(t, quick.refund(orderId, payment.id), 'retry at once');
    t.same([busy.code, busy.details.retryable], ['QD_ERR_PAYMENT_PROVIDER', true], 'the unknown outcome blocks a second request for a while');
    fake.delayMs = 0;
    await sleep(450);
    const refund = await quick.refund(orderId, payment.id);
    const atRazorpay = [...fake.requests].filter((r) => r.method === 'POST' && r.path === `/v1/payments/${payment.id}/refund`);
    t.equal(atRazorpay.length, 1, 'one refund request ever reached Razorpay');
    t.equal(fake.payment(payment.id)?.amount_refunded, 40_000, 'refunded once');
    t.equal(fake.refund(refund.providerRefundId)?.payment_id, payment.id, 'the refund made by the timed-out attempt was adopted');
    t.ok(fake.requests.some((r) => r.method === 'GET' && r.path === `/v1/payments/${payment.id}/refunds`), 'found by listing the payment refunds');
  });

  t.test('5xx, refused connections and bad credentials: QD_ERR_PAYMENT_PROVIDER with Razorpay details', async (t) => {
    fake.failNext(503);
    const orderId = newOrderId();
    const e5 = await rejection(t, payments.createIntent(orderId, 10_000, 'INR'), '503');
    t.equal(e5.code, 'QD_ERR_PAYMENT_PROVIDER');
    t.match(e5.details, { status: 503, retryable: true, razorpay: { code: 'SERVER_ERROR' } });
    t.equal(await payments.intentOf(orderId), null, 'nothing recorded');
    t.match(await payments.createIntent(orderId, 10_000, 'INR'), { orderId }, 'a retry succeeds');

    const closed = await FakeRazorpay.start();
    const deadUrl = closed.url;
    await closed.close();
    const dead = new RazorpayPayments({ keyId: 'rzp_test_x', keySecret: 'y', sql, schema, baseUrl: deadUrl });
    const refused = await rejection(t, dead.createIntent(newOrderId(), 10_000, 'INR'), 'nobody listening');
    t.equal(refused.code, 'QD_ERR_PAYMENT_PROVIDER');
    t.match(refused.details, { transport: 'ECONNREFUSED', retryable: true });

    const wrongKey = new RazorpayPayments({ keyId: fake.keyId, keySecret: 'not-the-secret', sql, schema, baseUrl: fake.url });
    const e401 = await rejection(t, wrongKey.createIntent(newOrderId(), 10_000, 'INR'), 'wrong key secret');
    t.match(e401.details, { status: 401, retryable: false, razorpay: { code: 'BAD_REQUEST_ERROR', description: 'Authentication failed' } });
    t.equal(fake.requests.at(-1)!.authorized, false, 'the fake refused the credentials');
  });

  t.test('Razorpay refuses a bad amount or currency: the error names the field', async (t) => {
    const small = await rejection(t, payments.createIntent(newOrderId(), 50, 'INR'), 'below ₹1');
    t.equal(small.code, 'QD_ERR_PAYMENT_PROVIDER');
    t.match(small.details, { field: 'amount', status: 400, retryable: false, razorpay: { code: 'BAD_REQUEST_ERROR', field: 'amount', reason: 'input_validation_failed' } });
    t.match(small.message, /amount must be atleast INR 1\.00/);
    const currency = await rejection(t, payments.createIntent(newOrderId(), 10_000, 'XYZ'), 'unsupported currency');
    t.match(currency.details, { field: 'currency', status: 400 });
    const fraction = await rejection(t, payments.createIntent(newOrderId(), 100.5, 'INR'), 'fractional paise');
    t.same([fraction.code, fraction.details.field], ['QD_ERR_INVALID_ARGUMENT', 'amountPaise'], 'refused before Razorpay');
    const p = await fake.pay((await payments.createIntent(newOrderId(), 10_000, 'INR')).providerOrderId);
    const over = await rejection(t, payments.refund(newOrderId(), p.payment.id, 20_000), 'refund above the captured amount');
    t.match(over.details, { field: 'amount', status: 400 });
  });

  t.test('a consumer that fails gets the event again on Razorpay retry (onEvent)', async (t) => {
    let failures = 1;
    const seen: PaymentEvent[] = [];
    const strict = new RazorpayWebhooks({
      secret: fake.webhookSecret,
      sql,
      schema,
      onEvent: async (e) => {
        if (failures-- > 0) throw new Error('engine unavailable');
        seen.push(e);
      },
    });
    const orderId = newOrderId();
    const intent = await payments.createIntent(orderId, 11_000, 'INR');
    const { webhooks } = await fake.pay(intent.providerOrderId, { deliver: false });
    const raw = Buffer.from(webhooks[0].body);
    const headers = { 'x-razorpay-signature': webhooks[0].signature, 'x-razorpay-event-id': webhooks[0].eventId };
    t.equal((await strict.handle(raw, headers)).status, 500, 'Razorpay is told to retry');
    const retry = await strict.handle(raw, headers);
    t.equal(retry.status, 200);
    t.match(seen, [{ kind: 'captured', orderId }], 'the retry reached the consumer');
    t.match(JSON.parse((await strict.handle(raw, headers)).body), { duplicate: true }, 'then it is a duplicate');
  });
});

t.test('on PGlite', async (t) => {
  const db = await PGlite.create();
  t.teardown(() => db.close());
  await endToEnd(t, new PgliteClient(db), 'payments');
});

async function waitFor(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(10);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// POST routes beside the sockets: the raw body reaches the handler byte for byte
// (webhook signatures depend on it), oversized bodies are refused, failures are
// answered; and a signed Razorpay webhook from the fake is verified end to end.
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import pg from 'pg';
import pino from 'pino';
import { createEngine, MemoryEventStore, SystemClock } from '../../engine/index.ts';
import { PgClient } from '../../adapters/sql/index.ts';
import { FakeRazorpay, RazorpayPayments, RazorpayWebhooks, type PaymentEvent } from '../../adapters/razorpay/index.ts';
import { developmentAuthConfig } from '../../gateway/auth.ts';
import { startGateway, type PostRoute } from '../../gateway/server.ts';

const PG_URL = process.env.QD_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';

async function gateway(t: Test, posts: PostRoute[]) {
  const engine = await createEngine({ store: new MemoryEventStore(), clock: new SystemClock(), threads: false, config: { shards: 1 } });
  const gw = await startGateway({ engine, auth: developmentAuthConfig(), logger: pino({ level: 'silent' }), posts });
  t.teardown(async () => {
    await gw.drain(0);
    await engine.close();
  });
  return gw;
}

/** POSTs with chunked encoding (no content-length), so only the running count can stop a big body. */
function post(port: number, path: string, body: Buffer, chunked = false): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'POST', headers: chunked ? { 'x-test': 'yes' } : { 'content-length': body.length, 'x-test': 'yes' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    if (chunked) {
      for (let i = 0; i < body.length; i += 16_384) req.write(body.subarray(i, i + 16_384));
      req.end();
    } else req.end(body);
  });
}

t.test('the handler gets the exact bytes and the headers; limits and failures are answered', async (t) => {
  const seen: Array<{ hash: string; header: string | undefined }> = [];
  const gw = await gateway(t, [
    {
      path: '/v1/echo',
      maxBodyBytes: 64 * 1024,
      async handle(body, headers) {
        seen.push({ hash: createHash('sha256').update(body).digest('hex'), header: headers['x-test'] });
        return { status: 200, body: JSON.stringify({ bytes: body.length }) };
      },
    },
    {
      path: '/v1/broken',
      maxBodyBytes: 1024,
      handle: () => Promise.reject(new Error('boom')),
    },
  ]);
  // Whitespace and key order matter to a signature: nothing may re-serialise the body.
  const body = Buffer.from('{ "b":1,\n  "a": [ 1, 2 ]  }\r\n');
  t.same(await post(gw.port, '/v1/echo', body), { status: 200, body: '{"bytes":29}' });
  t.same(seen[0], { hash: createHash('sha256').update(body).digest('hex'), header: 'yes' });

  const big = Buffer.alloc(48 * 1024, 7);
  t.equal((await post(gw.port, '/v1/echo', big, true)).status, 200, 'a body in many chunks is joined');
  t.equal(seen[1]?.hash, createHash('sha256').update(big).digest('hex'));

  t.equal((await post(gw.port, '/v1/echo', Buffer.alloc(65 * 1024))).status, 413, 'declared too large');
  t.equal((await post(gw.port, '/v1/echo', Buffer.alloc(200 * 1024), true)).status, 413, 'too large as it streams in');
  t.equal((await post(gw.port, '/v1/broken', Buffer.from('{}'))).status, 500, 'a failing handler is answered, not hung');
  t.equal(seen.length, 2, 'refused bodies never reached the handler');
  t.equal((await fetch(`http://127.0.0.1:${gw.port}/healthz`)).status, 200, 'and the gateway still serves');
});

t.test('a signed Razorpay webhook from the fake is verified and de-duplicated through the gateway', async (t) => {
  const schema = `qdwh_${process.pid}_${Date.now().toString(36)}`;
  const pool = new pg.Pool({ connectionString: PG_URL, max: 4 });
  t.teardown(async () => {
    await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await pool.end();
  });
  const sql = new PgClient(pool);
  const fake = await FakeRazorpay.start({ keyId: 'rzp_test_wh', keySecret: 'secret-wh', webhookSecret: 'whsec' });
  t.teardown(() => fake.close());
  const payments = new RazorpayPayments({ keyId: 'rzp_test_wh', keySecret: 'secret-wh', sql, schema, baseUrl: fake.url });
  await payments.init();
  const events: PaymentEvent[] = [];
  const webhooks = new RazorpayWebhooks({ secret: 'whsec', sql, schema, onEvent: async (e) => void events.push(e) });
  const gw = await gateway(t, [{ path: '/v1/webhooks/razorpay', maxBodyBytes: 1 << 20, handle: (b, h) => webhooks.handle(b, h) }]);
  fake.webhookUrl = `http://127.0.0.1:${gw.port}/v1/webhooks/razorpay`;

  const intent = await payments.createIntent('o-wh-1', 45_000, 'INR');
  const paid = await fake.pay(intent.providerOrderId);
  t.match(events, [{ kind: 'captured', orderId: 'o-wh-1', amountPaise: 45_000 }], 'the capture reached the handler once');
  t.equal(paid.payment.status, 'captured', 'the fake took the payment');
  t.ok(paid.webhooks.every((w) => w.status === 200), 'and the gateway answered every webhook 200');

  const forged = await post(gw.port, '/v1/webhooks/razorpay', Buffer.from(JSON.stringify({ event: 'payment.captured' })));
  t.equal(forged.status, 401, 'an unsigned webhook is refused');
  t.equal(events.length, 1, 'and changes nothing');
});

// The load generator: its framing, and a short real run against the gateway on a real engine whose counters it must agree with.
import t from 'tap';
import pino from 'pino';
import { createEngine, MemoryEventStore, SystemClock } from '../../engine/index.ts';
import { decode, developmentAuthConfig, encode, MessageType, startGateway, type Message } from '../../gateway/index.ts';
import { LoadGenerator, ordersNearRiders, runLoad } from '../../bench/loadgen/loadgen.ts';
import { clientFrame, FrameReader, Opcode, serverFrame } from '../../bench/loadgen/wire.ts';

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (seed = (seed * 1103515245 + 12345) & 0x7fffffff) & 0xff;
  return b;
}

t.test('clientFrame and FrameReader round trip every length form, masked and not', async (t) => {
  const sizes = [0, 1, 125, 126, 127, 65535, 65536, 70000];
  const frames: Buffer[] = [];
  for (const n of sizes) {
    const payload = bytes(n, n + 1);
    const frame = clientFrame(payload);
    const form = frame[1]! & 0x7f;
    const head = n < 126 ? 2 : n < 65536 ? 4 : 10;
    t.equal(frame[0], 0x80 | Opcode.binary, `${n}: FIN and opcode`);
    t.ok(frame[1]! & 0x80, `${n}: client frames are masked`);
    t.equal(form, n < 126 ? n : n < 65536 ? 126 : 127, `${n}: length form`);
    if (form === 126) t.equal(frame.readUInt16BE(2), n, `${n}: 16-bit length`);
    if (form === 127) t.equal(frame.readBigUInt64BE(2), BigInt(n), `${n}: 64-bit length`);
    t.equal(frame.length, head + 4 + n, `${n}: header, mask key, payload`);
    if (n >= 16) t.notSame(frame.subarray(head + 4), payload, `${n}: the payload is not sent in clear`);
    const [back, ...extra] = new FrameReader().push(frame);
    t.equal(extra.length, 0, `${n}: exactly one frame`);
    t.same(back, { opcode: Opcode.binary, payload }, `${n}: unmasked back to the payload`);
    const [plain] = new FrameReader().push(serverFrame(payload));
    t.same(plain, { opcode: Opcode.binary, payload }, `${n}: server frame`);
    frames.push(frame);
  }
  // The same frames split at awkward places (inside headers, keys and payloads) come back whole and in order.
  const stream = Buffer.concat(frames);
  const reader = new FrameReader();
  const got = [];
  for (let at = 0; at < stream.length; at += 997) got.push(...reader.push(stream.subarray(at, at + 997)));
  t.same(
    got.map((f) => f.payload.length),
    sizes,
    'chunked stream',
  );
  t.same(got[5]!.payload, bytes(65535, 65536), 'payload intact across chunks');

  const msg = { t: MessageType.fixes, s: 9, fixes: [[12.97, 77.59, Date.now(), 4]] } as Message;
  const [f] = new FrameReader().push(clientFrame(encode(msg)));
  t.same(decode(new Uint8Array(f!.payload), 'client'), { ok: true, msg }, 'a protocol message survives framing');
  const [text] = new FrameReader().push(clientFrame(Buffer.from('{"t":2}'), Opcode.text));
  t.same(text, { opcode: Opcode.text, payload: Buffer.from('{"t":2}') }, 'text frames keep their opcode (the JSON baseline)');
});

t.test('a short run against the gateway: acks, the engine agrees, customers see their riders move', async (t) => {
  const engine = await createEngine({
    store: new MemoryEventStore(),
    clock: new SystemClock(),
    threads: true,
    config: { shards: 1, matchWindowMs: 200 },
  });
  const gw = await startGateway({ engine, auth: developmentAuthConfig(), logger: pino({ level: 'silent' }), tuning: { positionIntervalMs: 50 } });
  const ticker = setInterval(() => void engine.tick().catch(() => undefined), 50);
  t.teardown(async () => {
    clearInterval(ticker);
    await gw.drain(0);
    await engine.close();
  });
  const orders = ordersNearRiders(5);
  for (const o of orders) await engine.createOrder({ ...o, storeId: `store-${o.orderId}`, payment: 'cod' });

  // 20 riders at 200 fixes/s: 10 a second each, inside the default per-connection rate limit. One child process.
  const r = await runLoad({ url: `ws://127.0.0.1:${gw.port}`, riders: 20, follows: orders, fixRate: 200, warmupS: 0.5, durationS: 2, processes: 1 });
  t.same(r.connect, { riders: 20, customers: 5, failures: {}, seconds: r.connect.seconds }, 'everyone connected');
  t.ok(r.prepare.complete, 'every customer saw its rider pick the order up before fixes started');
  t.equal(r.prepare.walked, 5, 'each order was walked through pickup by the rider that accepted it');
  t.same(r.window.errors, {}, 'no fix was refused');
  t.ok(r.window.acks > 300, `acks counted in the window (${r.window.acks})`);
  t.equal(r.totals.unanswered, 0, 'every frame was answered');
  t.equal(r.totals.accepted, r.totals.fixesSent, 'every fix sent was accepted');
  const c = await engine.counters();
  t.equal(c.fixesAccepted, r.totals.accepted, 'the engine accepted exactly the fixes the generator counted');
  t.ok(r.acceptedFixesPerSec > 150 && r.acceptedFixesPerSec < 250, `paced near 200 fixes/s (${r.acceptedFixesPerSec})`);
  t.ok(r.window.positions >= 20, `customers got riderPosition frames (${r.window.positions})`);
  const lat = r.latencyMs!;
  t.ok(lat.p50 >= 0 && lat.p99 < 1_000, `fix -> customer latency is plausible: p50 ${lat.p50} ms, p99 ${lat.p99} ms`);
  t.ok(r.generator.perProcess.length === 1 && r.generator.perProcess[0]!.pid !== process.pid, 'the sockets were in a child process');
});

t.test('refused upgrades count as connect failures', async (t) => {
  const engine = await createEngine({ store: new MemoryEventStore(), clock: new SystemClock(), threads: false, config: { shards: 1 } });
  const gw = await startGateway({ engine, auth: developmentAuthConfig(), logger: pino({ level: 'silent' }) });
  t.teardown(async () => {
    await gw.drain(0);
    await engine.close();
  });
  const lg = await LoadGenerator.start({
    url: `ws://127.0.0.1:${gw.port}`,
    riders: 3,
    fixRate: 10,
    durationS: 1,
    processes: 0,
    secret: 'not-the-secret-the-gateway-verifies-with-0123456789',
  });
  const c = await lg.connect();
  await lg.close();
  t.same(c.failures, { 'HTTP/1.1 401 Unauthorized': 3 }, 'tokens signed with another secret are refused at the upgrade');
  t.equal(c.riders, 0, 'no rider counted as connected');
});

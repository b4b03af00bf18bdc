// `npm start` as operators run it: a real process on the embedded store, its gRPC side answering. SIGTERM
// drains (clients told to go away, listen socket closed, engine flushed) and
// exits 0; a restarted node on the same data directory knows what was acknowledged.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { credentials } from '@grpc/grpc-js';
import { DispatchServiceClient, type QuoteDeliveryResponse } from '../../protos/gen/quickdash/v1/dispatch.ts';
import { withBearer } from '../../protos/rpc.ts';
import { developmentAuthConfig, signToken } from '../../gateway/auth.ts';
import { CloseCodes, MessageType, decode, encode, type Message, type ServerMessage } from '../../gateway/protocol.ts';

const root = new URL('../../', import.meta.url).pathname;

interface Node {
  child: ChildProcess;
  port: number;
  grpcPort: number;
  logs: Array<Record<string, unknown>>;
  exited: Promise<number | null>;
}

async function startNode(dataDir: string): Promise<Node> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bin/quickdash.ts', '--data-dir', dataDir, '--port', '0', '--grpc-port', '0', '--shards', '1'], {
    cwd: root,
    env: { ...process.env, QD_LOG_LEVEL: 'info', QD_JWT_SECRET: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Array<Record<string, unknown>> = [];
  let port0 = 0;
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let buffered = '';
  let grpcPort = 0;
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node did not start: ${JSON.stringify(logs)}`)), 30_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          const entry = JSON.parse(line) as Record<string, unknown>;
          logs.push(entry);
          if (entry.msg === 'gateway listening') port0 = entry.port as number;
          if (entry.msg === 'DispatchService listening') grpcPort = entry.port as number;
          if (port0 && grpcPort) {
            clearTimeout(timer);
            resolve(port0);
          }
        } catch {
          // not a log line
        }
      }
    });
    child.stderr!.on('data', () => {});
    void exited.then((code) => reject(new Error(`node exited with ${code} before listening`)));
  });
  return { child, port, grpcPort, logs, exited };
}

function connectRider(port: number, sub: string): Promise<{ ws: WebSocket; inbox: ServerMessage[]; closed: Promise<number> }> {
  const token = signToken({ sub, role: 'rider', ttlSec: 600 }, developmentAuthConfig());
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/ws?token=${token}`);
  const inbox: ServerMessage[] = [];
  ws.on('message', (data: Buffer) => {
    const d = decode(new Uint8Array(data), 'server');
    if (d.ok) inbox.push(d.msg);
  });
  const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, inbox, closed }));
    ws.once('error', reject);
  });
}

function quoteOver(port: number): Promise<QuoteDeliveryResponse> {
  const client = new DispatchServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
  const token = signToken({ sub: 'node-test', role: 'service', ttlSec: 600 }, developmentAuthConfig());
  return new Promise((resolve, reject) => {
    client.quoteDelivery(
      { origin: { $case: 'pickup', pickup: { lat: 12.9352, lng: 77.6245 } }, dropoff: { lat: 12.9411, lng: 77.6302 } },
      withBearer(token),
      { deadline: Date.now() + 10_000 },
      (err, res) => {
        client.close();
        if (err) reject(err);
        else resolve(res);
      },
    );
  });
}

async function waitFor<T>(find: () => T | undefined, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = find();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const ackOf = (inbox: ServerMessage[], s: number) => () =>
  inbox.find((m) => (m.t === MessageType.ack || m.t === MessageType.error) && (m as { s?: number }).s === s);

t.test('SIGTERM drains and exits 0; a restarted node remembers what was acknowledged', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'qd-node-'));
  const nodes: Node[] = [];
  t.teardown(() => {
    for (const n of nodes) n.child.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(`${dataDir}-commerce`, { recursive: true, force: true });
  });

  const first = await startNode(dataDir);
  nodes.push(first);
  t.equal(await (await fetch(`http://127.0.0.1:${first.port}/readyz`)).text(), 'ready\n');
  // Backends reach the same node over gRPC with a service token; the commerce side is up.
  const quote = await quoteOver(first.grpcPort);
  t.ok(quote.feePaise > 0 && quote.surgeFactor >= 1, 'DispatchService answers a delivery quote');
  const rider = await connectRider(first.port, 'rider-term');
  rider.ws.send(encode({ t: MessageType.online, s: 1, position: { lat: 12.9352, lng: 77.6245 }, capacity: 2 } as Message));
  const online = await waitFor(ackOf(rider.inbox, 1), 'online ack');
  t.match(online, { t: MessageType.ack, result: { status: 'available' } });
  const onlineSeq = (online as { result: { seq: number } }).result.seq;

  first.child.kill('SIGTERM');
  await waitFor(() => rider.inbox.find((m) => m.t === MessageType.goAway), 'goAway');
  t.match(rider.inbox.find((m) => m.t === MessageType.goAway), { reason: 'shutdown' }, 'the client is told to reconnect elsewhere');
  rider.ws.close();
  t.ok([CloseCodes.GOING_AWAY, 1000, 1005].includes(await rider.closed), 'the socket closes');
  t.equal(await first.exited, 0, 'the node exits 0');
  t.ok(first.logs.some((l) => l.msg === 'stopped'), 'after closing the engine');

  const second = await startNode(dataDir);
  nodes.push(second);
  const back = await connectRider(second.port, 'rider-term');
  back.ws.send(encode({ t: MessageType.offline, s: 1 } as Message));
  t.match(await waitFor(ackOf(back.inbox, 1), 'offline ack'), { t: MessageType.ack, result: { status: 'offline', seq: onlineSeq + 1 } }, 'the rider was online before the restart and its log goes on');
  back.ws.close();
  second.child.kill('SIGTERM');
  t.equal(await second.exited, 0);
});

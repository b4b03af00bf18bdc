// Shared by the gateway tests: a gateway on an in-memory engine that is always drained, and a `ws` client that keeps what it receives.
import { get } from 'node:http';
import type { Test } from 'tap';
import WebSocket from 'ws';
import pino, { type Logger } from 'pino';
import { createEngine, MemoryEventStore, VirtualClock } from '../../engine/index.ts';
import type { DispatchEngine } from '../../engine/index.ts';
import { developmentAuthConfig, signToken } from '../../gateway/auth.ts';
import { MessageType, decode, encode, type DecodeFailure, type Message, type ServerMessage } from '../../gateway/protocol.ts';
import { startGateway, type Gateway, type GatewayOptions } from '../../gateway/server.ts';
import { T0 } from '../engine/harness.ts';

export const auth = developmentAuthConfig();

export interface Client {
  ws: WebSocket;
  /** Every frame from the gateway that decodes, in arrival order. */
  inbox: ServerMessage[];
  /** Frames from the gateway that did not decode as gateway messages (there should be none). */
  undecodable: DecodeFailure[];
  /** The close code once the socket has closed (1006 when the server dropped it without a close frame), else null. */
  closeCode: number | null;
  /** Resolves with the close code when the socket closes. */
  closed: Promise<number>;
  send(msg: object): void;
  sendRaw(bytes: Uint8Array | string): void;
  /** Waits for the first message after `from` (an inbox index) that matches. */
  next(pred: (m: ServerMessage) => boolean, what: string, from?: number, timeoutMs?: number): Promise<ServerMessage>;
  /** Resolves once `done()` holds, re-checked on every frame and on close; rejects after `timeoutMs`. */
  until(done: () => boolean, what: string, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export type ClientRole = 'rider' | 'customer' | 'operations';

/** Opens /v1/ws as `sub` and waits for hello. `onFrame` sees each decoded frame before waiters do. */
export async function connect(
  port: number,
  role: ClientRole,
  sub: string,
  query = '',
  onFrame?: (m: ServerMessage) => void,
): Promise<Client> {
  const token = signToken({ sub, role, ttlSec: 600 }, auth);
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/ws?token=${token}${query}`);
  const inbox: ServerMessage[] = [];
  const undecodable: DecodeFailure[] = [];
  const waiters: Array<() => void> = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  ws.on('message', (data: Buffer) => {
    const d = decode(new Uint8Array(data), 'server');
    if (d.ok) {
      inbox.push(d.msg);
      onFrame?.(d.msg);
    } else undecodable.push(d);
    wake();
  });
  // A server that drops the connection makes `ws` emit an error before close; it is seen through `closed`.
  ws.on('error', () => undefined);
  const client: Client = {
    ws,
    inbox,
    undecodable,
    closeCode: null,
    closed: new Promise<number>((resolve) =>
      ws.once('close', (code: number) => {
        client.closeCode = code;
        resolve(code);
        wake();
      }),
    ),
    send: (msg) => ws.send(encode(msg as Message)),
    sendRaw: (bytes) => ws.send(bytes),
    async next(pred, what, from = 0, timeoutMs = 3_000) {
      let found: ServerMessage | undefined;
      await client.until(() => (found = inbox.slice(from).find(pred)) !== undefined, what, timeoutMs).catch((err: Error) => {
        throw new Error(`${err.message}; got ${JSON.stringify(inbox.slice(from))}`);
      });
      return found!;
    },
    async until(done, what, timeoutMs = 3_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (done()) return;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 50);
        });
      }
    },
    close: () =>
      new Promise((r) => {
        if (ws.readyState === WebSocket.CLOSED) return r();
        ws.once('close', () => r());
        ws.close();
      }),
  };
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused with HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });
  await client.next((m) => m.t === MessageType.hello, 'hello');
  return client;
}

/**
 * GET on the gateway over a connection closed after the answer. (fetch keeps its connection alive for seconds,
 * which holds the test process open after the gateway has drained.)
 */
export function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

/** Matches the ack or error answering command `s`. */
export const ackOf = (s: number) => (m: ServerMessage) => (m.t === MessageType.ack || m.t === MessageType.error) && (m as { s?: number }).s === s;

/**
 * An engine on a virtual clock and a gateway on a free port. Even a failing
 * test drains the gateway and closes the engine: Node would wait on an open
 * listen socket.
 */
export async function setup(
  t: Test,
  options: {
    logger?: Logger;
    tuning?: GatewayOptions['tuning'];
    /** What the gateway sees of the engine, e.g. one whose calls wait on the test (`engine` stays the real one). */
    wrap?: (engine: DispatchEngine) => DispatchEngine;
  } = {},
): Promise<{ engine: DispatchEngine; clock: VirtualClock; gw: Gateway }> {
  const clock = new VirtualClock(T0);
  const engine = await createEngine({ store: new MemoryEventStore(), clock, threads: false, config: { shards: 1, matchWindowMs: 1_000 } });
  const gw = await startGateway({
    engine: options.wrap ? options.wrap(engine) : engine,
    auth,
    logger: options.logger ?? pino({ level: 'silent' }),
    tuning: options.tuning,
  });
  t.teardown(async () => {
    await gw.drain(0);
    await engine.close();
  });
  return { engine, clock, gw };
}

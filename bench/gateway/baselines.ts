/**
 * The two servers the gateway's fix throughput is compared with, speaking
 * just enough of the app protocol for the load generator (hello, then an ack
 * per command frame with `result.accepted` for fixes):
 *
 * - bare uWS: the same native uWS build and the same msgpack settings as the
 *   gateway, decoding each frame and answering a minimal ack. Nothing is
 *   validated or stored: the ceiling of the transport and the codec.
 * - ws + JSON + Redis: what a typical Node service does: `ws`, JSON text
 *   frames, and each fix stored with GEOADD through ioredis, one await per
 *   message (a batch's GEOADDs go in one pipeline).
 *
 * Neither verifies the token: connection set-up is not what is measured.
 * The ws server reads the rider id from the token's payload for the GEOADD member.
 */
import { once } from 'node:events';
import { Packr } from 'msgpackr';
import { Redis } from 'ioredis';
import { WebSocketServer } from 'ws';
import { ErrorCodes } from '../../engine/index.ts';
import { Limits, MessageType, PROTOCOL_VERSION } from '../../gateway/index.ts';
// Not exported by gateway/index.ts; the bare server must load the very binary the gateway runs on.
import { loadUws } from '../../gateway/index.ts';

export interface BaselineServer {
  port: number;
  /** Fixes received and answered since start. */
  fixes(): number;
  close(): Promise<void>;
}

function hello(userId: string) {
  return { t: MessageType.hello, v: PROTOCOL_VERSION, now: Date.now(), role: 'rider', userId, session: 'baseline', resumed: false, lastS: 0 };
}

/** Fixes in a fix (t 2) or fixes (t 3) message; 0 for other commands. */
function fixCount(m: { t?: unknown; fixes?: unknown }): number {
  if (m.t === MessageType.fix) return 1;
  if (m.t === MessageType.fixes && Array.isArray(m.fixes)) return m.fixes.length;
  return 0;
}

export async function startBareUws(options: { host?: string; port?: number } = {}): Promise<BaselineServer> {
  const uws = loadUws();
  // The gateway's codec settings (gateway/protocol.ts): plain maps, no records.
  const packr = new Packr({ useRecords: false });
  let fixes = 0;
  const app = uws.App();
  app.ws('/v1/ws', {
    maxPayloadLength: Limits.maxFrameBytes,
    idleTimeout: Limits.idleTimeoutMs / 1000,
    sendPingsAutomatically: true,
    upgrade: (res, req, context) => {
      res.upgrade({}, req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context);
    },
    open: (ws) => {
      ws.send(packr.pack(hello('bare')), true);
    },
    message: (ws, data) => {
      let m: { t?: unknown; s?: unknown; fixes?: unknown };
      try {
        m = packr.unpack(new Uint8Array(data));
      } catch {
        return;
      }
      const n = fixCount(m);
      fixes += n;
      ws.send(packr.pack({ t: MessageType.ack, s: m.s, result: { accepted: n } }), true);
    },
  });
  const listen = await new Promise<NonNullable<Parameters<Parameters<typeof app.listen>[2]>[0]>>((resolve, reject) =>
    app.listen(options.host ?? '127.0.0.1', options.port ?? 0, (s) => (s ? resolve(s) : reject(new Error('bare uWS could not listen')))),
  );
  return {
    port: uws.us_socket_local_port(listen),
    fixes: () => fixes,
    close: async () => {
      // Open sockets die with the process; Node only aborts at exit over a listen socket uWS still holds.
      uws.us_listen_socket_close(listen);
    },
  };
}

/** The `sub` claim of a JWT, unverified. */
function subjectOf(token: string): string {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { sub?: unknown };
    return typeof payload.sub === 'string' ? payload.sub : 'anonymous';
  } catch {
    return 'anonymous';
  }
}

export async function startWsRedis(
  options: { host?: string; port?: number; redisUrl?: string; key?: string } = {},
): Promise<BaselineServer> {
  const key = options.key ?? 'quickdash:bench:riders';
  const redis = new Redis(options.redisUrl ?? 'redis://127.0.0.1:6379');
  await redis.del(key);
  let fixes = 0;
  const wss = new WebSocketServer({ host: options.host ?? '127.0.0.1', port: options.port ?? 0, path: '/v1/ws', maxPayload: Limits.maxFrameBytes });
  await once(wss, 'listening');
  wss.on('connection', (ws, req) => {
    const riderId = subjectOf(new URL(req.url ?? '/', 'http://localhost').searchParams.get('token') ?? '');
    ws.send(JSON.stringify(hello(riderId)));
    ws.on('message', async (data) => {
      let m: { t?: unknown; s?: unknown; lat?: number; lng?: number; fixes?: unknown };
      try {
        m = JSON.parse(data.toString());
      } catch {
        return;
      }
      const list: Array<[number, number]> =
        m.t === MessageType.fix ? [[m.lat!, m.lng!]] : m.t === MessageType.fixes && Array.isArray(m.fixes) ? (m.fixes as Array<[number, number]>) : [];
      try {
        if (list.length === 1) await redis.geoadd(key, list[0]![1], list[0]![0], riderId);
        else if (list.length > 1) {
          const p = redis.pipeline();
          for (const [lat, lng] of list) p.geoadd(key, lng, lat, riderId);
          await p.exec();
        }
      } catch {
        const code = 'QD_ERR_STORE_UNAVAILABLE';
        ws.send(JSON.stringify({ t: MessageType.error, s: m.s, code: ErrorCodes[code].ws, error: code, message: 'redis unavailable' }));
        return;
      }
      fixes += list.length;
      ws.send(JSON.stringify({ t: MessageType.ack, s: m.s, result: { accepted: list.length } }));
    });
  });
  const port = (wss.address() as { port: number }).port;
  return {
    port,
    fixes: () => fixes,
    close: async () => {
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((r) => wss.close(() => r()));
      await redis.quit();
    },
  };
}

/**
 * The WebSocket edge for rider and customer apps, on uWebSockets.js: binary
 * msgpack frames (gateway/protocol.ts) become engine commands; engine changes
 * become frames. Also /healthz, /readyz and /metrics on the same port.
 */
import { randomUUID } from 'node:crypto';
import pino, { type Logger } from 'pino';
import type { DispatchEngine, OrderUpdate, RiderUpdate, Unsubscribe } from '../engine/index.ts';
import { DispatchError } from '../engine/index.ts';
import { canFollowOrder, verifyToken, type AuthConfig, type Principal } from './auth.ts';
import { Registry } from './metrics.ts';
import {
  CloseCodes,
  Limits,
  MessageType,
  PROTOCOL_VERSION,
  decode,
  encode,
  errorFrame,
  fixesOf,
  gatewayErrorFrame,
  roleMaySend,
  type AckResult,
  type AppRole,
  type ClientMessage,
  type Message,
} from './protocol.ts';
import { loadUws, type Uws } from './uws.ts';

export interface GatewayOptions {
  engine: DispatchEngine;
  auth: AuthConfig;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  logger?: Logger;
}

/** What a client session remembers so a reconnecting app can replay its queue safely. */
interface Session {
  id: string;
  userId: string;
  lastS: number;
  outcomes: Map<number, Message>;
  expiresAt: number;
}

interface Conn {
  id: string;
  principal: Principal & { role: AppRole };
  session: Session;
  tokens: number;
  refilledAt: number;
  malformed: number;
  /** Commands of one connection run one after another, in `s` order. */
  chain: Promise<void>;
  follows: Map<string, Unsubscribe>;
  riderUnsub: Unsubscribe | null;
  offerOrderId: string | null;
  lastPosition: Map<string, number>;
  closed: boolean;
}

type Socket = Uws.WebSocket<Conn>;

/** Buffered bytes beyond which rider positions are skipped for a socket (status frames still go). */
const POSITION_BACKPRESSURE_BYTES = 64 * 1024;
/** Buffered bytes beyond which a reader is too slow even for status frames. */
const SLOW_CONSUMER_BYTES = 4 * 1024 * 1024;

export class Gateway {
  readonly metrics = new Registry();
  readonly #engine: DispatchEngine;
  readonly #auth: AuthConfig;
  readonly #log: Logger;
  readonly #uws = loadUws();
  readonly #app: Uws.TemplatedApp;
  readonly #sessions = new Map<string, Session>();
  readonly #byUser = new Map<string, Set<Socket>>();
  readonly #sockets = new Set<Socket>();
  #listen: Uws.us_listen_socket | null = null;
  #port = 0;
  #draining = false;
  #positionTimer: NodeJS.Timeout | null = null;
  readonly #m;

  constructor(options: GatewayOptions) {
    this.#engine = options.engine;
    this.#auth = options.auth;
    this.#log = options.logger ?? pino({ level: process.env.QD_LOG_LEVEL ?? 'info' });
    const r = this.metrics;
    this.#m = {
      connections: r.gauge('quickdash_ws_connections', 'Open WebSocket connections by role'),
      frames: r.counter('quickdash_ws_frames_total', 'Frames received by message type'),
      refused: r.counter('quickdash_ws_refused_total', 'Frames refused, by error code'),
      fixes: r.counter('quickdash_fixes_accepted_total', 'GPS fixes accepted by the engine'),
      authFailures: r.counter('quickdash_ws_auth_failures_total', 'Connections refused at upgrade, by reason'),
      commandSeconds: r.histogram('quickdash_command_seconds', 'Time from a command frame to its ack', [0.001, 0.005, 0.02, 0.1, 0.5, 2]),
    };
    this.#app = this.#uws.App();
    this.#routes();
  }

  get port(): number {
    return this.#port;
  }

  /** Starts listening; resolves with the port. */
  listen(host = '127.0.0.1', port = 0): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#app.listen(host, port, (s) => {
        if (!s) return reject(new Error(`gateway could not listen on ${host}:${port}`));
        this.#listen = s;
        this.#port = this.#uws.us_socket_local_port(s);
        this.#positionTimer = setInterval(() => void this.#pushPositions(), Limits.positionIntervalMs);
        this.#positionTimer.unref();
        this.#log.info({ port: this.#port }, 'gateway listening');
        resolve(this.#port);
      });
    });
  }

  /**
   * Stops accepting, tells every client to reconnect elsewhere, and closes
   * the listen socket (Node aborts at exit if uWS still holds one).
   */
  async drain(graceMs = 1_000): Promise<void> {
    if (this.#draining) return;
    this.#draining = true;
    if (this.#listen) {
      this.#uws.us_listen_socket_close(this.#listen);
      this.#listen = null;
    }
    if (this.#positionTimer) clearInterval(this.#positionTimer);
    for (const ws of this.#sockets) this.#send(ws, { t: MessageType.goAway, reason: 'shutdown', reconnectAfterMs: 1_000 });
    const deadline = Date.now() + graceMs;
    while (this.#sockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const ws of [...this.#sockets]) ws.end(CloseCodes.GOING_AWAY, 'going away');
    this.metrics.close();
  }

  // ------------------------------------------------------------ HTTP and upgrade

  #routes(): void {
    this.#app.get('/healthz', (res) => {
      res.writeHeader('content-type', 'text/plain').end('ok\n');
    });
    this.#app.get('/readyz', (res) => {
      if (this.#draining) res.writeStatus('503 Service Unavailable').end('draining\n');
      else res.end('ready\n');
    });
    this.#app.get('/metrics', (res) => {
      res.writeHeader('content-type', 'text/plain; version=0.0.4').end(this.metrics.render());
    });
    this.#app.ws<Conn>('/v1/ws', {
      maxPayloadLength: Limits.maxFrameBytes,
      idleTimeout: Limits.idleTimeoutMs / 1000,
      maxBackpressure: SLOW_CONSUMER_BYTES,
      sendPingsAutomatically: true,
      upgrade: (res, req, context) => this.#upgrade(res, req, context),
      open: (ws) => this.#open(ws as Socket),
      message: (ws, data, isBinary) => this.#message(ws as Socket, data, isBinary),
      close: (ws) => this.#close(ws as Socket),
    });
    this.#app.any('/*', (res) => {
      res.writeStatus('404 Not Found').end('not found\n');
    });
  }

  #upgrade(res: Uws.HttpResponse, req: Uws.HttpRequest, context: Uws.us_socket_context_t): void {
    // GET /v1/ws?token=<JWT>[&session=<id>]
    const query = new URLSearchParams(req.getQuery() ?? '');
    const key = req.getHeader('sec-websocket-key');
    const protocol = req.getHeader('sec-websocket-protocol');
    const extensions = req.getHeader('sec-websocket-extensions');
    if (this.#draining) {
      res.writeStatus('503 Service Unavailable').end('draining');
      return;
    }
    const verdict = verifyToken(query.get('token') ?? '', this.#auth);
    if (!verdict.ok) {
      this.#m.authFailures.inc({ reason: verdict.reason });
      res.writeStatus('401 Unauthorized').end(`${verdict.reason}: ${verdict.message}`);
      return;
    }
    const p = verdict.principal;
    if (p.role !== 'rider' && p.role !== 'customer') {
      this.#m.authFailures.inc({ reason: 'role' });
      res.writeStatus('403 Forbidden').end(`role ${p.role} cannot use the app socket`);
      return;
    }
    const now = Date.now();
    const wanted = query.get('session');
    let session = wanted ? this.#sessions.get(wanted) : undefined;
    // A session belongs to one user: naming someone else's starts a fresh one.
    if (!session || session.userId !== `${p.role}:${p.sub}` || session.expiresAt < now) {
      session = { id: randomUUID(), userId: `${p.role}:${p.sub}`, lastS: 0, outcomes: new Map(), expiresAt: now + Limits.sessionTtlMs };
      this.#sessions.set(session.id, session);
    }
    const conn: Conn = {
      id: randomUUID().slice(0, 8),
      principal: p as Principal & { role: AppRole },
      session,
      tokens: Limits.messageBurst,
      refilledAt: now,
      malformed: 0,
      chain: Promise.resolve(),
      follows: new Map(),
      riderUnsub: null,
      offerOrderId: null,
      lastPosition: new Map(),
      closed: false,
    };
    (conn as Conn & { resumed: boolean }).resumed = session.id === wanted;
    res.upgrade(conn, key, protocol, extensions, context);
  }

  #open(ws: Socket): void {
    const c = ws.getUserData();
    this.#sockets.add(ws);
    const userKey = c.session.userId;
    let mine = this.#byUser.get(userKey);
    if (!mine) this.#byUser.set(userKey, (mine = new Set()));
    mine.add(ws);
    // Too many connections for one user: the oldest goes.
    if (mine.size > Limits.connectionsPerUser) {
      const oldest = mine.values().next().value as Socket;
      oldest.end(CloseCodes.TOO_MANY_CONNECTIONS, 'too many connections for this user');
    }
    this.#m.connections.inc({ role: c.principal.role });
    this.#send(ws, {
      t: MessageType.hello,
      v: PROTOCOL_VERSION,
      now: Date.now(),
      role: c.principal.role,
      userId: c.principal.sub,
      session: c.session.id,
      resumed: (c as Conn & { resumed: boolean }).resumed,
      lastS: c.session.lastS,
    });
    if (c.principal.role === 'rider') c.riderUnsub = this.#engine.watchRider(c.principal.sub, (u) => this.#onRider(ws, u));
    this.#log.debug({ conn: c.id, user: userKey }, 'connection open');
  }

  #close(ws: Socket): void {
    const c = ws.getUserData();
    c.closed = true;
    this.#sockets.delete(ws);
    this.#byUser.get(c.session.userId)?.delete(ws);
    for (const unsub of c.follows.values()) unsub();
    c.follows.clear();
    c.riderUnsub?.();
    c.session.expiresAt = Date.now() + Limits.sessionTtlMs;
    this.#m.connections.dec({ role: c.principal.role });
  }

  #send(ws: Socket, msg: Message): boolean {
    const c = ws.getUserData();
    if (c.closed) return false;
    if (ws.getBufferedAmount() > SLOW_CONSUMER_BYTES) {
      ws.end(CloseCodes.SLOW_CONSUMER, 'reader too slow');
      return false;
    }
    ws.send(encode(msg), true);
    return true;
  }

  // ------------------------------------------------------------ frames in

  #message(ws: Socket, data: ArrayBuffer, isBinary: boolean): void {
    const c = ws.getUserData();
    const now = Date.now();
    // Token bucket per connection.
    c.tokens = Math.min(Limits.messageBurst, c.tokens + ((now - c.refilledAt) / 1000) * Limits.messagesPerSecond);
    c.refilledAt = now;
    if (c.tokens < 1) {
      this.#m.refused.inc({ code: 'QD_ERR_RATE_LIMITED' });
      this.#send(ws, gatewayErrorFrame('QD_ERR_RATE_LIMITED', { retryAfterMs: Math.ceil(1000 / Limits.messagesPerSecond) }));
      if (c.tokens < -Limits.messageBurst) ws.end(CloseCodes.RATE_LIMITED, 'rate limit');
      c.tokens -= 1;
      return;
    }
    c.tokens -= 1;
    // uWS reuses `data` after this call returns: decode copies what it keeps.
    const decoded = isBinary ? decode(data, 'client') : null;
    if (!decoded || !decoded.ok) {
      const frame = decoded
        ? errorFrame(decoded)
        : gatewayErrorFrame('QD_ERR_MALFORMED_FRAME', { message: 'frames are binary msgpack maps, not text' });
      this.#m.refused.inc({ code: frame.error });
      this.#send(ws, frame);
      if (++c.malformed >= Limits.malformedFramesBeforeClose) ws.end(CloseCodes.PROTOCOL_VIOLATION, 'too many malformed frames');
      return;
    }
    const msg = decoded.msg;
    this.#m.frames.inc({ type: String(msg.t) });
    if (msg.t === MessageType.ping) {
      this.#send(ws, msg.ts === undefined ? { t: MessageType.pong, now } : { t: MessageType.pong, now, ts: msg.ts });
      return;
    }
    const s = (msg as { s: number }).s;
    if (!roleMaySend(c.principal.role, msg)) {
      this.#m.refused.inc({ code: 'QD_ERR_ROLE_NOT_ALLOWED' });
      this.#send(ws, gatewayErrorFrame('QD_ERR_ROLE_NOT_ALLOWED', { s }));
      return;
    }
    const session = c.session;
    if (s <= session.lastS) {
      // A replayed command: answer what it got the first time, apply nothing again.
      const before = session.outcomes.get(s);
      if (before) this.#send(ws, { ...before, dup: true } as Message);
      else this.#send(ws, gatewayErrorFrame('QD_ERR_DUPLICATE_SEQUENCE', { s }));
      return;
    }
    session.lastS = s;
    const started = performance.now();
    c.chain = c.chain.then(async () => {
      let outcome: Message;
      try {
        outcome = { t: MessageType.ack, s, result: await this.#command(ws, c, msg) };
      } catch (err) {
        if (!(err instanceof DispatchError)) this.#log.error({ err, conn: c.id, user: c.session.userId, s }, 'command failed');
        outcome = errorFrame(err, s);
        this.#m.refused.inc({ code: (outcome as { error: string }).error });
      }
      session.outcomes.set(s, outcome);
      if (session.outcomes.size > Limits.replayWindow) session.outcomes.delete(session.outcomes.keys().next().value as number);
      this.#m.commandSeconds.observe((performance.now() - started) / 1000);
      this.#send(ws, outcome);
    });
  }

  /** One command, as the engine call it stands for. Throws DispatchError on refusal. */
  async #command(ws: Socket, c: Conn, msg: ClientMessage): Promise<AckResult> {
    const me = c.principal.sub;
    const e = this.#engine;
    switch (msg.t) {
      case MessageType.fix:
      case MessageType.fixes: {
        const r = await e.ingestFixes(fixesOf(me, msg));
        this.#m.fixes.inc(undefined, r.accepted);
        return { accepted: r.accepted, stale: r.stale, rejected: r.rejected.length };
      }
      case MessageType.online: {
        const options: Parameters<DispatchEngine['riderOnline']>[1] = {};
        if (msg.capacity !== undefined) options.capacity = msg.capacity;
        if (msg.position !== undefined) options.position = msg.position;
        if (msg.shiftEndsAt !== undefined) options.shiftEndsAt = msg.shiftEndsAt;
        const v = await e.riderOnline(me, options);
        return { status: v.status, seq: v.seq };
      }
      case MessageType.offline: {
        const v = await e.riderOffline(me);
        return { status: v.status, seq: v.seq };
      }
      case MessageType.break: {
        const v = await e.riderBreak(me, msg.on);
        return { status: v.status, seq: v.seq };
      }
      case MessageType.accept:
        return orderAck(await e.acceptOffer(me, msg.orderId));
      case MessageType.decline:
        return orderAck(await e.declineOffer(me, msg.orderId));
      case MessageType.arrived:
        return orderAck(msg.where === 'pickup' ? await e.arrivedPickup(me, msg.orderId) : await e.arrivedDropoff(me, msg.orderId));
      case MessageType.pickedUp:
        return orderAck(await e.pickedUp(me, msg.orderId));
      case MessageType.delivered: {
        const proof: { otp?: string; proofRef?: string } = {};
        if (msg.otp !== undefined) proof.otp = msg.otp;
        if (msg.proofRef !== undefined) proof.proofRef = msg.proofRef;
        return orderAck(await e.deliver(me, msg.orderId, proof));
      }
      case MessageType.follow:
        return this.#follow(ws, c, msg.orderId, msg.afterSeq);
      case MessageType.unfollow: {
        c.follows.get(msg.orderId)?.();
        c.follows.delete(msg.orderId);
        c.lastPosition.delete(msg.orderId);
        return { orderId: msg.orderId };
      }
      default:
        throw new DispatchError('QD_ERR_INTERNAL', { reason: `no handler for message ${(msg as { t: number }).t}` });
    }
  }

  /** follow {orderId, afterSeq?}: every status change after afterSeq, then live ones; only the order's own customer may. */
  async #follow(ws: Socket, c: Conn, orderId: string, afterSeq?: number): Promise<AckResult> {
    const order = await this.#engine.getOrder(orderId);
    // Someone else's order is answered as not found, so ids can't be probed.
    if (!canFollowOrder(c.principal, order)) throw new DispatchError('QD_ERR_ORDER_NOT_FOUND', { orderId });
    c.follows.get(orderId)?.();
    const unsub = this.#engine.watchOrder(orderId, (u) => this.#onOrder(ws, u), afterSeq ?? 0);
    c.follows.set(orderId, unsub);
    return { orderId, status: order.status, seq: order.seq };
  }

  // ------------------------------------------------------------ frames out

  #onOrder(ws: Socket, u: OrderUpdate): void {
    this.#send(ws, {
      t: MessageType.orderStatus,
      orderId: u.orderId,
      seq: u.seq,
      status: u.order.status,
      event: u.event,
      at: u.at,
      riderId: u.order.riderId,
    });
  }

  #onRider(ws: Socket, u: RiderUpdate): void {
    const c = ws.getUserData();
    const r = u.rider;
    if (r.offer && r.offer.orderId !== c.offerOrderId) {
      c.offerOrderId = r.offer.orderId;
      const o = r.offer;
      this.#send(ws, { t: MessageType.offer, orderId: o.orderId, storeId: o.storeId, pickup: o.pickup, dropoff: o.dropoff, expiresAt: o.expiresAt });
    } else if (!r.offer && c.offerOrderId !== null) {
      const gone = c.offerOrderId;
      c.offerOrderId = null;
      if (u.event !== 'ACCEPT' && u.event !== 'DECLINE') {
        this.#send(ws, { t: MessageType.offerGone, orderId: gone, reason: u.event === 'OFFER_EXPIRED' ? 'expired' : u.event === 'ORDER_REMOVED' ? 'cancelled' : 'void' });
      }
    }
    this.#send(ws, { t: MessageType.riderState, status: r.status, orderIds: r.orderIds.slice(0, Limits.maxOrderIds), seq: r.seq });
  }

  /** At most one position per followed order per interval; skipped for readers with a backlog. */
  async #pushPositions(): Promise<void> {
    for (const ws of this.#sockets) {
      const c = ws.getUserData();
      if (c.closed || c.follows.size === 0) continue;
      if (ws.getBufferedAmount() > POSITION_BACKPRESSURE_BYTES) continue;
      for (const orderId of c.follows.keys()) {
        try {
          const order = await this.#engine.getOrder(orderId);
          if (!order.riderId || !['assigned', 'atPickup', 'pickedUp', 'atDropoff'].includes(order.status)) continue;
          const rider = await this.#engine.getRider(order.riderId);
          const p = rider.position;
          if (!p || p.ts === c.lastPosition.get(orderId)) continue;
          c.lastPosition.set(orderId, p.ts);
          this.#send(ws, { t: MessageType.riderPosition, orderId, lat: p.lat, lng: p.lng, ts: p.ts });
        } catch (err) {
          this.#log.debug({ err, orderId }, 'position push skipped');
        }
      }
    }
  }
}

function orderAck(v: { orderId: string; status: AckResult['status']; seq: number }): AckResult {
  return { orderId: v.orderId, status: v.status, seq: v.seq };
}

/** Creates a gateway and starts listening. */
export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const g = new Gateway(options);
  await g.listen(options.host ?? '127.0.0.1', options.port ?? 0);
  return g;
}

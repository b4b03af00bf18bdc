/**
 * The WebSocket edge for rider and customer apps, on uWebSockets.js: binary
 * msgpack frames (gateway/protocol.ts) become engine commands; engine changes
 * become frames. Also /healthz, /readyz and /metrics on the same port.
 */
import { randomUUID } from 'node:crypto';
import pino, { type Logger } from 'pino';
import type { DispatchEngine, IngestResult, OrderUpdate, RiderUpdate, Unsubscribe } from '../engine/index.ts';
import { DispatchError } from '../engine/index.ts';
import { canFollowOrder, verifyToken, type AuthConfig, type Principal } from './auth.ts';
import { Registry } from './metrics.ts';
import { OperationsFeed, type OperationsFeedSettings } from './ops.ts';
import {
  CloseCodes,
  Limits,
  MessageType,
  PROTOCOL_VERSION,
  decode,
  encode,
  errorFrame,
  gatewayErrorFrame,
  packFixes,
  readFixFrame,
  roleMaySend,
  type AckResult,
  type AppRole,
  type ClientCommand,
  type ErrorMessage,
  type FixMessage,
  type FixesMessage,
  type Message,
} from './protocol.ts';
import { ReplayWindow } from './replay-window.ts';
import { loadUws, type Uws } from './uws.ts';

export interface GatewayOptions {
  engine: DispatchEngine;
  auth: AuthConfig;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  logger?: Logger;
  /** Overrides of the flow-control settings (tests shrink them to reach the edges quickly). */
  tuning?: Partial<GatewayTuning>;
  /** The operations map and feed (/ops, /v1/ops): frame interval, cell resolution, backpressure. */
  ops?: Partial<OperationsFeedSettings>;
  /** HTTP POST endpoints served beside the sockets, e.g. a payment provider's webhook. */
  posts?: PostRoute[];
}

/**
 * A POST endpoint that needs the raw body (webhook signatures are computed
 * over the exact bytes). The body is read in full, up to a cap, before
 * `handle` runs.
 */
export interface PostRoute {
  path: string;
  maxBodyBytes: number;
  handle(body: Buffer, headers: Record<string, string>): Promise<{ status: number; body: string; contentType?: string }>;
}

const STATUS_TEXT: Record<number, string> = {
  200: 'OK',
  202: 'Accepted',
  400: 'Bad Request',
  401: 'Unauthorized',
  404: 'Not Found',
  413: 'Payload Too Large',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** Flow control of one gateway. The defaults are the published Limits. */
export interface GatewayTuning {
  /** At most one riderPosition per followed order per interval. */
  positionIntervalMs: number;
  /** Buffered bytes beyond which rider positions wait (only the latest is kept); status frames still go. */
  positionBackpressureBytes: number;
  /** Buffered bytes beyond which a reader is too slow even for status frames: closed with SLOW_CONSUMER. */
  slowConsumerBytes: number;
  messagesPerSecond: number;
  messageBurst: number;
}

const DEFAULT_TUNING: GatewayTuning = {
  positionIntervalMs: Limits.positionIntervalMs,
  positionBackpressureBytes: 64 * 1024,
  slowConsumerBytes: 4 * 1024 * 1024,
  messagesPerSecond: Limits.messagesPerSecond,
  messageBurst: Limits.messageBurst,
};

/** What a client session remembers so a reconnecting app can replay its queue safely. */
/** Sessions kept per user: one per device a user plausibly runs, with room for a reconnect race. */
const SESSIONS_PER_USER = 4;

interface Session {
  id: string;
  userId: string;
  lastS: number;
  outcomes: ReplayWindow;
  /** Outcomes of commands still running, so a replay arriving meanwhile gets the same answer after them. */
  pending: Map<number, Promise<Message>>;
  /** Open connections on this session; only a session with none can expire. */
  connections: number;
  expiresAt: number;
}

/**
 * One customer socket following one order. Positions reach it pushed from the
 * rider's own fixes (leading edge at once, then the latest at the end of each
 * interval), so a fix is seen within milliseconds, never more than once an
 * interval, and a backlogged reader only ever gets the newest.
 */
interface Follow {
  ws: Socket;
  orderId: string;
  /** The rider carrying the order while it is assigned and not yet delivered; null otherwise. */
  riderId: string | null;
  unsub: Unsubscribe;
  lastSentAt: number;
  lastTs: number;
  pending: { lat: number; lng: number; ts: number } | null;
  timer: NodeJS.Timeout | null;
}

/** Order statuses during which the customer sees the rider move. */
const TRACKED = new Set(['assigned', 'atPickup', 'pickedUp', 'atDropoff']);

interface Conn {
  id: string;
  principal: Principal & { role: AppRole };
  session: Session;
  tokens: number;
  refilledAt: number;
  malformed: number;
  /** Answers of one connection, in frame order; a command other than a fix starts only after every earlier answer. */
  chain: Promise<void>;
  /**
   * What fix commands wait for before they start: the command before them, when
   * it was not a fix. null: they start at once, without waiting for the answers
   * to the fixes before them, since the engine applies a rider's fixes in the
   * order they are given to it.
   */
  fixesAfter: Promise<unknown> | null;
  follows: Map<string, Follow>;
  riderUnsub: Unsubscribe | null;
  offerOrderId: string | null;
  /** Seq of the last rider state sent on this connection. */
  riderSeq: number;
  /** Frames sent this turn, written corked at its end. */
  outbox: Uint8Array[];
  outboxBytes: number;
  closed: boolean;
}

type Socket = Uws.WebSocket<Conn>;


export class Gateway {
  readonly metrics = new Registry();
  readonly #engine: DispatchEngine;
  readonly #auth: AuthConfig;
  readonly #log: Logger;
  readonly #uws = loadUws();
  readonly #app: Uws.TemplatedApp;
  readonly #sessions = new Map<string, Session>();
  /** Session ids by user, oldest first. */
  readonly #sessionsOf = new Map<string, Set<string>>();
  #sweptAt = 0;
  #polling = false;
  /** Sockets with frames waiting for this turn's corked flush. */
  readonly #dirty = new Map<Socket, Conn>();
  #flushScheduled = false;
  readonly #byUser = new Map<string, Set<Socket>>();
  readonly #sockets = new Set<Socket>();
  /** Who follows the orders each rider carries: a rider's fix fans out to these. */
  readonly #followersOf = new Map<string, Set<Follow>>();
  readonly #tuning: GatewayTuning;
  #listen: Uws.us_listen_socket | null = null;
  #port = 0;
  #draining = false;
  #positionTimer: NodeJS.Timeout | null = null;
  readonly #m;
  /** quickdash_ws_frames_total by message type, created at a type's first frame. */
  readonly #framesOfType: Array<{ inc(): void }> = [];
  readonly #ops: OperationsFeed;
  readonly #posts: PostRoute[];

  constructor(options: GatewayOptions) {
    this.#engine = options.engine;
    this.#auth = options.auth;
    this.#log = options.logger ?? pino({ level: process.env.QD_LOG_LEVEL ?? 'info' });
    this.#tuning = { ...DEFAULT_TUNING, ...options.tuning };
    const r = this.metrics;
    this.#m = {
      connections: r.gauge('quickdash_ws_connections', 'Open WebSocket connections by role'),
      frames: r.counter('quickdash_ws_frames_total', 'Frames received by message type'),
      refused: r.counter('quickdash_ws_refused_total', 'Frames refused, by error code'),
      fixes: r.counter('quickdash_fixes_accepted_total', 'GPS fixes accepted by the engine'),
      authFailures: r.counter('quickdash_ws_auth_failures_total', 'Connections refused at upgrade, by reason'),
      commandSeconds: r.histogram('quickdash_command_seconds', 'Time from a command frame to its ack', [0.001, 0.005, 0.02, 0.1, 0.5, 2]),
      positions: r.counter('quickdash_ws_positions_total', 'Rider positions sent to customers, by how they were sent'),
      slow: r.counter('quickdash_ws_slow_consumers_total', 'Connections closed because they read too slowly'),
    };
    // Ops sockets are the feed's own: they never count as app connections.
    this.#posts = options.posts ?? [];
    this.#ops = new OperationsFeed({
      ...options.ops,
      engine: this.#engine,
      auth: this.#auth,
      metrics: r,
      logger: this.#log,
      connections: () => this.#sockets.size,
    });
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
        this.#positionTimer = setInterval(() => void this.#pollPositions(), this.#tuning.positionIntervalMs);
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
    for (const ws of [...this.#sockets]) this.#end(ws, CloseCodes.GOING_AWAY, 'going away');
    this.#ops.stop();
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
      // The engine's figures need a round trip to its shards: answer once they are in (scrape never rejects).
      let aborted = false;
      res.onAborted(() => (aborted = true));
      void this.#ops.scrape().then(() => {
        if (!aborted) res.cork(() => res.writeHeader('content-type', 'text/plain; version=0.0.4').end(this.metrics.render()));
      });
    });
    this.#app.ws<Conn>('/v1/ws', {
      // Above the protocol's limit, so an oversized frame gets QD_ERR_PAYLOAD_TOO_LARGE from decode
      // rather than a bare disconnect; only frames beyond this are cut off by uWS.
      maxPayloadLength: Limits.maxFrameBytes * 8,
      idleTimeout: Limits.idleTimeoutMs / 1000,
      // Above our own limit, so uWS never silently drops a frame: #send closes the socket first.
      maxBackpressure: this.#tuning.slowConsumerBytes + Limits.maxFrameBytes * 2,
      sendPingsAutomatically: true,
      upgrade: (res, req, context) => this.#upgrade(res, req, context),
      open: (ws) => this.#open(ws as Socket),
      message: (ws, data, isBinary) => this.#message(ws as Socket, data, isBinary),
      close: (ws) => this.#close(ws as Socket),
    });
    this.#ops.attach(this.#app);
    for (const route of this.#posts) this.#app.post(route.path, (res, req) => this.#post(route, res, req));
    this.#app.any('/*', (res) => {
      res.writeStatus('404 Not Found').end('not found\n');
    });
  }

  /**
   * Forgets sessions nobody can resume any more (expired, no connection), and
   * keeps at most a few per user, so a client reconnecting in a loop without
   * its session id cannot grow memory.
   */
  #sweepSessions(now: number): void {
    if (now - this.#sweptAt > 10_000) {
      this.#sweptAt = now;
      for (const [id, session] of this.#sessions) {
        if (session.connections === 0 && session.expiresAt < now) this.#forget(id, session);
      }
    }
  }

  #forget(id: string, session: Session): void {
    this.#sessions.delete(id);
    const ids = this.#sessionsOf.get(session.userId);
    if (!ids) return;
    ids.delete(id);
    if (ids.size === 0) this.#sessionsOf.delete(session.userId);
  }

  #keepSession(session: Session): void {
    let ids = this.#sessionsOf.get(session.userId);
    if (!ids) this.#sessionsOf.set(session.userId, (ids = new Set()));
    ids.add(session.id);
    if (ids.size <= SESSIONS_PER_USER) return;
    for (const id of ids) {
      const old = this.#sessions.get(id);
      if (old && old !== session && old.connections === 0) this.#forget(id, old);
      if (ids.size <= SESSIONS_PER_USER) return;
    }
  }

  /** Reads a POST body in full (uWS hands it over in chunks), capped, then answers with the route's handler. */
  #post(route: PostRoute, res: Uws.HttpResponse, req: Uws.HttpRequest): void {
    // Headers must be read now: uWS reuses `req` once this callback returns.
    const headers: Record<string, string> = {};
    req.forEach((k, v) => {
      headers[k] = v;
    });
    const requestId = headers['x-request-id'] || randomUUID();
    let aborted = false;
    res.onAborted(() => {
      aborted = true;
    });
    const answer = (status: number, body: string, contentType = 'application/json') => {
      if (aborted) return;
      res.cork(() => {
        res.writeStatus(`${status} ${STATUS_TEXT[status] ?? 'Unknown'}`).writeHeader('content-type', contentType).end(body);
      });
    };
    if (this.#draining) return answer(503, '{"error":"draining"}');
    const declared = Number(headers['content-length'] ?? 0);
    if (declared > route.maxBodyBytes) return answer(413, '{"error":"body too large"}');
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    res.onData((chunk, isLast) => {
      if (refused) return;
      size += chunk.byteLength;
      if (size > route.maxBodyBytes) {
        refused = true;
        return answer(413, '{"error":"body too large"}');
      }
      // uWS reuses the chunk's memory after this call: copy it.
      chunks.push(Buffer.from(chunk.slice(0)));
      if (!isLast) return;
      route.handle(Buffer.concat(chunks), headers).then(
        (r) => answer(r.status, r.body, r.contentType),
        (err: unknown) => {
          this.#log.error({ err, path: route.path, requestId }, 'POST handler failed');
          answer(500, '{"error":"internal"}');
        },
      );
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
      session = {
        id: randomUUID(),
        userId: `${p.role}:${p.sub}`,
        lastS: 0,
        outcomes: new ReplayWindow(Limits.replayWindow),
        pending: new Map(),
        connections: 0,
        expiresAt: now + Limits.sessionTtlMs,
      };
      this.#sessions.set(session.id, session);
      this.#keepSession(session);
      this.#sweepSessions(now);
    }
    const conn: Conn = {
      id: randomUUID().slice(0, 8),
      principal: p as Principal & { role: AppRole },
      session,
      tokens: this.#tuning.messageBurst,
      refilledAt: now,
      malformed: 0,
      chain: Promise.resolve(),
      fixesAfter: null,
      follows: new Map(),
      riderUnsub: null,
      offerOrderId: null,
      riderSeq: 0,
      outbox: [],
      outboxBytes: 0,
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
      this.#end(oldest, CloseCodes.TOO_MANY_CONNECTIONS, 'too many connections for this user');
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
    c.session.connections += 1;
    if (c.principal.role === 'rider') {
      c.riderUnsub = this.#engine.watchRider(c.principal.sub, (u) => this.#onRider(ws, u));
      // A (re)connecting rider learns where it stands at once: its state and any offer it holds.
      this.#engine.getRider(c.principal.sub).then(
        (rider) => this.#onRider(ws, { riderId: rider.riderId, seq: rider.seq, event: 'CONNECTED', at: Date.now(), rider }),
        () => {}, // a rider that never went online has no state yet
      );
    }
    this.#log.debug({ conn: c.id, user: userKey }, 'connection open');
  }

  #close(ws: Socket): void {
    const c = ws.getUserData();
    c.closed = true;
    this.#sockets.delete(ws);
    this.#byUser.get(c.session.userId)?.delete(ws);
    for (const f of c.follows.values()) this.#dropFollow(f);
    c.follows.clear();
    c.riderUnsub?.();
    c.session.connections -= 1;
    c.session.expiresAt = Date.now() + Limits.sessionTtlMs;
    this.#m.connections.dec({ role: c.principal.role });
  }

  #send(ws: Socket, msg: Message): boolean {
    const c = ws.getUserData();
    if (c.closed) return false;
    // A turn's frames not yet handed to the socket are no sign of a slow reader (a rider's pipelined fixes
    // are acked in one turn): they go now, and only what the socket could not send counts.
    if (this.#backlog(ws) > this.#tuning.slowConsumerBytes) this.#flushSocket(ws, c);
    if (this.#backlog(ws) > this.#tuning.slowConsumerBytes) {
      this.#m.slow.inc();
      this.#log.warn({ conn: c.id, user: c.session.userId, buffered: this.#backlog(ws) }, 'slow consumer closed');
      c.closed = true;
      ws.end(CloseCodes.SLOW_CONSUMER, 'reader too slow');
      return false;
    }
    const frame = encode(msg);
    c.outbox.push(frame);
    c.outboxBytes += frame.byteLength;
    this.#dirty.set(ws, c);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(this.#flushAll);
    }
    return true;
  }

  /**
   * Frames go out once per event-loop turn, corked: one syscall for all the
   * acks and positions a socket earned this turn instead of one per frame.
   */
  readonly #flushAll = (): void => {
    this.#flushScheduled = false;
    for (const [ws, c] of this.#dirty) this.#flushSocket(ws, c);
    this.#dirty.clear();
  };

  #flushSocket(ws: Socket, c: Conn): void {
    if (c.outbox.length === 0) return;
    const frames = c.outbox;
    c.outbox = [];
    c.outboxBytes = 0;
    if (c.closed) return;
    ws.cork(() => {
      for (const f of frames) ws.send(f, true);
    });
  }

  /** Bytes written to a socket but not yet read by its app: uWS's buffer plus this turn's frames. */
  #backlog(ws: Socket): number {
    return ws.getBufferedAmount() + ws.getUserData().outboxBytes;
  }

  /** Closes after sending what is already due, so the answer that explains the close arrives first. */
  #end(ws: Socket, code: number, reason: string): void {
    const c = ws.getUserData();
    if (c.closed) return;
    this.#flushSocket(ws, c);
    ws.end(code, reason);
  }

  // ------------------------------------------------------------ frames in

  #message(ws: Socket, data: ArrayBuffer, isBinary: boolean): void {
    const c = ws.getUserData();
    const now = Date.now();
    if (!isBinary) {
      // docs/protocol.md, Transport: a text frame is a protocol violation; answered, then closed.
      this.#answer(ws, c, gatewayErrorFrame('QD_ERR_MALFORMED_FRAME', { message: 'frames are binary msgpack maps, not text' }));
      c.chain = c.chain.then(() => this.#end(ws, CloseCodes.PROTOCOL_VIOLATION, 'text frame'));
      return;
    }
    // uWS reuses `data` after this call returns: both readers copy what they keep. Fix frames, nearly all
    // of them, are read straight into numbers; decode reads the rest, and any fix frame that reader refuses.
    const fixFrame = readFixFrame(data);
    const decoded = fixFrame ? { ok: true as const, msg: fixFrame } : decode(data, 'client');
    const claimed = decoded.ok ? (decoded.msg as { s?: number }).s : decoded.s;
    // Token bucket per connection.
    const { messageBurst, messagesPerSecond } = this.#tuning;
    c.tokens = Math.min(messageBurst, c.tokens + ((now - c.refilledAt) / 1000) * messagesPerSecond);
    c.refilledAt = now;
    c.tokens -= 1;
    if (c.tokens < 0) {
      this.#refuse(ws, c, claimed, gatewayErrorFrame('QD_ERR_RATE_LIMITED', { s: claimed, retryAfterMs: Math.ceil(1000 / messagesPerSecond) }));
      if (c.tokens < -messageBurst) c.chain = c.chain.then(() => this.#end(ws, CloseCodes.RATE_LIMITED, 'rate limit'));
      return;
    }
    if (!decoded.ok) {
      this.#refuse(ws, c, claimed, errorFrame(decoded));
      if (++c.malformed >= Limits.malformedFramesBeforeClose) {
        c.chain = c.chain.then(() => this.#end(ws, CloseCodes.PROTOCOL_VIOLATION, 'too many malformed frames'));
      }
      return;
    }
    const msg = decoded.msg;
    (this.#framesOfType[msg.t] ??= this.#m.frames.series({ type: String(msg.t) })).inc();
    if (msg.t === MessageType.ping) {
      this.#send(ws, msg.ts === undefined ? { t: MessageType.pong, now } : { t: MessageType.pong, now, ts: msg.ts });
      return;
    }
    const cmd = msg as Exclude<typeof msg, { t: typeof MessageType.ping }>;
    if (this.#draining) {
      this.#refuse(ws, c, cmd.s, errorFrame(new DispatchError('QD_ERR_SHUTTING_DOWN'), cmd.s));
      return;
    }
    if (!roleMaySend(c.principal.role, cmd)) {
      this.#refuse(ws, c, cmd.s, gatewayErrorFrame('QD_ERR_ROLE_NOT_ALLOWED', { s: cmd.s }));
      return;
    }
    if (this.#replayed(ws, c, cmd.s)) return;
    const session = c.session;
    const s = cmd.s;
    session.lastS = s;
    const started = performance.now();
    let outcome: Promise<Message>;
    let answered: Promise<Message>;
    if (cmd.t === MessageType.fix || cmd.t === MessageType.fixes) {
      const fixes = fixFrame ? fixFrame.fixes : packFixes(cmd as FixMessage | FixesMessage);
      // Started now, so a rider's frames of one turn reach the engine together; answered in order all the same.
      // A frame read by readFixFrame holds its fixes only until the next frame: copied when it has to wait.
      if (c.fixesAfter) {
        const kept = fixes.slice();
        outcome = c.fixesAfter.then(() => this.#ingest(c, s, kept));
      } else {
        outcome = this.#ingest(c, s, fixes);
      }
      answered = c.chain.then(() => outcome);
    } else {
      const other = cmd as Exclude<ClientCommand, FixMessage | FixesMessage>;
      outcome = answered = c.chain.then(() => this.#run(ws, c, other));
      const gate = outcome;
      c.fixesAfter = gate;
      void gate.then(() => {
        if (c.fixesAfter === gate) c.fixesAfter = null;
      });
    }
    session.pending.set(s, outcome);
    c.chain = answered.then((o) => {
      this.#remember(session, s, o);
      this.#m.commandSeconds.observe((performance.now() - started) / 1000);
      this.#send(ws, o);
    });
  }

  /** A command other than a fix: its ack, or the error frame that refuses it. */
  async #run(ws: Socket, c: Conn, cmd: Exclude<ClientCommand, FixMessage | FixesMessage>): Promise<Message> {
    try {
      return { t: MessageType.ack, s: cmd.s, result: await this.#command(ws, c, cmd) };
    } catch (err) {
      return this.#failed(c, cmd.s, err);
    }
  }

  /**
   * A rider's fixes, packed: handed to the engine before this returns (so `fixes` may be reused), answered
   * with their counts. Promises are chained by hand rather than awaited: this runs for nearly every frame.
   */
  #ingest(c: Conn, s: number, fixes: Float64Array): Promise<Message> {
    const me = c.principal.sub;
    // Only the newest fix is held across the wait, for the rider's followers.
    let newest = 0;
    for (let i = 4; i < fixes.length; i += 4) if (fixes[i + 2] > fixes[newest + 2]) newest = i;
    const lat = fixes[newest];
    const lng = fixes[newest + 1];
    const ts = fixes[newest + 2];
    let ingested: Promise<IngestResult>;
    try {
      ingested = this.#engine.ingestRiderFixes(me, fixes);
    } catch (err) {
      ingested = Promise.reject(err);
    }
    return ingested.then(
      (r): Message => {
        this.#m.fixes.inc(undefined, r.accepted);
        if (r.accepted > 0) this.#riderMoved(me, lat, lng, ts);
        return { t: MessageType.ack, s, result: { accepted: r.accepted, stale: r.stale, rejected: r.rejected.length } };
      },
      (err: unknown) => this.#failed(c, s, err),
    );
  }

  /** The error frame answering a refused command, counted; an error that is no refusal is logged as well. */
  #failed(c: Conn, s: number, err: unknown): ErrorMessage {
    if (!(err instanceof DispatchError)) this.#log.error({ err, conn: c.id, user: c.session.userId, s }, 'command failed');
    const frame = errorFrame(err, s);
    this.#m.refused.inc({ code: frame.error });
    return frame;
  }

  /**
   * A command at or below the session's last `s`: answered with what it got
   * the first time (after the original, if that is still running), never
   * applied again. Returns false for a new `s`.
   */
  #replayed(ws: Socket, c: Conn, s: number): boolean {
    const session = c.session;
    if (s > session.lastS) return false;
    const before = session.outcomes.outcome(s);
    const running = session.pending.get(s);
    c.chain = c.chain.then(async () => {
      const o = before ?? (running ? await running : undefined);
      this.#send(ws, o ? ({ ...o, dup: true } as Message) : gatewayErrorFrame('QD_ERR_DUPLICATE_SEQUENCE', { s }));
    });
    return true;
  }

  /** A refused frame: counted, answered in order, and, when its `s` is new, processed at that `s`. */
  #refuse(ws: Socket, c: Conn, s: number | undefined, frame: ErrorMessage): void {
    this.#m.refused.inc({ code: frame.error });
    if (s !== undefined && Number.isInteger(s) && s > 0 && s <= Limits.maxClientSeq) {
      if (this.#replayed(ws, c, s)) return;
      c.session.lastS = s;
      this.#remember(c.session, s, frame);
    }
    this.#answer(ws, c, frame);
  }

  /** Sends after every answer already due on this connection, so answers keep the order of the frames. */
  #answer(ws: Socket, c: Conn, msg: Message): void {
    c.chain = c.chain.then(() => void this.#send(ws, msg));
  }

  #remember(session: Session, s: number, outcome: Message): void {
    session.pending.delete(s);
    session.outcomes.remember(s, outcome);
  }

  /** One command, as the engine call it stands for. Throws DispatchError on refusal. */
  async #command(ws: Socket, c: Conn, msg: Exclude<ClientCommand, FixMessage | FixesMessage>): Promise<AckResult> {
    const me = c.principal.sub;
    const e = this.#engine;
    switch (msg.t) {
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
        const f = c.follows.get(msg.orderId);
        if (f) this.#dropFollow(f);
        c.follows.delete(msg.orderId);
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
    const previous = c.follows.get(orderId);
    if (previous) this.#dropFollow(previous);
    const f: Follow = { ws, orderId, riderId: null, unsub: () => {}, lastSentAt: 0, lastTs: 0, pending: null, timer: null };
    c.follows.set(orderId, f);
    this.#setCarrier(f, TRACKED.has(order.status) ? order.riderId : null);
    f.unsub = this.#engine.watchOrder(orderId, (u) => this.#onOrder(f, u), afterSeq ?? 0);
    return { orderId, status: order.status, seq: order.seq };
  }

  /** Files a follow under the rider now carrying its order (or none). */
  #setCarrier(f: Follow, riderId: string | null): void {
    if (f.riderId === riderId) return;
    if (f.riderId !== null) {
      const set = this.#followersOf.get(f.riderId);
      set?.delete(f);
      if (set?.size === 0) this.#followersOf.delete(f.riderId);
    }
    f.riderId = riderId;
    if (riderId !== null) {
      let set = this.#followersOf.get(riderId);
      if (!set) this.#followersOf.set(riderId, (set = new Set()));
      set.add(f);
    } else {
      f.pending = null;
    }
  }

  #dropFollow(f: Follow): void {
    f.unsub();
    if (f.timer) clearTimeout(f.timer);
    f.timer = null;
    this.#setCarrier(f, null);
  }

  // ------------------------------------------------------------ frames out

  #onOrder(f: Follow, u: OrderUpdate): void {
    const ws = f.ws;
    this.#setCarrier(f, TRACKED.has(u.order.status) ? u.order.riderId : null);
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
    // The state read at connect and the live feed may cross: never step back.
    if (r.seq <= c.riderSeq) return;
    c.riderSeq = r.seq;
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

  /** A rider's fixes were accepted: its followers see the newest one. */
  #riderMoved(riderId: string, lat: number, lng: number, ts: number): void {
    const followers = this.#followersOf.get(riderId);
    if (!followers) return;
    for (const f of followers) this.#offerPosition(f, { lat, lng, ts }, 'push');
  }

  /**
   * Sends a position now if the interval since the last one has passed and the
   * reader keeps up; otherwise keeps it as the one to send at the next chance,
   * replacing any older one: a slow reader only ever gets the latest.
   */
  #offerPosition(f: Follow, p: { lat: number; lng: number; ts: number }, how: 'push' | 'poll' | 'trailing'): void {
    const c = f.ws.getUserData();
    if (c.closed || p.ts <= f.lastTs) return;
    const now = Date.now();
    const due = f.lastSentAt + this.#tuning.positionIntervalMs;
    if (now >= due && this.#backlog(f.ws) <= this.#tuning.positionBackpressureBytes) {
      f.pending = null;
      f.lastSentAt = now;
      f.lastTs = p.ts;
      this.#m.positions.inc({ how });
      this.#send(f.ws, { t: MessageType.riderPosition, orderId: f.orderId, lat: p.lat, lng: p.lng, ts: p.ts });
      return;
    }
    f.pending = p;
    if (f.timer) return;
    f.timer = setTimeout(() => {
      f.timer = null;
      const latest = f.pending;
      f.pending = null;
      if (latest && f.riderId !== null) this.#offerPosition(f, latest, 'trailing');
    }, now < due ? due - now : Math.max(this.#tuning.positionIntervalMs / 4, 10));
    f.timer.unref();
  }

  /**
   * Fixes that did not come through this gateway (another gateway, a backend,
   * the simulator) are picked up once an interval for followers that have had
   * nothing pushed for longer than that.
   */
  async #pollPositions(): Promise<void> {
    // One pass at a time: a slow engine must not stack passes on top of each other.
    if (this.#polling) return;
    this.#polling = true;
    try {
      await this.#pollOnce();
    } finally {
      this.#polling = false;
    }
  }

  async #pollOnce(): Promise<void> {
    const now = Date.now();
    const stale = this.#tuning.positionIntervalMs * 2;
    for (const [riderId, followers] of this.#followersOf) {
      // A rider connected here has its fixes pushed as they arrive; polling it would only repeat them.
      if (this.#byUser.get(`rider:${riderId}`)?.size) continue;
      let waiting = false;
      for (const f of followers) if (now - f.lastSentAt > stale) waiting = true;
      if (!waiting) continue;
      try {
        const p = (await this.#engine.getRider(riderId)).position;
        if (!p) continue;
        for (const f of followers) if (now - f.lastSentAt > stale) this.#offerPosition(f, p, 'poll');
      } catch (err) {
        this.#log.debug({ err, riderId }, 'position poll skipped');
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

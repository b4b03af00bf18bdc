/**
 * One logical connection to the gateway, kept alive across sockets: it
 * reconnects with backoff, resumes the session, numbers commands, replays the
 * unanswered ones with their original `s`, sends what was queued offline
 * within the gateway's rate limit, and pings when idle. RiderClient and
 * CustomerClient build on it; apps never see it directly.
 *
 * Nothing Node-only at module level: the `ws` package is imported lazily, and
 * only when neither an injected constructor nor globalThis.WebSocket exists.
 */
import type {
  AckResult,
  AppRole,
  ClientCommand,
  FixesMessage,
  FixMessage,
  FixTuple,
  GoAwayMessage,
  GoAwayReason,
  HelloMessage,
} from '../protocol.ts';
import { Limits, MessageType, PROTOCOL_VERSION, CloseCodes, decodeFrame, encodeFrame, type AppServerMessage } from './codec.ts';
import { Emitter } from './emitter.ts';
import { QuickDashError } from './errors.ts';

// ---------------------------------------------------------------- WebSocket

/** A listener property the DOM and `ws` type differently; compared bivariantly like a method. */
type Handler<E> = { bivarianceHack(event: E): void }['bivarianceHack'];

/** What the client uses of a WebSocket: the browser's, `ws`'s, or an injected one. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  /** `ws` only: drops the TCP connection without the closing handshake. */
  terminate?(): void;
  onopen: Handler<unknown> | null;
  onmessage: Handler<{ data: unknown }> | null;
  onerror: Handler<unknown> | null;
  onclose: Handler<{ code: number; reason: string }> | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

const CLOSED = 3;
const noop = () => undefined;

let wsPackage: Promise<WebSocketConstructor> | null = null;

/**
 * Node 20 has no global WebSocket. The `ws` package is imported only here,
 * dynamically, so a browser bundle never executes it (its browser entry is a
 * stub that throws).
 */
function loadWsPackage(): Promise<WebSocketConstructor> {
  wsPackage ??= import('ws').then((mod) => {
    const m = mod as { default?: unknown; WebSocket?: unknown };
    return (m.default ?? m.WebSocket) as WebSocketConstructor;
  });
  return wsPackage;
}

/** HTTP status of a refused upgrade, when the WebSocket implementation says (`ws` does; browsers never do). */
function upgradeStatus(event: unknown): number | undefined {
  const e = event as { message?: unknown; error?: { message?: unknown } } | null;
  const text = typeof e?.message === 'string' ? e.message : typeof e?.error?.message === 'string' ? e.error.message : '';
  const m = /Unexpected server response: (\d{3})/.exec(text);
  return m ? Number(m[1]) : undefined;
}

// ---------------------------------------------------------------- Options and events

export interface ClientOptions {
  /** The gateway's socket URL, e.g. `wss://api.example.com/v1/ws`; a function is asked again on every attempt. */
  url: string | (() => string | Promise<string>);
  /** The app's JWT, or a function returning it: called on every attempt, so a refreshed token is used on reconnect. */
  token: string | (() => string | Promise<string>);
  /** A WebSocket constructor; default globalThis.WebSocket, else the `ws` package (Node). */
  WebSocket?: WebSocketConstructor;
  /** First reconnect delay; doubles per failed attempt (with jitter) up to maxReconnectDelayMs. Default 1000. */
  minReconnectDelayMs?: number;
  /** Default 30000. */
  maxReconnectDelayMs?: number;
  /** A socket that has not said hello within this is dropped and retried. Default 10000. */
  connectTimeoutMs?: number;
  /** Ping after this long without sending or receiving (the gateway closes idle sockets after 60 s). Default 25000. */
  pingIntervalMs?: number;
  /** A socket silent for pingIntervalMs + pongTimeoutMs is considered dead and replaced. Default 10000. */
  pongTimeoutMs?: number;
  /** A command unanswered this long on an open socket: the socket is replaced and the command replayed. Default 30000. */
  commandTimeoutMs?: number;
  /** Client-side token bucket, a little under the gateway's (20/s, burst 60) so a replayed queue is never refused. */
  rateLimit?: { perSecond?: number; burst?: number };
  /** Commands held while disconnected; beyond this new commands are refused with QD_CLIENT_QUEUE_FULL. Default 1000. */
  maxQueuedCommands?: number;
  /** After goAway, how long to wait for answers to commands in flight before closing. Default 2000. */
  goAwayGraceMs?: number;
  /** Source of jitter, in [0, 1). Default Math.random. */
  random?: () => number;
}

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface OpenInfo {
  session: string;
  /** True when the gateway still held the session: answers to replayed commands come from its memory. */
  resumed: boolean;
  /** Highest command `s` the gateway had processed in the session. */
  lastS: number;
  userId: string;
  role: AppRole;
  /** Server clock at hello, epoch ms. */
  serverTime: number;
}

export interface DisconnectInfo {
  code: number;
  reason: string;
  /** Whether the socket had completed its hello. */
  wasOpen: boolean;
  /** HTTP status of a refused upgrade, where the platform reports it. */
  status?: number;
  /** Delay before the next attempt; null when the client stopped. */
  reconnectInMs: number | null;
}

export interface ConnectionEvents {
  state: { state: ConnectionState; previous: ConnectionState };
  open: OpenInfo;
  disconnect: DisconnectInfo;
  goAway: { reason: GoAwayReason; reconnectAfterMs: number };
  error: QuickDashError;
}

/** What an ack resolves a command with: the gateway's result plus its `s` and whether it came from the replay memory. */
export type CommandResult = AckResult & { s: number; dup: boolean };
export interface FixReport {
  accepted: number;
  stale: number;
  rejected: number;
}

type Outcome = { ok: true; result: CommandResult } | { ok: false; error: QuickDashError };
type Body<M> = M extends unknown ? Omit<M, 's'> : never;
/** A command as the app builds it; the connection adds `s` when it first sends it. */
export type CommandBody = Body<Exclude<ClientCommand, FixMessage | FixesMessage>>;

interface Entry {
  body: CommandBody | null;
  /** Fix entries: the batch; frozen once `s` is assigned, so a replay sends the same frame. */
  fixes: FixTuple[] | null;
  /** 0 until first sent; then kept for every replay. */
  s: number;
  /** Socket generation it was last sent on. */
  sentOn: number;
  sentAt: number;
  /** Resent after a reconnect (true) or failed with QD_CLIENT_DISCONNECTED (false: per-socket commands like follow). */
  replay: boolean;
  /** Fix batches wait until then for more fixes, unless something is queued behind them. */
  openUntil: number;
  waiters: Array<(o: Outcome) => void>;
}

interface Hooks {
  emit<K extends keyof ConnectionEvents>(event: K, payload: ConnectionEvents[K]): void;
  /** Role-specific gateway frames (offer, orderStatus, ...). */
  push(msg: AppServerMessage): void;
  /** After hello, before the queue is sent. */
  opened(info: OpenInfo): void;
  /** The client stopped for good. */
  closed(error: QuickDashError): void;
  /** A fix batch was answered. */
  fixesAnswered(outcome: Outcome): void;
}

const now = () => performance.now();

async function valueOf(v: string | (() => string | Promise<string>)): Promise<string> {
  return typeof v === 'function' ? v() : v;
}

// ---------------------------------------------------------------- Connection

export class Connection {
  readonly #role: AppRole;
  readonly #hooks: Hooks;
  readonly #opt: Required<Omit<ClientOptions, 'WebSocket' | 'rateLimit'>> & { WebSocket?: WebSocketConstructor; perSecond: number; burst: number };

  #state: ConnectionState = 'idle';
  #ws: WebSocketLike | null = null;
  /** Bumped per socket: entries sent on an older socket count as unsent. */
  #gen = 0;
  /** Bumped per attempt, so a slow token provider cannot resurrect an abandoned attempt. */
  #attemptId = 0;
  /** Consecutive attempts without a hello, for backoff. */
  #failures = 0;
  #stopped: QuickDashError | null = null;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #pumpTimer: ReturnType<typeof setTimeout> | null = null;
  #keepalive: ReturnType<typeof setInterval> | null = null;
  #upgradeStatus: number | undefined;
  #info: OpenInfo | null = null;
  #connectWaiters: Array<{ resolve(info: OpenInfo): void; reject(err: QuickDashError): void }> = [];

  #lastS = 0;
  readonly #queue: Entry[] = [];
  readonly #inflight = new Map<number, Entry>();
  #queuedFixes = 0;
  #droppedFixes = 0;

  #tokens = 0;
  #tokensAt = 0;
  #pausedUntil = 0;
  #draining = false;
  #goAwayDelay: number | null = null;
  #lastSentAt = 0;
  #lastReceivedAt = 0;
  #lastPingAt = 0;
  #rtt: number | null = null;
  #serverOffset = 0;

  constructor(options: ClientOptions, role: AppRole, hooks: Hooks) {
    this.#role = role;
    this.#hooks = hooks;
    this.#opt = {
      url: options.url,
      token: options.token,
      WebSocket: options.WebSocket,
      minReconnectDelayMs: options.minReconnectDelayMs ?? 1_000,
      maxReconnectDelayMs: options.maxReconnectDelayMs ?? 30_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      pingIntervalMs: options.pingIntervalMs ?? 25_000,
      pongTimeoutMs: options.pongTimeoutMs ?? 10_000,
      commandTimeoutMs: options.commandTimeoutMs ?? 30_000,
      perSecond: options.rateLimit?.perSecond ?? Limits.messagesPerSecond * 0.9,
      burst: options.rateLimit?.burst ?? Limits.messageBurst - 10,
      maxQueuedCommands: options.maxQueuedCommands ?? 1_000,
      goAwayGraceMs: options.goAwayGraceMs ?? 2_000,
      random: options.random ?? Math.random,
    };
    if (!(this.#opt.perSecond > 0) || !(this.#opt.burst >= 1)) throw new RangeError('rateLimit needs perSecond > 0 and burst >= 1');
  }

  get state(): ConnectionState {
    return this.#state;
  }
  get session(): string | null {
    return this.#info?.session ?? null;
  }
  get rttMs(): number | null {
    return this.#rtt;
  }
  /** Commands and fix batches not yet answered (queued or in flight). */
  get pending(): number {
    return this.#queue.length;
  }
  /** Sent on the current socket and not yet answered. */
  get inFlight(): number {
    return this.#inflight.size;
  }
  get droppedFixes(): number {
    return this.#droppedFixes;
  }
  /** The gateway's clock, estimated from the last hello. */
  serverNow(): number {
    return Date.now() + this.#serverOffset;
  }

  /** Starts connecting (once); resolves at the first hello, rejects if the client stops before. */
  connect(): Promise<OpenInfo> {
    if (this.#stopped) return Promise.reject(this.#stopped);
    if (this.#state === 'open' && this.#info) return Promise.resolve(this.#info);
    const p = new Promise<OpenInfo>((resolve, reject) => this.#connectWaiters.push({ resolve, reject }));
    if (this.#state === 'idle') void this.#attempt();
    return p;
  }

  /**
   * Stops for good: unanswered commands are rejected with QD_CLIENT_CLOSED
   * and the socket is closed. Resolves once it is.
   */
  async close(): Promise<void> {
    if (this.#stopped) return;
    const ws = this.#ws;
    this.#ws = null;
    this.#stop(QuickDashError.client('QD_CLIENT_CLOSED'), false);
    if (ws) await closeSocket(ws);
  }

  /** Queues a command; resolves with its ack, rejects with its error. */
  command(body: CommandBody, replay = true): Promise<CommandResult> {
    if (this.#stopped) return Promise.reject(this.#stopped);
    if (!replay && this.#state !== 'open') return Promise.reject(QuickDashError.client('QD_CLIENT_DISCONNECTED'));
    if (this.#queue.length - this.#fixEntries() >= this.#opt.maxQueuedCommands) {
      return Promise.reject(QuickDashError.client('QD_CLIENT_QUEUE_FULL'));
    }
    return new Promise<CommandResult>((resolve, reject) => {
      const settle = (o: Outcome) => (o.ok ? resolve(o.result) : reject(o.error));
      this.#queue.push({ body, fixes: null, s: 0, sentOn: -1, sentAt: 0, replay, openUntil: 0, waiters: [settle] });
      this.#pump();
    });
  }

  /**
   * Queues GPS fixes: consecutive fixes share a frame (up to maxFixesPerFrame),
   * held up to `batchMs` for more. Beyond `maxQueued`, the oldest unsent fixes
   * are dropped: a stale position is worth less than a fresh one, and commands
   * are never dropped.
   */
  queueFixes(tuples: FixTuple[], batchMs: number, maxQueued: number): void {
    if (this.#stopped) {
      this.#droppedFixes += tuples.length;
      return;
    }
    const t = now();
    for (const tuple of tuples) {
      let tail = this.#queue[this.#queue.length - 1];
      if (!tail || !tail.fixes || tail.s !== 0 || tail.fixes.length >= Limits.maxFixesPerFrame) {
        tail = { body: null, fixes: [], s: 0, sentOn: -1, sentAt: 0, replay: true, openUntil: t + batchMs, waiters: [] };
        this.#queue.push(tail);
      }
      tail.fixes!.push(tuple);
      this.#queuedFixes++;
    }
    while (this.#queuedFixes > maxQueued) this.#dropOldestFix();
    this.#pump();
  }

  /** Sends held fix batches now; resolves with the summed acks of every fix queued so far. */
  flushFixes(): Promise<FixReport> {
    const entries = this.#queue.filter((e) => e.fixes);
    for (const e of entries) e.openUntil = 0;
    this.#pump();
    return Promise.all(entries.map((e) => new Promise<Outcome>((r) => e.waiters.push(r)))).then((outcomes) => {
      const sum: FixReport = { accepted: 0, stale: 0, rejected: 0 };
      for (const o of outcomes) {
        if (!o.ok) throw o.error;
        sum.accepted += o.result.accepted ?? 0;
        sum.stale += o.result.stale ?? 0;
        sum.rejected += o.result.rejected ?? 0;
      }
      return sum;
    });
  }

  // ------------------------------------------------------------ sockets

  #setState(state: ConnectionState): void {
    const previous = this.#state;
    if (previous === state) return;
    this.#state = state;
    this.#hooks.emit('state', { state, previous });
  }

  async #attempt(): Promise<void> {
    const id = ++this.#attemptId;
    this.#setState(this.#info ? 'reconnecting' : 'connecting');
    let ws: WebSocketLike;
    try {
      const [url, token, Ctor] = await Promise.all([valueOf(this.#opt.url), valueOf(this.#opt.token), this.#webSocketClass()]);
      if (this.#stopped || id !== this.#attemptId) return;
      const target = new URL(url);
      target.searchParams.set('token', token);
      // The gateway dedupes replayed commands only within the session they were first sent in.
      if (this.#info) target.searchParams.set('session', this.#info.session);
      ws = new Ctor(target.toString());
    } catch (err) {
      // A provider that throws, a bad URL, no WebSocket: reported, then retried like a failed connection.
      if (this.#stopped || id !== this.#attemptId) return;
      const why = err instanceof Error ? err.message : String(err);
      this.#hooks.emit('error', QuickDashError.client('QD_CLIENT_CONNECT_FAILED', `could not open a connection: ${why}`));
      this.#schedule(this.#backoff());
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.#ws = ws;
    this.#gen++;
    this.#upgradeStatus = undefined;
    ws.onopen = noop;
    ws.onmessage = (ev) => {
      if (ws === this.#ws) this.#onFrame(ev.data);
    };
    ws.onerror = (ev) => {
      if (ws === this.#ws) this.#upgradeStatus ??= upgradeStatus(ev);
    };
    ws.onclose = (ev) => {
      if (ws === this.#ws) this.#onClose(ev.code, ev.reason);
    };
    this.#timer = setTimeout(() => this.#abandon('no hello from the gateway'), this.#opt.connectTimeoutMs);
  }

  async #webSocketClass(): Promise<WebSocketConstructor> {
    if (this.#opt.WebSocket) return this.#opt.WebSocket;
    const native = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (native) return native;
    return loadWsPackage();
  }

  #clearTimers(): void {
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#pumpTimer) clearTimeout(this.#pumpTimer);
    if (this.#keepalive) clearInterval(this.#keepalive);
    this.#timer = this.#pumpTimer = this.#keepalive = null;
  }

  /** The current socket ended (closed by either side, or abandoned). */
  #onClose(code: number, reason: string): void {
    const ws = this.#ws;
    if (!ws) return;
    detach(ws);
    this.#ws = null;
    this.#gen++;
    this.#clearTimers();
    const wasOpen = this.#state === 'open';
    this.#draining = false;
    this.#inflight.clear();
    // Per-socket commands (follow, unfollow) mean nothing on the next socket: their owners redo them.
    for (const e of this.#queue.filter((x) => !x.replay)) this.#settle(e, { ok: false, error: QuickDashError.client('QD_CLIENT_DISCONNECTED') });
    const status = this.#upgradeStatus;
    const info = { code, reason, wasOpen, ...(status !== undefined ? { status } : {}) };
    if (status === 401 || status === 403) {
      this.#hooks.emit('disconnect', { ...info, reconnectInMs: null });
      this.#stop(QuickDashError.client('QD_CLIENT_AUTH_REFUSED', `the gateway refused the token (HTTP ${status})`, { status }), true);
      return;
    }
    if (code === CloseCodes.PROTOCOL_VIOLATION) {
      this.#hooks.emit('disconnect', { ...info, reconnectInMs: null });
      this.#stop(QuickDashError.client('QD_CLIENT_PROTOCOL_VIOLATION', `closed by the gateway: ${reason || 'protocol violation'}`), true);
      return;
    }
    const delay = this.#goAwayDelay ?? this.#backoff();
    this.#goAwayDelay = null;
    this.#hooks.emit('disconnect', { ...info, reconnectInMs: delay });
    this.#schedule(delay);
  }

  #schedule(delayMs: number): void {
    this.#setState(this.#info ? 'reconnecting' : 'connecting');
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.#attempt();
    }, delayMs);
  }

  /** Exponential backoff with jitter: half the step fixed, half random, so clients spread out but never retry at once. */
  #backoff(): number {
    const step = Math.min(this.#opt.maxReconnectDelayMs, this.#opt.minReconnectDelayMs * 2 ** Math.min(this.#failures, 30));
    this.#failures++;
    return Math.round(step / 2 + (this.#opt.random() * step) / 2);
  }

  /** Drops a socket that is dead or useless without waiting for a closing handshake, then reconnects. */
  #abandon(reason: string): void {
    const ws = this.#ws;
    if (!ws) return;
    this.#onClose(1006, reason);
    killSocket(ws);
  }

  /** Stops for good: rejects everything unanswered with `error`. */
  #stop(error: QuickDashError, report: boolean): void {
    this.#stopped = error;
    this.#clearTimers();
    const ws = this.#ws;
    this.#ws = null;
    if (ws) killSocket(ws);
    this.#inflight.clear();
    for (const e of [...this.#queue]) this.#settle(e, { ok: false, error });
    for (const w of this.#connectWaiters.splice(0)) w.reject(error);
    this.#setState('closed');
    this.#hooks.closed(error);
    if (report) this.#hooks.emit('error', error);
  }

  // ------------------------------------------------------------ frames in

  #onFrame(data: unknown): void {
    this.#lastReceivedAt = now();
    const d = decodeFrame(data);
    if (!d.ok) {
      // A message type from a newer gateway is not an error: apps ignore what they do not know.
      if (!d.unknown) this.#hooks.emit('error', QuickDashError.client('QD_CLIENT_BAD_FRAME', `unreadable frame from the gateway: ${d.reason}`));
      return;
    }
    const m = d.msg;
    switch (m.t) {
      case MessageType.hello:
        this.#onHello(m);
        return;
      case MessageType.ack:
        this.#onAnswer(m.s, { ok: true, result: { ...m.result, s: m.s, dup: m.dup === true } });
        return;
      case MessageType.error: {
        const error = QuickDashError.fromFrame(m);
        if (m.s !== undefined) {
          this.#onAnswer(m.s, { ok: false, error });
          return;
        }
        if (m.error === 'QD_ERR_RATE_LIMITED') {
          // The refused frame is not named (no `s`); if it was a command, commandTimeoutMs replays it on a new socket.
          this.#tokens = 0;
          this.#pausedUntil = now() + (m.retryAfterMs ?? 1_000);
        }
        this.#hooks.emit('error', error);
        return;
      }
      case MessageType.pong:
        if (m.ts !== undefined) this.#rtt = Date.now() - m.ts;
        return;
      case MessageType.goAway:
        this.#onGoAway(m);
        return;
      default:
        if (this.#state === 'open') this.#hooks.push(m);
    }
  }

  #onHello(m: HelloMessage): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    if (m.v !== PROTOCOL_VERSION) {
      this.#stop(QuickDashError.client('QD_CLIENT_VERSION', `the gateway speaks protocol ${m.v}, this client ${PROTOCOL_VERSION}`), true);
      return;
    }
    if (m.role !== this.#role) {
      this.#stop(QuickDashError.client('QD_CLIENT_AUTH_REFUSED', `the token is for a ${m.role}, this client is for a ${this.#role}`), true);
      return;
    }
    const t = now();
    this.#failures = 0;
    this.#serverOffset = m.now - Date.now();
    // A session the app resumed may have seen higher numbers than this client: keep `s` above them.
    if (m.lastS > this.#lastS) this.#lastS = m.lastS;
    // The gateway gives every socket a full bucket.
    this.#tokens = this.#opt.burst;
    this.#tokensAt = t;
    this.#pausedUntil = 0;
    this.#draining = false;
    this.#lastSentAt = this.#lastReceivedAt = this.#lastPingAt = t;
    this.#info = { session: m.session, resumed: m.resumed, lastS: m.lastS, userId: m.userId, role: m.role, serverTime: m.now };
    const period = Math.max(20, Math.min(this.#opt.pingIntervalMs, this.#opt.pongTimeoutMs) / 2);
    this.#keepalive = setInterval(() => this.#tick(), period);
    this.#setState('open');
    this.#hooks.opened(this.#info);
    this.#hooks.emit('open', this.#info);
    for (const w of this.#connectWaiters.splice(0)) w.resolve(this.#info);
    this.#pump();
  }

  #onAnswer(s: number, outcome: Outcome): void {
    const e = this.#inflight.get(s);
    if (!e) return;
    this.#inflight.delete(s);
    if (e.fixes) this.#hooks.fixesAnswered(outcome);
    this.#settle(e, outcome);
    if (this.#draining && this.#inflight.size === 0) this.#leave();
  }

  #settle(e: Entry, outcome: Outcome): void {
    const i = this.#queue.indexOf(e);
    if (i < 0) return;
    this.#queue.splice(i, 1);
    if (e.fixes && e.s === 0) this.#queuedFixes -= e.fixes.length;
    for (const w of e.waiters) w(outcome);
  }

  #onGoAway(m: GoAwayMessage): void {
    this.#hooks.emit('goAway', { reason: m.reason, reconnectAfterMs: m.reconnectAfterMs });
    // The protocol: wait reconnectAfterMs plus up to as much again, so a fleet does not return at once.
    this.#goAwayDelay = Math.round(m.reconnectAfterMs + this.#opt.random() * m.reconnectAfterMs);
    this.#draining = true;
    if (this.#inflight.size === 0) {
      this.#leave();
      return;
    }
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#leave(), this.#opt.goAwayGraceMs);
  }

  /** Closes a socket told to go away; what is queued waits for the next one. */
  #leave(): void {
    const ws = this.#ws;
    if (!ws) return;
    if (this.#timer) clearTimeout(this.#timer);
    // The gateway answers the close at once; if it does not, do not wait for it.
    this.#timer = setTimeout(() => this.#abandon('close not acknowledged'), 1_000);
    try {
      ws.close(1000, 'going away');
    } catch {
      this.#abandon('close failed');
    }
  }

  // ------------------------------------------------------------ frames out

  #fixEntries(): number {
    let n = 0;
    for (const e of this.#queue) if (e.fixes) n++;
    return n;
  }

  #dropOldestFix(): void {
    const e = this.#queue.find((x) => x.fixes && x.s === 0)!;
    e.fixes!.shift();
    this.#queuedFixes--;
    this.#droppedFixes++;
    if (e.fixes!.length === 0) this.#settle(e, { ok: true, result: { s: 0, dup: false, accepted: 0, stale: 0, rejected: 0 } });
  }

  /**
   * Tops a batch up from the unsent batches right behind it: fixes queued
   * offline, trimmed from the front, leave partly filled batches, and every
   * frame costs a rate-limit token.
   */
  #fillBatch(e: Entry): void {
    const i = this.#queue.indexOf(e);
    while (e.fixes!.length < Limits.maxFixesPerFrame) {
      const n = this.#queue[i + 1];
      if (!n || !n.fixes || n.s !== 0) return;
      e.fixes!.push(...n.fixes.splice(0, Limits.maxFixesPerFrame - e.fixes!.length));
      if (n.fixes.length > 0) return;
      this.#queue.splice(i + 1, 1);
      e.waiters.push(...n.waiters);
    }
  }

  #refill(t: number): void {
    this.#tokens = Math.min(this.#opt.burst, this.#tokens + ((t - this.#tokensAt) / 1000) * this.#opt.perSecond);
    this.#tokensAt = t;
  }

  #pumpAt(t: number, at: number): void {
    if (this.#pumpTimer) clearTimeout(this.#pumpTimer);
    this.#pumpTimer = setTimeout(() => {
      this.#pumpTimer = null;
      this.#pump();
    }, Math.max(1, Math.ceil(at - t)));
  }

  /** Sends what is queued, in order, as far as the token bucket allows. */
  #pump(): void {
    if (this.#state !== 'open' || this.#draining || !this.#ws) return;
    const t = now();
    if (t < this.#pausedUntil) return this.#pumpAt(t, this.#pausedUntil);
    this.#refill(t);
    for (let i = 0; i < this.#queue.length; i++) {
      const e = this.#queue[i];
      if (e.sentOn === this.#gen) continue;
      // The newest fix batch may wait for more fixes; anything queued behind it sends it at once.
      if (e.fixes && e.s === 0 && i === this.#queue.length - 1 && e.openUntil > t && e.fixes.length < Limits.maxFixesPerFrame) {
        return this.#pumpAt(t, e.openUntil);
      }
      if (this.#tokens < 1) return this.#pumpAt(t, t + ((1 - this.#tokens) / this.#opt.perSecond) * 1000);
      if (!this.#transmit(e, t)) return;
    }
  }

  #transmit(e: Entry, t: number): boolean {
    const ws = this.#ws!;
    if (e.fixes && e.s === 0) this.#fillBatch(e);
    if (e.s === 0) {
      // Numbered on first send, so `s` follows send order; a replay keeps it (the gateway dedupes on it).
      e.s = ++this.#lastS;
      if (e.fixes) this.#queuedFixes -= e.fixes.length;
    }
    let msg: ClientCommand;
    if (e.fixes) {
      const f = e.fixes;
      msg = f.length === 1 ? { t: MessageType.fix, s: e.s, lat: f[0][0], lng: f[0][1], ts: f[0][2], seq: f[0][3] } : { t: MessageType.fixes, s: e.s, fixes: f };
    } else {
      msg = { ...e.body!, s: e.s } as ClientCommand;
    }
    try {
      ws.send(encodeFrame(msg));
    } catch {
      this.#abandon('send failed');
      return false;
    }
    this.#tokens -= 1;
    e.sentOn = this.#gen;
    e.sentAt = t;
    this.#inflight.set(e.s, e);
    this.#lastSentAt = t;
    return true;
  }

  /** Keepalive: ping when idle, replace a socket that went silent or stopped answering. */
  #tick(): void {
    const ws = this.#ws;
    if (!ws || this.#state !== 'open') return;
    const t = now();
    const { pingIntervalMs, pongTimeoutMs, commandTimeoutMs } = this.#opt;
    if (t - this.#lastReceivedAt > pingIntervalMs + pongTimeoutMs) return this.#abandon('no frame from the gateway');
    for (const e of this.#inflight.values()) {
      if (t - e.sentAt > commandTimeoutMs) return this.#abandon('a command went unanswered');
      break;
    }
    const idle = t - this.#lastSentAt >= pingIntervalMs || t - this.#lastReceivedAt >= pingIntervalMs;
    if (!idle || t - this.#lastPingAt < pingIntervalMs) return;
    this.#refill(t);
    if (this.#tokens < 1) return;
    try {
      ws.send(encodeFrame({ t: MessageType.ping, ts: Date.now() }));
    } catch {
      return this.#abandon('send failed');
    }
    this.#tokens -= 1;
    this.#lastSentAt = this.#lastPingAt = t;
  }
}

// ---------------------------------------------------------------- socket helpers

/** Stops listening to a socket; an 'error' with no listener would crash a Node process using `ws`. */
function detach(ws: WebSocketLike): void {
  ws.onopen = noop;
  ws.onmessage = noop;
  ws.onerror = noop;
  ws.onclose = noop;
}

function killSocket(ws: WebSocketLike): void {
  detach(ws);
  try {
    if (ws.terminate) ws.terminate();
    else ws.close(1000, 'client gave up on the connection');
  } catch {
    // Already closed.
  }
}

/** Closes with a handshake, but gives up after a second: close() must not hang on a dead network. */
function closeSocket(ws: WebSocketLike): Promise<void> {
  return new Promise((resolve) => {
    detach(ws);
    if (ws.readyState === CLOSED) return resolve();
    const timer = setTimeout(() => {
      killSocket(ws);
      resolve();
    }, 1_000);
    ws.onclose = () => {
      clearTimeout(timer);
      resolve();
    };
    try {
      ws.close(1000, 'client closed');
    } catch {
      clearTimeout(timer);
      killSocket(ws);
      resolve();
    }
  });
}

/** Base of RiderClient and CustomerClient: the connection, its lifecycle and its events. */
export abstract class BaseClient<E extends ConnectionEvents> extends Emitter<E> {
  protected readonly conn: Connection;

  constructor(options: ClientOptions, role: AppRole) {
    super();
    this.conn = new Connection(options, role, {
      emit: (event, payload) => this.emit(event, payload as E[typeof event]),
      push: (m) => this.onPush(m),
      opened: (info) => this.onOpened(info),
      closed: (err) => this.onClosed(err),
      fixesAnswered: (o) => (o.ok ? this.onFixes(o.result) : this.emit('error', o.error as E['error'])),
    });
  }

  /** Connects; resolves at the first hello. Commands issued before are queued. */
  connect(): Promise<OpenInfo> {
    return this.conn.connect();
  }
  /** Closes for good; unanswered commands are rejected with QD_CLIENT_CLOSED. */
  close(): Promise<void> {
    return this.conn.close();
  }
  get state(): ConnectionState {
    return this.conn.state;
  }
  /** The gateway session id (from the last hello). */
  get session(): string | null {
    return this.conn.session;
  }
  /** Round-trip time of the last ping. */
  get rttMs(): number | null {
    return this.conn.rttMs;
  }
  /** Commands (and fix batches) not yet answered, queued or in flight. */
  get pending(): number {
    return this.conn.pending;
  }
  /** Sent on the current socket and not yet answered. */
  get inFlight(): number {
    return this.conn.inFlight;
  }
  /** The gateway's clock, from the last hello: compare offer expiries with it, not with the phone's clock. */
  serverNow(): number {
    return this.conn.serverNow();
  }

  protected abstract onPush(msg: AppServerMessage): void;
  protected onOpened(_info: OpenInfo): void {}
  protected onClosed(_error: QuickDashError): void {}
  protected onFixes(_result: CommandResult): void {}
}

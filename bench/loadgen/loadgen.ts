/**
 * Load generator for the rider/customer gateway. Riders and customers speak
 * the app protocol over raw TCP WebSockets (bench/loadgen/wire.ts): a client
 * library such as `ws` costs more per frame than uWS does, so it could not
 * drive the gateway to its limit, and one process holds at most ~19,900
 * sockets (RLIMIT_NOFILE), so sockets live in several child processes.
 *
 * Riders connect with a token, wait for `hello`, go online at a position,
 * accept offers (and walk the order through pickup), then send fixes, each a
 * few metres from the last, stamped Date.now() when sent: at an aggregate
 * rate (paced) or as fast as acks come back (closed loop, `fixRate: 0`).
 * Customers follow an order as its customer and time each riderPosition as
 * `Date.now() - ts`: the generator and the server share the machine's clock.
 *
 * Measured: accepted fixes per second (the sum of `result.accepted` over
 * acks), errors by code, connect failures by reason, fix-to-customer latency
 * and the generator's own CPU, so a run shows when the generator, not the
 * server, was the limit.
 */
import type { Socket } from 'node:net';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { Packr } from 'msgpackr';
import type { LatLng } from '../../engine/index.ts';
import { developmentAuthConfig, encode, MessageType, signToken, type Message } from '../../gateway/index.ts';
import { percentile } from '../lib.ts';
import { RpcChild } from './rpc.ts';
import { clientFrame, FrameReader, Opcode, openRaw, type Frame } from './wire.ts';

export type Encoding = 'msgpack' | 'json';

/** A customer of the run: connects as `customerId` and follows `orderId`. */
export interface FollowSpec {
  customerId: string;
  orderId: string;
}

export interface LoadOptions {
  /** ws://host:port[/path]; the path defaults to /v1/ws. */
  url: string;
  riders: number;
  /** One customer per entry. */
  follows?: FollowSpec[];
  /** Fixes per second over all riders; 0 runs closed-loop: each rider keeps `inflight` frames unanswered, to saturate the server. */
  fixRate: number;
  /** Fixes per frame: 1 sends `fix`, more send `fixes`. */
  batch?: number;
  /** Closed loop: frames each rider keeps unanswered. Paced: a rider with this many unanswered frames loses its turn (counted as deferred). */
  inflight?: number;
  warmupS?: number;
  durationS: number;
  /** HS256 secret the server verifies tokens with; default the public development secret. */
  secret?: string;
  /** 'json' sends text frames with JSON (the ws + JSON baseline); the gateway itself speaks msgpack. */
  encoding?: Encoding;
  /** Socket processes; 0 runs in this process. Default: one per `maxSocketsPerProcess` sockets. */
  processes?: number;
  maxSocketsPerProcess?: number;
  /** 127.0.0.x source addresses to spread connections over (each has its own ~28k ephemeral ports); loopback servers only. */
  sources?: number;
  /** Upgrades in flight per process. */
  connectConcurrency?: number;
  riderPrefix?: string;
  /** Riders start uniformly in this disc (riderStart). */
  centre?: LatLng;
  radiusM?: number;
  /** Metres per fix. */
  stepM?: number;
  /** `online.capacity`: 1 gives each order its own rider. */
  capacity?: number;
  /** Riders accept offers, then say arrived and pickedUp, so customers follow a moving rider. */
  walk?: boolean;
  /** How long prepare() waits for riders online and customers seeing their rider. */
  readyTimeoutS?: number;
  log?: (line: string) => void;
}

type Resolved = Required<Omit<LoadOptions, 'follows' | 'processes' | 'log' | 'secret'>> & {
  follows: FollowSpec[];
  processes: number;
  secret: string | undefined;
  log: ((line: string) => void) | undefined;
};

export const DEFAULT_CENTRE: LatLng = { lat: 12.9716, lng: 77.5946 };
export const DEFAULT_RADIUS_M = 8_000;
/** A rider walks back and forth this far either side of its start, so a long run does not carry it across the city. */
const LEG_M = 300;
/** Order statuses in which the gateway sends the customer rider positions. */
const TRACKED = new Set(['assigned', 'atPickup', 'pickedUp', 'atDropoff']);
/** prepare() stops waiting after this long without progress (several matcher windows). */
const STALL_MS = 15_000;

function resolve(o: LoadOptions): Resolved {
  const follows = o.follows ?? [];
  const sockets = o.riders + follows.length;
  const maxPer = o.maxSocketsPerProcess ?? 15_000;
  const r: Resolved = {
    url: o.url,
    riders: o.riders,
    follows,
    fixRate: o.fixRate,
    batch: o.batch ?? 1,
    inflight: o.inflight ?? (o.fixRate === 0 ? 2 : 32),
    warmupS: o.warmupS ?? 2,
    durationS: o.durationS,
    secret: o.secret,
    log: o.log,
    encoding: o.encoding ?? 'msgpack',
    processes: o.processes ?? Math.max(1, Math.ceil(sockets / maxPer)),
    maxSocketsPerProcess: maxPer,
    sources: o.sources ?? 16,
    connectConcurrency: o.connectConcurrency ?? 200,
    riderPrefix: o.riderPrefix ?? 'lg-r',
    centre: o.centre ?? DEFAULT_CENTRE,
    radiusM: o.radiusM ?? DEFAULT_RADIUS_M,
    stepM: o.stepM ?? 3,
    capacity: o.capacity ?? 1,
    walk: o.walk ?? true,
    readyTimeoutS: o.readyTimeoutS ?? 60 + sockets / 500,
  };
  if (!(Number.isInteger(r.riders) && r.riders >= 0)) throw new RangeError(`riders must be a non-negative integer, got ${o.riders}`);
  if (!(Number.isInteger(r.batch) && r.batch >= 1 && r.batch <= 500)) throw new RangeError(`batch must be 1..500, got ${r.batch}`);
  if (!(r.fixRate >= 0 && Number.isFinite(r.fixRate))) throw new RangeError(`fixRate must be >= 0, got ${r.fixRate}`);
  if (!(Number.isInteger(r.inflight) && r.inflight >= 1)) throw new RangeError(`inflight must be a positive integer, got ${r.inflight}`);
  if (!(r.durationS > 0)) throw new RangeError(`durationS must be > 0, got ${r.durationS}`);
  if (!(Number.isInteger(r.processes) && r.processes >= 0)) throw new RangeError(`processes must be a non-negative integer, got ${o.processes}`);
  if (r.processes > 0 && Math.ceil(sockets / r.processes) > maxPer) {
    throw new RangeError(`${sockets} sockets over ${r.processes} processes exceed ${maxPer} per process (the file descriptor limit)`);
  }
  return r;
}

// ------------------------------------------------------------ geography

/** A uniform number in [0, 1) from an integer: riders start at the same places in every run and process. */
function hash01(n: number): number {
  let x = (n + 0x6d2b79f5) | 0;
  x = Math.imul(x ^ (x >>> 15), x | 1);
  x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
  return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
}

/** `p` moved `northM` metres north and `eastM` east. */
export function offsetM(p: LatLng, northM: number, eastM: number): LatLng {
  return { lat: p.lat + northM / 111_320, lng: p.lng + eastM / (111_320 * Math.cos((p.lat * Math.PI) / 180)) };
}

/** Where rider `index` goes online: uniform in the disc, the same in every run, so orders can be placed near it. */
export function riderStart(index: number, centre: LatLng = DEFAULT_CENTRE, radiusM = DEFAULT_RADIUS_M): LatLng {
  const r = radiusM * Math.sqrt(hash01(2 * index + 1));
  const a = 2 * Math.PI * hash01(2 * index + 2);
  return offsetM(centre, r * Math.cos(a), r * Math.sin(a));
}

/** Order i picks up 150 m from rider i's start and delivers 2.5 km on (far beyond a rider's walk, so it stays en route). */
export function ordersNearRiders(
  count: number,
  options: { prefix?: string; customerPrefix?: string; centre?: LatLng; radiusM?: number } = {},
): Array<FollowSpec & { pickup: LatLng; dropoff: LatLng }> {
  const out: Array<FollowSpec & { pickup: LatLng; dropoff: LatLng }> = [];
  for (let i = 0; i < count; i++) {
    const pickup = offsetM(riderStart(i, options.centre, options.radiusM), 150, 0);
    out.push({
      orderId: `${options.prefix ?? 'lg-o'}${i}`,
      customerId: `${options.customerPrefix ?? 'lg-c'}${i}`,
      pickup,
      dropoff: offsetM(pickup, 2_000, 1_500),
    });
  }
  return out;
}

// ------------------------------------------------------------ one process's sockets

interface ShardSpec {
  opts: Omit<Resolved, 'follows' | 'url' | 'log'>;
  host: string;
  port: number;
  path: string;
  /** Source addresses only make sense towards a loopback server. */
  loopback: boolean;
  riders: Array<{ id: string; index: number; conn: number }>;
  customers: Array<FollowSpec & { conn: number }>;
  /** This process's share of the fix rate, in frames per second; 0 for closed loop. */
  frameRate: number;
}

type CommandKind = 'online' | 'accept' | 'arrived' | 'pickedUp' | 'follow';

interface Agent {
  kind: 'rider' | 'customer';
  socket: Socket | null;
  reader: FrameReader;
  s: number;
  /** Commands awaiting their answer, by s (fix frames are not in it). */
  commands: Map<number, CommandKind>;
  hello: (() => void) | null;
}

interface Rider extends Agent {
  kind: 'rider';
  id: string;
  index: number;
  conn: number;
  online: boolean;
  seq: number;
  lat: number;
  lng: number;
  dLat: number;
  dLng: number;
  legLeft: number;
  legSteps: number;
  /** Fix frames sent and not yet answered. */
  inflight: number;
  /** When each of them was sent (performance.now()), oldest first: answers come in order. */
  sentAt: number[];
  /** Closed loop: frames to send once the current chunk of answers is read. */
  owed: number;
}

interface Customer extends Agent {
  kind: 'customer';
  id: string;
  orderId: string;
  conn: number;
  status: string | null;
  riderId: string | null;
}

interface Counts {
  framesSent: number;
  fixesSent: number;
  /** Answers to fix frames: acks plus errors. */
  answers: number;
  acks: number;
  /** Acks with result.accepted > 0 ... */
  acksAccepting: number;
  /** ... and the sum of their accepted counts. */
  accepted: number;
  stale: number;
  rejected: number;
  errors: Record<string, number>;
  deferred: number;
  positions: number;
}

const counts = (): Counts => ({
  framesSent: 0,
  fixesSent: 0,
  answers: 0,
  acks: 0,
  acksAccepting: 0,
  accepted: 0,
  stale: 0,
  rejected: 0,
  errors: {},
  deferred: 0,
  positions: 0,
});

function bump(map: Record<string, number>, key: string, n = 1): void {
  map[key] = (map[key] ?? 0) + n;
}

export interface ConnectReport {
  riders: number;
  customers: number;
  failures: Record<string, number>;
}

export interface ProgressReport {
  riders: number;
  online: number;
  offers: number;
  accepted: number;
  walked: number;
  customers: number;
  following: number;
  /** Customers whose order is carried by a rider (and picked up, when walking). */
  ready: number;
  /** Refused preparation commands, by `command:code`. */
  errors: Record<string, number>;
}

export interface ShardRunResult {
  pid: number;
  windowS: number;
  window: Counts;
  totals: Counts;
  /** Fix-to-customer latencies seen in the window, ms. */
  latencies: Float64Array;
  /** Fix frame sent to its answer, ms. */
  ackLatencies: Float64Array;
  cpuUs: number;
  /** Event-loop utilisation in the window: near 1, the generator itself was the limit. */
  elu: number;
  /** How late this process's event loop ran timers in the window (monitorEventLoopDelay, 10 ms resolution). */
  loopDelayMs: { p99: number; max: number };
  unanswered: number;
  /** Close frames by code, and 'dropped': sockets that ended without our closing them. */
  closes: Record<string, number>;
}

/** The riders and customers of one process. Runs in a child (worker.ts) or, for small runs, in the caller. */
export class LoadShard {
  readonly #spec: ShardSpec;
  readonly #riders: Rider[];
  readonly #customers: Customer[];
  readonly #packr = new Packr({ useRecords: false });
  readonly #json: boolean;
  readonly #auth;
  #totals = counts();
  #window: Counts | null = null;
  #latencies: number[] = [];
  #ackLatencies: number[] = [];
  #running = false;
  #closing = false;
  #cursor = 0;
  readonly #closes: Record<string, number> = {};
  readonly #prepErrors: Record<string, number> = {};
  #offers = 0;
  #accepted = 0;
  #walked = 0;
  #following = 0;

  constructor(spec: ShardSpec) {
    this.#spec = spec;
    const o = spec.opts;
    this.#json = o.encoding === 'json';
    const dev = developmentAuthConfig();
    this.#auth = o.secret ? { ...dev, keys: { hs256Secret: o.secret } } : dev;
    // seq must rise across sessions: starting from the clock lets a later run reuse rider ids on the same node.
    const seq0 = Date.now() * 16;
    const legSteps = Math.max(1, Math.round(LEG_M / o.stepM));
    this.#riders = spec.riders.map((r) => {
      const start = riderStart(r.index, o.centre, o.radiusM);
      const heading = 2 * Math.PI * hash01(~r.index);
      const step = offsetM(start, o.stepM * Math.cos(heading), o.stepM * Math.sin(heading));
      return {
        ...agent('rider'),
        kind: 'rider' as const,
        id: r.id,
        index: r.index,
        conn: r.conn,
        online: false,
        seq: seq0,
        lat: start.lat,
        lng: start.lng,
        dLat: step.lat - start.lat,
        dLng: step.lng - start.lng,
        legLeft: legSteps,
        legSteps,
        inflight: 0,
        sentAt: [],
        owed: 0,
      };
    });
    this.#customers = spec.customers.map((c) => ({
      ...agent('customer'),
      kind: 'customer' as const,
      id: c.customerId,
      orderId: c.orderId,
      conn: c.conn,
      status: null,
      riderId: null,
    }));
  }

  // ---------------------------------------------------------- connect

  async connect(): Promise<ConnectReport> {
    const failures: Record<string, number> = {};
    const all: Array<Rider | Customer> = [...this.#riders, ...this.#customers];
    let next = 0;
    const lane = async () => {
      while (next < all.length) {
        const a = all[next++]!;
        const why = await this.#open(a);
        if (why) bump(failures, why);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.#spec.opts.connectConcurrency, all.length) }, lane));
    return {
      riders: this.#riders.filter((r) => r.socket).length,
      customers: this.#customers.filter((c) => c.socket).length,
      failures,
    };
  }

  /** Opens one connection and waits for its hello; returns why it failed, or null. */
  async #open(a: Rider | Customer): Promise<string | null> {
    const { host, port, path, loopback, opts } = this.#spec;
    const token = signToken({ sub: a.id, role: a.kind, ttlSec: 6 * 3600 }, this.#auth);
    const localAddress = loopback ? `127.0.0.${1 + (a.conn % opts.sources)}` : undefined;
    let socket: Socket;
    let rest: Buffer;
    try {
      ({ socket, rest } = await openRaw({ host, port, path: `${path}?token=${token}`, ...(localAddress ? { localAddress } : {}) }));
    } catch (err) {
      const e = err as Error & { code?: string };
      return e.code ?? e.message.replace(/^upgrade refused: /, '');
    }
    const hello = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 10_000);
      a.hello = () => {
        clearTimeout(timer);
        resolve(true);
      };
    });
    a.socket = socket;
    socket.on('data', (chunk: Buffer) => this.#onData(a, chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      a.socket = null;
      a.hello?.();
      if (!this.#closing) bump(this.#closes, 'dropped');
      if (a.kind === 'rider') {
        a.online = false;
        a.inflight = 0;
        a.sentAt = [];
      }
    });
    if (rest.length > 0) this.#onData(a, rest);
    const ok = (await hello) && a.socket !== null;
    a.hello = null;
    if (!ok) {
      socket.destroy();
      a.socket = null;
      return 'no hello';
    }
    return null;
  }

  // ---------------------------------------------------------- frames in

  #onData(a: Rider | Customer, chunk: Buffer): void {
    const frames: Frame[] = a.reader.push(chunk);
    for (const f of frames) {
      if (f.opcode === Opcode.binary || f.opcode === Opcode.text) {
        let m: Record<string, unknown>;
        try {
          m = f.opcode === Opcode.binary ? this.#packr.unpack(f.payload) : JSON.parse(f.payload.toString('utf8'));
        } catch {
          bump(this.#totals.errors, 'unreadable frame');
          continue;
        }
        if (a.kind === 'rider') this.#onRider(a, m);
        else this.#onCustomer(a, m);
      } else if (f.opcode === Opcode.ping) {
        // uWS pings idle sockets and closes those that do not answer; customers only read.
        a.socket?.write(clientFrame(f.payload, Opcode.pong));
      } else if (f.opcode === Opcode.close) {
        bump(this.#closes, String(f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005));
      }
    }
    if (a.kind === 'rider' && a.owed > 0) this.#flushOwed(a);
  }

  #onRider(r: Rider, m: Record<string, unknown>): void {
    switch (m.t) {
      case MessageType.hello:
        r.hello?.();
        return;
      case MessageType.ack:
      case MessageType.error: {
        const s = m.s as number | undefined;
        const kind = s === undefined ? undefined : r.commands.get(s);
        if (kind !== undefined) {
          r.commands.delete(s!);
          this.#onCommandAnswer(r, kind, m);
          return;
        }
        // A refusal without s (rate limit) answers the oldest frame: a connection's frames are answered in order.
        if (s === undefined && r.inflight === 0) {
          bump(this.#totals.errors, String(m.error ?? m.code));
          return;
        }
        r.inflight = Math.max(0, r.inflight - 1);
        const sent = r.sentAt.shift();
        this.#onFixAnswer(m, this.#totals);
        if (this.#window) {
          this.#onFixAnswer(m, this.#window);
          if (sent !== undefined) this.#ackLatencies.push(performance.now() - sent);
        }
        if (this.#running && this.#spec.frameRate === 0) r.owed++;
        return;
      }
      case MessageType.offer:
        this.#offers++;
        if (typeof m.orderId === 'string') this.#command(r, 'accept', { t: MessageType.accept, orderId: m.orderId });
        return;
      default:
        return;
    }
  }

  #onFixAnswer(m: Record<string, unknown>, c: Counts): void {
    c.answers++;
    if (m.t === MessageType.ack) {
      c.acks++;
      const result = m.result as { accepted?: number; stale?: number; rejected?: number } | undefined;
      const n = result?.accepted ?? 0;
      if (n > 0) {
        c.acksAccepting++;
        c.accepted += n;
      }
      c.stale += result?.stale ?? 0;
      c.rejected += result?.rejected ?? 0;
    } else {
      bump(c.errors, String(m.error ?? m.code));
    }
  }

  #onCommandAnswer(a: Rider | Customer, kind: CommandKind, m: Record<string, unknown>): void {
    if (m.t === MessageType.error) {
      bump(this.#prepErrors, `${kind}:${String(m.error ?? m.code)}`);
      // Already on shift (a rider id reused against the same node): its fixes will be taken all the same.
      if (a.kind === 'rider' && kind === 'online' && typeof m.state === 'string' && m.state !== 'offline') a.online = true;
      return;
    }
    const result = (m.result ?? {}) as { orderId?: string; status?: string };
    if (a.kind === 'rider') {
      if (kind === 'online') a.online = true;
      else if (kind === 'accept') {
        this.#accepted++;
        if (this.#spec.opts.walk && result.orderId) {
          // Sent back to back: the gateway runs a connection's commands in order.
          this.#command(a, 'arrived', { t: MessageType.arrived, orderId: result.orderId, where: 'pickup' });
          this.#command(a, 'pickedUp', { t: MessageType.pickedUp, orderId: result.orderId });
        }
      } else if (kind === 'pickedUp') this.#walked++;
    } else if (kind === 'follow') {
      this.#following++;
      if (result.status) a.status = result.status;
    }
  }

  #onCustomer(c: Customer, m: Record<string, unknown>): void {
    switch (m.t) {
      case MessageType.hello:
        c.hello?.();
        return;
      case MessageType.ack:
      case MessageType.error: {
        const s = m.s as number | undefined;
        const kind = s === undefined ? undefined : c.commands.get(s);
        if (kind !== undefined) {
          c.commands.delete(s!);
          this.#onCommandAnswer(c, kind, m);
        } else bump(this.#totals.errors, String(m.error ?? m.code));
        return;
      }
      case MessageType.orderStatus:
        c.status = m.status as string;
        c.riderId = (m.riderId as string | null) ?? null;
        return;
      case MessageType.riderPosition: {
        const age = Date.now() - (m.ts as number);
        this.#totals.positions++;
        if (this.#window) {
          this.#window.positions++;
          this.#latencies.push(age);
        }
        return;
      }
      default:
        return;
    }
  }

  // ---------------------------------------------------------- frames out

  #frame(msg: Record<string, unknown>): Buffer {
    return this.#json ? clientFrame(Buffer.from(JSON.stringify(msg)), Opcode.text) : clientFrame(encode(msg as unknown as Message));
  }

  #command(a: Rider | Customer, kind: CommandKind, msg: Record<string, unknown>): void {
    if (!a.socket) return;
    const s = ++a.s;
    a.commands.set(s, kind);
    a.socket.write(this.#frame({ ...msg, s }));
  }

  /** The next fix frame of `r`: each fix a step further along its leg, stamped now. */
  #fixFrame(r: Rider): Buffer {
    const s = ++r.s;
    const ts = Date.now();
    const k = this.#spec.opts.batch;
    let msg: Record<string, unknown>;
    if (k === 1) {
      this.#step(r);
      msg = { t: MessageType.fix, s, lat: r.lat, lng: r.lng, ts, seq: ++r.seq };
    } else {
      const fixes: number[][] = new Array(k);
      for (let i = 0; i < k; i++) {
        this.#step(r);
        fixes[i] = [r.lat, r.lng, ts, ++r.seq];
      }
      msg = { t: MessageType.fixes, s, fixes };
    }
    const c = this.#window;
    this.#totals.framesSent++;
    this.#totals.fixesSent += k;
    if (c) {
      c.framesSent++;
      c.fixesSent += k;
    }
    r.inflight++;
    r.sentAt.push(performance.now());
    return this.#frame(msg);
  }

  #step(r: Rider): void {
    r.lat += r.dLat;
    r.lng += r.dLng;
    if (--r.legLeft === 0) {
      // Back through the start to the far end: a rider paces a 600 m line.
      r.dLat = -r.dLat;
      r.dLng = -r.dLng;
      r.legLeft = 2 * r.legSteps;
    }
  }

  /** Closed loop: one write for every frame a chunk of answers made room for. */
  #flushOwed(r: Rider): void {
    const n = r.owed;
    r.owed = 0;
    if (!r.socket || !r.online) return;
    if (n === 1) {
      r.socket.write(this.#fixFrame(r));
      return;
    }
    const frames: Buffer[] = new Array(n);
    for (let i = 0; i < n; i++) frames[i] = this.#fixFrame(r);
    r.socket.write(Buffer.concat(frames));
  }

  // ---------------------------------------------------------- phases

  /** Riders go online; customers follow their orders. Answers, offers and walking continue in the background (see progress). */
  prepare(): { online: number; follow: number } {
    const o = this.#spec.opts;
    let online = 0;
    let follow = 0;
    for (const r of this.#riders) {
      if (!r.socket) continue;
      this.#command(r, 'online', { t: MessageType.online, capacity: o.capacity, position: { lat: r.lat, lng: r.lng } });
      online++;
    }
    for (const c of this.#customers) {
      if (!c.socket) continue;
      this.#command(c, 'follow', { t: MessageType.follow, orderId: c.orderId });
      follow++;
    }
    return { online, follow };
  }

  progress(): ProgressReport {
    const walk = this.#spec.opts.walk;
    let ready = 0;
    for (const c of this.#customers) {
      if (c.socket && c.riderId !== null && (walk ? c.status === 'pickedUp' || c.status === 'atDropoff' : TRACKED.has(c.status ?? ''))) ready++;
    }
    return {
      riders: this.#riders.filter((r) => r.socket).length,
      online: this.#riders.filter((r) => r.online).length,
      offers: this.#offers,
      accepted: this.#accepted,
      walked: this.#walked,
      customers: this.#customers.filter((c) => c.socket).length,
      following: this.#following,
      ready,
      errors: { ...this.#prepErrors },
    };
  }

  /** Sends fixes for warmup + duration, measuring over the duration, then waits (up to drainMs) for the last answers. */
  async run(args: { warmupMs: number; durationMs: number; drainMs: number }): Promise<ShardRunResult> {
    const { frameRate, opts } = this.#spec;
    this.#running = true;
    let pump: NodeJS.Timeout | null = null;
    if (frameRate === 0) {
      for (const r of this.#riders) {
        r.owed = opts.inflight;
        this.#flushOwed(r);
      }
    } else {
      const started = performance.now();
      let due = 0;
      // Riders take turns in a fixed order, so each sends evenly, once per round.
      pump = setInterval(() => {
        const target = Math.floor(((performance.now() - started) / 1000) * frameRate);
        while (due < target) {
          const r = this.#nextRider();
          if (!r) {
            const missed = target - due;
            this.#totals.deferred += missed;
            if (this.#window) this.#window.deferred += missed;
            due = target;
            break;
          }
          due++;
          r.socket!.write(this.#fixFrame(r));
        }
      }, 2);
    }
    await sleep(args.warmupMs);
    this.#window = counts();
    this.#latencies = [];
    this.#ackLatencies = [];
    const cpu0 = process.cpuUsage();
    const elu0 = performance.eventLoopUtilization();
    // A late event loop here delays reading acks and positions: it would show as server latency.
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    const t0 = performance.now();
    await sleep(args.durationMs);
    delay.disable();
    const window = this.#window;
    this.#window = null;
    const windowS = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const elu = performance.eventLoopUtilization(elu0).utilization;
    this.#running = false;
    if (pump) clearInterval(pump);
    const drainUntil = Date.now() + args.drainMs;
    while (this.#unanswered() > 0 && Date.now() < drainUntil) await sleep(10);
    return {
      pid: process.pid,
      windowS,
      window,
      totals: this.#totals,
      latencies: Float64Array.from(this.#latencies),
      ackLatencies: Float64Array.from(this.#ackLatencies),
      cpuUs: cpu.user + cpu.system,
      elu,
      loopDelayMs: { p99: +(delay.percentile(99) / 1e6).toFixed(1), max: +(delay.max / 1e6).toFixed(1) },
      unanswered: this.#unanswered(),
      closes: { ...this.#closes },
    };
  }

  #nextRider(): Rider | null {
    const n = this.#riders.length;
    const cap = this.#spec.opts.inflight;
    for (let k = 0; k < n; k++) {
      const r = this.#riders[this.#cursor]!;
      this.#cursor = this.#cursor + 1 === n ? 0 : this.#cursor + 1;
      if (r.online && r.socket && r.inflight < cap) return r;
    }
    return null;
  }

  #unanswered(): number {
    let n = 0;
    for (const r of this.#riders) if (r.socket) n += r.inflight;
    return n;
  }

  close(): void {
    this.#running = false;
    this.#closing = true;
    for (const a of [...this.#riders, ...this.#customers]) a.socket?.destroy();
  }
}

function agent(kind: 'rider' | 'customer'): Agent {
  return { kind, socket: null, reader: new FrameReader(), s: 0, commands: new Map(), hello: null };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ------------------------------------------------------------ the coordinator

interface ShardHandle {
  call<T>(cmd: 'connect' | 'prepare' | 'progress' | 'run' | 'close', args?: unknown): Promise<T>;
  stop(): Promise<void>;
}

function inProcess(shard: LoadShard): ShardHandle {
  return {
    call: async <T>(cmd: string, args?: unknown) => {
      switch (cmd) {
        case 'connect':
          return (await shard.connect()) as T;
        case 'prepare':
          return shard.prepare() as T;
        case 'progress':
          return shard.progress() as T;
        case 'run':
          return (await shard.run(args as { warmupMs: number; durationMs: number; drainMs: number })) as T;
        default:
          return shard.close() as T;
      }
    },
    stop: async () => shard.close(),
  };
}

export interface LatencySummary {
  samples: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

export interface LoadResult {
  url: string;
  encoding: Encoding;
  mode: 'paced' | 'closed-loop';
  riders: number;
  customers: number;
  batch: number;
  inflight: number;
  /** Requested fixes per second (paced); null in closed loop. */
  targetFixRate: number | null;
  processes: number;
  connect: ConnectReport & { seconds: number };
  prepare: ProgressReport & { seconds: number; complete: boolean };
  windowS: number;
  /** Accepted fixes per second over the window: sum of result.accepted over acks. */
  acceptedFixesPerSec: number;
  sentFixesPerSec: number;
  /** Answered fix frames per second. */
  framesPerSec: number;
  window: Counts;
  totals: Counts & { unanswered: number };
  positionsPerSec: number;
  /** Fix to customer, ms (Date.now() on receipt minus the fix's ts); null without samples. */
  latencyMs: LatencySummary | null;
  /** Fix frame sent to its ack at the rider, ms. */
  ackLatencyMs: LatencySummary | null;
  closes: Record<string, number>;
  generator: { cpuCores: number; perProcess: Array<{ pid: number; cpuCores: number; elu: number; loopDelayMs: { p99: number; max: number } }> };
}

export function summarizeLatency(samples: number[]): LatencySummary | null {
  if (samples.length === 0) return null;
  let sum = 0;
  let max = -Infinity;
  for (const v of samples) {
    sum += v;
    if (v > max) max = v;
  }
  const r = (v: number) => +v.toFixed(2);
  return {
    samples: samples.length,
    p50: r(percentile(samples, 50)),
    p95: r(percentile(samples, 95)),
    p99: r(percentile(samples, 99)),
    max: r(max),
    mean: r(sum / samples.length),
  };
}

function addCounts(into: Counts, c: Counts): void {
  for (const k of Object.keys(counts()) as Array<keyof Counts>) {
    if (k === 'errors') for (const [code, n] of Object.entries(c.errors)) bump(into.errors, code, n);
    else into[k] += c[k];
  }
}

function sumProgress(ps: ProgressReport[]): ProgressReport {
  const out: ProgressReport = { riders: 0, online: 0, offers: 0, accepted: 0, walked: 0, customers: 0, following: 0, ready: 0, errors: {} };
  for (const p of ps) {
    for (const k of Object.keys(out) as Array<keyof ProgressReport>) {
      if (k === 'errors') for (const [code, n] of Object.entries(p.errors)) bump(out.errors, code, n);
      else out[k] += p[k];
    }
  }
  return out;
}

/**
 * Runs a load in phases (connect, prepare, run), so a benchmark can measure
 * the server between them: `start`, then each phase, then `close`. runLoad
 * does all of it.
 */
export class LoadGenerator {
  readonly options: Resolved;
  readonly #shards: ShardHandle[];
  #connect: (ConnectReport & { seconds: number }) | null = null;
  #prepare: (ProgressReport & { seconds: number; complete: boolean }) | null = null;

  private constructor(options: Resolved, shards: ShardHandle[]) {
    this.options = options;
    this.#shards = shards;
  }

  static async start(options: LoadOptions): Promise<LoadGenerator> {
    const o = resolve(options);
    const url = new URL(o.url);
    if (url.protocol !== 'ws:') throw new RangeError(`url must be ws://host:port[/path], got ${o.url}`);
    const host = url.hostname;
    const port = Number(url.port || 80);
    const path = url.pathname === '/' ? '/v1/ws' : url.pathname;
    const loopback = /^127\./.test(host) || host === 'localhost';
    const n = Math.max(1, o.processes);
    // Functions cannot cross the IPC channel.
    const { follows: _follows, url: _url, log: _log, ...opts } = o;
    const specs: ShardSpec[] = Array.from({ length: n }, () => ({
      opts,
      host: host === 'localhost' ? '127.0.0.1' : host,
      port,
      path,
      loopback,
      riders: [],
      customers: [],
      frameRate: 0,
    }));
    for (let i = 0; i < o.riders; i++) specs[i % n]!.riders.push({ id: `${o.riderPrefix}${i}`, index: i, conn: i });
    o.follows.forEach((f, j) => specs[j % n]!.customers.push({ ...f, conn: o.riders + j }));
    for (const s of specs) s.frameRate = o.fixRate === 0 || o.riders === 0 ? 0 : (o.fixRate * (s.riders.length / o.riders)) / o.batch;
    let shards: ShardHandle[];
    if (o.processes === 0) shards = [inProcess(new LoadShard(specs[0]!))];
    else {
      shards = await Promise.all(
        specs.map(async (spec, i) => {
          const child = RpcChild.start(new URL('./worker.ts', import.meta.url), { what: `load generator process ${i}` });
          await child.call('init', spec);
          return { call: <T>(cmd: string, args?: unknown) => child.call<T>(cmd, args), stop: () => child.stop('close') };
        }),
      );
    }
    return new LoadGenerator(o, shards);
  }

  #log(line: string): void {
    this.options.log?.(line);
  }

  async connect(): Promise<ConnectReport & { seconds: number }> {
    const t0 = performance.now();
    const parts = await Promise.all(this.#shards.map((s) => s.call<ConnectReport>('connect')));
    const out = { riders: 0, customers: 0, failures: {} as Record<string, number>, seconds: 0 };
    for (const p of parts) {
      out.riders += p.riders;
      out.customers += p.customers;
      for (const [k, v] of Object.entries(p.failures)) bump(out.failures, k, v);
    }
    out.seconds = +((performance.now() - t0) / 1000).toFixed(2);
    this.#log(`connected ${out.riders} riders, ${out.customers} customers in ${out.seconds} s; failures ${JSON.stringify(out.failures)}`);
    this.#connect = out;
    return out;
  }

  /** Riders online, customers following; waits until every customer sees its rider (or every rider is online when none follow). */
  async prepare(): Promise<ProgressReport & { seconds: number; complete: boolean }> {
    const t0 = performance.now();
    await Promise.all(this.#shards.map((s) => s.call('prepare')));
    const deadline = t0 + this.options.readyTimeoutS * 1000;
    let p: ProgressReport;
    let lastLog = t0;
    let seen = '';
    let changedAt = performance.now();
    for (;;) {
      p = sumProgress(await Promise.all(this.#shards.map((s) => s.call<ProgressReport>('progress'))));
      const onlineDone = p.online >= p.riders;
      const followDone = p.ready >= p.customers;
      if (onlineDone && followDone) break;
      if (performance.now() > deadline) break;
      // An order with no free rider within the engine's search radius never gets one: stop waiting once nothing moves.
      const now = `${p.online}/${p.offers}/${p.accepted}/${p.walked}/${p.following}/${p.ready}`;
      if (now !== seen) {
        seen = now;
        changedAt = performance.now();
      } else if (onlineDone && performance.now() - changedAt > STALL_MS) break;
      if (performance.now() - lastLog > 5_000) {
        lastLog = performance.now();
        this.#log(`preparing: ${p.online}/${p.riders} online, ${p.accepted} offers accepted, ${p.ready}/${p.customers} customers see their rider`);
      }
      await sleep(200);
    }
    const complete = p.online >= p.riders && p.ready >= p.customers;
    const out = { ...p, seconds: +((performance.now() - t0) / 1000).toFixed(2), complete };
    this.#log(`prepared in ${out.seconds} s: ${p.online}/${p.riders} online, ${p.ready}/${p.customers} customers ready${complete ? '' : ' (incomplete: stalled or timed out)'}`);
    this.#prepare = out;
    return out;
  }

  async run(): Promise<LoadResult> {
    const o = this.options;
    const args = { warmupMs: o.warmupS * 1000, durationMs: o.durationS * 1000, drainMs: 10_000 };
    this.#log(`running ${o.fixRate === 0 ? `closed loop, ${o.inflight} frames in flight per rider` : `${o.fixRate} fixes/s`}, batch ${o.batch}, ${o.warmupS} s warm-up + ${o.durationS} s`);
    const parts = await Promise.all(this.#shards.map((s) => s.call<ShardRunResult>('run', args)));
    const window = counts();
    const totals = { ...counts(), unanswered: 0 };
    const closes: Record<string, number> = {};
    let latencies: number[] = [];
    let ackLatencies: number[] = [];
    let windowS = 0;
    let cpuUs = 0;
    for (const p of parts) {
      addCounts(window, p.window);
      addCounts(totals, p.totals);
      totals.unanswered += p.unanswered;
      for (const [k, v] of Object.entries(p.closes)) bump(closes, k, v);
      latencies = latencies.concat(Array.from(p.latencies));
      ackLatencies = ackLatencies.concat(Array.from(p.ackLatencies));
      windowS += p.windowS / parts.length;
      cpuUs += p.cpuUs;
    }
    const perSec = (n: number) => Math.round(n / windowS);
    return {
      url: o.url,
      encoding: o.encoding,
      mode: o.fixRate === 0 ? 'closed-loop' : 'paced',
      riders: o.riders,
      customers: o.follows.length,
      batch: o.batch,
      inflight: o.inflight,
      targetFixRate: o.fixRate === 0 ? null : o.fixRate,
      processes: o.processes,
      connect: this.#connect ?? { riders: 0, customers: 0, failures: {}, seconds: 0 },
      prepare: this.#prepare ?? { ...sumProgress([]), seconds: 0, complete: false },
      windowS: +windowS.toFixed(3),
      acceptedFixesPerSec: perSec(window.accepted),
      sentFixesPerSec: perSec(window.fixesSent),
      framesPerSec: perSec(window.answers),
      window,
      totals,
      positionsPerSec: perSec(window.positions),
      latencyMs: summarizeLatency(latencies),
      ackLatencyMs: summarizeLatency(ackLatencies),
      closes,
      generator: {
        cpuCores: +(cpuUs / 1e6 / windowS).toFixed(3),
        perProcess: parts.map((p) => ({ pid: p.pid, cpuCores: +(p.cpuUs / 1e6 / p.windowS).toFixed(3), elu: +p.elu.toFixed(3), loopDelayMs: p.loopDelayMs })),
      },
    };
  }

  async close(): Promise<void> {
    await Promise.all(this.#shards.map((s) => s.stop()));
  }
}

/** Connects, prepares, runs and closes. */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const lg = await LoadGenerator.start(options);
  try {
    await lg.connect();
    await lg.prepare();
    return await lg.run();
  } finally {
    await lg.close();
  }
}

/**
 * The operations live map: a static page (/ops) and a WebSocket feed
 * (/v1/ops) that pushes one opsSnapshot a second to operations staff, plus
 * the engine's figures on /metrics. It reads the engine once per interval,
 * whatever the number of watchers, and only while someone watches.
 */
import { readFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { cellToParent, latLngToCell } from 'h3-js';
import type { Logger } from 'pino';
import type { DispatchEngine, EngineCounters, OperationsSnapshot, OrderStatus } from '../engine/index.ts';
import { can, verifyToken, type AuthConfig, type Principal } from './auth.ts';
import type { Counter, Gauge, Histogram, Registry } from './metrics.ts';
import { CloseCodes, Limits, MessageType, encode, type OpsCell, type OpsCounters, type OpsOrder, type OpsRider, type OpsSnapshotMessage } from './protocol.ts';
import type { Uws } from './uws.ts';

/** What an operator may tune; the defaults suit a city on one gateway. */
export interface OperationsFeedSettings {
  /** How often a frame goes out. */
  intervalMs: number;
  /** H3 resolution of the demand and supply cells (8 is about 0.7 km²). */
  cellRes: number;
  /** A socket with more than this still waiting to be sent skips frames until it catches up. */
  backpressureBytes: number;
  /** How long /metrics waits for the engine's figures before answering with the last ones. */
  scrapeTimeoutMs: number;
}

export const DEFAULT_OPERATIONS_SETTINGS: OperationsFeedSettings = {
  intervalMs: 1_000,
  cellRes: 8,
  backpressureBytes: 64 * 1024,
  scrapeTimeoutMs: 2_000,
};

export interface OperationsFeedOptions extends Partial<OperationsFeedSettings> {
  engine: DispatchEngine;
  auth: AuthConfig;
  /** The gateway's registry: the engine's figures are rendered with its own. */
  metrics: Registry;
  logger: Logger;
  /** App sockets open on the gateway, for the panel. */
  connections: () => number;
}

interface OpsConn {
  principal: Principal;
  closed: boolean;
}

type OpsSocket = Uws.WebSocket<OpsConn>;

/** Orders that wait for a rider: what demand means on the map. */
const DEMAND = new Set<OrderStatus>(['confirmed', 'searching', 'offered', 'escalated']);

/** Parent cells are looked up per frame for every rider: a bounded memo keeps that off h3. */
const PARENT_CACHE_LIMIT = 200_000;

const pageDir = join(dirname(fileURLToPath(import.meta.url)), 'ops-page');

/** A package's root folder, whatever its exports map allows to be resolved. */
function packageDir(name: string): string {
  const require = createRequire(import.meta.url);
  let dir = dirname(require.resolve(name));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${require.resolve(name)}`);
    dir = up;
  }
  return dir;
}

interface Asset {
  type: string;
  body: Buffer;
}

/** Static files of the page, read once: they never change while a node runs. */
function loadAssets(): Map<string, Asset> {
  const js = 'text/javascript; charset=utf-8';
  return new Map<string, Asset>([
    ['/ops', { type: 'text/html; charset=utf-8', body: readFileSync(join(pageDir, 'index.html')) }],
    ['/ops/app.js', { type: js, body: readFileSync(join(pageDir, 'app.js')) }],
    // The no-eval build, so the page's CSP need not allow eval.
    ['/ops/vendor/msgpackr.js', { type: js, body: readFileSync(join(packageDir('msgpackr'), 'dist', 'index-no-eval.min.js')) }],
    ['/ops/vendor/h3.js', { type: js, body: readFileSync(join(packageDir('h3-js'), 'dist', 'h3-js.umd.js')) }],
  ]);
}

/** Nearest-rank percentile of ascending values; null for none. */
function percentile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

const round = (v: number, places: number) => Math.round(v * 10 ** places) / 10 ** places;

export class OperationsFeed {
  readonly #engine: DispatchEngine;
  readonly #auth: AuthConfig;
  readonly #log: Logger;
  readonly #connections: () => number;
  readonly #settings: OperationsFeedSettings;
  readonly #sockets = new Set<OpsSocket>();
  readonly #parents = new Map<string, string>();
  readonly #registry: Registry;
  readonly #m: { sockets: Gauge; refused: Counter; frames: Counter; skipped: Counter };
  #latencyHistogram: Histogram | null = null;
  /** The engine's figures as last read, for /metrics and the fixes rate. */
  #latest: EngineCounters | null = null;
  #previousFixes: { accepted: number; at: number } | null = null;
  #timer: NodeJS.Timeout | null = null;
  #busy = false;
  #stopped = false;
  #loop: IntervalHistogram | null = null;

  constructor(options: OperationsFeedOptions) {
    this.#engine = options.engine;
    this.#auth = options.auth;
    this.#log = options.logger;
    this.#connections = options.connections;
    this.#settings = { ...DEFAULT_OPERATIONS_SETTINGS };
    for (const k of Object.keys(DEFAULT_OPERATIONS_SETTINGS) as Array<keyof OperationsFeedSettings>) {
      const v = options[k];
      if (v === undefined) continue;
      if (!(Number.isFinite(v) && v >= 0)) throw new RangeError(`operations ${k} must be a non-negative number, got ${v}`);
      this.#settings[k] = v;
    }
    if (!Number.isInteger(this.#settings.cellRes) || this.#settings.cellRes > 15) {
      throw new RangeError(`operations cellRes must be an H3 resolution 0..15, got ${this.#settings.cellRes}`);
    }
    if (this.#settings.intervalMs < 50) throw new RangeError(`operations intervalMs must be at least 50, got ${this.#settings.intervalMs}`);
    const r = (this.#registry = options.metrics);
    const latest = () => this.#latest;
    this.#m = {
      sockets: r.gauge('quickdash_ops_connections', 'Operations map sockets open (not counted as app connections)'),
      refused: r.counter('quickdash_ops_refused_total', 'Operations sockets refused at upgrade, by reason'),
      frames: r.counter('quickdash_ops_frames_total', 'Operations frames sent'),
      skipped: r.counter('quickdash_ops_frames_skipped_total', 'Operations frames skipped for sockets with a backlog'),
    };
    r.gauge('quickdash_shard_queue_depth', 'Engine requests queued or awaiting a reply, per shard', () =>
      (latest()?.shardQueueDepth ?? []).map((d, i): [Record<string, string>, number] => [{ shard: String(i) }, d]),
    );
    r.gauge('quickdash_orders_live', 'Orders neither delivered nor cancelled, engine-wide', () => latest()?.ordersLive ?? 0);
    r.gauge('quickdash_riders_online', 'Riders online, engine-wide', () => latest()?.ridersOnline ?? 0);
    r.counter('quickdash_engine_fixes_accepted_total', 'GPS fixes accepted by the engine from every source', () => latest()?.fixesAccepted ?? 0);
    r.counter('quickdash_offers_total', 'Offers made by the matchers', () => latest()?.offersMade ?? 0);
    r.counter('quickdash_matcher_runs_total', 'Matcher windows that had orders and riders', () => latest()?.matcherRuns ?? 0);
  }

  /** Registers the page, its scripts and the feed socket; call before the app's catch-all route. */
  attach(app: Uws.TemplatedApp): void {
    const assets = loadAssets();
    for (const [path, asset] of assets) {
      app.get(path, (res) => {
        res.cork(() => {
          res.writeHeader('content-type', asset.type).writeHeader('x-content-type-options', 'nosniff');
          // The page carries its token in the URL: keep it out of Referer headers and out of frames.
          res.writeHeader('referrer-policy', 'no-referrer').writeHeader('cache-control', 'no-store');
          if (path === '/ops') {
            res.writeHeader('content-security-policy', "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'");
          }
          res.end(asset.body);
        });
      });
    }
    app.ws<OpsConn>('/v1/ops', {
      // The feed reads nothing from operators.
      maxPayloadLength: 1024,
      idleTimeout: Limits.idleTimeoutMs / 1000,
      sendPingsAutomatically: true,
      // Above anything we write: sockets with a backlog skip frames, so uWS never has to drop one.
      maxBackpressure: Limits.maxOpsFrameBytes + this.#settings.backpressureBytes * 2,
      upgrade: (res, req, context) => this.#upgrade(res, req, context),
      open: (ws) => this.#open(ws as OpsSocket),
      close: (ws) => this.#close(ws as OpsSocket),
    });
  }

  /** Refreshes the engine's figures for /metrics; never rejects, and gives up after scrapeTimeoutMs. */
  async scrape(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.#settings.scrapeTimeoutMs);
    });
    try {
      await Promise.race([this.#engine.counters().then((c) => this.#remember(c)), timeout]);
    } catch (err) {
      this.#log.warn({ err }, 'engine figures unavailable for /metrics');
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops the frames and closes every operations socket (the node is draining). */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#pause();
    for (const ws of [...this.#sockets]) {
      ws.getUserData().closed = true;
      ws.end(CloseCodes.GOING_AWAY, 'going away');
    }
  }

  // ------------------------------------------------------------ sockets

  #upgrade(res: Uws.HttpResponse, req: Uws.HttpRequest, context: Uws.us_socket_context_t): void {
    const query = new URLSearchParams(req.getQuery() ?? '');
    const key = req.getHeader('sec-websocket-key');
    const protocol = req.getHeader('sec-websocket-protocol');
    const extensions = req.getHeader('sec-websocket-extensions');
    if (this.#stopped) {
      res.writeStatus('503 Service Unavailable').end('draining');
      return;
    }
    const verdict = verifyToken(query.get('token') ?? '', this.#auth);
    if (!verdict.ok) {
      this.#m.refused.inc({ reason: verdict.reason });
      res.writeStatus('401 Unauthorized').end(`${verdict.reason}: ${verdict.message}`);
      return;
    }
    if (!can(verdict.principal, 'ops.feed')) {
      this.#m.refused.inc({ reason: 'role' });
      res.writeStatus('403 Forbidden').end(`role ${verdict.principal.role} cannot use the operations feed`);
      return;
    }
    res.upgrade<OpsConn>({ principal: verdict.principal, closed: false }, key, protocol, extensions, context);
  }

  #open(ws: OpsSocket): void {
    this.#sockets.add(ws);
    this.#m.sockets.set(this.#sockets.size);
    this.#log.debug({ user: ws.getUserData().principal.sub }, 'operations socket open');
    if (!this.#timer) this.#resume();
    // A new watcher need not wait a whole interval for its first picture.
    void this.#frame();
  }

  #close(ws: OpsSocket): void {
    ws.getUserData().closed = true;
    this.#sockets.delete(ws);
    this.#m.sockets.set(this.#sockets.size);
    if (this.#sockets.size === 0) this.#pause();
  }

  #resume(): void {
    this.#loop = monitorEventLoopDelay({ resolution: 10 });
    this.#loop.enable();
    this.#previousFixes = null;
    this.#timer = setInterval(() => void this.#frame(), this.#settings.intervalMs);
    this.#timer.unref();
  }

  /** Nobody watches: the engine is not asked for anything. */
  #pause(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    this.#loop?.disable();
    this.#loop = null;
  }

  // ------------------------------------------------------------ frames

  #remember(c: EngineCounters): void {
    this.#latest = c;
    const d = c.dispatchLatency;
    if (!this.#latencyHistogram) {
      // Registered once the engine has said which buckets it keeps.
      const bounds = d.bucketsMs.map((ms) => ms / 1000);
      this.#latencyHistogram = this.#registry.histogram(
        'quickdash_dispatch_latency_seconds',
        'Time from an order starting to search to a rider accepting it (engine clock)',
        bounds,
        () => {
          const l = this.#latest!.dispatchLatency;
          return { counts: l.counts, sum: l.sumMs / 1000, count: l.count };
        },
      );
    }
  }

  /** One frame to every watcher; a frame still being built when the next is due makes that one skip. */
  async #frame(): Promise<void> {
    if (this.#busy || this.#sockets.size === 0) return;
    this.#busy = true;
    try {
      const [snap, counters] = await Promise.all([this.#engine.operationsSnapshot(), this.#engine.counters()]);
      this.#remember(counters);
      const msg = this.#build(snap, counters);
      const bytes = encode(msg);
      if (bytes.byteLength > Limits.maxOpsFrameBytes) {
        this.#log.error({ bytes: bytes.byteLength, riders: msg.riders.length, orders: msg.orders.length }, 'operations frame over maxOpsFrameBytes; not sent');
        return;
      }
      this.#broadcast(bytes);
    } catch (err) {
      this.#log.warn({ err }, 'operations frame skipped');
    } finally {
      this.#busy = false;
    }
  }

  #broadcast(bytes: Uint8Array): void {
    const now = Date.now();
    for (const ws of this.#sockets) {
      const c = ws.getUserData();
      if (c.closed) continue;
      // A connection must not outlive its token.
      if (c.principal.exp * 1000 <= now) {
        c.closed = true;
        ws.end(CloseCodes.AUTH_FAILED, 'token expired');
        continue;
      }
      if (ws.getBufferedAmount() > this.#settings.backpressureBytes) {
        this.#m.skipped.inc();
        continue;
      }
      ws.send(bytes, true);
      this.#m.frames.inc();
    }
  }

  #build(snap: OperationsSnapshot, counters: EngineCounters): OpsSnapshotMessage {
    const res = this.#settings.cellRes;
    const cells = new Map<string, OpsCell>();
    const cellAt = (key: string): OpsCell => {
      let c = cells.get(key);
      if (!c) cells.set(key, (c = [key, 0, 0]));
      return c;
    };
    const riders: OpsRider[] = [];
    for (const r of snap.riders) {
      if (!r.position) continue;
      riders.push([r.riderId, r.status, r.position.lat, r.position.lng]);
      if (r.status === 'available') cellAt(this.#cellOf(r.cell, r.position.lat, r.position.lng, snap.indexRes))[2] += 1;
    }
    const orders: OpsOrder[] = [];
    for (const o of snap.orders) {
      orders.push([o.orderId, o.status, o.pickup.lat, o.pickup.lng, o.dropoff.lat, o.dropoff.lng, o.riderId]);
      if (o.riderId === null && DEMAND.has(o.status)) cellAt(this.#cellOf(o.pickupCell, o.pickup.lat, o.pickup.lng, snap.indexRes))[1] += 1;
    }
    const now = Date.now();
    let fixesPerSecond = 0;
    const prev = this.#previousFixes;
    if (prev && now > prev.at) fixesPerSecond = Math.max(0, ((counters.fixesAccepted - prev.accepted) * 1000) / (now - prev.at));
    this.#previousFixes = { accepted: counters.fixesAccepted, at: now };
    const recent = [...counters.dispatchLatency.recentMs].sort((a, b) => a - b);
    let lagMs = 0;
    if (this.#loop) {
      // Worst delay since the previous frame; 0 until the monitor has a sample.
      lagMs = Number.isFinite(this.#loop.max) ? this.#loop.max / 1e6 : 0;
      this.#loop.reset();
    }
    const panel: OpsCounters = {
      connections: this.#connections(),
      fixesPerSecond: round(fixesPerSecond, 1),
      ordersLive: counters.ordersLive,
      ridersOnline: counters.ridersOnline,
      offersMade: counters.offersMade,
      matcherRuns: counters.matcherRuns,
      dispatchP50Ms: percentile(recent, 0.5),
      dispatchP95Ms: percentile(recent, 0.95),
      eventLoopLagMs: round(Math.max(0, lagMs), 2),
    };
    return { t: MessageType.opsSnapshot, now, res, riders, orders, cells: [...cells.values()], counters: panel };
  }

  /** The cell at the feed's resolution of something the engine placed in `cell` at `indexRes`. */
  #cellOf(cell: string | null, lat: number, lng: number, indexRes: number): string {
    const res = this.#settings.cellRes;
    if (cell && res === indexRes) return cell;
    if (!cell || res > indexRes) return latLngToCell(lat, lng, res);
    let parent = this.#parents.get(cell);
    if (parent === undefined) {
      if (this.#parents.size >= PARENT_CACHE_LIMIT) this.#parents.clear();
      parent = cellToParent(cell, res);
      this.#parents.set(cell, parent);
    }
    return parent;
  }
}

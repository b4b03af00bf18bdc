/**
 * Runs a bundled k6 script (bench/k6/dist/*.js) in Node, for tests: k6 is a Go
 * binary and not installable here. It implements only what the QuickDash
 * scripts import, following k6's documented behaviour and its source:
 *
 *   k6             check
 *   k6/metrics     Counter, Trend, Rate, Gauge (samples recorded with their tags)
 *   k6/websockets  WebSocket (over the `ws` package)
 *   k6/crypto      hmac (node:crypto)
 *   k6/encoding    b64encode, b64decode
 *   globals        __VU, __ITER, __ENV, open (init context only), console,
 *                  setTimeout/setInterval/clearTimeout/clearInterval
 *
 * Each VU gets its own node:vm context, as each k6 VU has its own runtime: its
 * own globals and module state, and none of Node's (no Buffer, process,
 * require, TextEncoder), so a bundle that leans on Node fails here as it would
 * in k6. An iteration ends when the default function has returned and the
 * VU's event loop is empty (no timers, no open sockets); an exception in a
 * callback ends it with an error, as in k6. Scenarios run with the
 * per-vu-iterations executor only; thresholds are evaluated at the end.
 */
import { build, type Plugin } from 'esbuild';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import vm from 'node:vm';
import WebSocket from 'ws';

// ---------------------------------------------------------------- loading

/** The k6 modules the shim provides and their named exports; importing anything else fails the load. */
const SHIM_EXPORTS: Record<string, readonly string[]> = {
  k6: ['check'],
  'k6/metrics': ['Counter', 'Trend', 'Rate', 'Gauge'],
  'k6/websockets': ['WebSocket'],
  'k6/crypto': ['hmac'],
  'k6/encoding': ['b64encode', 'b64decode'],
};

/** Points every `k6/...` import at the running VU's shim modules. */
const k6Modules: Plugin = {
  name: 'k6-shim',
  setup(b) {
    b.onResolve({ filter: /^k6(\/.*)?$/ }, (args) => ({ path: args.path, namespace: 'k6-shim' }));
    b.onLoad({ filter: /.*/, namespace: 'k6-shim' }, (args) => {
      const names = SHIM_EXPORTS[args.path];
      if (!names) return { errors: [{ text: `the k6 shim does not implement ${args.path}` }] };
      const lines = [`const m = globalThis.__k6_modules[${JSON.stringify(args.path)}];`];
      for (const n of names) lines.push(`export const ${n} = m.${n};`);
      lines.push('export default m;');
      return { contents: lines.join('\n'), loader: 'js' };
    });
  },
};

/** The bundle as a classic script that leaves its exports in `__k6_exports`. */
async function loadScript(path: string): Promise<string> {
  const result = await build({
    entryPoints: [path],
    bundle: true,
    write: false,
    format: 'iife',
    globalName: '__k6_exports',
    platform: 'neutral',
    target: 'es2020',
    plugins: [k6Modules],
    logLevel: 'silent',
  });
  return result.outputFiles[0]!.text;
}

// ---------------------------------------------------------------- metrics

export type MetricType = 'counter' | 'trend' | 'rate' | 'gauge';
export type Tags = Record<string, string>;
export interface Sample {
  metric: string;
  value: number;
  tags: Tags;
}

class Registry {
  readonly types = new Map<string, MetricType>([['checks', 'rate']]);
  readonly samples: Sample[] = [];

  define(name: string, type: MetricType): void {
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,127}$/.test(name)) throw new Error(`invalid metric name ${JSON.stringify(name)}`);
    const had = this.types.get(name);
    // Every VU runs the init code, so the same metric is declared once per VU; only a different type is an error.
    if (had !== undefined && had !== type) throw new Error(`metric ${name} already exists as a ${had}`);
    this.types.set(name, type);
  }

  add(metric: string, value: unknown, tags: unknown): void {
    const v = typeof value === 'boolean' ? Number(value) : value;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`metric ${metric}: value ${String(value)} is not a finite number`);
    const t: Tags = {};
    if (tags !== undefined && tags !== null) for (const [k, x] of Object.entries(tags as object)) t[k] = String(x);
    this.samples.push({ metric, value: v, tags: t });
  }
}

// ---------------------------------------------------------------- bytes across realms

/** True for an ArrayBuffer of any realm (a VU context's ArrayBuffer is not this realm's). */
function isArrayBuffer(x: unknown): x is ArrayBuffer {
  return Object.prototype.toString.call(x) === '[object ArrayBuffer]';
}

/** A copy of the bytes of a string (UTF-8), ArrayBuffer or view. */
function bytesOf(x: unknown, what: string): Buffer {
  if (typeof x === 'string') return Buffer.from(x, 'utf8');
  if (isArrayBuffer(x)) return Buffer.from(new Uint8Array(x));
  if (ArrayBuffer.isView(x)) return Buffer.from(new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
  throw new TypeError(`${what} must be a string or an ArrayBuffer`);
}

/** Go's base64 variants as k6 names them. */
function base64(bytes: Buffer, variant: string): string {
  switch (variant) {
    case 'std':
    case 'base64':
      return bytes.toString('base64');
    case 'rawstd':
      return bytes.toString('base64').replace(/=+$/, '');
    case 'url':
    case 'base64url':
      return bytes.toString('base64').replace(/\+/g, '-').replace(/\//g, '_');
    case 'rawurl':
    case 'base64rawurl':
      return bytes.toString('base64url');
    default:
      throw new Error(`unknown base64 encoding ${JSON.stringify(variant)}`);
  }
}

const HMAC_ALGORITHMS: Record<string, string> = {
  md5: 'md5',
  sha1: 'sha1',
  sha256: 'sha256',
  sha384: 'sha384',
  sha512: 'sha512',
  sha512_224: 'sha512-224',
  sha512_256: 'sha512-256',
  ripemd160: 'ripemd160',
};

// ---------------------------------------------------------------- durations

/** k6 durations: '90s', '1m30s', '500ms', '2h'. */
function parseDuration(text: unknown, fallbackMs: number): number {
  if (text === undefined) return fallbackMs;
  if (typeof text === 'number') return text;
  const s = String(text);
  let ms = 0;
  let rest = s;
  const unit = /^(\d+(?:\.\d+)?)(ms|s|m|h)/;
  while (rest.length > 0) {
    const m = unit.exec(rest);
    if (!m) throw new Error(`cannot read duration ${JSON.stringify(s)}`);
    ms += Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
    rest = rest.slice(m[0].length);
  }
  return ms;
}

// ---------------------------------------------------------------- one VU

type Listener = (event: unknown) => unknown;
const EVENT_TYPES = ['open', 'message', 'error', 'close', 'ping', 'pong'] as const;
type EventType = (typeof EVENT_TYPES)[number];

interface RunContext {
  registry: Registry;
  env: Readonly<Record<string, string>>;
  scriptDir: string;
  log(line: string): void;
}

interface Timer {
  handle: NodeJS.Timeout;
  interval: boolean;
}

class Vu {
  readonly id: number;
  readonly context: vm.Context;
  readonly exports: Record<string, unknown>;
  readonly #run: RunContext;
  readonly #timers = new Map<number, Timer>();
  readonly #sockets = new Set<{ abort(): void }>();
  #nextTimer = 0;
  #inInit = true;
  #idle: Array<() => void> = [];
  #failure: unknown = null;
  /** Bumped when an iteration is aborted, so callbacks of its sockets and timers are dropped. */
  #epoch = 0;

  constructor(run: RunContext, id: number, code: string) {
    this.id = id;
    this.#run = run;
    this.context = vm.createContext({
      __VU: id,
      __ITER: 0,
      __ENV: Object.freeze({ ...run.env }),
      console: this.#console(),
      setTimeout: (fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => this.#timer(false, fn, ms, args),
      setInterval: (fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => this.#timer(true, fn, ms, args),
      clearTimeout: (id: number) => this.#clearTimer(id),
      clearInterval: (id: number) => this.#clearTimer(id),
      open: (path: string, mode?: string) => this.#open(path, mode),
      __k6_modules: this.#modules(),
    });
    vm.runInContext(code, this.context, { filename: `k6-vu-${id}.js` });
    this.exports = this.context.__k6_exports as Record<string, unknown>;
    this.#inInit = false;
  }

  /** Runs `fn` as an iteration: resolves once it returned and the event loop is empty; rejects with the first exception. */
  async iterate(iter: number, fn: () => unknown, deadline: number): Promise<void> {
    this.context.__ITER = iter;
    this.#failure = null;
    try {
      await fn();
    } catch (err) {
      this.#failure = err;
    }
    while (this.#failure === null && this.#busy()) {
      const wait = deadline - Date.now();
      if (wait <= 0) {
        this.#failure = new Error('iteration interrupted: maxDuration reached');
        break;
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, wait);
        this.#idle.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    if (this.#failure !== null) {
      this.#abort();
      throw this.#failure;
    }
  }

  /** One event-loop task of this VU; an exception in it ends the iteration. */
  task(epoch: number, fn: () => void): void {
    if (epoch !== this.#epoch || this.#failure !== null) return;
    try {
      fn();
    } catch (err) {
      this.#failure = err;
    }
    this.#wake();
  }

  get epoch(): number {
    return this.#epoch;
  }

  #busy(): boolean {
    return this.#timers.size > 0 || this.#sockets.size > 0;
  }

  #wake(): void {
    if (this.#failure === null && this.#busy()) return;
    for (const w of this.#idle.splice(0)) w();
  }

  #abort(): void {
    this.#epoch += 1;
    for (const t of this.#timers.values()) (t.interval ? clearInterval : clearTimeout)(t.handle);
    this.#timers.clear();
    for (const s of this.#sockets) s.abort();
    this.#sockets.clear();
  }

  #timer(interval: boolean, fn: (...a: unknown[]) => void, ms: number | undefined, args: unknown[]): number {
    if (typeof fn !== 'function') throw new TypeError('timer callback must be a function');
    const id = ++this.#nextTimer;
    const epoch = this.#epoch;
    const run = () =>
      this.task(epoch, () => {
        if (!interval) this.#timers.delete(id);
        fn(...args);
      });
    const handle = interval ? setInterval(run, Math.max(1, ms ?? 0)) : setTimeout(run, ms ?? 0);
    this.#timers.set(id, { handle, interval });
    return id;
  }

  #clearTimer(id: number): void {
    const t = this.#timers.get(id);
    if (!t) return;
    (t.interval ? clearInterval : clearTimeout)(t.handle);
    this.#timers.delete(id);
    this.#wake();
  }

  #open(path: string, mode?: string): string | ArrayBuffer {
    if (!this.#inInit) throw new Error('open() can only be called from the init context');
    const bytes = readFileSync(resolve(this.#run.scriptDir, path));
    return mode === 'b' ? this.arrayBuffer(bytes) : bytes.toString('utf8');
  }

  /** An ArrayBuffer of the VU's own realm, so the script's `constructor === ArrayBuffer` checks hold. */
  arrayBuffer(bytes: Uint8Array): ArrayBuffer {
    const Ctor = vm.runInContext('ArrayBuffer', this.context) as ArrayBufferConstructor;
    const ab = new Ctor(bytes.byteLength);
    new Uint8Array(ab).set(bytes);
    return ab;
  }

  #console(): Record<string, (...args: unknown[]) => void> {
    const line = (level: string) => (...args: unknown[]) =>
      this.#run.log(`VU ${this.id} ${level}: ${args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ')}`);
    return { log: line('info'), info: line('info'), debug: line('debug'), warn: line('warn'), error: line('error') };
  }

  #modules(): Record<string, Record<string, unknown>> {
    const registry = this.#run.registry;
    const vu = this;
    const metric = (type: MetricType) =>
      class {
        readonly name: string;
        constructor(name: string) {
          if (!vu.#inInit) throw new Error('metrics must be declared in the init context');
          registry.define(name, type);
          this.name = name;
        }
        add(value: unknown, tags?: unknown): void {
          registry.add(this.name, value, tags);
        }
      };
    const check = (value: unknown, sets: Record<string, unknown>, tags?: Tags): boolean => {
      let all = true;
      for (const [name, c] of Object.entries(sets)) {
        const ok = Boolean(typeof c === 'function' ? (c as (v: unknown) => unknown)(value) : c);
        registry.add('checks', ok ? 1 : 0, { ...tags, check: name });
        if (!ok) all = false;
      }
      return all;
    };
    const hmac = (algorithm: string, secret: unknown, data: unknown, outputEncoding: string): string | number[] => {
      const alg = HMAC_ALGORITHMS[algorithm];
      if (!alg) throw new Error(`unknown hmac algorithm ${JSON.stringify(algorithm)}`);
      const digest = createHmac(alg, bytesOf(secret, 'secret')).update(bytesOf(data, 'data')).digest();
      if (outputEncoding === 'hex') return digest.toString('hex');
      if (outputEncoding === 'binary') return [...digest];
      return base64(digest, outputEncoding);
    };
    const b64encode = (input: unknown, encoding = 'std'): string => base64(bytesOf(input, 'input'), encoding);
    const b64decode = (input: string, encoding = 'std', format?: string): string | ArrayBuffer => {
      if (!['std', 'rawstd', 'url', 'rawurl'].includes(encoding)) throw new Error(`unknown base64 encoding ${JSON.stringify(encoding)}`);
      const bytes = Buffer.from(String(input), encoding.endsWith('url') ? 'base64url' : 'base64');
      return format === 's' ? bytes.toString('utf8') : vu.arrayBuffer(bytes);
    };
    return {
      k6: { check },
      'k6/metrics': { Counter: metric('counter'), Trend: metric('trend'), Rate: metric('rate'), Gauge: metric('gauge') },
      'k6/websockets': { WebSocket: webSocketClass(this, this.#sockets) },
      'k6/crypto': { hmac },
      'k6/encoding': { b64encode, b64decode },
    };
  }
}

/** k6/websockets' WebSocket for one VU: the browser API, with k6's events (error carries `error`, close `code`). */
function webSocketClass(vu: Vu, sockets: Set<{ abort(): void }>) {
  return class K6WebSocket {
    static readonly CONNECTING = 0;
    static readonly OPEN = 1;
    static readonly CLOSING = 2;
    static readonly CLOSED = 3;
    readonly CONNECTING = 0;
    readonly OPEN = 1;
    readonly CLOSING = 2;
    readonly CLOSED = 3;
    readonly url: string;
    readyState = 0;
    readonly #ws: WebSocket;
    readonly #epoch: number;
    readonly #on = new Map<EventType, Listener>();
    readonly #listeners = new Map<EventType, Listener[]>();
    #binaryType = 'blob';
    #opened = false;
    #clientClosed = false;
    #lastError = '';
    readonly #handle = { abort: () => this.#abort() };

    constructor(url: string, protocols?: string | string[] | null, params?: { headers?: Record<string, string> }) {
      if (!/^wss?:\/\//.test(String(url))) throw new Error(`WebSocket requires url with scheme ws or wss, but got ${JSON.stringify(url)}`);
      this.url = String(url);
      this.#epoch = vu.epoch;
      this.#ws = new WebSocket(this.url, protocols ?? undefined, { headers: params?.headers });
      sockets.add(this.#handle);
      this.#ws.on('open', () =>
        vu.task(this.#epoch, () => {
          this.#opened = true;
          this.readyState = 1;
          this.#dispatch('open', {});
        }),
      );
      this.#ws.on('message', (raw: WebSocket.RawData, isBinary: boolean) =>
        vu.task(this.#epoch, () => {
          if (this.readyState !== 1) return;
          const data = Array.isArray(raw) ? Buffer.concat(raw) : Buffer.from(raw as Buffer);
          let payload: unknown;
          if (!isBinary) payload = data.toString('utf8');
          else if (this.#binaryType === 'arraybuffer') payload = vu.arrayBuffer(data);
          else throw new Error('the k6 shim delivers binary messages as ArrayBuffer only: set binaryType = "arraybuffer"');
          this.#dispatch('message', { data: payload, origin: this.url });
        }),
      );
      this.#ws.on('ping', () => vu.task(this.#epoch, () => this.#dispatch('ping', {})));
      this.#ws.on('pong', () => vu.task(this.#epoch, () => this.#dispatch('pong', {})));
      this.#ws.on('error', (err: Error) => {
        this.#lastError = err.message;
      });
      this.#ws.on('close', (code: number, reason: Buffer) => vu.task(this.#epoch, () => this.#closed(code, reason.toString('utf8'))));
    }

    get binaryType(): string {
      return this.#binaryType;
    }
    set binaryType(v: string) {
      if (v !== 'blob' && v !== 'arraybuffer') throw new Error(`unknown binaryType ${v}, the supported ones are "blob" and "arraybuffer"`);
      this.#binaryType = v;
    }
    get bufferedAmount(): number {
      return this.#ws.bufferedAmount;
    }

    set onopen(fn: Listener | null) {
      this.#setOn('open', fn);
    }
    set onmessage(fn: Listener | null) {
      this.#setOn('message', fn);
    }
    set onerror(fn: Listener | null) {
      this.#setOn('error', fn);
    }
    set onclose(fn: Listener | null) {
      this.#setOn('close', fn);
    }
    set onping(fn: Listener | null) {
      this.#setOn('ping', fn);
    }
    set onpong(fn: Listener | null) {
      this.#setOn('pong', fn);
    }

    addEventListener(type: string, fn: Listener): void {
      if (typeof fn !== 'function') throw new Error(`handler for event type ${JSON.stringify(type)} isn't a callable function`);
      if (!(EVENT_TYPES as readonly string[]).includes(type)) throw new Error(`unknown event type ${JSON.stringify(type)}`);
      const list = this.#listeners.get(type as EventType) ?? [];
      list.push(fn);
      this.#listeners.set(type as EventType, list);
    }

    send(data: unknown): void {
      if (this.readyState !== 1) throw new Error('InvalidStateError');
      if (typeof data === 'string') this.#ws.send(data);
      else if (isArrayBuffer(data) || ArrayBuffer.isView(data)) this.#ws.send(bytesOf(data, 'data'), { binary: true });
      else throw new TypeError(`unsupported send type ${typeof data}`);
    }

    ping(): void {
      if (this.readyState !== 1) throw new Error('InvalidStateError');
      this.#ws.ping();
    }

    close(code?: number, reason?: string): void {
      if (this.readyState === 2 || this.readyState === 3) return;
      if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
        throw new Error(`InvalidAccessError: The close code must be either 1000, or between 3000 and 4999. ${code} is neither`);
      }
      this.readyState = 2;
      this.#clientClosed = true;
      this.#ws.close(code ?? 1000, reason ?? '');
    }

    #setOn(type: EventType, fn: Listener | null): void {
      if (fn === null || fn === undefined) this.#on.delete(type);
      else if (typeof fn !== 'function') throw new Error(`a value for 'on${type}' should be callable`);
      else this.#on.set(type, fn);
    }

    #dispatch(type: EventType, fields: Record<string, unknown>): void {
      const event = { type, target: this, timestamp: Date.now(), ...fields };
      const on = this.#on.get(type);
      if (on) on(event);
      for (const fn of this.#listeners.get(type) ?? []) fn(event);
    }

    /**
     * k6 (gorilla/websocket underneath) reports a close the server started
     * with a code other than 1000/1001 as an error, then the close; a
     * connection that never opened or just dropped closes without a code.
     */
    #closed(code: number, reason: string): void {
      if (this.readyState === 3) return;
      this.readyState = 3;
      sockets.delete(this.#handle);
      if (!this.#opened) {
        this.#dispatch('error', { error: this.#lastError || 'connection failed' });
        this.#dispatch('close', { reason: '' });
        return;
      }
      if (code === 1006) {
        this.#dispatch('close', { reason: '' });
        return;
      }
      if (!this.#clientClosed && code !== 1000 && code !== 1001) this.#dispatch('error', { error: `websocket: close ${code}: ${reason}` });
      this.#dispatch('close', { code, reason });
    }

    #abort(): void {
      this.readyState = 3;
      this.#ws.removeAllListeners();
      this.#ws.on('error', () => undefined);
      this.#ws.terminate();
    }
  };
}

// ---------------------------------------------------------------- thresholds

export interface ThresholdResult {
  metric: string;
  expression: string;
  ok: boolean;
  /** The aggregate compared, or null when it could not be computed. */
  actual: number | null;
  problem?: string;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  const i = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(i);
  const hi = Math.ceil(i);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (i - lo);
}

const AGGREGATES: Record<MetricType, RegExp> = {
  counter: /^count$/,
  trend: /^(avg|min|max|med|p\(\d+(\.\d+)?\))$/,
  rate: /^rate$/,
  gauge: /^value$/,
};

function aggregate(type: MetricType, agg: string, values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  switch (agg) {
    case 'count':
      return values.reduce((a, b) => a + b, 0);
    case 'rate':
      return values.length === 0 ? 0 : values.filter((v) => v !== 0).length / values.length;
    case 'value':
      return values.length === 0 ? 0 : values[values.length - 1]!;
    case 'avg':
      return values.length === 0 ? 0 : values.reduce((a, b) => a + b, 0) / values.length;
    case 'min':
      return sorted[0] ?? 0;
    case 'max':
      return sorted[sorted.length - 1] ?? 0;
    case 'med':
      return percentile(sorted, 50);
    default:
      return percentile(sorted, Number(/^p\((.+)\)$/.exec(agg)![1]));
  }
}

function compare(a: number, op: string, b: number): boolean {
  switch (op) {
    case '<':
      return a < b;
    case '<=':
      return a <= b;
    case '>':
      return a > b;
    case '>=':
      return a >= b;
    case '==':
    case '===':
      return a === b;
    default:
      return a !== b;
  }
}

/** Parses `metric{tag:value,...}` as k6 does for submetric thresholds. */
function parseThresholdKey(key: string): { metric: string; tags: Tags } {
  const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:\{(.*)\})?$/.exec(key);
  if (!m) throw new Error(`cannot read threshold key ${JSON.stringify(key)}`);
  const tags: Tags = {};
  for (const pair of (m[2] ?? '').split(',').filter((p) => p.trim() !== '')) {
    const i = pair.indexOf(':');
    if (i < 0) throw new Error(`cannot read tag ${JSON.stringify(pair)} in threshold key ${JSON.stringify(key)}`);
    tags[pair.slice(0, i).trim()] = pair.slice(i + 1).trim();
  }
  return { metric: m[1]!, tags };
}

function evaluateThresholds(thresholds: unknown, registry: Registry): ThresholdResult[] {
  const out: ThresholdResult[] = [];
  for (const [key, list] of Object.entries((thresholds ?? {}) as Record<string, unknown>)) {
    const { metric, tags } = parseThresholdKey(key);
    const type = registry.types.get(metric);
    for (const item of Array.isArray(list) ? list : [list]) {
      const expression = String(typeof item === 'object' && item !== null ? (item as { threshold: unknown }).threshold : item);
      const fail = (problem: string) => out.push({ metric: key, expression, ok: false, actual: null, problem });
      if (type === undefined) {
        fail(`no metric ${metric} was defined`);
        continue;
      }
      const m = /^\s*([a-z]+(?:\(\d+(?:\.\d+)?\))?)\s*(<=|>=|===|==|!=|<|>)\s*(-?\d+(?:\.\d+)?)\s*$/.exec(expression);
      if (!m || !AGGREGATES[type].test(m[1]!)) {
        fail(`the shim cannot evaluate ${JSON.stringify(expression)} on a ${type}`);
        continue;
      }
      const values = registry.samples.filter((s) => s.metric === metric && matches(s.tags, tags)).map((s) => s.value);
      const actual = aggregate(type, m[1]!, values);
      out.push({ metric: key, expression, ok: compare(actual, m[2]!, Number(m[3])), actual });
    }
  }
  return out;
}

function matches(tags: Tags, want: Partial<Tags>): boolean {
  return Object.entries(want).every(([k, v]) => tags[k] === v);
}

// ---------------------------------------------------------------- running a script

export interface K6RunOptions {
  /** The bundled script (bench/k6/dist/<name>.js). */
  script: string;
  /** __ENV, as `k6 run -e K=V` would set it; nothing else from process.env leaks in. */
  env?: Record<string, string>;
  /** Kill switch for the whole run, beyond the scenarios' own maxDuration. */
  timeoutMs?: number;
}

export interface K6RunResult {
  options: Record<string, unknown>;
  samples: Sample[];
  thresholds: ThresholdResult[];
  /** Iterations that ended with an exception or were interrupted, as `VU n iter i: message`. */
  failures: string[];
  iterations: number;
  logs: string[];
  /** Sum of a metric's sample values, over the samples carrying all of `tags`. */
  sum(metric: string, tags?: Tags): number;
  values(metric: string, tags?: Tags): number[];
  /** The values of one tag over a metric's samples, in the order they were recorded. */
  tagValues(metric: string, tag: string): string[];
}

interface Scenario {
  name: string;
  exec: string;
  vus: number;
  iterations: number;
  maxDurationMs: number;
}

function scenariosOf(options: Record<string, unknown>): Scenario[] {
  const scenarios = (options.scenarios ?? {}) as Record<string, Record<string, unknown>>;
  const out: Scenario[] = [];
  for (const [name, s] of Object.entries(scenarios)) {
    if (s.executor !== 'per-vu-iterations') throw new Error(`scenario ${name}: the k6 shim runs the per-vu-iterations executor only, not ${String(s.executor)}`);
    out.push({
      name,
      exec: typeof s.exec === 'string' ? s.exec : 'default',
      vus: Number(s.vus ?? 1),
      iterations: Number(s.iterations ?? 1),
      maxDurationMs: parseDuration(s.maxDuration, 600_000),
    });
  }
  if (out.length === 0) throw new Error('the k6 shim needs options.scenarios');
  return out;
}

/** Runs a k6 script like `k6 run`: init, setup, the scenarios' VUs, teardown, thresholds. */
export async function runK6(opts: K6RunOptions): Promise<K6RunResult> {
  const code = await loadScript(opts.script);
  const registry = new Registry();
  const logs: string[] = [];
  const failures: string[] = [];
  const run: RunContext = {
    registry,
    env: opts.env ?? {},
    scriptDir: dirname(resolve(opts.script)),
    log: (line) => logs.push(line),
  };
  const killAt = Date.now() + (opts.timeoutMs ?? 60_000);
  let iterations = 0;

  // VU 0 reads the options and runs setup and teardown, as k6's init/setup VU does.
  const first = new Vu(run, 0, code);
  const options = (first.exports.options ?? {}) as Record<string, unknown>;
  const scenarios = scenariosOf(options);
  let data: unknown;
  if (typeof first.exports.setup === 'function') {
    const setup = first.exports.setup as () => unknown;
    await first.iterate(0, async () => {
      data = await setup();
    }, killAt);
  }
  // k6 hands every VU its own copy of setup's data, through JSON.
  const copy = () => (data === undefined ? undefined : JSON.parse(JSON.stringify(data)));

  let nextVu = 1;
  await Promise.all(
    scenarios.map(async (sc) => {
      const deadline = Math.min(killAt, Date.now() + sc.maxDurationMs);
      const vus = Array.from({ length: sc.vus }, () => new Vu(run, nextVu++, code));
      await Promise.all(
        vus.map(async (vu) => {
          const fn = vu.exports[sc.exec];
          if (typeof fn !== 'function') throw new Error(`scenario ${sc.name}: the script exports no function ${sc.exec}`);
          for (let i = 0; i < sc.iterations; i++) {
            try {
              await vu.iterate(i, () => (fn as (d: unknown) => unknown)(copy()), deadline);
              iterations++;
            } catch (err) {
              failures.push(`VU ${vu.id} iter ${i}: ${err instanceof Error ? err.message : String(err)}`);
            }
          }
        }),
      );
    }),
  );
  if (typeof first.exports.teardown === 'function') {
    const teardown = first.exports.teardown as (d: unknown) => unknown;
    await first.iterate(0, () => teardown(copy()), killAt);
  }

  const select = (metric: string, tags: Tags = {}) => registry.samples.filter((s) => s.metric === metric && matches(s.tags, tags));
  return {
    options,
    samples: registry.samples,
    thresholds: evaluateThresholds(options.thresholds, registry),
    failures,
    iterations,
    logs,
    sum: (metric, tags) => select(metric, tags).reduce((a, s) => a + s.value, 0),
    values: (metric, tags) => select(metric, tags).map((s) => s.value),
    tagValues: (metric, tag) => select(metric).map((s) => s.tags[tag] ?? ''),
  };
}

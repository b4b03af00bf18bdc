/**
 * A small Prometheus text-format registry: counters, gauges and histograms
 * with fixed label sets. Enough for /metrics without a dependency.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

type Labels = Record<string, string>;

function labelKey(labels: Labels | undefined): string {
  if (!labels) return '';
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}="${String(labels[k]).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

interface Metric {
  render(): string;
}

export class Counter implements Metric {
  readonly #values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
    /** Reads totals kept elsewhere (the engine's) at render time, instead of inc(). */
    readonly collect?: () => number | Array<[Labels, number]>,
  ) {}
  inc(labels?: Labels, by = 1): void {
    const k = labelKey(labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }
  /** One label set's series, its key built once: for counters bumped on every frame. */
  series(labels: Labels): { inc(by?: number): void } {
    const k = labelKey(labels);
    return { inc: (by = 1) => void this.#values.set(k, (this.#values.get(k) ?? 0) + by) };
  }
  get(labels?: Labels): number {
    return this.#values.get(labelKey(labels)) ?? 0;
  }
  render(): string {
    if (this.collect) {
      const v = this.collect();
      if (typeof v === 'number') this.#values.set('', v);
      else for (const [labels, n] of v) this.#values.set(labelKey(labels), n);
    }
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    if (this.#values.size === 0) lines.push(`${this.name} 0`);
    for (const [k, v] of this.#values) lines.push(`${this.name}${k} ${v}`);
    return lines.join('\n');
  }
}

export class Gauge implements Metric {
  readonly #values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly collect?: () => number | Array<[Labels, number]>,
  ) {}
  set(value: number, labels?: Labels): void {
    this.#values.set(labelKey(labels), value);
  }
  inc(labels?: Labels, by = 1): void {
    const k = labelKey(labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }
  dec(labels?: Labels, by = 1): void {
    this.inc(labels, -by);
  }
  get(labels?: Labels): number {
    return this.#values.get(labelKey(labels)) ?? 0;
  }
  render(): string {
    if (this.collect) {
      const v = this.collect();
      if (typeof v === 'number') this.#values.set('', v);
      else for (const [labels, n] of v) this.#values.set(labelKey(labels), n);
    }
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`];
    if (this.#values.size === 0) lines.push(`${this.name} 0`);
    for (const [k, v] of this.#values) lines.push(`${this.name}${k} ${v}`);
    return lines.join('\n');
  }
}

/** A histogram kept elsewhere: cumulative count per bucket of the histogram's `buckets`, sum and count. */
export interface HistogramValues {
  counts: readonly number[];
  sum: number;
  count: number;
}

export class Histogram implements Metric {
  readonly #counts: number[];
  #sum = 0;
  #count = 0;
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
    /** Reads buckets kept elsewhere (the engine's) at render time, instead of observe(). */
    readonly collect?: () => HistogramValues,
  ) {
    this.#counts = new Array(buckets.length).fill(0);
  }
  observe(v: number): void {
    this.#sum += v;
    this.#count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]) this.#counts[i]++;
  }
  get count(): number {
    return this.#count;
  }
  render(): string {
    if (this.collect) {
      const v = this.collect();
      for (let i = 0; i < this.buckets.length; i++) this.#counts[i] = v.counts[i] ?? v.count;
      this.#sum = v.sum;
      this.#count = v.count;
    }
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket{le="${b}"} ${this.#counts[i]}`));
    lines.push(`${this.name}_bucket{le="+Inf"} ${this.#count}`, `${this.name}_sum ${this.#sum}`, `${this.name}_count ${this.#count}`);
    return lines.join('\n');
  }
}

export class Registry {
  readonly #metrics: Metric[] = [];
  readonly #loop: IntervalHistogram;
  constructor() {
    this.#loop = monitorEventLoopDelay({ resolution: 10 });
    this.#loop.enable();
    this.gauge('quickdash_event_loop_lag_seconds', 'Event-loop delay of the gateway thread, p99 since start', () => this.#loop.percentile(99) / 1e9);
  }
  counter(name: string, help: string, collect?: () => number | Array<[Labels, number]>): Counter {
    const m = new Counter(name, help, collect);
    this.#metrics.push(m);
    return m;
  }
  gauge(name: string, help: string, collect?: () => number | Array<[Labels, number]>): Gauge {
    const m = new Gauge(name, help, collect);
    this.#metrics.push(m);
    return m;
  }
  histogram(name: string, help: string, buckets: readonly number[], collect?: () => HistogramValues): Histogram {
    const m = new Histogram(name, help, buckets, collect);
    this.#metrics.push(m);
    return m;
  }
  render(): string {
    return this.#metrics.map((m) => m.render()).join('\n') + '\n';
  }
  close(): void {
    this.#loop.disable();
  }
}

/**
 * The embedded PGlite event store on its own worker thread, behind the
 * EventStore port. Calls are forwarded as messages in order; the worker
 * answers each once. Data crosses by structured clone, which the port's
 * plain-JSON events and snapshots allow.
 */
import { Worker } from 'node:worker_threads';
import type { EventStore, LiveStream, RiderDailyStats, RiderStatsDelta, Snapshot, StoredEvent } from '../../engine/index.ts';
import type { EmbeddedStoreOptions } from './pglite.ts';

interface Waiter {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class ThreadedEmbeddedStore implements EventStore {
  readonly #worker: Worker;
  readonly #waiters = new Map<number, Waiter>();
  #nextId = 1;
  #closed = false;
  #failure: Error | null = null;

  private constructor(worker: Worker) {
    this.#worker = worker;
    worker.on('message', (m: { id: number; ok: boolean; value?: unknown; error?: { name?: string; message: string } }) => {
      const w = this.#waiters.get(m.id);
      if (!w) return;
      this.#waiters.delete(m.id);
      if (m.ok) w.resolve(m.value);
      else w.reject(Object.assign(new Error(m.error!.message), { name: m.error!.name ?? 'Error' }));
    });
    const fail = (err: Error) => {
      this.#failure = err;
      for (const w of this.#waiters.values()) w.reject(err);
      this.#waiters.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => {
      if (!this.#closed) fail(new Error(`event store worker exited with code ${code}`));
    });
  }

  /** Starts the worker and waits until its store is open (PGlite's start-up runs there). */
  static async open(options: EmbeddedStoreOptions = {}): Promise<ThreadedEmbeddedStore> {
    const entry = new URL(import.meta.url.endsWith('.ts') ? './store-thread.ts' : './store-thread.js', import.meta.url).href;
    const worker = new Worker(new URL('./store-thread-boot.mjs', import.meta.url), { workerData: { entry, options }, name: 'event-store' });
    await new Promise<void>((resolve, reject) => {
      const onMessage = (m: { ready?: boolean }) => {
        if (!m.ready) return;
        worker.off('message', onMessage);
        worker.off('error', reject);
        resolve();
      };
      worker.on('message', onMessage);
      worker.once('error', reject);
    });
    return new ThreadedEmbeddedStore(worker);
  }

  #call<T>(method: string, ...args: unknown[]): Promise<T> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#closed) return Promise.reject(new Error('event store is closed'));
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      this.#waiters.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#worker.postMessage({ id, method, args });
    });
  }

  init(): Promise<void> {
    return this.#call('init');
  }
  append(events: StoredEvent[], stats?: RiderStatsDelta[]): Promise<void> {
    return this.#call('append', events, stats);
  }
  readStream(stream: string, afterSeq?: number): Promise<StoredEvent[]> {
    return this.#call('readStream', stream, afterSeq);
  }
  saveSnapshots(snapshots: Snapshot[]): Promise<void> {
    return this.#call('saveSnapshots', snapshots);
  }
  loadLive(): Promise<LiveStream[]> {
    return this.#call('loadLive');
  }
  riderDailyStats(riderId: string, day: string): Promise<RiderDailyStats | null> {
    return this.#call('riderDailyStats', riderId, day);
  }
  /** Drops the store's schema (tests and benchmarks). */
  drop(): Promise<void> {
    return this.#call('drop');
  }
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#call('close').catch(() => undefined);
    this.#closed = true;
    await this.#worker.terminate();
  }
}

/** The embedded store on its own thread: the default for a node. */
export function createThreadedEmbeddedStore(options: EmbeddedStoreOptions = {}): Promise<ThreadedEmbeddedStore> {
  return ThreadedEmbeddedStore.open(options);
}

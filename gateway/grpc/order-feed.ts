/**
 * A node-local, numbered feed of every durable order change, for
 * WatchOrders on store, zone and cell scopes. The engine offers no global
 * order log to resume from (each order has its own seq), so this node
 * numbers what it sees and keeps the last `capacity` changes in a ring:
 * a watcher that reconnects to the same node within the ring resumes with no
 * gap and no repeat; anything else must re-read and start live
 * (protos/README.md, "Watching orders and resuming").
 *
 * Positions are `<bootId>.<n>`: the boot id makes a cursor from another
 * node, or from this node before a restart, recognisably foreign instead of
 * silently pointing at different events.
 */
import { randomBytes } from 'node:crypto';
import pino, { type Logger } from 'pino';
import { DispatchError, type DispatchEngine, type OrderUpdate, type Unsubscribe } from '../../engine/index.ts';

export const DEFAULT_WATCH_BUFFER = 100_000;

export interface FeedEntry {
  /** 1, 2, 3, ... in the order this node saw the changes. */
  n: number;
  update: OrderUpdate;
}

export interface OrderFeedOptions {
  /** Changes kept for resuming (default 100,000). */
  capacity?: number;
  /** Default: random, new on every start of the process. */
  bootId?: string;
  logger?: Logger;
}

const POSITION = /^([0-9a-z]{1,32})\.(\d{1,15})$/;

export class OrderFeed {
  readonly bootId: string;
  readonly capacity: number;
  readonly #engine: DispatchEngine;
  readonly #ring: Array<FeedEntry | undefined>;
  /** n of the newest entry; 0 before the first. */
  #last = 0;
  readonly #listeners = new Set<(e: FeedEntry, replayed: boolean) => void>();
  #unwatch: Unsubscribe | null = null;
  readonly #log: Logger;

  constructor(engine: DispatchEngine, options: OrderFeedOptions = {}) {
    const capacity = options.capacity ?? DEFAULT_WATCH_BUFFER;
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`watch buffer must be a positive integer, got ${capacity}`);
    const bootId = options.bootId ?? randomBytes(6).toString('hex');
    if (!/^[0-9a-z]{1,32}$/.test(bootId)) throw new RangeError('bootId must be 1 to 32 characters of [0-9a-z]');
    this.#engine = engine;
    this.capacity = capacity;
    this.bootId = bootId;
    this.#ring = new Array<FeedEntry | undefined>(capacity);
    this.#log = options.logger ?? pino({ level: 'silent' });
  }

  /** Subscribes to the engine once; changes from now on are numbered and kept. */
  start(): void {
    if (this.#unwatch) return;
    this.#unwatch = this.#engine.watchOrders((update) => this.#push(update));
  }

  stop(): void {
    this.#unwatch?.();
    this.#unwatch = null;
    this.#listeners.clear();
  }

  /** n of the newest change seen (0 before any). */
  get last(): number {
    return this.#last;
  }

  /** n of the oldest change still in the ring. */
  get oldest(): number {
    return Math.max(1, this.#last - this.capacity + 1);
  }

  position(n: number): string {
    return `${this.bootId}.${n}`;
  }

  /**
   * The n a watch starts after: the newest for an empty position (live
   * only), else the cursor's, if the ring still holds everything after it.
   * @throws QD_ERR_INVALID_ARGUMENT, field after_position, for a malformed,
   *   foreign or too old cursor (the contract's code for "cannot resume").
   */
  resolve(afterPosition: string): number {
    if (afterPosition === '') return this.#last;
    const m = POSITION.exec(afterPosition);
    if (!m) throw cannotResume('is not a position of a store, zone or cells stream');
    if (m[1] !== this.bootId) throw cannotResume('comes from another server or from before a restart');
    const n = Number(m[2]);
    if (n > this.#last) throw cannotResume('is ahead of this server');
    if (n < this.oldest - 1) throw cannotResume(`is older than the last ${this.capacity} changes this server keeps`);
    return n;
  }

  /**
   * Calls `listener` with every buffered change after `afterN` (replayed),
   * then with every new one. Synchronous up to the return, so nothing falls between
   * the replay and the live part.
   */
  follow(afterN: number, listener: (e: FeedEntry, replayed: boolean) => void): Unsubscribe {
    if (afterN < this.oldest - 1) throw cannotResume(`is older than the last ${this.capacity} changes this server keeps`);
    for (let n = afterN + 1; n <= this.#last; n++) listener(this.#ring[n % this.capacity]!, true);
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #push(update: OrderUpdate): void {
    const entry: FeedEntry = { n: ++this.#last, update };
    this.#ring[entry.n % this.capacity] = entry;
    // A listener's failure is its own stream's problem, never the feed's or the engine's.
    for (const l of this.#listeners) {
      try {
        l(entry, false);
      } catch (err) {
        this.#listeners.delete(l);
        this.#log.error({ err, orderId: update.orderId }, 'order feed listener threw; unsubscribed');
      }
    }
  }
}

function cannotResume(why: string): DispatchError {
  return new DispatchError('QD_ERR_INVALID_ARGUMENT', {
    field: 'after_position',
    reason: `the cursor ${why}; read the orders you need with GetOrder and watch again with an empty after_position`,
  });
}

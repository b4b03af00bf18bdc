/**
 * One WatchOrders response stream: events are queued as the engine reports
 * them, enriched (lines, fee, payment) in order, and written no faster than
 * the client reads (call.write() returning false waits for 'drain'). A client
 * that falls too far behind is cut off with RESOURCE_EXHAUSTED and the last
 * position it was sent, rather than letting the queue grow without bound.
 */
import { Metadata, status, type ServerWritableStream, type ServiceError } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { OrderUpdate, OrderView } from '../../engine/index.ts';
import type { WatchOrdersRequest, WatchOrdersResponse } from '../../protos/gen/quickdash/v1/dispatch.ts';
import { orderEventToProto, type OrderExtras } from './codec.ts';

/** Trailer of a RESOURCE_EXHAUSTED watch: the after_position to reconnect with. */
export const RESUME_POSITION_KEY = 'qd-resume-position';

export const DEFAULT_WATCH_MAX_LAG = 10_000;

interface Item {
  position: string;
  update: OrderUpdate;
  /** End the stream once this one is written (a one-order stream's terminal event). */
  last: boolean;
  /** Replayed from the feed's buffer on resume: already held there, so it does not count as lag. */
  replayed: boolean;
  extras?: Promise<OrderExtras>;
}

/** Enrichments (catalog and ledger reads for orders not cached yet) started ahead of the one being written. */
const PREFETCH = 8;

export interface WatchStreamOptions {
  /** Most events queued and not yet written before the client is cut off. */
  maxLag: number;
  enrich: (order: OrderView) => Promise<OrderExtras>;
  /** Error to answer for a failure while writing (enrichment, encoding). */
  errorFor: (err: unknown) => Partial<ServiceError>;
  log: Logger;
  /** Where the client resumes if it is cut off before anything was written. */
  startPosition: string;
}

export class WatchStream {
  readonly #call: ServerWritableStream<WatchOrdersRequest, WatchOrdersResponse>;
  readonly #o: WatchStreamOptions;
  #queue: Item[] = [];
  #head = 0;
  #pumping = false;
  #closed = false;
  #wake: (() => void) | null = null;
  readonly #cleanups: Array<() => void> = [];
  #lastPosition: string;
  #written = 0;
  /** Replayed items still queued (they are at the front of the queue). */
  #replayLeft = 0;

  constructor(call: ServerWritableStream<WatchOrdersRequest, WatchOrdersResponse>, options: WatchStreamOptions) {
    this.#call = call;
    this.#o = options;
    this.#lastPosition = options.startPosition;
    call.on('cancelled', () => {
      this.#o.log.debug({ written: this.#written }, 'watch cancelled by the client');
      this.#close();
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Runs when the stream closes for any reason (unsubscribe, timers). Runs at once if already closed. */
  onClose(fn: () => void): void {
    if (this.#closed) fn();
    else this.#cleanups.push(fn);
  }

  /** Sets where a cut-off client resumes when nothing was written yet (known only once the watch started). */
  set startPosition(p: string) {
    if (this.#written === 0) this.#lastPosition = p;
  }

  /**
   * Queues an event. `replayed` events (a resume's backlog) never trip the
   * lag limit: a reconnecting client may be far behind as long as it reads;
   * the live events that pile up behind them do.
   */
  push(position: string, update: OrderUpdate, options: { last?: boolean; replayed?: boolean } = {}): void {
    if (this.#closed) return;
    const replayed = options.replayed ?? false;
    const behind = this.#queue.length - this.#head - this.#replayLeft;
    if (!replayed && behind >= this.#o.maxLag) {
      this.#o.log.warn({ behind, lastPosition: this.#lastPosition }, 'watcher too slow; cut off');
      const metadata = new Metadata();
      metadata.set(RESUME_POSITION_KEY, this.#lastPosition);
      this.fail({
        code: status.RESOURCE_EXHAUSTED,
        details: `more than ${this.#o.maxLag} events behind; watch again with after_position = "${this.#lastPosition}"`,
        metadata,
      });
      return;
    }
    if (replayed) this.#replayLeft++;
    this.#queue.push({ position, update, last: options.last ?? false, replayed });
    if (!this.#pumping) void this.#pump();
  }

  /** Ends the stream with an error status (after what was already written). */
  fail(err: Partial<ServiceError>): void {
    if (this.#closed) return;
    this.#close();
    this.#call.emit('error', err);
  }

  /** Ends the stream with OK. */
  end(): void {
    if (this.#closed) return;
    this.#close();
    this.#call.end();
  }

  async #pump(): Promise<void> {
    this.#pumping = true;
    try {
      while (!this.#closed && this.#head < this.#queue.length) {
        // Reads for the next few events overlap, so a burst of new orders is not fetched one round trip at a time.
        for (let i = this.#head; i < Math.min(this.#queue.length, this.#head + PREFETCH); i++) {
          const next = this.#queue[i];
          if (!next.extras) {
            next.extras = this.#o.enrich(next.update.order);
            // Awaited in turn below; this only keeps a failure ahead of its turn from being reported as unhandled.
            next.extras.catch(() => {});
          }
        }
        const item = this.#queue[this.#head];
        const extras = await item.extras!;
        if (this.#closed) return;
        this.#queue[this.#head++] = undefined as unknown as Item;
        if (item.replayed) this.#replayLeft--;
        // Compact now and then so the queue does not keep written events alive.
        if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
          this.#queue = this.#queue.slice(this.#head);
          this.#head = 0;
        }
        const more = this.#call.write({ event: orderEventToProto(item.position, item.update, extras) });
        this.#lastPosition = item.position;
        this.#written++;
        if (item.last) {
          this.end();
          return;
        }
        if (!more) await this.#drained();
      }
    } catch (err) {
      this.fail(this.#o.errorFor(err));
    } finally {
      this.#pumping = false;
    }
  }

  #drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.#call.off('drain', done);
        this.#wake = null;
        resolve();
      };
      this.#wake = done;
      this.#call.on('drain', done);
    });
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    this.#head = 0;
    this.#replayLeft = 0;
    this.#wake?.();
    for (const fn of this.#cleanups.splice(0)) {
      try {
        fn();
      } catch (err) {
        this.#o.log.error({ err }, 'watch cleanup threw');
      }
    }
  }
}

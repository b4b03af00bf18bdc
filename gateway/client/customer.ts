/**
 * The customer app's client: follows orders and reports each status change
 * exactly once, in order, across reconnects, plus the rider's position.
 *
 * A follow lives on one socket at the gateway, so it is never replayed with
 * its old `s`: after every reconnect each followed order is followed again
 * with `afterSeq` = the last status seq seen, and statuses at or below it are
 * dropped, so none is missed and none is reported twice.
 */
import type { OrderStatusMessage, RiderPositionMessage } from '../protocol.ts';
import { MessageType, type AppServerMessage } from './codec.ts';
import { BaseClient, type ClientOptions, type CommandResult, type ConnectionEvents } from './connection.ts';
import { QuickDashError } from './errors.ts';

export type CustomerClientOptions = ClientOptions;
export type OrderStatusEvent = Omit<OrderStatusMessage, 't'>;
export type RiderPositionEvent = Omit<RiderPositionMessage, 't'>;

export interface CustomerEvents extends ConnectionEvents {
  /** One per order event, in seq order, each exactly once. */
  status: OrderStatusEvent;
  /** Where the rider carrying a followed order is (at most about once a second). */
  position: RiderPositionEvent;
}

interface Follow {
  orderId: string;
  /** Highest status seq reported to the app. */
  lastSeq: number;
  lastPositionTs: number;
  /** follow() calls waiting for the gateway's first answer. */
  waiters: Array<{ resolve(r: CommandResult): void; reject(e: QuickDashError): void }>;
}

export class CustomerClient extends BaseClient<CustomerEvents> {
  readonly #follows = new Map<string, Follow>();

  constructor(options: CustomerClientOptions) {
    super(options, 'customer');
  }

  /** Orders followed. */
  get following(): string[] {
    return [...this.#follows.keys()];
  }

  /** Highest status seq seen for an order: persist it to resume after an app restart with follow(id, { afterSeq }). */
  lastSeq(orderId: string): number | undefined {
    return this.#follows.get(orderId)?.lastSeq;
  }

  /**
   * Follows an order: every status after `afterSeq` (default: the whole
   * history), then live ones. Resolves with the gateway's answer (the order's
   * current status and seq); rejects, and stops following, if the gateway
   * refuses (QD_ERR_ORDER_NOT_FOUND for an order that is not this customer's).
   * Issued while disconnected, it is sent on connect.
   */
  follow(orderId: string, options: { afterSeq?: number } = {}): Promise<CommandResult> {
    let f = this.#follows.get(orderId);
    if (!f) {
      f = { orderId, lastSeq: options.afterSeq ?? 0, lastPositionTs: 0, waiters: [] };
      this.#follows.set(orderId, f);
    } else if (options.afterSeq !== undefined && options.afterSeq > f.lastSeq) {
      f.lastSeq = options.afterSeq;
    }
    const follow = f;
    const answered = new Promise<CommandResult>((resolve, reject) => follow.waiters.push({ resolve, reject }));
    if (this.state === 'open') this.#send(follow);
    else if (this.state === 'closed') this.#drop(follow, QuickDashError.client('QD_CLIENT_CLOSED'));
    return answered;
  }

  /** Stops following; resolves once the gateway stops sending (or the socket is gone, which stops it too). */
  async unfollow(orderId: string): Promise<void> {
    const f = this.#follows.get(orderId);
    if (!f) return;
    this.#drop(f, QuickDashError.client('QD_CLIENT_CANCELLED', 'unfollowed before the follow was answered'));
    if (this.state !== 'open') return;
    try {
      await this.conn.command({ t: MessageType.unfollow, orderId }, false);
    } catch (err) {
      // A lost socket ends every follow on it.
      if (!(err instanceof QuickDashError && err.code === 'QD_CLIENT_DISCONNECTED')) throw err;
    }
  }

  #send(f: Follow): void {
    const afterSeq = f.lastSeq > 0 ? f.lastSeq : undefined;
    this.conn.command({ t: MessageType.follow, orderId: f.orderId, afterSeq }, false).then(
      (result) => {
        if (this.#follows.get(f.orderId) !== f) return;
        for (const w of f.waiters.splice(0)) w.resolve(result);
      },
      (err: QuickDashError) => {
        // The next hello follows again.
        if (err.code === 'QD_CLIENT_DISCONNECTED') return;
        if (this.#follows.get(f.orderId) !== f) return;
        const waiting = f.waiters.length > 0;
        this.#drop(f, err);
        // Nobody awaits a re-follow after a reconnect: its refusal is still news.
        if (!waiting && err.code !== 'QD_CLIENT_CLOSED') this.emit('error', err);
      },
    );
  }

  #drop(f: Follow, err: QuickDashError): void {
    if (this.#follows.get(f.orderId) === f) this.#follows.delete(f.orderId);
    for (const w of f.waiters.splice(0)) w.reject(err);
  }

  protected override onOpened(): void {
    for (const f of this.#follows.values()) this.#send(f);
  }

  protected override onClosed(err: QuickDashError): void {
    for (const f of [...this.#follows.values()]) for (const w of f.waiters.splice(0)) w.reject(err);
  }

  protected override onPush(m: AppServerMessage): void {
    if (m.t === MessageType.orderStatus) {
      const f = this.#follows.get(m.orderId);
      // Replayed after a re-follow, or from a follow since dropped.
      if (!f || m.seq <= f.lastSeq) return;
      f.lastSeq = m.seq;
      const { t: _t, ...status } = m;
      this.emit('status', status);
    } else if (m.t === MessageType.riderPosition) {
      const f = this.#follows.get(m.orderId);
      if (!f || m.ts <= f.lastPositionTs) return;
      f.lastPositionTs = m.ts;
      const { t: _t, ...position } = m;
      this.emit('position', position);
    }
  }
}

/**
 * The rider app's client: shift commands, offers, order steps and GPS.
 * Commands resolve with their ack and reject with a QuickDashError; issued
 * while offline they are queued and sent, in order, once reconnected.
 */
import type { ArrivalPlace, FixTuple, OfferMessage, OfferGoneMessage, OnlineMessage, RiderStateMessage } from '../protocol.ts';
import { Limits, MessageType, type AppServerMessage } from './codec.ts';
import { BaseClient, type ClientOptions, type CommandResult, type ConnectionEvents, type FixReport } from './connection.ts';

export interface RiderClientOptions extends ClientOptions {
  /** Hold fixes this long and send them as one frame; 0 (default) sends each fix at once. */
  fixBatchMs?: number;
  /** Fixes held while offline; beyond this the oldest are dropped. Default 5000. */
  maxQueuedFixes?: number;
}

export interface GpsFix {
  lat: number;
  lng: number;
  /** When the phone took the fix, epoch ms. */
  ts: number;
  /** The rider's fix counter: it must keep increasing across app restarts, or newer fixes are ignored as stale. */
  seq: number;
}

export interface OnlineOptions {
  capacity?: number;
  position?: OnlineMessage['position'];
  /** Epoch ms: no order is offered that cannot be picked up before it. */
  shiftEndsAt?: number;
}

export type Offer = Omit<OfferMessage, 't'>;
export type OfferGone = Omit<OfferGoneMessage, 't'>;
export type RiderState = Omit<RiderStateMessage, 't'>;

export interface RiderEvents extends ConnectionEvents {
  /** A new offer: answer with accept() or decline() before `expiresAt` (server clock: see serverNow()). */
  offer: Offer;
  /** The offer can no longer be accepted; remove it from the screen. */
  offerGone: OfferGone;
  /** The rider's status and orders, newest seq only. */
  riderState: RiderState;
  /** A GPS frame was answered. */
  fixes: FixReport;
}

const MAX_TIME = 8_640_000_000_000_000;

/** Checks a fix before it joins a batch: one bad fix would make the gateway refuse the whole frame. */
function toTuple(f: GpsFix, where: string): FixTuple {
  if (typeof f.lat !== 'number' || !(f.lat >= -90 && f.lat <= 90)) throw new RangeError(`${where}.lat must be a number in -90..90`);
  if (typeof f.lng !== 'number' || !(f.lng >= -180 && f.lng <= 180)) throw new RangeError(`${where}.lng must be a number in -180..180`);
  if (!Number.isInteger(f.ts) || f.ts < 0 || f.ts > MAX_TIME) throw new RangeError(`${where}.ts must be epoch milliseconds`);
  if (!Number.isSafeInteger(f.seq) || f.seq < 0) throw new RangeError(`${where}.seq must be a non-negative integer`);
  return [f.lat, f.lng, f.ts, f.seq];
}

export class RiderClient extends BaseClient<RiderEvents> {
  readonly #batchMs: number;
  readonly #maxFixes: number;
  #offer: Offer | null = null;
  /** Offers this rider answered itself: their disappearance is no news. */
  #answered = new Set<string>();
  #riderState: RiderState | null = null;

  constructor(options: RiderClientOptions) {
    super(options, 'rider');
    this.#batchMs = Math.max(0, options.fixBatchMs ?? 0);
    this.#maxFixes = Math.max(Limits.maxFixesPerFrame, options.maxQueuedFixes ?? 5_000);
  }

  /** The pending offer, if any. */
  get offer(): Offer | null {
    return this.#offer;
  }
  /** The last riderState received. */
  get riderState(): RiderState | null {
    return this.#riderState;
  }
  /** Fixes dropped because the offline queue was full. */
  get droppedFixes(): number {
    return this.conn.droppedFixes;
  }

  // ------------------------------------------------------------ commands

  online(options: OnlineOptions = {}): Promise<CommandResult> {
    const { capacity, position, shiftEndsAt } = options;
    return this.conn.command({ t: MessageType.online, capacity, position, shiftEndsAt });
  }
  /** Refused with QD_ERR_RIDER_BUSY while the rider holds orders. */
  offline(): Promise<CommandResult> {
    return this.conn.command({ t: MessageType.offline });
  }
  setBreak(on: boolean): Promise<CommandResult> {
    return this.conn.command({ t: MessageType.break, on });
  }
  accept(orderId: string): Promise<CommandResult> {
    this.#answered.add(orderId);
    return this.conn.command({ t: MessageType.accept, orderId });
  }
  decline(orderId: string): Promise<CommandResult> {
    this.#answered.add(orderId);
    return this.conn.command({ t: MessageType.decline, orderId });
  }
  arrived(orderId: string, where: ArrivalPlace): Promise<CommandResult> {
    return this.conn.command({ t: MessageType.arrived, orderId, where });
  }
  pickedUp(orderId: string): Promise<CommandResult> {
    return this.conn.command({ t: MessageType.pickedUp, orderId });
  }
  /** Needs the customer's one-time code or a proof reference (QD_ERR_BAD_PROOF otherwise). */
  delivered(orderId: string, proof: { otp?: string; proofRef?: string } = {}): Promise<CommandResult> {
    return this.conn.command({ t: MessageType.delivered, orderId, otp: proof.otp, proofRef: proof.proofRef });
  }

  // ------------------------------------------------------------ GPS

  /**
   * Queues one fix. Fire and forget: answers arrive as 'fixes' events,
   * refusals as 'error'; await flushFixes() to know they were applied.
   * @throws RangeError for a fix the gateway would refuse.
   */
  sendFix(fix: GpsFix): void {
    this.conn.queueFixes([toTuple(fix, 'fix')], this.#batchMs, this.#maxFixes);
  }

  /** Queues fixes, oldest first; all are checked before any is queued. */
  sendFixes(fixes: readonly GpsFix[]): void {
    const tuples = fixes.map((f, i) => toTuple(f, `fixes[${i}]`));
    if (tuples.length > 0) this.conn.queueFixes(tuples, this.#batchMs, this.#maxFixes);
  }

  /** Sends held fixes now; resolves with the summed answers of every fix queued so far. */
  flushFixes(): Promise<FixReport> {
    return this.conn.flushFixes();
  }

  // ------------------------------------------------------------ frames

  protected override onPush(m: AppServerMessage): void {
    switch (m.t) {
      case MessageType.offer: {
        const { t: _t, ...offer } = m;
        // The gateway may repeat a pending offer on a new socket.
        if (this.#offer?.orderId === offer.orderId && this.#offer.expiresAt === offer.expiresAt) return;
        this.#offer = offer;
        this.#answered = new Set();
        this.emit('offer', offer);
        return;
      }
      case MessageType.offerGone: {
        const { t: _t, ...gone } = m;
        if (this.#offer?.orderId === gone.orderId) this.#offer = null;
        this.emit('offerGone', gone);
        return;
      }
      case MessageType.riderState: {
        const { t: _t, ...state } = m;
        if (this.#riderState && state.seq < this.#riderState.seq) return;
        this.#riderState = state;
        const offer = this.#offer;
        if (offer && state.status !== 'offered') {
          this.#offer = null;
          // Gone without an offerGone frame: it ended while this client was disconnected.
          if (!state.orderIds.includes(offer.orderId) && !this.#answered.has(offer.orderId)) {
            this.emit('offerGone', { orderId: offer.orderId, reason: this.serverNow() >= offer.expiresAt ? 'expired' : 'void' });
          }
        }
        this.emit('riderState', state);
        return;
      }
      default:
        return;
    }
  }

  protected override onFixes(result: CommandResult): void {
    this.emit('fixes', { accepted: result.accepted ?? 0, stale: result.stale ?? 0, rejected: result.rejected ?? 0 });
  }
}

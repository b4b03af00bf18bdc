/**
 * The outcomes a session remembers for replays (docs/protocol.md, Sequencing):
 * the last `size` remembered, the oldest dropped first.
 *
 * A busy rider's window turns over every few seconds, so outcomes kept as
 * objects would live just long enough to be promoted and then die in the old
 * generation, the gateway's largest garbage-collection cost. Fix acks, nearly
 * every outcome, are kept as three counts in typed arrays and rebuilt on a
 * replay; other outcomes keep their message.
 */
import { MessageType, type Message } from './protocol.ts';

export class ReplayWindow {
  readonly #size: number;
  /** `s` of each slot, in a ring: slot `#next` is the next to be written. */
  readonly #s: Uint32Array;
  /** accepted, stale, rejected of a fix ack; counts of one frame (at most maxFixesPerFrame) fit 16 bits. */
  readonly #fixCounts: Uint16Array;
  /** The message of every other outcome, by slot; undefined for a fix ack. Allocated at the first one. */
  #messages: Array<Message | undefined> | null = null;
  #next = 0;
  #count = 0;

  constructor(size: number) {
    this.#size = size;
    this.#s = new Uint32Array(size);
    this.#fixCounts = new Uint16Array(size * 3);
  }

  remember(s: number, o: Message): void {
    const slot = this.#next;
    this.#next = (slot + 1) % this.#size;
    if (this.#count < this.#size) this.#count++;
    this.#s[slot] = s;
    // Only acks to fix and fixes carry `accepted`, and their result is exactly accepted, stale and rejected.
    const fix = o.t === MessageType.ack ? o.result : undefined;
    if (fix?.accepted !== undefined) {
      this.#fixCounts[slot * 3] = fix.accepted;
      this.#fixCounts[slot * 3 + 1] = fix.stale!;
      this.#fixCounts[slot * 3 + 2] = fix.rejected!;
      if (this.#messages) this.#messages[slot] = undefined;
    } else {
      (this.#messages ??= new Array<Message | undefined>(this.#size))[slot] = o;
    }
  }

  /** The outcome remembered for `s`, as first sent; undefined when it is not among the last `size`. */
  outcome(s: number): Message | undefined {
    // Newest first: a replay is nearly always of the last few commands.
    for (let i = 1; i <= this.#count; i++) {
      const slot = (this.#next - i + this.#size) % this.#size;
      if (this.#s[slot] !== s) continue;
      const message = this.#messages?.[slot];
      if (message) return message;
      const c = this.#fixCounts;
      return { t: MessageType.ack, s, result: { accepted: c[slot * 3]!, stale: c[slot * 3 + 1]!, rejected: c[slot * 3 + 2]! } };
    }
    return undefined;
  }
}

/**
 * A hashed timer wheel for deadlines (offer expiry, search limits), keyed by
 * string. Scheduling and cancelling are O(1); `advance` visits only the slots
 * that time passed over, or the whole wheel once when a virtual clock jumps
 * further than a full turn.
 */
export interface TimerWheelOptions {
  tickMs?: number;
  slots?: number;
}

export class TimerWheel {
  readonly #tickMs: number;
  readonly #slots: Array<Set<string> | undefined>;
  readonly #deadline = new Map<string, number>();
  readonly #late = new Set<string>();
  /** Last tick number fully processed; -Infinity until the first advance. */
  #cursor = -Infinity;

  constructor(options: TimerWheelOptions = {}) {
    this.#tickMs = options.tickMs ?? 100;
    this.#slots = new Array(options.slots ?? 4096);
  }

  get size(): number {
    return this.#deadline.size;
  }

  has(key: string): boolean {
    return this.#deadline.has(key);
  }

  deadline(key: string): number | undefined {
    return this.#deadline.get(key);
  }

  /** Sets the deadline of `key`, replacing an earlier one. */
  schedule(key: string, at: number): void {
    this.cancel(key);
    this.#deadline.set(key, at);
    // A deadline in a tick already passed would wait a whole turn in its slot: keep it aside.
    if (Math.floor(at / this.#tickMs) < this.#cursor) this.#late.add(key);
    else (this.#slots[this.#slotOf(at)] ??= new Set()).add(key);
  }

  cancel(key: string): boolean {
    const at = this.#deadline.get(key);
    if (at === undefined) return false;
    this.#deadline.delete(key);
    if (!this.#late.delete(key)) this.#slots[this.#slotOf(at)]?.delete(key);
    return true;
  }

  /** Keys due at or before `now`, earliest first, each returned once (and removed). */
  advance(now: number): string[] {
    const target = Math.floor(now / this.#tickMs);
    const n = this.#slots.length;
    const due: Array<[string, number]> = [];
    // The cursor's own tick is visited again: it may hold deadlines later than the last `now`.
    const from = this.#cursor === -Infinity ? target - n + 1 : this.#cursor;
    const span = target - from + 1;
    if (span > 0) {
      // A jump longer than one turn: every slot is due for inspection once.
      const visit = Math.min(span, n);
      const start = span >= n ? 0 : ((from % n) + n) % n;
      for (let k = 0; k < visit; k++) {
        const slot = this.#slots[(start + k) % n];
        if (!slot || slot.size === 0) continue;
        for (const key of slot) {
          const at = this.#deadline.get(key)!;
          if (at <= now) due.push([key, at]);
        }
      }
    }
    for (const key of this.#late) if (this.#deadline.get(key)! <= now) due.push([key, this.#deadline.get(key)!]);
    if (target > this.#cursor) this.#cursor = target;
    // Deadlines in the current tick but later than now stay; timers rounds ahead stay in their slot.
    due.sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    for (const [key] of due) this.cancel(key);
    return due.map(([key]) => key);
  }

  #slotOf(at: number): number {
    const n = this.#slots.length;
    return ((Math.floor(at / this.#tickMs) % n) + n) % n;
  }
}

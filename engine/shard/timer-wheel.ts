/**
 * A hashed timer wheel for a shard's deadlines (offer expiry, search limits),
 * keyed by string. Scheduling and cancelling are O(1); advancing visits only
 * the slots of the ticks that passed. Each timer keeps its exact deadline,
 * so a slot may hold timers of later turns (the absolute tick plays the part
 * of a rounds counter) and nothing fires before `at`, whatever tickMs is.
 *
 * Time is whatever the caller passes (engine clock, virtual replay clock);
 * the wheel reads no clock of its own.
 */

export interface TimerWheelOptions {
  /** Width of one slot in ms. */
  tickMs?: number;
  /** Slots in one turn of the wheel. */
  slots?: number;
  /** Clock value to start from (ms); the first advance otherwise sweeps the wheel once. */
  now?: number;
}

interface Timer {
  key: string;
  at: number;
  slot: number;
  /** Index inside its slot's array, for O(1) removal. */
  pos: number;
}

/**
 * Equal deadlines fire in key order, not schedule order: timers rebuilt
 * after a restart come back in a different order, and replays must match.
 */
function byDeadline(a: Timer, b: Timer): number {
  return a.at - b.at || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
}

export class TimerWheel {
  readonly tickMs: number;
  readonly slotCount: number;
  readonly #wheel: Timer[][];
  readonly #timers = new Map<string, Timer>();
  /**
   * Absolute tick up to which due timers were collected: every tick before it
   * is empty of timers due then, and every stored timer sits in a tick at or
   * after it. Only moves forward.
   */
  #cursor: number;

  /** Throws RangeError when tickMs is not positive or slots not a positive integer. */
  constructor(options: TimerWheelOptions = {}) {
    const tickMs = options.tickMs ?? 100;
    const slots = options.slots ?? 4096;
    if (!(Number.isFinite(tickMs) && tickMs > 0)) throw new RangeError(`tickMs must be positive, got ${tickMs}`);
    if (!Number.isInteger(slots) || slots < 1) throw new RangeError(`slots must be a positive integer, got ${slots}`);
    this.tickMs = tickMs;
    this.slotCount = slots;
    this.#wheel = Array.from({ length: slots }, () => []);
    this.#cursor = Math.floor((options.now ?? 0) / tickMs);
  }

  /** Timers pending. */
  get size(): number {
    return this.#timers.size;
  }

  /**
   * Arms `key` to fire at `at` (ms), replacing any timer already under that
   * key. A deadline already past fires on the next advance. Throws
   * RangeError when `at` is not finite.
   */
  schedule(key: string, at: number): void {
    if (!Number.isFinite(at)) throw new RangeError(`timer ${key}: deadline must be finite, got ${at}`);
    let t = this.#timers.get(key);
    if (t !== undefined) this.#unlink(t);
    else {
      t = { key, at, slot: 0, pos: 0 };
      this.#timers.set(key, t);
    }
    t.at = at;
    // A deadline before the cursor goes in the cursor's slot, which the next advance always visits.
    const tick = Math.max(Math.floor(at / this.tickMs), this.#cursor);
    t.slot = this.#slotOf(tick);
    const list = this.#wheel[t.slot];
    t.pos = list.length;
    list.push(t);
  }

  /** Disarms `key`; false when no timer had it. */
  cancel(key: string): boolean {
    const t = this.#timers.get(key);
    if (t === undefined) return false;
    this.#unlink(t);
    this.#timers.delete(key);
    return true;
  }

  has(key: string): boolean {
    return this.#timers.has(key);
  }

  /** The deadline armed under `key`, or undefined. */
  deadline(key: string): number | undefined {
    return this.#timers.get(key)?.at;
  }

  /**
   * Removes and returns the keys whose deadline is at or before `now`,
   * earliest deadline first (ties in key order). A clock that jumps a
   * full turn or more costs one sweep of the wheel, not one step per tick; a
   * clock that goes backwards fires only what is due by then.
   */
  advance(now: number): string[] {
    const due: Timer[] = [];
    const nowTick = Math.floor(now / this.tickMs);
    const from = this.#cursor;
    if (nowTick - from >= this.slotCount) {
      for (let s = 0; s < this.slotCount; s++) this.#collect(s, now, due);
    } else {
      for (let tick = from; tick <= nowTick; tick++) this.#collect(this.#slotOf(tick), now, due);
      // A backwards clock still checks the cursor's slot, where late-scheduled timers wait.
      if (nowTick < from) this.#collect(this.#slotOf(from), now, due);
    }
    // The now tick may still hold timers due later in it, so the cursor stops on it, not after it.
    if (nowTick > from) this.#cursor = nowTick;
    if (due.length > 1) due.sort(byDeadline);
    const keys = new Array<string>(due.length);
    for (let i = 0; i < due.length; i++) {
      keys[i] = due[i].key;
      this.#timers.delete(due[i].key);
    }
    return keys;
  }

  /** Moves the timers of one slot that are due by `now` into `due`. */
  #collect(slot: number, now: number, due: Timer[]): void {
    const list = this.#wheel[slot];
    // Backwards, so the swap-remove only ever moves an element already looked at.
    for (let i = list.length - 1; i >= 0; i--) {
      const t = list[i];
      if (t.at > now) continue;
      this.#unlink(t);
      due.push(t);
    }
  }

  #unlink(t: Timer): void {
    const list = this.#wheel[t.slot];
    const last = list.pop()!;
    if (last !== t) {
      list[t.pos] = last;
      last.pos = t.pos;
    }
  }

  #slotOf(tick: number): number {
    const s = tick % this.slotCount;
    return s < 0 ? s + this.slotCount : s;
  }
}

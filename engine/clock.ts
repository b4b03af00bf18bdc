/**
 * Time is a dependency. Everything in the engine that reads time takes it from
 * a Clock, so the same code runs live or replays a recorded day in virtual time.
 * Times are epoch milliseconds.
 */
export interface Clock {
  now(): number;
}

/** Wall-clock time, for a live node. */
export class SystemClock implements Clock {
  now(): number {
    return Date.now();
  }
}

/** A clock that only moves when told to: replays and tests. */
export class VirtualClock implements Clock {
  #now: number;
  constructor(start = 0) {
    this.#now = start;
  }
  now(): number {
    return this.#now;
  }
  /** Moves to `t`; time never goes backwards. */
  set(t: number): void {
    if (t > this.#now) this.#now = t;
  }
  advance(ms: number): void {
    if (ms > 0) this.#now += ms;
  }
}

/** Wall-clock time running `speed` times faster from the moment it is made: a demo city in fast forward. */
export class ScaledClock implements Clock {
  readonly #start = Date.now();
  readonly #speed: number;
  constructor(speed: number) {
    if (!(Number.isFinite(speed) && speed > 0)) throw new RangeError(`clock speed must be positive, got ${speed}`);
    this.#speed = speed;
  }
  now(): number {
    return Math.floor(this.#start + (Date.now() - this.#start) * this.#speed);
  }
}

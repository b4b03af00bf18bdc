// The timer wheel against a sorted reference: ordering, replacement, cancel, late and far deadlines, big jumps.
import t from 'tap';
import { TimerWheel } from '../../engine/shard/timer-wheel.ts';

t.test('fires due keys earliest first, once', async (t) => {
  const w = new TimerWheel({ tickMs: 100, slots: 16 });
  w.schedule('b', 1_250);
  w.schedule('a', 1_050);
  w.schedule('c', 1_080);
  t.same(w.advance(1_060), ['a']);
  t.same(w.advance(1_079), [], 'a deadline later in the same tick waits');
  t.same(w.advance(1_300), ['c', 'b']);
  t.same(w.advance(5_000), []);
  t.equal(w.size, 0);
});

t.test('replacing and cancelling', async (t) => {
  const w = new TimerWheel({ tickMs: 100, slots: 8 });
  w.schedule('x', 500);
  w.schedule('x', 900);
  t.equal(w.deadline('x'), 900);
  t.same(w.advance(600), []);
  t.same(w.advance(900), ['x']);
  w.schedule('y', 1_000);
  t.ok(w.cancel('y'));
  t.notOk(w.cancel('y'));
  t.same(w.advance(2_000), []);
});

t.test('deadlines beyond a turn, in the past, and huge jumps', async (t) => {
  const w = new TimerWheel({ tickMs: 100, slots: 8 });
  w.advance(0);
  w.schedule('far', 5_000);
  t.same(w.advance(900), [], 'same slot a turn earlier does not fire it');
  t.same(w.advance(4_999), []);
  t.same(w.advance(5_000), ['far']);
  w.schedule('past', 100);
  t.same(w.advance(5_001), ['past'], 'a deadline already passed fires on the next advance');
  w.schedule('day', 5_000 + 86_400_000);
  w.schedule('hour', 5_000 + 3_600_000);
  const started = performance.now();
  t.same(w.advance(5_000 + 90_000_000), ['hour', 'day']);
  t.ok(performance.now() - started < 50, 'a jump of a day does not walk every tick');
});

t.test('randomised against a sorted reference', async (t) => {
  let seed = 42;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const w = new TimerWheel({ tickMs: 50, slots: 64 });
  const ref = new Map<string, number>();
  let now = 0;
  let mismatches = 0;
  for (let step = 0; step < 3_000; step++) {
    const op = rand();
    const key = `k${Math.floor(rand() * 200)}`;
    if (op < 0.5) {
      const at = now + Math.floor((rand() - 0.1) * 20_000);
      w.schedule(key, at);
      ref.set(key, at);
    } else if (op < 0.6) {
      w.cancel(key);
      ref.delete(key);
    } else {
      now += Math.floor(rand() * (rand() < 0.05 ? 100_000 : 500));
      const got = w.advance(now);
      const want = [...ref].filter(([, at]) => at <= now).sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1)).map(([k]) => k);
      for (const k of want) ref.delete(k);
      if (JSON.stringify(got) !== JSON.stringify(want)) mismatches++;
    }
  }
  t.equal(mismatches, 0);
  t.equal(w.size, ref.size);
});

t.test('has, deadline, size, and options are validated', async (t) => {
  const w = new TimerWheel();
  t.equal(w.tickMs, 100, 'default tick');
  t.equal(w.slotCount, 4096, 'default slots');
  w.schedule('offer:o1', 30_000);
  t.ok(w.has('offer:o1'));
  t.equal(w.deadline('offer:o1'), 30_000);
  t.notOk(w.has('offer:o2'));
  t.equal(w.deadline('offer:o2'), undefined);
  t.equal(w.size, 1);
  t.same(w.advance(30_000), ['offer:o1']);
  t.notOk(w.has('offer:o1'), 'a fired timer is gone');
  t.equal(w.size, 0);
  t.throws(() => w.schedule('x', NaN), RangeError);
  t.throws(() => w.schedule('x', Infinity), RangeError);
  t.notOk(w.has('x'), 'a refused schedule arms nothing');
  t.throws(() => new TimerWheel({ tickMs: 0 }), RangeError);
  t.throws(() => new TimerWheel({ slots: 0 }), RangeError);
  t.throws(() => new TimerWheel({ slots: 2.5 }), RangeError);
});

t.test('equal deadlines fire in key order, whatever the schedule order', async (t) => {
  const w = new TimerWheel({ tickMs: 100, slots: 16 });
  for (const k of ['search:b', 'offer:z', 'offer:a', 'search:a']) w.schedule(k, 1_000);
  w.schedule('early', 999);
  t.same(w.advance(1_000), ['early', 'offer:a', 'offer:z', 'search:a', 'search:b']);
});

t.test('starting at a given clock and a clock that goes backwards', async (t) => {
  const T0 = Date.UTC(2026, 10, 24, 9);
  const w = new TimerWheel({ tickMs: 100, slots: 64, now: T0 });
  w.schedule('late', T0 - 60_000);
  t.same(w.advance(T0), ['late'], 'a deadline before the start fires on the first advance');
  w.schedule('a', T0 + 250);
  t.same(w.advance(T0 + 300), ['a']);
  // The clock steps back (a replay rewinding, a test clock): only what is due by then fires.
  w.schedule('b', T0 + 150);
  w.schedule('c', T0 + 280);
  t.same(w.advance(T0 + 200), ['b']);
  t.same(w.advance(T0 + 290), ['c']);
});

t.test('a timer turns after turns away fires exactly once, on time, when stepped tick by tick', async (t) => {
  const w = new TimerWheel({ tickMs: 10, slots: 4 });
  w.advance(0);
  w.schedule('x', 1_005);
  w.schedule('y', 1_005 + 40);
  const fired: Array<[string, number]> = [];
  for (let now = 0; now <= 2_000; now += 5) for (const k of w.advance(now)) fired.push([k, now]);
  t.same(fired, [['x', 1_005], ['y', 1_045]], 'through 25 passes over the same slot');
});

t.test('a default wheel with 100k timers: stepping and a jump of hours', async (t) => {
  const w = new TimerWheel();
  const T0 = Date.UTC(2026, 10, 24, 9);
  w.advance(T0);
  let seed = 3;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const deadlines = new Map<string, number>();
  for (let i = 0; i < 100_000; i++) {
    // Offers within a minute, search limits up to 15 minutes, some a day out (several turns).
    const at = T0 + Math.floor(i % 10 === 0 ? rand() * 86_400_000 : rand() * 900_000);
    w.schedule(`t${i}`, at);
    deadlines.set(`t${i}`, at);
  }
  let fired = 0;
  let last = -Infinity;
  let early = 0;
  let unordered = 0;
  // Ten minutes in 100 ms steps, as a live shard would tick.
  for (let now = T0; now <= T0 + 600_000; now += 100) {
    for (const k of w.advance(now)) {
      const at = deadlines.get(k)!;
      if (at > now) early++;
      if (at < last) unordered++;
      last = at;
      fired++;
    }
  }
  const wantStepped = [...deadlines.values()].filter((at) => at <= T0 + 600_000).length;
  t.equal(fired, wantStepped, 'everything due in ten minutes fired');
  t.equal(early, 0);
  t.equal(unordered, 0);
  const started = performance.now();
  const rest = w.advance(T0 + 10 * 3_600_000);
  const ms = performance.now() - started;
  const wantJump = [...deadlines.values()].filter((at) => at > T0 + 600_000 && at <= T0 + 10 * 3_600_000).length;
  t.equal(rest.length, wantJump, 'a ten-hour jump fires what fell due, once');
  t.ok(rest.every((k, i) => i === 0 || deadlines.get(rest[i - 1])! <= deadlines.get(k)!), 'earliest first');
  t.ok(ms < 500, `the jump took ${ms.toFixed(1)} ms`);
  t.equal(w.size, 100_000 - wantStepped - wantJump);
});

t.test('randomised with a fractional tick and deadlines in the past, has/deadline checked too', async (t) => {
  let seed = 99;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const w = new TimerWheel({ tickMs: 33.3, slots: 32 });
  const ref = new Map<string, number>();
  let now = 1_000_000;
  let mismatches = 0;
  for (let step = 0; step < 5_000; step++) {
    const op = rand();
    const key = `k${Math.floor(rand() * 300)}`;
    if (op < 0.45) {
      const at = now + (rand() - 0.2) * 5_000;
      w.schedule(key, at);
      ref.set(key, at);
    } else if (op < 0.55) {
      if (w.cancel(key) !== ref.delete(key)) mismatches++;
    } else if (op < 0.6) {
      if (w.has(key) !== ref.has(key) || w.deadline(key) !== ref.get(key)) mismatches++;
    } else {
      now += rand() < 0.03 ? rand() * 50_000 : rand() < 0.1 ? -rand() * 200 : rand() * 100;
      const got = w.advance(now);
      const want = [...ref].filter(([, at]) => at <= now).sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1)).map(([k]) => k);
      for (const k of want) ref.delete(k);
      if (JSON.stringify(got) !== JSON.stringify(want)) mismatches++;
    }
  }
  t.equal(mismatches, 0);
  t.equal(w.size, ref.size);
});

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

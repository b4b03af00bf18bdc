// Delivery pricing: surge from demand and supply, fee from distance.
import t from 'tap';
import { DEFAULT_PRICING, deliveryFee, surgeFactor } from '../../engine/index.ts';

t.test('surge is 1 while riders keep up, grows with the shortfall per rider, and is capped', async (t) => {
  t.equal(surgeFactor(0, 0, DEFAULT_PRICING), 1);
  t.equal(surgeFactor(5, 5, DEFAULT_PRICING), 1, 'as many riders as waiting orders');
  t.equal(surgeFactor(3, 10, DEFAULT_PRICING), 1);
  t.equal(surgeFactor(6, 2, DEFAULT_PRICING), 1.5, 'four unserved orders over two riders: +0.25 x 2');
  t.equal(surgeFactor(3, 0, DEFAULT_PRICING), 1.75, 'no rider at all counts as one');
  t.equal(surgeFactor(500, 1, DEFAULT_PRICING), DEFAULT_PRICING.maxSurge);
  t.equal(surgeFactor(7, 3, DEFAULT_PRICING), 1.35, 'rounded to 0.05');
});

t.test('the fee is a base plus road kilometres, times surge; the rider gets its share', async (t) => {
  const flat = deliveryFee(2_000, 1, DEFAULT_PRICING);
  t.equal(flat.distanceM, 2_600, 'road distance is the straight line times the detour factor');
  t.equal(flat.feePaise, 2_000 + Math.round(800 * 2.6));
  t.equal(flat.riderFeePaise, Math.round(flat.feePaise * 0.8));
  const surged = deliveryFee(2_000, 1.5, DEFAULT_PRICING);
  t.equal(surged.feePaise, Math.round((2_000 + 800 * 2.6) * 1.5));
  t.ok(Number.isInteger(surged.feePaise) && Number.isInteger(surged.riderFeePaise), 'money stays in whole paise');
});

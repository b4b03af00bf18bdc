// Delivery pricing: surge from demand and supply, fee from distance, and how far a supply count must look.
import t from 'tap';
import { gridDistance, latLngToCell } from 'h3-js';
import { DEFAULT_PRICING, OrderIntake, VirtualClock, deliveryFee, surgeFactor } from '../../engine/index.ts';
import type { PricingConfig } from '../../engine/index.ts';
import { checkPricing, priceDelivery, ringsWithin } from '../../engine/dispatch/index.ts';
import { edgeLengthM } from '../../engine/geo/index.ts';
import { mulberry32 } from '../../bench/random.ts';

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

t.test('ringsWithin: every point within the radius lies within that many H3 rings, anywhere on Earth', async (t) => {
  const random = mulberry32(7);
  let worst = 0;
  let checked = 0;
  for (const res of [7, 8, 9]) {
    const edge = edgeLengthM(res);
    for (const radiusM of [300, 2_000, 5_000]) {
      const rings = ringsWithin(radiusM, edge);
      for (let i = 0; i < 400; i++) {
        // Latitudes from the equator to the sub-polar, where H3 cells are most distorted.
        const lat = (random() * 2 - 1) * 75;
        const lng = (random() * 2 - 1) * 180;
        const bearing = random() * 2 * Math.PI;
        const d = Math.sqrt(random()) * radiusM;
        const dLat = (d * Math.cos(bearing)) / 111_320;
        const dLng = (d * Math.sin(bearing)) / (111_320 * Math.cos((lat * Math.PI) / 180));
        const a = latLngToCell(lat, lng, res);
        const b = latLngToCell(lat + dLat, lng + dLng, res);
        let k: number;
        try {
          k = gridDistance(a, b);
        } catch {
          continue; // across a pentagon h3 cannot say; the ring walk there is h3's own.
        }
        worst = Math.max(worst, k / rings);
        checked++;
        if (k > rings) t.fail(`res ${res}, ${radiusM} m: ${k} rings needed, ${rings} given, at ${lat},${lng}`);
      }
    }
  }
  t.ok(checked > 3000, `${checked} pairs checked; at most ${(worst * 100).toFixed(0)} % of the rings used`);
});

t.test('priceDelivery: surge, fee and ETA from counted demand and supply', async (t) => {
  const calm = priceDelivery(2_000, 10, 0, { available: 3, nearestM: 600 }, DEFAULT_PRICING);
  t.equal(calm.surgeFactor, 1);
  t.same({ feePaise: calm.feePaise, distanceM: calm.distanceM }, { feePaise: deliveryFee(2_000, 1, DEFAULT_PRICING).feePaise, distanceM: 2_600 });
  t.equal(calm.etaSeconds, Math.round(600 + 2_600 / DEFAULT_PRICING.speedMps), 'prep time (10 min) is longer than the nearest rider trip: it sets the pickup');
  const far = priceDelivery(2_000, 0, 0, { available: 1, nearestM: 3_000 }, DEFAULT_PRICING);
  t.equal(far.etaSeconds, Math.round((3_000 * 1.3) / DEFAULT_PRICING.speedMps + 2_600 / DEFAULT_PRICING.speedMps), 'the nearest rider trip sets it otherwise');
  const none = priceDelivery(2_000, 0, 3, { available: 0, nearestM: null }, DEFAULT_PRICING);
  t.equal(none.surgeFactor, 1.75, 'three waiting, nobody free');
  t.equal(none.supply, 0);
  t.equal(none.etaSeconds, Math.round(600 + 2_600 / DEFAULT_PRICING.speedMps), 'no rider: ten minutes assumed');
});

t.test('checkPricing refuses settings that cannot price a delivery, naming them', async (t) => {
  t.equal(checkPricing(DEFAULT_PRICING), DEFAULT_PRICING, 'the defaults pass');
  const bad: Array<[Partial<PricingConfig>, RegExp]> = [
    [{ speedMps: 0 }, /pricing\.speedMps must be a positive number/],
    [{ detourFactor: Number.NaN }, /pricing\.detourFactor/],
    [{ riderShare: 1.2 }, /pricing\.riderShare must be within 0\.\.1/],
    [{ maxSurge: 0.5 }, /pricing\.maxSurge must be at least 1/],
    [{ baseFeePaise: -1 }, /pricing\.baseFeePaise must be a non-negative number/],
    [{ cellRes: 16 }, /pricing\.cellRes/],
    [{ supplyRadiusM: 80_000 }, /pricing\.supplyRadiusM must be at most 50000/],
  ];
  for (const [over, msg] of bad) t.throws(() => checkPricing({ ...DEFAULT_PRICING, ...over }), msg, JSON.stringify(over));
  t.throws(
    () => new OrderIntake({ engine: null as never, catalog: null as never, payments: null as never, clock: new VirtualClock(0), pricing: { speedMps: -3 } }),
    /pricing\.speedMps/,
    'an intake will not start with them',
  );
});

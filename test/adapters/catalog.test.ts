// The catalog adapter (stores, products, stock reservations) on real Postgres, with a pool wide enough for
// reservations to race for real, and on embedded PGlite: the same behaviour from the same SQL.
import t from 'tap';
import type { Test } from 'tap';
import pg from 'pg';
import pino from 'pino';
import type { Logger } from 'pino';
import { PGlite } from '@electric-sql/pglite';
import { DispatchError } from '../../engine/index.ts';
import type { ErrorCode } from '../../engine/index.ts';
import { PgClient, PgliteClient } from '../../adapters/sql/index.ts';
import type { SqlClient } from '../../adapters/sql/index.ts';
import {
  DEMO_STORES,
  MAX_LINES,
  SqlCatalog,
  createEmbeddedCatalog,
  demoCatalog,
  everyDay,
  loadDemoCatalog,
  localTime,
  normaliseLines,
  openAt,
} from '../../adapters/catalog/index.ts';
import type { StoreRecord } from '../../adapters/catalog/index.ts';
import { postgresUnavailable } from '../support.ts';

const PG_URL = process.env.QD_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
/** Unique per run, so test files and concurrent runs never share tables. */
const RUN = `qdcat_${process.pid}_${Date.now().toString(36)}`;

/** Epoch ms of a wall-clock time in Asia/Kolkata (UTC+05:30, no DST) in November 2026; the 24th is a Tuesday. */
const ist = (day: number, hh: number, mm = 0) => Date.UTC(2026, 10, day, hh, mm) - 330 * 60_000;
const OPEN = ist(24, 11, 30); // Tuesday late morning

const STORE: StoreRecord = {
  storeId: 'st-1',
  name: 'Test Store',
  location: { lat: 12.93, lng: 77.62 },
  timeZone: 'Asia/Kolkata',
  prepMinutes: 9,
  hours: everyDay(['06:00', '02:00']),
};

/** The DispatchError a promise rejects with; a fulfilment or any other error fails the test. */
async function refusal(t: Test, p: Promise<unknown>, code: ErrorCode, msg: string): Promise<DispatchError> {
  try {
    await p;
  } catch (err) {
    if (!(err instanceof DispatchError)) throw err;
    t.equal(err.code, code, msg);
    return err;
  }
  t.fail(`${msg}: expected ${code}, but it succeeded`);
  return new DispatchError('QD_ERR_INTERNAL', { reason: 'no refusal' });
}

/** A client sharing `inner` whose close() leaves it open: one pool or PGlite for many catalogs (schemas). */
function shared(inner: SqlClient): SqlClient {
  return { query: (q, p) => inner.query(q, p), transaction: (fn) => inner.transaction(fn), close: async () => {} };
}

/** A pino logger whose lines land in an array, to check what was logged. */
function capturingLogger(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  return { logger: pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) }), lines };
}

type Open = (logger?: Logger) => Promise<SqlCatalog>;

/** A fresh catalog (own schema) with STORE and products a..e in stock. */
async function withStore(open: Open, logger?: Logger): Promise<SqlCatalog> {
  const c = await open(logger);
  await c.upsertStore(STORE);
  const prices: Record<string, number> = { a: 1000, b: 2550, c: 499, d: 12000, e: 100 };
  for (const [productId, pricePaise] of Object.entries(prices)) {
    await c.upsertProduct({ storeId: STORE.storeId, productId, name: `Product ${productId}`, pricePaise });
    await c.setStock(STORE.storeId, productId, 50);
  }
  return c;
}

function behaviour(t: Test, name: string, open: Open): void {
  t.test(`${name}: 100 orders race for the last 10 units: exactly 10 win, nothing is oversold`, async (t) => {
    const c = await withStore(open);
    await c.upsertProduct({ storeId: 'st-1', productId: 'last', name: 'Last units', pricePaise: 4200 });
    await c.setStock('st-1', 'last', 10);

    // Samples the row while the race runs: available never goes below zero.
    let racing = true;
    let samples = 0;
    let worst = Infinity;
    const sampler = (async () => {
      while (racing) {
        const s = (await c.stockOf('st-1', 'last'))!;
        worst = Math.min(worst, s.available, s.onHand - s.reserved);
        samples++;
        await new Promise((r) => setImmediate(r));
      }
    })();
    const results = await Promise.allSettled(
      Array.from({ length: 100 }, (_, i) => c.reserve(`race-${i}`, 'st-1', [{ productId: 'last', quantity: 1 }], OPEN)),
    );
    racing = false;
    await sampler;

    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    t.equal(won.length, 10, 'exactly 10 reservations succeed');
    t.equal(lost.length, 90, '90 are refused');
    t.ok(
      lost.every((r) => r.reason instanceof DispatchError && r.reason.code === 'QD_ERR_OUT_OF_STOCK'),
      'every refusal is QD_ERR_OUT_OF_STOCK',
    );
    t.match((lost[0].reason as DispatchError).details, { storeId: 'st-1', productId: 'last', available: 0, requested: 1 }, 'naming the product');
    t.same(await c.stockOf('st-1', 'last'), { onHand: 10, reserved: 10, available: 0 }, 'reserved == 10 == on hand');
    t.ok(samples > 0 && worst >= 0, `available never negative while racing (${samples} samples, lowest ${worst})`);
    t.equal((await c.counts()).reservations, 10, 'refused orders left no reservation rows');
    await c.drop();
  });

  t.test(`${name}: concurrent reserves, releases and commits over shared products never deadlock and conserve stock`, async (t) => {
    const c = await withStore(open);
    // Each order asks for the same three products listed in a different order: locks must still be taken in one order.
    const orders = ['a', 'b', 'c'];
    const perms = [['a', 'b', 'c'], ['c', 'b', 'a'], ['b', 'a', 'c'], ['c', 'a', 'b']];
    const first = await Promise.all(
      Array.from({ length: 40 }, (_, i) => c.reserve(`mix-${i}`, 'st-1', perms[i % 4].map((p) => ({ productId: p, quantity: 1 })), OPEN)),
    );
    t.equal(first.length, 40, '40 orders hold one of each of a, b, c');
    // Settle the first 40 (half released, half sold) while 40 more race for what is left.
    const settled = await Promise.allSettled([
      ...first.map((r, i) => (i % 2 === 0 ? c.release(r.orderId) : c.commit(r.orderId))),
      ...Array.from({ length: 40 }, (_, i) =>
        c.reserve(`mix2-${i}`, 'st-1', perms[(i + 1) % 4].map((p) => ({ productId: p, quantity: 1 })), OPEN),
      ),
    ]);
    const failures = settled.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    t.ok(
      failures.every((f) => f.reason instanceof DispatchError && f.reason.code === 'QD_ERR_OUT_OF_STOCK'),
      `no deadlock or other error (${failures.length} out of stock)`,
    );
    const held = settled.length - 40 - failures.length;
    for (const p of orders) {
      const s = (await c.stockOf('st-1', p))!;
      t.same(s, { onHand: 50 - 20, reserved: held, available: 30 - held }, `${p}: 20 sold, ${held} held by the second wave`);
    }
    await c.drop();
  });

  t.test(`${name}: a multi-line order short on its second line reserves nothing`, async (t) => {
    const c = await withStore(open);
    await c.setStock('st-1', 'b', 2);
    const err = await refusal(
      t,
      c.reserve('o-short', 'st-1', [{ productId: 'a', quantity: 5 }, { productId: 'b', quantity: 3 }, { productId: 'c', quantity: 1 }], OPEN),
      'QD_ERR_OUT_OF_STOCK',
      'the order is refused',
    );
    t.same(err.details, { storeId: 'st-1', productId: 'b', available: 2, requested: 3 }, 'naming the short product, what is left and what was asked');
    t.match(err.message, /only 2 of product b left at store st-1, 3 asked/);
    t.same(await c.stockOf('st-1', 'a'), { onHand: 50, reserved: 0, available: 50 }, 'the first line was rolled back');
    t.same(await c.stockOf('st-1', 'c'), { onHand: 50, reserved: 0, available: 50 }, 'the third line was never taken');
    t.equal(await c.reservationOf('o-short'), null, 'no reservation row');
    const retry = await c.reserve('o-short', 'st-1', [{ productId: 'a', quantity: 5 }, { productId: 'b', quantity: 2 }], OPEN);
    t.equal(retry.status, 'reserved', 'the same order id reserves once it asks for what is there');
    t.same((await c.stockOf('st-1', 'b'))!.available, 0);
    await c.drop();
  });

  t.test(`${name}: one batch with every outcome answers each order as if it came alone, first come first served`, async (t) => {
    const c = await withStore(open);
    await c.upsertStore({ ...STORE, storeId: 'st-paused' });
    await c.upsertProduct({ storeId: 'st-paused', productId: 'a', name: 'A', pricePaise: 100 });
    await c.setStock('st-paused', 'a', 5);
    await c.setPaused('st-paused', true);
    await c.setStock('st-1', 'b', 4);
    const held = await c.reserve('o-held', 'st-1', [{ productId: 'e', quantity: 2 }], OPEN);
    const before = (await c.counts()).reservations;

    // Called in one turn, so they share one reserve_orders() statement.
    const asks: Array<[string, string, Array<{ productId: string; quantity: number }>]> = [
      ['o-fits', 'st-1', [{ productId: 'c', quantity: 2 }, { productId: 'b', quantity: 2 }]],
      ['o-held', 'st-1', [{ productId: 'e', quantity: 2 }]],
      ['o-nowhere', 'nowhere', [{ productId: 'a', quantity: 1 }]],
      ['o-paused', 'st-paused', [{ productId: 'a', quantity: 1 }]],
      ['o-ghost', 'st-1', [{ productId: 'a', quantity: 1 }, { productId: 'ghost', quantity: 1 }]],
      ['o-short', 'st-1', [{ productId: 'a', quantity: 1 }, { productId: 'b', quantity: 3 }]],
      ['o-after', 'st-1', [{ productId: 'b', quantity: 2 }, { productId: 'a', quantity: 4 }]],
    ];
    const results = await Promise.allSettled(asks.map(([o, s, lines]) => c.reserve(o, s, lines, OPEN)));
    const code = (i: number) => {
      const r = results[i];
      return r.status === 'rejected' ? (r.reason as DispatchError).code : r.value.repeated ? 'repeated' : 'reserved';
    };
    t.same(
      asks.map((_, i) => code(i)),
      ['reserved', 'repeated', 'QD_ERR_STORE_NOT_FOUND', 'QD_ERR_STORE_CLOSED', 'QD_ERR_PRODUCT_NOT_FOUND', 'QD_ERR_OUT_OF_STOCK', 'reserved'],
      'each order gets its own answer',
    );
    const detail = (i: number) => ((results[i] as PromiseRejectedResult).reason as DispatchError).details;
    t.same(detail(3), { storeId: 'st-paused', reason: 'paused' });
    t.same(detail(4), { storeId: 'st-1', productId: 'ghost' });
    t.same(detail(5), { storeId: 'st-1', productId: 'b', available: 2, requested: 3 }, 'the short order names its short line, after the earlier order took its share');
    const fits = (results[0] as PromiseFulfilledResult<Awaited<ReturnType<SqlCatalog['reserve']>>>).value;
    t.same(fits.lines, [{ productId: 'b', quantity: 2, unitPricePaise: 2550 }, { productId: 'c', quantity: 2, unitPricePaise: 499 }], 'priced lines');
    t.equal(fits.totalPaise, 2 * 2550 + 2 * 499);
    const repeat = (results[1] as PromiseFulfilledResult<Awaited<ReturnType<SqlCatalog['reserve']>>>).value;
    t.same(repeat.lines, held.lines, 'the repeat answers what is held');
    const after = await c.reservationOf('o-after');
    t.same(after?.lines, [{ productId: 'a', quantity: 4, unitPricePaise: 1000 }, { productId: 'b', quantity: 2, unitPricePaise: 2550 }], 'a later order still gets what is left');
    t.equal(after?.totalPaise, 4 * 1000 + 2 * 2550);
    t.same(await c.stockOf('st-1', 'a'), { onHand: 50, reserved: 4, available: 46 }, 'a: only the order that won took it');
    t.same(await c.stockOf('st-1', 'b'), { onHand: 4, reserved: 4, available: 0 }, 'b: taken to the last unit, never beyond');
    t.same(await c.stockOf('st-1', 'c'), { onHand: 50, reserved: 2, available: 48 });
    t.same(await c.stockOf('st-1', 'e'), { onHand: 50, reserved: 2, available: 48 }, 'the repeat took nothing more');
    t.equal((await c.counts()).reservations, before + 2, 'refused orders left no rows');
    for (const o of ['o-nowhere', 'o-paused', 'o-ghost', 'o-short']) t.equal(await c.reservationOf(o), null, `${o} holds nothing`);

    // When the batch's summed demand fits every row, all of it is taken at once.
    const many = await Promise.all(
      Array.from({ length: 12 }, (_, i) => c.reserve(`o-many-${i}`, 'st-1', [{ productId: 'c', quantity: 1 + (i % 3) }, { productId: 'd', quantity: 1 }], OPEN)),
    );
    t.ok(many.every((r) => !r.repeated && r.totalPaise === r.lines.reduce((s, l) => s + l.quantity * l.unitPricePaise, 0)), 'twelve reserved, totals match lines');
    t.same(await c.stockOf('st-1', 'c'), { onHand: 50, reserved: 2 + 4 * (1 + 2 + 3), available: 50 - 2 - 24 });
    t.same(await c.stockOf('st-1', 'd'), { onHand: 50, reserved: 12, available: 38 });
    const m5 = await c.reservationOf('o-many-5');
    t.same(m5?.lines, [{ productId: 'c', quantity: 3, unitPricePaise: 499 }, { productId: 'd', quantity: 1, unitPricePaise: 12000 }]);
    await c.drop();
  });

  t.test(`${name}: reserve is idempotent per order, also under 20 concurrent repeats`, async (t) => {
    const c = await withStore(open);
    const lines = [{ productId: 'b', quantity: 2 }, { productId: 'a', quantity: 1 }, { productId: 'b', quantity: 1 }];
    const r1 = await c.reserve('o-1', 'st-1', lines, OPEN);
    t.same(
      r1.lines,
      [{ productId: 'a', quantity: 1, unitPricePaise: 1000 }, { productId: 'b', quantity: 3, unitPricePaise: 2550 }],
      'repeated products merged, lines in product order, priced',
    );
    t.equal(r1.totalPaise, 1000 + 3 * 2550, 'total in paise');
    t.match(r1.store, { storeId: 'st-1', open: true, prepMinutes: 9, timeZone: 'Asia/Kolkata', location: { lat: 12.93, lng: 77.62 } });
    t.equal(r1.repeated, false, 'the first reserve is not a repeat');
    const r2 = await c.reserve('o-1', 'st-1', lines, OPEN + 1000);
    t.same({ ...r2, store: null, repeated: false }, { ...r1, store: null }, 'a repeat returns the same reservation');
    t.equal(r2.repeated, true, 'marked as a repeat');
    t.equal((await c.stockOf('st-1', 'b'))!.reserved, 3, 'and reserves nothing more');
    const other = await c.reserve('o-1', 'st-1', [{ productId: 'd', quantity: 7 }], OPEN);
    t.same(other.lines, r1.lines, 'a repeat asking for something else gets what is held (the caller compares)');
    t.equal((await c.stockOf('st-1', 'd'))!.reserved, 0, 'and d is untouched');
    const late = await c.reserve('o-1', 'st-1', lines, ist(25, 3, 0));
    t.equal(late.store.open, false, 'a repeat after closing time');
    t.same(late.lines, r1.lines, 'still answers with the reservation');

    const same = await Promise.all(Array.from({ length: 20 }, () => c.reserve('o-2', 'st-1', [{ productId: 'c', quantity: 4 }], OPEN)));
    t.ok(same.every((r) => r.orderId === 'o-2' && r.totalPaise === 4 * 499 && r.lines.length === 1), '20 concurrent repeats all answer the one reservation');
    t.equal(same.filter((r) => !r.repeated).length, 1, 'exactly one of them reserved');
    t.same(await c.stockOf('st-1', 'c'), { onHand: 50, reserved: 4, available: 46 }, 'reserved once');
    t.equal((await c.counts()).reservations, 2);
    await c.drop();
  });

  t.test(`${name}: release returns the stock and is idempotent`, async (t) => {
    const c = await withStore(open);
    await c.reserve('o-r', 'st-1', [{ productId: 'a', quantity: 4 }, { productId: 'e', quantity: 2 }], OPEN);
    t.equal((await c.stockOf('st-1', 'a'))!.available, 46);
    await c.release('o-r');
    t.same(await c.stockOf('st-1', 'a'), { onHand: 50, reserved: 0, available: 50 }, 'a back');
    t.same(await c.stockOf('st-1', 'e'), { onHand: 50, reserved: 0, available: 50 }, 'e back');
    t.equal((await c.reservationOf('o-r'))?.status, 'released');
    await c.release('o-r');
    await Promise.all([c.release('o-r'), c.release('o-r'), c.release('o-r')]);
    t.same(await c.stockOf('st-1', 'a'), { onHand: 50, reserved: 0, available: 50 }, 'releasing again returns nothing more');
    await c.release('never-reserved');
    t.pass('releasing an order that reserved nothing is a no-op');
    const again = await c.reserve('o-r', 'st-1', [{ productId: 'a', quantity: 4 }], OPEN);
    t.equal(again.status, 'released', 'reserving a released order answers the released reservation');
    t.equal((await c.stockOf('st-1', 'a'))!.reserved, 0, 'and holds nothing');
    await c.drop();
  });

  t.test(`${name}: abandon returns the stock and forgets the reservation, so the order can reserve afresh`, async (t) => {
    const c = await withStore(open);
    await c.reserve('o-a', 'st-1', [{ productId: 'a', quantity: 4 }, { productId: 'e', quantity: 2 }], OPEN);
    await Promise.all([c.abandon('o-a'), c.abandon('o-a')]);
    t.same(await c.stockOf('st-1', 'a'), { onHand: 50, reserved: 0, available: 50 }, 'a back, once');
    t.same(await c.stockOf('st-1', 'e'), { onHand: 50, reserved: 0, available: 50 }, 'e back');
    t.equal(await c.reservationOf('o-a'), null, 'no reservation left');
    const again = await c.reserve('o-a', 'st-1', [{ productId: 'a', quantity: 1 }], OPEN);
    t.match(again, { status: 'reserved', repeated: false, totalPaise: 1000 }, 'the same order id reserves afresh, with what it asks now');
    t.equal((await c.stockOf('st-1', 'a'))!.reserved, 1);
    await c.abandon('never-reserved');
    t.pass('abandoning an order that reserved nothing is a no-op');
    await c.commit('o-a');
    const err = await refusal(t, c.abandon('o-a'), 'QD_ERR_INVALID_TRANSITION', 'a sold reservation cannot be abandoned');
    t.match(err.details, { entity: 'reservation', id: 'o-a', action: 'abandon', state: 'committed' });
    t.same(await c.stockOf('st-1', 'a'), { onHand: 49, reserved: 0, available: 49 }, 'and the sale stands');
    await c.drop();
  });

  t.test(`${name}: commit makes the reservation a sale; idempotent; release after it is a logged no-op`, async (t) => {
    const { logger, lines } = capturingLogger();
    const c = await withStore(open, logger);
    await c.reserve('o-c', 'st-1', [{ productId: 'd', quantity: 3 }], OPEN);
    await c.commit('o-c');
    t.same(await c.stockOf('st-1', 'd'), { onHand: 47, reserved: 0, available: 47 }, 'on hand and reserved both down by 3');
    t.equal((await c.reservationOf('o-c'))?.status, 'committed');
    await Promise.all([c.commit('o-c'), c.commit('o-c')]);
    t.same(await c.stockOf('st-1', 'd'), { onHand: 47, reserved: 0, available: 47 }, 'committing again sells nothing more');
    await c.release('o-c');
    t.same(await c.stockOf('st-1', 'd'), { onHand: 47, reserved: 0, available: 47 }, 'release after commit puts nothing back');
    t.ok(
      lines.some((l) => l.orderId === 'o-c' && /release after commit/.test(String(l.msg)) && l.level === 40),
      'and is logged as a warning',
    );
    await c.reserve('o-x', 'st-1', [{ productId: 'd', quantity: 1 }], OPEN);
    await c.release('o-x');
    const err = await refusal(t, c.commit('o-x'), 'QD_ERR_INVALID_TRANSITION', 'a released reservation cannot be sold');
    t.match(err.details, { entity: 'reservation', id: 'o-x', action: 'commit', state: 'released' });
    t.same(await c.stockOf('st-1', 'd'), { onHand: 47, reserved: 0, available: 47 }, 'and stock is unchanged');
    await c.commit('o-unknown');
    t.ok(lines.some((l) => l.orderId === 'o-unknown' && /reserved nothing/.test(String(l.msg))), 'commit of an order that never reserved is logged and ignored');
    await c.drop();
  });

  t.test(`${name}: closed stores refuse with the reason: outside hours, across midnight, paused`, async (t) => {
    const c = await withStore(open);
    const order = [{ productId: 'a', quantity: 1 }];
    let err = await refusal(t, c.reserve('o-night', 'st-1', order, ist(25, 3, 0)), 'QD_ERR_STORE_CLOSED', '03:00 is outside 06:00-02:00');
    t.equal(err.details.storeId, 'st-1');
    t.equal(err.details.reason, 'outside opening hours at wed 03:00 Asia/Kolkata; opens wed 06:00', 'the reason says when it opens');
    t.equal((await c.stockOf('st-1', 'a'))!.reserved, 0, 'nothing reserved');
    t.equal(await c.reservationOf('o-night'), null, 'no reservation row left');
    t.equal((await c.reserve('o-late', 'st-1', order, ist(25, 1, 59))).store.open, true, "01:59 Wednesday is inside Tuesday's hours");
    await refusal(t, c.reserve('o-2am', 'st-1', order, ist(25, 2, 0)), 'QD_ERR_STORE_CLOSED', '02:00 is closing time');
    t.equal((await c.getStore('st-1', ist(25, 6, 0))).open, true, '06:00 opens');

    // Only Friday night, into Saturday morning.
    await c.upsertStore({ ...STORE, storeId: 'st-fri', hours: { fri: [['22:00', '02:00']] } });
    t.equal((await c.getStore('st-fri', ist(27, 21, 59))).open, false, 'Friday 21:59 closed');
    t.equal((await c.getStore('st-fri', ist(27, 22, 0))).open, true, 'Friday 22:00 open');
    t.equal((await c.getStore('st-fri', ist(28, 1, 30))).open, true, 'Saturday 01:30 open (Friday night)');
    t.equal((await c.getStore('st-fri', ist(28, 2, 0))).open, false, 'Saturday 02:00 closed');
    t.equal((await c.getStore('st-fri', ist(29, 1, 30))).open, false, 'Sunday 01:30 closed (Saturday has no hours)');
    await c.upsertProduct({ storeId: 'st-fri', productId: 'a', name: 'A', pricePaise: 100 });
    await c.setStock('st-fri', 'a', 5);
    err = await refusal(t, c.reserve('o-sun', 'st-fri', order, ist(29, 1, 30)), 'QD_ERR_STORE_CLOSED', 'refused on Sunday night');
    t.equal(err.details.reason, 'outside opening hours at sun 01:30 Asia/Kolkata; opens fri 22:00');

    // The store's own time zone decides, not the server's: 11:30 IST is 01:00 in New York, a Tuesday.
    await c.upsertStore({ ...STORE, storeId: 'st-nyc', timeZone: 'America/New_York', hours: everyDay(['07:00', '23:00']) });
    t.equal((await c.getStore('st-nyc', OPEN)).open, false, 'New York store closed at its 01:00');
    t.equal((await c.getStore('st-nyc', OPEN + 8 * 3_600_000)).open, true, 'open at its 09:00');

    await c.setPaused('st-1', true);
    t.equal((await c.getStore('st-1', OPEN)).open, false, 'a paused store reports closed within its hours');
    err = await refusal(t, c.reserve('o-paused', 'st-1', order, OPEN), 'QD_ERR_STORE_CLOSED', 'a paused store refuses');
    t.equal(err.details.reason, 'paused');
    await c.setPaused('st-1', false);
    t.equal((await c.reserve('o-paused', 'st-1', order, OPEN)).status, 'reserved', 'resumed, it takes the order');
    await c.drop();
  });

  t.test(`${name}: missing store or product is refused naming the id`, async (t) => {
    const c = await withStore(open);
    let err = await refusal(t, c.reserve('o-1', 'nowhere', [{ productId: 'a', quantity: 1 }], OPEN), 'QD_ERR_STORE_NOT_FOUND', 'unknown store');
    t.same(err.details, { storeId: 'nowhere' });
    err = await refusal(t, c.getStore('nowhere', OPEN), 'QD_ERR_STORE_NOT_FOUND', 'getStore of an unknown store');
    t.match(err.message, /store nowhere not found/);
    err = await refusal(
      t,
      c.reserve('o-1', 'st-1', [{ productId: 'a', quantity: 1 }, { productId: 'ghost', quantity: 1 }], OPEN),
      'QD_ERR_PRODUCT_NOT_FOUND',
      'unknown product',
    );
    t.same(err.details, { storeId: 'st-1', productId: 'ghost' });
    await c.upsertProduct({ storeId: 'st-1', productId: 'e', name: 'Product e', pricePaise: 100, active: false });
    err = await refusal(t, c.reserve('o-1', 'st-1', [{ productId: 'e', quantity: 1 }], OPEN), 'QD_ERR_PRODUCT_NOT_FOUND', 'an inactive product');
    t.equal(err.details.productId, 'e');
    t.equal((await c.stockOf('st-1', 'a'))!.reserved, 0, 'nothing reserved by the refused orders');
    t.equal((await c.counts()).reservations, 0);
    err = await refusal(t, c.upsertProduct({ storeId: 'nowhere', productId: 'x', name: 'X', pricePaise: 1 }), 'QD_ERR_STORE_NOT_FOUND', 'a product for an unknown store');
    err = await refusal(t, c.setStock('st-1', 'ghost', 3), 'QD_ERR_PRODUCT_NOT_FOUND', 'stock of an unknown product');
    t.equal(err.details.productId, 'ghost');
    t.equal(await c.stockOf('st-1', 'ghost'), null);
    await c.drop();
  });

  t.test(`${name}: invalid input is refused naming the field`, async (t) => {
    const c = await withStore(open);
    const bad: Array<[unknown, string, RegExp]> = [
      [[], 'items', /at least one/],
      [null, 'items', /at least one/],
      [Array.from({ length: MAX_LINES + 1 }, (_, i) => ({ productId: `p${i}`, quantity: 1 })), 'items', /at most 100 lines/],
      [[{ productId: 'a', quantity: 0 }], 'items[0].quantity', /integer from 1 to 1000/],
      [[{ productId: 'a', quantity: 1 }, { productId: 'b', quantity: 1.5 }], 'items[1].quantity', /integer/],
      [[{ productId: 'a', quantity: 1001 }], 'items[0].quantity', /1000/],
      [[{ productId: 'a', quantity: '2' }], 'items[0].quantity', /integer/],
      [[{ productId: 'a', quantity: 1 }, { productId: '', quantity: 1 }], 'items[1].productId', /non-empty/],
      [[{ quantity: 1 }], 'items[0].productId', /non-empty/],
      [[{ productId: 'a', quantity: 600 }, { productId: 'a', quantity: 600 }], 'items', /a asked 1200 times in all/],
    ];
    for (const [lines, field, reason] of bad) {
      const err = await refusal(t, c.reserve('o-bad', 'st-1', lines as never, OPEN), 'QD_ERR_INVALID_ARGUMENT', `${field}: ${JSON.stringify(lines)?.slice(0, 60)}`);
      t.equal(err.details.field, field, `names ${field}`);
      t.match(String(err.details.reason), reason);
    }
    t.equal((await refusal(t, c.reserve('', 'st-1', [{ productId: 'a', quantity: 1 }], OPEN), 'QD_ERR_INVALID_ARGUMENT', 'empty order id')).details.field, 'orderId');
    t.equal((await refusal(t, c.reserve('o', '', [{ productId: 'a', quantity: 1 }], OPEN), 'QD_ERR_INVALID_ARGUMENT', 'empty store id')).details.field, 'storeId');
    t.equal((await refusal(t, c.reserve('o', 'st-1', [{ productId: 'a', quantity: 1 }], NaN), 'QD_ERR_INVALID_ARGUMENT', 'no time')).details.field, 'at');
    t.equal((await c.counts()).reservations, 0, 'nothing written');

    const admin: Array<[Promise<unknown>, string]> = [
      [c.upsertStore({ ...STORE, timeZone: 'Mars/Olympus' }), 'timeZone'],
      [c.upsertStore({ ...STORE, hours: { mon: [['25:00', '02:00']] } }), 'hours'],
      [c.upsertStore({ ...STORE, hours: { funday: [['06:00', '22:00']] } } as never), 'hours'],
      [c.upsertStore({ ...STORE, hours: { mon: [['06:00', '06:00']] } }), 'hours'],
      [c.upsertStore({ ...STORE, location: { lat: 91, lng: 0 } }), 'location'],
      [c.upsertStore({ ...STORE, prepMinutes: -1 }), 'prepMinutes'],
      [c.upsertProduct({ storeId: 'st-1', productId: 'a', name: 'A', pricePaise: 10.5 }), 'pricePaise'],
      [c.setStock('st-1', 'a', -1), 'onHand'],
    ];
    for (const [p, field] of admin) t.equal((await refusal(t, p, 'QD_ERR_INVALID_ARGUMENT', `admin: bad ${field}`)).details.field, field);
    await c.reserve('o-hold', 'st-1', [{ productId: 'a', quantity: 8 }], OPEN);
    const err = await refusal(t, c.setStock('st-1', 'a', 7), 'QD_ERR_INVALID_ARGUMENT', 'a stock count below what open orders hold');
    t.match(err.details, { field: 'onHand', reason: /8 units reserved/ });
    t.equal(await c.setStock('st-1', 'a', 8), true, 'down to exactly what is held is allowed');
    t.same(await c.stockOf('st-1', 'a'), { onHand: 8, reserved: 8, available: 0 });
    await c.drop();
  });

  t.test(`${name}: the demo catalog seeds idempotently`, async (t) => {
    const c = await open();
    await c.init();
    const first = await loadDemoCatalog(c);
    const counts = await c.counts();
    const second = await loadDemoCatalog(c);
    t.same(second.changed, { stores: 0, products: 0, stock: 0 }, 'a second load changes no row');
    t.same(await c.counts(), counts, 'the same catalog');
    t.same(first.changed, { stores: first.stores, products: first.products, stock: first.products }, 'the first load wrote every row');
    t.ok(first.stores >= 5, `${first.stores} stores`);
    const demo = demoCatalog();
    for (const s of DEMO_STORES) {
      const n = demo.products.filter((p) => p.storeId === s.storeId).length;
      t.ok(n >= 20 && n <= 40, `${s.storeId} carries ${n} products`);
      t.ok(Math.abs(s.location.lat - 12.97) < 0.2 && Math.abs(s.location.lng - 77.59) < 0.2, `${s.storeId} is in Bengaluru`);
    }
    t.ok(demo.products.every((p) => Number.isInteger(p.pricePaise) && p.pricePaise > 0), 'prices are positive integers (paise)');
    t.equal(counts.unitsOnHand, first.unitsOnHand);
    const koramangala = 'blr-koramangala';
    t.equal((await c.getStore(koramangala, ist(24, 23, 30))).open, true, 'open at 23:30');
    t.equal((await c.getStore(koramangala, ist(25, 1, 30))).open, true, 'open at 01:30');
    t.equal((await c.getStore(koramangala, ist(25, 4, 0))).open, false, 'closed at 04:00');
    const item = demo.products.find((p) => p.storeId === koramangala)!;
    const r = await c.reserve('demo-1', koramangala, [{ productId: item.productId, quantity: 2 }], OPEN);
    t.equal(r.totalPaise, 2 * item.pricePaise, 'a demo order is priced from the catalog');
    await c.drop();
  });
}

t.test('opening hours (no database)', async (t) => {
  const late = everyDay(['06:00', '02:00']);
  t.same(localTime('Asia/Kolkata', ist(24, 0, 15)), { weekday: 2, minute: 15 }, 'Tuesday 00:15 in Kolkata');
  t.same(openAt(late, { weekday: 2, minute: 60 }, 'Asia/Kolkata'), { open: true }, "01:00 is in Monday's interval");
  t.same(openAt(late, { weekday: 2, minute: 120 }, 'Asia/Kolkata'), { open: false, reason: 'outside opening hours at tue 02:00 Asia/Kolkata; opens tue 06:00' });
  t.same(openAt({ sun: [['00:00', '24:00']] }, { weekday: 0, minute: 1439 }, 'UTC'), { open: true }, '00:00-24:00 is all day');
  t.same(openAt({ sun: [['00:00', '24:00']] }, { weekday: 1, minute: 0 }, 'UTC'), { open: false, reason: 'outside opening hours at mon 00:00 UTC; opens sun 00:00' });
  t.same(openAt({ mon: [['09:00', '13:00'], ['17:00', '21:00']] }, { weekday: 1, minute: 14 * 60 }, 'UTC'), {
    open: false,
    reason: 'outside opening hours at mon 14:00 UTC; opens mon 17:00',
  }, 'a lunch break; the reason names the next opening');
  t.same(openAt({}, { weekday: 3, minute: 0 }, 'UTC'), { open: false, reason: 'no opening hours (wed 00:00 UTC)' });
  t.same(normaliseLines([{ productId: 'b', quantity: 1 }, { productId: 'a', quantity: 2 }, { productId: 'b', quantity: 3 }]), [
    { productId: 'a', quantity: 2 },
    { productId: 'b', quantity: 4 },
  ], 'lines merged per product, in product order');
});

t.test('pglite', async (t) => {
  const db = await PGlite.create();
  t.teardown(() => db.close());
  const client = new PgliteClient(db);
  let n = 0;
  behaviour(t, 'pglite', async (logger) => {
    const c = new SqlCatalog(shared(client), { schema: `cat${n++}`, logger: logger ?? pino({ level: 'silent' }) });
    await c.init();
    return c;
  });

  t.test('pglite: schema names are checked', async (t) => {
    t.throws(() => new SqlCatalog(shared(client), { schema: 'x; DROP TABLE y' }), RangeError, 'not a plain identifier');
    t.throws(() => new SqlCatalog(shared(client), { schema: 'Upper' }), RangeError, 'upper case (Postgres would fold it)');
    await t.rejects(createEmbeddedCatalog({ schema: 'Bad Name' }), RangeError);
  });
});

const pgSkip = await postgresUnavailable(PG_URL);

t.test('postgres', { skip: pgSkip ?? false }, async (t) => {
  // Wide enough that 20 reservations hold a connection each at once: the races are real.
  const pool = new pg.Pool({ connectionString: PG_URL, max: 24 });
  const client = new PgClient(pool);
  const schemas: string[] = [];
  t.teardown(async () => {
    // Drop every schema this run made, whichever subtests failed.
    for (const s of schemas) await pool.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
    await pool.end();
  });
  behaviour(t, 'postgres', async (logger) => {
    const schema = `${RUN}_${schemas.length}`;
    schemas.push(schema);
    const c = new SqlCatalog(shared(client), { schema, logger: logger ?? pino({ level: 'silent' }) });
    await c.init();
    return c;
  });

  t.test('postgres: three nodes, many small batches in flight, two stores, repeats and settles: no deadlock, stock conserved', async (t) => {
    const schema = `${RUN}_nodes`;
    schemas.push(schema);
    // Batches of 3 with 6 in flight per node: many transactions overlap, each holding claims and stock rows of several orders.
    const nodes = [0, 1, 2].map(() => new SqlCatalog(shared(client), { schema, logger: pino({ level: 'silent' }), reserveBatch: 3, reserveConcurrency: 6 }));
    await nodes[0].init();
    for (const storeId of ['st-1', 'st-2']) {
      await nodes[0].upsertStore({ ...STORE, storeId });
      for (const p of ['a', 'b', 'c', 'd']) {
        await nodes[0].upsertProduct({ storeId, productId: p, name: p, pricePaise: 100 });
        await nodes[0].setStock(storeId, p, 60);
      }
    }
    const perms = [['a', 'b', 'c'], ['c', 'b', 'a'], ['d', 'a'], ['b', 'd', 'c'], ['a', 'c', 'd', 'b']];
    const linesOf = (i: number) => perms[i % perms.length].map((productId) => ({ productId, quantity: 1 + (i % 2) }));
    const storeOf = (i: number) => (i % 3 === 0 ? 'st-2' : 'st-1');
    // 150 orders, each sent to two nodes at once (a retry racing the first attempt), while a third node settles.
    const attempts = Array.from({ length: 150 }, (_, i) => [i % 3, (i + 1) % 3].map((n) => nodes[n].reserve(`n-${i}`, storeOf(i), linesOf(i), OPEN)));
    const settles: Array<Promise<void>> = [];
    const results = await Promise.allSettled(
      attempts.map(async (pair, i) => {
        const [x, y] = await Promise.allSettled(pair);
        if (x.status === 'fulfilled' && y.status === 'fulfilled') {
          t.equal(x.value.totalPaise, y.value.totalPaise, `n-${i}: both attempts answer one reservation`);
          t.equal([x.value.repeated, y.value.repeated].filter((r) => !r).length, 1, `n-${i}: exactly one attempt reserved`);
          if (i % 4 === 0) settles.push(nodes[2].release(`n-${i}`));
          if (i % 4 === 1) settles.push(nodes[2].commit(`n-${i}`));
        }
        for (const r of [x, y]) if (r.status === 'rejected') throw r.reason;
      }),
    );
    await Promise.all(settles);
    const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    t.ok(
      failures.every((f) => f.reason instanceof DispatchError && f.reason.code === 'QD_ERR_OUT_OF_STOCK'),
      `no deadlock or other error (${failures.length} out of stock): ${failures.find((f) => !(f.reason instanceof DispatchError))?.reason ?? ''}`,
    );
    // Conservation: what each stock row says equals what the reservations say.
    const r = await pool.query(
      `SELECT s.store_id, s.product_id, s.on_hand, s.reserved,
              coalesce((SELECT sum(l.quantity) FROM ${schema}.reservation_lines l JOIN ${schema}.reservations r USING (order_id)
                         WHERE r.store_id = s.store_id AND l.product_id = s.product_id AND r.status = 'reserved'), 0)::int AS held,
              coalesce((SELECT sum(l.quantity) FROM ${schema}.reservation_lines l JOIN ${schema}.reservations r USING (order_id)
                         WHERE r.store_id = s.store_id AND l.product_id = s.product_id AND r.status = 'committed'), 0)::int AS sold
         FROM ${schema}.stock s ORDER BY 1, 2`,
    );
    for (const row of r.rows) {
      t.equal(row.reserved, row.held, `${row.store_id}/${row.product_id}: reserved ${row.reserved} is what open reservations hold`);
      t.equal(row.on_hand, 60 - row.sold, `${row.store_id}/${row.product_id}: on hand is 60 less what was sold`);
    }
  });

  t.test('postgres: concurrent inits of one schema do not collide', async (t) => {
    const schema = `${RUN}_init`;
    schemas.push(schema);
    const catalogs = [0, 1, 2, 3].map(() => new SqlCatalog(shared(client), { schema, logger: pino({ level: 'silent' }) }));
    await Promise.all(catalogs.map((c) => c.init()));
    await catalogs[0].upsertStore(STORE);
    t.equal((await catalogs[3].getStore('st-1', OPEN)).name, 'Test Store', 'all four share the tables');
  });
});

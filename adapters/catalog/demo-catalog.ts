/**
 * A demo catalog: six dark stores around Bengaluru, open 06:00-02:00
 * Asia/Kolkata every day, each carrying 30 to 36 of 40 grocery products with
 * prices in paise and stock. Deterministic (no randomness), so loading it
 * twice leaves the same catalog; `npm run seed-catalog` and tests load it.
 */
import { everyDay } from './hours.ts';
import type { ProductRecord, SqlCatalog, StoreRecord } from './sql-catalog.ts';

const HOURS = everyDay(['06:00', '02:00']);

export const DEMO_STORES: readonly StoreRecord[] = [
  { storeId: 'blr-koramangala', name: 'QuickDash Koramangala 5th Block', location: { lat: 12.9352, lng: 77.6245 }, timeZone: 'Asia/Kolkata', prepMinutes: 8, hours: HOURS },
  { storeId: 'blr-indiranagar', name: 'QuickDash Indiranagar 100 Ft Road', location: { lat: 12.9784, lng: 77.6408 }, timeZone: 'Asia/Kolkata', prepMinutes: 9, hours: HOURS },
  { storeId: 'blr-hsr', name: 'QuickDash HSR Layout Sector 2', location: { lat: 12.9116, lng: 77.6474 }, timeZone: 'Asia/Kolkata', prepMinutes: 8, hours: HOURS },
  { storeId: 'blr-whitefield', name: 'QuickDash Whitefield ITPL', location: { lat: 12.9698, lng: 77.75 }, timeZone: 'Asia/Kolkata', prepMinutes: 12, hours: HOURS },
  { storeId: 'blr-jayanagar', name: 'QuickDash Jayanagar 4th Block', location: { lat: 12.925, lng: 77.5938 }, timeZone: 'Asia/Kolkata', prepMinutes: 10, hours: HOURS },
  { storeId: 'blr-malleshwaram', name: 'QuickDash Malleshwaram 8th Cross', location: { lat: 13.0035, lng: 77.5709 }, timeZone: 'Asia/Kolkata', prepMinutes: 11, hours: HOURS },
];

/** [productId, name, list price in paise]. */
export const DEMO_PRODUCTS: ReadonlyArray<readonly [string, string, number]> = [
  ['milk-toned-500ml', 'Toned Milk 500 ml', 2800],
  ['milk-full-cream-1l', 'Full Cream Milk 1 l', 6800],
  ['curd-400g', 'Fresh Curd 400 g', 3500],
  ['paneer-200g', 'Malai Paneer 200 g', 9000],
  ['butter-100g', 'Salted Butter 100 g', 5800],
  ['ghee-500ml', 'Cow Ghee 500 ml', 34000],
  ['eggs-6', 'Farm Eggs, pack of 6', 4800],
  ['bread-white-400g', 'White Sandwich Bread 400 g', 4000],
  ['bread-brown-400g', 'Brown Bread 400 g', 5000],
  ['atta-5kg', 'Whole Wheat Atta 5 kg', 26500],
  ['rice-sona-masoori-5kg', 'Sona Masoori Rice 5 kg', 38000],
  ['toor-dal-1kg', 'Toor Dal 1 kg', 17500],
  ['moong-dal-500g', 'Moong Dal 500 g', 8500],
  ['sugar-1kg', 'Sugar 1 kg', 4800],
  ['salt-1kg', 'Iodised Salt 1 kg', 2800],
  ['sunflower-oil-1l', 'Sunflower Oil 1 l', 15500],
  ['tea-250g', 'Assam Tea 250 g', 14000],
  ['filter-coffee-200g', 'Filter Coffee Powder 200 g', 16000],
  ['onion-1kg', 'Onion 1 kg', 4500],
  ['tomato-500g', 'Tomato 500 g', 2500],
  ['potato-1kg', 'Potato 1 kg', 4000],
  ['banana-robusta-6', 'Robusta Banana, 6 pieces', 4200],
  ['apple-shimla-4', 'Shimla Apple, 4 pieces', 16000],
  ['coriander-bunch', 'Coriander, 1 bunch', 1200],
  ['green-chilli-100g', 'Green Chilli 100 g', 1000],
  ['ginger-200g', 'Ginger 200 g', 3000],
  ['maggi-4pack', 'Instant Noodles, pack of 4', 5600],
  ['poha-500g', 'Thick Poha 500 g', 4500],
  ['biscuits-marie-250g', 'Marie Biscuits 250 g', 3500],
  ['chips-salted-52g', 'Salted Potato Chips 52 g', 2000],
  ['namkeen-bhujia-200g', 'Bhujia Namkeen 200 g', 5500],
  ['dark-chocolate-100g', 'Dark Chocolate 100 g', 12000],
  ['cola-750ml', 'Cola 750 ml', 4000],
  ['mineral-water-1l', 'Mineral Water 1 l', 2000],
  ['coconut-water-200ml', 'Tender Coconut Water 200 ml', 5000],
  ['ice-cream-vanilla-500ml', 'Vanilla Ice Cream 500 ml', 17500],
  ['dish-soap-500ml', 'Dishwash Liquid 500 ml', 11000],
  ['detergent-1kg', 'Detergent Powder 1 kg', 13500],
  ['toothpaste-150g', 'Toothpaste 150 g', 9800],
  ['bath-soap-4x100g', 'Bath Soap, 4 x 100 g', 19000],
];

export interface DemoCatalog {
  stores: StoreRecord[];
  products: ProductRecord[];
  stock: Array<{ storeId: string; productId: string; onHand: number }>;
}

/** The catalog as data: which store carries what, at what price, with how much stock. */
export function demoCatalog(): DemoCatalog {
  const out: DemoCatalog = { stores: [...DEMO_STORES], products: [], stock: [] };
  DEMO_STORES.forEach((store, i) => {
    DEMO_PRODUCTS.forEach(([productId, name, listPaise], j) => {
      // Each store leaves out a different handful, so assortments differ (30 to 36 products).
      if ((i + j) % (i + 4) === 0) return;
      // Prices vary by up to two rupees either way between stores, as they do between dark stores.
      const pricePaise = listPaise + (((i * 7 + j * 3) % 5) - 2) * 100;
      out.products.push({ storeId: store.storeId, productId, name, pricePaise });
      out.stock.push({ storeId: store.storeId, productId, onHand: 10 + ((i * 37 + j * 53) % 111) });
    });
  });
  return out;
}

export interface DemoLoadSummary {
  stores: number;
  products: number;
  unitsOnHand: number;
  /** Rows this load created or changed: all zero when the catalog was already loaded. */
  changed: { stores: number; products: number; stock: number };
}

/**
 * Writes the demo catalog through the admin methods: stores, products, then
 * stock. Idempotent: a second load changes nothing. Sets on_hand to the
 * demo figures, so it refuses (QD_ERR_INVALID_ARGUMENT) where open
 * reservations hold more than that.
 */
export async function loadDemoCatalog(catalog: Pick<SqlCatalog, 'upsertStore' | 'upsertProduct' | 'setStock'>): Promise<DemoLoadSummary> {
  const demo = demoCatalog();
  const changed = { stores: 0, products: 0, stock: 0 };
  for (const s of demo.stores) if (await catalog.upsertStore(s)) changed.stores++;
  for (const p of demo.products) if (await catalog.upsertProduct(p)) changed.products++;
  for (const s of demo.stock) if (await catalog.setStock(s.storeId, s.productId, s.onHand)) changed.stock++;
  return {
    stores: demo.stores.length,
    products: demo.products.length,
    unitsOnHand: demo.stock.reduce((n, s) => n + s.onHand, 0),
    changed,
  };
}

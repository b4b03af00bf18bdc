/**
 * The catalog's SQL schema (Postgres dialect, also run by PGlite), in its
 * own configurable schema so it can share a database with the event store.
 * Every statement is idempotent: init() runs them on each start.
 *
 * stores: one row per store; `hours` is jsonb {"mon": [["06:00","02:00"]], ...}
 *   (see hours.ts), evaluated in `time_zone`.
 * products: what a store sells and at what price (paise).
 * stock: units on hand and units held by open reservations. The CHECK is the
 *   last line against overselling: no statement can leave reserved > on_hand.
 * reservations: one row per order; its primary key is what makes reserve()
 *   idempotent and serialises concurrent repeats of one order.
 * reservation_lines: what a reservation holds, with the price it was taken at.
 */
import { checkSchemaName } from '../sql/index.ts';

export const DEFAULT_CATALOG_SCHEMA = 'catalog';

export const CATALOG_SCHEMA_SQL: readonly string[] = [
  `CREATE SCHEMA IF NOT EXISTS {schema}`,
  `CREATE TABLE IF NOT EXISTS {schema}.stores (
    store_id text PRIMARY KEY,
    name text NOT NULL,
    lat double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lng double precision NOT NULL CHECK (lng BETWEEN -180 AND 180),
    time_zone text NOT NULL,
    prep_minutes integer NOT NULL CHECK (prep_minutes >= 0),
    paused boolean NOT NULL DEFAULT false,
    hours jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
  )`,
  `CREATE TABLE IF NOT EXISTS {schema}.products (
    store_id text NOT NULL REFERENCES {schema}.stores (store_id),
    product_id text NOT NULL,
    name text NOT NULL,
    price_paise integer NOT NULL CHECK (price_paise >= 0),
    active boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, product_id)
  )`,
  `CREATE TABLE IF NOT EXISTS {schema}.stock (
    store_id text NOT NULL,
    product_id text NOT NULL,
    on_hand integer NOT NULL CHECK (on_hand >= 0),
    reserved integer NOT NULL DEFAULT 0,
    PRIMARY KEY (store_id, product_id),
    FOREIGN KEY (store_id, product_id) REFERENCES {schema}.products (store_id, product_id),
    CONSTRAINT stock_reserved_within_on_hand CHECK (reserved >= 0 AND reserved <= on_hand)
  )`,
  `CREATE TABLE IF NOT EXISTS {schema}.reservations (
    order_id text PRIMARY KEY,
    store_id text NOT NULL REFERENCES {schema}.stores (store_id),
    status text NOT NULL CHECK (status IN ('reserved', 'released', 'committed')),
    total_paise bigint NOT NULL DEFAULT 0 CHECK (total_paise >= 0),
    created_at bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
  )`,
  `CREATE TABLE IF NOT EXISTS {schema}.reservation_lines (
    order_id text NOT NULL REFERENCES {schema}.reservations (order_id) ON DELETE CASCADE,
    product_id text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    unit_price_paise integer NOT NULL CHECK (unit_price_paise >= 0),
    PRIMARY KEY (order_id, product_id)
  )`,
  // Operations look for what is still held at a store.
  `CREATE INDEX IF NOT EXISTS reservations_held ON {schema}.reservations (store_id) WHERE status = 'reserved'`,
];

/** The catalog statements for one schema name, in order. @throws RangeError on a bad name. */
export function catalogStatements(schema: string = DEFAULT_CATALOG_SCHEMA): string[] {
  const name = checkSchemaName(schema);
  return CATALOG_SCHEMA_SQL.map((s) => s.replaceAll('{schema}', name));
}

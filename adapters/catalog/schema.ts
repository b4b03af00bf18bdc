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
 * reserve_orders(): the reservations of many orders in one statement (below).
 */
import { checkSchemaName } from '../sql/index.ts';

export const DEFAULT_CATALOG_SCHEMA = 'catalog';

/**
 * reserve_orders(batch): the reservations of many orders in one statement,
 * so concurrent creates share one round trip and one commit. The batch is a
 * JSON array of {o: order id, s: store id, p: product ids in byte order,
 * q: quantities, at: epoch ms, c: why the store is closed by its hours, or
 * null}; the answer is an array in the same order, one of
 *   {repeated: false, prices: [unit price per product]}
 *   {repeated: true, storeId, status, totalPaise, createdAt, paused, lines}
 *   {refusal: QD_ERR_ code, details: {...}}
 * A refused order holds nothing: its lines are checked before any is taken
 * and its claim is deleted.
 *
 * No deadlocks, between batches or with release/commit, because every
 * transaction takes its locks in one global order:
 *   1. claims (the reservation rows) in order-id byte order. The primary key
 *      makes a concurrent repeat of an order wait for the first claim's
 *      transaction, then find its row and answer it as `repeated`;
 *   2. then every stock row the batch needs in (store, product) byte order,
 *      in one statement, before any is read or changed. Holding them, the
 *      availability checks cannot go stale: nothing is oversold.
 * release()/commit() lock one reservation row, then its stock rows in the
 * same product order; a batch never waits for a claim once it holds stock.
 *
 * Opening hours are evaluated by the caller (IANA zones in JS); `paused` is
 * read here, so a pause takes effect at once on every node.
 */
const RESERVE_ORDERS_SQL = `CREATE OR REPLACE FUNCTION {schema}.reserve_orders(p_batch jsonb)
  RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
  n integer := jsonb_array_length(p_batch);
  v_out jsonb[] := array_fill(NULL::jsonb, ARRAY[n]);
  v_claimed boolean[] := array_fill(false, ARRAY[n]);
  i integer;
  v_req jsonb;
  v_order text;
  v_store text;
  v_paused boolean;
  v_res record;
  v_products text[];
  v_quantities integer[];
  v_prices integer[];
  v_price integer;
  v_available integer;
  v_total bigint;
  v_refusal jsonb;
BEGIN
  FOR i IN SELECT e.ord FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS e(req, ord) ORDER BY e.req->>'o' COLLATE "C" LOOP
    v_req := p_batch -> (i - 1);
    v_order := v_req->>'o';
    v_store := v_req->>'s';
    SELECT paused INTO v_paused FROM {schema}.stores WHERE store_id = v_store;
    IF NOT FOUND THEN
      v_out[i] := jsonb_build_object('refusal', 'QD_ERR_STORE_NOT_FOUND', 'details', jsonb_build_object('storeId', v_store));
      CONTINUE;
    END IF;
    INSERT INTO {schema}.reservations (order_id, store_id, status, created_at) VALUES (v_order, v_store, 'reserved', (v_req->>'at')::bigint)
      ON CONFLICT (order_id) DO NOTHING;
    IF NOT FOUND THEN
      SELECT r.store_id, r.status, r.total_paise, r.created_at, s.paused INTO v_res
        FROM {schema}.reservations r JOIN {schema}.stores s USING (store_id) WHERE r.order_id = v_order;
      v_out[i] := jsonb_build_object('repeated', true, 'storeId', v_res.store_id, 'status', v_res.status,
        'totalPaise', v_res.total_paise, 'createdAt', v_res.created_at, 'paused', v_res.paused,
        'lines', (SELECT coalesce(jsonb_agg(jsonb_build_object('productId', product_id, 'quantity', quantity, 'unitPricePaise', unit_price_paise)
                                            ORDER BY product_id COLLATE "C"), '[]'::jsonb)
                  FROM {schema}.reservation_lines WHERE order_id = v_order));
      CONTINUE;
    END IF;
    IF v_paused OR jsonb_typeof(v_req->'c') = 'string' THEN
      DELETE FROM {schema}.reservations WHERE order_id = v_order;
      v_out[i] := jsonb_build_object('refusal', 'QD_ERR_STORE_CLOSED',
        'details', jsonb_build_object('storeId', v_store, 'reason', CASE WHEN v_paused THEN 'paused' ELSE v_req->>'c' END));
      CONTINUE;
    END IF;
    v_claimed[i] := true;
  END LOOP;

  PERFORM 1 FROM {schema}.stock s
    JOIN (SELECT DISTINCT e.req->>'s' AS store_id, p.product_id
            FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS e(req, ord), jsonb_array_elements_text(e.req->'p') AS p(product_id)
           WHERE v_claimed[e.ord]) w ON w.store_id = s.store_id AND w.product_id = s.product_id
    ORDER BY s.store_id COLLATE "C", s.product_id COLLATE "C"
    FOR UPDATE OF s;

  FOR i IN 1 .. n LOOP
    CONTINUE WHEN NOT v_claimed[i];
    v_req := p_batch -> (i - 1);
    v_order := v_req->>'o';
    v_store := v_req->>'s';
    v_products := ARRAY(SELECT jsonb_array_elements_text(v_req->'p'));
    v_quantities := ARRAY(SELECT x::integer FROM jsonb_array_elements_text(v_req->'q') AS x);
    v_prices := '{}';
    v_total := 0;
    v_refusal := NULL;
    -- Every product is checked before any stock: a missing one is named whatever the stock.
    FOR j IN 1 .. cardinality(v_products) LOOP
      SELECT price_paise INTO v_price FROM {schema}.products WHERE store_id = v_store AND product_id = v_products[j] AND active;
      IF NOT FOUND THEN
        v_refusal := jsonb_build_object('refusal', 'QD_ERR_PRODUCT_NOT_FOUND', 'details', jsonb_build_object('storeId', v_store, 'productId', v_products[j]));
        EXIT;
      END IF;
      v_prices := v_prices || v_price;
      v_total := v_total + v_quantities[j]::bigint * v_price;
    END LOOP;
    IF v_refusal IS NULL THEN
      FOR j IN 1 .. cardinality(v_products) LOOP
        SELECT on_hand - reserved INTO v_available FROM {schema}.stock WHERE store_id = v_store AND product_id = v_products[j];
        IF coalesce(v_available, 0) < v_quantities[j] THEN
          v_refusal := jsonb_build_object('refusal', 'QD_ERR_OUT_OF_STOCK', 'details', jsonb_build_object('storeId', v_store,
            'productId', v_products[j], 'available', greatest(0, coalesce(v_available, 0)), 'requested', v_quantities[j]));
          EXIT;
        END IF;
      END LOOP;
    END IF;
    IF v_refusal IS NOT NULL THEN
      DELETE FROM {schema}.reservations WHERE order_id = v_order;
      v_out[i] := v_refusal;
      CONTINUE;
    END IF;
    UPDATE {schema}.stock s SET reserved = s.reserved + l.quantity
      FROM unnest(v_products, v_quantities) AS l(product_id, quantity)
     WHERE s.store_id = v_store AND s.product_id = l.product_id;
    INSERT INTO {schema}.reservation_lines (order_id, product_id, quantity, unit_price_paise)
      SELECT v_order, l.product_id, l.quantity, l.price FROM unnest(v_products, v_quantities, v_prices) AS l(product_id, quantity, price);
    UPDATE {schema}.reservations SET total_paise = v_total WHERE order_id = v_order;
    v_out[i] := jsonb_build_object('repeated', false, 'prices', to_jsonb(v_prices));
  END LOOP;
  RETURN to_jsonb(v_out);
END
$fn$`;

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
  RESERVE_ORDERS_SQL,
];

/** The catalog statements for one schema name, in order. @throws RangeError on a bad name. */
export function catalogStatements(schema: string = DEFAULT_CATALOG_SCHEMA): string[] {
  const name = checkSchemaName(schema);
  return CATALOG_SCHEMA_SQL.map((s) => s.replaceAll('{schema}', name));
}

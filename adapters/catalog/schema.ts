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
 * and its claim is deleted. A repeat is answered as such whatever the store
 * or its stock look like now.
 *
 * Set-based, so the cost per order is a share of a few statements, not a
 * few statements of its own: the store, pause, hours and product checks for
 * the whole batch are one read; the claims one insert; and when the stock
 * covers the batch's summed demand on every row (the usual case) the stock
 * and the lines are one update and one insert. Only a batch that asks more
 * of some row than it holds is settled order by order, in batch order, so
 * each refusal names the line that is short. Plans are generic: the
 * statements are key lookups whatever the batch, and re-planning them for
 * each call's arrays cost more than running them.
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
  RETURNS jsonb LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
  n integer := jsonb_array_length(p_batch);
  v_out jsonb[] := array_fill(NULL::jsonb, ARRAY[n]);
  o_order text[];
  o_store text[];
  o_at bigint[];
  o_found boolean[];
  o_refusal jsonb[];
  o_total bigint[];
  o_prices jsonb[];
  v_claimed boolean[] := array_fill(false, ARRAY[n]);
  v_refused text[] := '{}';
  v_take integer[] := '{}';
  v_short boolean;
  i integer;
  v_res record;
  v_products text[];
  v_quantities integer[];
  v_available integer;
  v_refusal jsonb;
BEGIN
  -- 1. Everything knowable without locks, for the whole batch: the store (found, paused, closed by
  --    its hours) and each product (found, active, price), in the order the checks are answered.
  SELECT array_agg(x.order_id ORDER BY x.ord), array_agg(x.store_id ORDER BY x.ord), array_agg(x.at ORDER BY x.ord),
         array_agg(x.found ORDER BY x.ord), array_agg(x.refusal ORDER BY x.ord), array_agg(x.total ORDER BY x.ord),
         array_agg(x.prices ORDER BY x.ord)
    INTO o_order, o_store, o_at, o_found, o_refusal, o_total, o_prices
    FROM (
      SELECT e.ord, e.req->>'o' AS order_id, e.req->>'s' AS store_id, (e.req->>'at')::bigint AS at, s.store_id IS NOT NULL AS found,
             CASE
               WHEN s.store_id IS NULL THEN
                 jsonb_build_object('refusal', 'QD_ERR_STORE_NOT_FOUND', 'details', jsonb_build_object('storeId', e.req->>'s'))
               WHEN s.paused OR jsonb_typeof(e.req->'c') = 'string' THEN
                 jsonb_build_object('refusal', 'QD_ERR_STORE_CLOSED', 'details', jsonb_build_object('storeId', e.req->>'s',
                   'reason', CASE WHEN s.paused THEN 'paused' ELSE e.req->>'c' END))
               WHEN l.missing IS NOT NULL THEN
                 jsonb_build_object('refusal', 'QD_ERR_PRODUCT_NOT_FOUND', 'details', jsonb_build_object('storeId', e.req->>'s', 'productId', l.missing))
             END AS refusal,
             l.total, l.prices
        FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS e(req, ord)
        LEFT JOIN {schema}.stores s ON s.store_id = e.req->>'s'
        CROSS JOIN LATERAL (
          SELECT (array_agg(w.product_id ORDER BY w.k) FILTER (WHERE pr.price_paise IS NULL))[1] AS missing,
                 sum(w.quantity::bigint * pr.price_paise) AS total,
                 jsonb_agg(pr.price_paise ORDER BY w.k) AS prices
            FROM ROWS FROM (jsonb_array_elements_text(e.req->'p'), jsonb_array_elements_text(e.req->'q')) WITH ORDINALITY AS w(product_id, quantity, k)
            LEFT JOIN {schema}.products pr ON pr.store_id = e.req->>'s' AND pr.product_id = w.product_id AND pr.active
        ) l
    ) x;

  -- 2. Claims, in order-id byte order; a key already claimed is a repeat.
  WITH ins AS (
    INSERT INTO {schema}.reservations (order_id, store_id, status, created_at, total_paise)
    SELECT c.order_id, c.store_id, 'reserved', c.at, coalesce(c.total, 0)
      FROM unnest(o_order, o_store, o_at, o_found, o_total) AS c(order_id, store_id, at, found, total)
     WHERE c.found
     ORDER BY c.order_id COLLATE "C"
    ON CONFLICT (order_id) DO NOTHING
    RETURNING order_id)
  SELECT coalesce(array_agg(u.ord), '{}') INTO v_take
    FROM ins JOIN unnest(o_order) WITH ORDINALITY AS u(order_id, ord) USING (order_id);
  FOREACH i IN ARRAY v_take LOOP
    v_claimed[i] := true;
  END LOOP;
  v_take := '{}';

  FOR i IN 1 .. n LOOP
    IF NOT o_found[i] THEN
      v_out[i] := o_refusal[i];
    ELSIF NOT v_claimed[i] THEN
      SELECT r.store_id, r.status, r.total_paise, r.created_at, s.paused INTO v_res
        FROM {schema}.reservations r JOIN {schema}.stores s USING (store_id) WHERE r.order_id = o_order[i];
      v_out[i] := jsonb_build_object('repeated', true, 'storeId', v_res.store_id, 'status', v_res.status,
        'totalPaise', v_res.total_paise, 'createdAt', v_res.created_at, 'paused', v_res.paused,
        'lines', (SELECT coalesce(jsonb_agg(jsonb_build_object('productId', product_id, 'quantity', quantity, 'unitPricePaise', unit_price_paise)
                                            ORDER BY product_id COLLATE "C"), '[]'::jsonb)
                  FROM {schema}.reservation_lines WHERE order_id = o_order[i]));
    ELSIF o_refusal[i] IS NOT NULL THEN
      v_out[i] := o_refusal[i];
      v_refused := v_refused || o_order[i];
    ELSE
      v_take := v_take || i;
    END IF;
  END LOOP;
  IF cardinality(v_refused) > 0 THEN
    DELETE FROM {schema}.reservations WHERE order_id = ANY (v_refused);
  END IF;
  IF cardinality(v_take) = 0 THEN
    RETURN to_jsonb(v_out);
  END IF;

  -- 3. Every stock row the claimed orders need, locked in the global order before any is read.
  PERFORM 1 FROM {schema}.stock s
    JOIN (SELECT DISTINCT o_store[t.i] AS store_id, w.product_id
            FROM unnest(v_take) AS t(i), jsonb_array_elements_text(p_batch -> (t.i - 1) -> 'p') AS w(product_id)) w
      ON w.store_id = s.store_id AND w.product_id = s.product_id
    ORDER BY s.store_id COLLATE "C", s.product_id COLLATE "C"
    FOR UPDATE OF s;

  -- 4. Does the stock cover the summed demand on every row? A row with no stock holds nothing.
  SELECT coalesce(bool_or(coalesce(s.on_hand - s.reserved, 0) < d.quantity), false) INTO v_short
    FROM (SELECT o_store[t.i] AS store_id, w.product_id, sum(w.quantity::integer) AS quantity
            FROM unnest(v_take) AS t(i),
                 ROWS FROM (jsonb_array_elements_text(p_batch -> (t.i - 1) -> 'p'), jsonb_array_elements_text(p_batch -> (t.i - 1) -> 'q')) AS w(product_id, quantity)
           GROUP BY 1, 2) d
    LEFT JOIN {schema}.stock s ON s.store_id = d.store_id AND s.product_id = d.product_id;

  IF NOT v_short THEN
    UPDATE {schema}.stock s SET reserved = s.reserved + d.quantity
      FROM (SELECT o_store[t.i] AS store_id, w.product_id, sum(w.quantity::integer) AS quantity
              FROM unnest(v_take) AS t(i),
                   ROWS FROM (jsonb_array_elements_text(p_batch -> (t.i - 1) -> 'p'), jsonb_array_elements_text(p_batch -> (t.i - 1) -> 'q')) AS w(product_id, quantity)
             GROUP BY 1, 2) d
     WHERE s.store_id = d.store_id AND s.product_id = d.product_id;
    INSERT INTO {schema}.reservation_lines (order_id, product_id, quantity, unit_price_paise)
      SELECT o_order[t.i], w.product_id, w.quantity::integer, (o_prices[t.i] ->> (w.k - 1)::integer)::integer
        FROM unnest(v_take) AS t(i),
             ROWS FROM (jsonb_array_elements_text(p_batch -> (t.i - 1) -> 'p'), jsonb_array_elements_text(p_batch -> (t.i - 1) -> 'q')) WITH ORDINALITY AS w(product_id, quantity, k);
    FOREACH i IN ARRAY v_take LOOP
      v_out[i] := jsonb_build_object('repeated', false, 'prices', o_prices[i]);
    END LOOP;
    RETURN to_jsonb(v_out);
  END IF;

  -- 5. Not enough for everyone: first come (in batch order), first served, each order all or nothing.
  FOREACH i IN ARRAY v_take LOOP
    v_products := ARRAY(SELECT jsonb_array_elements_text(p_batch -> (i - 1) -> 'p'));
    v_quantities := ARRAY(SELECT x::integer FROM jsonb_array_elements_text(p_batch -> (i - 1) -> 'q') AS x);
    v_refusal := NULL;
    FOR j IN 1 .. cardinality(v_products) LOOP
      SELECT on_hand - reserved INTO v_available FROM {schema}.stock WHERE store_id = o_store[i] AND product_id = v_products[j];
      IF coalesce(v_available, 0) < v_quantities[j] THEN
        v_refusal := jsonb_build_object('refusal', 'QD_ERR_OUT_OF_STOCK', 'details', jsonb_build_object('storeId', o_store[i],
          'productId', v_products[j], 'available', greatest(0, coalesce(v_available, 0)), 'requested', v_quantities[j]));
        EXIT;
      END IF;
    END LOOP;
    IF v_refusal IS NOT NULL THEN
      DELETE FROM {schema}.reservations WHERE order_id = o_order[i];
      v_out[i] := v_refusal;
      CONTINUE;
    END IF;
    UPDATE {schema}.stock s SET reserved = s.reserved + l.quantity
      FROM unnest(v_products, v_quantities) AS l(product_id, quantity)
     WHERE s.store_id = o_store[i] AND s.product_id = l.product_id;
    INSERT INTO {schema}.reservation_lines (order_id, product_id, quantity, unit_price_paise)
      SELECT o_order[i], l.product_id, l.quantity, (o_prices[i] ->> (l.k - 1)::integer)::integer
        FROM unnest(v_products, v_quantities) WITH ORDINALITY AS l(product_id, quantity, k);
    v_out[i] := jsonb_build_object('repeated', false, 'prices', o_prices[i]);
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

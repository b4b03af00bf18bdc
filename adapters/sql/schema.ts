/**
 * The event store's SQL schema, in the Postgres dialect that PGlite also
 * runs. Every object lives in one schema whose name is configurable, so a
 * node, a test run or a benchmark can keep its own tables in a shared
 * database. Every statement is idempotent: init() runs them on each start.
 */

/** Schema used when the caller names none. */
export const DEFAULT_SCHEMA = 'quickdash';

/**
 * Tables, with `{schema}` standing for the schema name.
 *
 * events: the log, one row per (stream, seq). `final` is kept so a read
 *   returns the event as appended.
 * streams: one row per stream with its newest seq and whether it is live
 *   (newest event not final), so recovery scans live streams only.
 * snapshots: the newest snapshot per stream.
 * rider_daily_stats: additive counters per rider and UTC day.
 */
export const SCHEMA_SQL: readonly string[] = [
  `CREATE SCHEMA IF NOT EXISTS {schema}`,
  `CREATE TABLE IF NOT EXISTS {schema}.events (
    stream text NOT NULL,
    seq integer NOT NULL CHECK (seq > 0),
    type text NOT NULL,
    data jsonb,
    at bigint NOT NULL,
    final boolean NOT NULL DEFAULT false,
    PRIMARY KEY (stream, seq)
  )`,
  `CREATE TABLE IF NOT EXISTS {schema}.streams (
    stream text PRIMARY KEY,
    kind text NOT NULL,
    last_seq integer NOT NULL,
    live boolean NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
  )`,
  // Recovery reads live streams only; ended ones are most rows after a day of trading.
  `CREATE INDEX IF NOT EXISTS streams_live ON {schema}.streams (stream) WHERE live`,
  `CREATE TABLE IF NOT EXISTS {schema}.snapshots (
    stream text PRIMARY KEY,
    seq integer NOT NULL CHECK (seq >= 0),
    state jsonb,
    at bigint NOT NULL
  )`,
  `CREATE TABLE IF NOT EXISTS {schema}.rider_daily_stats (
    rider_id text NOT NULL,
    day date NOT NULL,
    deliveries integer NOT NULL DEFAULT 0,
    on_time integer NOT NULL DEFAULT 0,
    distance_m double precision NOT NULL DEFAULT 0,
    earnings double precision NOT NULL DEFAULT 0,
    offers integer NOT NULL DEFAULT 0,
    accepts integer NOT NULL DEFAULT 0,
    PRIMARY KEY (rider_id, day)
  )`,
];

/**
 * Checks a schema name: it is spliced into SQL text (identifiers cannot be
 * bound as parameters), so only plain lower-case identifiers are allowed.
 * @throws RangeError for anything else.
 */
export function checkSchemaName(schema: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new RangeError(`schema name must match [a-z_][a-z0-9_]*, at most 63 chars: ${schema}`);
  return schema;
}

/** The schema statements for one schema name, in order. @throws RangeError on a bad name. */
export function schemaStatements(schema: string = DEFAULT_SCHEMA): string[] {
  const name = checkSchemaName(schema);
  return SCHEMA_SQL.map((s) => s.replaceAll('{schema}', name));
}

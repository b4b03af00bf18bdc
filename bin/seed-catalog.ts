/**
 * `npm run -s seed-catalog`: loads the demo catalog (six dark stores around
 * Bengaluru, adapters/catalog/demo-catalog.ts) and prints a JSON summary.
 *
 *   npm run -s seed-catalog -- [--postgres URL | --data-dir DIR] [--schema NAME]
 *
 * Target: --postgres, else $QD_POSTGRES_URL, else an embedded PGlite in
 * --data-dir (default data/catalog; not the node's data/quickdash, which
 * only its own process may open). Idempotent: a second run changes nothing
 * (the summary's `changed` counts are then all zero).
 * Exit 2 on bad arguments, 1 when the database refuses.
 */
import { parseArgs } from 'node:util';
import pino from 'pino';
import { createEmbeddedCatalog, createPostgresCatalog, DEFAULT_CATALOG_SCHEMA, loadDemoCatalog } from '../adapters/catalog/index.ts';
import type { SqlCatalog } from '../adapters/catalog/index.ts';

const usage = 'usage: npm run -s seed-catalog -- [--postgres URL | --data-dir DIR] [--schema NAME]';

let args: { postgres?: string; 'data-dir'?: string; schema: string; help: boolean };
try {
  ({ values: args } = parseArgs({
    options: {
      postgres: { type: 'string' },
      'data-dir': { type: 'string' },
      schema: { type: 'string', default: DEFAULT_CATALOG_SCHEMA },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  }) as { values: typeof args });
} catch (err) {
  console.error(`seed-catalog: ${(err as Error).message}\n${usage}`);
  process.exit(2);
}
if (args.help) {
  console.log(usage);
  process.exit(0);
}

const postgres = args.postgres ?? process.env.QD_POSTGRES_URL;
if (postgres && args['data-dir']) {
  console.error(`seed-catalog: --data-dir is for the embedded database; give it or a Postgres URL, not both\n${usage}`);
  process.exit(2);
}
const dataDir = args['data-dir'] ?? 'data/catalog';
const log = pino({ level: process.env.QD_LOG_LEVEL ?? 'warn' }, pino.destination(2));

/** The URL without its password, fit for a summary that may be pasted anywhere. */
function redacted(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
}

const started = performance.now();
let catalog: SqlCatalog;
try {
  catalog = postgres
    ? await createPostgresCatalog({ connectionString: postgres, schema: args.schema, poolSize: 2, logger: log })
    : await createEmbeddedCatalog({ dataDir, schema: args.schema, logger: log });
} catch (err) {
  // A bad schema name is the caller's mistake, anything else the database's.
  console.error(`seed-catalog: ${(err as Error).message}`);
  process.exit(err instanceof RangeError ? 2 : 1);
}
try {
  const loaded = await loadDemoCatalog(catalog);
  const counts = await catalog.counts();
  const summary = {
    target: postgres ? { backend: 'postgres', url: redacted(postgres) } : { backend: 'pglite', dataDir },
    schema: catalog.schema,
    ...loaded,
    catalog: counts,
    ms: Math.round(performance.now() - started),
  };
  console.log(JSON.stringify(summary, null, 2));
} catch (err) {
  console.error(`seed-catalog: ${(err as Error).message}`);
  process.exitCode = 1;
} finally {
  await catalog.close();
}

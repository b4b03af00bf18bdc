/**
 * Opening a catalog on either backend: Postgres through a pg.Pool, or an
 * embedded PGlite (in memory, or on a data directory of its own: a PGlite
 * directory can be open in one instance only, so it cannot be the event
 * store's).
 */
import { mkdirSync } from 'node:fs';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';
import type { Logger } from 'pino';
import { PgClient, PgliteClient, checkSchemaName } from '../sql/index.ts';
import { SqlCatalog } from './sql-catalog.ts';
import { DEFAULT_CATALOG_SCHEMA } from './schema.ts';

export interface PostgresCatalogOptions {
  connectionString: string;
  /** Schema holding the tables (default `catalog`). */
  schema?: string;
  /** Connections in the pool (default 10): each reserve() holds one for its transaction. */
  poolSize?: number;
  /** Errors of idle pooled connections; without a listener pg would crash the process. */
  onError?: (err: Error) => void;
  logger?: Logger;
}

export interface EmbeddedCatalogOptions {
  /** Directory for the database files, created if missing; undefined keeps it in memory. */
  dataDir?: string;
  schema?: string;
  logger?: Logger;
}

/**
 * Connects, creates the tables if missing and returns the catalog.
 * @throws RangeError on a bad schema name; the driver's error otherwise (the pool is ended first).
 */
export async function createPostgresCatalog(options: PostgresCatalogOptions): Promise<SqlCatalog> {
  checkSchemaName(options.schema ?? DEFAULT_CATALOG_SCHEMA);
  const pool = new pg.Pool({ connectionString: options.connectionString, max: options.poolSize ?? 10 });
  pool.on('error', options.onError ?? (() => {}));
  const catalog = new SqlCatalog(new PgClient(pool), { schema: options.schema, logger: options.logger });
  try {
    await catalog.init();
  } catch (err) {
    await pool.end().catch(() => {});
    throw err;
  }
  return catalog;
}

/** Starts PGlite, creates the tables if missing and returns the catalog. A fresh database runs initdb (seconds). */
export async function createEmbeddedCatalog(options: EmbeddedCatalogOptions = {}): Promise<SqlCatalog> {
  // Before anything touches the disk: a bad name should leave no database behind.
  checkSchemaName(options.schema ?? DEFAULT_CATALOG_SCHEMA);
  // PGlite creates only the last path component.
  if (options.dataDir !== undefined) mkdirSync(options.dataDir, { recursive: true });
  const db = await PGlite.create(options.dataDir !== undefined ? { dataDir: options.dataDir } : {});
  const catalog = new SqlCatalog(new PgliteClient(db), { schema: options.schema, logger: options.logger });
  try {
    await catalog.init();
  } catch (err) {
    await db.close().catch(() => {});
    throw err;
  }
  return catalog;
}

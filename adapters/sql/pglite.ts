/**
 * Embedded backend of the SQL event store: PGlite, Postgres compiled to WASM
 * and running in this process. In memory (dataDir undefined) it is a fast,
 * disposable store for tests and simulations; with a dataDir it keeps its
 * files there.
 *
 * Durability of a dataDir: a COMMIT has written its WAL to the files (the
 * OS page cache) before the append resolves, so a process crash or kill
 * loses nothing acknowledged. PGlite runs Postgres with fsync off and its
 * WASM file system makes fsync a no-op, so an OS crash or power loss can lose
 * recent commits. Only one process may open a dataDir at a time.
 */
import { mkdirSync } from 'node:fs';
import { PGlite } from '@electric-sql/pglite';
import { SqlEventStore } from './sql-event-store.ts';
import type { SqlClient, SqlQueryable, SqlResult } from './sql-event-store.ts';

export interface EmbeddedStoreOptions {
  /** Directory for the database files, created if missing; undefined keeps the database in memory. */
  dataDir?: string;
  /** Schema holding the tables (default `quickdash`). */
  schema?: string;
}

/**
 * SqlClient over one PGlite instance. PGlite runs one statement at a time;
 * a transaction holds its lock from BEGIN to COMMIT, so other queries wait.
 */
export class PgliteClient implements SqlClient {
  readonly db: PGlite;

  constructor(db: PGlite) {
    this.db = db;
  }

  async query<R = Record<string, unknown>>(text: string, params?: unknown[]): Promise<SqlResult<R>> {
    const r = await this.db.query<R>(text, params);
    return { rows: r.rows };
  }

  /** PGlite's own transaction(): COMMIT when `fn` resolves, ROLLBACK and rethrow when it throws. */
  async transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T> {
    return this.db.transaction(async (tx) =>
      fn({ query: async <R,>(text: string, params?: unknown[]) => ({ rows: (await tx.query<R>(text, params)).rows }) }),
    );
  }

  /** Shuts Postgres down cleanly (checkpoint), so the next open needs no recovery. */
  async close(): Promise<void> {
    if (!this.db.closed) await this.db.close();
  }
}

/**
 * Starts PGlite (in memory, or on `dataDir`), creates the schema if missing
 * and returns the store. A fresh database runs initdb: expect seconds, not
 * milliseconds; reopening an existing dataDir is much faster.
 * @throws if PGlite cannot start (dataDir unwritable, or held by a crashed run it cannot recover).
 */
export async function createEmbeddedStore(options: EmbeddedStoreOptions = {}): Promise<SqlEventStore> {
  // PGlite creates only the last path component; make the parents too (e.g. data/quickdash).
  if (options.dataDir !== undefined) mkdirSync(options.dataDir, { recursive: true });
  const db = await PGlite.create(options.dataDir !== undefined ? { dataDir: options.dataDir } : {});
  const store = new SqlEventStore(new PgliteClient(db), { schema: options.schema });
  try {
    await store.init();
  } catch (err) {
    await db.close().catch(() => {});
    throw err;
  }
  return store;
}

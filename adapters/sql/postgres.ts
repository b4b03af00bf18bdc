/**
 * Postgres backend of the SQL event store, via a pg.Pool. Commits are as
 * durable as the server makes them (synchronous_commit on, the default,
 * means fsynced WAL before COMMIT returns).
 */
import pg from 'pg';
import type { PoolClient } from 'pg';
import { SqlEventStore } from './sql-event-store.ts';
import type { SqlClient, SqlQueryable, SqlResult } from './sql-event-store.ts';

export interface PostgresStoreOptions {
  connectionString: string;
  /** Schema holding the tables (default `quickdash`). */
  schema?: string;
  /** Connections in the pool (default 4). Appends are serialised by the group committer, so few are needed. */
  poolSize?: number;
  /**
   * Errors of idle pooled connections (server restart, network drop). Without
   * a listener pg would crash the process; the next query fails and reports
   * anyway, so the default ignores them.
   */
  onError?: (err: Error) => void;
}

const INT8_OID = 20;

/** SqlClient over a pg.Pool: a transaction holds one pooled connection from BEGIN to COMMIT. */
export class PgClient implements SqlClient {
  readonly pool: pg.Pool;

  constructor(pool: pg.Pool) {
    this.pool = pool;
  }

  async query<R = Record<string, unknown>>(text: string, params?: unknown[]): Promise<SqlResult<R>> {
    const r = await this.pool.query(text, params);
    return { rows: r.rows as R[] };
  }

  async transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T> {
    const conn = await this.pool.connect();
    const tx: SqlQueryable = {
      query: async <R,>(text: string, params?: unknown[]) => ({ rows: (await conn.query(text, params)).rows as R[] }),
    };
    try {
      await conn.query('BEGIN');
      const out = await fn(tx);
      await conn.query('COMMIT');
      conn.release();
      return out;
    } catch (err) {
      await rollback(conn);
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/** Rolls back and returns the connection; one that cannot even roll back is destroyed, not reused. */
async function rollback(conn: PoolClient): Promise<void> {
  try {
    await conn.query('ROLLBACK');
    conn.release();
  } catch (err) {
    conn.release(err as Error);
  }
}

/**
 * Connects, creates the schema if missing and returns the store.
 * @throws the driver's error if the server is unreachable or refuses; the pool is ended first.
 */
export async function createPostgresStore(options: PostgresStoreOptions): Promise<SqlEventStore> {
  const pool = new pg.Pool({
    connectionString: options.connectionString,
    max: options.poolSize ?? 4,
    // Per pool, not pg.types.setTypeParser: other pg users in the process keep their own parsing.
    types: {
      getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
        oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
    },
  });
  pool.on('error', options.onError ?? (() => {}));
  const store = new SqlEventStore(new PgClient(pool), { schema: options.schema });
  try {
    await store.init();
  } catch (err) {
    await pool.end().catch(() => {});
    throw err;
  }
  return store;
}

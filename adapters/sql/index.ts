/**
 * adapters/sql: the engine's EventStore over SQL, on Postgres (pg) or
 * embedded PGlite, with the same statements on both.
 */

// Store
export { SqlEventStore } from './sql-event-store.ts';
export type { SqlClient, SqlEventStoreOptions, SqlQueryable, SqlResult } from './sql-event-store.ts';

// Backends
export { createPostgresStore, PgClient } from './postgres.ts';
export type { PostgresStoreOptions } from './postgres.ts';
export { createEmbeddedStore, PgliteClient } from './pglite.ts';
export type { EmbeddedStoreOptions } from './pglite.ts';

// Schema
export { DEFAULT_SCHEMA, SCHEMA_SQL, checkSchemaName, schemaStatements } from './schema.ts';
export { ThreadedEmbeddedStore, createThreadedEmbeddedStore } from './threaded-store.ts';

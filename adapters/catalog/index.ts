/**
 * adapters/catalog: the engine's CatalogPort (stores, products, stock
 * reservations) over SQL, on Postgres or embedded PGlite with the same
 * statements.
 */
export { SqlCatalog, normaliseLines, MAX_LINES, MAX_QUANTITY, MAX_ID_LENGTH } from './sql-catalog.ts';
export type {
  CatalogCounts,
  CatalogReservation,
  ProductRecord,
  ReservationStatus,
  SqlCatalogOptions,
  StockLevel,
  StoredReservation,
  StoreRecord,
} from './sql-catalog.ts';
export { createEmbeddedCatalog, createPostgresCatalog } from './backends.ts';
export type { EmbeddedCatalogOptions, PostgresCatalogOptions } from './backends.ts';
export { WEEKDAYS, checkHours, everyDay, localTime, openAt } from './hours.ts';
export type { HoursInterval, LocalTime, Weekday, WeeklyHours } from './hours.ts';
export { CATALOG_SCHEMA_SQL, DEFAULT_CATALOG_SCHEMA, catalogStatements } from './schema.ts';
export { DEMO_PRODUCTS, DEMO_STORES, demoCatalog, loadDemoCatalog } from './demo-catalog.ts';
export type { DemoCatalog, DemoLoadSummary } from './demo-catalog.ts';

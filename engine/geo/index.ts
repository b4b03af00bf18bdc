/** Public surface of engine/geo: distances on the sphere and memoised H3 cell look-ups. */

// Distance
export { EARTH_RADIUS_M, haversineM } from './distance.ts';

// Cells and shard ownership
export { CellGeometry, PointCells, ShardMap, DEFAULT_CACHE_BUDGET, cellOf, edgeLengthM, shardOfCell } from './cells.ts';
export type { CellGeometryOptions, ShardMapOptions } from './cells.ts';

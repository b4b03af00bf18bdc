/**
 * Great-circle distance on a spherical Earth. Plain arithmetic, no
 * allocation: it runs on every GPS fix, where h3-js's greatCircleDistance
 * (an array per point plus a call into its wasm heap) is about ten times
 * slower.
 */

/** Earth's authalic radius in metres, the one h3 uses, so our distances agree with h3's. */
export const EARTH_RADIUS_M = 6_371_007.180918475;

const RAD = Math.PI / 180;

/** Haversine distance in metres between two points given in degrees. Never throws; NaN in, NaN out. */
export function haversineM(lat1: number, lng1: number, lat2: number, lng2: number): number {
  const dLat = (lat2 - lat1) * RAD;
  const dLng = (lng2 - lng1) * RAD;
  const s1 = Math.sin(dLat * 0.5);
  const s2 = Math.sin(dLng * 0.5);
  const a = s1 * s1 + Math.cos(lat1 * RAD) * Math.cos(lat2 * RAD) * s2 * s2;
  // Clamped: rounding can push a past 1 for antipodal points, and asin(>1) is NaN. Math.min keeps NaN input NaN.
  return 2 * EARTH_RADIUS_M * Math.asin(Math.sqrt(Math.min(a, 1)));
}

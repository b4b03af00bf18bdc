/**
 * Travel-time port for dispatch. The matcher asks it for thousands of
 * rider-to-store times per batch, so it takes and returns plain numbers: no
 * LatLng objects are built on the hot path. An OSRM- or Valhalla-backed router
 * lives outside engine/ and implements the same interface; HaversineRouter is
 * the in-process default.
 */
import { haversineM } from '../geo/index.ts';
import { invalidArgument } from '../errors.ts';

export interface TravelTimeRouter {
  /**
   * Expected travel time in milliseconds between two points given in degrees.
   * NaN, Infinity or a negative result means "unreachable": the matcher drops that edge.
   */
  travelTimeMs(fromLat: number, fromLng: number, toLat: number, toLng: number): number;
}

export interface HaversineRouterOptions {
  /** Average door-to-door speed in metres per second; 5.5 m/s (about 20 km/h) suits a two-wheeler in city traffic. */
  speedMps?: number;
  /** Road distance over straight-line distance; about 1.3 in Indian city grids. */
  detourFactor?: number;
}

export const DEFAULT_SPEED_MPS = 5.5;
export const DEFAULT_DETOUR_FACTOR = 1.3;

/** Straight-line distance stretched by a detour factor, at a constant speed. No allocation per call. */
export class HaversineRouter implements TravelTimeRouter {
  readonly speedMps: number;
  readonly detourFactor: number;
  /** detour / speed × 1000, folded once so each call is one multiply after the haversine. */
  readonly #msPerMetre: number;

  /** @throws DispatchError QD_ERR_INVALID_ARGUMENT when speedMps is not positive and finite, or detourFactor is below 1 or not finite. */
  constructor(options: HaversineRouterOptions = {}) {
    const speedMps = options.speedMps ?? DEFAULT_SPEED_MPS;
    const detourFactor = options.detourFactor ?? DEFAULT_DETOUR_FACTOR;
    if (!(speedMps > 0) || !Number.isFinite(speedMps)) throw invalidArgument('speedMps', 'must be a positive finite number');
    // Below 1 would make roads shorter than the straight line.
    if (!(detourFactor >= 1) || !Number.isFinite(detourFactor)) throw invalidArgument('detourFactor', 'must be a finite number >= 1');
    this.speedMps = speedMps;
    this.detourFactor = detourFactor;
    this.#msPerMetre = (detourFactor / speedMps) * 1000;
  }

  travelTimeMs(fromLat: number, fromLng: number, toLat: number, toLng: number): number {
    return haversineM(fromLat, fromLng, toLat, toLng) * this.#msPerMetre;
  }
}

/**
 * Delivery fee, rider pay and ETA for a pickup and a drop-off, with a surge
 * factor from live demand and supply around the pickup.
 */

export interface PricingConfig {
  /** Fee for any delivery, paise. */
  baseFeePaise: number;
  /** Fee per kilometre of road distance, paise. */
  perKmPaise: number;
  /** Share of the delivery fee paid to the rider (0..1). */
  riderShare: number;
  /** Surge grows by this much per unserved order per available rider... */
  surgeSlope: number;
  /** ...and never beyond this. */
  maxSurge: number;
  /** Road distance over straight-line distance. */
  detourFactor: number;
  /** Average rider speed on roads, metres per second. */
  speedMps: number;
  /** H3 resolution of the cell demand and supply are counted in (8: ~0.7 km² cells). */
  cellRes: number;
  /** Riders counted as supply within this radius of the pickup, metres. */
  supplyRadiusM: number;
}

export const DEFAULT_PRICING: PricingConfig = {
  baseFeePaise: 2_000,
  perKmPaise: 800,
  riderShare: 0.8,
  surgeSlope: 0.25,
  maxSurge: 2,
  detourFactor: 1.3,
  speedMps: 6,
  cellRes: 8,
  supplyRadiusM: 2_000,
};

/**
 * 1 when riders outnumber waiting orders; rising with the shortfall per
 * available rider; capped. Rounded to 0.05 so quotes are stable.
 */
export function surgeFactor(demand: number, supply: number, config: PricingConfig): number {
  const shortfall = Math.max(0, demand - supply);
  const raw = 1 + (config.surgeSlope * shortfall) / Math.max(1, supply);
  return Math.min(config.maxSurge, Math.round(raw * 20) / 20);
}

export interface FeeBreakdown {
  distanceM: number;
  feePaise: number;
  riderFeePaise: number;
}

export function deliveryFee(straightLineM: number, surge: number, config: PricingConfig): FeeBreakdown {
  const distanceM = Math.round(straightLineM * config.detourFactor);
  const feePaise = Math.round((config.baseFeePaise + (config.perKmPaise * distanceM) / 1000) * surge);
  return { distanceM, feePaise, riderFeePaise: Math.round(feePaise * config.riderShare) };
}

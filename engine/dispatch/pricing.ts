/**
 * Delivery fee, rider pay and ETA for a pickup and a drop-off, with a surge
 * factor from live demand and supply around the pickup.
 */
import type { OrderSpec } from '../types.ts';

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

/** @throws RangeError naming the first setting that cannot price a delivery. */
export function checkPricing(config: PricingConfig): PricingConfig {
  const positive = ['perKmPaise', 'detourFactor', 'speedMps', 'supplyRadiusM', 'maxSurge'] as const;
  const nonNegative = ['baseFeePaise', 'surgeSlope'] as const;
  for (const k of positive) if (!(Number.isFinite(config[k]) && config[k] > 0)) throw new RangeError(`pricing.${k} must be a positive number, got ${config[k]}`);
  for (const k of nonNegative) if (!(Number.isFinite(config[k]) && config[k] >= 0)) throw new RangeError(`pricing.${k} must be a non-negative number, got ${config[k]}`);
  if (!(config.riderShare >= 0 && config.riderShare <= 1)) throw new RangeError(`pricing.riderShare must be within 0..1, got ${config.riderShare}`);
  if (config.maxSurge < 1) throw new RangeError(`pricing.maxSurge must be at least 1, got ${config.maxSurge}`);
  if (!(Number.isInteger(config.cellRes) && config.cellRes >= 0 && config.cellRes <= 15)) throw new RangeError(`pricing.cellRes must be an H3 resolution 0..15, got ${config.cellRes}`);
  if (config.supplyRadiusM > 50_000) throw new RangeError(`pricing.supplyRadiusM must be at most 50000, got ${config.supplyRadiusM}`);
  return config;
}

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

/** Riders free to take a new order around a pickup. */
export interface Supply {
  available: number;
  /** Straight-line distance to the nearest of them, metres; null when there is none. */
  nearestM: number | null;
}

export interface DeliveryQuote extends FeeBreakdown {
  etaSeconds: number;
  surgeFactor: number;
  demand: number;
  supply: number;
}

/**
 * The whole quote from what was counted around the pickup: surge from demand
 * against supply, the fee from the distance, and the ETA from the nearest
 * rider's trip to the store (or prep time, if longer) plus the delivery leg.
 */
export function priceDelivery(straightLineM: number, prepMinutes: number, demand: number, supply: Supply, config: PricingConfig): DeliveryQuote {
  const surge = surgeFactor(demand, supply.available, config);
  const fee = deliveryFee(straightLineM, surge, config);
  // No rider around: assume one is ten minutes away.
  const toStoreS = supply.nearestM === null ? 600 : (supply.nearestM * config.detourFactor) / config.speedMps;
  const etaSeconds = Math.round(Math.max(toStoreS, prepMinutes * 60) + fee.distanceM / config.speedMps);
  return { ...fee, etaSeconds, surgeFactor: surge, demand, supply: supply.available };
}

/**
 * H3 rings around a pickup's cell (at resolution `res`) that hold every
 * point within `radiusM`: centres of ring-k cells lie at least 1.5·k edges
 * away, and pickup and rider may each sit an edge off their cell's centre.
 * Edges vary around the average by location, hence the margins.
 */
export function ringsWithin(radiusM: number, edgeM: number): number {
  return Math.ceil((radiusM + 2.5 * edgeM) / (1.2 * edgeM));
}

/** The spec with the quote's fees, and its promised time unless the caller set one. */
export function pricedSpec(spec: OrderSpec, createdAt: number, quote: DeliveryQuote): OrderSpec {
  return {
    ...spec,
    riderFee: quote.riderFeePaise,
    deliveryFee: quote.feePaise,
    promisedAt: spec.promisedAt ?? createdAt + quote.etaSeconds * 1000,
  };
}

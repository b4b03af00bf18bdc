/** Public surface of engine/dispatch: the batch matcher, its greedy baseline, the travel-time port and delivery pricing. */

// Matching
export { DEFAULT_COST_WEIGHTS, assignmentCost, solveBatch, solveGreedy } from './matcher.ts';
export type { Assignment, CostWeights, MatchOptions, MatchOrder, MatchRider } from './matcher.ts';

// Travel time
export { DEFAULT_DETOUR_FACTOR, DEFAULT_SPEED_MPS, HaversineRouter } from './router.ts';
export type { HaversineRouterOptions, TravelTimeRouter } from './router.ts';

// Pricing
export { DEFAULT_PRICING, checkPricing, deliveryFee, priceDelivery, pricedSpec, ringsWithin, surgeFactor } from './pricing.ts';
export type { DeliveryQuote, FeeBreakdown, PricingConfig, Supply } from './pricing.ts';

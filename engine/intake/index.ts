export { OrderIntake } from './intake.ts';
export type { OrderIntakeOptions, PlaceOrderRequest, PlacedOrder, Quote } from './intake.ts';
export { DEFAULT_PRICING, deliveryFee, surgeFactor } from './pricing.ts';
export type { FeeBreakdown, PricingConfig } from './pricing.ts';

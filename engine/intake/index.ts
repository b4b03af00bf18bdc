export { OrderIntake } from './intake.ts';
export type { OrderIntakeOptions, PlaceOrderRequest, PlacedOrder, Quote } from './intake.ts';
export { DEFAULT_PRICING, deliveryFee, surgeFactor } from '../dispatch/index.ts';
export type { FeeBreakdown, PricingConfig, Supply } from '../dispatch/index.ts';

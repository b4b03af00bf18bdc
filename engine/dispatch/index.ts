/** Public surface of engine/dispatch: the batch matcher, its greedy baseline and the travel-time port. */

// Matching
export { DEFAULT_COST_WEIGHTS, assignmentCost, solveBatch, solveGreedy } from './matcher.ts';
export type { Assignment, CostWeights, MatchOptions, MatchOrder, MatchRider } from './matcher.ts';

// Travel time
export { DEFAULT_DETOUR_FACTOR, DEFAULT_SPEED_MPS, HaversineRouter } from './router.ts';
export type { HaversineRouterOptions, TravelTimeRouter } from './router.ts';

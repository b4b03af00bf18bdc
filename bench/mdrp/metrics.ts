/**
 * The MDRP performance measures, as the paper defines them (Reyes et al.,
 * "Meal Delivery Routing: The Grubhub Instances", §1.1) and as its evaluator
 * (mdrplib MDRP_code/compute_performance_summary.py) computes them:
 *
 *   "1. Number of orders delivered.
 *    2. Total courier compensation.
 *    3. Fraction of couriers receiving guaranteed minimum compensation.
 *    4. Click-to-door time: the difference between the drop-off time and the placement time of an order.
 *    5. Click-to-door time overage: the difference between the drop-off time of an order and the
 *       placement time of an order plus the target click-to-door time.
 *    6. Ready-to-door time: the difference between the drop-off time of an order and the ready time of an order.
 *    7. Ready-to-pickup time: the difference between the pickup time of an order and its ready time.
 *    8. Courier utilization: the fraction of the courier duty time that is devoted to driving,
 *       pickup service, and drop-off service (as opposed to time spent waiting).
 *    9. Courier delivery earnings: courier earnings when considering only the number of orders served.
 *   10. Courier compensation: the maximum of the guaranteed minimum compensation (based on the
 *       length of the duty period) and the delivery earnings."
 *
 * and "the courier's compensation is max{p1 n, p2 (lc − ec)}". Where the paper
 * leaves a choice the evaluator decides: order measures are over delivered
 * orders; courier measures are per courier over the duty period lc − ec
 * (utilisation = (driving + pickup service + drop-off service) / duty,
 * orders per hour = 60 × delivered / duty) and then averaged over all
 * couriers, idle ones included; overage is max(0, click-to-door − τ);
 * percentiles interpolate linearly between ranks (pandas `describe`).
 */

/** One order of the day. Times in minutes from the start of the day; null when it never happened. */
export interface OrderRecord {
  orderId: string;
  placementMin: number;
  readyMin: number;
  pickupMin: number | null;
  deliveryMin: number | null;
}

/** One courier's day: duty period from the instance, busy time and deliveries from the replay. */
export interface CourierRecord {
  courierId: string;
  onMin: number;
  offMin: number;
  /** Driving plus pickup service plus drop-off service, in minutes; waiting is not busy. */
  busyMin: number;
  deliveries: number;
}

export interface MetricParameters {
  /** τ: an order delivered later than this after placement is over target. */
  targetClickToDoorMin: number;
  /** p1 */
  payPerOrder: number;
  /** p2 */
  guaranteedPayPerHour: number;
}

/** The measures one matcher achieved on one instance. Means over an empty set are null. */
export interface MatcherMetrics {
  ordersPlaced: number;
  ordersDelivered: number;
  clickToDoorMeanMin: number | null;
  clickToDoorP90Min: number | null;
  /** Delivered orders whose click-to-door exceeds τ. */
  overTarget: number;
  readyToPickupMeanMin: number | null;
  readyToDoorMeanMin: number | null;
  /** Mean over couriers of busy / duty. */
  courierUtilisation: number | null;
  /** Mean over couriers of 60 × deliveries / duty minutes. */
  ordersPerCourierHour: number | null;
  /** Mean over delivered orders of max(0, click-to-door − τ). */
  clickToDoorOverageMeanMin: number | null;
  /** Σ max(p1 × deliveries, p2 × duty hours). */
  totalCompensation: number;
  /** Share of couriers whose delivery earnings fall below the guaranteed minimum. */
  guaranteedMinimumShare: number | null;
}

/**
 * Computes the measures from per-order and per-courier records.
 * @throws RangeError when a record is inconsistent: a delivery without a
 * pickup, a non-finite time, or a duty period that is not positive.
 */
export function computeMetrics(orders: readonly OrderRecord[], couriers: readonly CourierRecord[], params: MetricParameters): MatcherMetrics {
  const clickToDoor: number[] = [];
  const overage: number[] = [];
  const readyToPickup: number[] = [];
  const readyToDoor: number[] = [];
  let overTarget = 0;
  for (const o of orders) {
    if (!(Number.isFinite(o.placementMin) && Number.isFinite(o.readyMin))) throw new RangeError(`order ${o.orderId}: placement and ready times must be finite`);
    if (o.deliveryMin === null) continue;
    if (o.pickupMin === null) throw new RangeError(`order ${o.orderId}: delivered without a pickup time`);
    if (!(Number.isFinite(o.pickupMin) && Number.isFinite(o.deliveryMin))) throw new RangeError(`order ${o.orderId}: pickup and delivery times must be finite`);
    const ctd = o.deliveryMin - o.placementMin;
    clickToDoor.push(ctd);
    overage.push(Math.max(0, ctd - params.targetClickToDoorMin));
    if (ctd > params.targetClickToDoorMin) overTarget++;
    readyToPickup.push(o.pickupMin - o.readyMin);
    readyToDoor.push(o.deliveryMin - o.readyMin);
  }

  const utilisation: number[] = [];
  const perHour: number[] = [];
  let totalCompensation = 0;
  let belowGuarantee = 0;
  for (const c of couriers) {
    const duty = c.offMin - c.onMin;
    if (!(duty > 0 && Number.isFinite(duty))) throw new RangeError(`courier ${c.courierId}: duty period must be positive, got ${c.onMin}..${c.offMin}`);
    utilisation.push(c.busyMin / duty);
    perHour.push((60 * c.deliveries) / duty);
    const earned = params.payPerOrder * c.deliveries;
    const guaranteed = (params.guaranteedPayPerHour * duty) / 60;
    totalCompensation += Math.max(earned, guaranteed);
    if (earned < guaranteed) belowGuarantee++;
  }

  return {
    ordersPlaced: orders.length,
    ordersDelivered: clickToDoor.length,
    clickToDoorMeanMin: mean(clickToDoor),
    clickToDoorP90Min: clickToDoor.length === 0 ? null : quantile(clickToDoor, 0.9),
    overTarget,
    readyToPickupMeanMin: mean(readyToPickup),
    readyToDoorMeanMin: mean(readyToDoor),
    courierUtilisation: mean(utilisation),
    ordersPerCourierHour: mean(perHour),
    clickToDoorOverageMeanMin: mean(overage),
    totalCompensation,
    guaranteedMinimumShare: couriers.length === 0 ? null : belowGuarantee / couriers.length,
  };
}

/** Arithmetic mean, or null for no values. */
export function mean(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  let sum = 0;
  for (const v of values) sum += v;
  return sum / values.length;
}

/**
 * The q-quantile with linear interpolation between closest ranks (numpy's and
 * pandas' default, which the MDRP evaluator's `describe` uses).
 * @throws RangeError for no values or q outside [0, 1].
 */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) throw new RangeError('quantile of no values');
  if (!(q >= 0 && q <= 1)) throw new RangeError(`quantile must be in [0, 1], got ${q}`);
  const sorted = [...values].sort((a, b) => a - b);
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

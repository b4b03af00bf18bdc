/**
 * The payments ledger: what this node has asked Razorpay for and heard back,
 * in SQL (Postgres or PGlite, the same statements). It makes the port's
 * operations idempotent per order across retries, restarts and nodes, and
 * holds the webhook event ids already taken in (a unique key, so two
 * deliveries of one event, even at the same instant, yield one claim).
 *
 * intents: one Razorpay order per QuickDash order (the newest, if the amount
 *   changed before payment), its status and the captured payment.
 * refunds: one refund per order; a row without refund_id is a claim on the
 *   request that is in flight (or whose outcome is unknown).
 * webhook_events: event ids taken in; `processing` until the consumer
 *   accepted the event, `done` after.
 */
import { checkSchemaName } from '../sql/index.ts';
import type { SqlClient } from '../sql/index.ts';

export const DEFAULT_PAYMENTS_SCHEMA = 'payments';

export type IntentStatus = 'created' | 'paid' | 'failed';
export type RefundStatus = 'requested' | 'pending' | 'processed' | 'failed';

export interface IntentRow {
  orderId: string;
  providerOrderId: string;
  amountPaise: number;
  currency: string;
  status: IntentStatus;
  paymentId: string | null;
  lastError: string | null;
}

export interface RefundRow {
  orderId: string;
  paymentId: string;
  /** What was asked; null for "all of it". */
  requestedPaise: number | null;
  refundId: string | null;
  amountPaise: number | null;
  status: RefundStatus;
  /** Epoch ms of the claim on the provider request (refundId still null). */
  claimedAt: number;
}

function statements(s: string): string[] {
  return [
    `CREATE SCHEMA IF NOT EXISTS ${s}`,
    `CREATE TABLE IF NOT EXISTS ${s}.intents (
      order_id text PRIMARY KEY,
      provider_order_id text NOT NULL UNIQUE,
      amount_paise bigint NOT NULL,
      currency text NOT NULL,
      status text NOT NULL CHECK (status IN ('created', 'paid', 'failed')),
      payment_id text,
      last_error text,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`,
    `CREATE TABLE IF NOT EXISTS ${s}.refunds (
      order_id text PRIMARY KEY,
      payment_id text NOT NULL,
      requested_paise bigint,
      refund_id text UNIQUE,
      amount_paise bigint,
      status text NOT NULL CHECK (status IN ('requested', 'pending', 'processed', 'failed')),
      claimed_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    )`,
    `CREATE TABLE IF NOT EXISTS ${s}.webhook_events (
      event_id text PRIMARY KEY,
      event text NOT NULL,
      order_id text,
      state text NOT NULL CHECK (state IN ('processing', 'done')),
      received_at timestamptz NOT NULL DEFAULT now()
    )`,
  ];
}

interface IntentDbRow {
  order_id: string;
  provider_order_id: string;
  amount_paise: string | number;
  currency: string;
  status: IntentStatus;
  payment_id: string | null;
  last_error: string | null;
}

interface RefundDbRow {
  order_id: string;
  payment_id: string;
  requested_paise: string | number | null;
  refund_id: string | null;
  amount_paise: string | number | null;
  status: RefundStatus;
  claimed_ms: string | number;
}

const INTENT_COLS = 'order_id, provider_order_id, amount_paise, currency, status, payment_id, last_error';
// Epoch ms computed in SQL: pg and PGlite parse timestamptz differently, a number is the same on both.
const REFUND_COLS = `order_id, payment_id, requested_paise, refund_id, amount_paise, status,
  (extract(epoch from claimed_at) * 1000)::float8 AS claimed_ms`;

// bigint arrives as a string from pg and as a number from PGlite; paise stay far below 2^53.
const num = (v: string | number): number => Number(v);
const numOrNull = (v: string | number | null): number | null => (v === null ? null : Number(v));

function toIntent(r: IntentDbRow): IntentRow {
  return {
    orderId: r.order_id,
    providerOrderId: r.provider_order_id,
    amountPaise: num(r.amount_paise),
    currency: r.currency,
    status: r.status,
    paymentId: r.payment_id,
    lastError: r.last_error,
  };
}

function toRefund(r: RefundDbRow): RefundRow {
  return {
    orderId: r.order_id,
    paymentId: r.payment_id,
    requestedPaise: numOrNull(r.requested_paise),
    refundId: r.refund_id,
    amountPaise: numOrNull(r.amount_paise),
    status: r.status,
    claimedAt: num(r.claimed_ms),
  };
}

export class PaymentsLedger {
  readonly schema: string;
  readonly #sql: SqlClient;

  constructor(sql: SqlClient, schema: string = DEFAULT_PAYMENTS_SCHEMA) {
    this.schema = checkSchemaName(schema);
    this.#sql = sql;
  }

  /** Creates the schema and tables if missing. Safe to run from several nodes at once. */
  async init(): Promise<void> {
    await this.#sql.transaction(async (tx) => {
      // CREATE ... IF NOT EXISTS still races on the catalogue; serialise concurrent inits of the same schema.
      await tx.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [`quickdash-payments:${this.schema}`]);
      for (const s of statements(this.schema)) await tx.query(s);
    });
  }

  // ------------------------------------------------------------------ intents

  async intent(orderId: string): Promise<IntentRow | null> {
    const { rows } = await this.#sql.query<IntentDbRow>(`SELECT ${INTENT_COLS} FROM ${this.schema}.intents WHERE order_id = $1`, [orderId]);
    return rows.length > 0 ? toIntent(rows[0]) : null;
  }

  async intentByProviderOrder(providerOrderId: string): Promise<IntentRow | null> {
    const { rows } = await this.#sql.query<IntentDbRow>(`SELECT ${INTENT_COLS} FROM ${this.schema}.intents WHERE provider_order_id = $1`, [
      providerOrderId,
    ]);
    return rows.length > 0 ? toIntent(rows[0]) : null;
  }

  async intentByPayment(paymentId: string): Promise<IntentRow | null> {
    const { rows } = await this.#sql.query<IntentDbRow>(`SELECT ${INTENT_COLS} FROM ${this.schema}.intents WHERE payment_id = $1`, [paymentId]);
    return rows.length > 0 ? toIntent(rows[0]) : null;
  }

  /** Records a new intent; null when the order already has one (another attempt won). */
  async insertIntent(i: { orderId: string; providerOrderId: string; amountPaise: number; currency: string }): Promise<IntentRow | null> {
    const { rows } = await this.#sql.query<IntentDbRow>(
      `INSERT INTO ${this.schema}.intents (order_id, provider_order_id, amount_paise, currency, status)
       VALUES ($1, $2, $3, $4, 'created') ON CONFLICT (order_id) DO NOTHING RETURNING ${INTENT_COLS}`,
      [i.orderId, i.providerOrderId, i.amountPaise, i.currency],
    );
    return rows.length > 0 ? toIntent(rows[0]) : null;
  }

  /**
   * Points an unpaid intent at a new provider order (the amount changed
   * before the customer paid). Compare-and-set on the old provider order id:
   * null if another attempt replaced it first or the intent was paid meanwhile.
   */
  async replaceIntent(
    orderId: string,
    oldProviderOrderId: string,
    next: { providerOrderId: string; amountPaise: number; currency: string },
  ): Promise<IntentRow | null> {
    const { rows } = await this.#sql.query<IntentDbRow>(
      `UPDATE ${this.schema}.intents
       SET provider_order_id = $3, amount_paise = $4, currency = $5, status = 'created', payment_id = NULL, last_error = NULL, updated_at = now()
       WHERE order_id = $1 AND provider_order_id = $2 AND status <> 'paid'
       RETURNING ${INTENT_COLS}`,
      [orderId, oldProviderOrderId, next.providerOrderId, next.amountPaise, next.currency],
    );
    return rows.length > 0 ? toIntent(rows[0]) : null;
  }

  /** A payment of the order was captured. */
  async markPaid(orderId: string, paymentId: string): Promise<void> {
    await this.#sql.query(
      `UPDATE ${this.schema}.intents SET status = 'paid', payment_id = $2, last_error = NULL, updated_at = now() WHERE order_id = $1`,
      [orderId, paymentId],
    );
  }

  /** A payment attempt failed; an order already paid (by a later attempt) stays paid. */
  async markFailed(orderId: string, paymentId: string, reason: string): Promise<void> {
    await this.#sql.query(
      `UPDATE ${this.schema}.intents SET status = 'failed', payment_id = $2, last_error = $3, updated_at = now()
       WHERE order_id = $1 AND status <> 'paid'`,
      [orderId, paymentId, reason],
    );
  }

  // ------------------------------------------------------------------ refunds

  async refund(orderId: string): Promise<RefundRow | null> {
    const { rows } = await this.#sql.query<RefundDbRow>(`SELECT ${REFUND_COLS} FROM ${this.schema}.refunds WHERE order_id = $1`, [orderId]);
    return rows.length > 0 ? toRefund(rows[0]) : null;
  }

  async refundById(refundId: string): Promise<RefundRow | null> {
    const { rows } = await this.#sql.query<RefundDbRow>(`SELECT ${REFUND_COLS} FROM ${this.schema}.refunds WHERE refund_id = $1`, [refundId]);
    return rows.length > 0 ? toRefund(rows[0]) : null;
  }

  /** Claims the order's refund request; null when a row exists already. */
  async claimRefund(orderId: string, paymentId: string, requestedPaise: number | null): Promise<RefundRow | null> {
    const { rows } = await this.#sql.query<RefundDbRow>(
      `INSERT INTO ${this.schema}.refunds (order_id, payment_id, requested_paise, status)
       VALUES ($1, $2, $3, 'requested') ON CONFLICT (order_id) DO NOTHING RETURNING ${REFUND_COLS}`,
      [orderId, paymentId, requestedPaise],
    );
    return rows.length > 0 ? toRefund(rows[0]) : null;
  }

  /**
   * Takes over a claim older than `staleMs` whose request never recorded an
   * outcome. Compare-and-set on the claim time, so one taker wins.
   */
  async takeOverStaleClaim(orderId: string, staleMs: number): Promise<RefundRow | null> {
    const { rows } = await this.#sql.query<RefundDbRow>(
      `UPDATE ${this.schema}.refunds SET claimed_at = now(), updated_at = now()
       WHERE order_id = $1 AND refund_id IS NULL AND claimed_at < now() - make_interval(secs => $2)
       RETURNING ${REFUND_COLS}`,
      [orderId, staleMs / 1000],
    );
    return rows.length > 0 ? toRefund(rows[0]) : null;
  }

  /** Drops a claim whose request certainly did nothing at the provider, so a retry may ask again. */
  async releaseRefundClaim(orderId: string): Promise<void> {
    await this.#sql.query(`DELETE FROM ${this.schema}.refunds WHERE order_id = $1 AND refund_id IS NULL`, [orderId]);
  }

  async recordRefund(orderId: string, r: { refundId: string; amountPaise: number; status: RefundStatus }): Promise<RefundRow> {
    const { rows } = await this.#sql.query<RefundDbRow>(
      `UPDATE ${this.schema}.refunds SET refund_id = $2, amount_paise = $3, status = $4, updated_at = now()
       WHERE order_id = $1 RETURNING ${REFUND_COLS}`,
      [orderId, r.refundId, r.amountPaise, r.status],
    );
    return toRefund(rows[0]);
  }

  /** The provider reported the refund processed (webhook). */
  async markRefundProcessed(refundId: string): Promise<void> {
    await this.#sql.query(`UPDATE ${this.schema}.refunds SET status = 'processed', updated_at = now() WHERE refund_id = $1`, [refundId]);
  }

  // ------------------------------------------------------------------ webhook events

  /**
   * Takes in a webhook event id; false when it was taken in before (a
   * duplicate delivery). An event left `processing` for longer than
   * `staleMs` (its taker died mid-way) is taken in again, so a crash does not
   * turn the provider's retry into a lost event.
   */
  async claimEvent(eventId: string, event: string, orderId: string | null, staleMs: number): Promise<boolean> {
    const { rows } = await this.#sql.query(
      `INSERT INTO ${this.schema}.webhook_events AS w (event_id, event, order_id, state)
       VALUES ($1, $2, $3, 'processing')
       ON CONFLICT (event_id) DO UPDATE SET received_at = now()
         WHERE w.state = 'processing' AND w.received_at < now() - make_interval(secs => $4)
       RETURNING event_id`,
      [eventId, event, orderId, staleMs / 1000],
    );
    return rows.length > 0;
  }

  async finishEvent(eventId: string): Promise<void> {
    await this.#sql.query(`UPDATE ${this.schema}.webhook_events SET state = 'done' WHERE event_id = $1`, [eventId]);
  }

  /** Forgets an event whose processing failed, so the provider's retry is taken in again. */
  async forgetEvent(eventId: string): Promise<void> {
    await this.#sql.query(`DELETE FROM ${this.schema}.webhook_events WHERE event_id = $1 AND state = 'processing'`, [eventId]);
  }
}

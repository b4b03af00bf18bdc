/**
 * Razorpay webhooks, framework-free: the gateway (or any HTTP server) hands
 * over the raw body and the headers and sends back the status and body this
 * returns.
 *
 * Trust: only a body whose X-Razorpay-Signature is the HMAC-SHA256 (hex) of
 * those exact bytes under the webhook secret is read at all. Razorpay
 * retries a delivery until it gets a 2xx, and may deliver one event twice at
 * once; event ids (x-razorpay-event-id) are taken in through a unique key in
 * the ledger, so each event yields one PaymentEvent across retries, restarts
 * and nodes.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import pino, { type Logger } from 'pino';
import type { SqlClient } from '../sql/index.ts';
import { DEFAULT_PAYMENTS_SCHEMA, PaymentsLedger } from './ledger.ts';
import { noteOrderId } from './payments.ts';

export type PaymentEvent =
  | { kind: 'captured'; orderId: string; paymentId: string; amountPaise: number }
  | { kind: 'failed'; orderId: string; paymentId: string; reason: string }
  | { kind: 'refunded'; orderId: string; refundId: string };

export interface WebhookResult {
  status: number;
  /** JSON text to send back. */
  body: string;
  /** The event to act on; absent for refusals, duplicates and events QuickDash does not use. */
  event?: PaymentEvent;
}

export interface RazorpayWebhooksOptions {
  /** The webhook secret set in Razorpay's dashboard. */
  secret: string;
  /** Ledger database (the one RazorpayPayments uses). */
  sql: SqlClient;
  /** Schema of the ledger tables (default `payments`). */
  schema?: string;
  /** Largest body read (default 1 MiB); a larger one is answered 413 unread. */
  maxBodyBytes?: number;
  /**
   * Acts on each new event before Razorpay is answered. If it throws, the
   * event id is forgotten and Razorpay gets a 500, so its retry delivers the
   * event again: at-least-once. Without it the caller acts on `event` and
   * must not lose it (a retry will be answered as a duplicate).
   */
  onEvent?: (event: PaymentEvent) => Promise<void>;
  /** An event left `processing` this long (its taker died) is taken in again (default 60 s). */
  processingStaleMs?: number;
  logger?: Logger;
}

const DEFAULT_MAX_BODY = 1 << 20;

/**
 * Whether `signature` is the hex HMAC-SHA256 of the raw body under `secret`.
 * Constant-time over equal lengths; a different length is refused first
 * (timingSafeEqual throws on it, and the length of a hex SHA-256 is public).
 */
export function verifyRazorpaySignature(rawBody: Buffer, signature: string, secret: string): boolean {
  if (typeof signature !== 'string' || signature.length === 0 || !secret) return false;
  const expected = Buffer.from(createHmac('sha256', secret).update(rawBody).digest('hex'), 'utf8');
  const given = Buffer.from(signature, 'utf8');
  if (given.length !== expected.length) return false;
  return timingSafeEqual(given, expected);
}

function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  for (const [k, v] of Object.entries(headers)) {
    if (k.toLowerCase() === name) return Array.isArray(v) ? v[0] : v;
  }
  return undefined;
}

const reply = (status: number, body: Record<string, unknown>, event?: PaymentEvent): WebhookResult =>
  event ? { status, body: JSON.stringify(body), event } : { status, body: JSON.stringify(body) };

type Json = Record<string, unknown>;

function obj(v: unknown): Json | null {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : null;
}

/** payload.<name>.entity of an event, or null. */
function entity(payload: Json, name: string): Json | null {
  return obj(obj(payload[name])?.entity);
}

const str = (v: unknown): string | null => (typeof v === 'string' && v.length > 0 ? v : null);

class Malformed extends Error {}

export class RazorpayWebhooks {
  readonly ledger: PaymentsLedger;
  readonly #secret: string;
  readonly #maxBody: number;
  readonly #onEvent: ((event: PaymentEvent) => Promise<void>) | null;
  readonly #staleMs: number;
  readonly #log: Logger;

  constructor(options: RazorpayWebhooksOptions) {
    if (!options.secret) throw new TypeError('a webhook secret is required');
    this.#secret = options.secret;
    this.ledger = new PaymentsLedger(options.sql, options.schema ?? DEFAULT_PAYMENTS_SCHEMA);
    this.#maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY;
    this.#onEvent = options.onEvent ?? null;
    this.#staleMs = options.processingStaleMs ?? 60_000;
    this.#log = (options.logger ?? pino({ level: 'silent' })).child({ adapter: 'razorpay-webhook' });
  }

  /** Creates the ledger tables if missing. Idempotent. */
  init(): Promise<void> {
    return this.ledger.init();
  }

  /**
   * One delivery. 413 body too large, 401 bad or missing signature, 400 not
   * JSON or not a Razorpay event, 500 the ledger or onEvent failed (Razorpay
   * retries), 200 otherwise: with `event` when new and relevant, with
   * `duplicate: true` for an event taken in before, `ignored: true` for
   * events QuickDash does not use.
   */
  async handle(rawBody: Buffer, headers: Record<string, string | string[] | undefined>): Promise<WebhookResult> {
    if (rawBody.length > this.#maxBody) return reply(413, { error: 'body too large' });
    const signature = header(headers, 'x-razorpay-signature');
    if (!signature || !verifyRazorpaySignature(rawBody, signature, this.#secret)) {
      this.#log.warn({ bytes: rawBody.length, signed: Boolean(signature) }, 'webhook with a bad signature refused');
      return reply(401, { error: 'invalid signature' });
    }
    let body: Json | null;
    try {
      body = obj(JSON.parse(rawBody.toString('utf8')));
    } catch {
      body = null;
    }
    const name = body ? str(body.event) : null;
    const payload = body ? obj(body.payload) : null;
    if (!body || !name || !payload || body.entity !== 'event') return reply(400, { error: 'not a Razorpay event' });
    // Razorpay always sends an event id; without one the body's digest still makes a replay recognisable.
    const eventId = header(headers, 'x-razorpay-event-id') ?? `sha256:${createHash('sha256').update(rawBody).digest('hex')}`;
    const log = this.#log.child({ eventId, event: name });

    let event: PaymentEvent | null;
    try {
      event = await this.#translate(name, payload);
    } catch (err) {
      if (err instanceof Malformed) return reply(400, { error: err.message });
      log.error({ err }, 'webhook: ledger unavailable');
      return reply(500, { error: 'temporarily unavailable' });
    }
    if (!event) {
      log.debug('webhook event ignored');
      return reply(200, { ok: true, ignored: true });
    }
    const elog = log.child({ orderId: event.orderId });

    try {
      if (!(await this.ledger.claimEvent(eventId, name, event.orderId, this.#staleMs))) {
        elog.info('duplicate webhook acknowledged');
        return reply(200, { ok: true, duplicate: true });
      }
      // payment.captured and order.paid both report one capture: the second adds nothing.
      if (event.kind === 'captured') {
        const intent = await this.ledger.intent(event.orderId);
        if (intent?.status === 'paid' && intent.paymentId === event.paymentId) {
          await this.ledger.finishEvent(eventId);
          elog.info({ paymentId: event.paymentId }, 'capture already recorded; acknowledged as a duplicate');
          return reply(200, { ok: true, duplicate: true });
        }
      }
    } catch (err) {
      elog.error({ err }, 'webhook: ledger unavailable');
      return reply(500, { error: 'temporarily unavailable' });
    }

    if (this.#onEvent) {
      try {
        await this.#onEvent(event);
      } catch (err) {
        elog.error({ err }, 'webhook consumer failed; Razorpay will retry');
        await this.ledger.forgetEvent(eventId).catch((e: unknown) => elog.error({ err: e }, 'could not forget the event id'));
        return reply(500, { error: 'processing failed' });
      }
    }
    try {
      await this.#apply(event);
      await this.ledger.finishEvent(eventId);
    } catch (err) {
      // The event was delivered to the consumer; only the ledger's copy of the status lags.
      elog.error({ err }, 'webhook: ledger update failed');
    }
    elog.info({ kind: event.kind }, 'webhook event taken in');
    return reply(200, { ok: true }, event);
  }

  /** The PaymentEvent an event stands for, or null when QuickDash has no use for it (or the order is not ours). */
  async #translate(name: string, payload: Json): Promise<PaymentEvent | null> {
    switch (name) {
      case 'payment.captured':
      case 'order.paid': {
        const p = entity(payload, 'payment');
        if (!p) throw new Malformed(`${name} without a payment entity`);
        const paymentId = str(p.id);
        const amount = p.amount;
        if (!paymentId || typeof amount !== 'number' || !Number.isInteger(amount)) throw new Malformed(`${name}: payment id or amount missing`);
        const orderId = await this.#orderOf(p, entity(payload, 'order'));
        return orderId ? { kind: 'captured', orderId, paymentId, amountPaise: amount } : null;
      }
      case 'payment.failed': {
        const p = entity(payload, 'payment');
        const paymentId = p ? str(p.id) : null;
        if (!p || !paymentId) throw new Malformed('payment.failed without a payment');
        const orderId = await this.#orderOf(p, null);
        const reason = str(p.error_description) ?? str(p.error_reason) ?? str(p.error_code) ?? 'payment failed';
        return orderId ? { kind: 'failed', orderId, paymentId, reason } : null;
      }
      case 'refund.processed': {
        const r = entity(payload, 'refund');
        const refundId = r ? str(r.id) : null;
        if (!r || !refundId) throw new Malformed('refund.processed without a refund');
        let orderId = noteOrderId(r.notes) ?? str(r.receipt);
        orderId ??= (await this.ledger.refundById(refundId))?.orderId ?? null;
        const paymentId = str(r.payment_id);
        if (!orderId && paymentId) orderId = (await this.ledger.intentByPayment(paymentId))?.orderId ?? null;
        return orderId ? { kind: 'refunded', orderId, refundId } : null;
      }
      default:
        return null;
    }
  }

  /**
   * The QuickDash order of a payment: the payment's notes, the order entity's
   * notes or receipt when the event carries it, else the ledger's record of
   * the Razorpay order (checkout does not copy an order's notes to its payments).
   */
  async #orderOf(payment: Json, order: Json | null): Promise<string | null> {
    const direct = noteOrderId(payment.notes) ?? (order ? (noteOrderId(order.notes) ?? str(order.receipt)) : null);
    if (direct) return direct;
    const providerOrderId = str(payment.order_id);
    return providerOrderId ? ((await this.ledger.intentByProviderOrder(providerOrderId))?.orderId ?? null) : null;
  }

  async #apply(event: PaymentEvent): Promise<void> {
    if (event.kind === 'captured') await this.ledger.markPaid(event.orderId, event.paymentId);
    else if (event.kind === 'failed') await this.ledger.markFailed(event.orderId, event.paymentId, event.reason);
    else await this.ledger.markRefundProcessed(event.refundId);
  }
}

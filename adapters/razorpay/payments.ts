/**
 * PaymentsPort over Razorpay, through the official `razorpay` SDK.
 *
 * Every operation is idempotent per QuickDash order through the payments
 * ledger (SQL): a repeated createIntent returns the recorded Razorpay order,
 * a repeated refund the recorded refund. Every provider call is bounded
 * twice: the SDK's axios instance has a per-request timeout, and an overall
 * deadline guards the call whatever the SDK does. Whatever goes wrong comes
 * out as a DispatchError: QD_ERR_PAYMENT_TIMEOUT when Razorpay did not answer
 * in time, QD_ERR_PAYMENT_PROVIDER otherwise (details carry Razorpay's error).
 */
import Razorpay from 'razorpay';
import pino, { type Logger } from 'pino';
import { DispatchError, invalidArgument } from '../../engine/index.ts';
import type { PaymentIntent, PaymentsPort, Refund } from '../../engine/index.ts';
import type { SqlClient } from '../sql/index.ts';
import { DEFAULT_PAYMENTS_SCHEMA, PaymentsLedger } from './ledger.ts';
import type { IntentRow, RefundRow, RefundStatus } from './ledger.ts';

export interface RazorpayPaymentsOptions {
  keyId: string;
  keySecret: string;
  /** Ledger database. */
  sql: SqlClient;
  /** Schema of the ledger tables (default `payments`). */
  schema?: string;
  /** Razorpay's origin (default https://api.razorpay.com); the SDK appends /v1/.... A FakeRazorpay's `url` in tests. */
  baseUrl?: string;
  /** Timeout of one HTTP request on the SDK's axios instance (default 5,000 ms). */
  requestTimeoutMs?: number;
  /** Overall deadline of one provider call, whatever the SDK does (default 8,000 ms). */
  deadlineMs?: number;
  /**
   * How long a refund request whose outcome is unknown (timeout, 5xx, crash)
   * blocks a new attempt for the same order; after it the next attempt first
   * looks for the refund at Razorpay. Default: twice the deadline.
   */
  refundClaimTtlMs?: number;
  logger?: Logger;
}

/** The part of the SDK's axios instance (`rzp.api.rq`) this adapter sets; the SDK's typings do not declare it. */
interface SdkAxios {
  defaults: { baseURL?: string; timeout?: number };
  interceptors: { response: { use(onFulfilled: ((v: unknown) => unknown) | null, onRejected: (err: unknown) => unknown): number } };
}

/** What the SDK rejects with after an HTTP error (its normalizeError). */
interface SdkError {
  statusCode: number;
  error?: {
    code?: string;
    description?: string;
    field?: string | null;
    source?: string;
    step?: string;
    reason?: string;
    metadata?: unknown;
    /** Set by our interceptor for a request that got no HTTP answer (axios error code). */
    transport?: string;
  };
}

/** Minimal reads of Razorpay entities; the SDK's types mark most fields optional or loose. */
interface ProviderOrder {
  id: string;
  amount: number | string;
  currency: string;
}

interface ProviderRefund {
  id: string;
  amount?: number | string;
  status?: string;
  notes?: unknown;
}

const AXIOS_TIMEOUT_CODES = new Set(['ECONNABORTED', 'ETIMEDOUT']);
const RECEIPT_MAX = 40;

export class RazorpayPayments implements PaymentsPort {
  readonly ledger: PaymentsLedger;
  readonly #rzp: Razorpay;
  readonly #log: Logger;
  readonly #requestTimeoutMs: number;
  readonly #deadlineMs: number;
  readonly #claimTtlMs: number;
  /** In-flight operations per order: concurrent calls in this process share one. */
  readonly #inflight = new Map<string, Promise<unknown>>();

  constructor(options: RazorpayPaymentsOptions) {
    if (!options.keyId || !options.keySecret) throw invalidArgument('keyId', 'Razorpay key_id and key_secret are required');
    this.#requestTimeoutMs = positive(options.requestTimeoutMs ?? 5000, 'requestTimeoutMs');
    this.#deadlineMs = positive(options.deadlineMs ?? 8000, 'deadlineMs');
    this.#claimTtlMs = positive(options.refundClaimTtlMs ?? 2 * this.#deadlineMs, 'refundClaimTtlMs');
    this.ledger = new PaymentsLedger(options.sql, options.schema ?? DEFAULT_PAYMENTS_SCHEMA);
    this.#log = (options.logger ?? pino({ level: 'silent' })).child({ adapter: 'razorpay' });
    this.#rzp = new Razorpay({ key_id: options.keyId, key_secret: options.keySecret });
    const rq = (this.#rzp.api as unknown as { rq?: SdkAxios }).rq;
    if (!rq?.defaults || !rq.interceptors) throw new DispatchError('QD_ERR_INTERNAL', { reason: 'razorpay SDK has no api.rq axios instance' });
    // The SDK's axios instance has baseURL https://api.razorpay.com and asks for /v1/<resource>.
    if (options.baseUrl !== undefined) rq.defaults.baseURL = options.baseUrl.replace(/\/+$/, '');
    rq.defaults.timeout = this.#requestTimeoutMs;
    // The SDK's normalizeError reads err.response.status and throws a TypeError when there is no
    // response (timeout, refused connection), losing the cause; give it a response that carries it.
    rq.interceptors.response.use(null, (err: unknown) => {
      const e = err as { response?: unknown; code?: string; message?: string };
      if (e && typeof e === 'object' && e.response === undefined) {
        return Promise.reject({
          response: { status: 0, data: { error: { code: 'NETWORK_ERROR', description: e.message ?? 'no response', transport: e.code ?? 'UNKNOWN' } } },
        });
      }
      return Promise.reject(err);
    });
  }

  /** Creates the ledger tables if missing. Idempotent. */
  init(): Promise<void> {
    return this.ledger.init();
  }

  /**
   * Opens a Razorpay order for a QuickDash order (receipt and notes.order_id
   * name it). Repeating it returns the recorded intent. If the amount or
   * currency changed while the order was still unpaid (a placement retried
   * after a new quote), a new Razorpay order replaces the old one; a paid
   * order's intent never changes (QD_ERR_IDEMPOTENCY_CONFLICT).
   */
  async createIntent(orderId: string, amountPaise: number, currency: string): Promise<PaymentIntent> {
    checkOrderId(orderId);
    if (!Number.isSafeInteger(amountPaise)) throw invalidArgument('amountPaise', 'must be an integer number of paise');
    if (typeof currency !== 'string' || !/^[A-Z]{3}$/.test(currency)) throw invalidArgument('currency', 'must be an ISO 4217 code such as INR');
    return this.#single(`intent:${orderId}`, () => this.#createIntent(orderId, amountPaise, currency));
  }

  async intentOf(orderId: string): Promise<PaymentIntent | null> {
    const row = await this.#db(() => this.ledger.intent(orderId));
    return row ? toIntent(row) : null;
  }

  /**
   * Refunds `amountPaise` of a captured payment, or what is left of it when
   * omitted. One refund per order: a repeat returns the recorded refund.
   */
  async refund(orderId: string, paymentId: string, amountPaise?: number): Promise<Refund> {
    checkOrderId(orderId);
    if (typeof paymentId !== 'string' || !/^pay_\w+$/.test(paymentId)) throw invalidArgument('paymentId', 'must be a Razorpay payment id (pay_...)');
    if (amountPaise !== undefined && (!Number.isSafeInteger(amountPaise) || amountPaise <= 0)) {
      throw invalidArgument('amountPaise', 'must be a positive integer number of paise');
    }
    return this.#single(`refund:${orderId}`, () => this.#refund(orderId, paymentId, amountPaise));
  }

  // ------------------------------------------------------------------ intents

  async #createIntent(orderId: string, amountPaise: number, currency: string): Promise<PaymentIntent> {
    const existing = await this.#db(() => this.ledger.intent(orderId));
    if (existing && existing.amountPaise === amountPaise && existing.currency === currency) return toIntent(existing);
    if (existing?.status === 'paid') {
      this.#log.warn({ orderId, recordedPaise: existing.amountPaise, askedPaise: amountPaise }, 'intent of a paid order asked with another amount');
      throw new DispatchError('QD_ERR_IDEMPOTENCY_CONFLICT', { key: orderId, orderId });
    }
    const order: ProviderOrder = await this.#call('orders.create', () =>
      this.#rzp.orders.create({ amount: amountPaise, currency, receipt: orderId, notes: { order_id: orderId } }),
    );
    const next = { orderId, providerOrderId: order.id, amountPaise: Number(order.amount), currency: order.currency };
    const saved = existing
      ? await this.#db(() => this.ledger.replaceIntent(orderId, existing.providerOrderId, next))
      : await this.#db(() => this.ledger.insertIntent(next));
    if (saved) {
      this.#log.info({ orderId, providerOrderId: saved.providerOrderId, amountPaise, currency, replaced: existing?.providerOrderId ?? null }, 'payment intent opened');
      return toIntent(saved);
    }
    // Another node recorded an intent first; ours stays unpaid at Razorpay and expires there.
    const winner = await this.#db(() => this.ledger.intent(orderId));
    this.#log.info({ orderId, abandoned: order.id, providerOrderId: winner?.providerOrderId }, 'concurrent intent won');
    if (winner && winner.amountPaise === amountPaise && winner.currency === currency) return toIntent(winner);
    throw new DispatchError('QD_ERR_IDEMPOTENCY_CONFLICT', { key: orderId, orderId });
  }

  // ------------------------------------------------------------------ refunds

  async #refund(orderId: string, paymentId: string, amountPaise: number | undefined): Promise<Refund> {
    const log = this.#log.child({ orderId, paymentId });
    let row = await this.#db(() => this.ledger.refund(orderId));
    if (row?.refundId) return recorded(row, log, paymentId);
    let claim: RefundRow | null = row ? null : await this.#db(() => this.ledger.claimRefund(orderId, paymentId, amountPaise ?? null));
    if (!claim) {
      // A claim exists: another attempt is in flight, or one ended without a known outcome.
      row = await this.#db(() => this.ledger.refund(orderId));
      if (row?.refundId) return recorded(row, log, paymentId);
      claim = await this.#db(() => this.ledger.takeOverStaleClaim(orderId, this.#claimTtlMs));
      if (!claim) {
        throw new DispatchError('QD_ERR_PAYMENT_PROVIDER', { reason: 'a refund for this order is already in progress', orderId, retryable: true });
      }
      // The earlier attempt may have reached Razorpay: adopt its refund rather than refund twice.
      const found = await this.#findRefund(claim.paymentId, orderId);
      if (found) {
        log.warn({ refundId: found.id }, 'refund of an interrupted attempt found at Razorpay');
        return this.#record(orderId, found, log);
      }
    }
    const { paymentId: claimedPaymentId, requestedPaise } = claim;
    try {
      const refund = (await this.#call('payments.refund', () =>
        this.#rzp.payments.refund(claimedPaymentId, {
          ...(requestedPaise !== null ? { amount: requestedPaise } : {}),
          receipt: orderId,
          notes: { order_id: orderId },
        }),
      )) as ProviderRefund;
      return await this.#record(orderId, refund, log);
    } catch (err) {
      const e = toDispatchError(err, this.#requestTimeoutMs);
      // Only an answer that Razorpay refused (4xx) or a connection never made proves nothing happened there.
      if (e.details.certain === true) await this.#db(() => this.ledger.releaseRefundClaim(orderId)).catch(() => {});
      log.warn({ err: e.toJSON() }, 'refund request failed');
      throw e;
    }
  }

  async #record(orderId: string, refund: ProviderRefund, log: Logger): Promise<Refund> {
    const status: RefundStatus = refund.status === 'processed' || refund.status === 'failed' ? refund.status : 'pending';
    const row = await this.#db(() => this.ledger.recordRefund(orderId, { refundId: refund.id, amountPaise: Number(refund.amount), status }));
    log.info({ refundId: refund.id, amountPaise: row.amountPaise, status }, 'refund recorded');
    return { orderId, providerRefundId: refund.id, amountPaise: row.amountPaise ?? Number(refund.amount) };
  }

  /** Razorpay's refunds of a payment, looking for one this adapter made for the order. */
  async #findRefund(paymentId: string, orderId: string): Promise<ProviderRefund | null> {
    const list = (await this.#call('payments.fetchMultipleRefund', () => this.#rzp.payments.fetchMultipleRefund(paymentId, { count: 100 }))) as {
      items?: ProviderRefund[];
    };
    return list.items?.find((r) => noteOrderId(r.notes) === orderId) ?? null;
  }

  // ------------------------------------------------------------------ plumbing

  #single<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const running = this.#inflight.get(key);
    if (running) return running as Promise<T>;
    const p = fn().finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, p);
    return p;
  }

  /** One SDK call under the overall deadline; every failure becomes a DispatchError. */
  async #call<T>(op: string, fn: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DispatchError('QD_ERR_PAYMENT_TIMEOUT', { timeoutMs: this.#deadlineMs, op })), this.#deadlineMs);
    });
    try {
      // The SDK throws synchronously for missing ids; Promise.resolve().then makes that a rejection too.
      return await Promise.race([Promise.resolve().then(fn), deadline]);
    } catch (err) {
      // Our deadline's error passes through; an SDK timeout is the per-request one.
      const e = toDispatchError(err, this.#requestTimeoutMs, op);
      this.#log.debug({ op, err: e.toJSON() }, 'razorpay call failed');
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Ledger access: a database failure is reported as the provider being unavailable to us, never as a raw driver error. */
  async #db<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new DispatchError('QD_ERR_PAYMENT_PROVIDER', { reason: `payments ledger: ${(err as Error)?.message ?? String(err)}`, retryable: true }, { cause: err });
    }
  }
}

function recorded(row: RefundRow, log: Logger, paymentId: string): Refund {
  if (row.paymentId !== paymentId) log.warn({ refundedPaymentId: row.paymentId }, 'refund asked for another payment of an order already refunded');
  return { orderId: row.orderId, providerRefundId: row.refundId!, amountPaise: row.amountPaise ?? 0 };
}

function toIntent(row: IntentRow): PaymentIntent {
  return { orderId: row.orderId, providerOrderId: row.providerOrderId, amountPaise: row.amountPaise, currency: row.currency };
}

function checkOrderId(orderId: string): void {
  // It is the Razorpay receipt, which holds at most 40 characters.
  if (typeof orderId !== 'string' || orderId.length === 0 || orderId.length > RECEIPT_MAX) {
    throw invalidArgument('orderId', `must be 1 to ${RECEIPT_MAX} characters`);
  }
}

function positive(v: number, field: string): number {
  if (!Number.isFinite(v) || v <= 0) throw invalidArgument(field, 'must be a positive number of milliseconds');
  return v;
}

/** notes.order_id of a Razorpay entity; Razorpay sends empty notes as []. */
export function noteOrderId(notes: unknown): string | null {
  if (!notes || typeof notes !== 'object' || Array.isArray(notes)) return null;
  const v = (notes as Record<string, unknown>).order_id;
  return typeof v === 'string' && v.length > 0 ? v : null;
}

function isSdkError(err: unknown): err is SdkError {
  return typeof err === 'object' && err !== null && typeof (err as SdkError).statusCode === 'number';
}

/**
 * Maps what the SDK (or our deadline) threw. `certain` in the details says
 * Razorpay certainly did nothing (a refusal, or no connection at all); a
 * timeout or a 5xx may have done the work.
 */
export function toDispatchError(err: unknown, timeoutMs: number, op?: string): DispatchError {
  if (err instanceof DispatchError) return err;
  if (isSdkError(err)) {
    const e = err.error ?? {};
    if (e.transport !== undefined) {
      if (AXIOS_TIMEOUT_CODES.has(e.transport)) return new DispatchError('QD_ERR_PAYMENT_TIMEOUT', { timeoutMs, op, transport: e.transport });
      const certain = e.transport === 'ECONNREFUSED' || e.transport === 'ENOTFOUND' || e.transport === 'EAI_AGAIN';
      return new DispatchError('QD_ERR_PAYMENT_PROVIDER', {
        reason: `Razorpay unreachable (${e.transport}): ${e.description}`,
        op,
        transport: e.transport,
        retryable: true,
        certain,
      });
    }
    const razorpay = { code: e.code, description: e.description, field: e.field ?? null, source: e.source, step: e.step, reason: e.reason };
    return new DispatchError('QD_ERR_PAYMENT_PROVIDER', {
      reason: e.description ?? `HTTP ${err.statusCode}`,
      field: e.field ?? null,
      status: err.statusCode,
      op,
      razorpay,
      retryable: err.statusCode >= 500 || err.statusCode === 429,
      certain: err.statusCode >= 400 && err.statusCode < 500,
    });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new DispatchError('QD_ERR_PAYMENT_PROVIDER', { reason: message, op, retryable: false, certain: false }, { cause: err });
}

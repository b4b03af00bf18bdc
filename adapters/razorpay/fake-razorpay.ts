/**
 * A local stand-in for Razorpay, for tests and development: an HTTP server
 * that answers the REST calls the official `razorpay` SDK makes (Basic auth,
 * /v1/orders, /v1/payments, /v1/refunds, Razorpay's entity and error JSON)
 * and sends signed webhooks (Razorpay's event envelope, X-Razorpay-Signature,
 * x-razorpay-event-id) the way the real one does after a checkout or a
 * refund. Test controls simulate the customer's checkout, slow or dead
 * servers, injected errors, replayed and forged webhooks.
 *
 * Only what QuickDash uses is modelled; amounts are integer paise.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { createServer, request as httpRequest } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RazorpayError {
  code: string;
  description: string;
  field?: string | null;
  source?: string;
  step?: string;
  reason?: string;
  metadata?: Record<string, unknown>;
}

type Notes = Record<string, string | number> | [];

export interface OrderEntity {
  id: string;
  entity: 'order';
  amount: number;
  amount_paid: number;
  amount_due: number;
  currency: string;
  receipt: string | null;
  offer_id: null;
  status: 'created' | 'attempted' | 'paid';
  attempts: number;
  notes: Notes;
  created_at: number;
}

export interface PaymentEntity {
  id: string;
  entity: 'payment';
  amount: number;
  currency: string;
  status: 'created' | 'authorized' | 'captured' | 'refunded' | 'failed';
  order_id: string;
  invoice_id: null;
  international: boolean;
  method: string;
  amount_refunded: number;
  refund_status: null | 'partial' | 'full';
  captured: boolean;
  description: string | null;
  card_id: string | null;
  bank: string | null;
  wallet: string | null;
  vpa: string | null;
  email: string;
  contact: string;
  notes: Notes;
  fee: number | null;
  tax: number | null;
  error_code: string | null;
  error_description: string | null;
  error_source: string | null;
  error_step: string | null;
  error_reason: string | null;
  acquirer_data: Record<string, string | null>;
  created_at: number;
}

export interface RefundEntity {
  id: string;
  entity: 'refund';
  amount: number;
  currency: string;
  payment_id: string;
  notes: Notes;
  receipt: string | null;
  acquirer_data: { arn: string | null };
  created_at: number;
  batch_id: null;
  status: 'pending' | 'processed' | 'failed';
  speed_processed: 'normal' | 'instant';
  speed_requested: 'normal' | 'optimum';
}

/** One API request as the fake received it. */
export interface RecordedRequest {
  method: string;
  /** Path without the query string, e.g. /v1/orders. */
  path: string;
  query: Record<string, string>;
  headers: Record<string, string | string[] | undefined>;
  /** key_id of a well-formed Basic authorization header (whether or not it matched), else null. */
  keyId: string | null;
  /** Whether the Basic credentials were the configured key_id:key_secret. */
  authorized: boolean;
  body: unknown;
  at: number;
}

/** One webhook the fake sent (or prepared, when delivery was held back). */
export interface WebhookDelivery {
  eventId: string;
  event: string;
  /** The exact bytes sent; replays send them again. */
  body: string;
  signature: string;
  /** HTTP status of the last attempt; null before any attempt, 0 when the receiver could not be reached. */
  status: number | null;
  /** The receiver's answer to the last attempt. */
  response: string | null;
}

export interface PayOptions {
  /** Makes the attempt fail with this Razorpay error (e.g. BAD_REQUEST_ERROR, "Payment failed due to insufficient balance"). */
  fail?: { code: string; description: string; reason?: string; source?: string; step?: string };
  /** Payment method: card (default), upi, netbanking, wallet. */
  method?: string;
  /** Notes the checkout attached to the payment (Razorpay does not copy the order's notes). */
  notes?: Record<string, string>;
  /** Capture at once, as the account's default automatic capture does (default true); false leaves it authorized. */
  autoCapture?: boolean;
  /** Send the resulting webhooks (default true); false only records them, for replay() to send. */
  deliver?: boolean;
}

export interface PayResult {
  payment: PaymentEntity;
  order: OrderEntity;
  webhooks: WebhookDelivery[];
}

export interface FakeRazorpayOptions {
  keyId?: string;
  keySecret?: string;
  webhookSecret?: string;
  /** Where webhooks are POSTed; none are sent while it is null. */
  webhookUrl?: string | null;
  accountId?: string;
}

const ID_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
const SUPPORTED_CURRENCIES = new Set(['INR', 'USD', 'EUR', 'GBP', 'SGD', 'AED', 'MYR']);
const MAX_BODY = 1 << 20;

/** Razorpay ids: a prefix and 14 base-62 characters (order_, pay_, rfnd_; event ids without prefix). */
export function razorpayId(prefix: string): string {
  const bytes = randomBytes(14);
  let s = '';
  for (const b of bytes) s += ID_CHARS[b % ID_CHARS.length];
  return prefix + s;
}

const nowSeconds = (): number => Math.floor(Date.now() / 1000);

function badRequest(description: string, field?: string): { status: number; error: RazorpayError } {
  return {
    status: 400,
    error: {
      code: 'BAD_REQUEST_ERROR',
      description,
      ...(field !== undefined ? { field } : {}),
      source: 'business',
      step: 'payment_initiation',
      reason: 'input_validation_failed',
      metadata: {},
    },
  };
}

const notFound = (): { status: number; error: RazorpayError } => badRequest('The id provided does not exist', 'id');

const SERVER_ERROR: RazorpayError = {
  code: 'SERVER_ERROR',
  description: 'The server encountered an error. The incident has been reported to admins.',
  source: 'NA',
  step: 'NA',
  reason: 'NA',
  metadata: {},
};

class HttpFailure {
  constructor(
    readonly status: number,
    readonly error: RazorpayError,
  ) {}
}

function fail(e: { status: number; error: RazorpayError }): never {
  throw new HttpFailure(e.status, e.error);
}

function checkNotes(notes: unknown): Notes {
  if (notes === undefined || notes === null) return [];
  if (typeof notes !== 'object' || Array.isArray(notes)) fail(badRequest('The notes must be an array.', 'notes'));
  const entries = Object.entries(notes as Record<string, unknown>);
  if (entries.length > 15) fail(badRequest('The notes may not have more than 15 items.', 'notes'));
  for (const [k, v] of entries) {
    if ((typeof v !== 'string' && typeof v !== 'number') || String(v).length > 256) {
      fail(badRequest(`The notes.${k} may not be greater than 256 characters.`, `notes.${k}`));
    }
  }
  return entries.length === 0 ? [] : (notes as Record<string, string | number>);
}

/** Razorpay takes amounts as integers (or integer strings) in the smallest currency unit. */
function checkAmount(v: unknown, field: string, min: number, currency: string): number {
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n)) fail(badRequest(`The ${field} must be an integer.`, field));
  if (n < min) fail(badRequest(`The ${field} must be atleast ${currency} ${(min / 100).toFixed(2)}`, field));
  return n;
}

export class FakeRazorpay {
  readonly keyId: string;
  readonly keySecret: string;
  readonly webhookSecret: string;
  readonly accountId: string;
  webhookUrl: string | null;
  /** Answers every API request this much later. */
  delayMs = 0;
  /** Takes API requests in and never answers them (a dead Razorpay behind a live socket). */
  hang = false;
  /** Every API request received, oldest first. */
  readonly requests: RecordedRequest[] = [];
  /** Every webhook sent or prepared, oldest first. */
  readonly webhooks: WebhookDelivery[] = [];

  readonly #server: Server;
  readonly #orders = new Map<string, OrderEntity>();
  readonly #payments = new Map<string, PaymentEntity>();
  readonly #refunds = new Map<string, RefundEntity>();
  readonly #failures: HttpFailure[] = [];
  readonly #timers = new Set<NodeJS.Timeout>();
  #url = '';

  private constructor(options: FakeRazorpayOptions) {
    this.keyId = options.keyId ?? 'rzp_test_' + razorpayId('').slice(0, 14);
    this.keySecret = options.keySecret ?? randomBytes(12).toString('hex');
    this.webhookSecret = options.webhookSecret ?? randomBytes(12).toString('hex');
    this.accountId = options.accountId ?? razorpayId('acc_');
    this.webhookUrl = options.webhookUrl ?? null;
    this.#server = createServer((req, res) => this.#onRequest(req, res));
  }

  /** Listens on 127.0.0.1 on a free port. */
  static async start(options: FakeRazorpayOptions = {}): Promise<FakeRazorpay> {
    const fake = new FakeRazorpay(options);
    await new Promise<void>((resolve, reject) => {
      fake.#server.once('error', reject);
      fake.#server.listen(0, '127.0.0.1', () => resolve());
    });
    const { port } = fake.#server.address() as AddressInfo;
    fake.#url = `http://127.0.0.1:${port}`;
    return fake;
  }

  /** Origin of the fake, e.g. http://127.0.0.1:41234 (the SDK adds /v1/...). */
  get url(): string {
    return this.#url;
  }

  /** The next API request (after authentication) is answered with this status and error instead. */
  failNext(status: number, error: Partial<RazorpayError> = {}): void {
    const base = status >= 500 ? SERVER_ERROR : badRequest('The request is invalid').error;
    this.#failures.push(new HttpFailure(status, { ...base, ...error }));
  }

  order(id: string): OrderEntity | undefined {
    return this.#orders.get(id);
  }

  payment(id: string): PaymentEntity | undefined {
    return this.#payments.get(id);
  }

  refund(id: string): RefundEntity | undefined {
    return this.#refunds.get(id);
  }

  /**
   * The customer pays a Razorpay order at checkout. Succeeds (captured at
   * once unless autoCapture is false) or fails as asked, updates the order,
   * and sends the webhooks Razorpay would: payment.captured and order.paid,
   * payment.authorized, or payment.failed.
   * @throws Error for an unknown or already paid order (checkout would refuse it).
   */
  async pay(orderId: string, options: PayOptions = {}): Promise<PayResult> {
    const order = this.#orders.get(orderId);
    if (!order) throw new Error(`no order ${orderId}`);
    if (order.status === 'paid') throw new Error(`order ${orderId} is already paid`);
    const method = options.method ?? 'card';
    const payment: PaymentEntity = {
      id: razorpayId('pay_'),
      entity: 'payment',
      amount: order.amount_due,
      currency: order.currency,
      status: 'created',
      order_id: order.id,
      invoice_id: null,
      international: false,
      method,
      amount_refunded: 0,
      refund_status: null,
      captured: false,
      description: null,
      card_id: method === 'card' ? razorpayId('card_') : null,
      bank: method === 'netbanking' ? 'HDFC' : null,
      wallet: method === 'wallet' ? 'paytm' : null,
      vpa: method === 'upi' ? 'success@razorpay' : null,
      email: 'customer@example.com',
      contact: '+919000090000',
      notes: options.notes && Object.keys(options.notes).length > 0 ? { ...options.notes } : [],
      fee: null,
      tax: null,
      error_code: null,
      error_description: null,
      error_source: null,
      error_step: null,
      error_reason: null,
      acquirer_data: method === 'upi' ? { rrn: String(Date.now()).slice(-12) } : { auth_code: String(100000 + (Date.now() % 900000)) },
      created_at: nowSeconds(),
    };
    this.#payments.set(payment.id, payment);
    order.attempts += 1;
    order.status = 'attempted';
    const deliver = options.deliver ?? true;
    const sent: WebhookDelivery[] = [];
    if (options.fail) {
      Object.assign(payment, {
        status: 'failed',
        error_code: options.fail.code,
        error_description: options.fail.description,
        error_source: options.fail.source ?? 'customer',
        error_step: options.fail.step ?? 'payment_authorization',
        error_reason: options.fail.reason ?? 'payment_failed',
      });
      sent.push(await this.#webhook('payment.failed', { payment }, deliver));
    } else if (options.autoCapture === false) {
      payment.status = 'authorized';
      sent.push(await this.#webhook('payment.authorized', { payment }, deliver));
    } else {
      this.#capture(payment);
      sent.push(...(await this.#capturedWebhooks(payment, deliver)));
    }
    return { payment: { ...payment }, order: { ...order }, webhooks: sent };
  }

  /** Sends a webhook again, byte for byte with the same signature and event id (Razorpay's retry). */
  async replay(eventId: string): Promise<WebhookDelivery> {
    const d = this.webhooks.find((w) => w.eventId === eventId);
    if (!d) throw new Error(`no webhook ${eventId}`);
    await this.#post(d);
    return d;
  }

  /**
   * Sends a webhook that Razorpay did not sign: `body` as given (an object is
   * serialised), signed with `secret` (default: a random one, not the
   * webhook secret) or with the literal `signature` when given.
   */
  async forge(body: string | object, options: { secret?: string; signature?: string; eventId?: string } = {}): Promise<WebhookDelivery> {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    const signature = options.signature ?? createHmac('sha256', options.secret ?? randomBytes(16).toString('hex')).update(text).digest('hex');
    const d: WebhookDelivery = { eventId: options.eventId ?? razorpayId(''), event: 'forged', body: text, signature, status: null, response: null };
    await this.#post(d);
    return d;
  }

  /** Stops listening and drops every connection, hung requests included. */
  async close(): Promise<void> {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  // ------------------------------------------------------------------ HTTP

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const url = new URL(req.url ?? '/', 'http://fake');
      const { keyId, authorized } = this.#auth(req.headers.authorization);
      let body: unknown = undefined;
      if (raw.length > 0) {
        try {
          body = JSON.parse(raw);
        } catch {
          body = raw;
        }
      }
      this.requests.push({
        method: req.method ?? 'GET',
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        headers: { ...req.headers },
        keyId,
        authorized,
        body,
        at: Date.now(),
      });
      // A hung request is held until close() drops the connection.
      if (this.hang) return;
      const answer = () => this.#answer(res, req.method ?? 'GET', url, body, authorized);
      if (this.delayMs > 0) {
        const t = setTimeout(() => {
          this.#timers.delete(t);
          answer();
        }, this.delayMs);
        this.#timers.add(t);
      } else answer();
    });
  }

  #auth(header: string | undefined): { keyId: string | null; authorized: boolean } {
    const m = /^Basic\s+([A-Za-z0-9+/=]+)$/.exec(header ?? '');
    if (!m) return { keyId: null, authorized: false };
    const decoded = Buffer.from(m[1], 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return { keyId: null, authorized: false };
    const keyId = decoded.slice(0, colon);
    return { keyId, authorized: keyId === this.keyId && decoded.slice(colon + 1) === this.keySecret };
  }

  #answer(res: ServerResponse, method: string, url: URL, body: unknown, authorized: boolean): void {
    // A client that gave up still had its request carried out (Razorpay does not roll back on a dropped socket).
    let status = 200;
    let payload: unknown;
    try {
      if (!authorized) {
        throw new HttpFailure(401, {
          code: 'BAD_REQUEST_ERROR',
          description: 'Authentication failed',
          source: 'NA',
          step: 'NA',
          reason: 'NA',
          metadata: {},
        });
      }
      const injected = this.#failures.shift();
      if (injected) throw injected;
      payload = this.#route(method, url, body);
    } catch (err) {
      // A bug in the fake answers as Razorpay's own failures do, not by crashing the test process.
      const f = err instanceof HttpFailure ? err : new HttpFailure(500, SERVER_ERROR);
      status = f.status;
      payload = { error: f.error };
    }
    if (res.destroyed) return;
    const text = JSON.stringify(payload);
    res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  #route(method: string, url: URL, body: unknown): unknown {
    const parts = url.pathname.split('/').filter((p) => p.length > 0);
    if (parts[0] !== 'v1') fail(badRequest('The requested URL was not found on the server.'));
    const [, resource, id, sub] = parts;
    const input = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>;
    if (resource === 'orders' && method === 'POST' && id === undefined) return this.#createOrder(input);
    if (resource === 'orders' && method === 'GET' && id !== undefined && sub === undefined) return this.#orders.get(id) ?? fail(notFound());
    if (resource === 'orders' && method === 'GET' && id !== undefined && sub === 'payments') {
      if (!this.#orders.has(id)) fail(notFound());
      return collection([...this.#payments.values()].filter((p) => p.order_id === id));
    }
    if (resource === 'payments' && id !== undefined) {
      const payment = this.#payments.get(id);
      if (!payment) fail(notFound());
      if (method === 'GET' && sub === undefined) return payment;
      if (method === 'POST' && sub === 'capture') return this.#captureRequest(payment, input);
      if (method === 'POST' && sub === 'refund') return this.#refundRequest(payment, input);
      if (method === 'GET' && sub === 'refunds') {
        const count = Math.min(Number(url.searchParams.get('count') ?? 10) || 10, 100);
        const skip = Number(url.searchParams.get('skip') ?? 0) || 0;
        const all = [...this.#refunds.values()].filter((r) => r.payment_id === id).sort((a, b) => b.created_at - a.created_at);
        return collection(all.slice(skip, skip + count));
      }
    }
    if (resource === 'refunds' && method === 'GET' && id !== undefined && sub === undefined) return this.#refunds.get(id) ?? fail(notFound());
    return fail(badRequest('The requested URL was not found on the server.'));
  }

  #createOrder(input: Record<string, unknown>): OrderEntity {
    const currency = input.currency ?? 'INR';
    if (typeof currency !== 'string' || !SUPPORTED_CURRENCIES.has(currency)) fail(badRequest('Currency is not supported', 'currency'));
    if (input.amount === undefined) fail(badRequest('The amount field is required.', 'amount'));
    const amount = checkAmount(input.amount, 'amount', 100, currency);
    const receipt = input.receipt ?? null;
    if (receipt !== null && (typeof receipt !== 'string' || receipt.length > 40)) {
      fail(badRequest('The receipt may not be greater than 40 characters.', 'receipt'));
    }
    const order: OrderEntity = {
      id: razorpayId('order_'),
      entity: 'order',
      amount,
      amount_paid: 0,
      amount_due: amount,
      currency,
      receipt,
      offer_id: null,
      status: 'created',
      attempts: 0,
      notes: checkNotes(input.notes),
      created_at: nowSeconds(),
    };
    this.#orders.set(order.id, order);
    return order;
  }

  #captureRequest(payment: PaymentEntity, input: Record<string, unknown>): PaymentEntity {
    if (payment.status === 'captured' || payment.status === 'refunded') fail(badRequest('This payment has already been captured'));
    if (payment.status !== 'authorized') fail(badRequest('Only payments which have been authorized and not yet captured can be captured'));
    const amount = checkAmount(input.amount, 'amount', 100, payment.currency);
    if (amount !== payment.amount) fail(badRequest('Capture amount must be equal to the amount authorized', 'amount'));
    if (input.currency !== undefined && input.currency !== payment.currency) fail(badRequest('Currency should be same as payment currency', 'currency'));
    this.#capture(payment);
    // Webhooks follow the response, as Razorpay sends them asynchronously.
    this.#later(() => this.#capturedWebhooks(payment, true));
    return payment;
  }

  #refundRequest(payment: PaymentEntity, input: Record<string, unknown>): RefundEntity {
    if (!payment.captured) fail(badRequest('The payment has not been captured', 'payment_id'));
    const left = payment.amount - payment.amount_refunded;
    if (left <= 0) fail(badRequest('The payment has been fully refunded already'));
    const amount = input.amount === undefined ? left : checkAmount(input.amount, 'amount', 100, payment.currency);
    if (amount > left) fail(badRequest('The refund amount provided is greater than amount captured', 'amount'));
    const receipt = input.receipt ?? null;
    if (receipt !== null && (typeof receipt !== 'string' || receipt.length > 40)) {
      fail(badRequest('The receipt may not be greater than 40 characters.', 'receipt'));
    }
    const speed = input.speed === 'optimum' ? 'optimum' : 'normal';
    const refund: RefundEntity = {
      id: razorpayId('rfnd_'),
      entity: 'refund',
      amount,
      currency: payment.currency,
      payment_id: payment.id,
      notes: checkNotes(input.notes),
      receipt,
      acquirer_data: { arn: null },
      created_at: nowSeconds(),
      batch_id: null,
      // Test mode processes refunds at once.
      status: 'processed',
      speed_processed: 'normal',
      speed_requested: speed,
    };
    this.#refunds.set(refund.id, refund);
    payment.amount_refunded += amount;
    payment.refund_status = payment.amount_refunded >= payment.amount ? 'full' : 'partial';
    if (payment.refund_status === 'full') payment.status = 'refunded';
    this.#later(() => this.#webhook('refund.processed', { refund, payment }, true));
    return refund;
  }

  #capture(payment: PaymentEntity): void {
    const order = this.#orders.get(payment.order_id)!;
    payment.status = 'captured';
    payment.captured = true;
    // Razorpay's fee: 2 % plus 18 % GST on it.
    payment.fee = Math.round(payment.amount * 0.02 * 1.18);
    payment.tax = Math.round(payment.amount * 0.02 * 0.18);
    order.amount_paid += payment.amount;
    order.amount_due = Math.max(0, order.amount - order.amount_paid);
    if (order.amount_due === 0) order.status = 'paid';
  }

  async #capturedWebhooks(payment: PaymentEntity, deliver: boolean): Promise<WebhookDelivery[]> {
    const order = this.#orders.get(payment.order_id)!;
    const out = [await this.#webhook('payment.captured', { payment }, deliver)];
    if (order.status === 'paid') out.push(await this.#webhook('order.paid', { payment, order }, deliver));
    return out;
  }

  #later(fn: () => Promise<unknown>): void {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      fn().catch(() => {});
    }, 0);
    this.#timers.add(t);
  }

  // ------------------------------------------------------------------ webhooks

  /** Builds Razorpay's event envelope around snapshots of the entities, signs it and (unless held) sends it. */
  async #webhook(event: string, entities: Record<string, object>, deliver: boolean): Promise<WebhookDelivery> {
    const payload: Record<string, { entity: unknown }> = {};
    for (const [name, entity] of Object.entries(entities)) payload[name] = { entity: structuredClone(entity) };
    const body = JSON.stringify({
      entity: 'event',
      account_id: this.accountId,
      event,
      contains: Object.keys(entities),
      payload,
      created_at: nowSeconds(),
    });
    const d: WebhookDelivery = {
      eventId: razorpayId(''),
      event,
      body,
      signature: createHmac('sha256', this.webhookSecret).update(body).digest('hex'),
      status: null,
      response: null,
    };
    this.webhooks.push(d);
    if (deliver) await this.#post(d);
    return d;
  }

  #post(d: WebhookDelivery): Promise<void> {
    const target = this.webhookUrl;
    if (target === null) return Promise.resolve();
    return new Promise((resolve) => {
      const req = httpRequest(
        target,
        {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(d.body),
            'user-agent': 'Razorpay-Webhook/v1',
            'x-razorpay-signature': d.signature,
            'x-razorpay-event-id': d.eventId,
          },
          timeout: 5000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            d.status = res.statusCode ?? 0;
            d.response = Buffer.concat(chunks).toString('utf8');
            resolve();
          });
          res.on('error', () => {
            d.status = 0;
            resolve();
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('webhook receiver timed out')));
      req.on('error', (err) => {
        d.status = 0;
        d.response = err.message;
        resolve();
      });
      req.end(d.body);
    });
  }
}

function collection<T>(items: T[]): { entity: 'collection'; count: number; items: T[] } {
  return { entity: 'collection', count: items.length, items };
}

/**
 * adapters/razorpay: the engine's PaymentsPort over Razorpay (official SDK),
 * its webhooks, the SQL ledger that makes both idempotent, and a local fake
 * Razorpay for tests and development.
 */

// Port implementation
export { RazorpayPayments } from './payments.ts';
export type { RazorpayPaymentsOptions } from './payments.ts';

// Webhooks
export { RazorpayWebhooks, verifyRazorpaySignature } from './webhook.ts';
export type { PaymentEvent, RazorpayWebhooksOptions, WebhookResult } from './webhook.ts';

// Ledger
export { DEFAULT_PAYMENTS_SCHEMA, PaymentsLedger } from './ledger.ts';
export type { IntentRow, IntentStatus, RefundRow, RefundStatus } from './ledger.ts';

// Fake Razorpay (tests, development)
export { FakeRazorpay, razorpayId } from './fake-razorpay.ts';
export type {
  FakeRazorpayOptions,
  OrderEntity,
  PayOptions,
  PayResult,
  PaymentEntity,
  RazorpayError,
  RecordedRequest,
  RefundEntity,
  WebhookDelivery,
} from './fake-razorpay.ts';

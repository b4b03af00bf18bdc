/**
 * The error convention of quickdash.v1 (protos/README.md, "Errors"), written
 * once for every server and client: an engine DispatchError becomes a gRPC
 * status with `qd-error-code`, `qd-error-field` and `qd-error-detail-bin`
 * trailers, and back. Also the bearer-token plumbing servers share.
 */
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { DispatchError, ErrorCodes, type ErrorCode } from '../engine/index.ts';
import { ErrorDetail } from './gen/quickdash/v1/common.ts';

export const ERROR_CODE_KEY = 'qd-error-code';
export const ERROR_FIELD_KEY = 'qd-error-field';
export const ERROR_DETAIL_KEY = 'qd-error-detail-bin';

/**
 * Engine detail names that differ from the request field's proto name.
 * The engine speaks camelCase domain names; clients see proto names.
 */
const FIELD_NAMES: Record<string, string> = {
  items: 'lines',
  idempotencyKey: 'idempotency_key',
  storeId: 'store_id',
  customerId: 'customer_id',
  orderId: 'order_id',
  riderId: 'rider_id',
  zoneId: 'zone_id',
  radiusM: 'radius_m',
  promisedAt: 'promised_at',
  paymentId: 'payment_id',
  amountPaise: 'amount_paise',
  afterPosition: 'after_position',
  onHand: 'on_hand',
};

/** A proto field name for an engine field name (`lines[2].quantity` stays as it is). */
export function protoFieldName(field: string): string {
  const head = /^[A-Za-z]+/.exec(field)?.[0] ?? field;
  const mapped = FIELD_NAMES[head] ?? head.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  return mapped + field.slice(head.length);
}

function detailText(v: unknown): string {
  if (Array.isArray(v)) return v.map(detailText).join(',');
  if (v === null || v === undefined) return '';
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

/** The gRPC error a server sends for any thrown value; unknown errors become INTERNAL without their message. */
export function toServiceError(err: unknown): Partial<ServiceError> {
  const e =
    err instanceof DispatchError ? err : new DispatchError('QD_ERR_INTERNAL', { reason: 'unexpected error; see the server log' }, { cause: err });
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_KEY, e.code);
  const field = typeof e.details.field === 'string' ? protoFieldName(e.details.field) : '';
  if (field) metadata.set(ERROR_FIELD_KEY, field);
  const details: Record<string, string> = {};
  for (const [k, v] of Object.entries(e.details)) if (k !== 'field') details[k] = detailText(v);
  metadata.set(ERROR_DETAIL_KEY, Buffer.from(ErrorDetail.encode({ code: e.code, field, details }).finish()));
  return { code: e.grpcStatus, details: e.message, metadata };
}

/** A refusal for a caller without valid credentials (the status carries no QD code beyond this). */
export function unauthenticated(reason: string): Partial<ServiceError> {
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_KEY, 'QD_ERR_UNAUTHENTICATED');
  return { code: status.UNAUTHENTICATED, details: `missing or invalid credentials: ${reason}`, metadata };
}

/**
 * The engine error a client sees for a failed call: a DispatchError with the
 * server's code and details when the server sent them, otherwise one that
 * says what the transport reported: `unreachable` (the code the caller's
 * port uses for an unreachable backend) for UNAVAILABLE and DEADLINE_EXCEEDED.
 */
export function fromServiceError(err: ServiceError, unreachable: ErrorCode = 'QD_ERR_STORE_UNAVAILABLE'): DispatchError {
  const code = err.metadata?.get(ERROR_CODE_KEY)[0];
  const [bin] = err.metadata?.get(ERROR_DETAIL_KEY) ?? [];
  if (typeof code === 'string' && code in ErrorCodes) {
    const detail = Buffer.isBuffer(bin) ? ErrorDetail.decode(bin) : null;
    const details: Record<string, unknown> = { ...(detail?.details ?? {}) };
    if (detail?.field) details.field = detail.field;
    return new DispatchError(code as ErrorCode, details);
  }
  if (err.code === status.DEADLINE_EXCEEDED || err.code === status.UNAVAILABLE) {
    return new DispatchError(unreachable, { reason: `remote service: ${err.details || status[err.code]}`, timeoutMs: 0 }, { cause: err });
  }
  return new DispatchError('QD_ERR_INTERNAL', { reason: `remote service: ${status[err.code] ?? err.code} ${err.details ?? ''}`.trim() }, { cause: err });
}

/** The bearer token of a call, or null. */
export function bearerToken(metadata: Metadata): string | null {
  const [value] = metadata.get('authorization');
  if (typeof value !== 'string') return null;
  const m = /^Bearer\s+(\S+)$/i.exec(value);
  return m ? m[1]! : null;
}

/** Metadata carrying a bearer token, for clients. */
export function withBearer(token: string): Metadata {
  const md = new Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}

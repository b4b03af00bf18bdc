/**
 * The single list of the engine's refusals. Each code is stable and never
 * reused: transports map it to a gRPC status or a WebSocket error code, and
 * client authors match on `code`, never on the message text.
 */

/** gRPC status numbers (grpc/status.h), kept here so the engine needs no transport import. */
export const GrpcStatus = {
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  UNAVAILABLE: 14,
  INTERNAL: 13,
  UNAUTHENTICATED: 16,
} as const;

interface ErrorDef {
  /** Message template: {name} is filled from the error's details. */
  message: string;
  grpc: number;
  /** One-byte code for WebSocket error frames (below 128). */
  ws: number;
}

export const ErrorCodes = {
  QD_ERR_INVALID_ARGUMENT: { message: 'invalid {field}: {reason}', grpc: GrpcStatus.INVALID_ARGUMENT, ws: 1 },
  QD_ERR_ORDER_NOT_FOUND: { message: 'order {orderId} not found', grpc: GrpcStatus.NOT_FOUND, ws: 2 },
  QD_ERR_RIDER_NOT_FOUND: { message: 'rider {riderId} not found', grpc: GrpcStatus.NOT_FOUND, ws: 3 },
  QD_ERR_ORDER_EXISTS: { message: 'order {orderId} already exists', grpc: GrpcStatus.ALREADY_EXISTS, ws: 4 },
  QD_ERR_INVALID_TRANSITION: {
    message: '{entity} {id} cannot {action} while {state}',
    grpc: GrpcStatus.FAILED_PRECONDITION,
    ws: 5,
  },
  QD_ERR_NOT_ASSIGNED_RIDER: {
    message: 'rider {riderId} is not the rider of order {orderId}',
    grpc: GrpcStatus.PERMISSION_DENIED,
    ws: 6,
  },
  QD_ERR_NO_OFFER: { message: 'rider {riderId} holds no offer for order {orderId}', grpc: GrpcStatus.FAILED_PRECONDITION, ws: 7 },
  QD_ERR_OFFER_EXPIRED: { message: 'offer of order {orderId} to rider {riderId} expired', grpc: GrpcStatus.FAILED_PRECONDITION, ws: 8 },
  QD_ERR_BAD_PROOF: { message: 'delivery proof for order {orderId} does not match', grpc: GrpcStatus.PERMISSION_DENIED, ws: 9 },
  QD_ERR_RIDER_BUSY: { message: 'rider {riderId} still holds orders: {orderIds}', grpc: GrpcStatus.FAILED_PRECONDITION, ws: 10 },
  QD_ERR_CANCEL_NOT_ALLOWED: {
    message: 'order {orderId} cannot be cancelled by {by} while {state}',
    grpc: GrpcStatus.FAILED_PRECONDITION,
    ws: 11,
  },
  QD_ERR_REASON_REQUIRED: { message: 'operations must give a reason to {action}', grpc: GrpcStatus.INVALID_ARGUMENT, ws: 12 },
  QD_ERR_FIX_REJECTED: { message: 'GPS fix of rider {riderId} rejected: {reason}', grpc: GrpcStatus.INVALID_ARGUMENT, ws: 13 },
  QD_ERR_STORE_UNAVAILABLE: { message: 'event store unavailable: {reason}', grpc: GrpcStatus.UNAVAILABLE, ws: 14 },
  QD_ERR_SHUTTING_DOWN: { message: 'engine is shutting down', grpc: GrpcStatus.UNAVAILABLE, ws: 15 },
  QD_ERR_INTERNAL: { message: 'internal error: {reason}', grpc: GrpcStatus.INTERNAL, ws: 16 },
  QD_ERR_STORE_NOT_FOUND: { message: 'store {storeId} not found', grpc: GrpcStatus.NOT_FOUND, ws: 17 },
  QD_ERR_STORE_CLOSED: { message: 'store {storeId} is closed: {reason}', grpc: GrpcStatus.FAILED_PRECONDITION, ws: 18 },
  QD_ERR_PRODUCT_NOT_FOUND: { message: 'product {productId} is not sold at store {storeId}', grpc: GrpcStatus.NOT_FOUND, ws: 19 },
  QD_ERR_OUT_OF_STOCK: {
    message: 'only {available} of product {productId} left at store {storeId}, {requested} asked',
    grpc: GrpcStatus.FAILED_PRECONDITION,
    ws: 20,
  },
  QD_ERR_IDEMPOTENCY_CONFLICT: {
    message: 'idempotency key {key} was already used for a different request',
    grpc: GrpcStatus.ALREADY_EXISTS,
    ws: 21,
  },
  QD_ERR_PAYMENT_PROVIDER: { message: 'payment provider refused or failed: {reason}', grpc: GrpcStatus.UNAVAILABLE, ws: 22 },
  QD_ERR_PAYMENT_TIMEOUT: { message: 'payment provider did not answer within {timeoutMs} ms', grpc: GrpcStatus.DEADLINE_EXCEEDED, ws: 23 },
  QD_ERR_PERMISSION_DENIED: { message: 'role {role} may not {action}', grpc: GrpcStatus.PERMISSION_DENIED, ws: 24 },
} as const satisfies Record<string, ErrorDef>;

export type ErrorCode = keyof typeof ErrorCodes;

/** A refusal from the engine: a stable `code`, a readable message and the details that filled it. */
export class DispatchError extends Error {
  override readonly name = 'DispatchError';
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  constructor(code: ErrorCode, details: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(formatMessage(ErrorCodes[code].message, details), options);
    this.code = code;
    this.details = details;
  }
  get grpcStatus(): number {
    return ErrorCodes[this.code].grpc;
  }
  get wsCode(): number {
    return ErrorCodes[this.code].ws;
  }
  toJSON(): { code: ErrorCode; message: string; details: Record<string, unknown> } {
    return { code: this.code, message: this.message, details: this.details };
  }
  /** Rebuilds an error that crossed a thread boundary as plain data. */
  static fromJSON(data: { code: ErrorCode; details?: Record<string, unknown> }): DispatchError {
    return new DispatchError(data.code in ErrorCodes ? data.code : 'QD_ERR_INTERNAL', data.details ?? {});
  }
}

function formatMessage(template: string, details: Record<string, unknown>): string {
  return template.replace(/\{(\w+)\}/g, (_, k: string) => {
    const v = details[k];
    return v === undefined ? `{${k}}` : Array.isArray(v) ? v.join(',') : String(v);
  });
}

/** Shorthand for argument errors that name the field at fault. */
export function invalidArgument(field: string, reason: string): DispatchError {
  return new DispatchError('QD_ERR_INVALID_ARGUMENT', { field, reason });
}

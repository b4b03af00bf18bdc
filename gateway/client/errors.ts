/**
 * The one error type the SDK rejects promises with and emits as 'error'.
 * Server refusals keep the gateway's `QD_ERR_*` code, one-byte code, field and
 * state; the SDK's own failures use `QD_CLIENT_*` codes.
 */
import type { ErrorMessage } from '../protocol.ts';

export const ClientErrorCodes = {
  /** close() was called before the command was answered. */
  QD_CLIENT_CLOSED: 'the client was closed',
  /** The offline queue already holds maxQueuedCommands commands. */
  QD_CLIENT_QUEUE_FULL: 'too many commands queued while disconnected',
  /** The connection dropped before a command that is not replayed (follow, unfollow) was answered. */
  QD_CLIENT_DISCONNECTED: 'the connection dropped before the answer',
  /** unfollow() was called while the follow was still waiting for its answer. */
  QD_CLIENT_CANCELLED: 'cancelled by the app',
  /** The gateway refused the upgrade with HTTP 401 or 403: the client stops reconnecting. */
  QD_CLIENT_AUTH_REFUSED: 'the gateway refused the token',
  /** The gateway closed with PROTOCOL_VIOLATION (4004): reconnecting would only repeat it. */
  QD_CLIENT_PROTOCOL_VIOLATION: 'the gateway closed the connection for a protocol violation',
  /** The gateway speaks a protocol version this SDK does not. */
  QD_CLIENT_VERSION: 'unsupported protocol version',
  /** Reaching the gateway failed before a socket existed (url or token provider threw, no WebSocket). Retried. */
  QD_CLIENT_CONNECT_FAILED: 'could not open a connection',
  /** A frame from the gateway could not be read; it was ignored. */
  QD_CLIENT_BAD_FRAME: 'unreadable frame from the gateway',
} as const;
export type ClientErrorCode = keyof typeof ClientErrorCodes;

/** Refusals the protocol says to retry with a new command (new `s`). */
const RETRIABLE = new Set(['QD_ERR_RATE_LIMITED', 'QD_ERR_STORE_UNAVAILABLE', 'QD_ERR_SHUTTING_DOWN']);

export class QuickDashError extends Error {
  /** `QD_ERR_*` from the gateway or `QD_CLIENT_*` from the SDK. Match on this, never on `message`. */
  readonly code: string;
  /** The gateway's one-byte code; absent for SDK errors. */
  declare readonly wsCode?: number;
  /** The command's sequence number, when the error answers one. */
  declare readonly s?: number;
  /** The field at fault (`lat`, `fixes[3].lat`). */
  declare readonly field?: string;
  /** The order's or rider's current state when the command did not fit it. */
  declare readonly state?: string;
  declare readonly retryAfterMs?: number;
  /** True when the gateway answered a replayed command from memory. */
  declare readonly dup?: boolean;
  /** HTTP status of a refused upgrade. */
  declare readonly status?: number;

  constructor(
    code: string,
    message: string,
    details: { wsCode?: number; s?: number; field?: string; state?: string; retryAfterMs?: number; dup?: boolean; status?: number } = {},
  ) {
    super(message);
    this.name = 'QuickDashError';
    this.code = code;
    // Only the details that exist, so the error prints and compares cleanly.
    for (const [k, v] of Object.entries(details)) if (v !== undefined) Object.defineProperty(this, k, { value: v, enumerable: true });
  }

  /** Whether the protocol allows sending the same command again (as a new command). */
  get retriable(): boolean {
    return RETRIABLE.has(this.code);
  }

  static fromFrame(frame: ErrorMessage): QuickDashError {
    return new QuickDashError(frame.error, frame.message, {
      wsCode: frame.code,
      s: frame.s,
      field: frame.field,
      state: frame.state,
      retryAfterMs: frame.retryAfterMs,
      dup: frame.dup,
    });
  }

  static client(code: ClientErrorCode, message: string = ClientErrorCodes[code], details: { status?: number } = {}): QuickDashError {
    return new QuickDashError(code, message, details);
  }
}

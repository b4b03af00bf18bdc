/**
 * Error plumbing shared by the adapter servers and clients, on top of the
 * protos/rpc.ts convention (which stays the one mapping between engine
 * errors and gRPC statuses).
 */
import { status, type ServiceError } from '@grpc/grpc-js';
import { DispatchError, type ErrorCode } from '../../engine/index.ts';
import { ERROR_CODE_KEY, fromServiceError } from '../../protos/rpc.ts';

/** SQLSTATE classes that mean the database cannot serve now: connection (08), resources (53), operator intervention (57), system (58). */
const UNAVAILABLE_SQLSTATE = /^(08|53|57|58)/;

/** Whether a driver error says the database is unreachable or refusing work (as opposed to a bug in a statement). */
export function isDatabaseUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && (/^E[A-Z]+$/.test(code) || UNAVAILABLE_SQLSTATE.test(code))) return true;
  // pg reports a dropped or never-made connection without a code.
  return /connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|after calling end on the pool/i.test(err.message);
}

/** The database's own code for the log and the client, never its message (which may name hosts and users). */
export function databaseReason(err: unknown): string {
  const code = err instanceof Error ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' ? `database error ${code}` : 'database unreachable';
}

/**
 * ErrorDetail carries every detail as text; these are the details the ports'
 * callers read as numbers or booleans, restored so an error that crossed the
 * wire reads like the one thrown in-process.
 */
const NUMERIC_DETAILS = new Set(['available', 'requested', 'timeoutMs', 'status', 'onHand', 'reserved', 'amountPaise']);
const BOOLEAN_DETAILS = new Set(['retryable', 'certain']);

/** protos/rpc.ts renames engine fields to proto names on the way out; this is the way back. */
function engineFieldName(field: string, renames: Record<string, string>): string {
  const head = /^[A-Za-z_]+/.exec(field)?.[0] ?? field;
  const mapped = renames[head] ?? head.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
  return mapped + field.slice(head.length);
}

export interface ClientErrorMapping {
  /** What a transport failure becomes for this port: unreachable (UNAVAILABLE) and out of time (DEADLINE_EXCEEDED). */
  unavailable: ErrorCode;
  deadline: ErrorCode;
  /** The client's deadline, reported as timeoutMs when the call ran out of it. */
  deadlineMs: number;
  /** Proto field names whose engine name is not their camelCase (catalog: lines -> items). */
  fieldRenames?: Record<string, string>;
  /** Names the remote service in reasons ("catalog at catalog:50061"). */
  service: string;
}

/** The DispatchError a port caller sees for a failed call. */
export function clientError(err: ServiceError, m: ClientErrorMapping): DispatchError {
  const fromServer = typeof err.metadata?.get(ERROR_CODE_KEY)[0] === 'string';
  const transport = err.code === status.DEADLINE_EXCEEDED ? m.deadline : m.unavailable;
  const e = fromServiceError(err, transport);
  if (!fromServer && (err.code === status.DEADLINE_EXCEEDED || err.code === status.UNAVAILABLE)) {
    // fromServiceError knows neither the deadline nor which service it was.
    return new DispatchError(
      e.code,
      { reason: `${m.service}: ${err.details || status[err.code]}`, timeoutMs: m.deadlineMs, retryable: true },
      { cause: err },
    );
  }
  if (!fromServer) return e;
  const details: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(e.details)) {
    if (k === 'field' && typeof v === 'string') details.field = engineFieldName(v, m.fieldRenames ?? {});
    else if (NUMERIC_DETAILS.has(k) && typeof v === 'string' && v !== '' && Number.isFinite(Number(v))) details[k] = Number(v);
    else if (BOOLEAN_DETAILS.has(k) && (v === 'true' || v === 'false')) details[k] = v === 'true';
    else details[k] = v;
  }
  return new DispatchError(e.code, details, { cause: err });
}

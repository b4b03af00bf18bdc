/**
 * Who may call an adapter service. The servers take an `authorize(metadata)`
 * callback rather than a token verifier so that adapters/ never depends on
 * gateway/: the composition root (bin/adapter.ts) builds it from the
 * gateway's verifyToken with `bearerAuthorizer`.
 */
import type { Metadata } from '@grpc/grpc-js';
import { DispatchError } from '../../engine/index.ts';
import { bearerToken } from '../../protos/rpc.ts';

/** The authenticated caller of an adapter call (structurally the gateway's Principal). */
export interface Caller {
  sub: string;
  role: string;
}

/**
 * Decides whether a call may proceed: returns the caller, or throws an
 * AuthenticationError (answered UNAUTHENTICATED) or a DispatchError such as
 * QD_ERR_PERMISSION_DENIED (answered with its own status and trailers).
 */
export type Authorize = (metadata: Metadata) => Caller | Promise<Caller>;

/** No credentials, or credentials that failed verification. */
export class AuthenticationError extends Error {
  override readonly name = 'AuthenticationError';
  constructor(readonly reason: string) {
    super(`unauthenticated: ${reason}`);
  }
}

/** What a token verifier answers; the gateway's VerifyResult has this shape. */
export type TokenCheck = { ok: true; principal: Caller } | { ok: false; reason: string };

/**
 * An Authorize that wants `authorization: Bearer <JWT>` verified by `verify`
 * and a principal of `role` (default `service`, the only role protos/README.md
 * lets call the internal services).
 */
export function bearerAuthorizer(verify: (token: string) => TokenCheck, role = 'service'): Authorize {
  return (metadata) => {
    const token = bearerToken(metadata);
    if (token === null) throw new AuthenticationError('no bearer token');
    const checked = verify(token);
    if (!checked.ok) throw new AuthenticationError(checked.reason);
    if (checked.principal.role !== role) {
      throw new DispatchError('QD_ERR_PERMISSION_DENIED', { role: checked.principal.role, action: `call ${role} APIs` });
    }
    return checked.principal;
  };
}

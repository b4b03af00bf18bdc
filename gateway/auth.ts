/**
 * Who is on the other end of a socket. Riders, customers, operations staff and
 * internal services connect with a JWT (RFC 7519); this module verifies it and
 * answers role questions. It is written on node:crypto alone so the accepted
 * token shape is exactly what is checked here and no library default (an
 * algorithm list, a lenient decoder) can widen it.
 *
 * Refusals are data: `verifyToken` returns a stable `reason` the gateway maps
 * to an error frame or close code, and never throws, whatever the client sent.
 */
import {
  createHmac,
  createPrivateKey,
  createPublicKey,
  sign as cryptoSign,
  timingSafeEqual,
  verify as cryptoVerify,
  type KeyObject,
} from 'node:crypto';

// ---------------------------------------------------------------- Types

export const Roles = ['rider', 'customer', 'operations', 'service'] as const;
export type Role = (typeof Roles)[number];

export const Algorithms = ['HS256', 'ES256', 'RS256'] as const;
export type Algorithm = (typeof Algorithms)[number];

/** The authenticated caller: `sub` is the rider id for riders and the customer id for customers. */
export interface Principal {
  sub: string;
  role: Role;
  /** Expiry, epoch seconds: a connection must not outlive it. */
  exp: number;
  jti?: string;
}

export interface AuthConfig {
  issuer: string;
  audience: string;
  /** Pinned list: a token whose header names any other algorithm is refused before its signature is looked at. */
  algorithms: Algorithm[];
  keys: { hs256Secret?: Buffer | string; publicKeyPem?: string };
  /** Tolerance for clocks that disagree, applied to exp, nbf and iat. Default 30 s. */
  clockSkewSec?: number;
  /** Longest exp - iat accepted, so a leaked token is useful for a bounded time. Default 24 h. */
  maxLifetimeSec?: number;
  /** Epoch milliseconds, like engine Clock.now(). Default Date.now. */
  now?: () => number;
}

/** Stable refusal reasons: clients and metrics match on these, never on `message`. */
export const AuthFailures = [
  'malformed',
  'algorithm',
  'signature',
  'expired',
  'notYetValid',
  'audience',
  'issuer',
  'claims',
  'lifetime',
] as const;
export type AuthFailure = (typeof AuthFailures)[number];

export type VerifyResult = { ok: true; principal: Principal } | { ok: false; reason: AuthFailure; message: string };

export interface TokenClaims {
  sub: string;
  role: Role;
  ttlSec: number;
  jti?: string;
}

// ---------------------------------------------------------------- Limits and defaults

/** Longest token accepted; real ones are a few hundred bytes, so anything larger is refused before decoding. */
export const MAX_TOKEN_LENGTH = 8192;
export const MAX_SUB_LENGTH = 64;
const MAX_JTI_LENGTH = 128;
export const DEFAULT_CLOCK_SKEW_SEC = 30;
export const DEFAULT_MAX_LIFETIME_SEC = 24 * 3600;
/** RFC 7518 §3.2: an HS256 key must be at least as long as the hash output. */
const MIN_HS256_SECRET_BYTES = 32;

/**
 * The development secret: public, in the source tree, so any token signed with
 * it proves nothing. `authConfigFromEnv` refuses it outside development.
 */
export const DEVELOPMENT_JWT_SECRET = 'quickdash-DEVELOPMENT-ONLY-jwt-secret-do-not-use-in-production';

// ---------------------------------------------------------------- Verification

const BASE64URL = /^[A-Za-z0-9_-]*$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

function fail(reason: AuthFailure, message: string): VerifyResult {
  return { ok: false, reason, message };
}

/**
 * Strict base64url: only the URL alphabet, no padding, and canonical (the
 * unused low bits of the last character are zero). Node's decoder ignores
 * those bits, so without the round trip a token with its last character
 * changed would still carry the same signature bytes and verify.
 */
function decodeSegment(s: string): Buffer | null {
  if (!BASE64URL.test(s) || s.length % 4 === 1) return null;
  const bytes = Buffer.from(s, 'base64url');
  return bytes.toString('base64url') === s ? bytes : null;
}

function decodeJsonObject(s: string): Record<string, unknown> | null {
  const bytes = decodeSegment(s);
  if (!bytes || bytes.length === 0) return null;
  let value: unknown;
  try {
    value = JSON.parse(utf8.decode(bytes));
  } catch {
    return null;
  }
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
}

/** Untrusted text for a message: short and quoted, so a client cannot flood logs through it. */
function quote(v: unknown): string {
  const s = typeof v === 'string' ? v : String(typeof v);
  return JSON.stringify(s.length > 32 ? `${s.slice(0, 32)}...` : s);
}

function own(o: Record<string, unknown>, k: string): unknown {
  return Object.hasOwn(o, k) ? o[k] : undefined;
}

const isNumericDate = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** Parsed public keys, per keys object: PEM parsing costs more than a signature check. */
const publicKeyCache = new WeakMap<object, { pem: string; key: KeyObject }>();

function publicKeyOf(keys: AuthConfig['keys']): KeyObject | null {
  const pem = keys.publicKeyPem;
  if (!pem) return null;
  const hit = publicKeyCache.get(keys);
  if (hit && hit.pem === pem) return hit.key;
  const key = createPublicKey(pem);
  publicKeyCache.set(keys, { pem, key });
  return key;
}

/**
 * Whether `key` is the right kind for `alg`. Checked on both sides so an RSA
 * key can never be used for ES256 or the reverse, and RSA keys are 2048 bits
 * or more.
 */
function keyFitsAlg(key: KeyObject, alg: 'ES256' | 'RS256'): string | null {
  if (alg === 'ES256') {
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') return 'ES256 needs a P-256 EC key';
    return null;
  }
  if (key.asymmetricKeyType !== 'rsa') return 'RS256 needs an RSA key';
  if ((key.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) return 'RS256 needs an RSA key of 2048 bits or more';
  return null;
}

function secretBytes(secret: Buffer | string): Buffer {
  return typeof secret === 'string' ? Buffer.from(secret, 'utf8') : secret;
}

/**
 * Why an HS256 secret is unusable, or null. A PEM block is refused outright:
 * that is the shape of the classic alg-confusion mistake, a public key
 * configured (or tried) as an HMAC secret.
 */
function secretProblem(secret: Buffer | string | undefined): string | null {
  if (secret === undefined) return 'no HS256 secret is configured';
  const bytes = secretBytes(secret);
  if (bytes.length < MIN_HS256_SECRET_BYTES) return `the HS256 secret is shorter than ${MIN_HS256_SECRET_BYTES} bytes`;
  if (bytes.includes('-----BEGIN')) return 'the HS256 secret is a PEM key; HS256 needs a random shared secret';
  return null;
}

function hs256(secret: Buffer | string, signingInput: string): Buffer {
  return createHmac('sha256', secretBytes(secret)).update(signingInput).digest();
}

function verifySignature(alg: Algorithm, cfg: AuthConfig, signingInput: string, sig: Buffer): VerifyResult | null {
  if (alg === 'HS256') {
    const problem = secretProblem(cfg.keys.hs256Secret);
    if (problem) return fail('algorithm', `HS256 token refused: ${problem}`);
    const expected = hs256(cfg.keys.hs256Secret!, signingInput);
    // Length is public (always 32); only the bytes are compared in constant time.
    if (sig.length !== expected.length || !timingSafeEqual(sig, expected)) return fail('signature', 'signature does not match');
    return null;
  }
  let key: KeyObject | null;
  try {
    key = publicKeyOf(cfg.keys);
  } catch {
    return fail('algorithm', `${alg} token refused: the configured public key cannot be parsed`);
  }
  if (!key) return fail('algorithm', `${alg} token refused: no public key is configured`);
  const problem = keyFitsAlg(key, alg);
  if (problem) return fail('algorithm', `${alg} token refused: ${problem}`);
  // JOSE ES256 signatures are raw r||s, 64 bytes; DER would be a different token.
  if (alg === 'ES256' && sig.length !== 64) return fail('signature', 'ES256 signature must be 64 bytes');
  let good = false;
  try {
    good =
      alg === 'ES256'
        ? cryptoVerify('sha256', Buffer.from(signingInput), { key, dsaEncoding: 'ieee-p1363' }, sig)
        : cryptoVerify('sha256', Buffer.from(signingInput), key, sig);
  } catch {
    good = false;
  }
  return good ? null : fail('signature', 'signature does not match');
}

/**
 * Verifies a compact JWS and returns the caller it names.
 *
 * Checks, in order: shape (three strict base64url segments, JSON objects,
 * under MAX_TOKEN_LENGTH) -> header alg in the pinned list, never `none` ->
 * signature with the key that alg requires (never the other one) -> iss, aud
 * (string or array) -> exp, nbf, iat against now with clock skew -> lifetime
 * -> role and sub.
 *
 * Never throws: every input, however broken, yields `{ ok: false, reason }`.
 */
export function verifyToken(token: string, cfg: AuthConfig): VerifyResult {
  try {
    return verifyUnsafe(token, cfg);
  } catch (err) {
    // Belt and braces: a case missed above must refuse, not unwind the socket handler.
    return fail('malformed', `token could not be verified: ${err instanceof Error ? err.name : 'error'}`);
  }
}

function verifyUnsafe(token: string, cfg: AuthConfig): VerifyResult {
  if (typeof token !== 'string' || token.length === 0) return fail('malformed', 'token is missing');
  if (token.length > MAX_TOKEN_LENGTH) return fail('malformed', `token is longer than ${MAX_TOKEN_LENGTH} characters`);
  const parts = token.split('.');
  if (parts.length !== 3) return fail('malformed', `token has ${parts.length} segments, a JWS has 3`);
  const [h, p, s] = parts as [string, string, string];

  const header = decodeJsonObject(h);
  if (!header) return fail('malformed', 'header is not base64url JSON object');
  const payload = decodeJsonObject(p);
  if (!payload) return fail('malformed', 'payload is not base64url JSON object');
  const sig = decodeSegment(s);
  if (!sig) return fail('malformed', 'signature is not base64url');

  const alg = own(header, 'alg');
  if (typeof alg !== 'string') return fail('algorithm', 'header names no algorithm');
  if (!(cfg.algorithms as readonly string[]).includes(alg) || !(Algorithms as readonly string[]).includes(alg)) {
    return fail('algorithm', `algorithm ${quote(alg)} is not accepted`);
  }
  const typ = own(header, 'typ');
  if (typ !== undefined && (typeof typ !== 'string' || typ.toUpperCase() !== 'JWT')) return fail('malformed', `token type ${quote(typ)} is not JWT`);
  // RFC 7515 §4.1.11: extensions we do not understand must be refused, not ignored.
  if (own(header, 'crit') !== undefined) return fail('malformed', 'critical header extensions are not supported');

  const bad = verifySignature(alg as Algorithm, cfg, `${h}.${p}`, sig);
  if (bad) return bad;

  // Only now are the claims trusted enough to report on.
  const iss = own(payload, 'iss');
  if (iss !== cfg.issuer) return fail('issuer', iss === undefined ? 'token has no issuer' : `issuer ${quote(iss)} is not accepted`);

  const aud = own(payload, 'aud');
  const audiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) && aud.every((a) => typeof a === 'string') ? (aud as string[]) : null;
  if (!audiences) return fail('audience', aud === undefined ? 'token has no audience' : 'audience must be a string or an array of strings');
  if (!audiences.includes(cfg.audience)) return fail('audience', `token is not for audience ${quote(cfg.audience)}`);

  const now = (cfg.now ?? Date.now)() / 1000;
  const skew = cfg.clockSkewSec ?? DEFAULT_CLOCK_SKEW_SEC;
  const exp = own(payload, 'exp');
  const nbf = own(payload, 'nbf');
  const iat = own(payload, 'iat');
  // A missing exp is a client bug, not a token to refresh, hence 'claims' rather than 'expired'.
  if (!isNumericDate(exp)) return fail('claims', 'token has no numeric exp');
  if (nbf !== undefined && !isNumericDate(nbf)) return fail('claims', 'nbf must be a number');
  if (iat !== undefined && !isNumericDate(iat)) return fail('claims', 'iat must be a number');
  if (now >= exp + skew) return fail('expired', 'token has expired');
  if (nbf !== undefined && nbf > now + skew) return fail('notYetValid', 'token is not valid yet (nbf)');
  if (iat !== undefined && iat > now + skew) return fail('notYetValid', 'token was issued in the future (iat)');
  const maxLifetime = cfg.maxLifetimeSec ?? DEFAULT_MAX_LIFETIME_SEC;
  // Without iat or nbf, measure from now: a token must never grant more than maxLifetime from this moment.
  const start = iat ?? nbf ?? now;
  if (exp - start > maxLifetime || exp - now > maxLifetime + skew) {
    return fail('lifetime', `token lifetime exceeds ${maxLifetime} s`);
  }

  const role = own(payload, 'role');
  if (typeof role !== 'string' || !(Roles as readonly string[]).includes(role)) {
    return fail('claims', role === undefined ? 'token has no role' : `role ${quote(role)} is unknown`);
  }
  const sub = own(payload, 'sub');
  const subProblem = subjectProblem(sub);
  if (subProblem) return fail('claims', subProblem);
  const jti = own(payload, 'jti');
  if (jti !== undefined && (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_JTI_LENGTH)) {
    return fail('claims', `jti must be a string of 1 to ${MAX_JTI_LENGTH} characters`);
  }

  const principal: Principal = { sub: sub as string, role: role as Role, exp };
  if (jti !== undefined) principal.jti = jti as string;
  return { ok: true, principal };
}

/** Ids end up in logs and actor keys: bounded, and no control characters. */
function subjectProblem(sub: unknown): string | null {
  if (typeof sub !== 'string' || sub.length === 0) return 'token has no subject';
  if (sub.length > MAX_SUB_LENGTH) return `subject is longer than ${MAX_SUB_LENGTH} characters`;
  if (/[\u0000-\u001f\u007f]/.test(sub)) return 'subject contains control characters';
  return null;
}

// ---------------------------------------------------------------- Signing

/**
 * Issues a token for `claims.sub` valid for `claims.ttlSec` seconds from cfg.now().
 * The algorithm follows the key: with `privateKeyPem`, ES256 for a P-256 key
 * or RS256 for an RSA key; without one, HS256 with keys.hs256Secret. The
 * chosen algorithm must be in cfg.algorithms, so a token is never issued that
 * the same config would refuse.
 * @throws RangeError for a bad sub, role, ttl or jti; Error when no usable key fits the config.
 */
export function signToken(claims: TokenClaims, cfg: AuthConfig & { privateKeyPem?: string }): string {
  const subProblem = subjectProblem(claims.sub);
  if (subProblem) throw new RangeError(`cannot sign: ${subProblem}`);
  if (!(Roles as readonly string[]).includes(claims.role)) throw new RangeError(`cannot sign: role ${quote(claims.role)} is unknown`);
  const maxLifetime = cfg.maxLifetimeSec ?? DEFAULT_MAX_LIFETIME_SEC;
  if (!Number.isInteger(claims.ttlSec) || claims.ttlSec < 1 || claims.ttlSec > maxLifetime) {
    throw new RangeError(`cannot sign: ttlSec must be an integer in [1, ${maxLifetime}], got ${claims.ttlSec}`);
  }
  if (claims.jti !== undefined && (claims.jti.length === 0 || claims.jti.length > MAX_JTI_LENGTH)) {
    throw new RangeError(`cannot sign: jti must be 1 to ${MAX_JTI_LENGTH} characters`);
  }

  let alg: Algorithm;
  let privateKey: KeyObject | null = null;
  if (cfg.privateKeyPem) {
    privateKey = createPrivateKey(cfg.privateKeyPem);
    alg = privateKey.asymmetricKeyType === 'ec' ? 'ES256' : 'RS256';
    const problem = keyFitsAlg(privateKey, alg);
    if (problem) throw new Error(`cannot sign: ${problem}`);
  } else {
    alg = 'HS256';
    const problem = secretProblem(cfg.keys.hs256Secret);
    if (problem) throw new Error(`cannot sign: ${problem}`);
  }
  if (!cfg.algorithms.includes(alg)) throw new Error(`cannot sign: ${alg} is not in the configured algorithms (${cfg.algorithms.join(', ')})`);

  const iat = Math.floor((cfg.now ?? Date.now)() / 1000);
  const payload: Record<string, unknown> = {
    iss: cfg.issuer,
    aud: cfg.audience,
    sub: claims.sub,
    role: claims.role,
    iat,
    exp: iat + claims.ttlSec,
  };
  if (claims.jti !== undefined) payload.jti = claims.jti;
  const signingInput = `${b64json({ alg, typ: 'JWT' })}.${b64json(payload)}`;
  const sig =
    alg === 'HS256'
      ? hs256(cfg.keys.hs256Secret!, signingInput)
      : alg === 'ES256'
        ? cryptoSign('sha256', Buffer.from(signingInput), { key: privateKey!, dsaEncoding: 'ieee-p1363' })
        : cryptoSign('sha256', Buffer.from(signingInput), privateKey!);
  return `${signingInput}.${sig.toString('base64url')}`;
}

function b64json(v: unknown): string {
  return Buffer.from(JSON.stringify(v), 'utf8').toString('base64url');
}

// ---------------------------------------------------------------- Configuration

/** The shared development config for `npm start` and tests. Its secret is public: never use it in production. */
export function developmentAuthConfig(): AuthConfig {
  return {
    issuer: 'quickdash',
    audience: 'quickdash-gateway',
    algorithms: ['HS256'],
    keys: { hs256Secret: DEVELOPMENT_JWT_SECRET },
  };
}

/** NODE_ENV=development or test: the only environments allowed to fall back to the development secret. */
export function isDevelopmentEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.NODE_ENV === 'development' || env.NODE_ENV === 'test';
}

/**
 * Gateway auth config from the environment:
 *   QD_JWT_SECRET      HS256 secret, 32+ bytes; required when HS256 is accepted, except in development
 *   QD_JWT_PUBLIC_KEY  PEM public key; required when ES256 or RS256 is accepted
 *   QD_JWT_ISSUER      default 'quickdash'
 *   QD_JWT_AUDIENCE    default 'quickdash-gateway'
 *   QD_JWT_ALGS        comma-separated subset of HS256,ES256,RS256; default 'HS256'
 * In development (NODE_ENV=development or test) a missing secret falls back to the development one.
 * @throws Error naming the variable when a value is missing or unusable.
 */
export function authConfigFromEnv(env: NodeJS.ProcessEnv = process.env): AuthConfig {
  const dev = isDevelopmentEnv(env);
  const algorithms = (env.QD_JWT_ALGS ?? 'HS256')
    .split(',')
    .map((a) => a.trim())
    .filter((a) => a.length > 0);
  if (algorithms.length === 0) throw new Error('QD_JWT_ALGS is empty: list at least one of HS256, ES256, RS256');
  for (const a of algorithms) {
    if (!(Algorithms as readonly string[]).includes(a)) throw new Error(`QD_JWT_ALGS: ${quote(a)} is not one of HS256, ES256, RS256`);
  }
  const cfg: AuthConfig = {
    issuer: env.QD_JWT_ISSUER || 'quickdash',
    audience: env.QD_JWT_AUDIENCE || 'quickdash-gateway',
    algorithms: [...new Set(algorithms)] as Algorithm[],
    keys: {},
  };

  if (cfg.algorithms.includes('HS256')) {
    const secret = env.QD_JWT_SECRET;
    if (!secret) {
      if (!dev) {
        throw new Error(
          'QD_JWT_SECRET is not set: the gateway needs a random secret of 32+ bytes to verify HS256 tokens ' +
            '(or set NODE_ENV=development to use the public development secret)',
        );
      }
      cfg.keys.hs256Secret = DEVELOPMENT_JWT_SECRET;
    } else {
      if (secret === DEVELOPMENT_JWT_SECRET && !dev) throw new Error('QD_JWT_SECRET is the public development secret; set a private one');
      const problem = secretProblem(secret);
      if (problem) throw new Error(`QD_JWT_SECRET: ${problem}`);
      cfg.keys.hs256Secret = secret;
    }
  }

  const asymmetric = cfg.algorithms.filter((a): a is 'ES256' | 'RS256' => a !== 'HS256');
  if (asymmetric.length > 0) {
    const pem = env.QD_JWT_PUBLIC_KEY;
    if (!pem) throw new Error(`QD_JWT_PUBLIC_KEY is not set: ${asymmetric.join(', ')} tokens need a PEM public key`);
    let key: KeyObject;
    try {
      key = createPublicKey(pem);
    } catch (err) {
      throw new Error('QD_JWT_PUBLIC_KEY is not a PEM public key', { cause: err });
    }
    // Both ES256 and RS256 with one key cannot work: one of them would always be refused.
    for (const a of asymmetric) {
      const problem = keyFitsAlg(key, a);
      if (problem) throw new Error(`QD_JWT_PUBLIC_KEY does not fit QD_JWT_ALGS: ${problem}`);
    }
    cfg.keys.publicKeyPem = pem;
  }
  return cfg;
}

// ---------------------------------------------------------------- Roles

/** Which roles may do what. Ownership (whose order, which rider) is checked beside the data: see canFollowOrder. */
const permissions = {
  /** Rider commands over the rider socket (accept offer, pickup, deliver, GPS). */
  'rider.command': ['rider'],
  /** Follow an order's live status; customers only their own, see canFollowOrder. */
  'order.follow': ['customer', 'operations'],
  /** The operations live feed (all orders, all riders). */
  'ops.feed': ['operations'],
  /** Internal service-to-service calls (gRPC). */
  'service.call': ['service'],
} as const satisfies Record<string, readonly Role[]>;

export type Action = keyof typeof permissions;
export const Actions = Object.keys(permissions) as Action[];

/** Whether `principal`'s role may attempt `action` at all. */
export function can(principal: Principal, action: Action): boolean {
  const roles: readonly Role[] | undefined = Object.hasOwn(permissions, action) ? permissions[action] : undefined;
  return roles !== undefined && roles.includes(principal.role);
}

/** Operations may follow any order; a customer only orders placed under their own id. */
export function canFollowOrder(principal: Principal, order: { customerId: string }): boolean {
  if (principal.role === 'operations') return true;
  return principal.role === 'customer' && principal.sub === order.customerId;
}

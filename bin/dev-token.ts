/**
 * `npm run token`: prints a JWT to connect to a local gateway as a rider,
 * customer, operations user or service.
 *
 *   npm run token -- --role rider --sub rider-1 [--ttl 3600] [--jti ID]
 *
 * Signs with authConfigFromEnv() when QD_JWT_SECRET is set (so the token
 * matches a gateway started with the same environment), otherwise with the
 * public development secret, and says so on stderr. The token alone goes to
 * stdout so it can be captured: TOKEN=$(npm run -s token -- --role rider --sub rider-1)
 * Exit 2 on bad arguments, 1 when the environment's config cannot sign.
 */
import { parseArgs } from 'node:util';
import {
  authConfigFromEnv,
  developmentAuthConfig,
  DEFAULT_MAX_LIFETIME_SEC,
  MAX_SUB_LENGTH,
  Roles,
  signToken,
  type AuthConfig,
  type Role,
} from '../gateway/auth.ts';

const usage = 'usage: npm run token -- --role rider|customer|operations|service --sub ID [--ttl SECONDS] [--jti ID]';

function usageError(message: string): never {
  console.error(`dev-token: ${message}\n${usage}`);
  process.exit(2);
}

let values: { role?: string; sub?: string; ttl?: string; jti?: string; help?: boolean };
try {
  ({ values } = parseArgs({
    options: {
      role: { type: 'string' },
      sub: { type: 'string' },
      ttl: { type: 'string', default: '3600' },
      jti: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (err) {
  usageError(err instanceof Error ? err.message : String(err));
}

if (values.help) {
  console.log(usage);
  process.exit(0);
}

const role = values.role;
if (role === undefined) usageError('--role is required');
if (!(Roles as readonly string[]).includes(role)) usageError(`--role must be one of ${Roles.join(', ')}, got ${JSON.stringify(role)}`);
const sub = values.sub;
if (sub === undefined || sub.length === 0) usageError('--sub is required (the rider id, customer id, or a name for operations/service)');
if (sub.length > MAX_SUB_LENGTH) usageError(`--sub must be at most ${MAX_SUB_LENGTH} characters`);

let cfg: AuthConfig;
if (process.env.QD_JWT_SECRET) {
  try {
    cfg = authConfigFromEnv();
  } catch (err) {
    console.error(`dev-token: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
} else {
  cfg = developmentAuthConfig();
  console.error('dev-token: QD_JWT_SECRET is not set; signing with the public DEVELOPMENT secret (developmentAuthConfig())');
}

const maxTtl = cfg.maxLifetimeSec ?? DEFAULT_MAX_LIFETIME_SEC;
const ttlSec = Number(values.ttl);
if (!Number.isInteger(ttlSec) || ttlSec < 1 || ttlSec > maxTtl) usageError(`--ttl must be an integer in [1, ${maxTtl}] seconds, got ${values.ttl}`);
if (values.jti !== undefined && values.jti.length === 0) usageError('--jti must not be empty');

try {
  const token = signToken({ sub, role: role as Role, ttlSec, ...(values.jti !== undefined ? { jti: values.jti } : {}) }, cfg);
  process.stdout.write(`${token}\n`);
} catch (err) {
  console.error(`dev-token: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(err instanceof RangeError ? 2 : 1);
}

/**
 * `npm run -s adapter`: one adapter (catalog, payments or persistence) served
 * over gRPC on Postgres, for nodes that use it as a separate service.
 *
 *   npm run -s adapter -- --service catalog|payments|persistence
 *        [--host H] [--port N] [--postgres URL] [--schema S]
 *        [--tls-cert FILE --tls-key FILE] [--seed-demo]
 *   npm run -s adapter -- --probe --service S [--host H] [--port N] [--tls-cert FILE]
 *
 * Postgres: --postgres, else $QD_POSTGRES_URL. Ports default to 50061
 * (catalog), 50062 (payments), 50063 (persistence); 0 picks a free one.
 * Callers need a JWT with role `service`, verified as the gateway does
 * (QD_JWT_SECRET / QD_JWT_PUBLIC_KEY; without either, the public development
 * secret, with a warning). Payments needs QD_RAZORPAY_KEY_ID and
 * QD_RAZORPAY_KEY_SECRET (QD_RAZORPAY_BASE_URL points it at a fake).
 * --seed-demo (catalog) loads the demo catalog into an empty catalog (a
 * catalog holding any store is left as it is).
 * --probe asks a running adapter's grpc.health.v1 service and exits 0 when it
 * is serving, 1 otherwise (container health checks).
 *
 * Logs are pino JSON lines on stdout; once serving it logs
 * {"msg":"adapter listening","service":...,"port":...}. SIGTERM / SIGINT
 * stop taking calls, let those in flight finish, close the pool, exit 0.
 * Exit 2 on bad arguments or missing configuration, 1 when start-up fails.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pg from 'pg';
import pino from 'pino';
import type { EventStore, PaymentsPort } from '../engine/index.ts';
import { PgClient, SqlEventStore, DEFAULT_SCHEMA } from '../adapters/sql/index.ts';
import { DEFAULT_CATALOG_SCHEMA, SqlCatalog, loadDemoCatalog } from '../adapters/catalog/index.ts';
import { DEFAULT_PAYMENTS_SCHEMA, RazorpayPayments } from '../adapters/razorpay/index.ts';
import { SERVICE_NAMES, bearerAuthorizer, checkHealth, startAdapterServer, type AdapterService } from '../adapters/grpc/index.ts';
import { authConfigFromEnv, developmentAuthConfig, verifyToken, type AuthConfig } from '../gateway/auth.ts';

const usage =
  'usage: npm run -s adapter -- --service catalog|payments|persistence [--host H] [--port N] [--postgres URL] [--schema S] ' +
  '[--tls-cert FILE --tls-key FILE] [--seed-demo]\n' +
  '       npm run -s adapter -- --probe --service S [--host H] [--port N] [--tls-cert FILE]';

const DEFAULT_PORTS = { catalog: 50061, payments: 50062, persistence: 50063 } as const;
type ServiceName = keyof typeof DEFAULT_PORTS;

function die(message: string): never {
  console.error(`adapter: ${message}\n${usage}`);
  process.exit(2);
}

let args: {
  service?: string;
  host: string;
  port?: string;
  postgres?: string;
  schema?: string;
  'tls-cert'?: string;
  'tls-key'?: string;
  'seed-demo': boolean;
  probe: boolean;
  help: boolean;
};
try {
  ({ values: args } = parseArgs({
    options: {
      service: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string' },
      postgres: { type: 'string' },
      schema: { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'seed-demo': { type: 'boolean', default: false },
      probe: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  }) as { values: typeof args });
} catch (err) {
  die((err as Error).message);
}
if (args.help) {
  console.log(usage);
  process.exit(0);
}

const service = args.service as ServiceName | undefined;
if (!service || !(service in DEFAULT_PORTS)) die(`--service must be catalog, payments or persistence, got ${args.service ?? 'nothing'}`);
const port = args.port === undefined ? DEFAULT_PORTS[service] : Number(args.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) die(`--port must be 0..65535, got ${args.port}`);
if ((args['tls-cert'] === undefined) !== (args['tls-key'] === undefined) && !args.probe) die('--tls-cert and --tls-key go together');

function readPem(flag: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    die(`${flag} ${path}: ${(err as Error).message}`);
  }
}

if (args.probe) {
  // A probe runs beside the server (same container): loopback unless told otherwise, and
  // the certificate, when TLS is on, is trusted as it is (it names the service, not 127.0.0.1).
  const host = args.host === '0.0.0.0' || args.host === '::' ? '127.0.0.1' : args.host;
  const tlsCert = args['tls-cert'];
  const ok = await checkHealth({
    address: `${host.includes(':') ? `[${host}]` : host}:${port}`,
    service: SERVICE_NAMES[service],
    timeoutMs: 3000,
    ...(tlsCert ? { tls: { ca: readPem('--tls-cert', tlsCert) }, skipHostnameCheck: true } : {}),
  });
  process.exit(ok ? 0 : 1);
}

const log = pino({ level: process.env.QD_LOG_LEVEL ?? 'info' });

const postgres = args.postgres ?? process.env.QD_POSTGRES_URL;
if (!postgres) die('a Postgres URL is required: --postgres URL or QD_POSTGRES_URL');
if (args['seed-demo'] && service !== 'catalog') die('--seed-demo is for --service catalog');

let keyId: string | undefined;
let keySecret: string | undefined;
if (service === 'payments') {
  keyId = process.env.QD_RAZORPAY_KEY_ID;
  keySecret = process.env.QD_RAZORPAY_KEY_SECRET;
  if (!keyId || !keySecret) {
    console.error(
      'adapter: the payments service needs Razorpay API keys: set QD_RAZORPAY_KEY_ID and QD_RAZORPAY_KEY_SECRET ' +
        '(and QD_RAZORPAY_BASE_URL to use a fake). For local development, run the node without --payments-url: ' +
        'it uses its embedded fake Razorpay.',
    );
    process.exit(2);
  }
}

let auth: AuthConfig;
try {
  if (process.env.QD_JWT_SECRET || process.env.QD_JWT_PUBLIC_KEY) auth = authConfigFromEnv();
  else {
    auth = developmentAuthConfig();
    log.warn(
      { service, auth: 'development' },
      'QD_JWT_SECRET and QD_JWT_PUBLIC_KEY are not set: accepting tokens signed with the PUBLIC development secret; anyone can call this service. Set QD_JWT_SECRET outside development.',
    );
  }
} catch (err) {
  die((err as Error).message);
}

const tls =
  args['tls-cert'] && args['tls-key'] ? { cert: readPem('--tls-cert', args['tls-cert']), key: readPem('--tls-key', args['tls-key']) } : undefined;

const pool = new pg.Pool({ connectionString: postgres, max: Number(process.env.QD_POSTGRES_POOL ?? 10) });
// Without a listener a dropped idle connection would crash the process; calls report it as unavailable.
pool.on('error', (err) => log.error({ err }, 'idle database connection failed'));
const sql = new PgClient(pool);

let backend: AdapterService;
let schema: string;
try {
  if (service === 'catalog') {
    schema = args.schema ?? DEFAULT_CATALOG_SCHEMA;
    const catalog = new SqlCatalog(sql, { schema, logger: log });
    await catalog.init();
    // Only into an empty catalog: reloading over live data would unpause stores, reset prices and hours,
    // and bring sold units back on every restart.
    if (args['seed-demo']) {
      if ((await catalog.counts()).stores === 0) log.info({ summary: await loadDemoCatalog(catalog) }, 'demo catalog loaded');
      else log.info('catalog not empty: demo catalog not loaded');
    }
    backend = { catalog };
  } else if (service === 'payments') {
    schema = args.schema ?? DEFAULT_PAYMENTS_SCHEMA;
    const payments: PaymentsPort & { init(): Promise<void> } = new RazorpayPayments({
      keyId: keyId!,
      keySecret: keySecret!,
      sql,
      schema,
      logger: log,
      ...(process.env.QD_RAZORPAY_BASE_URL ? { baseUrl: process.env.QD_RAZORPAY_BASE_URL } : {}),
    });
    await payments.init();
    backend = { payments };
  } else {
    schema = args.schema ?? DEFAULT_SCHEMA;
    const store: EventStore = new SqlEventStore(sql, { schema });
    await store.init();
    backend = { store };
  }
} catch (err) {
  log.error({ err }, 'adapter failed to start');
  await pool.end().catch(() => {});
  process.exit(err instanceof RangeError ? 2 : 1);
}

const server = await startAdapterServer({
  services: [backend],
  host: args.host,
  port,
  tls,
  authorize: bearerAuthorizer((token) => verifyToken(token, auth), 'service'),
  logger: log,
  // Serving means the database answers too: a probe should not send work to an adapter that cannot do it.
  ready: () => pool.query('SELECT 1'),
}).catch(async (err: unknown) => {
  log.error({ err, host: args.host, port }, 'adapter could not listen');
  await pool.end().catch(() => {});
  process.exit(1);
});
log.info({ service, port: server.port, host: args.host, schema, tls: tls !== undefined }, 'adapter listening');

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'shutting down');
  await server.close();
  await pool.end().catch((err: unknown) => log.warn({ err }, 'closing the database pool failed'));
  log.info('stopped');
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));

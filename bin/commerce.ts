/**
 * The node's commerce side, composed: catalog, payments and the order intake
 * that joins them to the engine. On the embedded defaults everything runs in
 * this process on one PGlite database (catalog and payments ledger in their
 * own schemas) with the demo catalog loaded, and payments go to a local fake
 * Razorpay that signs its webhooks like the real one. Razorpay keys in the
 * environment switch to the real service.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';
import type { Logger } from 'pino';
import { DispatchError, OrderIntake, type CatalogPort, type ErrorCode, type Clock, type DispatchEngine, type PaymentsPort } from '../engine/index.ts';
import { PgClient, PgliteClient, type SqlClient } from '../adapters/sql/index.ts';
import { SqlCatalog, loadDemoCatalog } from '../adapters/catalog/index.ts';
import { FakeRazorpay, RazorpayPayments, RazorpayWebhooks } from '../adapters/razorpay/index.ts';

const TRANSIENT: ReadonlySet<ErrorCode> = new Set(['QD_ERR_STORE_UNAVAILABLE', 'QD_ERR_SHUTTING_DOWN', 'QD_ERR_PAYMENT_PROVIDER', 'QD_ERR_PAYMENT_TIMEOUT']);

export interface CommerceOptions {
  engine: DispatchEngine;
  clock: Clock;
  logger: Logger;
  /** Postgres URL; otherwise embedded PGlite in `dataDir` (or in memory when undefined). */
  postgres?: string;
  dataDir?: string;
  /** Load the demo catalog (embedded default: yes when the catalog is empty). */
  seedDemo?: boolean;
  env?: NodeJS.ProcessEnv;
  /** Catalog and payments running as separate services (npm run adapter) instead of in this process. */
  remote?: { catalog?: CatalogPort; payments?: PaymentsPort };
}

export interface Commerce {
  catalog: CatalogPort;
  payments: PaymentsPort;
  intake: OrderIntake;
  webhooks: RazorpayWebhooks;
  /** The local fake Razorpay when no keys are configured, so operators can complete test payments. */
  fakeRazorpay: FakeRazorpay | null;
  /** Tells the fake where to deliver webhooks once the gateway knows its port. */
  setWebhookUrl(url: string): void;
  close(): Promise<void>;
}

export async function openCommerce(options: CommerceOptions): Promise<Commerce> {
  const env = options.env ?? process.env;
  const log = options.logger;
  let sql: SqlClient;
  if (options.postgres) {
    const pool = new pg.Pool({ connectionString: options.postgres, max: 10 });
    pool.on('error', (err) => log.error({ err }, 'commerce database connection failed'));
    sql = new PgClient(pool);
  } else {
    if (options.dataDir) mkdirSync(options.dataDir, { recursive: true });
    sql = new PgliteClient(await PGlite.create(options.dataDir ? { dataDir: options.dataDir } : {}));
  }
  let catalog: CatalogPort;
  if (options.remote?.catalog) catalog = options.remote.catalog;
  else {
    const local = new SqlCatalog(sql, { logger: log });
    await local.init();
    if (options.seedDemo ?? !options.postgres) {
      const counts = await local.counts();
      if (counts.stores === 0) log.info({ summary: await loadDemoCatalog(local) }, 'demo catalog loaded');
    }
    catalog = local;
  }

  let fake: FakeRazorpay | null = null;
  let keyId = env.QD_RAZORPAY_KEY_ID;
  let keySecret = env.QD_RAZORPAY_KEY_SECRET;
  let webhookSecret = env.QD_RAZORPAY_WEBHOOK_SECRET;
  let baseUrl = env.QD_RAZORPAY_BASE_URL;
  if (!keyId || !keySecret) {
    keyId = 'rzp_test_quickdashlocal';
    keySecret = randomBytes(18).toString('base64url');
    webhookSecret = randomBytes(18).toString('base64url');
    fake = await FakeRazorpay.start({ keyId, keySecret, webhookSecret });
    baseUrl = fake.url;
    log.warn({ razorpay: fake.url }, 'QD_RAZORPAY_KEY_ID is not set: payments go to a local fake Razorpay');
  } else if (!webhookSecret) {
    throw new Error('QD_RAZORPAY_WEBHOOK_SECRET must be set with the Razorpay keys: webhooks cannot be verified without it');
  }
  // The webhook ledger lives beside the payments ledger: with a remote payments service both use
  // the same Postgres schema, so an event taken in here is known there.
  const local = new RazorpayPayments({ keyId, keySecret, sql, logger: log, ...(baseUrl ? { baseUrl } : {}) });
  await local.init();
  const payments: PaymentsPort = options.remote?.payments ?? local;
  const intake = new OrderIntake({ engine: options.engine, catalog, payments, clock: options.clock, logger: log });
  const webhooks = new RazorpayWebhooks({
    secret: webhookSecret!,
    sql,
    logger: log,
    // Acted on before Razorpay is answered: if the engine refuses for a transient reason, Razorpay retries.
    onEvent: async (event) => {
      try {
        if (event.kind === 'captured') await intake.paymentCaptured(event.orderId, event.paymentId);
        else if (event.kind === 'failed') await intake.paymentFailed(event.orderId, event.reason);
      } catch (err) {
        // A refusal that a retry cannot change (unknown order, already cancelled) is logged and
        // acknowledged; only transient failures send Razorpay back to retry.
        if (err instanceof DispatchError && !TRANSIENT.has(err.code)) {
          log.warn({ err, orderId: event.orderId, kind: event.kind, code: err.code }, 'payment event refused by the engine');
          return;
        }
        throw err;
      }
    },
  });
  intake.start();
  return {
    catalog,
    payments,
    intake,
    webhooks,
    fakeRazorpay: fake,
    setWebhookUrl(url) {
      if (fake) fake.webhookUrl = url;
    },
    async close() {
      intake.stop();
      await fake?.close();
      await sql.close();
    },
  };
}

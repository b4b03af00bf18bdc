/**
 * One gRPC server hosting any of the adapter services, with the standard
 * health service beside them for probes.
 */
import { Server, ServerCredentials, status, type ServerUnaryCall, type ServiceDefinition, type UntypedServiceImplementation, type sendUnaryData } from '@grpc/grpc-js';
import pino, { type Logger } from 'pino';
import type { EventStore, PaymentsPort } from '../../engine/index.ts';
import type { SqlCatalog } from '../catalog/index.ts';
import { PaymentsServiceService } from '../../protos/gen/quickdash/v1/payments.ts';
import { PersistenceServiceService } from '../../protos/gen/quickdash/v1/persistence.ts';
import type { Authorize } from './authorize.ts';
import { CatalogAdapterService, HealthService, ServingStatus, type HealthCheckRequest, type HealthCheckResponse } from './definitions.ts';
import { catalogServer, paymentsServer, persistenceServer } from './servers.ts';

/** What to serve: a catalog, a payments port or an event store (one entry each). */
export type AdapterService = { catalog: SqlCatalog } | { payments: PaymentsPort } | { store: EventStore };

export interface AdapterTls {
  /** PEM certificate chain and private key of the server. */
  cert: Buffer | string;
  key: Buffer | string;
  /** PEM CA bundle: when set, clients must present a certificate it signed (mutual TLS). */
  clientCa?: Buffer | string;
}

export interface AdapterServerOptions {
  services: AdapterService[];
  /** Default 127.0.0.1: listening on every interface is a deliberate choice (0.0.0.0 in a container). */
  host?: string;
  /** 0 (default) picks a free port; the chosen one is returned. */
  port?: number;
  /** Without it the server speaks plain text: for loopback or a trusted network only (tokens travel in the clear). */
  tls?: AdapterTls;
  authorize: Authorize;
  logger?: Logger;
  /**
   * Health: resolves while the backend can serve (e.g. a `SELECT 1`). Probes
   * see NOT_SERVING while it rejects or takes over 2 s. Default: always ready.
   */
  ready?: () => Promise<unknown>;
  /** Largest message accepted (default 64 MiB: one Append carries a whole group commit). */
  maxMessageBytes?: number;
  /** How long close() lets calls in flight finish before cutting them (default 5,000 ms). */
  shutdownGraceMs?: number;
}

export interface AdapterServer {
  port: number;
  /** Stops taking calls, lets those in flight finish within the grace period, then cuts the rest. */
  close(): Promise<void>;
}

const READY_TIMEOUT_MS = 2000;

export const SERVICE_NAMES = {
  catalog: 'quickdash.v1.CatalogService',
  payments: 'quickdash.v1.PaymentsService',
  persistence: 'quickdash.v1.PersistenceService',
} as const;

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

export async function startAdapterServer(options: AdapterServerOptions): Promise<AdapterServer> {
  if (options.services.length === 0) throw new RangeError('startAdapterServer: name at least one service');
  const log = (options.logger ?? pino({ level: process.env.QD_LOG_LEVEL ?? 'warn' })).child({ component: 'grpc-adapter' });
  const maxBytes = options.maxMessageBytes ?? 64 << 20;
  const server = new Server({ 'grpc.max_receive_message_length': maxBytes, 'grpc.max_send_message_length': maxBytes });
  const names: string[] = [];
  const serverOptions = { authorize: options.authorize, logger: options.logger };
  const add = (name: string, def: ServiceDefinition, impl: UntypedServiceImplementation) => {
    if (names.includes(name)) throw new RangeError(`startAdapterServer: ${name} named twice`);
    server.addService(def, impl);
    names.push(name);
  };
  for (const s of options.services) {
    if ('catalog' in s) add(SERVICE_NAMES.catalog, CatalogAdapterService, catalogServer(s.catalog, serverOptions));
    else if ('payments' in s) add(SERVICE_NAMES.payments, PaymentsServiceService, paymentsServer(s.payments, serverOptions));
    else add(SERVICE_NAMES.persistence, PersistenceServiceService, persistenceServer(s.store, serverOptions));
  }

  let closing = false;
  // Probes carry no token, so health is outside authorize; it tells nothing but serving or not.
  const check = (call: ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, callback: sendUnaryData<HealthCheckResponse>) => {
    const service = call.request.service;
    if (service !== '' && !names.includes(service)) {
      callback({ code: status.NOT_FOUND, details: `unknown service ${service}` });
      return;
    }
    if (closing) {
      callback(null, { status: ServingStatus.NOT_SERVING });
      return;
    }
    withTimeout(Promise.resolve().then(() => options.ready?.()), READY_TIMEOUT_MS).then(
      () => callback(null, { status: ServingStatus.SERVING }),
      (err: unknown) => {
        log.warn({ err }, 'health check: backend not ready');
        callback(null, { status: ServingStatus.NOT_SERVING });
      },
    );
  };
  server.addService(HealthService, { check });

  const host = options.host ?? '127.0.0.1';
  const credentials = options.tls
    ? ServerCredentials.createSsl(
        options.tls.clientCa ? Buffer.from(options.tls.clientCa) : null,
        [{ cert_chain: Buffer.from(options.tls.cert), private_key: Buffer.from(options.tls.key) }],
        options.tls.clientCa !== undefined,
      )
    : ServerCredentials.createInsecure();
  const target = `${host.includes(':') ? `[${host}]` : host}:${options.port ?? 0}`;
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(target, credentials, (err, p) => (err ? reject(err) : resolve(p))));
  log.debug({ services: names, host, port, tls: options.tls !== undefined }, 'adapter server bound');

  const grace = options.shutdownGraceMs ?? 5000;
  let closed: Promise<void> | null = null;
  return {
    port,
    close() {
      closing = true;
      closed ??= new Promise<void>((resolve) => {
        // Streams (LoadLive) may outlast the grace period; then they are cut and the client sees UNAVAILABLE.
        const timer = setTimeout(() => {
          log.warn({ graceMs: grace }, 'calls still running after the grace period: cut');
          server.forceShutdown();
          resolve();
        }, grace);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      return closed;
    },
  };
}

/** The parent's side of a server under test (server-child.ts), and the file descriptor limit that bounds a run. */
import { readFileSync } from 'node:fs';
import type { OrderSpec } from '../../engine/index.ts';
import { RpcChild } from '../loadgen/rpc.ts';
import type { ServerOptions, ServerStats } from './server-child.ts';

export interface ServerUnderTest {
  kind: ServerOptions['kind'];
  port: number;
  pid: number | undefined;
  stats(): Promise<ServerStats>;
  /** Stats after full garbage collections. */
  gcStats(): Promise<ServerStats>;
  createOrders(orders: Array<Pick<OrderSpec, 'orderId' | 'customerId' | 'pickup' | 'dropoff'>>): Promise<number>;
  stop(): Promise<void>;
}

/** `nodeArgs` are added to the child's (for example --cpu-prof to profile the server under load). */
export async function startServer(options: ServerOptions, nodeArgs: string[] = []): Promise<ServerUnderTest> {
  const child = RpcChild.start(new URL('./server-child.ts', import.meta.url), {
    nodeArgs: ['--expose-gc', ...nodeArgs],
    what: `${options.kind} server`,
  });
  let port: number;
  try {
    port = await child.call<number>('start', options);
  } catch (err) {
    await child.stop();
    throw err;
  }
  return {
    kind: options.kind,
    port,
    pid: child.pid,
    stats: () => child.call<ServerStats>('stats'),
    gcStats: () => child.call<ServerStats>('gc'),
    createOrders: (orders) => child.call<number>('createOrders', orders),
    stop: () => child.stop('stop', 30_000),
  };
}

/** This process's soft RLIMIT_NOFILE (children inherit it); Infinity when it cannot be read. */
export function openFileLimit(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.trim().split(/\s+/)[3];
    return soft === undefined || soft === 'unlimited' ? Infinity : Number(soft);
  } catch {
    return Infinity;
  }
}

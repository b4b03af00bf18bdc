/**
 * Request/reply over a forked child's IPC channel, for the load generator's
 * socket processes and the benchmarks' servers under test. Each socket-holding
 * part runs in its own process because file descriptors are per process
 * (RLIMIT_NOFILE), and so its CPU is measured apart from the others.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

interface Request {
  id: number;
  cmd: string;
  args: unknown;
}
type Reply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };

/** tsx's loader, resolved from here so a child starts the same whatever the working directory. */
const TSX = import.meta.resolve('tsx');

export class RpcChild {
  readonly #child: ChildProcess;
  readonly #waiters = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #next = 1;
  #exited: Error | null = null;
  readonly exited: Promise<number | null>;

  private constructor(child: ChildProcess, what: string) {
    this.#child = child;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.#exited = new Error(`${what} exited (${signal ?? code})`);
        for (const w of this.#waiters.values()) w.reject(this.#exited);
        this.#waiters.clear();
        resolve(code);
      });
    });
    child.on('message', (m: Reply) => {
      const w = this.#waiters.get(m.id);
      if (!w) return;
      this.#waiters.delete(m.id);
      if (m.ok) w.resolve(m.result);
      else w.reject(new Error(m.error));
    });
  }

  /**
   * Forks `file` (a .ts module) under tsx with the 'advanced' serialization,
   * so typed arrays cross the channel as themselves. stdout goes to our stderr:
   * a bench's stdout is its JSON result only.
   */
  static start(file: string | URL, options: { args?: string[]; nodeArgs?: string[]; what?: string } = {}): RpcChild {
    const path = file instanceof URL ? fileURLToPath(file) : file;
    const child = fork(path, options.args ?? [], {
      execArgv: [...(options.nodeArgs ?? []), '--import', TSX],
      serialization: 'advanced',
      stdio: ['ignore', 2, 'inherit', 'ipc'],
    });
    return new RpcChild(child, options.what ?? path);
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  call<T = unknown>(cmd: string, args?: unknown): Promise<T> {
    if (this.#exited) return Promise.reject(this.#exited);
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#waiters.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#child.send({ id, cmd, args } satisfies Request);
    });
  }

  /** Asks the child to stop with `cmd` (if given), then waits for it to exit; kills it after `graceMs`. */
  async stop(cmd?: string, graceMs = 10_000): Promise<void> {
    if (this.#exited) return;
    if (cmd) await this.call(cmd).catch(() => undefined);
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), graceMs);
    if (this.#child.connected) this.#child.disconnect();
    await this.exited;
    clearTimeout(timer);
  }
}

/** The child's side: answers each request with its handler's result; exits when the parent goes away. */
export function serveRpc(handlers: Record<string, (args: never) => unknown>): void {
  if (!process.send) throw new Error('serveRpc needs an IPC channel: start this module with RpcChild.start');
  process.on('message', async (m: Request) => {
    let reply: Reply;
    try {
      const h = handlers[m.cmd];
      if (!h) throw new Error(`unknown command ${m.cmd}`);
      reply = { id: m.id, ok: true, result: await h(m.args as never) };
    } catch (err) {
      reply = { id: m.id, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) };
    }
    process.send!(reply);
  });
  // An orphan would hold its sockets (and the port) until someone noticed.
  process.once('disconnect', () => process.exit(0));
}

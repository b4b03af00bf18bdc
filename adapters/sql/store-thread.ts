/**
 * Runs an embedded (PGlite) event store in a worker thread and answers the
 * EventStore calls of the thread that made it. PGlite executes SQL on the
 * thread that calls it; here that thread is this worker, so the engine's
 * coordinator keeps its event loop while a group commit is written.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createEmbeddedStore } from './pglite.ts';

interface Call {
  id: number;
  method: 'init' | 'append' | 'readStream' | 'saveSnapshots' | 'loadLive' | 'riderDailyStats' | 'close' | 'drop';
  args: unknown[];
}

const store = await createEmbeddedStore(workerData.options);
const port = parentPort!;

port.on('message', (call: Call) => {
  const fn = (store as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[call.method];
  Promise.resolve()
    .then(() => fn.apply(store, call.args))
    .then(
      (value) => port.postMessage({ id: call.id, ok: true, value }),
      (err: Error) => port.postMessage({ id: call.id, ok: false, error: { name: err?.name, message: err?.message ?? String(err) } }),
    );
});
port.postMessage({ ready: true });

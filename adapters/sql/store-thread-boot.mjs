// Worker bootstrap: a worker does not inherit the parent's TypeScript loader,
// so register tsx here when the store module is TypeScript (source checkout).
import { workerData } from 'node:worker_threads';

if (workerData.entry.endsWith('.ts')) {
  const { register } = await import('tsx/esm/api');
  register();
}
await import(workerData.entry);

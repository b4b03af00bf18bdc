/**
 * `npm run bench` runs every benchmark; `npm run bench -- <name> [args]` one.
 * Each runs in its own process (clean heap, its own flags) and writes
 * bench/results/<name>.json.
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const benches: Record<string, { file: string; nodeArgs?: string[]; args?: string[] }> = {
  'gps-ingest': { file: 'gps-ingest.ts' },
  matcher: { file: 'matcher.ts' },
  'rider-memory': { file: 'rider-memory.ts', nodeArgs: ['--expose-gc'] },
  'replay-day': { file: 'replay-day.ts' },
  'store-append': { file: 'store.ts' },
  'fleet-apply': { file: 'fleet.ts' },
  // The servers under test and the load generator run in child processes of their own.
  'gateway-fixes': { file: 'gateway/fixes.ts' },
  'gateway-scale': { file: 'gateway/scale.ts' },
  'grpc-create': { file: 'grpc-create.ts' },
};

const [name, ...rest] = process.argv.slice(2);
const selected = name ? [name] : Object.keys(benches);
let failed = 0;
for (const n of selected) {
  const b = benches[n];
  if (!b) {
    console.error(`unknown benchmark ${n}; known: ${Object.keys(benches).join(', ')}`);
    process.exit(2);
  }
  console.error(`== ${n}`);
  const r = spawnSync(process.execPath, [...(b.nodeArgs ?? []), '--import', 'tsx', join(here, b.file), ...(name ? rest : [])], {
    stdio: 'inherit',
  });
  if (r.status !== 0) {
    failed++;
    console.error(`${n} exited with ${r.status}`);
  }
}
process.exit(failed ? 1 : 0);

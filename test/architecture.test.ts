// Keeps the layering in docs/architecture.md true: reads every import line.
import t from 'tap';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function sources(dir: string): string[] {
  const out: string[] = [];
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const e of entries) {
    if (e === 'node_modules' || e === 'results') continue;
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (/\.(ts|mts|mjs)$/.test(e)) out.push(p);
  }
  return out;
}

/** Repository-relative targets of a file's relative imports. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const targets: string[] = [];
  for (const m of text.matchAll(/(?:import|export)[^'"]*?from\s+['"](\.[^'"]+)['"]|import\(\s*['"](\.[^'"]+)['"]\s*\)/g)) {
    const spec = m[1] ?? m[2];
    targets.push(relative(root, resolve(dirname(file), spec)));
  }
  return targets;
}

const layerOf = (p: string) => p.split('/')[0];

t.test('engine imports no other layer', async (t) => {
  for (const file of sources(join(root, 'engine'))) {
    for (const target of importsOf(file)) {
      t.equal(layerOf(target), 'engine', `${relative(root, file)} imports ${target}`);
    }
  }
});

t.test('adapters import the engine only through its index, and protos', async (t) => {
  for (const file of sources(join(root, 'adapters'))) {
    for (const target of importsOf(file)) {
      const layer = layerOf(target);
      t.ok(layer === 'adapters' || layer === 'protos' || target === 'engine/index.ts', `${relative(root, file)} imports ${target}`);
    }
  }
});

t.test('protos import only themselves and the engine index', async (t) => {
  for (const file of sources(join(root, 'protos'))) {
    for (const target of importsOf(file)) {
      t.ok(layerOf(target) === 'protos' || target === 'engine/index.ts', `${relative(root, file)} imports ${target}`);
    }
  }
});

t.test('gateway imports engine and adapters only through their index', async (t) => {
  const files = sources(join(root, 'gateway'));
  for (const file of files) {
    for (const target of importsOf(file)) {
      const layer = layerOf(target);
      const ok = layer === 'gateway' || layer === 'protos' || target === 'engine/index.ts' || /^adapters\/[^/]+\/index\.ts$/.test(target);
      t.ok(ok, `${relative(root, file)} imports ${target}`);
    }
  }
  t.pass(`checked ${files.length} gateway files`);
});

t.test('the check itself sees a violation', async (t) => {
  // Guards against a regex that silently matches nothing.
  const found = importsOf(join(root, 'engine', 'engine.ts'));
  t.ok(found.includes('engine/config.ts'), 'reads relative imports');
});

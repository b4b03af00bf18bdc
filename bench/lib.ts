/**
 * Benchmark results: one JSON file per benchmark in bench/results/, with the
 * figure, its unit and, where it compares, the baseline measured in the same
 * run and the ratio (machines are noisy; ratios hold, absolute times don't).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { execSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  baseline?: number;
  ratio?: number;
  target?: string;
  pass?: boolean;
  [extra: string]: unknown;
}

const resultsDir = join(dirname(fileURLToPath(import.meta.url)), 'results');

function commit(): string | null {
  try {
    return execSync('git rev-parse --short HEAD', { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return null;
  }
}

/** Writes bench/results/<name>.json and prints it; returns the file path. */
export function writeResult(result: BenchResult): string {
  mkdirSync(resultsDir, { recursive: true });
  const full = { ...result, date: new Date().toISOString(), node: process.version, commit: commit() };
  const path = join(resultsDir, `${result.name}.json`);
  writeFileSync(path, JSON.stringify(full, null, 2) + '\n');
  console.log(JSON.stringify(full));
  return path;
}

/** Percentile of an unsorted sample (nearest rank). */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

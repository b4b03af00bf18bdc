/**
 * Loads the native uWebSockets.js binary, or fails loudly. The package we
 * depend on (a build of uWS 20.30 for Node 16/18/20) silently falls back to a
 * slow JavaScript shim when no binary matches the platform; a gateway that
 * quietly runs on the shim would miss every throughput target, so we load the
 * binary ourselves and refuse to start without it.
 */
import { createRequire } from 'node:module';
import type * as Uws from 'uWebSockets.js';

export type { Uws };

const require = createRequire(import.meta.url);

/** Path of the binary this process needs, relative to the package. */
export function nativeBinaryName(platform = process.platform, arch = process.arch, abi = process.versions.modules): string {
  return `uws_${platform}_${arch}_${abi}.node`;
}

let loaded: typeof Uws | null = null;

/**
 * The native uWS module.
 * @throws Error naming the platform, architecture and Node ABI when no native binary matches.
 */
export function loadUws(): typeof Uws {
  if (loaded) return loaded;
  const name = nativeBinaryName();
  let mod: typeof Uws;
  try {
    mod = require(`uWebSockets.js/binaries/${name}`) as typeof Uws;
  } catch (err) {
    throw new Error(
      `uWebSockets.js has no native binary for ${process.platform}/${process.arch} with Node ABI ${process.versions.modules} ` +
        `(looked for ${name}); refusing to start on the slow JavaScript fallback. Use Node 20 on linux x64 or arm64.`,
      { cause: err },
    );
  }
  if (typeof mod.App !== 'function') throw new Error(`uWebSockets.js binary ${name} does not export App`);
  loaded = mod;
  return mod;
}

// Helpers the test files share (not a test itself: tap runs only *.test.ts).
import { createServer, type AddressInfo } from 'node:net';
import pg from 'pg';

/**
 * Why Postgres at `url` cannot be used, or null when it can. A suite must still
 * run on a machine without Postgres (its Postgres tests skip with this reason);
 * QD_REQUIRE_PG=1 makes that a failure instead, as CI wants.
 */
export async function postgresUnavailable(url: string): Promise<string | null> {
  const probe = new pg.Client({ connectionString: url });
  try {
    await probe.connect();
    await probe.end();
    return null;
  } catch (err) {
    if (process.env.QD_REQUIRE_PG === '1') throw err;
    return `Postgres unreachable at ${url}: ${(err as Error).message}`;
  }
}

/** A loopback port nothing listens on (free when this returns). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

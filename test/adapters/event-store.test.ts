// The EventStore contract against MemoryEventStore, PGlite (in memory and on disk) and Postgres,
// plus what only the SQL store has: one transaction per append, rollback mid-way, few queries to recover.
import t from 'tap';
import type { Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';
import { MemoryEventStore } from '../../engine/store/index.ts';
import type { EventStore, StoredEvent } from '../../engine/store/index.ts';
import { createEmbeddedStore, createPostgresStore, createThreadedEmbeddedStore, PgliteClient, PgClient, SqlEventStore } from '../../adapters/sql/index.ts';
import type { SqlClient, SqlQueryable } from '../../adapters/sql/index.ts';
import { eventStoreContract } from './event-store.contract.ts';
import { postgresUnavailable } from '../support.ts';

const PG_URL = process.env.QD_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
/** Unique per run, so test files and concurrent runs never share tables. */
const RUN = `qdt_${process.pid}_${Date.now().toString(36)}`;
const T0 = Date.UTC(2026, 10, 24, 9, 0, 0);
const DAY = '2026-11-24';

const ev = (stream: string, seq: number, final = false): StoredEvent => ({ stream, seq, type: 'E', data: { seq }, at: T0 + seq, ...(final ? { final } : {}) });

async function rejects(t: Test, p: Promise<unknown>, msg: string): Promise<unknown> {
  try {
    await p;
    t.fail(`${msg}: expected a rejection`);
    return null;
  } catch (err) {
    t.ok(err instanceof Error, msg);
    return err;
  }
}

/** A client that shares `inner` but whose close() leaves it open: several stores (schemas) on one database. */
function shared(inner: SqlClient): SqlClient {
  return { query: (q, p) => inner.query(q, p), transaction: (fn) => inner.transaction(fn), close: async () => {} };
}

/** Counts transactions and statements. */
class ProbeClient implements SqlClient {
  transactions = 0;
  statements = 0;
  readonly #inner: SqlClient;
  constructor(inner: SqlClient) {
    this.#inner = inner;
  }
  query<R>(text: string, params?: unknown[]) {
    this.statements++;
    return this.#inner.query<R>(text, params);
  }
  transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T> {
    this.transactions++;
    return this.#inner.transaction((tx) =>
      fn({
        query: async <R,>(text: string, params?: unknown[]) => {
          this.statements++;
          return tx.query<R>(text, params);
        },
      }),
    );
  }
  close() {
    return this.#inner.close();
  }
}

/** What only a SQL store promises, run on one backend. */
function sqlBehaviour(t: Test, name: string, client: () => SqlClient, nextSchema: () => string): void {
  t.test(`${name}: append is one statement (so one transaction); a failure in it rolls everything back`, async (t) => {
    const probe = new ProbeClient(shared(client()));
    const store = new SqlEventStore(probe, { schema: nextSchema() });
    await store.init();
    probe.transactions = 0;
    probe.statements = 0;
    await store.append([ev('order:a', 1), ev('order:b', 1)], [{ riderId: 'r1', day: DAY, offers: 1 }]);
    t.equal(probe.statements, 1, 'one statement: events, their streams and statistics');
    t.equal(probe.transactions, 0, 'no explicit transaction (no BEGIN/COMMIT round trips)');
    await store.append([], []);
    t.equal(probe.statements, 1, 'an empty append does not touch the database');
    // The database itself refuses the statistics part: the events before it in the statement must not stay.
    await probe.query(`ALTER TABLE ${store.schema}.rider_daily_stats ADD CONSTRAINT offers_below_100 CHECK (offers < 100)`);
    const err = await rejects(t, store.append([ev('order:a', 2), ev('order:c', 1, true)], [{ riderId: 'r1', day: DAY, offers: 500 }]), 'the append rejects');
    t.match((err as Error).message, /offers_below_100/, 'with the database error');
    t.same((await store.readStream('order:a')).map((e) => e.seq), [1], 'events of the failed statement are gone');
    t.same(await store.readStream('order:c'), [], 'including new streams');
    t.same(
      (await store.loadLive()).map((s) => s.stream),
      ['order:a', 'order:b'],
      'stream rows are rolled back too',
    );
    t.equal((await store.riderDailyStats('r1', DAY))?.offers, 1, 'statistics unchanged');
    await store.append([ev('order:a', 2)], [{ riderId: 'r1', day: DAY, offers: 5 }]);
    t.equal((await store.riderDailyStats('r1', DAY))?.offers, 6, 'the same events succeed with a delta the table takes');
    await store.close();
  });

  t.test(`${name}: loadLive costs the same few statements for 1 or 200 streams`, async (t) => {
    const probe = new ProbeClient(shared(client()));
    const store = new SqlEventStore(probe, { schema: nextSchema() });
    await store.init();
    await store.append([ev('order:x', 1)]);
    probe.statements = 0;
    await store.loadLive();
    const few = probe.statements;
    const events: StoredEvent[] = [];
    for (let i = 0; i < 200; i++) events.push(ev(`order:${i}`, 1), ev(`order:${i}`, 2));
    await store.append(events);
    await store.saveSnapshots(Array.from({ length: 100 }, (_, i) => ({ stream: `order:${i}`, seq: 1, state: { i }, at: T0 })));
    probe.statements = 0;
    const live = await store.loadLive();
    t.equal(live.length, 201);
    t.equal(probe.statements, few, `${few} statements either way`);
    t.ok(few <= 3, 'at most three (isolation, streams with snapshots, events)');
    t.same(live.find((s) => s.stream === 'order:5')?.events.map((e) => e.seq), [2], 'snapshotted stream: the event after it');
    t.same(live.find((s) => s.stream === 'order:150')?.events.map((e) => e.seq), [1, 2], 'other stream: all events');
    await store.close();
  });

  t.test(`${name}: schemas keep stores apart; init is idempotent; bad schema names are refused`, async (t) => {
    const a = new SqlEventStore(shared(client()), { schema: nextSchema() });
    const b = new SqlEventStore(shared(client()), { schema: nextSchema() });
    await a.init();
    await b.init();
    await a.append([ev('order:same', 1)]);
    t.same(await b.readStream('order:same'), [], 'another schema does not see it');
    await a.init();
    t.same((await a.readStream('order:same')).map((e) => e.seq), [1], 'a second init keeps the data');
    t.throws(() => new SqlEventStore(shared(client()), { schema: 'x; DROP TABLE y' }), RangeError, 'a name that is not a plain identifier');
    t.throws(() => new SqlEventStore(shared(client()), { schema: 'Upper' }), RangeError, 'upper case (Postgres would fold it)');
    await b.drop();
    await rejects(t, b.readStream('order:same'), 'a dropped schema is gone');
    await a.close();
  });
}

t.test('memory', async (t) => {
  eventStoreContract(t, 'memory', async () => {
    const s = new MemoryEventStore();
    await s.init();
    return s;
  });

  t.test('memory: failNextAppend fails one append, storing nothing', async (t) => {
    const s = new MemoryEventStore();
    await s.append([ev('order:a', 1)]);
    s.failNextAppend(new Error('disk full'));
    const err = await rejects(t, s.append([ev('order:a', 2)], [{ riderId: 'r', day: DAY, offers: 1 }]), 'the armed append rejects');
    t.equal((err as Error).message, 'disk full', 'with the given error');
    t.same((await s.readStream('order:a')).map((e) => e.seq), [1], 'nothing stored');
    t.equal(await s.riderDailyStats('r', DAY), null, 'no statistics');
    await s.append([ev('order:a', 2)]);
    t.same((await s.readStream('order:a')).map((e) => e.seq), [1, 2], 'only the next append fails');
    await s.close();
    await rejects(t, s.readStream('order:a'), 'a closed store refuses');
  });
});

t.test('pglite in memory', async (t) => {
  const db = await PGlite.create();
  t.teardown(() => db.close());
  const client = new PgliteClient(db);
  let n = 0;
  const nextSchema = () => `c${n++}`;
  eventStoreContract(t, 'pglite-memory', async () => {
    const s = new SqlEventStore(shared(client), { schema: nextSchema() });
    await s.init();
    return s;
  });
  sqlBehaviour(t, 'pglite-memory', () => client, nextSchema);

  t.test('pglite-memory: createEmbeddedStore without dataDir', async (t) => {
    const s = await createEmbeddedStore({ schema: 'own' });
    t.equal(s.schema, 'own');
    await s.append([ev('order:a', 1)]);
    t.same((await s.readStream('order:a')).map((e) => e.seq), [1]);
    await s.close();
    await rejects(t, createEmbeddedStore({ schema: 'bad name' }), 'a bad schema name is refused');
  });
});

t.test('pglite on its own thread', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'qd-pglite-thread-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  let n = 0;
  const dirs = new Map<EventStore, string>();
  const open = async (dir: string) => {
    const s = await createThreadedEmbeddedStore({ dataDir: dir });
    dirs.set(s, dir);
    return s;
  };
  eventStoreContract(t, 'pglite-thread', () => open(join(root, `db${n++}`)), {
    reopen: async (store) => {
      const dir = dirs.get(store)!;
      await store.close();
      return open(dir);
    },
  });
});

t.test('pglite on disk', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'qd-pglite-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const dirs = new Map<EventStore, string>();
  let n = 0;
  const open = async (dir: string) => {
    const s = await createEmbeddedStore({ dataDir: dir });
    dirs.set(s, dir);
    return s;
  };
  eventStoreContract(t, 'pglite-disk', () => open(join(root, `db${n++}`, 'nested')), {
    reopen: async (store) => {
      await store.close();
      return open(dirs.get(store)!);
    },
  });

  t.test('pglite-disk: an acknowledged append survives the process being killed', async (t) => {
    const dir = join(root, 'killed');
    const index = pathToFileURL(join(import.meta.dirname, '../../adapters/sql/index.ts')).href;
    // The child appends, then dies by SIGKILL: no close(), no checkpoint.
    const code = `
      const { createEmbeddedStore } = await import(${JSON.stringify(index)});
      const s = await createEmbeddedStore({ dataDir: ${JSON.stringify(dir)} });
      await s.append([{ stream: 'order:k', seq: 1, type: 'CREATED', data: { ok: 1 }, at: 1 }], [{ riderId: 'r', day: '${DAY}', deliveries: 1 }]);
      await s.append([{ stream: 'order:k', seq: 2, type: 'ACCEPTED', data: {}, at: 2 }]);
      process.stdout.write('acknowledged');
      process.kill(process.pid, 'SIGKILL');`;
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { encoding: 'utf8', timeout: 120_000 });
    t.equal(child.stdout, 'acknowledged', 'the child saw both appends acknowledged');
    t.equal(child.signal, 'SIGKILL', 'and was killed');
    const s = await createEmbeddedStore({ dataDir: dir });
    t.same((await s.readStream('order:k')).map((e) => e.type), ['CREATED', 'ACCEPTED'], 'both appends are there after recovery');
    t.equal((await s.riderDailyStats('r', DAY))?.deliveries, 1, 'with their statistics');
    await s.close();
  });
});

const pgSkip = await postgresUnavailable(PG_URL);

t.test('postgres', { skip: pgSkip ?? false }, async (t) => {
  const schemas: string[] = [];
  const nextSchema = () => {
    const s = `${RUN}_${schemas.length}`;
    schemas.push(s);
    return s;
  };
  const pool = new pg.Pool({ connectionString: PG_URL, max: 4 });
  const client = new PgClient(pool);
  t.teardown(async () => {
    // Drop every schema this run made, whichever subtests failed.
    for (const s of schemas) await pool.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
    await pool.end();
  });
  const schemaOf = new Map<EventStore, string>();
  const open = async (schema: string) => {
    const s = await createPostgresStore({ connectionString: PG_URL, schema, poolSize: 2 });
    schemaOf.set(s, schema);
    return s;
  };
  eventStoreContract(t, 'postgres', () => open(nextSchema()), {
    reopen: async (store) => {
      await store.close();
      return open(schemaOf.get(store)!);
    },
  });
  sqlBehaviour(t, 'postgres', () => client, nextSchema);

  t.test('postgres: concurrent inits of one schema do not collide', async (t) => {
    const schema = nextSchema();
    const stores = await Promise.all([0, 1, 2, 3].map(() => createPostgresStore({ connectionString: PG_URL, schema, poolSize: 1 })));
    await stores[0].append([ev('order:a', 1)]);
    t.same((await stores[3].readStream('order:a')).map((e) => e.seq), [1], 'all four share the tables');
    await Promise.all(stores.map((s) => s.close()));
  });

  t.test('postgres: an unreachable server rejects and leaves no pool open', async (t) => {
    await rejects(t, createPostgresStore({ connectionString: 'postgres://postgres@127.0.0.1:1/none' }), 'connection refused');
  });
});

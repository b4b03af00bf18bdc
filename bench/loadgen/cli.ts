/**
 * Drives a running gateway with riders and customers; prints the result as JSON on stdout.
 *
 *   npm run -s loadgen -- --url ws://127.0.0.1:8080 --riders N --customers N --fix-rate R --duration S
 *       [--batch K] [--secret S] [--orders FILE] [--warmup S] [--inflight W] [--processes P]
 *       [--sources N] [--encoding msgpack|json] [--no-walk] [--capacity N] [--prefix P]
 *
 * --fix-rate 0 runs closed-loop (each rider keeps --inflight frames unanswered) to find the server's ceiling.
 * Orders are created through the engine, not the app socket, so customers need --orders FILE: a JSON array
 * of {orderId, customerId}; customer i follows entry i. Riders go online near riderStart(i) (loadgen.ts).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { runLoad, type FollowSpec } from './loadgen.ts';

const { values: a } = parseArgs({
  options: {
    url: { type: 'string', default: 'ws://127.0.0.1:8080' },
    riders: { type: 'string', default: '100' },
    customers: { type: 'string', default: '0' },
    'fix-rate': { type: 'string', default: '1000' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' },
    batch: { type: 'string', default: '1' },
    inflight: { type: 'string' },
    secret: { type: 'string' },
    orders: { type: 'string' },
    processes: { type: 'string' },
    sources: { type: 'string' },
    encoding: { type: 'string', default: 'msgpack' },
    'no-walk': { type: 'boolean', default: false },
    capacity: { type: 'string', default: '1' },
    prefix: { type: 'string', default: 'lg-r' },
  },
});

function num(name: string, raw: string | undefined, min: number): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min) {
    console.error(`--${name} must be a number >= ${min}, got ${raw}`);
    process.exit(2);
  }
  return n;
}

const customers = num('customers', a.customers, 0)!;
let follows: FollowSpec[] = [];
if (customers > 0) {
  if (!a.orders) {
    console.error('--customers needs --orders FILE (a JSON array of {orderId, customerId}): orders are created through the engine, not the app socket');
    process.exit(2);
  }
  const list = JSON.parse(readFileSync(a.orders, 'utf8')) as FollowSpec[];
  if (!Array.isArray(list) || list.length < customers) {
    console.error(`--orders ${a.orders} holds ${Array.isArray(list) ? list.length : 0} orders, fewer than --customers ${customers}`);
    process.exit(2);
  }
  follows = list.slice(0, customers).map((o) => ({ orderId: String(o.orderId), customerId: String(o.customerId) }));
}
if (a.encoding !== 'msgpack' && a.encoding !== 'json') {
  console.error(`--encoding must be msgpack or json, got ${a.encoding}`);
  process.exit(2);
}

const inflight = num('inflight', a.inflight, 1);
const processes = num('processes', a.processes, 0);
const sources = num('sources', a.sources, 1);
const result = await runLoad({
  url: a.url!,
  riders: num('riders', a.riders, 0)!,
  follows,
  fixRate: num('fix-rate', a['fix-rate'], 0)!,
  durationS: num('duration', a.duration, 0.1)!,
  warmupS: num('warmup', a.warmup, 0)!,
  batch: num('batch', a.batch, 1)!,
  ...(inflight !== undefined ? { inflight } : {}),
  ...(processes !== undefined ? { processes } : {}),
  ...(sources !== undefined ? { sources } : {}),
  ...(a.secret ? { secret: a.secret } : {}),
  encoding: a.encoding,
  walk: !a['no-walk'],
  capacity: num('capacity', a.capacity, 1)!,
  riderPrefix: a.prefix!,
  log: (line) => console.error(line),
});
console.log(JSON.stringify(result, null, 2));

// docs/errors.md must list exactly the engine's codes, with the same gRPC and WebSocket numbers.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { DispatchError, ErrorCodes, invalidArgument } from '../../engine/errors.ts';

const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
const rows = [...doc.matchAll(/^\| `(QD_ERR_\w+)` \| \w+ \((\d+)\) \| (\d+) \|/gm)].map((m) => ({ code: m[1], grpc: +m[2], ws: +m[3] }));

t.test('docs/errors.md lists every code with its numbers', async (t) => {
  t.same(rows.map((r) => r.code).sort(), Object.keys(ErrorCodes).sort());
  for (const r of rows) {
    const def = ErrorCodes[r.code as keyof typeof ErrorCodes];
    t.equal(r.grpc, def.grpc, `${r.code} gRPC status`);
    t.equal(r.ws, def.ws, `${r.code} WebSocket code`);
  }
});

t.test('WebSocket codes are unique and fit in one byte below 128', async (t) => {
  const ws = Object.values(ErrorCodes).map((d) => d.ws);
  t.equal(new Set(ws).size, ws.length);
  for (const c of ws) t.ok(c > 0 && c < 128);
});

t.test('messages are filled from details and survive a thread boundary', async (t) => {
  const e = invalidArgument('pickup.lat', 'must be a number in [-90, 90]');
  t.equal(e.message, 'invalid pickup.lat: must be a number in [-90, 90]');
  t.equal(e.code, 'QD_ERR_INVALID_ARGUMENT');
  t.equal(e.grpcStatus, 3);
  const back = DispatchError.fromJSON(JSON.parse(JSON.stringify(e)));
  t.equal(back.code, e.code);
  t.equal(back.message, e.message);
  const unknown = DispatchError.fromJSON({ code: 'NOPE' as never, details: {} });
  t.equal(unknown.code, 'QD_ERR_INTERNAL');
});

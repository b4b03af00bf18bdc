// Gateway authentication: what verifyToken accepts, every way it refuses, and the dev-token CLI.
import t from 'tap';
import type { Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { createHmac, generateKeyPairSync, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Actions,
  AuthFailures,
  authConfigFromEnv,
  can,
  canFollowOrder,
  DEVELOPMENT_JWT_SECRET,
  developmentAuthConfig,
  MAX_TOKEN_LENGTH,
  Roles,
  signToken,
  verifyToken,
  type AuthConfig,
  type AuthFailure,
  type Principal,
} from '../../gateway/auth.ts';
import { mulberry32 } from '../../bench/random.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

const NOW_SEC = 1_760_000_000;
const SECRET = 'test-secret-0123456789abcdef0123456789abcdef';

const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const pem = (k: KeyObject, kind: 'spki' | 'pkcs8') =>
  kind === 'spki' ? (k.export({ type: 'spki', format: 'pem' }) as string) : (k.export({ type: 'pkcs8', format: 'pem' }) as string);
const EC_PUBLIC = pem(ec.publicKey, 'spki');
const EC_PRIVATE = pem(ec.privateKey, 'pkcs8');
const RSA_PUBLIC = pem(rsa.publicKey, 'spki');
const RSA_PRIVATE = pem(rsa.privateKey, 'pkcs8');

function hsConfig(over: Partial<AuthConfig> = {}): AuthConfig {
  return {
    issuer: 'quickdash',
    audience: 'quickdash-gateway',
    algorithms: ['HS256'],
    keys: { hs256Secret: SECRET },
    now: () => NOW_SEC * 1000,
    ...over,
  };
}

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** A token with any header and payload, signed as told: how an attacker (or a buggy issuer) builds one. */
function forge(
  header: Record<string, unknown>,
  payload: Record<string, unknown>,
  signer: { hmac: string | Buffer } | { key: KeyObject; ecdsaDer?: boolean } | { raw: string } = { hmac: SECRET },
): string {
  const input = `${b64(header)}.${b64(payload)}`;
  let sig: string;
  if ('hmac' in signer) sig = createHmac('sha256', signer.hmac).update(input).digest('base64url');
  else if ('raw' in signer) sig = signer.raw;
  else if (signer.key.asymmetricKeyType === 'ec') {
    sig = cryptoSign('sha256', Buffer.from(input), signer.ecdsaDer ? signer.key : { key: signer.key, dsaEncoding: 'ieee-p1363' }).toString(
      'base64url',
    );
  } else sig = cryptoSign('sha256', Buffer.from(input), signer.key).toString('base64url');
  return `${input}.${sig}`;
}

/** Claims of a good rider token at NOW_SEC; override or delete (undefined) fields per case. */
function claims(over: Record<string, unknown> = {}): Record<string, unknown> {
  const base: Record<string, unknown> = {
    iss: 'quickdash',
    aud: 'quickdash-gateway',
    sub: 'rider-1',
    role: 'rider',
    iat: NOW_SEC,
    exp: NOW_SEC + 3600,
    ...over,
  };
  for (const k of Object.keys(base)) if (base[k] === undefined) delete base[k];
  return base;
}

const HS = { alg: 'HS256', typ: 'JWT' };
const seen = new Set<AuthFailure>();

function refuses(t: Test, token: string, cfg: AuthConfig, reason: AuthFailure, name: string) {
  const r = verifyToken(token, cfg);
  if (r.ok) {
    t.fail(`${name}: verified as ${JSON.stringify(r.principal)}`);
    return;
  }
  seen.add(r.reason);
  t.equal(r.reason, reason, `${name}: ${r.message}`);
  t.ok(r.message.length > 0 && r.message.length < 200, `${name}: short message`);
}

function accepts(t: Test, token: string, cfg: AuthConfig, name: string): Principal | undefined {
  const r = verifyToken(token, cfg);
  t.ok(r.ok, r.ok ? name : `${name}: refused ${r.reason} (${r.message})`);
  return r.ok ? r.principal : undefined;
}

t.test('sign and verify round trips', async (t) => {
  t.test('HS256 with a string and a Buffer secret', async (t) => {
    for (const secret of [SECRET, Buffer.from(SECRET)]) {
      const cfg = hsConfig({ keys: { hs256Secret: secret } });
      const token = signToken({ sub: 'rider-1', role: 'rider', ttlSec: 600, jti: 'j-1' }, cfg);
      t.same(JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString()), { alg: 'HS256', typ: 'JWT' });
      t.same(accepts(t, token, cfg, 'HS256'), { sub: 'rider-1', role: 'rider', exp: NOW_SEC + 600, jti: 'j-1' });
    }
  });

  t.test('ES256 with a raw r||s signature', async (t) => {
    const cfg = hsConfig({ algorithms: ['ES256'], keys: { publicKeyPem: EC_PUBLIC } });
    const token = signToken({ sub: 'cust-9', role: 'customer', ttlSec: 60 }, { ...cfg, privateKeyPem: EC_PRIVATE });
    t.equal(JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString()).alg, 'ES256');
    t.equal(Buffer.from(token.split('.')[2], 'base64url').length, 64, 'JOSE signature is 64 bytes, not DER');
    t.same(accepts(t, token, cfg, 'ES256'), { sub: 'cust-9', role: 'customer', exp: NOW_SEC + 60 });
  });

  t.test('RS256', async (t) => {
    const cfg = hsConfig({ algorithms: ['RS256'], keys: { publicKeyPem: RSA_PUBLIC } });
    const token = signToken({ sub: 'ops-ana', role: 'operations', ttlSec: 3600 }, { ...cfg, privateKeyPem: RSA_PRIVATE });
    t.equal(JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString()).alg, 'RS256');
    t.same(accepts(t, token, cfg, 'RS256'), { sub: 'ops-ana', role: 'operations', exp: NOW_SEC + 3600 });
  });

  t.test('a config accepting several algorithms verifies each with its own key', async (t) => {
    const cfg = hsConfig({ algorithms: ['HS256', 'ES256'], keys: { hs256Secret: SECRET, publicKeyPem: EC_PUBLIC } });
    accepts(t, signToken({ sub: 'svc', role: 'service', ttlSec: 60 }, cfg), cfg, 'HS256 leg');
    accepts(t, signToken({ sub: 'svc', role: 'service', ttlSec: 60 }, { ...cfg, privateKeyPem: EC_PRIVATE }), cfg, 'ES256 leg');
  });

  t.test('every role signs and verifies', async (t) => {
    const cfg = hsConfig();
    for (const role of Roles) t.equal(accepts(t, signToken({ sub: 'x', role, ttlSec: 60 }, cfg), cfg, role)?.role, role);
  });
});

t.test('malformed tokens', async (t) => {
  const cfg = hsConfig();
  const good = forge(HS, claims());
  const [h, p, s] = good.split('.');
  const cases: [string, unknown][] = [
    ['empty', ''],
    ['not a string', 42],
    ['null', null],
    ['one segment', 'abc'],
    ['two segments', `${h}.${p}`],
    ['four segments', `${good}.${s}`],
    ['five segments (JWE)', `${h}.${p}.${s}.${s}.${s}`],
    ['over the length limit', `${h}.${p}.${'A'.repeat(MAX_TOKEN_LENGTH)}`],
    ['base64 outside the URL alphabet', `${h}.${p.slice(0, -2)}+/.${s}`],
    ['padding', `${h}.${p}==.${s}`],
    ['impossible base64 length', `eyJhbGciOiJIUzI1NiJ9A.${p}.${s}`],
    ['header not JSON', `${b64('{alg:HS256')}.${p}.${s}`],
    ['header a JSON array', `${b64(['HS256'])}.${p}.${s}`],
    ['header empty', `.${p}.${s}`],
    ['payload JSON null', forge(HS, null as never)],
    ['payload a string', `${h}.${b64('"rider"')}.${s}`],
    ['payload invalid UTF-8', `${h}.${Buffer.from([0x7b, 0xff, 0xfe, 0x7d]).toString('base64url')}.${s}`],
    ['typ not JWT', forge({ alg: 'HS256', typ: 'JWE' }, claims())],
    ['crit extension', forge({ alg: 'HS256', crit: ['exp'] }, claims())],
  ];
  for (const [name, token] of cases) refuses(t, token as string, cfg, 'malformed', name);

  // 43 chars carry 258 bits for a 256-bit MAC: the last character has 2 unused bits. Node ignores them; we must not.
  const last = s[s.length - 1];
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const sibling = alphabet[alphabet.indexOf(last) ^ 1];
  const twin = `${h}.${p}.${s.slice(0, -1)}${sibling}`;
  t.same(Buffer.from(twin.split('.')[2], 'base64url'), Buffer.from(s, 'base64url'), 'the twin decodes to the same MAC bytes');
  refuses(t, twin, cfg, 'malformed', 'non-canonical base64url signature');
  accepts(t, good, cfg, 'the original still verifies');
  accepts(t, forge({ alg: 'HS256' }, claims()), cfg, 'typ may be absent');
});

t.test('algorithm pinning, alg none and key confusion', async (t) => {
  const cfg = hsConfig();
  for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
    refuses(t, forge({ alg, typ: 'JWT' }, claims(), { raw: '' }), cfg, 'algorithm', `alg ${alg} with no signature`);
    refuses(t, forge({ alg, typ: 'JWT' }, claims()), cfg, 'algorithm', `alg ${alg} with an HMAC attached`);
  }
  refuses(t, forge({ typ: 'JWT' }, claims()), cfg, 'algorithm', 'no alg');
  refuses(t, forge({ alg: 7 }, claims()), cfg, 'algorithm', 'numeric alg');
  refuses(t, forge({ alg: 'HS512' }, claims()), cfg, 'algorithm', 'HS512 is not supported');
  refuses(t, forge({ alg: 'hs256' }, claims()), cfg, 'algorithm', 'alg is case-sensitive');
  refuses(t, forge({ alg: 'ES256' }, claims(), { key: ec.privateKey }), cfg, 'algorithm', 'ES256 when only HS256 is pinned');
  refuses(
    t,
    forge({ alg: 'ES256' }, claims(), { key: ec.privateKey }),
    hsConfig({ algorithms: ['ES256'], keys: { hs256Secret: SECRET } }),
    'algorithm',
    'ES256 pinned but no public key configured',
  );
  refuses(
    t,
    forge(HS, claims()),
    hsConfig({ keys: { publicKeyPem: RSA_PUBLIC } }),
    'algorithm',
    'HS256 pinned but only a public key configured: the public key is never used as the secret',
  );

  // The classic confusion: the attacker knows the RS256 public key and MACs a token with it.
  const confused = forge(HS, claims({ role: 'operations' }), { hmac: RSA_PUBLIC });
  refuses(t, confused, hsConfig({ algorithms: ['RS256'], keys: { publicKeyPem: RSA_PUBLIC } }), 'algorithm', 'HS256 token against RS256-only config');
  refuses(
    t,
    confused,
    hsConfig({ algorithms: ['HS256', 'RS256'], keys: { hs256Secret: SECRET, publicKeyPem: RSA_PUBLIC } }),
    'signature',
    'HS256 token MACed with the public key, both algorithms pinned',
  );
  refuses(
    t,
    confused,
    hsConfig({ keys: { hs256Secret: RSA_PUBLIC } }),
    'algorithm',
    'a PEM configured as the HS256 secret is refused rather than used',
  );

  // Key of the wrong family for the alg in the header.
  refuses(
    t,
    forge({ alg: 'ES256' }, claims(), { key: ec.privateKey }),
    hsConfig({ algorithms: ['ES256', 'RS256'], keys: { publicKeyPem: RSA_PUBLIC } }),
    'algorithm',
    'ES256 token against an RSA public key',
  );
  refuses(
    t,
    forge({ alg: 'RS256' }, claims(), { key: rsa.privateKey }),
    hsConfig({ algorithms: ['RS256'], keys: { publicKeyPem: EC_PUBLIC } }),
    'algorithm',
    'RS256 token against an EC public key',
  );
  const small = generateKeyPairSync('rsa', { modulusLength: 1024 });
  refuses(
    t,
    forge({ alg: 'RS256' }, claims(), { key: small.privateKey }),
    hsConfig({ algorithms: ['RS256'], keys: { publicKeyPem: pem(small.publicKey, 'spki') } }),
    'algorithm',
    'RSA keys under 2048 bits',
  );
  refuses(
    t,
    forge({ alg: 'RS256' }, claims(), { key: rsa.privateKey }),
    hsConfig({ algorithms: ['RS256'], keys: { publicKeyPem: '-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n' } }),
    'algorithm',
    'an unparsable configured public key refuses instead of throwing',
  );
});

t.test('bad signatures', async (t) => {
  const cfg = hsConfig();
  const good = forge(HS, claims());
  const [h, p, s] = good.split('.');
  const sig = Buffer.from(s, 'base64url');
  sig[0] ^= 1;
  refuses(t, `${h}.${p}.${sig.toString('base64url')}`, cfg, 'signature', 'one bit flipped');
  refuses(t, `${h}.${p}.`, cfg, 'signature', 'empty signature');
  refuses(t, `${h}.${p}.${s.slice(0, 20)}`, cfg, 'signature', 'short signature');
  refuses(t, forge(HS, claims(), { hmac: 'another-secret-0123456789abcdef0123456789' }), cfg, 'signature', 'another secret');
  refuses(t, `${h}.${b64(claims({ role: 'operations' }))}.${s}`, cfg, 'signature', 'payload swapped after signing');

  const es = hsConfig({ algorithms: ['ES256'], keys: { publicKeyPem: EC_PUBLIC } });
  accepts(t, forge({ alg: 'ES256' }, claims(), { key: ec.privateKey }), es, 'ES256 raw signature');
  refuses(t, forge({ alg: 'ES256' }, claims(), { key: ec.privateKey, ecdsaDer: true }), es, 'signature', 'ES256 with a DER signature');
  const otherEc = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  refuses(t, forge({ alg: 'ES256' }, claims(), { key: otherEc.privateKey }), es, 'signature', 'ES256 by another key');
  refuses(t, forge({ alg: 'ES256' }, claims(), { raw: Buffer.alloc(64).toString('base64url') }), es, 'signature', 'ES256 all-zero r||s');

  const rs = hsConfig({ algorithms: ['RS256'], keys: { publicKeyPem: RSA_PUBLIC } });
  const otherRsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  refuses(t, forge({ alg: 'RS256' }, claims(), { key: otherRsa.privateKey }), rs, 'signature', 'RS256 by another key');
  refuses(t, forge({ alg: 'RS256' }, claims(), { hmac: SECRET }), rs, 'signature', 'RS256 header over an HMAC');
});

t.test('issuer and audience', async (t) => {
  const cfg = hsConfig();
  refuses(t, forge(HS, claims({ iss: 'evil' })), cfg, 'issuer', 'wrong issuer');
  refuses(t, forge(HS, claims({ iss: undefined })), cfg, 'issuer', 'missing issuer');
  refuses(t, forge(HS, claims({ iss: ['quickdash'] })), cfg, 'issuer', 'issuer as array');
  refuses(t, forge(HS, claims({ aud: 'other-api' })), cfg, 'audience', 'wrong audience');
  refuses(t, forge(HS, claims({ aud: undefined })), cfg, 'audience', 'missing audience');
  refuses(t, forge(HS, claims({ aud: ['a', 'b'] })), cfg, 'audience', 'array without ours');
  refuses(t, forge(HS, claims({ aud: [] })), cfg, 'audience', 'empty array');
  refuses(t, forge(HS, claims({ aud: ['quickdash-gateway', 3] })), cfg, 'audience', 'array with a non-string');
  refuses(t, forge(HS, claims({ aud: 1 })), cfg, 'audience', 'numeric audience');
  accepts(t, forge(HS, claims({ aud: ['billing', 'quickdash-gateway'] })), cfg, 'audience array containing ours');
});

t.test('expiry, not-before and clock skew', async (t) => {
  const at = (nowSec: number, over: Partial<AuthConfig> = {}) => hsConfig({ now: () => nowSec * 1000, ...over });
  const token = forge(HS, claims({ iat: NOW_SEC, exp: NOW_SEC + 100 }));
  accepts(t, token, at(NOW_SEC + 99), 'before exp');
  accepts(t, token, at(NOW_SEC + 129), 'within the default 30 s skew after exp');
  refuses(t, token, at(NOW_SEC + 130), 'expired', 'at exp + skew');
  refuses(t, token, at(NOW_SEC + 100, { clockSkewSec: 0 }), 'expired', 'at exp with no skew');
  accepts(t, token, at(NOW_SEC + 150, { clockSkewSec: 60 }), 'a wider skew');
  refuses(t, token, at(NOW_SEC + 100.5, { clockSkewSec: 0 }), 'expired', 'fractional now past exp');

  refuses(t, forge(HS, claims({ exp: undefined })), at(NOW_SEC), 'claims', 'missing exp');
  refuses(t, forge(HS, claims({ exp: String(NOW_SEC + 100) })), at(NOW_SEC), 'claims', 'exp as a string');
  refuses(t, forge(HS, claims({ exp: null })), at(NOW_SEC), 'claims', 'exp null');

  const early = forge(HS, claims({ iat: NOW_SEC, nbf: NOW_SEC + 60, exp: NOW_SEC + 600 }));
  refuses(t, early, at(NOW_SEC), 'notYetValid', 'nbf a minute ahead');
  accepts(t, early, at(NOW_SEC + 31), 'nbf within skew');
  refuses(t, forge(HS, claims({ nbf: 'soon' })), at(NOW_SEC), 'claims', 'nbf not a number');
  refuses(t, forge(HS, claims({ iat: NOW_SEC + 300, exp: NOW_SEC + 600 })), at(NOW_SEC), 'notYetValid', 'issued in the future');
  accepts(t, forge(HS, claims({ iat: NOW_SEC + 20, exp: NOW_SEC + 600 })), at(NOW_SEC), 'iat a little ahead, within skew');
  accepts(t, forge(HS, claims({ iat: undefined })), at(NOW_SEC), 'iat is optional');
});

t.test('lifetime', async (t) => {
  const cfg = hsConfig();
  refuses(t, forge(HS, claims({ exp: NOW_SEC + 2 * 86400 })), cfg, 'lifetime', 'two days against the default day');
  accepts(t, forge(HS, claims({ exp: NOW_SEC + 86400 })), cfg, 'exactly a day');
  refuses(t, forge(HS, claims({ iat: undefined, exp: NOW_SEC + 25 * 3600 })), cfg, 'lifetime', 'no iat: measured from now');
  refuses(
    t,
    forge(HS, claims({ iat: NOW_SEC - 10 * 86400, exp: NOW_SEC + 3600 })),
    cfg,
    'lifetime',
    'back-dated iat still spans more than a day',
  );
  const short = hsConfig({ maxLifetimeSec: 600 });
  accepts(t, forge(HS, claims({ exp: NOW_SEC + 600 })), short, 'at maxLifetimeSec');
  refuses(t, forge(HS, claims({ exp: NOW_SEC + 601 })), short, 'lifetime', 'one second over maxLifetimeSec');
});

t.test('role, subject and jti claims', async (t) => {
  const cfg = hsConfig();
  refuses(t, forge(HS, claims({ role: undefined })), cfg, 'claims', 'missing role');
  refuses(t, forge(HS, claims({ role: 'admin' })), cfg, 'claims', 'unknown role');
  refuses(t, forge(HS, claims({ role: 'Rider' })), cfg, 'claims', 'role is case-sensitive');
  refuses(t, forge(HS, claims({ role: ['rider'] })), cfg, 'claims', 'role as array');
  refuses(t, forge(HS, claims({ role: '__proto__' })), cfg, 'claims', 'role __proto__');
  refuses(t, forge(HS, claims({ sub: undefined })), cfg, 'claims', 'missing sub');
  refuses(t, forge(HS, claims({ sub: '' })), cfg, 'claims', 'empty sub');
  refuses(t, forge(HS, claims({ sub: 'r'.repeat(65) })), cfg, 'claims', '65-char sub');
  refuses(t, forge(HS, claims({ sub: 12 })), cfg, 'claims', 'numeric sub');
  refuses(t, forge(HS, claims({ sub: 'rider-1\nfake log line' })), cfg, 'claims', 'control characters in sub');
  refuses(t, forge(HS, claims({ jti: 5 })), cfg, 'claims', 'numeric jti');
  t.equal(accepts(t, forge(HS, claims({ sub: 'r'.repeat(64) })), cfg, '64-char sub')?.sub, 'r'.repeat(64));
  t.same(accepts(t, forge(HS, claims({ extra: { nested: [1, 2] } })), cfg, 'unknown claims are ignored'), {
    sub: 'rider-1',
    role: 'rider',
    exp: NOW_SEC + 3600,
  });
});

t.test('every refusal reason has a crafted case', async (t) => {
  t.same([...seen].sort(), [...AuthFailures].sort());
});

t.test('fuzz: mutated and random tokens never throw and never verify', async (t) => {
  const rand = mulberry32(0x5eed_a17);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const chars = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \u00e9\u0000{}"'];
  const setups: { cfg: AuthConfig; token: string }[] = [];
  const hs = hsConfig();
  setups.push({ cfg: hs, token: signToken({ sub: 'rider-1', role: 'rider', ttlSec: 600 }, hs) });
  const es = hsConfig({ algorithms: ['ES256', 'HS256'], keys: { hs256Secret: SECRET, publicKeyPem: EC_PUBLIC } });
  setups.push({ cfg: es, token: signToken({ sub: 'cust-1', role: 'customer', ttlSec: 600 }, { ...es, privateKeyPem: EC_PRIVATE }) });
  const rs = hsConfig({ algorithms: ['RS256'], keys: { publicKeyPem: RSA_PUBLIC } });
  setups.push({ cfg: rs, token: signToken({ sub: 'ops-1', role: 'operations', ttlSec: 600 }, { ...rs, privateKeyPem: RSA_PRIVATE }) });

  // Mutations may be chained, so structured ones read segments defensively.
  const mutate = (tok: string): string => {
    const i = Math.floor(rand() * tok.length);
    const parts = tok.split('.');
    while (parts.length < 3) parts.push('');
    switch (Math.floor(rand() * 9)) {
      case 0: // replace one character
        return tok.slice(0, i) + pick(chars) + tok.slice(i + 1);
      case 1: // delete one
        return tok.slice(0, i) + tok.slice(i + 1);
      case 2: // insert one
        return tok.slice(0, i) + pick(chars) + tok.slice(i);
      case 3: // truncate
        return tok.slice(0, i);
      case 4: // swap two segments
        return [parts[1], parts[0], parts[2]].join('.');
      case 5: // a different, well-formed payload under the old signature: privilege escalation by editing claims
        return [parts[0], b64(claims({ role: pick(Roles), sub: `x${Math.floor(rand() * 9)}`, exp: NOW_SEC + 60 })), parts[2]].join('.');
      case 6: // header swapped for alg none / another alg
        return [b64({ alg: pick(['none', 'HS256', 'ES256', 'RS256', 'PS256']) }), parts[1], rand() < 0.5 ? '' : parts[2]].join('.');
      case 7: // flip one bit of the decoded signature
      {
        const sig = Buffer.from(parts[2], 'base64url');
        if (sig.length > 0) sig[Math.floor(rand() * sig.length)] ^= 1 << Math.floor(rand() * 8);
        return [parts[0], parts[1], sig.toString('base64url')].join('.');
      }
      default: // random garbage of random length, sometimes huge
        return Array.from({ length: Math.floor(rand() * (rand() < 0.05 ? 20000 : 200)) }, () => pick(chars)).join('');
    }
  };

  let tried = 0;
  let threw = 0;
  let verified = 0;
  const reasons = new Set<string>();
  for (let n = 0; n < 3000; n++) {
    const { cfg, token } = setups[n % setups.length];
    let bad = mutate(token);
    if (rand() < 0.3) bad = mutate(bad);
    if (bad === token) continue;
    tried++;
    try {
      const r = verifyToken(bad, cfg);
      if (r.ok) {
        verified++;
        t.fail(`mutated token verified: ${bad}`);
      } else reasons.add(r.reason);
    } catch (err) {
      threw++;
      t.fail(`threw on ${JSON.stringify(bad.slice(0, 120))}: ${err}`);
    }
  }
  t.equal(threw, 0, 'never threw');
  t.equal(verified, 0, 'never verified');
  t.ok(tried > 2900, `${tried} mutated tokens tried`);
  t.ok(reasons.has('malformed') && reasons.has('signature') && reasons.has('algorithm'), `reasons seen: ${[...reasons].join(', ')}`);
  for (const { cfg, token } of setups) accepts(t, token, cfg, 'the originals still verify');
});

t.test('signToken refuses what would not verify', async (t) => {
  const cfg = hsConfig();
  t.throws(() => signToken({ sub: '', role: 'rider', ttlSec: 60 }, cfg), RangeError);
  t.throws(() => signToken({ sub: 'x'.repeat(65), role: 'rider', ttlSec: 60 }, cfg), RangeError);
  t.throws(() => signToken({ sub: 'x', role: 'admin' as never, ttlSec: 60 }, cfg), RangeError);
  t.throws(() => signToken({ sub: 'x', role: 'rider', ttlSec: 0 }, cfg), RangeError);
  t.throws(() => signToken({ sub: 'x', role: 'rider', ttlSec: 1.5 }, cfg), RangeError);
  t.throws(() => signToken({ sub: 'x', role: 'rider', ttlSec: 86401 }, cfg), RangeError);
  t.throws(() => signToken({ sub: 'x', role: 'rider', ttlSec: 60 }, hsConfig({ keys: { hs256Secret: 'short' } })), /shorter than 32/);
  t.throws(() => signToken({ sub: 'x', role: 'rider', ttlSec: 60 }, hsConfig({ keys: {} })), /no HS256 secret/);
  t.throws(
    () => signToken({ sub: 'x', role: 'rider', ttlSec: 60 }, { ...hsConfig({ algorithms: ['RS256'] }), privateKeyPem: EC_PRIVATE }),
    /ES256 is not in the configured algorithms/,
  );
  t.throws(() => signToken({ sub: 'x', role: 'rider', ttlSec: 60 }, hsConfig({ algorithms: ['ES256'] })), /HS256 is not in the configured/);
});

t.test('authConfigFromEnv', async (t) => {
  const prodSecret = 'prod-secret-'.padEnd(48, 'z');
  const cfg = authConfigFromEnv({ QD_JWT_SECRET: prodSecret });
  t.same(cfg, { issuer: 'quickdash', audience: 'quickdash-gateway', algorithms: ['HS256'], keys: { hs256Secret: prodSecret } });

  t.throws(() => authConfigFromEnv({}), /QD_JWT_SECRET is not set/, 'secret required outside development');
  t.throws(() => authConfigFromEnv({ NODE_ENV: 'production' }), /QD_JWT_SECRET is not set/);
  t.equal(authConfigFromEnv({ NODE_ENV: 'development' }).keys.hs256Secret, DEVELOPMENT_JWT_SECRET, 'development falls back');
  t.equal(authConfigFromEnv({ NODE_ENV: 'test' }).keys.hs256Secret, DEVELOPMENT_JWT_SECRET, 'tests fall back');
  t.throws(() => authConfigFromEnv({ QD_JWT_SECRET: DEVELOPMENT_JWT_SECRET }), /public development secret/);
  t.throws(() => authConfigFromEnv({ QD_JWT_SECRET: 'too-short' }), /QD_JWT_SECRET: .*shorter than 32/);

  const custom = authConfigFromEnv({
    QD_JWT_SECRET: prodSecret,
    QD_JWT_ISSUER: 'qd-auth',
    QD_JWT_AUDIENCE: 'qd-ops',
    QD_JWT_ALGS: 'HS256, ES256',
    QD_JWT_PUBLIC_KEY: EC_PUBLIC,
  });
  t.same(custom.algorithms, ['HS256', 'ES256']);
  t.equal(custom.issuer, 'qd-auth');
  t.equal(custom.audience, 'qd-ops');
  t.equal(custom.keys.publicKeyPem, EC_PUBLIC);

  t.throws(() => authConfigFromEnv({ QD_JWT_SECRET: prodSecret, QD_JWT_ALGS: 'HS256,none' }), /"none" is not one of/);
  t.throws(() => authConfigFromEnv({ QD_JWT_SECRET: prodSecret, QD_JWT_ALGS: ' , ' }), /QD_JWT_ALGS is empty/);
  t.throws(() => authConfigFromEnv({ QD_JWT_ALGS: 'RS256' }), /QD_JWT_PUBLIC_KEY is not set/);
  t.throws(() => authConfigFromEnv({ QD_JWT_ALGS: 'RS256', QD_JWT_PUBLIC_KEY: 'nope' }), /not a PEM public key/);
  t.throws(() => authConfigFromEnv({ QD_JWT_ALGS: 'ES256', QD_JWT_PUBLIC_KEY: RSA_PUBLIC }), /does not fit QD_JWT_ALGS/);
  const rsOnly = authConfigFromEnv({ QD_JWT_ALGS: 'RS256', QD_JWT_PUBLIC_KEY: RSA_PUBLIC });
  t.equal(rsOnly.keys.hs256Secret, undefined, 'no secret needed without HS256');

  const dev = developmentAuthConfig();
  t.same(dev.algorithms, ['HS256']);
  t.equal(dev.keys.hs256Secret, DEVELOPMENT_JWT_SECRET);
  t.match(DEVELOPMENT_JWT_SECRET, /DEVELOPMENT/);
  accepts(t, signToken({ sub: 'rider-1', role: 'rider', ttlSec: 60 }, dev), dev, 'development config round trip');
});

t.test('role checks', async (t) => {
  const p = (role: Principal['role'], sub = `${role}-1`): Principal => ({ sub, role, exp: NOW_SEC + 60 });
  const expected: Record<string, Principal['role'][]> = {
    'rider.command': ['rider'],
    'order.follow': ['customer', 'operations'],
    'ops.feed': ['operations'],
    'service.call': ['service'],
  };
  t.same([...Actions].sort(), Object.keys(expected).sort());
  for (const action of Actions) {
    for (const role of Roles) t.equal(can(p(role), action), expected[action].includes(role), `${role} ${action}`);
  }
  t.equal(can(p('operations'), 'toString' as never), false, 'an unknown action is refused');
  t.equal(can(p('operations'), '__proto__' as never), false);

  const order = { customerId: 'cust-7' };
  t.ok(canFollowOrder(p('customer', 'cust-7'), order), 'customer follows own order');
  t.notOk(canFollowOrder(p('customer', 'cust-8'), order), 'not someone else’s');
  t.ok(canFollowOrder(p('operations', 'ops-1'), order), 'operations follow any order');
  t.notOk(canFollowOrder(p('rider', 'cust-7'), order), 'a rider whose id equals the customer id is still not the customer');
  t.notOk(canFollowOrder(p('service', 'cust-7'), order));
});

t.test('dev-token CLI', async (t) => {
  const run = (args: string[], env: NodeJS.ProcessEnv = {}) => {
    const base = { ...process.env };
    delete base.QD_JWT_SECRET;
    delete base.QD_JWT_ALGS;
    return spawnSync(process.execPath, ['--import', 'tsx', 'bin/dev-token.ts', ...args], {
      cwd: root,
      env: { ...base, ...env },
      encoding: 'utf8',
      timeout: 60_000,
    });
  };

  t.test('development secret when QD_JWT_SECRET is unset', async (t) => {
    const r = run(['--role', 'rider', '--sub', 'rider-1', '--ttl', '600']);
    t.equal(r.status, 0, r.stderr);
    t.match(r.stderr, /QD_JWT_SECRET is not set.*DEVELOPMENT/);
    const token = r.stdout.trim();
    t.equal(r.stdout, `${token}\n`, 'stdout holds the token alone');
    const v = verifyToken(token, developmentAuthConfig());
    t.ok(v.ok, v.ok ? 'verifies' : v.message);
    if (v.ok) {
      t.equal(v.principal.sub, 'rider-1');
      t.equal(v.principal.role, 'rider');
      t.ok(Math.abs(v.principal.exp - Date.now() / 1000 - 600) < 60, 'exp is about ttl from now');
    }
  });

  t.test('QD_JWT_SECRET from the environment', async (t) => {
    const secret = 'cli-secret-'.padEnd(40, 'q');
    const r = run(['--role', 'customer', '--sub', 'cust-3', '--jti', 'abc'], { QD_JWT_SECRET: secret, QD_JWT_ISSUER: 'qd-test' });
    t.equal(r.status, 0, r.stderr);
    t.equal(r.stderr, '', 'no development notice');
    const token = r.stdout.trim();
    const v = verifyToken(token, authConfigFromEnv({ QD_JWT_SECRET: secret, QD_JWT_ISSUER: 'qd-test' }));
    t.ok(v.ok && v.principal.sub === 'cust-3' && v.principal.jti === 'abc', 'verifies with the same environment');
    t.equal(verifyToken(token, developmentAuthConfig()).ok, false, 'and not with the development secret');
  });

  t.test('argument errors exit 2 with a message', async (t) => {
    const cases: [string[], RegExp][] = [
      [['--role', 'chef', '--sub', 'x'], /--role must be one of rider, customer, operations, service, got "chef"/],
      [['--sub', 'x'], /--role is required/],
      [['--role', 'rider'], /--sub is required/],
      [['--role', 'rider', '--sub', 'r'.repeat(65)], /--sub must be at most 64/],
      [['--role', 'rider', '--sub', 'x', '--ttl', 'soon'], /--ttl must be an integer/],
      [['--role', 'rider', '--sub', 'x', '--ttl', '999999'], /--ttl must be an integer in \[1, 86400\]/],
      [['--role', 'rider', '--sub', 'x', '--admin'], /Unknown option '--admin'/],
    ];
    for (const [args, message] of cases) {
      const r = run(args);
      t.equal(r.status, 2, `${args.join(' ')} exits 2`);
      t.match(r.stderr, message);
      t.match(r.stderr, /usage: npm run token/);
      t.equal(r.stdout, '', 'prints no token');
    }
  });

  t.test('a bad QD_JWT_SECRET exits 1', async (t) => {
    const r = run(['--role', 'rider', '--sub', 'x'], { QD_JWT_SECRET: 'short' });
    t.equal(r.status, 1);
    t.match(r.stderr, /QD_JWT_SECRET: .*shorter than 32 bytes/);
  });
});

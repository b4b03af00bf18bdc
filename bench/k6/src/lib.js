// Shared by the k6 scripts: environment parsing, gateway tokens, geometry.
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import { DEV_AUTH } from './protocol.js';

// ---------------------------------------------------------------- environment

/** A number from __ENV[name], or `fallback` when unset; a bad value stops the test at init, not halfway. */
export function envNumber(name, fallback, { min = -Infinity, max = Infinity, integer = false } = {}) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    throw new Error(`${name} must be ${integer ? 'an integer' : 'a number'} in [${min}, ${max}], got ${JSON.stringify(raw)}`);
  }
  return v;
}

export function envBool(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  if (/^(1|true|yes)$/i.test(raw)) return true;
  if (/^(0|false|no)$/i.test(raw)) return false;
  throw new Error(`${name} must be true or false, got ${JSON.stringify(raw)}`);
}

/** Items of a comma- or newline-separated list, trimmed, blanks and #-comment lines dropped. */
export function listOf(text) {
  return String(text || '')
    .split(/[,\r\n]+/)
    .map((x) => x.trim())
    .filter((x) => x.length > 0 && !x.startsWith('#'));
}

/** `lat,lng` as {lat, lng}. */
export function parseLatLng(name, text) {
  const parts = String(text).split(',').map(Number);
  if (parts.length !== 2 || !(Math.abs(parts[0]) <= 90) || !(Math.abs(parts[1]) <= 180)) {
    throw new Error(`${name} must be "lat,lng" in degrees, got ${JSON.stringify(text)}`);
  }
  return { lat: parts[0], lng: parts[1] };
}

/** The app socket URL: QD_URL (ws://, wss://, or http(s):// rewritten to ws) plus /v1/ws?token=. */
export function socketUrl(base, token) {
  let url = String(base).replace(/\/+$/, '').replace(/^http(s?):\/\//, 'ws$1://');
  if (!/^wss?:\/\//.test(url)) throw new Error(`QD_URL must start with ws://, wss://, http:// or https://, got ${JSON.stringify(base)}`);
  if (!url.endsWith('/v1/ws')) url += '/v1/ws';
  return `${url}?token=${encodeURIComponent(token)}`;
}

// ---------------------------------------------------------------- tokens

/**
 * Token settings from the environment, named like the gateway's own
 * (authConfigFromEnv): QD_JWT_SECRET, QD_JWT_ISSUER, QD_JWT_AUDIENCE, plus
 * QD_JWT_TTL_S, and QD_TOKENS / QD_TOKENS_FILE (text read at init) for
 * tokens issued elsewhere, e.g. for a gateway that verifies ES256 or RS256.
 */
export function authFromEnv(tokensFileText) {
  const tokens = listOf(__ENV.QD_TOKENS).concat(listOf(tokensFileText));
  const secret = __ENV.QD_JWT_SECRET || DEV_AUTH.secret;
  // The gateway refuses HS256 secrets under 32 bytes; say so here rather than as a wall of 401s.
  if (tokens.length === 0 && secret.length < 32) throw new Error('QD_JWT_SECRET must be at least 32 bytes, as the gateway requires');
  return {
    tokens,
    secret,
    usingDevSecret: tokens.length === 0 && !__ENV.QD_JWT_SECRET,
    issuer: __ENV.QD_JWT_ISSUER || DEV_AUTH.issuer,
    audience: __ENV.QD_JWT_AUDIENCE || DEV_AUTH.audience,
    // The gateway caps lifetimes at 24 h (maxLifetimeSec).
    ttlSec: envNumber('QD_JWT_TTL_S', 3600, { min: 60, max: 86400, integer: true }),
  };
}

function b64json(value) {
  return encoding.b64encode(JSON.stringify(value), 'rawurl');
}

/** An HS256 JWT with the claims gateway/auth.ts verifies: iss, aud, sub, role, iat, exp. */
export function signToken(auth, role, sub) {
  const iat = Math.floor(Date.now() / 1000);
  const input = `${b64json({ alg: 'HS256', typ: 'JWT' })}.${b64json({ iss: auth.issuer, aud: auth.audience, sub, role, iat, exp: iat + auth.ttlSec })}`;
  return `${input}.${crypto.hmac('sha256', auth.secret, input, 'base64rawurl')}`;
}

/** The `sub` and `role` claims of a token (not verified: the gateway does that). */
export function claimsOf(token) {
  const part = String(token).split('.')[1];
  if (!part) throw new Error('a token in QD_TOKENS is not a JWT');
  const claims = JSON.parse(encoding.b64decode(part, 'rawurl', 's'));
  return { sub: String(claims.sub), role: String(claims.role) };
}

// ---------------------------------------------------------------- geometry and randomness

const EARTH_M = 6371008.8;
const RAD = Math.PI / 180;

/** Great-circle distance in metres (the engine's geofence and teleport checks use haversine too). */
export function distanceM(a, b) {
  const dLat = (b.lat - a.lat) * RAD;
  const dLng = (b.lng - a.lng) * RAD;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * RAD) * Math.cos(b.lat * RAD) * Math.sin(dLng / 2) ** 2;
  return 2 * EARTH_M * Math.asin(Math.min(1, Math.sqrt(h)));
}

/** The point `northM` metres north and `eastM` east of `p`. */
export function offsetM(p, northM, eastM) {
  return { lat: p.lat + northM / (EARTH_M * RAD), lng: p.lng + eastM / (EARTH_M * RAD * Math.cos(p.lat * RAD)) };
}

/**
 * The point `metres` along the way from `from` to `to`, or `to` itself when it
 * is closer. Short of the target it stays a little under `metres`, so a rider
 * never exceeds the speed it was given (the engine rejects teleports).
 */
export function moveToward(from, to, metres) {
  const d = distanceM(from, to);
  if (d <= metres) return { lat: to.lat, lng: to.lng };
  const f = (metres / d) * 0.999;
  return { lat: from.lat + (to.lat - from.lat) * f, lng: from.lng + (to.lng - from.lng) * f };
}

/** A uniform random point within `radiusM` of `centre`. */
export function pointAround(centre, radiusM, random) {
  const r = radiusM * Math.sqrt(random());
  const a = 2 * Math.PI * random();
  return offsetM(centre, r * Math.cos(a), r * Math.sin(a));
}

/** A seeded generator (mulberry32), so a rider's walk is the same on every run with the same seed. */
export function seededRandom(seed) {
  let x = seed >>> 0;
  return function random() {
    x = (x + 0x6d2b79f5) >>> 0;
    let t = x;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A 32-bit hash of a string (FNV-1a), to seed per-rider randomness from its id. */
export function hashOf(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

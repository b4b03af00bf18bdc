// k6 load script: every VU is a rider app. It connects, waits for hello, goes
// online near QD_CENTER, streams GPS fixes, accepts the offers it gets and
// walks each order through pickup and drop-off to delivery, then goes offline
// when its session is over. See bench/k6/README.md for the settings and metrics.
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { Limits, MessageType as T, PROTOCOL_VERSION } from './protocol.js';
import {
  authFromEnv,
  claimsOf,
  distanceM,
  envBool,
  envNumber,
  hashOf,
  moveToward,
  parseLatLng,
  pointAround,
  seededRandom,
  signToken,
  socketUrl,
} from './lib.js';
import { openSession } from './session.js';

// ---------------------------------------------------------------- settings (init context)

// open() only works in k6's init context, so an optional token file is read here.
const AUTH = authFromEnv(__ENV.QD_TOKENS_FILE ? open(__ENV.QD_TOKENS_FILE) : '');
const URL_BASE = __ENV.QD_URL || 'ws://127.0.0.1:8080';
const RIDERS = envNumber('QD_RIDERS', AUTH.tokens.length || 10, { min: 1, integer: true });
const ITERATIONS = envNumber('QD_ITERATIONS', 1, { min: 1, integer: true });
const PREFIX = __ENV.QD_RIDER_PREFIX || 'k6-rider-';
const CENTRE = parseLatLng('QD_CENTER', __ENV.QD_CENTER || '12.9716,77.5946');
const RADIUS_M = envNumber('QD_RADIUS_M', 3000, { min: 0 });
// The engine rejects fixes implying more than maxSpeedMps (60 m/s by default) as teleports.
const SPEED_MPS = envNumber('QD_SPEED_MPS', 8, { min: 0, max: 60 });
const FIX_INTERVAL_MS = envNumber('QD_FIX_INTERVAL_MS', 1000, { min: 10, integer: true });
const FIX_BATCH = envNumber('QD_FIX_BATCH', 1, { min: 1, max: Limits.maxFixesPerFrame, integer: true });
const SESSION_S = envNumber('QD_SESSION_S', 60, { min: 1 });
const DRAIN_S = envNumber('QD_DRAIN_S', 120, { min: 0 });
// Declared before the rider's fixes enter the server's 75 m geofence (engine geofenceM), so the
// order hears of the arrival once; closer than that, the geofence tells the rider first.
const ARRIVE_M = envNumber('QD_ARRIVE_M', 100, { min: 0 });
const DWELL_MS = envNumber('QD_DWELL_MS', 2000, { min: 0, integer: true });
const ACCEPT = envBool('QD_ACCEPT', true);
const ACCEPT_DELAY_MS = envNumber('QD_ACCEPT_DELAY_MS', 1000, { min: 0, integer: true });
const FIX_P95_MS = envNumber('QD_FIX_P95_MS', 250, { min: 1 });

if (AUTH.tokens.length > 0 && RIDERS > AUTH.tokens.length) {
  throw new Error(`QD_RIDERS=${RIDERS} but only ${AUTH.tokens.length} tokens were given: each rider VU needs its own`);
}
// Leave a quarter of the per-connection frame budget for commands and pings.
const fixFramesPerSecond = 1000 / (FIX_INTERVAL_MS * FIX_BATCH);
if (fixFramesPerSecond > Limits.messagesPerSecond * 0.75) {
  throw new Error(
    `QD_FIX_INTERVAL_MS=${FIX_INTERVAL_MS} with QD_FIX_BATCH=${FIX_BATCH} sends ${fixFramesPerSecond.toFixed(1)} frames/s; ` +
      `the gateway allows ${Limits.messagesPerSecond} per connection: raise the interval or batch more fixes`,
  );
}

const FIX_TYPE = FIX_BATCH > 1 ? 'fixes' : 'fix';

export const options = {
  scenarios: {
    riders: {
      executor: 'per-vu-iterations',
      vus: RIDERS,
      iterations: ITERATIONS,
      // A session runs QD_SESSION_S, then up to QD_DRAIN_S to finish the order in hand.
      maxDuration: `${Math.ceil(SESSION_S + DRAIN_S + 30)}s`,
    },
  },
  thresholds: {
    [`qd_ack_latency{type:${FIX_TYPE}}`]: [`p(95)<${FIX_P95_MS}`],
    qd_ack_latency: ['p(99)<1000'],
    qd_errors: ['count==0'],
    qd_fixes_rejected: ['count==0'],
    qd_disconnects: ['count==0'],
    checks: ['rate>0.99'],
  },
};

// ---------------------------------------------------------------- metrics

const fixesSent = new Counter('qd_fixes_sent');
const fixesAccepted = new Counter('qd_fixes_accepted');
const fixesStale = new Counter('qd_fixes_stale');
const fixesRejected = new Counter('qd_fixes_rejected');
const offers = new Counter('qd_offers');
const offersGone = new Counter('qd_offers_gone');
const deliveries = new Counter('qd_deliveries');
/** Offer received -> delivered ack. */
const deliveryTime = new Trend('qd_delivery_time', true);
/** Arrivals the server's geofence noticed before the rider said so. */
const geofenceArrivals = new Counter('qd_geofence_arrivals');
/** Orders taken from the rider by the server (cancelled, reassigned) while it held them. */
const ordersLost = new Counter('qd_orders_lost');
/** Orders still in hand when QD_DRAIN_S ran out. */
const ordersUnfinished = new Counter('qd_orders_unfinished');

export function setup() {
  if (AUTH.usingDevSecret) {
    console.warn('QD_JWT_SECRET is not set: signing with the public development secret, which only a development gateway accepts');
  }
}

export default function () {
  const token = AUTH.tokens.length > 0 ? AUTH.tokens[__VU - 1] : null;
  const riderId = token ? claimsOf(token).sub : `${PREFIX}${__VU}`;
  rideSession(riderId, token || signToken(AUTH, 'rider', riderId));
}

// ---------------------------------------------------------------- one rider session

function rideSession(riderId, token) {
  // Seeded from the id and iteration, so a run replays the same walks.
  const random = seededRandom(hashOf(riderId) ^ Math.imul(__ITER + 1, 0x9e3779b1));
  let pos = pointAround(CENTRE, RADIUS_M, random);
  let waypoint = pointAround(CENTRE, RADIUS_M, random);
  // Zero until the first fix: the first fix is sent where `online` put the rider, later ones move from it.
  let movedAt = 0;
  let fixSeq = 0;
  let queue = [];
  let online = false;
  let ending = false;
  let leaving = false;
  let statusSeq = -1;
  /** The offer being answered: { orderId, pickup, dropoff, offeredAt, timer }. */
  let offer = null;
  /** The order in hand: { orderId, pickup, dropoff, offeredAt, phase, arrivedAt, busy }. */
  let job = null;
  let fixTimer = null;

  const session = openSession(socketUrl(URL_BASE, token), riderId, {
    hello(msg) {
      check(msg, {
        'hello names this rider': (m) => m.role === 'rider' && m.userId === riderId && m.v === PROTOCOL_VERSION,
      });
      // Capacity 1: this walker carries one order at a time (a bundle's drop-off order is the engine's to choose).
      session.command('online', { capacity: 1, position: pos }, (answer) => {
        const ok = check(answer, {
          'rider went online': (a) => a.t === T.ack && a.result !== undefined && a.result.status === 'available',
        });
        if (!ok) return session.close();
        online = true;
        fixTimer = session.every(FIX_INTERVAL_MS, tick);
        session.after(SESSION_S * 1000, () => {
          ending = true;
          leaveIfFree();
        });
      });
    },
    message(msg) {
      if (msg.t === T.riderState) onRiderState(msg);
      else if (msg.t === T.offer) onOffer(msg);
      else if (msg.t === T.offerGone) onOfferGone(msg);
    },
  });
  // However the session goes, it ends: this is the hard stop for an order that never finishes.
  session.after((SESSION_S + DRAIN_S) * 1000, () => {
    if (job) ordersUnfinished.add(1);
    session.close();
  });

  function flush() {
    if (queue.length === 0) return;
    const batch = queue;
    queue = [];
    fixesSent.add(batch.length);
    const onAnswer = (a) => {
      if (a.t !== T.ack || !a.result) return;
      fixesAccepted.add(a.result.accepted || 0);
      fixesStale.add(a.result.stale || 0);
      fixesRejected.add(a.result.rejected || 0);
    };
    if (FIX_TYPE === 'fix') {
      const [lat, lng, ts, seq] = batch[0];
      session.command('fix', { lat, lng, ts, seq }, onAnswer);
    } else {
      session.command('fixes', { fixes: batch }, onAnswer);
    }
  }

  /** One GPS period: move, maybe say we arrived, queue the fix, take the next step of the delivery. */
  function tick() {
    const now = Date.now();
    const target = job ? (job.phase === 'toPickup' || job.phase === 'atPickup' ? job.pickup : job.dropoff) : waypoint;
    if (movedAt > 0) {
      const next = moveToward(pos, target, (SPEED_MPS * (now - movedAt)) / 1000);
      // Said before the fix that crosses the radius is sent: the gateway applies commands in order.
      if (job && !job.busy && (job.phase === 'toPickup' || job.phase === 'toDropoff') && distanceM(next, target) <= ARRIVE_M) arrive(job);
      pos = next;
    }
    movedAt = now;
    // Above the last seq and at least the clock: the counter keeps increasing across sessions of the same rider.
    fixSeq = Math.max(fixSeq + 1, now);
    queue.push([pos.lat, pos.lng, now, fixSeq]);
    if (queue.length >= FIX_BATCH) flush();
    if (job && !job.busy && now - job.arrivedAt >= DWELL_MS) {
      if (job.phase === 'atPickup') pickUp(job);
      else if (job.phase === 'atDropoff') deliver(job);
    }
    if (!job && distanceM(pos, waypoint) < 1) waypoint = pointAround(CENTRE, RADIUS_M, random);
  }

  function onRiderState(msg) {
    // riderState may overtake or trail other frames: only a higher seq is news.
    if (msg.seq < statusSeq) return;
    statusSeq = msg.seq;
    if (!job || job.busy) return;
    if (msg.orderIds.indexOf(job.orderId) < 0) {
      ordersLost.add(1);
      job = null;
      leaveIfFree();
    } else if ((job.phase === 'toPickup' && msg.status === 'atPickup') || (job.phase === 'toDropoff' && msg.status === 'atDropoff')) {
      geofenceArrivals.add(1);
      job.phase = msg.status;
      job.arrivedAt = Date.now();
    }
  }

  function onOffer(msg) {
    offers.add(1);
    // Not `online`: an offer can arrive before the ack of the `online` that made this rider available.
    if (!ACCEPT || ending || job || offer) {
      session.command('decline', { orderId: msg.orderId });
      return;
    }
    offer = { orderId: msg.orderId, pickup: msg.pickup, dropoff: msg.dropoff, offeredAt: Date.now(), timer: null };
    offer.timer = session.after(ACCEPT_DELAY_MS, () => accept(offer));
  }

  function onOfferGone(msg) {
    offersGone.add(1, { reason: String(msg.reason) });
    // Only an offer not yet answered is dropped here; an accept in flight is settled by its answer.
    if (offer && offer.orderId === msg.orderId && offer.timer !== null) {
      session.cancel(offer.timer);
      offer = null;
      leaveIfFree();
    }
  }

  function accept(o) {
    o.timer = null;
    const sent = session.command('accept', { orderId: o.orderId }, (a) => {
      offer = null;
      if (a.t === T.ack) {
        job = { orderId: o.orderId, pickup: o.pickup, dropoff: o.dropoff, offeredAt: o.offeredAt, phase: 'toPickup', arrivedAt: 0, busy: false };
      } else {
        leaveIfFree();
      }
    });
    if (!sent) offer = null;
  }

  function arrive(j) {
    const where = j.phase === 'toPickup' ? 'pickup' : 'dropoff';
    const at = where === 'pickup' ? 'atPickup' : 'atDropoff';
    // The geofence got there first while this was in flight: the arrival stands, nothing failed.
    const alreadyThere = (e) => e.error === 'QD_ERR_INVALID_TRANSITION' && e.state === at;
    j.busy = true;
    session.command(
      'arrived',
      { orderId: j.orderId, where },
      (a) => {
        j.busy = false;
        if (a.t === T.ack || alreadyThere(a)) {
          if (a.t !== T.ack) geofenceArrivals.add(1);
          j.phase = at;
          j.arrivedAt = Date.now();
        } else {
          drop(j);
        }
      },
      alreadyThere,
    );
  }

  function pickUp(j) {
    j.busy = true;
    session.command('pickedUp', { orderId: j.orderId }, (a) => {
      j.busy = false;
      if (a.t === T.ack) j.phase = 'toDropoff';
      else drop(j);
    });
  }

  function deliver(j) {
    j.busy = true;
    // The rider never learns the customer's OTP; a proof reference (a photo's id in the real app) is the other accepted proof.
    session.command('delivered', { orderId: j.orderId, proofRef: `k6:${riderId}:${j.orderId}` }, (a) => {
      j.busy = false;
      if (a.t === T.ack) {
        deliveries.add(1);
        deliveryTime.add(Date.now() - j.offeredAt);
      }
      drop(j);
    });
  }

  /** The order is done with, delivered or refused; an ending session may now go offline. */
  function drop(j) {
    if (job === j) job = null;
    leaveIfFree();
  }

  function leaveIfFree() {
    if (!ending || !online || leaving || job || offer) return;
    leaving = true;
    // Fixes stop before `offline`: the engine rejects fixes from an offline rider.
    session.cancel(fixTimer);
    flush();
    session.command('offline', {}, (a) => {
      check(a, { 'rider went offline': (x) => x.t === T.ack && x.result !== undefined && x.result.status === 'offline' });
      session.close();
    });
  }
}

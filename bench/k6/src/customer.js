// k6 load script: every VU is a customer app following existing orders. It
// connects as each order's customer, sends `follow`, and records every status
// event and how old each rider position is when it arrives, until the orders
// are delivered or cancelled. See bench/k6/README.md for the settings and metrics.
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { Limits, MessageType as T, PROTOCOL_VERSION } from './protocol.js';
import { authFromEnv, claimsOf, envNumber, listOf, signToken, socketUrl } from './lib.js';
import { openSession } from './session.js';

// ---------------------------------------------------------------- settings (init context)

// open() only works in k6's init context, so the optional files are read here.
const AUTH = authFromEnv(__ENV.QD_TOKENS_FILE ? open(__ENV.QD_TOKENS_FILE) : '');
const ORDERS_TEXT = `${__ENV.QD_ORDERS || ''}\n${__ENV.QD_ORDERS_FILE ? open(__ENV.QD_ORDERS_FILE) : ''}`;
const URL_BASE = __ENV.QD_URL || 'ws://127.0.0.1:8080';
const SESSION_S = envNumber('QD_SESSION_S', 600, { min: 1 });
// Positions are throttled to one per interval per order, so a fix may wait up to an interval before it is sent.
const POSITION_P95_MS = envNumber('QD_POSITION_P95_MS', Limits.positionIntervalMs + 500, { min: 1 });

/** `customerId:orderId` entries: a customer may only follow its own orders, so each order names its customer. */
const ENTRIES = listOf(ORDERS_TEXT).map((entry) => {
  const i = entry.indexOf(':');
  if (i <= 0 || i === entry.length - 1) throw new Error(`QD_ORDERS entries are customerId:orderId, got ${JSON.stringify(entry)}`);
  return { customerId: entry.slice(0, i), orderId: entry.slice(i + 1) };
});
if (ENTRIES.length === 0) {
  throw new Error('customer.js follows existing orders: set QD_ORDERS="customerId:orderId,..." or QD_ORDERS_FILE');
}
// More VUs than entries would leave some with nothing to follow.
const CUSTOMERS = envNumber('QD_CUSTOMERS', ENTRIES.length, { min: 1, max: ENTRIES.length, integer: true });

/** Pre-issued customer tokens by subject, when QD_TOKENS replaces signing. */
const TOKEN_OF = {};
for (const token of AUTH.tokens) TOKEN_OF[claimsOf(token).sub] = token;

const TERMINAL = { delivered: true, cancelled: true };

export const options = {
  scenarios: {
    customers: {
      executor: 'per-vu-iterations',
      vus: CUSTOMERS,
      iterations: 1,
      maxDuration: `${Math.ceil(SESSION_S + 30)}s`,
    },
  },
  thresholds: {
    qd_position_latency: [`p(95)<${POSITION_P95_MS}`],
    qd_status_sequence_errors: ['count==0'],
    qd_errors: ['count==0'],
    qd_disconnects: ['count==0'],
    checks: ['rate>0.99'],
  },
};

// ---------------------------------------------------------------- metrics

/** orderStatus frames by `status`. */
const statusEvents = new Counter('qd_status_events');
/** Event time (server clock) -> received, for events that happened after the follow was acked. */
const statusLatency = new Trend('qd_status_latency', true);
/** orderStatus frames whose seq was not the previous one plus one (the protocol promises no gaps, no repeats). */
const sequenceErrors = new Counter('qd_status_sequence_errors');
const positions = new Counter('qd_positions');
/** The rider's fix timestamp -> riderPosition received: how old the position on the customer's map is. */
const positionLatency = new Trend('qd_position_latency', true);
/** Followed orders that reached delivered or cancelled, by `status`. */
const ordersFinished = new Counter('qd_orders_finished');
/** Followed orders still open when QD_SESSION_S ran out. */
const ordersUnfinished = new Counter('qd_orders_unfinished');

export function setup() {
  if (AUTH.usingDevSecret) {
    console.warn('QD_JWT_SECRET is not set: signing with the public development secret, which only a development gateway accepts');
  }
}

export default function () {
  // Entry i goes to VU (i mod QD_CUSTOMERS) + 1; one socket per customer among them.
  const byCustomer = {};
  ENTRIES.forEach((e, i) => {
    if (i % CUSTOMERS !== __VU - 1) return;
    if (!byCustomer[e.customerId]) byCustomer[e.customerId] = [];
    byCustomer[e.customerId].push(e.orderId);
  });
  for (const customerId of Object.keys(byCustomer)) follow(customerId, byCustomer[customerId]);
}

function tokenFor(customerId) {
  if (AUTH.tokens.length === 0) return signToken(AUTH, 'customer', customerId);
  const token = TOKEN_OF[customerId];
  if (!token) throw new Error(`no token in QD_TOKENS has sub ${JSON.stringify(customerId)}`);
  return token;
}

// ---------------------------------------------------------------- one customer connection

function follow(customerId, orderIds) {
  /** Per order: last status seq seen, the seq when the follow was acked (later events are live), finished. */
  const orders = {};
  for (const orderId of orderIds) orders[orderId] = { lastSeq: 0, liveAfter: Infinity, done: false };

  const session = openSession(socketUrl(URL_BASE, tokenFor(customerId)), customerId, {
    hello(msg) {
      check(msg, {
        'hello names this customer': (m) => m.role === 'customer' && m.userId === customerId && m.v === PROTOCOL_VERSION,
      });
      for (const orderId of orderIds) {
        session.command('follow', { orderId }, (a) => {
          const o = orders[orderId];
          const ok = check(a, { 'follow acked': (x) => x.t === T.ack && x.result !== undefined && x.result.orderId === orderId });
          if (ok) o.liveAfter = a.result.seq;
          else o.done = true;
          closeIfDone();
        });
      }
    },
    message(msg) {
      if (msg.t === T.orderStatus) onStatus(msg);
      else if (msg.t === T.riderPosition && orders[msg.orderId]) {
        positions.add(1);
        positionLatency.add(Date.now() - msg.ts);
      }
    },
  });
  session.after(SESSION_S * 1000, () => {
    for (const orderId of orderIds) if (!orders[orderId].done) ordersUnfinished.add(1);
    session.close();
  });

  function onStatus(msg) {
    const o = orders[msg.orderId];
    if (!o) return;
    if (msg.seq !== o.lastSeq + 1) sequenceErrors.add(1);
    if (msg.seq <= o.lastSeq) return;
    o.lastSeq = msg.seq;
    statusEvents.add(1, { status: String(msg.status) });
    if (msg.seq > o.liveAfter) statusLatency.add(Date.now() - msg.at);
    if (TERMINAL[msg.status]) {
      ordersFinished.add(1, { status: String(msg.status) });
      o.done = true;
      closeIfDone();
    }
  }

  // A replayed history can end before the follow's ack arrives: wait for the acks, or they count as unanswered.
  function closeIfDone() {
    if (session.pendingCount === 0 && orderIds.every((id) => orders[id].done)) session.close();
  }
}

// One app connection to the gateway, shared by the rider and customer scripts:
// numbered commands with their acks timed, pings, timers, and a clean close.
//
// k6/websockets, not the legacy k6/ws: it is the module k6 recommends and has
// been stable since k6 v1.6 (the k6/experimental/websockets path is deprecated
// and due to be removed). Its global event loop lets one VU hold several
// sockets (a customer script VU follows several customers' orders) and run
// setTimeout/setInterval beside them; k6/ws runs a blocking loop per socket.
// Binary frames go out as an ArrayBuffer and, with binaryType 'arraybuffer',
// come back as one.
import { WebSocket } from 'k6/websockets';
import { Counter, Trend } from 'k6/metrics';
import { MessageType as T, decode, encode, Limits } from './protocol.js';

// Metrics have to be created in k6's init context, hence here at module level.
export const metrics = {
  /** Command sent -> its ack or error received, tagged with the message `type`. */
  ackLatency: new Trend('qd_ack_latency', true),
  /** Acks by message `type`. */
  acks: new Counter('qd_acks'),
  /** Refusals by `type` and `code` (the QD_ERR_* name, or CONNECT_FAILED, NO_ANSWER, UNDECODABLE). */
  errors: new Counter('qd_errors'),
  /** Socket opened -> hello received. */
  helloLatency: new Trend('qd_hello_latency', true),
  /** ping -> pong round trip. */
  pingRtt: new Trend('qd_ping_rtt', true),
  /** Connections the gateway closed on us, by close `code`. */
  disconnects: new Counter('qd_disconnects'),
  /** goAway frames, by `reason`. */
  goAways: new Counter('qd_go_aways'),
};

/** Idle connections are closed after Limits.idleTimeoutMs; the protocol asks apps to ping every 25 s. */
const PING_MS = 25000;
/** Refusals logged per connection; the rest only count, so a broken run does not flood the console. */
const LOGGED_REFUSALS = 5;

/**
 * Opens a connection. `handlers.hello(msg)` runs once the gateway greets us,
 * `handlers.message(msg)` for every other frame that is not an ack or error,
 * `handlers.closed()` when the socket is gone, whoever closed it.
 */
export function openSession(url, label, handlers) {
  const openedAt = Date.now();
  const pending = new Map();
  const timeouts = new Set();
  const intervals = new Set();
  let s = 0;
  let greeted = false;
  let closing = false;
  let lastError = '';
  let logged = 0;

  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';

  function clearTimers() {
    for (const id of timeouts) clearTimeout(id);
    for (const id of intervals) clearInterval(id);
    timeouts.clear();
    intervals.clear();
  }

  function refusal(type, msg) {
    metrics.errors.add(1, { type, code: String(msg.error) });
    if (logged++ < LOGGED_REFUSALS) console.warn(`${label}: ${type} refused: ${msg.error} ${msg.message || ''}${msg.state ? ` (state ${msg.state})` : ''}`);
  }

  function answered(msg) {
    const p = pending.get(msg.s);
    // An answer to an `s` we are not waiting for (a dup:true replay) changes nothing.
    if (!p) return;
    pending.delete(msg.s);
    metrics.ackLatency.add(Date.now() - p.at, { type: p.type });
    if (msg.t === T.ack) metrics.acks.add(1, { type: p.type });
    else if (!(p.benign && p.benign(msg))) refusal(p.type, msg);
    if (p.done) p.done(msg);
  }

  const session = {
    get open() {
      return !closing && ws.readyState === WebSocket.OPEN;
    },
    get pendingCount() {
      return pending.size;
    },
    /**
     * Sends command `type` with the next `s`. `done(answer)` gets its ack or
     * error frame; `benign(error)` says which refusals are expected outcomes
     * rather than errors. False when the socket is not open.
     */
    command(type, fields, done, benign) {
      if (!session.open) return false;
      s += 1;
      pending.set(s, { type, at: Date.now(), done, benign });
      ws.send(encode(Object.assign({ t: T[type], s }, fields)));
      return true;
    },
    after(ms, fn) {
      const id = setTimeout(() => {
        timeouts.delete(id);
        fn();
      }, ms);
      timeouts.add(id);
      return id;
    },
    every(ms, fn) {
      const id = setInterval(fn, ms);
      intervals.add(id);
      return id;
    },
    cancel(id) {
      if (timeouts.delete(id)) clearTimeout(id);
      if (intervals.delete(id)) clearInterval(id);
    },
    /** Stops the timers and closes; commands still unanswered count as NO_ANSWER errors. */
    close() {
      if (closing) return;
      closing = true;
      clearTimers();
      if (pending.size > 0) {
        metrics.errors.add(pending.size, { type: 'unanswered', code: 'NO_ANSWER' });
        pending.clear();
      }
      // Closing while still connecting is left to onopen: k6 queues the close frame for a writer that does not exist yet.
      if (ws.readyState === WebSocket.OPEN) ws.close();
    },
  };

  ws.onopen = () => {
    if (closing) ws.close();
  };

  ws.onmessage = (event) => {
    const msg = decode(event.data);
    if (msg === null) {
      metrics.errors.add(1, { type: 'frame', code: 'UNDECODABLE' });
      return;
    }
    switch (msg.t) {
      case T.hello:
        greeted = true;
        metrics.helloLatency.add(Date.now() - openedAt);
        session.every(Math.min(PING_MS, Limits.idleTimeoutMs / 2), () => {
          if (session.open) ws.send(encode({ t: T.ping, ts: Date.now() }));
        });
        handlers.hello(msg);
        break;
      case T.ack:
      case T.error:
        // An error without `s` refused the connection's frame as a whole (rate limit, malformed frame).
        if (msg.s === undefined) refusal('connection', msg);
        else answered(msg);
        break;
      case T.pong:
        if (typeof msg.ts === 'number') metrics.pingRtt.add(Date.now() - msg.ts);
        break;
      case T.goAway:
        metrics.goAways.add(1, { reason: String(msg.reason) });
        break;
      default:
        handlers.message(msg);
    }
  };

  ws.onerror = (event) => {
    lastError = String((event && event.error) || 'socket error');
  };

  ws.onclose = (event) => {
    clearTimers();
    if (!greeted) {
      metrics.errors.add(1, { type: 'connect', code: 'CONNECT_FAILED' });
      console.error(`${label}: could not connect: ${lastError || `closed with ${event.code}`}`);
    } else if (!closing) {
      metrics.disconnects.add(1, { code: String(event.code || 0) });
      if (pending.size > 0) metrics.errors.add(pending.size, { type: 'unanswered', code: 'NO_ANSWER' });
    }
    closing = true;
    pending.clear();
    if (handlers.closed) handlers.closed();
  };

  return session;
}

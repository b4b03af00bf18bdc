// The operations map: one opsSnapshot a second from /v1/ops, drawn on a canvas
// with no tiles (the page must work offline). Globals from the vendor scripts:
// msgpackr (frames) and h3 (cell outlines).
(() => {
  'use strict';

  const OPS_SNAPSHOT = 96;
  const STATUS_COLOURS = {
    available: '#2ecc71',
    offered: '#f1c40f',
    toPickup: '#3498db',
    atPickup: '#9b59b6',
    toDropoff: '#e67e22',
    atDropoff: '#e84393',
    onBreak: '#7f8c8d',
  };
  const ORDER_COLOURS = { assigned: '#3498db', atPickup: '#9b59b6', pickedUp: '#e67e22', atDropoff: '#e84393', escalated: '#ff3b30' };
  const WAITING_ORDER = '#f5f5f5';
  const PAD = 0.08;
  const MAX_CELL_OUTLINES = 50000;

  const canvas = document.getElementById('map');
  const g = canvas.getContext('2d');
  const statusEl = document.getElementById('status');
  const token = new URLSearchParams(location.search).get('token') || '';
  const unpackr = new msgpackr.Unpackr({ useRecords: false, mapsAsObjects: true });

  /** rider id -> { from, to, start, duration, status }: drawn between the last two positions. */
  const riders = new Map();
  let orders = [];
  let cells = [];
  let frameInterval = 1000;
  let lastFrameClientAt = 0;
  /** The view eases toward the data's bounding box, so riders at the edge don't shake the map. */
  let view = null;
  let target = null;
  const outlines = new Map();

  // What a test (or a curious operator in the console) can read.
  const summary = {
    connected: false,
    frames: 0,
    /** Server clock of the latest frame. */
    lastFrameAt: null,
    res: null,
    /** Latest positions by rider id, as the server sent them. */
    riders: {},
    orders: 0,
    cells: 0,
    /** Cell outlines drawn in the latest render. */
    cellsDrawn: 0,
    ridersDrawn: 0,
    counters: null,
    error: null,
  };
  window.quickdashOps = summary;

  function setStatus(text, cls) {
    statusEl.textContent = text;
    statusEl.className = cls || '';
  }

  // ------------------------------------------------------------ legend

  const legend = document.getElementById('legend');
  for (const [status, colour] of Object.entries(STATUS_COLOURS)) {
    const li = document.createElement('li');
    const sw = document.createElement('span');
    sw.className = 'swatch';
    sw.style.background = colour;
    li.append(sw, document.createTextNode(status));
    legend.append(li);
  }

  // ------------------------------------------------------------ feed

  let backoff = 1000;
  function connect() {
    if (!token) {
      summary.error = 'no token';
      setStatus('no token: open /ops?token=<operations JWT>', 'down');
      return;
    }
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/v1/ops?token=${encodeURIComponent(token)}`);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      backoff = 1000;
      summary.connected = true;
      summary.error = null;
      setStatus('live', 'live');
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = unpackr.unpack(new Uint8Array(ev.data));
      } catch (err) {
        summary.error = `bad frame: ${err.message}`;
        return;
      }
      if (msg && msg.t === OPS_SNAPSHOT) onFrame(msg);
    };
    ws.onclose = (ev) => {
      summary.connected = false;
      if (ev.code === 4001) {
        summary.error = 'token expired';
        setStatus('token expired: reload with a new token', 'down');
        return;
      }
      // A refused upgrade (bad token, wrong role) also lands here, as 1006.
      setStatus(`disconnected (${ev.code}); retrying in ${Math.round(backoff / 1000)} s`, 'down');
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 30000);
    };
  }

  function onFrame(msg) {
    const now = performance.now();
    if (lastFrameClientAt) frameInterval = Math.min(Math.max(now - lastFrameClientAt, 200), 3000);
    lastFrameClientAt = now;
    const seen = new Set();
    const positions = {};
    for (const [id, status, lat, lng] of msg.riders) {
      seen.add(id);
      positions[id] = { lat, lng, status };
      const r = riders.get(id);
      if (r) {
        // Start from where the dot is drawn now, so a late frame never makes it jump.
        r.from = positionOf(r, now);
        r.to = { lat, lng };
        r.start = now;
        r.duration = frameInterval;
        r.status = status;
      } else {
        riders.set(id, { from: { lat, lng }, to: { lat, lng }, start: now, duration: 0, status });
      }
    }
    for (const id of riders.keys()) if (!seen.has(id)) riders.delete(id);
    orders = msg.orders;
    cells = msg.cells;
    summary.frames += 1;
    summary.lastFrameAt = msg.now;
    summary.res = msg.res;
    summary.riders = positions;
    summary.orders = orders.length;
    summary.cells = cells.length;
    summary.counters = msg.counters;
    showCounters(msg.counters);
    document.getElementById('shown-riders').textContent = fmt(msg.riders.length);
    document.getElementById('shown-orders').textContent = fmt(orders.length);
    document.getElementById('shown-cells').textContent = fmt(cells.length);
    document.getElementById('res').textContent = String(msg.res);
    target = boundsOf(msg);
    if (!view && target) view = { ...target };
  }

  const fmt = (n) => (typeof n === 'number' ? n.toLocaleString('en-US', { maximumFractionDigits: 1 }) : '–');
  const ms = (v) => (v === null || v === undefined ? '–' : v >= 1000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`);

  function showCounters(c) {
    for (const el of document.querySelectorAll('[data-counter]')) {
      const k = el.dataset.counter;
      const v = c[k];
      el.textContent = k === 'dispatchP50Ms' || k === 'dispatchP95Ms' ? ms(v) : k === 'eventLoopLagMs' ? `${fmt(v)} ms` : fmt(v);
    }
  }

  // ------------------------------------------------------------ geometry

  function outlineOf(cell) {
    let o = outlines.get(cell);
    if (!o) {
      if (outlines.size > MAX_CELL_OUTLINES) outlines.clear();
      o = h3.cellToBoundary(cell);
      outlines.set(cell, o);
    }
    return o;
  }

  function boundsOf(msg) {
    let s = Infinity, w = Infinity, n = -Infinity, e = -Infinity;
    const add = (lat, lng) => {
      if (lat < s) s = lat;
      if (lat > n) n = lat;
      if (lng < w) w = lng;
      if (lng > e) e = lng;
    };
    for (const r of msg.riders) add(r[2], r[3]);
    for (const o of msg.orders) {
      add(o[2], o[3]);
      add(o[4], o[5]);
    }
    for (const c of msg.cells) for (const [lat, lng] of outlineOf(c[0])) add(lat, lng);
    if (!Number.isFinite(s)) return null;
    // A single point still needs an area to show: about a kilometre.
    const minSpan = 0.01;
    if (n - s < minSpan) {
      const m = (n + s) / 2;
      s = m - minSpan / 2;
      n = m + minSpan / 2;
    }
    if (e - w < minSpan) {
      const m = (e + w) / 2;
      w = m - minSpan / 2;
      e = m + minSpan / 2;
    }
    return { s, w, n, e };
  }

  function positionOf(r, now) {
    if (r.duration <= 0) return r.to;
    const f = Math.min(1, (now - r.start) / r.duration);
    return { lat: r.from.lat + (r.to.lat - r.from.lat) * f, lng: r.from.lng + (r.to.lng - r.from.lng) * f };
  }

  /** Equirectangular projection of the current view onto the canvas, aspect kept. */
  function projection(width, height) {
    const midLat = ((view.s + view.n) / 2) * (Math.PI / 180);
    const kx = Math.cos(midLat);
    const spanX = (view.e - view.w) * kx * (1 + 2 * PAD);
    const spanY = (view.n - view.s) * (1 + 2 * PAD);
    const scale = Math.min(width / spanX, height / spanY);
    const cx = (view.w + view.e) / 2;
    const cy = (view.s + view.n) / 2;
    return (lat, lng) => [width / 2 + (lng - cx) * kx * scale, height / 2 - (lat - cy) * scale];
  }

  // ------------------------------------------------------------ drawing

  function resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    return dpr;
  }

  function draw() {
    const now = performance.now();
    const dpr = resize();
    const width = canvas.width / dpr;
    const height = canvas.height / dpr;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.fillStyle = '#0f1419';
    g.fillRect(0, 0, width, height);
    if (!view) {
      g.fillStyle = '#8593a3';
      g.font = '14px system-ui, sans-serif';
      g.fillText(summary.connected ? 'waiting for riders and orders…' : 'not connected', 20, 30);
      summary.cellsDrawn = 0;
      summary.ridersDrawn = 0;
      return;
    }
    if (target) {
      const k = 0.15;
      for (const side of ['s', 'w', 'n', 'e']) view[side] += (target[side] - view[side]) * k;
    }
    const at = projection(width, height);
    drawGrid(at, width, height);
    summary.cellsDrawn = drawCells(at);
    drawOrders(at);
    summary.ridersDrawn = drawRiders(at, now);
  }

  /** Faint lines every 0.01° (about a kilometre) so distances read without tiles. */
  function drawGrid(at, width, height) {
    g.strokeStyle = '#1b232c';
    g.lineWidth = 1;
    const step = 0.01;
    const pad = (view.n - view.s) * (PAD + 0.5);
    g.beginPath();
    for (let lat = Math.floor((view.s - pad) / step) * step; lat <= view.n + pad; lat += step) {
      const [, y] = at(lat, view.w);
      g.moveTo(0, y);
      g.lineTo(width, y);
    }
    const padX = (view.e - view.w) * (PAD + 0.5);
    for (let lng = Math.floor((view.w - padX) / step) * step; lng <= view.e + padX; lng += step) {
      const [x] = at(view.s, lng);
      g.moveTo(x, 0);
      g.lineTo(x, height);
    }
    g.stroke();
  }

  function drawCells(at) {
    let maxDemand = 1, maxSupply = 1;
    for (const [, d, s] of cells) {
      if (d > maxDemand) maxDemand = d;
      if (s > maxSupply) maxSupply = s;
    }
    let drawn = 0;
    for (const [cell, demand, supply] of cells) {
      const ring = outlineOf(cell);
      g.beginPath();
      ring.forEach(([lat, lng], i) => {
        const [x, y] = at(lat, lng);
        if (i === 0) g.moveTo(x, y);
        else g.lineTo(x, y);
      });
      g.closePath();
      if (supply > 0) {
        g.fillStyle = `rgba(46, 204, 113, ${0.12 + 0.38 * (supply / maxSupply)})`;
        g.fill();
      }
      if (demand > 0) {
        g.fillStyle = `rgba(231, 76, 60, ${0.15 + 0.45 * (demand / maxDemand)})`;
        g.fill();
      }
      g.strokeStyle = 'rgba(216, 222, 230, 0.25)';
      g.lineWidth = 1;
      g.stroke();
      drawn++;
    }
    return drawn;
  }

  function drawOrders(at) {
    g.lineWidth = 1;
    for (const [, status, plat, plng, dlat, dlng, riderId] of orders) {
      const colour = riderId === null ? WAITING_ORDER : ORDER_COLOURS[status] || '#bdc3c7';
      const [px, py] = at(plat, plng);
      const [dx, dy] = at(dlat, dlng);
      g.strokeStyle = colour;
      g.globalAlpha = 0.45;
      g.setLineDash([4, 4]);
      g.beginPath();
      g.moveTo(px, py);
      g.lineTo(dx, dy);
      g.stroke();
      g.setLineDash([]);
      g.globalAlpha = 1;
      g.fillStyle = colour;
      g.fillRect(px - 3.5, py - 3.5, 7, 7);
      g.beginPath();
      g.arc(dx, dy, 4, 0, Math.PI * 2);
      g.stroke();
    }
  }

  function drawRiders(at, now) {
    let drawn = 0;
    g.lineWidth = 1.5;
    g.strokeStyle = '#0f1419';
    for (const r of riders.values()) {
      const p = positionOf(r, now);
      const [x, y] = at(p.lat, p.lng);
      g.fillStyle = STATUS_COLOURS[r.status] || '#ffffff';
      g.beginPath();
      g.arc(x, y, 5, 0, Math.PI * 2);
      g.fill();
      g.stroke();
      drawn++;
    }
    return drawn;
  }

  function loop() {
    draw();
    requestAnimationFrame(loop);
  }

  window.addEventListener('resize', draw);
  connect();
  requestAnimationFrame(loop);
})();

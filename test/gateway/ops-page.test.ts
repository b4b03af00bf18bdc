// The operations map in a real browser (Debian's Chromium, headless): riders appear and move, counters and cells show, nothing errs.
import t from 'tap';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { chromium, type Browser } from 'playwright-core';
import { createEngine, MemoryEventStore, SystemClock } from '../../engine/index.ts';
import type { LatLng } from '../../engine/index.ts';
import { developmentAuthConfig, signToken } from '../../gateway/auth.ts';
import { startGateway } from '../../gateway/server.ts';
import { offset, orderSpec, STORE } from '../engine/harness.ts';

/** What app.js publishes on window.quickdashOps. */
interface OpsSummary {
  connected: boolean;
  frames: number;
  riders: Record<string, { lat: number; lng: number; status: string }>;
  orders: number;
  cells: number;
  cellsDrawn: number;
  ridersDrawn: number;
  counters: Record<string, number | null> | null;
  error: string | null;
}
declare global {
  interface Window {
    quickdashOps: OpsSummary;
  }
}

const RIDERS = 24;
const auth = developmentAuthConfig();

t.test('the operations map draws riders, moves them with their fixes, and shows counters and cells', async (t) => {
  const engine = await createEngine({
    store: new MemoryEventStore(),
    clock: new SystemClock(),
    threads: false,
    config: { shards: 2, matchWindowMs: 500 },
  });
  const gw = await startGateway({ engine, auth, logger: pino({ level: 'silent' }), ops: { intervalMs: 250 } });
  let browser: Browser | null = null;
  t.teardown(async () => {
    await browser?.close();
    await gw.drain(0);
    await engine.close();
  });

  // A small city: riders on a ring around the store, a few orders waiting, one being offered.
  const start = new Map<string, LatLng>();
  for (let i = 0; i < RIDERS; i++) {
    const angle = (i / RIDERS) * 2 * Math.PI;
    const p = offset(STORE, Math.sin(angle) * (800 + 120 * i), Math.cos(angle) * (800 + 120 * i));
    start.set(`rider-${i}`, p);
    await engine.riderOnline(`rider-${i}`, { position: p });
  }
  for (let i = 0; i < 4; i++) {
    await engine.createOrder(orderSpec({ pickup: offset(STORE, i * 900, -i * 700), dropoff: offset(STORE, 1500 + i * 300, 2000) }));
  }
  await engine.tick();

  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  // A CSP violation or a failed script load is reported on the console.
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  const token = signToken({ sub: 'ops-desk', role: 'operations', ttlSec: 600 }, auth);
  await page.goto(`http://127.0.0.1:${gw.port}/ops?token=${token}`);

  await page.waitForFunction((n) => window.quickdashOps.frames > 0 && Object.keys(window.quickdashOps.riders).length === n, RIDERS, { timeout: 5_000 });
  const before = await page.evaluate(() => window.quickdashOps.riders);
  for (const [id, p] of start) t.same({ lat: before[id].lat, lng: before[id].lng }, p, `${id} drawn where it went online`);

  // Every rider moves 300 m north; the page follows within a frame or two.
  const moved = new Map([...start].map(([id, p]) => [id, offset(p, 300, 0)]));
  const now = Date.now();
  const result = await engine.ingestFixes([...moved].map(([riderId, p], i) => ({ riderId, lat: p.lat, lng: p.lng, ts: now, seq: i + 1 })));
  t.equal(result.accepted, RIDERS, 'every fix accepted');
  const last = `rider-${RIDERS - 1}`;
  await page.waitForFunction(
    ([id, lat]) => window.quickdashOps.riders[id as string]?.lat === lat,
    [last, moved.get(last)!.lat] as const,
    { timeout: 5_000 },
  );
  const after = await page.evaluate(() => window.quickdashOps.riders);
  for (const [id, p] of moved) t.same({ lat: after[id].lat, lng: after[id].lng }, p, `${id} moved with its fix`);

  // Let the dots finish gliding to their new places before the picture is taken.
  await page.waitForTimeout(600);
  const summary = await page.evaluate(() => window.quickdashOps);
  t.ok(summary.connected, 'connected');
  t.equal(summary.ridersDrawn, RIDERS, 'every rider drawn');
  t.ok(summary.cells > 0, 'cells sent');
  t.equal(summary.cellsDrawn, summary.cells, 'every cell drawn');
  t.equal(summary.orders, 4, 'live orders');
  t.equal(summary.error, null);

  const panel = await page.$$eval('[data-counter]', (els) => Object.fromEntries(els.map((e) => [(e as HTMLElement).dataset.counter, e.textContent])));
  t.equal(panel.ridersOnline, String(RIDERS), 'riders online on the panel');
  t.equal(panel.ordersLive, '4', 'orders live on the panel');
  t.equal(panel.connections, '0', 'no app sockets: the page itself is not one');
  for (const k of ['fixesPerSecond', 'offersMade', 'matcherRuns', 'eventLoopLagMs']) t.match(panel[k], /\d/, `${k} shows a number`);

  const dir = mkdtempSync(join(tmpdir(), 'quickdash-ops-'));
  const shot = process.env.QD_OPS_SCREENSHOT ?? join(dir, 'ops-map.png');
  const png = await page.screenshot({ path: shot });
  t.ok(statSync(shot).size > 10_000, `screenshot written to ${shot}`);
  // The browser decodes its own screenshot: a blank map would be a handful of colours.
  const blank = await browser.newPage();
  const colours = await blank.evaluate(async (b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const bitmap = await createImageBitmap(new Blob([bytes], { type: 'image/png' }));
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const g = canvas.getContext('2d')!;
    g.drawImage(bitmap, 0, 0);
    // Only the map, left of the panel.
    const data = g.getImageData(0, 0, bitmap.width - 260, bitmap.height).data;
    const seen = new Set<number>();
    let green = 0;
    for (let i = 0; i < data.length; i += 4) {
      seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
      // The available-rider colour, #2ecc71.
      if (data[i] === 0x2e && data[i + 1] === 0xcc && data[i + 2] === 0x71) green++;
    }
    return { distinct: seen.size, green };
  }, png.toString('base64'));
  t.ok(colours.distinct > 20, `the map is not blank (${colours.distinct} colours)`);
  t.ok(colours.green > 50, `available riders are drawn in their colour (${colours.green} pixels)`);
  t.same(problems, [], 'no page errors, no console errors');
});

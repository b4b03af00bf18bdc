// /metrics text: counters, gauges (set and collected), histograms in Prometheus exposition format.
import t from 'tap';
import { Registry } from '../../gateway/metrics.ts';

t.test('renders the Prometheus text format', async (t) => {
  const r = new Registry();
  t.teardown(() => r.close());
  const frames = r.counter('quickdash_frames_total', 'Frames received');
  frames.inc({ role: 'rider' });
  frames.inc({ role: 'rider' }, 2);
  frames.inc({ role: 'customer' });
  const conns = r.gauge('quickdash_connections', 'Open connections');
  conns.inc({ role: 'rider' });
  conns.inc({ role: 'rider' });
  conns.dec({ role: 'rider' });
  r.gauge('quickdash_shard_queue_depth', 'Requests waiting per shard', () => [
    [{ shard: '0' }, 3],
    [{ shard: '1' }, 0],
  ]);
  const h = r.histogram('quickdash_dispatch_seconds', 'Dispatch latency', [0.1, 1]);
  h.observe(0.05);
  h.observe(0.5);
  h.observe(5);
  const text = r.render();
  t.match(text, /# TYPE quickdash_frames_total counter\nquickdash_frames_total\{role="rider"\} 3\nquickdash_frames_total\{role="customer"\} 1/);
  t.match(text, /quickdash_connections\{role="rider"\} 1/);
  t.match(text, /quickdash_shard_queue_depth\{shard="0"\} 3/);
  t.match(text, /quickdash_dispatch_seconds_bucket\{le="0.1"\} 1\nquickdash_dispatch_seconds_bucket\{le="1"\} 2\nquickdash_dispatch_seconds_bucket\{le="\+Inf"\} 3/);
  t.match(text, /quickdash_dispatch_seconds_count 3/);
  t.match(text, /# TYPE quickdash_event_loop_lag_seconds gauge\nquickdash_event_loop_lag_seconds [0-9.e-]+/);
  t.ok(text.endsWith('\n'));
});

t.test('label values are escaped', async (t) => {
  const r = new Registry();
  t.teardown(() => r.close());
  r.counter('x_total', 'x').inc({ reason: 'a "quoted"\nvalue' });
  t.match(r.render(), /x_total\{reason="a \\"quoted\\"\\nvalue"\} 1/);
});

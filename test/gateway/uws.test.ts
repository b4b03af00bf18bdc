// The native uWS binary loads (never the JS fallback), serves over loopback, and closes its listen socket.
import t from 'tap';
import { loadUws, nativeBinaryName, type Uws } from '../../gateway/uws.ts';

t.test('loads the native binary for this platform', async (t) => {
  t.equal(nativeBinaryName('linux', 'x64', '115'), 'uws_linux_x64_115.node');
  const uws = loadUws();
  t.type(uws.App, 'function');
  t.equal(loadUws(), uws, 'loaded once');
});

t.test('serves HTTP on an ephemeral loopback port and closes cleanly', async (t) => {
  const uws = loadUws();
  const app = uws.App().get('/*', (res) => {
    res.end('native');
  });
  const listen = await new Promise<Uws.us_listen_socket>((resolve, reject) =>
    app.listen('127.0.0.1', 0, (s) => (s ? resolve(s) : reject(new Error('listen failed')))),
  );
  const port = uws.us_socket_local_port(listen);
  t.ok(port > 0);
  t.equal(await (await fetch(`http://127.0.0.1:${port}/`)).text(), 'native');
  uws.us_listen_socket_close(listen);
  await t.rejects(fetch(`http://127.0.0.1:${port}/`), 'the port is closed');
});

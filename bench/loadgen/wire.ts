/**
 * WebSocket framing on a raw TCP socket (RFC 6455), for the load generator
 * and for tests that must control reading themselves (a reader that stalls).
 * Client frames are masked with a fixed key: the server unmasks whatever the
 * key, and a fixed key lets a whole frame be built once and written many times.
 */
import { createHash, randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';

export const Opcode = { text: 1, binary: 2, close: 8, ping: 9, pong: 10 } as const;

const MASK = Buffer.from([0x37, 0xfa, 0x21, 0x3d]);
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** One masked client frame, ready to write. */
export function clientFrame(payload: Uint8Array, opcode: number = Opcode.binary): Buffer {
  const n = payload.length;
  const head = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(head + 4 + n);
  out[0] = 0x80 | opcode;
  if (n < 126) out[1] = 0x80 | n;
  else if (n < 65536) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(n, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeBigUInt64BE(BigInt(n), 2);
  }
  MASK.copy(out, head);
  const body = head + 4;
  for (let i = 0; i < n; i++) out[body + i] = payload[i]! ^ MASK[i & 3]!;
  return out;
}

/** One unmasked frame as a server sends it (for tests of FrameReader). */
export function serverFrame(payload: Uint8Array, opcode: number = Opcode.binary): Buffer {
  const n = payload.length;
  const head = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(head + n);
  out[0] = 0x80 | opcode;
  if (n < 126) out[1] = n;
  else if (n < 65536) {
    out[1] = 126;
    out.writeUInt16BE(n, 2);
  } else {
    out[1] = 127;
    out.writeBigUInt64BE(BigInt(n), 2);
  }
  out.set(payload, head);
  return out;
}

export interface Frame {
  opcode: number;
  payload: Buffer;
}

/** Splits a byte stream into frames (server frames, or masked client frames, which it unmasks); fragments are not used by the gateway. */
export class FrameReader {
  #buf: Buffer = Buffer.alloc(0);

  /** Feeds bytes; returns the frames now complete. */
  push(chunk: Buffer): Frame[] {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const frames: Frame[] = [];
    for (;;) {
      const b = this.#buf;
      if (b.length < 2) break;
      const masked = (b[1]! & 0x80) !== 0;
      let len = b[1]! & 0x7f;
      let at = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = b.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (b.length < 10) break;
        len = Number(b.readBigUInt64BE(2));
        at = 10;
      }
      // Client frames carry a mask key; reading them lets tests and baseline servers check clientFrame.
      const key = at;
      if (masked) at += 4;
      if (b.length < at + len) break;
      let payload = b.subarray(at, at + len);
      if (masked) {
        // A copy: unmasking in place would corrupt a buffer the caller may still hold.
        payload = Buffer.from(payload);
        for (let i = 0; i < len; i++) payload[i] = payload[i]! ^ b[key + (i & 3)]!;
      }
      frames.push({ opcode: b[0]! & 0x0f, payload });
      this.#buf = b.subarray(at + len);
    }
    return frames;
  }
}

export interface RawSocket {
  socket: Socket;
  /** Bytes that arrived after the upgrade response, already split into frames by the caller's reader. */
  rest: Buffer;
}

/**
 * Opens a TCP connection and upgrades it to a WebSocket. `localAddress`
 * spreads many connections over 127.0.0.x sources (each source address has
 * its own ~28k ephemeral ports). Rejects with the HTTP status line when the
 * server refuses the upgrade.
 */
export function openRaw(options: { host: string; port: number; path: string; localAddress?: string; timeoutMs?: number }): Promise<RawSocket> {
  return new Promise((resolve, reject) => {
    const key = randomBytes(16).toString('base64');
    const accept = createHash('sha1').update(key + GUID).digest('base64');
    const socket = connect({ host: options.host, port: options.port, ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    socket.setNoDelay(true);
    let head = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error('upgrade timed out')), options.timeoutMs ?? 10_000);
    const fail = (err: Error) => {
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.destroy();
      reject(err);
    };
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('error', fail);
      const response = head.subarray(0, end).toString('latin1');
      const status = response.split('\r\n', 1)[0]!;
      if (!/^HTTP\/1\.1 101/.test(status) || !response.toLowerCase().includes(accept.toLowerCase())) {
        socket.destroy();
        return reject(new Error(`upgrade refused: ${status}`));
      }
      resolve({ socket, rest: head.subarray(end + 4) });
    };
    socket.on('data', onData);
    socket.once('error', fail);
    socket.once('connect', () => {
      socket.write(
        `GET ${options.path} HTTP/1.1\r\nHost: ${options.host}:${options.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
  });
}

/**
 * The connection greeting (src/rpc/handshake.ts, docs/protocol.md) proves: the reader accepts
 * a greeting split at any byte and hands on the bytes after it; it refuses at the first wrong
 * byte of the magic, and a peer without a common protocol version, with "protocol version X,
 * this build speaks Y". Over real loopback TCP: a client pointed at an HTTP server, at a
 * server of another version, or at a server of another role fails its calls with
 * ProtocolMismatchError / WrongRoleError (not retryable, also during the reconnect backoff)
 * instead of a frame-length or schema error; the server refuses such peers without running
 * any of their calls, logs why, and keeps serving the others.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Socket } from 'node:net';
import { ConnectionClosedError, ProtocolMismatchError, WrongRoleError, DstoreError } from '../../src/core/errors.js';
import { encodeFrame } from '../../src/rpc/frame.js';
import { GREETING_BYTES, GreetingReader, PROTOCOL_VERSION, encodeGreeting } from '../../src/rpc/handshake.js';
import { RpcConnection, RpcServer, type RpcLogger } from '../../src/rpc/transport.js';
import { RawPeer, rejection, waitFor } from './helpers.js';

const MAX_FRAME_BYTES = 1 << 20;

class CaptureLogger implements RpcLogger {
  readonly warnings: { obj: object; msg: string }[] = [];
  debug(): void {}
  warn(obj: object, msg: string): void {
    this.warnings.push({ obj, msg });
  }
  error(obj: object, msg: string): void {
    this.warnings.push({ obj, msg: `error: ${msg}` });
  }
}

type TestContext = { after(fn: () => unknown): void };

test('the greeting reader: any split works, the rest is handed on, a wrong byte refuses at once', () => {
  const stream = Buffer.concat([encodeGreeting('storage'), Buffer.from([0, 0, 0, 1, 0xc0])]);
  for (let cut = 0; cut <= stream.length; cut++) {
    const reader = new GreetingReader('peer');
    const first = reader.push(stream.subarray(0, cut));
    const r = first.state === 'pending' ? reader.push(stream.subarray(cut)) : first;
    assert.equal(r.state, 'ok', `cut at ${cut}`);
    if (r.state !== 'ok') return;
    assert.equal(r.greeting.role, 'storage');
    assert.equal(r.version, PROTOCOL_VERSION);
    // The bytes after the greeting in the chunk that ended it, then the later chunks: the frames.
    const after = Buffer.concat([r.rest, first.state === 'ok' ? stream.subarray(cut) : Buffer.alloc(0)]);
    assert.deepEqual(after, stream.subarray(GREETING_BYTES), `cut at ${cut}`);
  }
  const http = new GreetingReader('127.0.0.1:8080').push(Buffer.from('H'));
  assert.equal(http.state, 'refused', 'one wrong byte is enough');
  const full = new GreetingReader('127.0.0.1:8080').push(Buffer.from('HTTP/1.1 400 Bad Request\r\n'));
  assert.ok(
    full.state === 'refused' &&
      /does not speak the dstore protocol \(it answered like an HTTP server\)/.test(full.message),
    JSON.stringify(full),
  );
  const future = encodeGreeting('nameserver', 2, 3);
  const v = new GreetingReader('127.0.0.1:7000').push(future);
  assert.ok(v.state === 'refused' && v.reason === 'version', JSON.stringify(v));
  assert.match(
    v.state === 'refused' ? v.message : '',
    /127\.0\.0\.1:7000 speaks dstore protocol versions 2\.\.3, this build speaks protocol version 1/,
  );
  // A peer that also speaks our version is accepted at it.
  const wide = new GreetingReader('p').push(encodeGreeting('nameserver', 1, 9));
  assert.ok(wide.state === 'ok' && wide.version === 1);
});

async function startServer(
  t: TestContext,
  role: 'nameserver' | 'storage' | 'any',
  logger = new CaptureLogger(),
): Promise<{ port: number; calls: () => number; server: RpcServer }> {
  let calls = 0;
  const server = new RpcServer({
    host: '127.0.0.1',
    port: 0,
    maxFrameBytes: MAX_FRAME_BYTES,
    role,
    logger,
    handler: (body) => {
      calls++;
      return body;
    },
  });
  const port = await server.listen();
  t.after(() => server.close());
  return { port, calls: () => calls, server };
}

test(
  'a client pointed at an HTTP server fails with PROTOCOL_MISMATCH, ' +
    'not a frame-length error, also during the backoff',
  async (t) => {
    const http = createHttpServer((_req, res) => res.end('hello'));
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise<void>((resolve) => http.close(() => resolve())));
    const address = http.address();
    assert.ok(address !== null && typeof address === 'object');
    const conn = new RpcConnection({
      host: '127.0.0.1',
      port: address.port,
      maxFrameBytes: MAX_FRAME_BYTES,
      expectRole: 'nameserver',
      backoffMinMs: 500,
    });
    t.after(() => conn.close());
    const err = await rejection(conn.call({ t: 'map' }, { timeoutMs: 5000 }));
    assert.ok(err instanceof ProtocolMismatchError, String(err));
    assert.equal(err.code, 'PROTOCOL_MISMATCH');
    assert.equal(err.retryable, false);
    assert.match(
      err.message,
      new RegExp(
        `127\\.0\\.0\\.1:${address.port} does not speak the dstore protocol \\(it answered like an HTTP server\\)`,
      ),
    );
    assert.doesNotMatch(err.message, /maxFrameBytes/);
    // Within the backoff window the same typed error comes at once (no new connection).
    const again = await rejection(conn.call({ t: 'map' }, { timeoutMs: 5000 }));
    assert.ok(again instanceof ProtocolMismatchError, String(again));
    assert.equal(conn.lastFailureReason, err.message);
  },
);

test(
  'a client that expects a nameserver and reaches a storage server ' +
    'fails with WRONG_ROLE; the server runs none of its calls',
  async (t) => {
    const logger = new CaptureLogger();
    const storage = await startServer(t, 'storage', logger);
    const conn = new RpcConnection({
      host: '127.0.0.1',
      port: storage.port,
      maxFrameBytes: MAX_FRAME_BYTES,
      expectRole: 'nameserver',
    });
    t.after(() => conn.close());
    const err = await rejection(conn.call({ t: 'map' }, { timeoutMs: 5000 }));
    assert.ok(err instanceof WrongRoleError, String(err));
    assert.equal(err.retryable, false);
    assert.equal(err.expected, 'nameserver');
    assert.equal(err.actual, 'storage');
    assert.match(
      err.message,
      new RegExp(`127\\.0\\.0\\.1:${storage.port} is a dstore storage server, not a nameserver`),
    );
    await waitFor(
      () => logger.warnings.some((w) => w.msg === 'refusing rpc connection'),
      2000,
      'the server to log the refusal',
    );
    const refusal = logger.warnings.find((w) => w.msg === 'refusing rpc connection');
    assert.match(
      JSON.stringify(refusal?.obj),
      /a client looking for a dstore nameserver connected to this dstore storage server/,
    );
    assert.equal(storage.calls(), 0, 'the pipelined call was not run');
    // The right role, and no expectation, both work.
    const right = new RpcConnection({
      host: '127.0.0.1',
      port: storage.port,
      maxFrameBytes: MAX_FRAME_BYTES,
      expectRole: 'storage',
    });
    const any = new RpcConnection({ host: '127.0.0.1', port: storage.port, maxFrameBytes: MAX_FRAME_BYTES });
    t.after(() => {
      right.close();
      any.close();
    });
    assert.deepEqual(await right.call({ x: 1 }, { timeoutMs: 5000 }), { x: 1 });
    assert.deepEqual(await any.call({ x: 2 }, { timeoutMs: 5000 }), { x: 2 });
  },
);

test('a server of another protocol version: the client says which versions each side speaks', async (t) => {
  const sockets = new Set<Socket>();
  const future = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.write(encodeGreeting('nameserver', 2, 2));
  });
  await new Promise<void>((resolve) => future.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((resolve) => future.close(() => resolve()));
  });
  const address = future.address();
  assert.ok(address !== null && typeof address === 'object');
  const conn = new RpcConnection({
    host: '127.0.0.1',
    port: address.port,
    maxFrameBytes: MAX_FRAME_BYTES,
    expectRole: 'nameserver',
  });
  t.after(() => conn.close());
  const err = await rejection(conn.call({ t: 'map' }, { timeoutMs: 5000 }));
  assert.ok(err instanceof ProtocolMismatchError, String(err));
  assert.match(err.message, /speaks dstore protocol version 2, this build speaks protocol version 1/);
});

test('a server refuses peers without a dstore greeting, logs why, and keeps serving', async (t) => {
  const logger = new CaptureLogger();
  const server = await startServer(t, 'nameserver', logger);
  const inputs: [string, Buffer][] = [
    ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')],
    ['a frame without a greeting', encodeFrame({ t: 'call', id: 1, d: 1000, b: { t: 'map' } })],
    [
      'another version',
      Buffer.concat([encodeGreeting('nameserver', 5, 6), encodeFrame({ t: 'call', id: 1, d: 1000, b: {} })]),
    ],
  ];
  for (const [what, bytes] of inputs) {
    const peer = await RawPeer.connect(server.port, MAX_FRAME_BYTES, { greet: false });
    await peer.write(bytes);
    await peer.settle(3000);
    assert.ok(peer.closedByPeer, `${what}: closed`);
    assert.equal(peer.envelopes.length, 0, `${what}: no reply`);
    await peer.destroy();
  }
  assert.equal(server.calls(), 0);
  const reasons = logger.warnings.filter((w) => w.msg === 'refusing rpc connection').map((w) => JSON.stringify(w.obj));
  assert.equal(reasons.length, 3, JSON.stringify(logger.warnings));
  assert.match(reasons[0] ?? '', /does not speak the dstore protocol/);
  assert.match(reasons[1] ?? '', /a dstore build older than protocol version 1/);
  assert.match(reasons[2] ?? '', /speaks dstore protocol versions 5\.\.6, this build speaks protocol version 1/);
  const conn = new RpcConnection({
    host: '127.0.0.1',
    port: server.port,
    maxFrameBytes: MAX_FRAME_BYTES,
    expectRole: 'nameserver',
  });
  t.after(() => conn.close());
  assert.equal(await conn.call('still here', { timeoutMs: 5000 }), 'still here');
});

test(
  'a server that closes without a greeting is a retryable CONNECTION_CLOSED ' +
    '(it may be restarting), not a protocol error',
  async (t) => {
    const closer = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => closer.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise<void>((resolve) => closer.close(() => resolve())));
    const address = closer.address();
    assert.ok(address !== null && typeof address === 'object');
    const conn = new RpcConnection({ host: '127.0.0.1', port: address.port, maxFrameBytes: MAX_FRAME_BYTES });
    t.after(() => conn.close());
    const err = await rejection(conn.call('x', { timeoutMs: 5000 }));
    assert.ok(err instanceof ConnectionClosedError, String(err));
    assert.ok(err instanceof DstoreError && err.retryable);
    assert.match(err.message, /closed the connection before sending a dstore greeting/);
  },
);

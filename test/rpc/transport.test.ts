/**
 * RpcServer / RpcConnection / RpcPool over real loopback TCP (ephemeral ports) prove:
 * calls and one-way messages round-trip (binary values stay Buffers, both directions);
 * many concurrent calls share one connection and resolve correctly when replies come back out
 * of order; a deadline rejects with TimeoutError; a server that is closed, or SIGKILLed in a
 * child process, mid-call fails the call with ConnectionClosedError and the same connection
 * object reconnects once a server is back on that port; error replies rebuild typed errors;
 * codecs refuse malformed bodies; an oversized frame closes only its own connection; and every
 * bound (calls in flight, queued bytes, frame size) refuses at once with a typed error.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  ConnectionClosedError,
  type DstoreError,
  InternalError,
  InvalidArgumentError,
  MalformedMessageError,
  NotPrimaryError,
  OverloadedError,
  TimeoutError,
  ValueTooLargeError,
} from '../../src/core/errors.js';
import { FRAME_HEADER_BYTES, encodeFrame } from '../../src/rpc/frame.js';
import { Bytes, Type, codec } from '../../src/rpc/schema.js';
import {
  RpcConnection,
  RpcPool,
  RpcServer,
  parseAddress,
  type CallContext,
  type RpcLogger,
  type RpcServerOptions,
} from '../../src/rpc/transport.js';
import { RawPeer, Rng, delay, seedFromEnv, waitFor } from './helpers.js';

const MAX_FRAME_BYTES = 2 * 1024 * 1024;

class CaptureLogger implements RpcLogger {
  readonly entries: { level: string; obj: object; msg: string }[] = [];
  constructor(private readonly onDebug?: (msg: string) => void) {}
  debug(_obj: object, msg: string): void {
    this.onDebug?.(msg);
  }
  warn(obj: object, msg: string): void {
    this.entries.push({ level: 'warn', obj, msg });
  }
  error(obj: object, msg: string): void {
    this.entries.push({ level: 'error', obj, msg });
  }
}

type TestContext = { after(fn: () => unknown): void };

async function startServer<Req = unknown, Msg = unknown>(
  t: TestContext,
  options: Omit<RpcServerOptions<Req, Msg>, 'host' | 'port' | 'maxFrameBytes'> & {
    port?: number;
    maxFrameBytes?: number;
  },
): Promise<{ server: RpcServer<Req, Msg>; port: number }> {
  const server = new RpcServer<Req, Msg>({ host: '127.0.0.1', port: 0, maxFrameBytes: MAX_FRAME_BYTES, ...options });
  const port = await server.listen();
  t.after(() => server.close());
  return { server, port };
}

function client(
  t: TestContext,
  port: number,
  extra: Partial<ConstructorParameters<typeof RpcConnection>[0]> = {},
): RpcConnection {
  const connection = new RpcConnection({ host: '127.0.0.1', port, maxFrameBytes: MAX_FRAME_BYTES, ...extra });
  t.after(() => connection.close());
  return connection;
}

async function rejectsWith<E extends DstoreError>(
  promise: Promise<unknown>,
  type: abstract new (...args: never[]) => E,
): Promise<E> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof type, `expected ${type.name}, got ${String(err)}`);
    return err;
  }
  assert.fail(`expected ${type.name}, but the call resolved`);
}

test('calls and one-way messages round-trip in both directions; binary values arrive as Buffers', async (t) => {
  const messages: unknown[] = [];
  const { port } = await startServer(t, {
    handler: (body: unknown, ctx: CallContext) => {
      ctx.send({ pushed: Buffer.from([9, 8, 7]) });
      return { echo: body, connectionId: ctx.connectionId };
    },
    onMessage: (body) => messages.push(body),
  });
  const pushed: unknown[] = [];
  const conn = client(t, port, { onMessage: (body) => pushed.push(body) });

  const big = Buffer.alloc(1024 * 1024 + 3, 0xab); // spans many TCP chunks: reassembled
  const reply = (await conn.call(
    {
      key: Buffer.from('k1'),
      value: new Uint8Array([1, 2, 3]),
      empty: Buffer.alloc(0),
      nested: [{ b: big }],
      n: 42,
      s: 'é',
    },
    { timeoutMs: 5000 },
  )) as {
    echo: { key: Buffer; value: Buffer; empty: Buffer; nested: [{ b: Buffer }]; n: number; s: string };
    connectionId: number;
  };
  assert.ok(Buffer.isBuffer(reply.echo.key));
  assert.deepEqual(reply.echo.key, Buffer.from('k1'));
  assert.ok(Buffer.isBuffer(reply.echo.value), 'a Uint8Array comes back as a Buffer');
  assert.deepEqual([...reply.echo.value], [1, 2, 3]);
  assert.equal(reply.echo.empty.length, 0);
  assert.ok(reply.echo.nested[0].b.equals(big));
  assert.equal(reply.echo.n, 42);
  assert.equal(reply.echo.s, 'é');
  assert.equal(typeof reply.connectionId, 'number');

  assert.equal(conn.send({ kind: 'note', data: Buffer.from('hello') }), true);
  await waitFor(() => messages.length === 1 && pushed.length >= 1, 2000, 'messages both ways');
  const message = messages[0] as { kind: string; data: Buffer };
  assert.equal(message.kind, 'note');
  assert.ok(Buffer.isBuffer(message.data) && message.data.toString() === 'hello');
  assert.deepEqual(pushed[0], { pushed: Buffer.from([9, 8, 7]) });
});

test('many concurrent calls share one connection; out-of-order replies reach the right callers', async (t) => {
  const rng = new Rng(seedFromEnv('out-of-order'));
  const answered: number[] = [];
  const { server, port } = await startServer(t, {
    handler: async (body: unknown) => {
      const n = (body as { n: number }).n;
      await delay(rng.int(20));
      answered.push(n);
      return { n, twice: n * 2 };
    },
  });
  const conn = client(t, port);
  const count = 2000;
  const results = await Promise.all(Array.from({ length: count }, (_, n) => conn.call({ n }, { timeoutMs: 10_000 })));
  results.forEach((r, n) => assert.deepEqual(r, { n, twice: n * 2 }));
  assert.equal(server.connectionCount, 1, 'all calls multiplexed on one connection');
  assert.notDeepEqual(
    answered,
    [...answered].sort((a, b) => a - b),
    'the server answered out of order',
  );
  assert.equal(conn.inFlight, 0);
});

test(
  'a call past its deadline rejects with TimeoutError; the ' + 'server sees the deadline; a late reply is ignored',
  async (t) => {
    let seenDeadline = 0;
    const { port } = await startServer(t, {
      handler: async (body: unknown, ctx: CallContext) => {
        seenDeadline = ctx.deadlineMs - Date.now();
        if ((body as { slow?: boolean }).slow) await delay(300);
        return 'done';
      },
    });
    const conn = client(t, port);
    const started = Date.now();
    const err = await rejectsWith(conn.call({ slow: true }, { timeoutMs: 80 }), TimeoutError);
    assert.ok(Date.now() - started >= 75, 'not before the deadline');
    assert.equal(err.retryable, true);
    assert.ok(seenDeadline > 0 && seenDeadline <= 80, `server saw ${seenDeadline} ms left`);
    await delay(350); // the late reply arrives and is dropped
    assert.equal(await conn.call({}, { timeoutMs: 2000 }), 'done');
    await rejectsWith(conn.call({}, { timeoutMs: 0 }), InvalidArgumentError);
  },
);

test('error replies rebuild typed errors; non-dstore throws become INTERNAL and are logged', async (t) => {
  const logger = new CaptureLogger();
  const { port } = await startServer(t, {
    logger,
    handler: async (body: unknown) => {
      switch ((body as { op: string }).op) {
        case 'notPrimary':
          throw new NotPrimaryError('p3 is on node b');
        case 'tooLarge':
          throw new ValueTooLargeError(2000, 1000);
        case 'boom':
          throw new Error('boom');
        case 'circular': {
          const reply: { self?: unknown } = {};
          reply.self = reply;
          return reply;
        }
        case 'symbol':
          return { s: Symbol('not encodable') };
        case 'syncThrow':
          return (() => {
            throw new TypeError('sync');
          })();
        default:
          return 'ok';
      }
    },
  });
  const conn = client(t, port);
  const notPrimary = await rejectsWith(conn.call({ op: 'notPrimary' }, { timeoutMs: 2000 }), NotPrimaryError);
  assert.equal(notPrimary.message, 'p3 is on node b');
  assert.equal(notPrimary.retryable, true);
  const tooLarge = await rejectsWith(conn.call({ op: 'tooLarge' }, { timeoutMs: 2000 }), ValueTooLargeError);
  assert.equal(tooLarge.valueBytes, 2000);
  assert.equal(tooLarge.maxValueBytes, 1000);
  const internal = await rejectsWith(conn.call({ op: 'boom' }, { timeoutMs: 2000 }), InternalError);
  assert.match(internal.message, /boom/);
  await rejectsWith(conn.call({ op: 'syncThrow' }, { timeoutMs: 2000 }), InternalError);
  assert.equal(logger.entries.filter((e) => e.level === 'error' && e.msg === 'rpc handler failed').length, 2);
  // Replies msgpack cannot hold become INTERNAL errors, logged.
  assert.match(
    (await rejectsWith(conn.call({ op: 'circular' }, { timeoutMs: 2000 }), InternalError)).message,
    /cannot be encoded/,
  );
  await rejectsWith(conn.call({ op: 'symbol' }, { timeoutMs: 2000 }), InternalError);
  assert.equal(logger.entries.filter((e) => e.msg === 'rpc reply cannot be encoded').length, 2);
  // A call body msgpack cannot hold is refused before sending.
  const circular: { self?: unknown } = {};
  circular.self = circular;
  await rejectsWith(conn.call(circular, { timeoutMs: 2000 }), InvalidArgumentError);
  assert.equal(conn.send({ s: Symbol('x') }), false);
  assert.equal(await conn.call({ op: 'fine' }, { timeoutMs: 2000 }), 'ok');

  // A synchronous handler (no promise) is answered the same way.
  const sync = await startServer(t, {
    handler: () => {
      throw new NotPrimaryError('sync');
    },
  });
  await rejectsWith(client(t, sync.port).call(1, { timeoutMs: 2000 }), NotPrimaryError);
});

test(
  'codecs: the server refuses bodies its codec rejects ' + 'with MALFORMED_MESSAGE; a reply codec types replies',
  async (t) => {
    const PutRequest = Type.Object({ t: Type.Literal('put'), key: Bytes, version: Type.Integer({ minimum: 0 }) });
    const Note = Type.Object({ note: Type.String() });
    const logger = new CaptureLogger();
    const notes: string[] = [];
    const { port } = await startServer(t, {
      logger,
      requests: codec(PutRequest),
      messages: codec(Note),
      handler: (req) => ({ keyBytes: req.key.length, version: req.version + 1 }),
      onMessage: (m) => notes.push(m.note),
    });
    const conn = client(t, port);
    const PutReply = codec(Type.Object({ keyBytes: Type.Integer(), version: Type.Integer() }));
    const reply = await conn.call(
      { t: 'put', key: Buffer.from('abc'), version: 1 },
      { timeoutMs: 2000, reply: PutReply },
    );
    assert.deepEqual(reply, { keyBytes: 3, version: 2 }); // typed: reply.version is a number

    for (const bad of [
      { t: 'put', key: 'not bytes', version: 1 },
      { t: 'put', key: Buffer.from('k'), version: 1.5 },
      { t: 'put', key: Buffer.from('k'), version: NaN },
      null,
    ]) {
      const err = await rejectsWith(conn.call(bad, { timeoutMs: 2000 }), MalformedMessageError);
      assert.match(err.message, /call body/);
    }
    // A reply that does not match the caller's codec.
    const Wrong = codec(Type.Object({ other: Type.String() }));
    await rejectsWith(
      conn.call({ t: 'put', key: Buffer.from('k'), version: 1 }, { timeoutMs: 2000, reply: Wrong }),
      MalformedMessageError,
    );

    conn.send({ note: 'kept' });
    conn.send({ note: 7 });
    conn.send({ note: 'also kept' });
    await waitFor(() => notes.length === 2, 2000, 'valid notes');
    assert.deepEqual(notes, ['kept', 'also kept']);
    assert.ok(logger.entries.some((e) => e.msg === 'malformed one-way message; dropped'));
  },
);

test(
  'a server closed mid-call fails the call with ConnectionClosedError; ' + 'the connection comes back with the server',
  async (t) => {
    let release: (() => void) | undefined;
    const first = await startServer(t, {
      handler: (body: unknown) =>
        (body as { hang?: boolean }).hang ? new Promise<void>((resolve) => (release = resolve)) : body,
    });
    const conn = client(t, first.port, { backoffMinMs: 10, backoffMaxMs: 100 });
    assert.equal(await conn.call('before', { timeoutMs: 2000 }), 'before');
    const inFlight = conn.call({ hang: true }, { timeoutMs: 10_000 });
    await waitFor(() => release !== undefined, 2000, 'the call to reach the server');
    await first.server.close();
    const err = await rejectsWith(inFlight, ConnectionClosedError);
    assert.equal(err.retryable, true);
    release?.();

    // Down: calls fail fast (refused, or backing off), never hang.
    await rejectsWith(conn.call('while down', { timeoutMs: 5000 }), ConnectionClosedError);
    assert.equal(conn.send('dropped while down'), false);

    const second = await startServer(t, { port: first.port, handler: (body: unknown) => ({ again: body }) });
    assert.equal(second.port, first.port);
    const reply = await retryUntil(() => conn.call('after', { timeoutMs: 2000 }), 5000);
    assert.deepEqual(reply, { again: 'after' });
  },
);

test('reconnection backs off exponentially with jitter, bounded, and fails calls fast meanwhile', async (t) => {
  // A port with nothing listening: every attempt is refused at once.
  const probe = await startServer(t, { handler: () => null });
  const port = probe.port;
  await probe.server.close();
  const backoffMinMs = 20;
  const backoffMaxMs = 160;
  const conn = client(t, port, { backoffMinMs, backoffMaxMs });
  const attempts: number[] = [];
  let fastFailures = 0;
  const until = performance.now() + 1200;
  while (performance.now() < until) {
    const at = performance.now();
    const err = await rejectsWith(conn.call('x', { timeoutMs: 1000 }), ConnectionClosedError);
    if (/could not connect/.test(err.message)) attempts.push(at);
    else if (/next attempt in/.test(err.message)) fastFailures++;
    else assert.fail(err.message);
    await delay(1);
  }
  const gaps = attempts.slice(1).map((a, i) => a - (attempts[i] as number));
  assert.ok(gaps.length >= 6, `attempts: ${attempts.length}`);
  gaps.forEach((gap, i) => {
    const ceiling = Math.min(backoffMaxMs, backoffMinMs * 2 ** i);
    assert.ok(gap >= ceiling / 2 - 1, `gap ${i} = ${gap.toFixed(1)} ms, under ${ceiling / 2}`);
    assert.ok(gap <= ceiling + 50, `gap ${i} = ${gap.toFixed(1)} ms, over ${ceiling} (+ slack)`);
  });
  assert.ok(fastFailures > attempts.length, 'calls in between failed at once');
  assert.equal(new Set(gaps.slice(3).map((g) => Math.round(g))).size > 1, true, 'jittered');
});

test(
  'a SIGKILLed server process fails the call with ConnectionClosedError; ' + 'a restarted one is reached again',
  async (t) => {
    const script = fileURLToPath(new URL('./echo-server.js', import.meta.url));
    const children: ChildProcess[] = [];
    t.after(() => children.forEach((c) => c.kill('SIGKILL')));
    const spawnServer = (port: number): Promise<number> =>
      new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [script, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
        children.push(child);
        let out = '';
        child.stdout?.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('\n')) resolve(Number(out.trim()));
        });
        child.once('exit', (code) => reject(new Error(`echo server exited with ${code}`)));
      });
    const port = await spawnServer(0);
    const conn = client(t, port, { backoffMinMs: 10, backoffMaxMs: 100 });
    assert.equal(await conn.call('ping', { timeoutMs: 5000 }), 'ping');
    const inFlight = conn.call({ op: 'hang' }, { timeoutMs: 10_000 });
    await delay(50);
    children[0]?.kill('SIGKILL');
    await rejectsWith(inFlight, ConnectionClosedError);
    await retryUntil(() => spawnServer(port), 5000); // the port may take a moment to free
    assert.equal(await retryUntil(() => conn.call('pong', { timeoutMs: 2000 }), 5000), 'pong');
  },
);

test('an oversized frame closes that connection only; the server keeps serving others', async (t) => {
  const logger = new CaptureLogger();
  const maxFrameBytes = 64 * 1024;
  const { server, port } = await startServer(t, { logger, maxFrameBytes, handler: (body: unknown) => body });
  const healthy = client(t, port, { maxFrameBytes });
  assert.equal(await healthy.call('a', { timeoutMs: 2000 }), 'a');

  const peer = await RawPeer.connect(port);
  t.after(() => peer.destroy());
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header.writeUInt32BE(maxFrameBytes + 1, 0);
  await peer.write(header);
  await peer.settle(2000);
  assert.ok(peer.closed, 'the server closed the connection');
  assert.ok(
    logger.entries.some(
      (e) =>
        e.msg === 'closing rpc connection' && /over maxFrameBytes/.test(String((e.obj as { reason?: unknown }).reason)),
    ),
  );

  assert.equal(await healthy.call('b', { timeoutMs: 2000 }), 'b');
  assert.equal(server.connectionCount, 1);

  // The sender refuses to send what the receiver would refuse, and the server refuses to reply it.
  await rejectsWith(healthy.call(Buffer.alloc(maxFrameBytes), { timeoutMs: 2000 }), InvalidArgumentError);
  const bigReplies = await startServer(t, { maxFrameBytes, handler: () => Buffer.alloc(maxFrameBytes) });
  const err = await rejectsWith(
    client(t, bigReplies.port, { maxFrameBytes }).call('x', { timeoutMs: 2000 }),
    InternalError,
  );
  assert.match(err.message, /over maxFrameBytes/);
});

test('bounds refuse at once: calls in flight per connection (client and server) and queued bytes', async (t) => {
  const hanging: (() => void)[] = [];
  const { port } = await startServer(t, {
    maxInFlightPerConnection: 5,
    handler: () => new Promise<string>((resolve) => hanging.push(() => resolve('late'))),
  });
  t.after(() => hanging.forEach((r) => r()));
  const conn = client(t, port, { maxInFlightCalls: 8 });
  const calls = Array.from({ length: 8 }, () => conn.call('x', { timeoutMs: 5000 }));
  await rejectsWith(conn.call('ninth', { timeoutMs: 5000 }), OverloadedError);
  // The server runs 5 and answers the other 3 with OVERLOADED.
  const settled = await Promise.race([Promise.allSettled(calls.slice(5)), delay(2000).then(() => 'timeout' as const)]);
  assert.notEqual(settled, 'timeout');
  for (const s of settled as PromiseSettledResult<unknown>[]) {
    assert.equal(s.status, 'rejected');
    assert.ok(s.status === 'rejected' && s.reason instanceof OverloadedError);
  }
  hanging.forEach((r) => r());
  assert.deepEqual(await Promise.all(calls.slice(0, 5)), ['late', 'late', 'late', 'late', 'late']);

  // Outgoing bytes: while connecting, an empty queue takes one frame past the bound, then refuses.
  const unreachable = client(t, port, { maxQueuedBytes: 1000 });
  const first = unreachable.call(Buffer.alloc(2000), { timeoutMs: 5000 });
  await rejectsWith(unreachable.call(Buffer.alloc(10), { timeoutMs: 5000 }), OverloadedError);
  assert.equal(unreachable.send('dropped'), false);
  void first.catch(() => undefined); // rejected with ConnectionClosedError when t.after closes it
});

test(
  'a peer that does not read its replies gets OVERLOADED ' + 'instead of replies that do not fit, then is closed',
  async (t) => {
    const logger = new CaptureLogger();
    const maxQueuedBytes = 1024 * 1024;
    const { server, port } = await startServer(t, { logger, maxQueuedBytes, handler: () => Buffer.alloc(200 * 1024) });
    const healthy = client(t, port);

    // 50 calls of 200 KiB replies in one turn: the first ones fit, the rest are OVERLOADED.
    const slow = await RawPeer.connect(port, MAX_FRAME_BYTES);
    t.after(() => slow.destroy());
    slow.socket.pause();
    await slow.write(
      Buffer.concat(Array.from({ length: 50 }, (_, i) => encodeFrame({ t: 'call', id: i + 1, d: 5000, b: null }))),
    );
    await delay(100);
    slow.socket.resume();
    await waitFor(() => slow.envelopes.length === 50, 5000, 'all 50 answers');
    const replies = slow.envelopes.filter((e) => e.t === 'reply');
    const overloaded = replies.filter((e) => e.e !== undefined && e.e.code === 'OVERLOADED').length;
    const served = replies.filter((e) => e.e === undefined).length;
    assert.equal(overloaded + served, 50);
    assert.ok(served >= 4 && overloaded >= 40, `served ${served}, overloaded ${overloaded}`);
    assert.equal(slow.closedByPeer, false);

    // A peer that never reads and keeps calling exhausts even the error reserve: closed.
    const tinyServer = await startServer(t, { logger, maxQueuedBytes: 16 * 1024, handler: () => Buffer.alloc(1024) });
    const deaf = await RawPeer.connect(tinyServer.port, MAX_FRAME_BYTES);
    t.after(() => deaf.destroy());
    deaf.socket.pause();
    await deaf.write(
      Buffer.concat(Array.from({ length: 5000 }, (_, i) => encodeFrame({ t: 'call', id: i + 1, d: 5000, b: null }))),
    );
    await waitFor(
      () => logger.entries.some((e) => /not reading/.test(String((e.obj as { reason?: unknown }).reason))),
      3000,
      'the deaf peer to be dropped',
    );
    await waitFor(() => tinyServer.server.connectionCount === 0, 2000, 'the deaf peer to be gone');

    assert.ok(Buffer.isBuffer(await healthy.call('still fine', { timeoutMs: 2000 })));
    assert.equal(server.connectionCount, 2);
  },
);

test('a peer that reads slowly is paused, not dropped, while its backlog stays under the bound', async (t) => {
  // Two shapes: a backlog the kernel cannot absorb (resumed on 'drain'), and a small one it
  // takes at once (resumed right after the flush: no 'drain' ever comes).
  for (const { maxQueuedBytes, replyBytes, calls } of [
    { maxQueuedBytes: 8 * 1024 * 1024, replyBytes: 100 * 1024, calls: 50 },
    { maxQueuedBytes: 256 * 1024, replyBytes: 10 * 1024, calls: 20 },
  ]) {
    const debugLines: string[] = [];
    const logger = new CaptureLogger((msg) => debugLines.push(msg));
    const { server, port } = await startServer(t, {
      logger,
      maxQueuedBytes,
      handler: () => Buffer.alloc(replyBytes, 5),
    });
    const peer = await RawPeer.connect(port, MAX_FRAME_BYTES);
    t.after(() => peer.destroy());
    for (const batch of [0, 1, 2]) {
      peer.socket.pause();
      // One turn of replies over half the bound (pause) and under the bound (kept).
      await peer.write(
        Buffer.concat(
          Array.from({ length: calls }, (_, i) =>
            encodeFrame({ t: 'call', id: batch * 100 + i + 1, d: 5000, b: null }),
          ),
        ),
      );
      await delay(50);
      peer.socket.resume();
      await waitFor(() => peer.envelopes.length === calls * (batch + 1), 5000, `batch ${batch} replies`);
    }
    assert.equal(debugLines.filter((l) => l === 'rpc connection paused: replies backlogged').length, 3);
    assert.equal(debugLines.filter((l) => l === 'rpc connection resumed').length, 3);
    assert.equal(peer.closedByPeer, false);
    assert.equal(server.connectionCount, 1);
    assert.deepEqual(logger.entries, []);
  }
});

test('RpcPool reuses one connection per address; addresses are parsed strictly', async (t) => {
  const { server, port } = await startServer(t, { handler: (body: unknown) => body });
  const pool = new RpcPool({ maxFrameBytes: MAX_FRAME_BYTES, maxConnections: 2 });
  t.after(() => pool.close());
  const a = pool.get(`127.0.0.1:${port}`);
  assert.equal(pool.get(`127.0.0.1:${port}`), a);
  await Promise.all([a.call(1, { timeoutMs: 2000 }), pool.get(`127.0.0.1:${port}`).call(2, { timeoutMs: 2000 })]);
  assert.equal(server.connectionCount, 1);
  pool.get('127.0.0.1:1');
  pool.get('127.0.0.1:2'); // evicts the least recently used (the first)
  assert.equal(pool.size, 2);
  assert.ok(a.isClosed);

  assert.deepEqual(parseAddress('127.0.0.1:7000'), { host: '127.0.0.1', port: 7000 });
  assert.deepEqual(parseAddress('[::1]:7101'), { host: '::1', port: 7101 });
  assert.deepEqual(parseAddress('node-a.local:1'), { host: 'node-a.local', port: 1 });
  for (const bad of [
    '',
    'host',
    ':7000',
    'host:',
    'host:0',
    'host:65536',
    'host:12a',
    'host:-1',
    '[::1:7000',
    'host: 70',
  ]) {
    assert.throws(() => parseAddress(bad), InvalidArgumentError, bad);
  }
  // A malformed address (they come from the network) never throws: its calls are refused.
  const malformed = pool.get('no-port-here');
  await rejectsWith(malformed.call(1, { timeoutMs: 1000 }), InvalidArgumentError);
  assert.equal(malformed.send('x'), false);
  assert.equal(pool.size, 2, 'not kept');
  pool.close();
  const afterClose = pool.get(`127.0.0.1:${port}`);
  await rejectsWith(afterClose.call(1, { timeoutMs: 1000 }), ConnectionClosedError);
});

async function retryUntil<T>(fn: () => Promise<T>, timeoutMs: number): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > until) throw err;
      await delay(20);
    }
  }
}

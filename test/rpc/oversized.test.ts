/**
 * Calls over maxFrameBytes (src/rpc/oversized.ts) prove: `peekCall` finds the call id and the
 * declared length of a put's value in the first 2 KiB of a packed envelope, and never throws
 * on random or cut-off bytes; the decoder skips an oversized frame split at any point without
 * buffering it and decodes the frames after it; and over real TCP a server with
 * `oversizedCall` answers a 5 MB put over its 4 MiB frame limit with VALUE_TOO_LARGE naming
 * the value's exact size, keeps the connection and serves the next call, while a server
 * without it, or a frame that is not a call, still closes the connection.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnectionClosedError, InvalidArgumentError, ValueTooLargeError } from '../../src/core/errors.js';
import { FRAME_HEADER_BYTES, FrameDecoder, encodeFrame, packBody } from '../../src/rpc/frame.js';
import { OVERSIZED_PREFIX_BYTES, peekCall, valueTooLargeForPut } from '../../src/rpc/oversized.js';
import { MiB } from '../../src/core/limits.js';
import { RpcConnection, RpcServer } from '../../src/rpc/transport.js';
import { Rng, seedFromEnv } from './helpers.js';

test(
  "peekCall reads the id and a put value's length from a cut-off " + 'envelope; garbage gives undefined, never a throw',
  () => {
    const key = Buffer.alloc(1024, 0x6b);
    for (const valueBytes of [10, 300, 70_000, 5_000_000]) {
      const body = packBody({
        t: 'call',
        id: 77,
        d: 5000,
        b: { t: 'put', key, value: Buffer.alloc(valueBytes), cid: 'c-1', rs: 3, p: 9 },
      });
      const peeked = peekCall(body.subarray(0, OVERSIZED_PREFIX_BYTES));
      assert.ok(peeked, `value of ${valueBytes}`);
      assert.equal(peeked.id, 77);
      assert.equal(peeked.body['t'], 'put');
      assert.deepEqual(peeked.body['value'], { binBytes: valueBytes });
      assert.deepEqual(peeked.body['key'], { binBytes: 1024 });
    }
    assert.equal(peekCall(packBody({ t: 'reply', id: 3, b: 1 })), undefined);
    assert.equal(peekCall(packBody({ t: 'call', id: 0, b: {} })), undefined);
    assert.equal(peekCall(Buffer.from([0x84, 0xa1])), undefined);
    const seed = seedFromEnv('peekCall fuzz');
    const rng = new Rng(seed);
    for (let i = 0; i < 20_000; i++) {
      const bytes =
        rng.next() < 0.5
          ? rng.bytes(rng.int(64))
          : (() => {
              const b = packBody({
                t: 'call',
                id: 1 + rng.int(100),
                d: 1,
                b: { t: 'put', key: rng.bytes(rng.int(20)), value: rng.bytes(rng.int(200)) },
              });
              for (let f = 0; f < 3; f++) b[rng.int(b.length)] = rng.int(256);
              return b.subarray(0, rng.int(b.length + 1));
            })();
      peekCall(bytes); // must not throw
    }
  },
);

test('the decoder skips an oversized frame however it is split, and decodes what follows', () => {
  const big = encodeFrame({
    t: 'call',
    id: 5,
    d: 1,
    b: { t: 'put', key: Buffer.from('k'), value: Buffer.alloc(100_000, 1) },
  });
  const after = encodeFrame({ t: 'msg', b: 'next' });
  const stream = Buffer.concat([big, after]);
  for (const step of [1, 7, 999, 4096, 65_536, stream.length]) {
    const prefixes: number[] = [];
    const frames: Buffer[] = [];
    const decoder = new FrameDecoder(
      50_000,
      {
        onFrame: (b) => frames.push(Buffer.from(b)),
        onFrameError: (reason) => assert.fail(reason),
        onOversizedFrame: (prefix, frameBytes) => {
          prefixes.push(prefix.length);
          assert.equal(frameBytes, big.length - FRAME_HEADER_BYTES);
          assert.equal(peekCall(prefix)?.id, 5);
          return true;
        },
      },
      1_000_000,
      OVERSIZED_PREFIX_BYTES,
    );
    for (let at = 0; at < stream.length; at += step) {
      decoder.push(stream.subarray(at, at + step));
      assert.ok(decoder.bufferedBytes <= OVERSIZED_PREFIX_BYTES + 64 * 1024, 'an oversized frame is not buffered');
    }
    assert.deepEqual(prefixes, [OVERSIZED_PREFIX_BYTES], `step ${step}`);
    assert.equal(frames.length, 1, `step ${step}`);
  }
});

test(
  'a storage-like server answers an oversized put with VALUE_TOO_LARGE ' +
    'and keeps the connection; without the option it closes',
  async (t) => {
    const maxFrameBytes = 4 * MiB;
    const start = async (oversized: boolean): Promise<number> => {
      const server = new RpcServer({
        host: '127.0.0.1',
        port: 0,
        maxFrameBytes,
        role: 'storage',
        ...(oversized ? { oversizedCall: valueTooLargeForPut(MiB) } : {}),
        handler: (body) => body,
      });
      t.after(() => server.close());
      return server.listen();
    };
    const withOption = await start(true);
    // The caller allows bigger frames than the server (another build, other settings).
    const conn = new RpcConnection({
      host: '127.0.0.1',
      port: withOption,
      maxFrameBytes: 64 * MiB,
      expectRole: 'storage',
    });
    t.after(() => conn.close());
    const put = { t: 'put', p: 1, key: Buffer.from('big'), value: Buffer.alloc(5_000_000, 7), cid: 'c', rs: 1 };
    await assert.rejects(conn.call(put, { timeoutMs: 10_000 }), (err: unknown) => {
      assert.ok(err instanceof ValueTooLargeError, String(err));
      assert.equal(err.valueBytes, 5_000_000);
      assert.equal(err.maxValueBytes, MiB);
      return true;
    });
    assert.equal(await conn.call('same connection', { timeoutMs: 5000 }), 'same connection');
    // Another oversized call that is not a put: INVALID_ARGUMENT naming the sizes.
    await assert.rejects(
      conn.call({ t: 'scan', pad: Buffer.alloc(5 * MiB) }, { timeoutMs: 10_000 }),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentError, String(err));
        assert.match(err.message, /over maxFrameBytes=4194304/);
        return true;
      },
    );
    assert.equal(await conn.call('still', { timeoutMs: 5000 }), 'still');

    const without = await start(false);
    const conn2 = new RpcConnection({ host: '127.0.0.1', port: without, maxFrameBytes: 64 * MiB });
    t.after(() => conn2.close());
    await assert.rejects(conn2.call(put, { timeoutMs: 10_000 }), ConnectionClosedError);
  },
);

/**
 * Framing and schemas without a server prove: the frame decoder yields the same bodies however
 * the stream is split (at every byte boundary, byte by byte); it refuses an oversized frame
 * once and buffers only what arrived; envelopes are validated field by field without
 * throwing; binary values round-trip as Buffers that own their memory; codecs refuse NaN,
 * Infinity, fractions and BigInt where the schema says integer and never throw; and the
 * writer coalesces one turn's frames into one socket.write and waits for 'drain' under
 * backpressure, within its byte bound.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect, type Socket } from 'node:net';
import {
  FRAME_HEADER_BYTES,
  FrameDecoder,
  FrameWriter,
  MAX_CALL_ID,
  encodeFrame,
  packBody,
  parseEnvelope,
  unpackBody,
} from '../../src/rpc/frame.js';
import { Bytes, Type, Uint32, Uint53, bytes, codec } from '../../src/rpc/schema.js';
import { waitFor } from './helpers.js';

function decodeAll(chunks: readonly Buffer[], maxFrameBytes = 1 << 20): { bodies: Buffer[]; errors: string[] } {
  const bodies: Buffer[] = [];
  const errors: string[] = [];
  const decoder = new FrameDecoder(maxFrameBytes, {
    onFrame: (body) => bodies.push(Buffer.from(body)), // copy: a body may be a view of the chunk
    onFrameError: (reason) => errors.push(reason),
  });
  for (const chunk of chunks) decoder.push(chunk);
  return { bodies, errors };
}

test('the decoder yields the same frames however the stream is split', () => {
  const values = [
    { t: 'call', id: 1, d: 100, b: Buffer.from('abc') },
    'x'.repeat(300),
    { big: Buffer.alloc(70_000, 7) },
    0,
  ];
  const stream = Buffer.concat(values.map((v) => encodeFrame(v)));
  const expected = values.map((v) => packBody(v));
  const whole = decodeAll([stream]);
  assert.deepEqual(whole.bodies, expected);
  for (let k = 0; k <= stream.length; k += k < 400 ? 1 : 97) {
    const split = decodeAll([stream.subarray(0, k), stream.subarray(k)]);
    assert.deepEqual(split.bodies, expected, `split at ${k}`);
  }
  // Three pieces around the frame boundaries, and one byte at a time.
  const first = encodeFrame(values[0]).length;
  for (let a = first - 6; a <= first + 6; a++) {
    for (let b = a; b <= a + 8; b++)
      assert.deepEqual(decodeAll([stream.subarray(0, a), stream.subarray(a, b), stream.subarray(b)]).bodies, expected);
  }
  const small = Buffer.concat(values.slice(0, 2).map((v) => encodeFrame(v)));
  assert.deepEqual(decodeAll([...small].map((byte) => Buffer.from([byte]))).bodies, expected.slice(0, 2));
  // A zero-length frame is a (malformed, for msgpack) empty body, not a stall.
  assert.deepEqual(decodeAll([Buffer.alloc(4)]).bodies, [Buffer.alloc(0)]);
});

test('the decoder refuses an oversized frame once and buffers only the bytes that arrived', () => {
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header.writeUInt32BE(1001, 0);
  const result = decodeAll([header, encodeFrame('ignored after the error')], 1000);
  assert.deepEqual(result.bodies, []);
  assert.equal(result.errors.length, 1);
  assert.match(result.errors[0] ?? '', /1001 bytes is over maxFrameBytes=1000/);

  const limit = 8 * 1024 * 1024;
  const decoder = new FrameDecoder(limit, {
    onFrame: () => assert.fail('no frame'),
    onFrameError: () => assert.fail('within the limit'),
  });
  const announce = Buffer.alloc(FRAME_HEADER_BYTES + 10);
  announce.writeUInt32BE(limit, 0);
  decoder.push(announce);
  assert.ok(decoder.bufferedBytes <= 64 * 1024, `buffered ${decoder.bufferedBytes} bytes for 10 received`);
  for (let i = 0; i < 10; i++) decoder.push(Buffer.alloc(100_000));
  assert.ok(decoder.bufferedBytes <= 2 * 1_000_010, 'grows with what arrives');
});

test('envelopes are validated without throwing', () => {
  const ok = (x: unknown): void => assert.equal(parseEnvelope(x).ok, true, JSON.stringify(x));
  const bad = (x: unknown, id?: number): void => {
    const parsed = parseEnvelope(x);
    assert.equal(parsed.ok, false, String(x));
    if (!parsed.ok) assert.equal(parsed.id, id);
  };
  ok({ t: 'call', id: 1, d: 10, b: null });
  ok({ t: 'call', id: MAX_CALL_ID, b: 1 }); // d is optional
  ok({ t: 'reply', id: 3, b: 'x' });
  ok({ t: 'reply', id: 3, e: { code: 'TIMEOUT', message: 'm', retryable: true } });
  ok({ t: 'msg', b: [1] });
  for (const x of [
    null,
    1,
    'call',
    [],
    Buffer.from('x'),
    {},
    { t: 'other', id: 1 },
    { t: 'call' },
    { t: 'call', id: 0 },
    { t: 'call', id: -1 },
    { t: 'call', id: 1.5 },
    { t: 'call', id: NaN },
    { t: 'call', id: MAX_CALL_ID + 1 },
    { t: 'call', id: '1' },
    { t: 'call', id: 2n },
    { t: 'reply', id: null },
  ])
    bad(x);
  bad({ t: 'call', id: 5, d: -1 }, 5);
  bad({ t: 'call', id: 5, d: Infinity }, 5);
  bad({ t: 'call', id: 5, d: NaN }, 5);
  bad({ t: 'call', id: 5, d: '10' }, 5);
  bad({ t: 'reply', id: 6, e: 'boom' }, 6);
  bad({ t: 'reply', id: 6, e: { code: 1, message: 'm' } }, 6);
  bad({ t: 'reply', id: 6, e: { code: 'X', message: 'm', retryable: 'yes' } }, 6);
});

test(
  'binary values round-trip as Buffers that own their memory; ' + 'garbage throws (and is caught by the transport)',
  () => {
    const frame = packBody({ k: Buffer.from('key'), u: new Uint8Array([1, 2]), list: [Buffer.alloc(3, 1)] });
    const value = unpackBody(frame) as { k: Buffer; u: Buffer; list: Buffer[] };
    assert.ok(Buffer.isBuffer(value.k) && Buffer.isBuffer(value.u) && Buffer.isBuffer(value.list[0]));
    assert.equal(value.k.toString(), 'key');
    assert.notEqual(value.k.buffer, frame.buffer, 'a decoded value does not pin the frame');
    assert.deepEqual(unpackBody(packBody({ __proto__: 1 })), {});
    assert.equal(
      Object.getPrototypeOf(unpackBody(Buffer.from([0x81, 0xa9, ...Buffer.from('__proto__'), 0x80]))),
      Object.prototype,
    );
    assert.throws(() => unpackBody(Buffer.from([0x92, 0x01])), 'truncated');
    assert.throws(() => unpackBody(Buffer.from([0x01, 0x02])), 'trailing bytes');
    assert.throws(() => unpackBody(Buffer.from([0xd4, 0x69, 0x00])), 'no structured-clone references');
  },
);

test('codecs check integers, numbers and bytes strictly and never throw', () => {
  const c = codec(Type.Object({ n: Uint53, u: Uint32, f: Type.Number(), k: Bytes, small: Type.Optional(bytes(2)) }));
  const base = { n: 1, u: 2, f: 0.5, k: Buffer.from('x') };
  assert.deepEqual(c.decode(base), { ok: true, value: base });
  assert.equal(c.decode({ ...base, k: new Uint8Array(1) }).ok, true);
  for (const [field, value] of [
    ['n', NaN],
    ['n', Infinity],
    ['n', -Infinity],
    ['n', 1.5],
    ['n', -1],
    ['n', 2 ** 53],
    ['n', 5n],
    ['n', '1'],
    ['u', 2 ** 32],
    ['f', NaN],
    ['f', Infinity],
    ['k', 'x'],
    ['k', [1]],
    ['k', null],
    ['small', Buffer.alloc(3)],
  ] as const) {
    const result = c.decode({ ...base, [field]: value });
    assert.equal(result.ok, false, `${field}=${String(value)}`);
    if (!result.ok) assert.match(result.reason, new RegExp(`/${field}`));
  }
  const hostile = { ...base };
  Object.defineProperty(hostile, 'n', { enumerable: true, get: () => assert.fail('a getter that throws') });
  const result = c.decode(hostile);
  assert.equal(result.ok, false);
  assert.equal(c.decode(undefined).ok, false);
});

async function socketPair(t: { after(fn: () => unknown): void }): Promise<{ client: Socket; server: Socket }> {
  const listener = createServer();
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<Socket>((resolve) => listener.once('connection', resolve));
  const address = listener.address();
  assert.ok(address !== null && typeof address === 'object');
  const client = connect({ host: '127.0.0.1', port: address.port });
  await new Promise((resolve) => client.once('connect', resolve));
  const server = await accepted;
  t.after(async () => {
    client.destroy();
    server.destroy();
    await new Promise<void>((resolve) => listener.close(() => resolve()));
  });
  return { client, server };
}

test('the writer coalesces one turn of frames into one socket.write', async (t) => {
  const { client, server } = await socketPair(t);
  let writes = 0;
  const write = client.write.bind(client) as (chunk: Uint8Array) => boolean;
  client.write = ((chunk: Uint8Array) => {
    writes++;
    return write(chunk);
  }) as typeof client.write;
  const writer = new FrameWriter(1 << 20);
  writer.attach(client);
  const received: unknown[] = [];
  const decoder = new FrameDecoder(1 << 20, {
    onFrame: (b) => received.push(unpackBody(b)),
    onFrameError: (r) => assert.fail(r),
  });
  server.on('data', (chunk: Buffer) => decoder.push(chunk));
  for (let i = 0; i < 500; i++) assert.equal(writer.write(packBody({ i })), true);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(writes, 1, '500 frames, one write');
  await waitFor(() => received.length === 500, 2000, 'all frames');
  assert.deepEqual(received[499], { i: 499 });
  writer.detach();
});

test('the writer respects backpressure and its byte bound', async (t) => {
  const { client, server } = await socketPair(t);
  server.pause(); // the peer does not read: kernel buffers fill, then the socket's
  const maxQueuedBytes = 4 * 1024 * 1024;
  const writer = new FrameWriter(maxQueuedBytes);
  writer.attach(client);
  const body = packBody(Buffer.alloc(256 * 1024, 1));
  let accepted = 0;
  let refused = false;
  for (let round = 0; round < 400 && !refused; round++) {
    if (writer.write(body)) accepted++;
    else refused = true;
    assert.ok(
      writer.pendingBytes <= maxQueuedBytes + body.length + FRAME_HEADER_BYTES,
      `pending ${writer.pendingBytes}`,
    );
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.ok(refused, 'the bound was reached');
  assert.ok(client.writableLength <= maxQueuedBytes + body.length + 64 * 1024, 'the socket was not flooded past drain');
  let frames = 0;
  const decoder = new FrameDecoder(1 << 20, { onFrame: () => frames++, onFrameError: (r) => assert.fail(r) });
  server.on('data', (chunk: Buffer) => decoder.push(chunk));
  server.resume();
  await waitFor(() => frames === accepted, 5000, `all ${accepted} accepted frames after drain`);
  assert.equal(writer.pendingBytes, 0);
  writer.detach();
});

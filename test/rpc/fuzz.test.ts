/**
 * Fuzzing the RPC edge over real loopback TCP, driven by one seeded PRNG (the seed is printed;
 * DSTORE_SEED=<n> replays the server cases exactly: case n draws from its own PRNG derived
 * from (seed, n); the hostile-server part depends on timing as well). Thousands of hostile connections (bounded in
 * count and time)
 * send no greeting or a wrong one (random bytes, an HTTP request, a frame of a build without
 * greetings, another protocol version, the wrong role), random bytes, truncated valid frames, valid lengths around
 * garbage MessagePack,
 * valid MessagePack with wrong envelopes or wrong body types, oversized and deeply nested
 * frames, and valid streams split at every byte boundary. It proves that for each the server
 * answers with a well-formed reply (MALFORMED_MESSAGE where a call id was readable), waits
 * (incomplete frame) or closes that connection, exactly as expected for the kind of input,
 * and that a separate healthy client gets correct answers throughout; the process never
 * crashes. A second part points a client at a hostile server that sends bad greetings and
 * bad frames: calls fail with typed errors (PROTOCOL_MISMATCH and WRONG_ROLE among them).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { DstoreError, MalformedMessageError } from '../../src/core/errors.js';
import { assertNever } from '../../src/core/types.js';
import {
  FRAME_HEADER_BYTES,
  FrameDecoder,
  encodeFrame,
  packBody,
  parseEnvelope,
  unpackBody,
  type Envelope,
} from '../../src/rpc/frame.js';
import { GREETING_BYTES, GreetingReader, MAGIC, encodeGreeting } from '../../src/rpc/handshake.js';
import { Bytes, Type, codec } from '../../src/rpc/schema.js';
import { RpcConnection, RpcServer, type RpcLogger } from '../../src/rpc/transport.js';
import { RawPeer, Rng, delay, seedFromEnv } from './helpers.js';

const MAX_FRAME_BYTES = 64 * 1024;
const CASES = 10_000;
const TIME_BUDGET_MS = 20_000;
const MIN_CASES = 500;
const WORKERS = 24;

/** What the server must do with a case's bytes. */
type Expect =
  | { kind: 'replies'; ids: readonly number[]; malformed: readonly number[] } // answered, connection stays open
  | { kind: 'close' } // the server closes the connection
  | { kind: 'wait' } // an incomplete frame: neither reply nor close
  | { kind: 'any' }; // random input: any of the above, but only well-formed replies

interface Case {
  readonly name: string;
  readonly chunks: readonly Buffer[];
  readonly expect: Expect;
  /** False: the case's chunks carry the greeting (or a wrong one) themselves. */
  readonly greet?: false;
}

/** A greeting with chosen fields (a valid one is encodeGreeting('any')). */
function greetingWith(minVersion: number, maxVersion: number, roleByte: number): Buffer {
  const g = encodeGreeting('any');
  g[4] = minVersion;
  g[5] = maxVersion;
  g[6] = roleByte;
  return g;
}

/** Wrong first bytes of a connection: the server must close it without reading any frame. */
function badGreeting(rng: Rng): { name: string; bytes: Buffer } {
  const pick = rng.int(7);
  const call = validCall(rng, 1);
  switch (pick) {
    case 0: {
      const bytes = rng.bytes(1 + rng.int(64));
      if (bytes[0] === MAGIC[0]) bytes[0] = 0; // must differ from the magic at once
      return { name: 'no greeting: random bytes', bytes };
    }
    case 1:
      return { name: 'no greeting: an HTTP request', bytes: Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n') };
    case 2:
      return { name: 'no greeting: a frame (a build without greetings)', bytes: call };
    case 3: {
      const bytes = Buffer.concat([encodeGreeting('any'), call]);
      const at = 1 + rng.int(3);
      bytes[at] = (bytes[at] as number) ^ (1 + rng.int(255)); // one wrong byte of the magic after the first
      return { name: 'greeting with a wrong magic', bytes };
    }
    case 4:
      return {
        name: 'greeting of another protocol version',
        bytes: Buffer.concat([greetingWith(2 + rng.int(200), 255, 0x2a), call]),
      };
    case 5:
      return {
        name: 'greeting with a bad role or versions',
        bytes: Buffer.concat([greetingWith(rng.pick([1, 3]), rng.pick([1, 0]), rng.pick([0, 0x41, 0xff])), call]),
      };
    default:
      return {
        name: 'greeting that expects another role',
        bytes: Buffer.concat([encodeGreeting(rng.pick(['nameserver', 'storage'] as const)), call]),
      };
  }
}

const Add = Type.Object({ op: Type.Literal('add'), a: Type.Integer(), b: Type.Integer(), pad: Type.Optional(Bytes) });

function frameOfBody(body: Buffer): Buffer {
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}

function validCall(rng: Rng, id: number): Buffer {
  return encodeFrame({
    t: 'call',
    id,
    d: 5000,
    b: { op: 'add', a: rng.int(1000), b: rng.int(1000), pad: rng.bytes(rng.int(40)) },
  });
}

const wrongBodies: readonly unknown[] = [
  null,
  1,
  'add',
  [],
  {},
  Buffer.from('x'),
  { op: 'sub', a: 1, b: 2 },
  { op: 'add', a: '1', b: 2 },
  { op: 'add', a: 1.5, b: 2 },
  { op: 'add', a: NaN, b: 2 },
  { op: 'add', a: Infinity, b: 2 },
  { op: 'add', a: -Infinity, b: 2 },
  { op: 'add', a: 2n ** 64n - 1n, b: 2 },
  { op: 'add', a: 1 },
  { op: 'add', a: 1, b: 2, pad: 'not bytes' },
  { op: 'add', a: 1, b: 2, pad: [1, 2] },
  { op: 'add', a: [1], b: 2 },
  { op: 'add', a: { x: 1 }, b: 2 },
  { op: 'add', a: true, b: 2 },
  { op: 'add', a: new Date(0), b: 1 },
  { op: 'add', a: 1, b: new Set([1]) },
  { op: 'add', a: 1, b: /x/ },
  { op: 'add', a: 1, b: new Error('e') },
];

/** Envelopes that are valid MessagePack but not valid envelopes, with what the server must do. */
function wrongEnvelope(rng: Rng): { value: unknown; expect: Expect } {
  const id = 1 + rng.int(1000);
  const choices: { value: unknown; expect: Expect }[] = [
    { value: { t: 'call', id, d: -5, b: {} }, expect: { kind: 'replies', ids: [id], malformed: [id] } },
    { value: { t: 'call', id, d: 'soon', b: {} }, expect: { kind: 'replies', ids: [id], malformed: [id] } },
    { value: { t: 'call', id, d: Infinity, b: {} }, expect: { kind: 'replies', ids: [id], malformed: [id] } },
    { value: { t: 'call', id, d: NaN, b: {} }, expect: { kind: 'replies', ids: [id], malformed: [id] } },
    { value: { t: 'call', id: 0, d: 5, b: {} }, expect: { kind: 'close' } },
    { value: { t: 'call', id: -id, b: {} }, expect: { kind: 'close' } },
    { value: { t: 'call', id: id + 0.5, b: {} }, expect: { kind: 'close' } },
    { value: { t: 'call', id: String(id), b: {} }, expect: { kind: 'close' } },
    { value: { t: 'call', id: 2 ** 40, b: {} }, expect: { kind: 'close' } },
    { value: { t: 'call', b: {} }, expect: { kind: 'close' } },
    { value: { t: 'reply', id, b: 1 }, expect: { kind: 'close' } },
    { value: { t: 'reply', id, e: { code: 'TIMEOUT', message: 'x' } }, expect: { kind: 'close' } },
    { value: { t: 'bogus', id }, expect: { kind: 'close' } },
    { value: { t: 7, id }, expect: { kind: 'close' } },
    { value: { id, b: {} }, expect: { kind: 'close' } },
    { value: ['call', id, 5, {}], expect: { kind: 'close' } },
    { value: 'call', expect: { kind: 'close' } },
    { value: null, expect: { kind: 'close' } },
    { value: Buffer.from('call'), expect: { kind: 'close' } },
    { value: { __proto__: { t: 'call', id } }, expect: { kind: 'close' } },
    { value: { t: 'msg', b: { not: 'an add' } }, expect: { kind: 'replies', ids: [], malformed: [] } }, // dropped
  ];
  return rng.pick(choices);
}

function randomSplit(rng: Rng, bytes: Buffer): Buffer[] {
  const pieces = 1 + rng.int(4);
  const cuts = Array.from({ length: pieces - 1 }, () => rng.int(bytes.length + 1)).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    out.push(bytes.subarray(at, cut));
    at = cut;
  }
  return out.filter((b) => b.length > 0);
}

function makeCase(rng: Rng, n: number, boundaryStream: { bytes: Buffer; expect: Expect }): Case {
  // Every byte boundary of one valid multi-frame stream is covered by the first cases.
  if (n < boundaryStream.bytes.length) {
    const k = n + 1;
    return {
      name: `split@${k}`,
      chunks: [boundaryStream.bytes.subarray(0, k), boundaryStream.bytes.subarray(k)].filter((b) => b.length > 0),
      expect: boundaryStream.expect,
      greet: false,
    };
  }
  const kind = rng.int(10);
  switch (kind) {
    case 0: {
      const bytes = rng.bytes(1 + rng.int(rng.next() < 0.2 ? 5000 : 64));
      return { name: 'random bytes', chunks: randomSplit(rng, bytes), expect: { kind: 'any' } };
    }
    case 1: {
      // A plausible length (small) followed by random bytes: valid framing, random body.
      const body = rng.bytes(1 + rng.int(200));
      const framed = frameOfBody(body);
      return { name: 'random body', chunks: randomSplit(rng, framed), expect: { kind: 'any' } };
    }
    case 2: {
      const frame = validCall(rng, 1 + rng.int(1000));
      const cut = rng.int(frame.length); // 0..len-1: always incomplete
      return {
        name: 'truncated valid frame',
        chunks: cut === 0 ? [] : randomSplit(rng, frame.subarray(0, cut)),
        expect: { kind: 'wait' },
      };
    }
    case 3: {
      // A valid frame whose body is corrupted: a few flipped bytes. Usually undecodable.
      const body = packBody({ t: 'call', id: 1 + rng.int(1000), d: 5000, b: { op: 'add', a: 1, b: 2 } });
      for (let i = 0, flips = 1 + rng.int(3); i < flips; i++) body[rng.int(body.length)] = rng.int(256);
      return { name: 'corrupted body', chunks: randomSplit(rng, frameOfBody(body)), expect: { kind: 'any' } };
    }
    case 4: {
      const { value, expect } = wrongEnvelope(rng);
      return { name: 'wrong envelope', chunks: randomSplit(rng, encodeFrame(value)), expect };
    }
    case 5: {
      const id = 1 + rng.int(1000);
      const body = rng.pick(wrongBodies);
      return {
        name: 'wrong body type',
        chunks: randomSplit(rng, encodeFrame({ t: 'call', id, d: 5000, b: body })),
        expect: { kind: 'replies', ids: [id], malformed: [id] },
      };
    }
    case 6: {
      const header = Buffer.alloc(FRAME_HEADER_BYTES);
      header.writeUInt32BE(MAX_FRAME_BYTES + 1 + rng.int(2 ** 31), 0);
      return {
        name: 'oversized frame',
        chunks: [Buffer.concat([header, rng.bytes(rng.int(100))])],
        expect: { kind: 'close' },
      };
    }
    case 7: {
      // Hostile structure inside a valid frame: deep nesting, a huge declared length, a
      // zero-length body. All are undecodable: closed.
      const pick = rng.int(4);
      const body =
        pick === 0
          ? Buffer.concat([Buffer.alloc(MAX_FRAME_BYTES - 1, 0x91), Buffer.from([0x01])])
          : pick === 1
            ? Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff, 0x01])
            : pick === 2
              ? Buffer.from([0xdb, 0x7f, 0xff, 0xff, 0xff, 0x61])
              : Buffer.alloc(0);
      return { name: 'hostile structure', chunks: randomSplit(rng, frameOfBody(body)), expect: { kind: 'close' } };
    }
    case 9: {
      const { name, bytes } = badGreeting(rng);
      return { name, chunks: randomSplit(rng, bytes), expect: { kind: 'close' }, greet: false };
    }
    default: {
      // Valid calls then garbage in one stream: the connection is closed (replies may be lost).
      const frames = Buffer.concat([validCall(rng, 1), validCall(rng, 2), frameOfBody(Buffer.from([0xc1, 0xc1]))]);
      return { name: 'valid then garbage', chunks: randomSplit(rng, frames), expect: { kind: 'close' } };
    }
  }
}

class CountingLogger implements RpcLogger {
  readonly counts = new Map<string, number>();
  debug(): void {
    // debug lines are not counted
  }
  warn(_obj: object, msg: string): void {
    this.counts.set(msg, (this.counts.get(msg) ?? 0) + 1);
  }
  error(_obj: object, msg: string): void {
    this.counts.set(`error: ${msg}`, (this.counts.get(`error: ${msg}`) ?? 0) + 1);
  }
}

function checkOutcome(c: Case, peer: RawPeer): string | undefined {
  if (peer.invalid.length > 0) return `server sent invalid frames: ${peer.invalid.join('; ')}`;
  const replies = peer.envelopes.filter((e): e is Extract<Envelope, { t: 'reply' }> => e.t === 'reply');
  if (replies.length !== peer.envelopes.length) return 'server sent something other than replies';
  const e = c.expect;
  switch (e.kind) {
    case 'any':
      return undefined;
    case 'close':
      return peer.closedByPeer ? undefined : 'expected the server to close the connection';
    case 'wait':
      if (peer.closedByPeer) return 'closed on an incomplete frame';
      return replies.length === 0 ? undefined : 'replied to an incomplete frame';
    case 'replies': {
      if (peer.closedByPeer) return 'closed instead of replying';
      const ids = replies.map((r) => r.id).sort((a, b) => a - b);
      if (JSON.stringify(ids) !== JSON.stringify([...e.ids].sort((a, b) => a - b)))
        return `replies to ${JSON.stringify(ids)}, expected ${JSON.stringify(e.ids)}`;
      for (const r of replies) {
        const malformed = r.e !== undefined && r.e.code === 'MALFORMED_MESSAGE';
        if (malformed !== e.malformed.includes(r.id)) return `reply ${r.id}: ${JSON.stringify(r.e ?? 'ok')}`;
      }
      return undefined;
    }
    default:
      return assertNever(e);
  }
}

test(
  'fuzz: hostile input gets an error reply or a closed ' + 'connection; a healthy client is served throughout',
  async (t) => {
    const seed = seedFromEnv('rpc server fuzz');
    const logger = new CountingLogger();
    let messages = 0;
    const server = new RpcServer({
      host: '127.0.0.1',
      port: 0,
      maxFrameBytes: MAX_FRAME_BYTES,
      logger,
      requests: codec(Add),
      messages: codec(Add),
      handler: (req) => (req.a % 2 === 0 ? req.a + req.b : Promise.resolve(req.a + req.b)),
      onMessage: () => messages++,
    });
    const port = await server.listen();
    t.after(() => server.close());

    // The healthy client: closed-loop calls for the whole run, every answer checked.
    const healthy = new RpcConnection({ host: '127.0.0.1', port, maxFrameBytes: MAX_FRAME_BYTES });
    t.after(() => healthy.close());
    let done = false;
    let healthyOk = 0;
    const healthyErrors: string[] = [];
    const healthyLoop = (async () => {
      let i = 0;
      while (!done) {
        i++;
        try {
          const sum = await healthy.call({ op: 'add', a: i, b: 1000 }, { timeoutMs: 5000 });
          if (sum === i + 1000) healthyOk++;
          else healthyErrors.push(`call ${i}: got ${String(sum)}`);
        } catch (err) {
          healthyErrors.push(`call ${i}: ${String(err)}`);
        }
        if (i % 50 === 0) await delay(1);
      }
    })();

    // One stream for the split-at-every-boundary cases: greeting, valid call, wrong body, message, valid call.
    const boundaryRng = new Rng(seed ^ 0x5eed);
    const boundaryStream = {
      bytes: Buffer.concat([
        encodeGreeting('any'),
        validCall(boundaryRng, 11),
        encodeFrame({ t: 'call', id: 12, d: 5000, b: { op: 'add', a: 'x', b: 1 } }),
        encodeFrame({ t: 'msg', b: { op: 'add', a: 1, b: 2 } }),
        validCall(boundaryRng, 13),
      ]),
      expect: { kind: 'replies', ids: [11, 12, 13], malformed: [12] } as const,
    };

    const started = Date.now();
    const failures: string[] = [];
    const tally = new Map<string, number>();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < CASES && (next < MIN_CASES || Date.now() - started < TIME_BUDGET_MS)) {
        const n = next++;
        // Each case has its own PRNG derived from (seed, n): replayable whatever the interleaving.
        const c = makeCase(new Rng((seed ^ Math.imul(n + 1, 0x9e3779b1)) >>> 0), n, boundaryStream);
        tally.set(
          c.name.startsWith('split@') ? 'split at every byte boundary' : c.name,
          (tally.get(c.name.startsWith('split@') ? 'split at every byte boundary' : c.name) ?? 0) + 1,
        );
        const peer = await RawPeer.connect(port, MAX_FRAME_BYTES, { greet: c.greet !== false });
        try {
          for (const chunk of c.chunks) {
            await peer.write(chunk);
            if (c.chunks.length > 1) await new Promise((resolve) => setImmediate(resolve)); // separate segments
          }
          const expectCount = c.expect.kind === 'replies' ? c.expect.ids.length : 0;
          const until = Date.now() + (c.expect.kind === 'wait' ? 20 : c.expect.kind === 'any' ? 50 : 3000);
          while (
            !peer.closed &&
            Date.now() < until &&
            !(c.expect.kind === 'replies' && peer.envelopes.length >= expectCount)
          )
            await delay(2);
          if (c.expect.kind === 'replies') await delay(5); // nothing more should come, and no close
          const problem = checkOutcome(c, peer);
          if (problem !== undefined)
            failures.push(
              `case ${n} (${c.name}): ${problem}; ` +
                `chunks=${c.chunks.map((b) => b.toString('hex').slice(0, 80)).join('|')}`,
            );
        } finally {
          await peer.destroy();
        }
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, () => worker()));
    done = true;
    await healthyLoop;

    console.log(`# ${next} cases in ${Date.now() - started} ms: ${JSON.stringify(Object.fromEntries(tally))}`);
    console.log(
      `# healthy calls answered: ${healthyOk}; one-way messages accepted: ${messages}; ` +
        `server warnings: ${JSON.stringify(Object.fromEntries(logger.counts))}`,
    );
    assert.deepEqual(failures.slice(0, 10), [], `seed ${seed}`);
    assert.deepEqual(healthyErrors.slice(0, 10), [], `seed ${seed}`);
    assert.ok(healthyOk > 100, `healthy client made progress (${healthyOk})`);
    assert.ok(next >= MIN_CASES);
    assert.equal([...logger.counts.keys()].filter((k) => k.startsWith('error:')).length, 0, 'no handler failures');
    // Every hostile connection is gone; only the healthy one remains.
    const until = Date.now() + 2000;
    while (server.connectionCount > 1 && Date.now() < until) await delay(5);
    assert.equal(server.connectionCount, 1);
  },
);

test('fuzz: a client facing a hostile server fails calls with typed errors and never crashes', async (t) => {
  const seed = seedFromEnv('rpc client fuzz');
  const rng = new Rng(seed);
  const sockets = new Set<Socket>();
  // The hostile server greets wrongly now and then (another service, another version, another
  // role), and answers each call with one random kind of nonsense, using its id.
  const hostile = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    const greet = rng.int(10);
    socket.write(
      greet === 0
        ? Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n')
        : greet === 1
          ? greetingWith(7, 9, 0x73)
          : greet === 2
            ? encodeGreeting('nameserver')
            : greet === 3
              ? rng.bytes(1 + rng.int(GREETING_BYTES))
              : encodeGreeting('storage'),
    );
    const clientGreeting = new GreetingReader('client');
    const decoder = new FrameDecoder(MAX_FRAME_BYTES, {
      onFrame: (body) => {
        const parsed = parseEnvelope(unpackBody(body));
        if (!parsed.ok || parsed.envelope.t !== 'call') return;
        const id = parsed.envelope.id;
        const pick = rng.int(8);
        const out =
          pick === 0
            ? rng.bytes(1 + rng.int(100))
            : pick === 1
              ? encodeFrame({ t: 'reply', id, e: { code: rng.pick(['NOT_PRIMARY', 'NOPE', 'TIMEOUT']), message: 'x' } })
              : pick === 2
                ? encodeFrame({ t: 'reply', id, e: 'not an error' })
                : pick === 3
                  ? encodeFrame({ t: 'reply', id, b: rng.pick([1, 'x', null, Buffer.from('b')]) })
                  : pick === 4
                    ? encodeFrame({ t: 'call', id, b: 1 })
                    : pick === 5
                      ? encodeFrame({ t: 'msg', b: rng.bytes(10) })
                      : pick === 6
                        ? frameOfBody(rng.bytes(1 + rng.int(30)))
                        : (() => {
                            const header = Buffer.alloc(FRAME_HEADER_BYTES);
                            header.writeUInt32BE(MAX_FRAME_BYTES + 1, 0);
                            return header;
                          })();
        socket.write(out);
      },
      onFrameError: () => socket.destroy(),
    });
    socket.on('data', (chunk: Buffer) => {
      if (!clientGreeting.isDone) {
        const r = clientGreeting.push(chunk);
        if (r.state !== 'ok') return;
        chunk = r.rest;
      }
      decoder.push(chunk);
    });
  });
  await new Promise<void>((resolve) => hostile.listen(0, '127.0.0.1', resolve));
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => hostile.close(() => resolve()));
  });
  const address = hostile.address();
  assert.ok(address !== null && typeof address === 'object');
  const conn = new RpcConnection({
    host: '127.0.0.1',
    port: address.port,
    maxFrameBytes: MAX_FRAME_BYTES,
    backoffMinMs: 1,
    backoffMaxMs: 5,
    onMessage: () => undefined,
    expectRole: 'storage',
  });
  t.after(() => conn.close());
  const outcomes = new Map<string, number>();
  const started = Date.now();
  for (let round = 0; round < 400 && Date.now() - started < 10_000; round++) {
    const calls = Array.from({ length: 4 }, () =>
      conn.call({ op: 'add', a: 1, b: 2 }, { timeoutMs: 100, reply: codec(Type.Integer()) }).then(
        () => 'ok',
        (err: unknown) => {
          assert.ok(err instanceof DstoreError, `typed error, got ${String(err)}`);
          if (err instanceof MalformedMessageError) return 'MALFORMED_MESSAGE';
          return err.code;
        },
      ),
    );
    for (const outcome of await Promise.all(calls)) outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    if (round % 20 === 19) await delay(6); // let the backoff pass now and then
  }
  console.log(`# client outcomes: ${JSON.stringify(Object.fromEntries(outcomes))}`);
  assert.ok((outcomes.get('CONNECTION_CLOSED') ?? 0) > 0);
  assert.ok((outcomes.get('MALFORMED_MESSAGE') ?? 0) > 0);
  assert.ok((outcomes.get('PROTOCOL_MISMATCH') ?? 0) > 0);
  assert.ok((outcomes.get('WRONG_ROLE') ?? 0) > 0);
});

/**
 * Shared helpers for the rpc tests: a seeded PRNG, servers on ephemeral loopback ports, and
 * a raw TCP peer that speaks bytes (for malformed input) and collects the frames it gets.
 */
import { connect, type Socket } from 'node:net';
import { FrameDecoder, parseEnvelope, unpackBody, type Envelope } from '../../src/rpc/frame.js';
import { GreetingReader, encodeGreeting, type GreetingResult } from '../../src/rpc/handshake.js';

/** mulberry32: a tiny seeded PRNG, good enough to drive fuzzing reproducibly. */
export class Rng {
  private state: number;
  constructor(readonly seed: number) {
    this.state = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(items: readonly T[]): T {
    const item = items[this.int(items.length)];
    if (item === undefined) throw new Error('pick from an empty list');
    return item;
  }
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

/** The seed from DSTORE_SEED, or a fresh one; always printed so a failure can be replayed. */
export function seedFromEnv(name: string): number {
  const fromEnv = process.env['DSTORE_SEED'];
  const seed = fromEnv !== undefined && fromEnv !== '' ? Number(fromEnv) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
  console.log(`# ${name}: seed=${seed} (replay with DSTORE_SEED=${seed})`);
  return seed;
}

/** The error `p` rejects with; fails the test if it resolves. */
export async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection, but the promise resolved');
}

export const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `predicate` holds, polling every 5 ms; throws after `timeoutMs`. */
export async function waitFor(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await delay(5);
  }
}

/**
 * A raw TCP peer: writes arbitrary bytes and records the frames and close it sees. By default
 * it sends a valid greeting first (handshake.ts) and reads the server's before any frame;
 * `greet: false` leaves the first bytes to the test.
 */
export class RawPeer {
  readonly envelopes: Envelope[] = [];
  /** The server's greeting, once read (undefined before, or if it was not dstore's). */
  greeting: GreetingResult | undefined;
  /** Frames that were not valid envelopes (should never happen from our server). */
  readonly invalid: string[] = [];
  closedByPeer = false;
  closed = false;
  private readonly closedPromise: Promise<void>;

  private constructor(
    readonly socket: Socket,
    maxFrameBytes: number,
  ) {
    const reader = new GreetingReader('server');
    const decoder = new FrameDecoder(maxFrameBytes, {
      onFrame: (body) => {
        try {
          const parsed = parseEnvelope(unpackBody(body));
          if (parsed.ok) this.envelopes.push(parsed.envelope);
          else this.invalid.push(parsed.reason);
        } catch (err) {
          this.invalid.push(String(err));
        }
      },
      onFrameError: (reason) => this.invalid.push(reason),
    });
    socket.on('data', (chunk: Buffer) => {
      if (!reader.isDone) {
        const r = reader.push(chunk);
        if (r.state === 'pending') return;
        this.greeting = r;
        if (r.state !== 'ok') {
          this.invalid.push(`server greeting: ${r.state === 'refused' ? r.message : ''}`);
          return;
        }
        chunk = r.rest;
      }
      if (this.greeting?.state === 'ok') decoder.push(chunk);
    });
    socket.on('end', () => {
      this.closedByPeer = true;
    });
    socket.on('error', () => {
      // ECONNRESET when the server destroys the connection: recorded as a close below.
      this.closedByPeer = true;
    });
    this.closedPromise = new Promise((resolve) =>
      socket.once('close', () => {
        this.closed = true;
        resolve();
      }),
    );
  }

  static connect(port: number, maxFrameBytes = 1 << 20, options: { greet?: boolean } = {}): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, noDelay: true });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        if (options.greet !== false) socket.write(encodeGreeting('any'));
        resolve(new RawPeer(socket, maxFrameBytes));
      });
    });
  }

  write(bytes: Uint8Array): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) {
        resolve();
        return;
      }
      // A write to a connection the server already closed fails with EPIPE/ECONNRESET:
      // that is an expected outcome here, recorded through 'error'/'close'.
      this.socket.write(bytes, () => resolve());
    });
  }

  /** Resolves when the server closed the connection or `ms` passed, whichever first. */
  async settle(ms: number): Promise<void> {
    await Promise.race([this.closedPromise, delay(ms)]);
  }

  async destroy(): Promise<void> {
    this.socket.destroy();
    await this.closedPromise;
  }
}

/**
 * The greeting that opens every dstore connection (DESIGN §10; docs/protocol.md). Before any
 * frame, each side sends 8 raw bytes, at once and without waiting for the other's:
 *
 *   offset 0..3  magic "DSTR" (0x44 0x53 0x54 0x52)
 *   offset 4     lowest protocol version the sender speaks
 *   offset 5     highest protocol version the sender speaks
 *   offset 6     role: the listener says what it is ('n' nameserver, 's' storage server,
 *                '*' anything else); the dialer says what it expects to reach ('*': anything)
 *   offset 7     reserved, 0
 *
 * Both sides use the highest version both speak; without one, or with another magic, the
 * connection is refused. The magic is checked byte by byte as it arrives, so an HTTP server
 * ("HTTP/1.1 400 …"), Redis ("-ERR …") or any other service is recognised from its first
 * byte, and a typed, non-retryable error says so instead of a frame-length error.
 *
 * This module is pure bytes: no sockets, no timers.
 */
import { ProtocolMismatchError, WrongRoleError } from '../core/errors.js';

/** Bytes of the greeting. */
export const GREETING_BYTES = 8;
export const MAGIC = Buffer.from('DSTR', 'latin1');

/** The protocol version this build speaks (frames of frame.ts after the greeting). */
export const PROTOCOL_VERSION = 1;
/** The oldest version this build still speaks (raise it when dropping an old wire format). */
export const MIN_PROTOCOL_VERSION = 1;

export type Role = 'nameserver' | 'storage';
/** What a listener is or a dialer expects; `any` is neither a nameserver nor a storage server. */
export type GreetingRole = Role | 'any';

const ROLE_BYTE: Record<GreetingRole, number> = { nameserver: 0x6e /* n */, storage: 0x73 /* s */, any: 0x2a /* * */ };

function roleOfByte(b: number): GreetingRole | undefined {
  for (const [role, byte] of Object.entries(ROLE_BYTE)) if (byte === b) return role as GreetingRole;
  return undefined;
}

export function roleName(role: GreetingRole): string {
  return role === 'nameserver'
    ? 'a dstore nameserver'
    : role === 'storage'
      ? 'a dstore storage server'
      : 'a dstore service that is neither a nameserver nor a storage server';
}

export interface Greeting {
  readonly minVersion: number;
  readonly maxVersion: number;
  readonly role: GreetingRole;
}

export function encodeGreeting(
  role: GreetingRole,
  minVersion = MIN_PROTOCOL_VERSION,
  maxVersion = PROTOCOL_VERSION,
): Buffer {
  const out = Buffer.alloc(GREETING_BYTES);
  MAGIC.copy(out, 0);
  out[4] = minVersion;
  out[5] = maxVersion;
  out[6] = ROLE_BYTE[role];
  out[7] = 0;
  return out;
}

/** Printable start of what a peer sent, for error messages and logs (at most 32 bytes). */
export function describeBytes(bytes: Uint8Array): string {
  const head = Buffer.from(bytes.subarray(0, 32));
  const printable = head.every((b) => (b >= 0x20 && b < 0x7f) || b === 0x0a || b === 0x0d || b === 0x09);
  if (printable) return JSON.stringify(head.toString('latin1'));
  return `0x${head.toString('hex')}`;
}

/** What kind of service the first bytes look like, for the error message. */
function lookAlike(bytes: Uint8Array): string {
  const text = Buffer.from(bytes.subarray(0, 8)).toString('latin1');
  if (text.startsWith('HTTP/')) return ' (it answered like an HTTP server)';
  if (text.startsWith('-ERR') || text.startsWith('+') || text.startsWith('-NOAUTH'))
    return ' (it answered like a Redis server)';
  if (text.startsWith('SSH-')) return ' (it answered like an SSH server)';
  if (bytes.length >= 4 && bytes[0] === 0)
    return ' (it sent a length-prefixed frame without a greeting: a dstore build older than protocol version 1?)';
  return '';
}

export type GreetingResult =
  | { readonly state: 'pending' }
  | { readonly state: 'ok'; readonly greeting: Greeting; readonly version: number; readonly rest: Buffer }
  | { readonly state: 'refused'; readonly reason: 'not-dstore' | 'version'; readonly message: string };

/**
 * Reads the peer's greeting from the first chunks of a stream. `push` returns `pending` until
 * 8 bytes arrived, `refused` as soon as a byte of the magic is wrong (or the versions do not
 * overlap), or `ok` with the agreed version and the bytes after the greeting (the first
 * frames). `peer` names the other side in messages (e.g. "127.0.0.1:7000").
 */
export class GreetingReader {
  private readonly buffer = Buffer.alloc(GREETING_BYTES);
  private fill = 0;
  private done = false;

  constructor(
    private readonly peer: string,
    private readonly minVersion = MIN_PROTOCOL_VERSION,
    private readonly maxVersion = PROTOCOL_VERSION,
  ) {}

  get isDone(): boolean {
    return this.done;
  }

  push(chunk: Buffer): GreetingResult {
    if (this.done) throw new Error('GreetingReader.push after the greeting was read');
    let at = 0;
    while (this.fill < GREETING_BYTES && at < chunk.length) {
      const b = chunk[at++] as number;
      if (this.fill < MAGIC.length && b !== MAGIC[this.fill]) {
        this.done = true;
        const seen = Buffer.concat([this.buffer.subarray(0, this.fill), chunk]);
        return {
          state: 'refused',
          reason: 'not-dstore',
          message:
            `${this.peer} does not speak the dstore protocol${lookAlike(seen)}: ` +
            `it sent ${describeBytes(seen)} where a dstore greeting was expected`,
        };
      }
      this.buffer[this.fill++] = b;
    }
    if (this.fill < GREETING_BYTES) return { state: 'pending' };
    this.done = true;
    const peerMin = this.buffer[4] as number;
    const peerMax = this.buffer[5] as number;
    const role = roleOfByte(this.buffer[6] as number);
    const speaks = (lo: number, hi: number) =>
      lo === hi ? `protocol version ${lo}` : `protocol versions ${lo}..${hi}`;
    if (role === undefined || peerMin > peerMax) {
      return {
        state: 'refused',
        reason: 'version',
        message: `${this.peer} sent a malformed dstore greeting (${describeBytes(this.buffer)})`,
      };
    }
    const version = Math.min(this.maxVersion, peerMax);
    if (version < this.minVersion || version < peerMin) {
      return {
        state: 'refused',
        reason: 'version',
        message:
          `${this.peer} speaks dstore ${speaks(peerMin, peerMax)}, this build speaks ` +
          `${speaks(this.minVersion, this.maxVersion)}: upgrade the older side`,
      };
    }
    return {
      state: 'ok',
      greeting: { minVersion: peerMin, maxVersion: peerMax, role },
      version,
      rest: chunk.subarray(at),
    };
  }
}

/**
 * The error a dialer reports for a listener's greeting: undefined when it is fine. A refused
 * greeting is a ProtocolMismatchError; a listener of another role a WrongRoleError. Neither
 * is retryable: the address is wrong, waiting does not help.
 */
export function dialerCheck(
  result: GreetingResult,
  address: string,
  expect: GreetingRole,
): ProtocolMismatchError | WrongRoleError | undefined {
  if (result.state === 'refused') return new ProtocolMismatchError(result.message);
  if (result.state !== 'ok' || expect === 'any') return undefined;
  if (result.greeting.role !== expect) {
    return new WrongRoleError(
      `${address} is ${roleName(result.greeting.role)}, not ${roleName(expect).replace(/^a dstore /, 'a ')}: ` +
        `check the address`,
      expect,
      result.greeting.role,
    );
  }
  return undefined;
}

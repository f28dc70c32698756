/**
 * Calls over `maxFrameBytes` (README "Limits"): rather than only closing the connection, a
 * server reads the first bytes of such a frame, and when they are a call envelope it skips the
 * rest of the frame and answers that call with an error — VALUE_TOO_LARGE for a put whose
 * value is over --max-value-bytes, which the prefix shows (the value's MessagePack header
 * carries its length). `peekCall` reads just enough MessagePack from a truncated body for that;
 * it never throws and never reads past the prefix.
 */
import { type DstoreError, ValueTooLargeError } from '../core/errors.js';
import { isCallId } from './frame.js';

/** Bytes of an oversized frame's body read to find its call id and fields. */
export const OVERSIZED_PREFIX_BYTES = 2048;

/** A field seen in the prefix: a scalar, or the declared length of binary data or a string. */
export type PeekedValue = string | number | boolean | null | { readonly binBytes: number };

export interface PeekedCall {
  readonly id: number;
  /** Fields of the call body `b` that lie (or whose headers lie) inside the prefix, in order. */
  readonly body: Readonly<Record<string, PeekedValue>>;
}

/** Decides the error for an oversized call; undefined for the transport's default. */
export type OversizedCallHandler = (call: PeekedCall, frameBytes: number) => DstoreError | undefined;

/** The storage server's: a put with a value over `maxValueBytes` gets VALUE_TOO_LARGE. */
export function valueTooLargeForPut(maxValueBytes: number): OversizedCallHandler {
  return (call) => {
    const value = call.body['value'];
    if (call.body['t'] !== 'put' || typeof value !== 'object' || value === null) return undefined;
    return value.binBytes > maxValueBytes ? new ValueTooLargeError(value.binBytes, maxValueBytes) : undefined;
  };
}

class Truncated extends Error {}

/** A cursor over a prefix; reading past its end throws Truncated. */
class Reader {
  at = 0;
  constructor(private readonly b: Uint8Array) {}
  private need(n: number): void {
    if (this.at + n > this.b.length) throw new Truncated();
  }
  u8(): number {
    this.need(1);
    return this.b[this.at++] as number;
  }
  uint(bytes: 1 | 2 | 4 | 8): number {
    this.need(bytes);
    let v = 0;
    for (let i = 0; i < bytes; i++) v = v * 256 + (this.b[this.at++] as number);
    return v;
  }
  int(bytes: 1 | 2 | 4 | 8): number {
    const u = this.uint(bytes);
    const range = 2 ** (8 * bytes);
    return u >= range / 2 ? u - range : u;
  }
  float(bytes: 4 | 8): number {
    this.need(bytes);
    const view = new DataView(this.b.buffer, this.b.byteOffset + this.at, bytes);
    this.at += bytes;
    return bytes === 4 ? view.getFloat32(0) : view.getFloat64(0);
  }
  text(n: number): string {
    this.need(n);
    const s = Buffer.from(this.b.buffer, this.b.byteOffset + this.at, n).toString('utf8');
    this.at += n;
    return s;
  }
  /** Skips up to `n` bytes; false when the prefix ended first. */
  skip(n: number): boolean {
    if (this.at + n > this.b.length) {
      this.at = this.b.length;
      return false;
    }
    this.at += n;
    return true;
  }
}

/** The entry count of a map header, or undefined when the next item is not a map. */
function mapHeader(r: Reader): number | undefined {
  const b = r.u8();
  if (b >= 0x80 && b <= 0x8f) return b & 0x0f;
  if (b === 0xde) return r.uint(2);
  if (b === 0xdf) return r.uint(4);
  return undefined;
}

function stringOf(r: Reader, b: number): string | undefined {
  if (b >= 0xa0 && b <= 0xbf) return r.text(b & 0x1f);
  if (b === 0xd9) return r.text(r.uint(1));
  if (b === 0xda) return r.text(r.uint(2));
  if (b === 0xdb) return r.text(r.uint(4));
  return undefined;
}

/**
 * A scalar, or the declared length of a bin/str whose bytes are skipped (the end of the
 * prefix may cut them: the length is still known). Undefined for arrays, maps and extensions.
 */
function scalar(r: Reader): { value: PeekedValue; complete: boolean } | undefined {
  const b = r.u8();
  if (b <= 0x7f) return { value: b, complete: true };
  if (b >= 0xe0) return { value: b - 0x100, complete: true };
  switch (b) {
    case 0xc0:
      return { value: null, complete: true };
    case 0xc2:
      return { value: false, complete: true };
    case 0xc3:
      return { value: true, complete: true };
    case 0xcc:
      return { value: r.uint(1), complete: true };
    case 0xcd:
      return { value: r.uint(2), complete: true };
    case 0xce:
      return { value: r.uint(4), complete: true };
    case 0xcf:
      return { value: r.uint(8), complete: true };
    case 0xd0:
      return { value: r.int(1), complete: true };
    case 0xd1:
      return { value: r.int(2), complete: true };
    case 0xd2:
      return { value: r.int(4), complete: true };
    case 0xd3:
      return { value: r.int(8), complete: true };
    case 0xca:
      return { value: r.float(4), complete: true };
    case 0xcb:
      return { value: r.float(8), complete: true };
    case 0xc4:
    case 0xc5:
    case 0xc6: {
      const n = r.uint(b === 0xc4 ? 1 : b === 0xc5 ? 2 : 4);
      return { value: { binBytes: n }, complete: r.skip(n) };
    }
  }
  if ((b >= 0xa0 && b <= 0xbf) || b === 0xd9 || b === 0xda || b === 0xdb) {
    const start = r.at;
    try {
      return { value: stringOf(r, b) as string, complete: true };
    } catch (err) {
      if (!(err instanceof Truncated)) throw err;
      r.at = start;
      return undefined; // a string cut by the prefix: not needed
    }
  }
  return undefined;
}

/** Reads map entries into `out` until the map, the prefix or the readable types end. */
function readMap(r: Reader, out: Record<string, PeekedValue>, onNested?: (key: string) => boolean): void {
  const n = mapHeader(r);
  if (n === undefined) return;
  for (let i = 0; i < n && i < 64; i++) {
    const key = stringOf(r, r.u8());
    if (key === undefined) return;
    if (onNested?.(key)) continue;
    const v = scalar(r);
    if (v === undefined) return;
    if (key !== '__proto__') out[key] = v.value;
    if (!v.complete) return;
  }
}

/**
 * The call id and the first fields of the body of a truncated call envelope, or undefined
 * when the prefix is not one (then the connection is closed, as for any bad frame).
 */
export function peekCall(prefix: Uint8Array): PeekedCall | undefined {
  const r = new Reader(prefix);
  const envelope: Record<string, PeekedValue> = {};
  const body: Record<string, PeekedValue> = {};
  try {
    readMap(r, envelope, (key) => {
      if (key !== 'b') return false;
      readMap(r, body);
      throw new Truncated(); // nothing after the body matters (and it is usually cut off)
    });
  } catch (err) {
    if (!(err instanceof Truncated)) return undefined;
  }
  const id = envelope['id'];
  if (envelope['t'] !== 'call' || !isCallId(id)) return undefined;
  return { id, body };
}

/**
 * Framing of the RPC transport (DESIGN §10): a stream of frames, each a 4-byte big-endian
 * body length followed by a MessagePack body. A body is an envelope:
 *
 *   { t: 'call',  id, d, b }   a request; `d` = ms the caller will still wait, at send
 *   { t: 'reply', id, b }      the answer to call `id`
 *   { t: 'reply', id, e }      call `id` failed; `e` is a WireError `{ code, message, ... }`
 *   { t: 'msg',   b }          a one-way message
 *
 * This module is pure bytes: `FrameDecoder` turns chunks into frame bodies (at most one
 * frame's bytes are buffered, and never more than `maxFrameBytes`), `FrameWriter` coalesces
 * the frames written in one event-loop turn into one `socket.write` and respects the
 * socket's backpressure, and `parseEnvelope` validates an unpacked body without throwing.
 */
import type { Socket } from 'node:net';
import { Packr } from 'msgpackr';
import type { WireError } from '../core/errors.js';

/** Bytes of the length prefix in front of every frame body. */
export const FRAME_HEADER_BYTES = 4;

/** Largest call id; ids are 1..MAX_CALL_ID and wrap (the in-flight bound is far below). */
export const MAX_CALL_ID = 0x7fff_ffff;

/**
 * One MessagePack codec for the process. `useRecords: false` keeps plain objects plain;
 * `copyBuffers: true` gives every binary value its own memory, so a small value kept by a
 * backend never pins the 64 KiB socket chunk it arrived in; `structuredClone: false`
 * refuses the reference extensions (no cycles from the network).
 */
const packr = new Packr({ useRecords: false, copyBuffers: true, structuredClone: false, mapsAsObjects: true });

/** Packs a value as a frame body (no length prefix). Throws on values msgpack cannot hold. */
export function packBody(value: unknown): Buffer {
  return packr.pack(value);
}

/** Unpacks one frame body. Throws on malformed MessagePack or trailing bytes. */
export function unpackBody(body: Uint8Array): unknown {
  return packr.unpack(body);
}

/** A whole frame (length prefix + body) for a value; for tests and raw clients. */
export function encodeFrame(value: unknown): Buffer {
  const body = packBody(value);
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, FRAME_HEADER_BYTES);
  return frame;
}

// ---- envelopes ----

export type Envelope =
  | { readonly t: 'call'; readonly id: number; readonly d: number | undefined; readonly b: unknown }
  | { readonly t: 'reply'; readonly id: number; readonly b: unknown; readonly e?: undefined }
  | { readonly t: 'reply'; readonly id: number; readonly e: WireError }
  | { readonly t: 'msg'; readonly b: unknown };

/**
 * A validated envelope, or why not. On failure `id` is set when the body was a call or a
 * reply whose id could be read, so the receiver can answer (or fail) just that call.
 */
export type ParsedEnvelope =
  | { readonly ok: true; readonly envelope: Envelope }
  | { readonly ok: false; readonly reason: string; readonly t?: 'call' | 'reply'; readonly id?: number };

export function isCallId(x: unknown): x is number {
  return typeof x === 'number' && Number.isInteger(x) && x >= 1 && x <= MAX_CALL_ID;
}

/** The largest deadline a call may carry, in ms (about 24 days; also setTimeout's bound). */
export const MAX_DEADLINE_MS = 0x7fff_ffff;

function isWireError(x: unknown): x is WireError {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return false;
  const o = x as Record<string, unknown>;
  return (
    typeof o['code'] === 'string' &&
    typeof o['message'] === 'string' &&
    (o['retryable'] === undefined || typeof o['retryable'] === 'boolean')
  );
}

/** Validates an unpacked body as an envelope. Never throws. */
export function parseEnvelope(x: unknown): ParsedEnvelope {
  if (typeof x !== 'object' || x === null || Array.isArray(x) || x instanceof Uint8Array) {
    return { ok: false, reason: 'envelope is not a map' };
  }
  const o = x as Record<string, unknown>;
  const t = o['t'];
  const id = o['id'];
  switch (t) {
    case 'call': {
      if (!isCallId(id)) return { ok: false, reason: 'call without a valid id', t };
      const d = o['d'];
      if (d !== undefined && (typeof d !== 'number' || !(d >= 0 && d <= MAX_DEADLINE_MS))) {
        return { ok: false, reason: `call ${id}: deadline d is not 0..${MAX_DEADLINE_MS} ms`, t, id };
      }
      return { ok: true, envelope: { t, id, d, b: o['b'] } };
    }
    case 'reply': {
      if (!isCallId(id)) return { ok: false, reason: 'reply without a valid id', t };
      const e = o['e'];
      if (e === undefined) return { ok: true, envelope: { t, id, b: o['b'] } };
      if (!isWireError(e)) return { ok: false, reason: `reply ${id}: error is not { code, message }`, t, id };
      return { ok: true, envelope: { t, id, e } };
    }
    case 'msg':
      return { ok: true, envelope: { t, b: o['b'] } };
    default:
      return { ok: false, reason: 'envelope type t is not call, reply or msg' };
  }
}

// ---- decoding a byte stream into frames ----

/** Frames that span chunks are reassembled in a buffer that grows from this size. */
const REASSEMBLY_START_BYTES = 64 * 1024;

export interface FrameSink {
  /** One complete frame body. It may be a view of the chunk: use it before returning. */
  onFrame(body: Buffer): void;
  /** The stream is unusable (a frame over the limit); the caller closes the connection. */
  onFrameError(reason: string, frameBytes: number): void;
  /**
   * A frame over `maxFrameBytes` but within the decoder's `maxSkipBytes`: the first bytes of
   * its body (at most `prefixBytes`). True skips the rest of the frame without buffering it
   * and goes on with the next; false stops the decoder (the caller closes the connection).
   */
  onOversizedFrame?(prefix: Buffer, frameBytes: number): boolean;
}

/**
 * Splits a byte stream into frame bodies. A frame wholly inside one chunk is handed out as a
 * view (no copy); a frame split across chunks is copied once into a reassembly buffer that
 * grows with the bytes actually received (a peer that announces 4 MiB and sends 10 bytes
 * costs 64 KiB, not 4 MiB). After `onFrameError`, or once `stop()` is called (e.g. from
 * `onFrame`), the rest of the stream is ignored.
 */
export class FrameDecoder {
  private readonly header = Buffer.alloc(FRAME_HEADER_BYTES);
  private headerFill = 0;
  /** Length of the frame being reassembled, or -1 when between frames. */
  private bodyBytes = -1;
  private body: Buffer | undefined;
  private bodyFill = 0;
  private stopped = false;
  /** An oversized frame being skipped: its prefix (while collected) and the bytes left. */
  private skipPrefix: Buffer | undefined;
  private skipPrefixFill = 0;
  private skipRemaining = 0;

  /**
   * `maxSkipBytes` > `maxFrameBytes` (and a sink with `onOversizedFrame`): frames up to it
   * are offered to the sink by a prefix of `prefixBytes` instead of stopping the stream.
   */
  constructor(
    private readonly maxFrameBytes: number,
    private readonly sink: FrameSink,
    private readonly maxSkipBytes = 0,
    private readonly prefixBytes = 0,
  ) {}

  stop(): void {
    this.stopped = true;
    this.body = undefined;
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** Bytes held for a partial frame (for tests and metrics). */
  get bufferedBytes(): number {
    return this.headerFill + (this.body ? this.body.length : 0) + (this.skipPrefix ? this.skipPrefix.length : 0);
  }

  /** Consumes bytes of an oversized frame from `chunk` at `at`; returns the new position. */
  private skip(chunk: Buffer, at: number): number {
    const prefix = this.skipPrefix;
    if (prefix !== undefined) {
      const take = Math.min(prefix.length - this.skipPrefixFill, chunk.length - at);
      chunk.copy(prefix, this.skipPrefixFill, at, at + take);
      this.skipPrefixFill += take;
      at += take;
      if (this.skipPrefixFill < prefix.length) return at;
      this.skipPrefix = undefined;
      const frameBytes = this.bodyBytes;
      this.skipRemaining = frameBytes - prefix.length;
      if (!(this.sink.onOversizedFrame?.(prefix, frameBytes) ?? false)) {
        this.stop();
        return chunk.length;
      }
    }
    const take = Math.min(this.skipRemaining, chunk.length - at);
    this.skipRemaining -= take;
    at += take;
    if (this.skipRemaining === 0) this.bodyBytes = -1;
    return at;
  }

  push(chunk: Buffer): void {
    let at = 0;
    const end = chunk.length;
    while (at < end && !this.stopped) {
      if (this.bodyBytes >= 0 && this.body === undefined) {
        at = this.skip(chunk, at);
        continue;
      }
      if (this.bodyBytes < 0) {
        // Read the length prefix, possibly split across chunks.
        let length: number;
        if (this.headerFill === 0 && end - at >= FRAME_HEADER_BYTES) {
          length = chunk.readUInt32BE(at);
          at += FRAME_HEADER_BYTES;
        } else {
          while (this.headerFill < FRAME_HEADER_BYTES && at < end)
            this.header[this.headerFill++] = chunk[at++] as number;
          if (this.headerFill < FRAME_HEADER_BYTES) return;
          this.headerFill = 0;
          length = this.header.readUInt32BE(0);
        }
        if (length > this.maxFrameBytes && length <= this.maxSkipBytes && this.sink.onOversizedFrame !== undefined) {
          this.bodyBytes = length;
          this.skipPrefix = Buffer.alloc(Math.min(length, this.prefixBytes));
          this.skipPrefixFill = 0;
          if (this.skipPrefix.length === 0) at = this.skip(chunk, at); // nothing to collect
          continue;
        }
        if (length > this.maxFrameBytes) {
          this.stop();
          this.sink.onFrameError(`frame of ${length} bytes is over maxFrameBytes=${this.maxFrameBytes}`, length);
          return;
        }
        if (end - at >= length) {
          // Fast path: the whole body is in this chunk.
          const body = chunk.subarray(at, at + length);
          at += length;
          this.sink.onFrame(body);
          continue;
        }
        this.bodyBytes = length;
        this.bodyFill = 0;
        this.body = Buffer.allocUnsafe(Math.min(length, REASSEMBLY_START_BYTES));
      }
      // Reassemble a body split across chunks.
      const body = this.body as Buffer;
      const take = Math.min(this.bodyBytes - this.bodyFill, end - at);
      let target = body;
      if (this.bodyFill + take > target.length) {
        target = Buffer.allocUnsafe(Math.min(this.bodyBytes, Math.max(2 * target.length, this.bodyFill + take)));
        body.copy(target, 0, 0, this.bodyFill);
        this.body = target;
      }
      chunk.copy(target, this.bodyFill, at, at + take);
      this.bodyFill += take;
      at += take;
      if (this.bodyFill === this.bodyBytes) {
        const whole = target.length === this.bodyBytes ? target : target.subarray(0, this.bodyBytes);
        this.body = undefined;
        this.bodyBytes = -1;
        this.bodyFill = 0;
        this.sink.onFrame(whole);
      }
    }
  }
}

// ---- coalescing writer ----

/** Bodies at least this large are written as they are instead of copied into a batch. */
const LARGE_BODY_BYTES = 16 * 1024;

/**
 * Queues frame bodies and writes everything queued in one event-loop turn with one
 * `socket.write` (flushed on setImmediate, so replies produced by the microtasks of one
 * chunk, or calls made by many callers resumed together, travel in one segment). While the
 * socket is over its high-water mark the queue waits for 'drain'. The queue is bounded by
 * `maxQueuedBytes` (counting bytes the socket still holds): `write` refuses beyond it, and
 * always accepts one frame into an empty queue so a maximal frame can pass.
 *
 * Frames may be queued before a socket is attached (a client connecting); `detach` drops
 * whatever was not handed to the socket.
 */
export class FrameWriter {
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private socket: Socket | undefined;
  private waitingForDrain = false;
  private immediate: NodeJS.Immediate | undefined;
  private readonly flushBound = (): void => this.flush();
  private readonly onSocketDrain = (): void => {
    this.waitingForDrain = false;
    this.flush();
    this.onDrain?.();
  };

  constructor(
    private readonly maxQueuedBytes: number,
    /**
     * Called whenever the socket can take more: after a flush that stayed under the socket's
     * high-water mark, and after 'drain' (the queue flushed into it again).
     */
    private readonly onDrain?: () => void,
  ) {}

  /** Bytes queued here plus bytes the socket has not yet passed to the kernel. */
  get pendingBytes(): number {
    return this.queuedBytes + (this.socket ? this.socket.writableLength : 0);
  }

  get queuedFrames(): number {
    return this.queue.length;
  }

  attach(socket: Socket): void {
    this.socket = socket;
    this.waitingForDrain = false;
    socket.on('drain', this.onSocketDrain);
    if (this.queue.length > 0) this.schedule();
  }

  /** Forgets the socket and drops the queued frames; returns how many were dropped. */
  detach(): number {
    const dropped = this.queue.length;
    if (this.socket) this.socket.off('drain', this.onSocketDrain);
    this.socket = undefined;
    this.queue = [];
    this.queuedBytes = 0;
    this.waitingForDrain = false;
    if (this.immediate) clearImmediate(this.immediate);
    this.immediate = undefined;
    return dropped;
  }

  /**
   * Queues one frame body; false (nothing queued) when that would pass `maxQueuedBytes`
   * (plus `reserveBytes`, room a caller keeps for small urgent frames).
   */
  write(body: Buffer, reserveBytes = 0): boolean {
    const frameBytes = FRAME_HEADER_BYTES + body.length;
    const pending = this.pendingBytes;
    if (pending > 0 && pending + frameBytes > this.maxQueuedBytes + reserveBytes) return false;
    this.queue.push(body);
    this.queuedBytes += frameBytes;
    this.schedule();
    return true;
  }

  private schedule(): void {
    if (this.immediate === undefined && this.socket !== undefined && !this.waitingForDrain) {
      this.immediate = setImmediate(this.flushBound);
    }
  }

  /** Hands the queue to the socket now (normally called on setImmediate). */
  flush(): void {
    this.immediate = undefined;
    const socket = this.socket;
    if (socket === undefined || this.waitingForDrain || this.queue.length === 0) return;
    if (socket.destroyed || !socket.writable) return; // 'close' follows and detaches
    const queue = this.queue;
    const total = this.queuedBytes;
    this.queue = [];
    this.queuedBytes = 0;
    let ok: boolean;
    if (total <= LARGE_BODY_BYTES * 4 || queue.every((b) => b.length < LARGE_BODY_BYTES)) {
      ok = socket.write(concatFrames(queue, 0, queue.length, total));
    } else {
      // Mixed sizes: batch runs of small bodies, pass large ones through without copying.
      socket.cork();
      let runStart = 0;
      let runBytes = 0;
      for (let i = 0; i < queue.length; i++) {
        const body = queue[i] as Buffer;
        if (body.length < LARGE_BODY_BYTES) {
          runBytes += FRAME_HEADER_BYTES + body.length;
          continue;
        }
        if (runBytes > 0) socket.write(concatFrames(queue, runStart, i, runBytes));
        const header = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
        header.writeUInt32BE(body.length, 0);
        socket.write(header);
        socket.write(body);
        runStart = i + 1;
        runBytes = 0;
      }
      if (runBytes > 0) socket.write(concatFrames(queue, runStart, queue.length, runBytes));
      socket.uncork();
      ok = !socket.writableNeedDrain;
    }
    if (!ok) this.waitingForDrain = true;
    else this.onDrain?.(); // the socket took it all without crossing its high-water mark
  }
}

/** One buffer holding `bodies[from..to)` each with its length prefix; `bytes` is the total. */
function concatFrames(bodies: readonly Buffer[], from: number, to: number, bytes: number): Buffer {
  const out = Buffer.allocUnsafe(bytes);
  let at = 0;
  for (let i = from; i < to; i++) {
    const body = bodies[i] as Buffer;
    out.writeUInt32BE(body.length, at);
    at += FRAME_HEADER_BYTES;
    at += body.copy(out, at);
  }
  return out;
}

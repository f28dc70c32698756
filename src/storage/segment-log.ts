/**
 * An append-only file of checksummed records, in segments: the durable half of the
 * "replica log in its own file, LMDB for the applied state" design (docs/benchmarks.md,
 * issue 11). One `append` = one `write` of every record it is given and one `fdatasync`:
 * the only sync a write's critical path would need.
 *
 * Files: `<dir>/<first record number, 16 hex digits>.seg`, each a run of frames
 *   u32 payload length · u32 crc32(number · payload) · u64 record number · payload
 * (big-endian). Record numbers start at 1 and rise by one across segments. A segment is
 * closed once it holds `segmentBytes` or more; the next append opens a new one (and syncs
 * the directory, so the new name survives a crash).
 *
 * Open (`SegmentLog.open`) reads every segment in order and checks each frame:
 * - a bad frame in the last segment with no valid frame anywhere after it, that is cut short
 *   (the file ends inside it) or ends in zeros (pages that never reached the disk), is a
 *   *torn tail*: an append that a crash interrupted before its sync returned, so never
 *   acknowledged (one append at a time: nothing is written after an unfinished one). It is
 *   cut off (the file truncated to the last whole frame) and reported. Unlike etcd's WAL, a
 *   whole last frame that fails its checksum is not cut off: it was synced, so perhaps
 *   acknowledged, and went bad on disk since (S13), so it is corruption like any other;
 * - any other bad frame (inside a segment, in a segment that is not the last, a number out
 *   of sequence) is corruption (S13): open fails with CorruptRecordError naming the file and
 *   offset, and nothing is changed on disk.
 *
 * `dropBefore(n)` deletes whole segments whose records are all below `n` (S12: the caller
 * says what is applied durably elsewhere); records are never rewritten in place.
 */
import { type FileHandle, mkdir, open, readdir, readFile, rm, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { InvalidArgumentError, StorageFailureError } from '../core/errors.js';
import { CorruptRecordError } from './log-record.js';

const HEADER_BYTES = 16;
const SUFFIX = '.seg';
/** A segment is closed once it holds this many bytes (default). */
export const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;
/** The largest payload one record may carry. */
export const MAX_RECORD_BYTES = 256 * 1024 * 1024;

export interface LogRecord {
  readonly n: number;
  readonly payload: Buffer;
}

export interface OpenedLog {
  readonly log: SegmentLog;
  /** Every record found, in order. */
  readonly records: readonly LogRecord[];
  /** Set when a torn tail was cut off: where, and how many bytes. */
  readonly tornTail?: { readonly file: string; readonly offset: number; readonly bytes: number };
}

interface Segment {
  readonly first: number;
  readonly path: string;
  /** The last record number in it (first - 1 when empty). */
  last: number;
  bytes: number;
  /** Where each of its records starts (record `first + i` at `offsets[i]`). */
  readonly offsets: number[];
  /** Opened by the first `read` of a closed segment. */
  reader?: FileHandle;
}

const segmentName = (first: number): string => `${first.toString(16).padStart(16, '0')}${SUFFIX}`;

/** A record number as u64 big-endian at `at` (numbers stay below 2^53). */
function writeNumber(out: Buffer, n: number, at: number): void {
  out.writeUInt32BE(Math.floor(n / 2 ** 32), at);
  out.writeUInt32BE(n % 2 ** 32, at + 4);
}

function frameChecksum(n: number, payload: Uint8Array): number {
  const number = Buffer.allocUnsafe(8);
  writeNumber(number, n, 0);
  return crc32(payload, crc32(number));
}

export class SegmentLog {
  private appending = false;
  private closed = false;

  private constructor(
    private readonly dir: string,
    private readonly segmentBytes: number,
    private readonly sync: boolean,
    private readonly segments: Segment[],
    private handle: FileHandle | undefined,
  ) {}

  /** The number the next appended record gets. */
  get nextNumber(): number {
    const last = this.segments.at(-1);
    return last === undefined ? 1 : last.last + 1;
  }

  /** How many segment files there are. */
  get segmentCount(): number {
    return this.segments.length;
  }

  static async open(dir: string, options: { segmentBytes?: number; sync?: boolean } = {}): Promise<OpenedLog> {
    const segmentBytes = options.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
    if (!Number.isSafeInteger(segmentBytes) || segmentBytes < HEADER_BYTES) {
      throw new InvalidArgumentError(`segmentBytes must be an integer ≥ ${HEADER_BYTES}, not ${segmentBytes}`);
    }
    try {
      await mkdir(dir, { recursive: true });
    } catch (err) {
      throw new StorageFailureError(`cannot create the log directory ${dir}`, { cause: err });
    }
    const names = (await readdir(dir)).filter((f) => /^[0-9a-f]{16}\.seg$/.test(f)).sort();
    const segments: Segment[] = [];
    const records: LogRecord[] = [];
    let tornTail: OpenedLog['tornTail'];
    let expected = names.length === 0 ? 1 : Number.parseInt(names[0] as string, 16);
    for (const [i, name] of names.entries()) {
      const path = join(dir, name);
      const first = Number.parseInt(name, 16);
      if (first !== expected) {
        throw new CorruptRecordError(`${path}: starts at record ${first}, expected ${expected} (a segment is missing)`);
      }
      const bytes = await readFile(path);
      const isLast = i === names.length - 1;
      const found = readFrames(bytes, path, first, isLast);
      records.push(...found.records);
      if (found.goodBytes < bytes.length) {
        // Only the last segment may end torn (readFrames threw otherwise).
        await truncate(path, found.goodBytes);
        tornTail = { file: path, offset: found.goodBytes, bytes: bytes.length - found.goodBytes };
      }
      expected = first + found.records.length;
      segments.push({ first, path, last: expected - 1, bytes: found.goodBytes, offsets: found.offsets });
    }
    const log = new SegmentLog(dir, segmentBytes, options.sync ?? true, segments, undefined);
    return tornTail === undefined ? { log, records } : { log, records, tornTail };
  }

  /**
   * Appends the payloads as consecutive records, durably (one write, one fdatasync) unless
   * opened with `sync: false`; resolves with the first one's number. One append at a time:
   * the caller groups what it has (group commit) and waits.
   */
  async append(payloads: readonly Uint8Array[]): Promise<number> {
    if (this.closed) throw new StorageFailureError('the segment log is closed');
    if (this.appending) throw new InvalidArgumentError('one append at a time: wait for the previous one');
    if (payloads.length === 0) return this.nextNumber;
    this.appending = true;
    try {
      const first = this.nextNumber;
      let total = 0;
      for (const p of payloads) {
        if (p.length > MAX_RECORD_BYTES) {
          throw new InvalidArgumentError(`a record of ${p.length} bytes is over ${MAX_RECORD_BYTES}`);
        }
        total += HEADER_BYTES + p.length;
      }
      const out = Buffer.allocUnsafe(total);
      let at = 0;
      for (const [i, p] of payloads.entries()) {
        const n = first + i;
        out.writeUInt32BE(p.length, at);
        out.writeUInt32BE(frameChecksum(n, p), at + 4);
        writeNumber(out, n, at + 8);
        out.set(p, at + HEADER_BYTES);
        at += HEADER_BYTES + p.length;
      }
      const segment = await this.segmentFor(first);
      const handle = this.handle as FileHandle;
      try {
        // A nearly full disk may take part of a write without an error: write the rest (the
        // next write reports ENOSPC), so nothing short is ever synced and acknowledged.
        let written = 0;
        for (let i = 0; written < out.length; i++) {
          if (i >= 1024) throw new Error(`short writes: ${written} of ${out.length} bytes after ${i} writes`);
          const { bytesWritten } = await handle.write(out, written, out.length - written, segment.bytes + written);
          written += bytesWritten;
        }
        if (this.sync) await handle.datasync();
      } catch (err) {
        // What reached the file is a torn tail now; the next open cuts it off. Refuse more
        // appends: the file's end is unknown.
        this.closed = true;
        throw new StorageFailureError(`append to ${segment.path} failed: ${(err as Error).message}`, { cause: err });
      }
      let offset = segment.bytes;
      for (const p of payloads) {
        segment.offsets.push(offset);
        offset += HEADER_BYTES + p.length;
      }
      segment.bytes += out.length;
      segment.last = first + payloads.length - 1;
      return first;
    } finally {
      this.appending = false;
    }
  }

  /**
   * Record `n`'s payload, read from its segment and checked (S13: a mismatch is a
   * CorruptRecordError); undefined when `n` was dropped or not written yet.
   */
  async read(n: number): Promise<Buffer | undefined> {
    if (this.closed) throw new StorageFailureError('the segment log is closed');
    const segment = this.segmentOf(n);
    if (segment === undefined) return undefined;
    const offset = segment.offsets[n - segment.first] as number;
    const end = n === segment.last ? segment.bytes : (segment.offsets[n - segment.first + 1] as number);
    const isOpen = segment === this.segments.at(-1) && this.handle !== undefined;
    segment.reader ??= isOpen ? undefined : await open(segment.path, 'r');
    const handle = (isOpen ? this.handle : segment.reader) as FileHandle;
    const bytes = Buffer.allocUnsafe(end - offset);
    const { bytesRead } = await handle.read(bytes, 0, bytes.length, offset);
    const what = `${segment.path}: record ${n} at offset ${offset}`;
    if (bytesRead !== bytes.length) throw new CorruptRecordError(`${what}: cut short (S13)`);
    const length = bytes.readUInt32BE(0);
    const number = bytes.readUInt32BE(8) * 2 ** 32 + bytes.readUInt32BE(12);
    const payload = bytes.subarray(HEADER_BYTES);
    if (length !== payload.length || number !== n || frameChecksum(n, payload) !== bytes.readUInt32BE(4))
      throw new CorruptRecordError(`${what}: checksum mismatch (S13)`);
    return payload;
  }

  private segmentOf(n: number): Segment | undefined {
    let lo = 0;
    let hi = this.segments.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const s = this.segments[mid] as Segment;
      if (n < s.first) hi = mid - 1;
      else if (n > s.last) lo = mid + 1;
      else return s;
    }
    return undefined;
  }

  /** Deletes the segments whose records are all below `n` (never the one being written). */
  async dropBefore(n: number): Promise<number> {
    let dropped = 0;
    while (this.segments.length > 1) {
      const oldest = this.segments[0] as Segment;
      if (oldest.last >= n) break;
      await oldest.reader?.close();
      await rm(oldest.path, { force: true });
      this.segments.shift();
      dropped++;
    }
    return dropped;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const s of this.segments) {
      await s.reader?.close();
      s.reader = undefined;
    }
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close();
  }

  /** The segment the next append goes to: the open one, or a new one once it is full. */
  private async segmentFor(first: number): Promise<Segment> {
    let current = this.segments.at(-1);
    if (current === undefined || current.bytes >= this.segmentBytes) {
      await this.handle?.close();
      this.handle = undefined;
      current = { first, path: join(this.dir, segmentName(first)), last: first - 1, bytes: 0, offsets: [] };
      this.handle = await open(current.path, 'wx+');
      await syncDirectory(this.dir);
      this.segments.push(current);
    }
    if (this.handle === undefined) this.handle = await open(current.path, 'r+');
    return current;
  }
}

/** The frames of one segment; stops at a torn tail of the last segment, throws on corruption. */
function readFrames(
  bytes: Buffer,
  path: string,
  first: number,
  isLast: boolean,
): { records: LogRecord[]; goodBytes: number; offsets: number[] } {
  const records: LogRecord[] = [];
  const offsets: number[] = [];
  let at = 0;
  while (at < bytes.length) {
    const n = first + records.length;
    const bad = (why: string): { records: LogRecord[]; goodBytes: number; offsets: number[] } => {
      // A torn tail: only at the end of the last segment, with nothing whole after it, and
      // looking like an unfinished write (cut short, or ending in zeros).
      if (isLast && looksTorn(bytes, at) && !hasWholeFrameAfter(bytes, at, n))
        return { records, goodBytes: at, offsets };
      throw new CorruptRecordError(`${path}: record ${n} at offset ${at}: ${why} (S13)`);
    };
    if (bytes.length - at < HEADER_BYTES) return bad('cut short in its header');
    const length = bytes.readUInt32BE(at);
    if (length > MAX_RECORD_BYTES) return bad(`a length of ${length} bytes`);
    if (bytes.length - at - HEADER_BYTES < length) return bad('cut short in its payload');
    const number = bytes.readUInt32BE(at + 8) * 2 ** 32 + bytes.readUInt32BE(at + 12);
    const payload = bytes.subarray(at + HEADER_BYTES, at + HEADER_BYTES + length);
    if (frameChecksum(number, payload) !== bytes.readUInt32BE(at + 4)) return bad('checksum mismatch');
    if (number !== n) return bad(`numbered ${number}`);
    records.push({ n, payload });
    offsets.push(at);
    at += HEADER_BYTES + length;
  }
  return { records, goodBytes: at, offsets };
}

/** Zero bytes at the end of the file that make a bad frame look unwritten (not a flipped bit). */
const TORN_ZEROS = 16;

/**
 * Whether the bad frame at `at` (the file's last) looks like a write a crash interrupted:
 * the file ends inside it (its header or payload cut short), or it ends in at least
 * TORN_ZEROS zero bytes (pages that never reached the disk read as zeros). A whole frame
 * that fails its checksum does not: that is a record gone bad on disk after it was synced
 * and acknowledged, so cutting it off would lose an acknowledged write silently (S13).
 */
function looksTorn(bytes: Buffer, at: number): boolean {
  if (bytes.length - at < HEADER_BYTES) return true;
  if (bytes.length - at - HEADER_BYTES < bytes.readUInt32BE(at)) return true;
  const tail = bytes.subarray(Math.max(at, bytes.length - TORN_ZEROS));
  return tail.length === TORN_ZEROS && tail.every((b) => b === 0);
}

/**
 * Whether a whole, valid frame numbered `n` or later starts anywhere after `from`: then the
 * bad bytes at `from` are not a torn tail (an interrupted append is the last thing written,
 * so nothing valid follows it). Every offset is tried, cheaply: a candidate's record number
 * must lie in the range the remaining bytes could hold before its checksum is computed.
 */
function hasWholeFrameAfter(bytes: Buffer, from: number, n: number): boolean {
  const maxNumber = n + Math.floor((bytes.length - from) / HEADER_BYTES);
  for (let at = from + 1; at + HEADER_BYTES <= bytes.length; at++) {
    const number = bytes.readUInt32BE(at + 8) * 2 ** 32 + bytes.readUInt32BE(at + 12);
    if (number < n || number > maxNumber) continue;
    const length = bytes.readUInt32BE(at);
    if (length > bytes.length - at - HEADER_BYTES) continue;
    const payload = bytes.subarray(at + HEADER_BYTES, at + HEADER_BYTES + length);
    if (frameChecksum(number, payload) === bytes.readUInt32BE(at + 4)) return true;
  }
  return false;
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

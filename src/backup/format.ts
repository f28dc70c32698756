/**
 * The file format of one partition's backup, `partition-<n>.dsb` (issue 13, docs/backup.md).
 *
 * A file is the 8 bytes `DSTOREBK`, then frames: `length` (u32 BE, bytes of the body) · `crc`
 * (u32 BE, CRC32 of the length bytes and the body) · the body, one MessagePack record. Records:
 *
 * - `header` first: the format version, the partition, the seq and epoch of the snapshot (the
 *   partition's applied position it was taken at), the cluster id and when it was taken;
 * - then `dedup` (the dedup table at that seq, S10, in chunks) and `items` (one snapshot page
 *   each: `[key, value, version]` triples), in any order;
 * - `trailer` last: how many items, dedup records and frames came before it.
 *
 * A reader checks every frame's CRC, the order of the records and the trailer's counts, and
 * recomputes the partition's digests (src/storage/digest.ts) from what it read; the caller
 * compares them with the manifest's. Every frame is bounded (MAX_FRAME_BYTES).
 */
import { createHash, type Hash } from 'node:crypto';
import { constants, type FileHandle, open, unlink } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { Packr } from 'msgpackr';
import { MiB } from '../core/limits.js';
import type { DedupRecord } from '../core/replica/ops.js';
import { assertNever, type Seq } from '../core/types.js';
import { DigestBuilder, type PartitionDigest } from '../storage/digest.js';

export const FILE_MAGIC = Buffer.from('DSTOREBK', 'latin1');
export const FORMAT_VERSION = 1;
const FRAME_HEADER_BYTES = 8;
/** Largest frame body: one snapshot page (4096 items, ~1 MiB) or one item of the largest value (64 MiB). */
export const MAX_FRAME_BYTES = 80 * MiB;
/** Dedup records per `dedup` frame. */
export const DEDUP_PER_FRAME = 10_000;

const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

export interface BackupItem {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  readonly version: number;
  /** §16: when the value expires (ms since the Unix epoch), if it does. */
  readonly expiresAt?: number;
}

export interface HeaderRecord {
  readonly t: 'header';
  readonly format: number;
  readonly partition: number;
  readonly seq: number;
  readonly epoch: number;
  readonly clusterId: string;
  readonly createdAt: string;
}

export interface TrailerRecord {
  readonly t: 'trailer';
  readonly items: number;
  readonly dedup: number;
  readonly frames: number;
}

export type BackupRecord =
  | HeaderRecord
  | { readonly t: 'dedup'; readonly records: readonly DedupRecord[] }
  | { readonly t: 'items'; readonly items: readonly BackupItem[] }
  | TrailerRecord;

export const partitionFileName = (partition: number): string => `partition-${partition}.dsb`;

/** A frame or record that is not what the format says; the caller names the file. */
export class FrameError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(`${message} at byte ${offset}`);
    this.name = 'FrameError';
  }
}

function frameCrc(lengthBytes: Uint8Array, body: Uint8Array): number {
  return crc32(body, crc32(lengthBytes));
}

/** The bytes of one frame holding `record`. */
export function encodeFrame(record: BackupRecord): Buffer {
  const wire =
    record.t === 'items'
      ? {
          t: 'items',
          items: record.items.map((i) =>
            i.expiresAt === undefined ? [i.key, i.value, i.version] : [i.key, i.value, i.version, i.expiresAt],
          ),
        }
      : record.t === 'dedup'
        ? { t: 'dedup', records: record.records.map((r) => ({ ...r })) }
        : record;
  const body = packr.pack(wire);
  if (body.length > MAX_FRAME_BYTES) throw new RangeError(`a backup frame of ${body.length} bytes is over the limit`);
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.length);
  frame.writeUInt32BE(body.length, 0);
  frame.writeUInt32BE(frameCrc(frame.subarray(0, 4), body), 4);
  body.copy(frame, FRAME_HEADER_BYTES);
  return frame;
}

const isUint = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isBytes = (v: unknown): v is Uint8Array => v instanceof Uint8Array;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

/** A decoded body as a record, or why it is not one. */
function toRecord(v: unknown): BackupRecord | string {
  if (!isObject(v) || typeof v.t !== 'string') return 'a record without a type';
  switch (v.t) {
    case 'header': {
      const ok =
        isUint(v.format) &&
        isUint(v.partition) &&
        isUint(v.seq) &&
        isUint(v.epoch) &&
        typeof v.clusterId === 'string' &&
        typeof v.createdAt === 'string';
      return ok ? (v as unknown as HeaderRecord) : 'a malformed header record';
    }
    case 'trailer':
      return isUint(v.items) && isUint(v.dedup) && isUint(v.frames)
        ? (v as unknown as TrailerRecord)
        : 'a malformed trailer record';
    case 'items': {
      if (!Array.isArray(v.items)) return 'a malformed items record';
      const items: BackupItem[] = [];
      for (const i of v.items) {
        if (!Array.isArray(i) || i.length < 3 || i.length > 4 || !isBytes(i[0]) || !isBytes(i[1]) || !isUint(i[2]))
          return 'a malformed item';
        if (i.length === 3) items.push({ key: i[0], value: i[1], version: i[2] });
        else if (isUint(i[3])) items.push({ key: i[0], value: i[1], version: i[2], expiresAt: i[3] });
        else return 'a malformed item';
      }
      return { t: 'items', items };
    }
    case 'dedup': {
      if (!Array.isArray(v.records)) return 'a malformed dedup record';
      for (const r of v.records as unknown[]) {
        const ok =
          isObject(r) &&
          typeof r.clientId === 'string' &&
          isUint(r.requestSeq) &&
          isUint(r.seq) &&
          (r.existed === undefined || typeof r.existed === 'boolean');
        if (!ok) return 'a malformed dedup entry';
      }
      return { t: 'dedup', records: v.records as DedupRecord[] };
    }
    default:
      return `a record of unknown type ${JSON.stringify(v.t).slice(0, 40)}`;
  }
}

/**
 * Writes one partition's file: created exclusively (an existing file is never overwritten), its
 * size and sha256 kept as it grows; `finish` fsyncs and closes it, `abort` removes it.
 */
export class PartitionFileWriter {
  private readonly hash: Hash = createHash('sha256');
  private bytes = 0;
  frames = 0;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
  ) {}

  static async create(path: string): Promise<PartitionFileWriter> {
    const handle = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    const w = new PartitionFileWriter(path, handle);
    await w.writeBytes(FILE_MAGIC);
    return w;
  }

  private async writeBytes(b: Uint8Array): Promise<void> {
    await this.handle.write(b, 0, b.length);
    this.hash.update(b);
    this.bytes += b.length;
  }

  async write(record: BackupRecord): Promise<void> {
    await this.writeBytes(encodeFrame(record));
    this.frames += 1;
  }

  async finish(): Promise<{ bytes: number; sha256: string }> {
    await this.handle.sync();
    await this.handle.close();
    return { bytes: this.bytes, sha256: this.hash.digest('hex') };
  }

  async abort(): Promise<void> {
    await this.handle.close().catch(() => undefined); // already closed: nothing to release
    await unlink(this.path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
}

/** What reading a partition's file found: its header and trailer, its size, sha256 and digests. */
export interface PartitionFileContents {
  readonly header: HeaderRecord;
  readonly trailer: TrailerRecord;
  readonly bytes: number;
  readonly sha256: string;
  readonly digest: PartitionDigest;
}

/**
 * Reads a partition's file from start to end, checking every frame (CRC, size, record shape and
 * order) and the trailer's counts, and computing the digests of what it holds. `onItems` gets
 * each page of items as read (and is awaited: a slow consumer slows the reading). Throws a
 * FrameError (or the file system's error) at the first problem.
 */
export async function readPartitionFile(
  path: string,
  onItems?: (items: readonly BackupItem[]) => Promise<void>,
): Promise<PartitionFileContents> {
  const handle = await open(path, 'r');
  try {
    const size = (await handle.stat()).size;
    const hash = createHash('sha256');
    let offset = 0;
    const readExactly = async (n: number, what: string): Promise<Buffer> => {
      if (offset + n > size) throw new FrameError(`the file ends inside ${what} (truncated: ${size} bytes)`, offset);
      const b = Buffer.allocUnsafe(n);
      let got = 0;
      while (got < n) {
        const { bytesRead } = await handle.read(b, got, n - got, offset + got);
        if (bytesRead === 0) throw new FrameError(`the file ends inside ${what} (truncated while read)`, offset);
        got += bytesRead;
      }
      hash.update(b);
      offset += n;
      return b;
    };
    const magic = await readExactly(FILE_MAGIC.length, 'the file magic');
    if (!magic.equals(FILE_MAGIC)) throw new FrameError('not a dstore backup file (wrong magic bytes)', 0);
    const builder = new DigestBuilder();
    let header: HeaderRecord | undefined;
    let trailer: TrailerRecord | undefined;
    let items = 0;
    let dedup = 0;
    let frames = 0;
    while (offset < size) {
      const at = offset;
      if (trailer !== undefined) throw new FrameError('data after the trailer', at);
      const head = await readExactly(FRAME_HEADER_BYTES, 'a frame header');
      const length = head.readUInt32BE(0);
      if (length > MAX_FRAME_BYTES) throw new FrameError(`a frame length of ${length} bytes (bad length)`, at);
      const body = await readExactly(length, 'a frame');
      if (frameCrc(head.subarray(0, 4), body) !== head.readUInt32BE(4))
        throw new FrameError('a frame fails its CRC', at);
      let decoded: unknown;
      try {
        decoded = packr.unpack(body);
      } catch (err) {
        throw new FrameError(`a frame does not decode (${(err as Error).message})`, at);
      }
      const record = toRecord(decoded);
      if (typeof record === 'string') throw new FrameError(record, at);
      if (header === undefined && record.t !== 'header') throw new FrameError('the first record is not the header', at);
      switch (record.t) {
        case 'header':
          if (header !== undefined) throw new FrameError('a second header', at);
          if (record.format !== FORMAT_VERSION)
            throw new FrameError(`format version ${record.format}; this build reads version ${FORMAT_VERSION}`, at);
          header = record;
          break;
        case 'dedup':
          for (const r of record.records) builder.addDedup(r);
          dedup += record.records.length;
          break;
        case 'items':
          for (const i of record.items) builder.addEntry(i.key, i.value, i.version, i.expiresAt);
          items += record.items.length;
          if (onItems) await onItems(record.items);
          break;
        case 'trailer':
          if (record.items !== items || record.dedup !== dedup || record.frames !== frames)
            throw new FrameError(
              `the trailer counts ${record.items} items, ${record.dedup} dedup records and ${record.frames} ` +
                `frames; the file holds ${items}, ${dedup} and ${frames}`,
              at,
            );
          trailer = record;
          break;
        default:
          assertNever(record);
      }
      frames += 1;
    }
    if (header === undefined) throw new FrameError('no header (empty file)', offset);
    if (trailer === undefined) throw new FrameError('no trailer (the file is truncated)', offset);
    return { header, trailer, bytes: size, sha256: hash.digest('hex'), digest: builder.finish() };
  } finally {
    await handle.close();
  }
}

/** A header for `partition` at the snapshot position `applied`. */
export function headerRecord(
  partition: number,
  applied: { readonly seq: number | Seq; readonly epoch: number },
  clusterId: string,
  createdAt: Date,
): HeaderRecord {
  return {
    t: 'header',
    format: FORMAT_VERSION,
    partition,
    seq: applied.seq,
    epoch: applied.epoch,
    clusterId,
    createdAt: createdAt.toISOString(),
  };
}

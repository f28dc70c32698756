/** The lmdb backend's limits, keys and record codecs (lmdb.ts describes the layout). */
import {
  type LogEntry,
  type PartitionId,
  type VersionedValue,
  assert,
  epoch as toEpoch,
  seq as toSeq,
} from '../../core/types.js';
import type { DedupRecord, LogPosition, PartitionMeta } from '../backend.js';
import { dedupRecord } from '../preconditions.js';
import { CorruptRecordError, decodeStoredValue, isUint, openRecord, sealRecord } from '../log-record.js';
import { type CachedPartition, decodeMeta, isConfigField } from '../partition-cache.js';

/**
 * 3: the replica log lives in a segment log beside the environment (log-store.ts); 2 (before):
 * in LMDB's `log` database, moved out at open; 1: data values were u64 version · value with no
 * checksum (S13), upgraded to 2 at open.
 */
export const FORMAT_VERSION = 3;
/** The version field of a partition's state record (unchanged since format 2). */
export const STATE_RECORD_VERSION = 2;
/** Data records rewritten per transaction when upgrading a format-1 environment. */
export const UPGRADE_CHUNK = 1024;
/** LMDB's largest key with 4 KiB pages is 1978 bytes; a data key has an 8-byte prefix. */
export const LMDB_MAX_KEY_BYTES = 1978 - 8;
/** Largest partition id: the one above it bounds the partition's key ranges. */
export const MAX_GENERATION = 0xffff_fffe;

/** Bounds of the write queue (STYLE §4). */
export const MAX_QUEUED_JOBS = 4096;
export const MAX_JOBS_PER_TXN = 256;
/** Ops + entries per transaction (soft: one job always fits). */
export const MAX_WEIGHT_PER_TXN = 16_384;
/** A snapshot is staged in transactions of at most this many items or bytes. */
export const STAGE_MAX_ITEMS = 4096;
export const STAGE_MAX_BYTES = 8 * 1024 * 1024;
/** Garbage keys deleted per transaction. */
export const GC_CHUNK_KEYS = 1024;
/** Distinct partitions walked when opening (a bound, far above any real cluster). */
export const MAX_PARTITIONS_AT_OPEN = 1 << 20;

export type Bytes = Uint8Array;

// ---------------------------------------------------------------------------------------
// Encoding.
// ---------------------------------------------------------------------------------------

export function writeU64(buf: Buffer, offset: number, n: number): void {
  assert(Number.isSafeInteger(n) && n >= 0, `u64 out of range: ${n}`);
  buf.writeUInt32BE(Math.floor(n / 0x1_0000_0000), offset);
  buf.writeUInt32BE(n >>> 0, offset + 4);
}

export function readU64(buf: Buffer, offset: number): number {
  return buf.readUInt32BE(offset) * 0x1_0000_0000 + buf.readUInt32BE(offset + 4);
}

export function partKey(partition: number): Buffer {
  const key = Buffer.allocUnsafe(4);
  key.writeUInt32BE(partition, 0);
  return key;
}

export function logKey(partition: number, s: number): Buffer {
  const key = Buffer.allocUnsafe(12);
  key.writeUInt32BE(partition, 0);
  writeU64(key, 4, s);
  return key;
}

export function dataPrefix(partition: number, generation: number): Buffer {
  const key = Buffer.allocUnsafe(8);
  key.writeUInt32BE(partition, 0);
  key.writeUInt32BE(generation, 4);
  return key;
}

export function dataKey(partition: number, generation: number, key: Bytes): Buffer {
  const out = Buffer.allocUnsafe(8 + key.length);
  out.writeUInt32BE(partition, 0);
  out.writeUInt32BE(generation, 4);
  out.set(key, 8);
  return out;
}

/** A plain Uint8Array view (not a Buffer), so results compare equal across backends. */
export function view(buf: Uint8Array, start = 0): Uint8Array {
  return new Uint8Array(buf.buffer, buf.byteOffset + start, buf.length - start);
}

/** S13: a data record read from `data`, checked against the key (after the 8-byte prefix) it was read under. */
export function decodeValue(dataKeyBytes: Buffer, raw: Buffer, partition: PartitionId): VersionedValue {
  return decodeStoredValue(raw, dataKeyBytes.subarray(8), `partition ${partition} stored value`, view);
}

/** A dedup key: laid out like a data key, with the client id's UTF-8 bytes as the key. */
export function dedupKey(partition: number, generation: number, clientId: string): Buffer {
  return dataKey(partition, generation, Buffer.from(clientId, 'utf8'));
}

/** S10: [requestSeq, seq, existed|null]; the client id is the key's. */
export function encodeDedup(requestSeq: number, entrySeq: number, existed: boolean | undefined): Buffer {
  return sealRecord([requestSeq, entrySeq, existed ?? null]);
}

export function decodeDedup(key: Buffer, raw: Buffer, what: string): DedupRecord {
  const t = openRecord(raw, what);
  if (!Array.isArray(t) || t.length !== 3) throw new CorruptRecordError(`${what}: not a dedup record`);
  const [requestSeq, entrySeq, existed] = t as unknown[];
  if (!isUint(requestSeq) || !isUint(entrySeq)) throw new CorruptRecordError(`${what}: bad request seq or seq`);
  if (existed !== null && typeof existed !== 'boolean') throw new CorruptRecordError(`${what}: bad existed flag`);
  const clientId = key.toString('utf8', 8);
  return dedupRecord({ clientId, requestSeq }, toSeq(entrySeq), existed ?? undefined);
}

/**
 * What the engine knows about a partition (partition-cache.ts). `logLast` is derived from the
 * log, not stored; `corrupt` is found at open (a log record that failed its checksum, or an
 * upgrade marker, corrupt-markers.ts), not stored in the state record.
 */
export interface PartState extends CachedPartition {
  readonly keyCount: number;
}

/**
 * [format, metaEpoch|null, config|null, appliedSeq, appliedEpoch, baseSeq, baseEpoch, generation, keyCount]
 * and, only while the replica's metadata carries an S13 corrupt marker, a 10th element: its
 * reason (so records without one read as before).
 */
export function encodeState(s: PartState): Buffer {
  const record: unknown[] = [
    STATE_RECORD_VERSION,
    s.meta ? s.meta.epoch : null,
    s.meta ? s.meta.config : null,
    s.applied.seq,
    s.applied.epoch,
    s.logBase.seq,
    s.logBase.epoch,
    s.generation,
    s.keyCount,
  ];
  if (s.meta?.corrupt !== undefined) record.push(s.meta.corrupt);
  return sealRecord(record);
}

export function decodeState(raw: Buffer, what: string): Omit<PartState, 'logLast'> {
  const t = openRecord(raw, what);
  if (!Array.isArray(t) || (t.length !== 9 && t.length !== 10) || t[0] !== STATE_RECORD_VERSION)
    throw new CorruptRecordError(`${what}: not a state record`);
  const [, metaEpoch, config, appliedSeq, appliedEpoch, baseSeq, baseEpoch, generation, keyCount, corrupt] =
    t as unknown[];
  if (![appliedSeq, appliedEpoch, baseSeq, baseEpoch, generation, keyCount].every(isUint)) {
    throw new CorruptRecordError(`${what}: bad positions`);
  }
  // The 10th element is the replica's S13 marker; metadata without one has 9.
  if (t.length === 10 && (corrupt === undefined || metaEpoch === null))
    throw new CorruptRecordError(`${what}: bad corrupt marker`);
  let meta: PartitionMeta | null = null;
  if (metaEpoch !== null) meta = decodeMeta({ epoch: metaEpoch, config, corrupt }, (field) => `${what}: bad ${field}`);
  else if (!isConfigField(config)) throw new CorruptRecordError(`${what}: bad config`);
  return {
    meta,
    applied: { seq: toSeq(appliedSeq as number), epoch: toEpoch(appliedEpoch as number) },
    logBase: { seq: toSeq(baseSeq as number), epoch: toEpoch(baseEpoch as number) },
    generation: generation as number,
    keyCount: keyCount as number,
  };
}

export function positionOf(e: LogEntry): LogPosition {
  return { seq: e.seq, epoch: e.epoch };
}

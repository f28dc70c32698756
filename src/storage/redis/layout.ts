/** The redis backend's limits, key codecs and cached partition state (redis.ts describes the layout). */
import {
  type Epoch,
  type LogEntry,
  type PartitionId,
  type Seq,
  type VersionedValue,
  assert,
  seq as toSeq,
} from '../../core/types.js';
import type { DedupRecord, PartitionMeta } from '../backend.js';
import { CorruptRecordError, decodeEntry as decodeRecord, decodeStoredValue, isUint } from '../log-record.js';
import { byClientId, copyBytes, dedupRecord } from '../preconditions.js';
import { type CachedPartition, decodeMeta } from '../partition-cache.js';

/** 2: stored values are checksummed records (S13). */
export const FORMAT_VERSION = '2';
/** Same bound as the other backends (lmdb's is 1970), far above DESIGN §2's 1 KiB. */
export const REDIS_MAX_KEY_BYTES = 1970;
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_COMMAND_TIMEOUT_MS = 10_000;
/** Write scripts sent and not yet answered (STYLE §4); more is an OverloadedError. */
export const MAX_WRITES_IN_FLIGHT = 4096;
/** A snapshot is staged in scripts of at most this many items or bytes. */
export const STAGE_MAX_ITEMS = 4096;
export const STAGE_MAX_BYTES = 8 * 1024 * 1024;
/** Log records read per command when opening. */
export const LOAD_CHUNK = 1024;
/** Keys and bytes (soft: at least one key) each list of a snapshot page script returns. */
export const SNAPSHOT_FETCH_KEYS = 512;
export const SNAPSHOT_FETCH_BYTES = 4 * 1024 * 1024;
/** Far above any real cluster (P is at most 4096). */
export const MAX_PARTITIONS_AT_OPEN = 1 << 20;
/** Reconnect backoff: 50 ms doubling to 2 s, plus up to 50 ms of jitter. */
export const RECONNECT_FIRST_MS = 50;
export const RECONNECT_MAX_MS = 2000;

export type Arg = string | Buffer;
// ---------------------------------------------------------------------------------------
// Encoding.
// ---------------------------------------------------------------------------------------

/** A plain Uint8Array copy of (part of) a reply buffer. */
export function bytesOf(buf: Buffer, start = 0): Uint8Array {
  return new Uint8Array(buf.subarray(start));
}

/** S13: a stored value read under `key`, checked; the value is a copy (ioredis may reuse reply buffers). */
export function decodeValue(key: Uint8Array, raw: Buffer, what: string): VersionedValue {
  return decodeStoredValue(raw, key, what, copyBytes);
}

/** A log entry read from Redis; key and value are copies (ioredis may reuse reply buffers). */
export function decodeEntry(raw: Buffer, what: string): LogEntry {
  return decodeRecord(raw, what, copyBytes);
}

/** S10: `requestSeq:seq:` plus, for a delete, 0|1 (appended by the script, which knows). */
export function dedupPrefix(requestSeq: number, entrySeq: number): string {
  return `${requestSeq}:${entrySeq}:`;
}

export function decodeDedup(clientId: Buffer, raw: Buffer, what: string): DedupRecord {
  const m = /^(\d{1,16}):(\d{1,16}):([01]?)$/.exec(raw.toString('latin1'));
  if (!m) throw new CorruptRecordError(`${what}: not a dedup record`);
  const requestSeq = Number(m[1]);
  const entrySeq = Number(m[2]);
  if (!isUint(requestSeq) || !isUint(entrySeq)) throw new CorruptRecordError(`${what}: bad request seq or seq`);
  const existed = m[3] === '' ? undefined : m[3] === '1';
  return dedupRecord({ clientId: clientId.toString('utf8'), requestSeq }, toSeq(entrySeq), existed);
}

export function decodeDedupTable(reply: unknown, partition: PartitionId): DedupRecord[] {
  const flat = reply as Buffer[];
  const out: DedupRecord[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2)
    out.push(decodeDedup(flat[i]!, flat[i + 1]!, `partition ${partition} dedup record`));
  return out.sort(byClientId);
}

export function decodeMetaJson(raw: string, what: string): PartitionMeta {
  let m: unknown;
  try {
    m = JSON.parse(raw);
  } catch (err) {
    throw new CorruptRecordError(`${what}: metadata is not JSON`, { cause: err });
  }
  if (typeof m !== 'object' || m === null) throw new CorruptRecordError(`${what}: metadata is not an object`);
  // S13: the replica's corrupt marker, until it drops the partition.
  const { epoch, config, corrupt } = m as { epoch?: unknown; config?: unknown; corrupt?: unknown };
  return decodeMeta({ epoch, config, corrupt }, (field) => `${what}: bad ${field} in the metadata`);
}

/** ZRANGEBYLEX bound: every key after `key`, or from the start. */
export function lexAfter(key: Uint8Array | undefined): Arg {
  return key === undefined ? '-' : Buffer.concat([Buffer.from('('), key]);
}

// ---------------------------------------------------------------------------------------
// The cached state of a partition (exact: see the file comment).
// ---------------------------------------------------------------------------------------

/** The log's entries from `fromSeq` up to the next run's have epoch `epoch`. */
export interface EpochRun {
  readonly fromSeq: number;
  readonly epoch: Epoch;
}

/** The cached state of a partition (partition-cache.ts). */
export interface PartState extends CachedPartition {
  /** Epochs of the entries logBase.seq+1 .. logLast.seq (S1, S12 checks need them). */
  readonly runs: readonly EpochRun[];
}

export function epochAt(s: PartState, at: number): Epoch {
  let lo = 0;
  let hi = s.runs.length - 1;
  assert(hi >= 0 && at > s.logBase.seq && at <= s.logLast.seq, `no log entry ${at} to read the epoch of`);
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (s.runs[mid]!.fromSeq <= at) lo = mid;
    else hi = mid - 1;
  }
  return s.runs[lo]!.epoch;
}

export function appendRuns(runs: readonly EpochRun[], entries: readonly LogEntry[]): readonly EpochRun[] {
  let out = runs;
  for (const e of entries) {
    if (out[out.length - 1]?.epoch !== e.epoch) out = [...out, { fromSeq: e.seq, epoch: e.epoch }];
  }
  return out;
}

/** The runs of entries before `fromSeq`. */
export function runsBefore(runs: readonly EpochRun[], fromSeq: number): readonly EpochRun[] {
  return runs.filter((r) => r.fromSeq < fromSeq);
}

/** The runs of entries after `baseSeq`. */
export function runsAfter(runs: readonly EpochRun[], baseSeq: number): readonly EpochRun[] {
  return runs.filter((_r, i) => (runs[i + 1]?.fromSeq ?? Number.POSITIVE_INFINITY) > baseSeq + 1);
}

export function stateFields(s: PartState): string[] {
  const fields = [
    'as',
    String(s.applied.seq),
    'ae',
    String(s.applied.epoch),
    'bs',
    String(s.logBase.seq),
    'be',
    String(s.logBase.epoch),
    'g',
    String(s.generation),
  ];
  if (s.meta !== null) fields.push('m', JSON.stringify(s.meta));
  return fields;
}

/** A planned write: its script arguments and the partition states once it ran. */
export interface Plan {
  readonly args: Arg[];
  readonly states: ReadonlyMap<PartitionId, PartState | null>;
  readonly deletes: ReadonlyArray<{ readonly partition: PartitionId; readonly seq: Seq }>;
  readonly nextGeneration: number;
}

export type Durability = 'fsync-always' | 'waitaof' | 'none';

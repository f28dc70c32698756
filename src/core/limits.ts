/**
 * Every bound of the system, with units (STYLE §4). Relations between them are checked
 * by `checkLimits`, which every process calls at start.
 */
import { assert } from './types.js';

export interface Limits {
  /** Largest key, in bytes (DESIGN §2). */
  readonly maxKeyBytes: number;
  /** Largest value, in bytes (`--max-value-bytes`, default 1 MiB). */
  readonly maxValueBytes: number;
  /** Largest frame on the wire, in bytes. */
  readonly maxFrameBytes: number;
  /** Frame header and envelope overhead budget, in bytes. */
  readonly frameOverheadBytes: number;
  /** Client writes waiting for commit, per partition, before `Overloaded`. */
  readonly maxPendingWrites: number;
  /** Reads waiting for confirmation, per partition, before `Overloaded`. */
  readonly maxPendingReads: number;
  /** Entries in one prepare message. */
  readonly maxEntriesPerPrepare: number;
  /** Bytes of entry payload in one prepare message (soft: one entry always fits). */
  readonly maxPrepareBytes: number;
  /** Keys in one scan page. */
  readonly maxScanPageKeys: number;
  /** Bytes of keys in one `dump` page (issue 9: a listing never builds one reply of a whole store). */
  readonly maxDumpPageBytes: number;
  /**
   * Bytes of keys and values in one `scan` page with values (issue 14; soft: a page holds at
   * least one entry, so a page is at most this plus one key and one value).
   */
  readonly maxScanPageBytes: number;
  /** Keys in one `getMany` / `putMany` call (issue 14; over it: BATCH_TOO_LARGE). */
  readonly maxBatchKeys: number;
  /** Log entries kept in memory past the point every replica has applied. */
  readonly logRetainEntries: number;
}

export const MiB = 1024 * 1024;

/**
 * Bytes of stored values a backend holds at once while it verifies the keys of one scan page
 * (S13: a scan lists no key whose stored value is corrupt, so it reads each value). A page of
 * `maxScanPageKeys` keys with values of up to `--max-value-bytes` (64 MiB at most) would
 * otherwise be one read of up to ~64 GiB: a backend that fetches values in one round trip
 * (redis) fetches at most this many bytes per round trip (soft: one value always fits), one
 * that reads them one at a time (lmdb) holds one value at a time. Fixed, not a flag: it sizes
 * a buffer, not a behaviour.
 */
export const SCAN_VERIFY_BATCH_BYTES = 4 * MiB;

export function defaultLimits(overrides: Partial<Limits> = {}): Limits {
  const maxValueBytes = overrides.maxValueBytes ?? MiB;
  const frameOverheadBytes = 64 * 1024;
  const limits: Limits = {
    maxKeyBytes: 1024,
    maxValueBytes,
    frameOverheadBytes,
    maxFrameBytes: Math.max(4 * MiB, 2 * (maxValueBytes + 1024 + frameOverheadBytes)),
    maxPendingWrites: 10_000,
    maxPendingReads: 10_000,
    maxEntriesPerPrepare: 512,
    maxPrepareBytes: 2 * MiB,
    maxScanPageKeys: 1000,
    maxDumpPageBytes: MiB,
    maxScanPageBytes: MiB,
    maxBatchKeys: 1000,
    logRetainEntries: 1000,
    ...overrides,
  };
  checkLimits(limits);
  return limits;
}

export function checkLimits(l: Limits): void {
  assert(l.maxKeyBytes >= 1, 'maxKeyBytes >= 1');
  assert(l.maxValueBytes >= 0, 'maxValueBytes >= 0');
  assert(
    l.maxFrameBytes >= l.maxKeyBytes + l.maxValueBytes + l.frameOverheadBytes,
    'maxFrameBytes >= maxKeyBytes + maxValueBytes + frameOverheadBytes',
  );
  assert(l.maxPrepareBytes <= l.maxFrameBytes, 'maxPrepareBytes <= maxFrameBytes');
  assert(l.maxEntriesPerPrepare >= 1, 'maxEntriesPerPrepare >= 1');
  assert(
    l.maxDumpPageBytes + l.frameOverheadBytes <= l.maxFrameBytes / 2,
    'maxDumpPageBytes + frameOverheadBytes <= maxFrameBytes / 2',
  );
  assert(
    l.maxScanPageBytes + l.maxKeyBytes + l.maxValueBytes + l.frameOverheadBytes <= l.maxFrameBytes,
    'maxScanPageBytes + maxKeyBytes + maxValueBytes + frameOverheadBytes <= maxFrameBytes',
  );
  assert(l.maxBatchKeys >= 1 && l.maxBatchKeys <= l.maxPendingWrites, '1 <= maxBatchKeys <= maxPendingWrites');
}

/** S16: buckets per partition digest (src/storage/digest.ts); a digest entry names some to list. */
export const DIGEST_BUCKETS = 64;
/** S16: at most this many entries listed in one digest's detail (the rest: `detailTruncated`). */
export const MAX_DETAIL_ENTRIES = 20_000;

/** §16: the longest TTL a put may ask for: about 100 years, in ms. */
export const MAX_TTL_MS = 100 * 365 * 24 * 3600 * 1000;

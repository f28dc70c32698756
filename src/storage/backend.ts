/**
 * The storage backend interface (DESIGN §8). A storage server keeps, per partition it
 * hosts, a log of entries, the applied state (key → value + version) and metadata, all
 * in one backend. Every mutation goes through `writeBatch`, which is atomic and, with
 * `sync: 'batch'`, durable when its promise resolves: this is where group commit happens
 * (many partitions' appends and applies in one transaction, one fsync).
 *
 * Implementations: memory (tests), lmdb (default), redis (issue 4). All pass the one
 * conformance suite in test/storage/conformance.ts.
 *
 * Corruption (S13): a backend that keeps checksums (lmdb, redis: every log record, stored
 * value and dedup record, log-record.ts) verifies a record whenever it reads it, in `get`,
 * `scan`, snapshot items, `readLog` and `dedupTable`, and reports a mismatch by throwing a
 * CorruptRecordError (`isCorruptRecord`): never the bad bytes. A corrupt log record found at
 * open does not stop the open: `partitions()` names the partition `corrupt`. The storage
 * server then takes the partition's replica out of its configuration and relearns it (S11).
 * A backend without checksums (memory) never reports corruption, but may, the same way.
 */
import type { LogEntry, PartitionId, Seq, VersionedValue } from '../core/types.js';

export { CorruptRecordError, isCorruptRecord } from './log-record.js';

export type { BatchOp, DedupRecord, LogPosition, PartitionMeta } from '../core/replica/ops.js';
import type { BatchOp, DedupRecord, LogPosition, PartitionMeta } from '../core/replica/ops.js';

export interface BatchResult {
  /** For every applied delete entry: whether the key existed just before it. */
  readonly deletes: ReadonlyArray<{ readonly partition: PartitionId; readonly seq: Seq; readonly existed: boolean }>;
}

/** What a backend knows about one partition at open time. */
export interface PartitionState {
  readonly partition: PartitionId;
  readonly meta: PartitionMeta | null;
  /** Position of the last applied entry ({0,0} when nothing was applied). */
  readonly applied: LogPosition;
  /** Position just before the first entry kept in the log ({0,0} when never truncated). */
  readonly logBase: LogPosition;
  /** Position of the last entry in the log (equals logBase when the log is empty). */
  readonly logLast: LogPosition;
  /**
   * S13: why the partition's log failed its checksum at open, if it did. Its log must not be
   * read or applied; the replica relearns the partition (the partition is then dropped).
   */
  readonly corrupt?: string;
}

export interface ScanPage {
  readonly keys: readonly Uint8Array[];
  /** With `values`: each key's value and version, in the order of `keys`. */
  readonly values?: readonly VersionedValue[];
  /** Pass as `afterKey` to get the next page; absent when the scan is complete. */
  readonly nextAfterKey?: Uint8Array;
}

/** What a `scan` lists (issue 14); the range logic every backend shares is in scan-range.ts. */
export interface ScanOptions {
  /** Only keys after this one (exclusive). */
  readonly afterKey?: Uint8Array;
  /** Only keys that start with these bytes: the backend seeks to them and stops past them. */
  readonly prefix?: Uint8Array;
  /** At most this many keys (>= 1). */
  readonly limit: number;
  /** Also return each key's value and version (`ScanPage.values`). */
  readonly values?: boolean;
  /**
   * With `values`: stop once the keys and values listed reach this many bytes (soft: a page
   * holds at least one key), so a page of large values stays bounded; `nextAfterKey` then says
   * where to go on.
   */
  readonly maxBytes?: number;
}

export interface SnapshotItem {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  readonly version: Seq;
  /** §16: the value's expiry (ms since the Unix epoch), when it has one. */
  readonly expiresAt?: number;
}

/** A point-in-time view of one partition's applied state (S11). */
export interface Snapshot {
  /** The applied position the data corresponds to. */
  readonly applied: LogPosition;
  /** The dedup table at that position (S10). */
  readonly dedup: readonly DedupRecord[];
  /** Data in key order; pages of at most `pageItems`. */
  items(pageItems: number): AsyncIterable<readonly SnapshotItem[]>;
  close(): Promise<void>;
}

export type SyncMode = 'batch' | 'none';

/** What a backend that can go away (redis) says about itself; see Backend.health. */
export interface BackendHealth {
  /** Connected to its store right now. */
  readonly connected: boolean;
  /** Why it stopped writing until reopened (a write whose outcome is unknown), if it did. */
  readonly broken?: string;
  readonly lastError?: string;
}

export interface Backend {
  /** 'memory' | 'lmdb' | 'redis': shown in `nodes`. */
  readonly kind: string;
  /** Every partition with any data, log or metadata. */
  partitions(): Promise<PartitionState[]>;
  /**
   * Atomic; durable on resolve when sync is 'batch'. Throws StorageFailureError on failure.
   * lmdb keeps one exception: an `apply` takes effect at once (reads see it) and becomes
   * durable shortly after, the log keeping every entry above what is durably applied, so a
   * crash before then leaves it to be re-applied from the log (lmdb/backend.ts, `writeBatch`).
   */
  writeBatch(ops: readonly BatchOp[]): Promise<BatchResult>;
  get(partition: PartitionId, key: Uint8Array): Promise<VersionedValue | undefined>;
  /**
   * Keys of the partition in byte order, after `afterKey` (exclusive), starting with `prefix`,
   * at most `limit` (and, with `values`, about `maxBytes`); see ScanOptions.
   */
  scan(partition: PartitionId, options: ScanOptions): Promise<ScanPage>;
  /** Number of keys in the partition's applied state. */
  count(partition: PartitionId): Promise<number>;
  /** Log entries with fromSeq <= seq <= toSeq, in order, at most `limit`. */
  readLog(partition: PartitionId, options: { fromSeq: Seq; toSeq: Seq; limit: number }): Promise<LogEntry[]>;
  snapshot(partition: PartitionId): Promise<Snapshot>;
  /**
   * S11: replace the partition's data with a snapshot's, set applied and log base to
   * `applied`, and empty its log, atomically. `items` yields pages.
   */
  installSnapshot(
    partition: PartitionId,
    applied: LogPosition,
    items: AsyncIterable<readonly SnapshotItem[]>,
    dedup?: readonly DedupRecord[],
  ): Promise<void>;
  /** S10: every client's last write in the partition (read at start). */
  dedupTable(partition: PartitionId): Promise<DedupRecord[]>;
  /**
   * Optional (lmdb): why the replica log was lost at open (moved aside as corrupt), if it was:
   * a partition known only from it is missing from `partitions()`, so the server must not
   * register as durable (S4).
   */
  logLost?(): string | undefined;
  /**
   * Optional, for backends that can go away (redis): whether writes can go through now. The
   * storage server checks it every heartbeat, so it notices a lost store between writes.
   */
  health?(): BackendHealth;
  close(): Promise<void>;
}

export interface BackendOptions {
  /** Directory for embedded backends (lmdb). */
  readonly dataDir?: string;
  readonly sync?: SyncMode;
  /** lmdb: bytes per segment file of the replica log (tests; default 64 MiB). */
  readonly logSegmentBytes?: number;
}

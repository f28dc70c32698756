/**
 * The public shape of the client library and of what `nodes` reports.
 */

/** What `nodes` reports: the wire schema's types (src/rpc/messages.ts), checked when they arrive. */
import type { ClusterInfo, ClusterOverview, ConfigReply, DrainReply } from '../rpc/messages.js';
export type { ConfigReply } from '../rpc/messages.js';
export type { ClusterInfo, ClusterOverview, NodeInfo } from '../rpc/messages.js';
import type { Transaction, TransactionOptions } from './transaction.js';
export type { Transaction, TransactionOptions };

export interface GetResult {
  readonly value: Uint8Array;
  readonly version: number;
  /** §16: the ms the value has left before it expires (by its primary's clock); absent: it does not expire. */
  readonly ttlMs?: number;
  /** Issue 15: a fast read's answer (DESIGN §7): from some replica's applied state, it may be stale. */
  readonly stale?: boolean;
}

/** Issue 15: options of a read. */
export interface ReadOptions {
  /**
   * `linearizable` (the default unless the cluster's read mode is `fast`): from the primary
   * after it confirmed it still is. `fast`: from any active replica, primary or secondary, with
   * no confirmation round: it may be stale, and the result says so (`stale: true`).
   */
  readonly read?: 'linearizable' | 'fast';
}

/** Keys of one storage server, as `dump` shows them. */
export interface StorageDump {
  readonly nodeId: string;
  readonly address: string;
  /** Keys over every partition it holds (counting replicas). */
  readonly keyCount: number;
  /** Up to `limit` keys, in partition then byte order. */
  readonly keys: readonly Uint8Array[];
  /** True when keys were left out because of the limit. */
  readonly truncated: boolean;
  /** Set when the server could not be reached. */
  readonly error?: string;
}

export type { ScanEntry, ScanResult } from './scan-merge.js';
import type { ScanResult } from './scan-merge.js';

/** What `scan` lists (issue 14). */
export interface ScanOptions {
  /** Only keys that start with these bytes (a string: its UTF-8). */
  readonly prefix?: Uint8Array | string;
  /** Only keys after this one (exclusive): a previous call's `next`. */
  readonly startAfter?: Uint8Array | string;
  /** At most this many keys (default 1000, at most 100,000). */
  readonly limit?: number;
  /** Also return each key's value and version. */
  readonly values?: boolean;
}

/** Options of a write (DESIGN §16). */
export interface WriteOptions {
  /**
   * Compare-and-set: write only if the key is at this version (one `get` or `put` returned),
   * 0: only if the key is absent (Redis `SET NX`). Decided by the partition's primary when the
   * write gets its place in the log, so it is linearizable like every write. Otherwise the
   * call fails with ConditionFailedError (CONDITION_FAILED, definite) carrying `current`.
   */
  readonly ifVersion?: number;
  /**
   * Put only: the value expires this many ms after the primary logs it (1 ms to 100 years).
   * The primary records the deadline by its clock; from then on `get` never returns the key,
   * and the primary logs its delete (bounded work per tick). Another put replaces the TTL.
   */
  readonly ttlMs?: number;
}

export interface Db {
  /** Writes `value` under `key`; resolves to the new version once every replica has it. */
  put(key: Uint8Array | string, value: Uint8Array | string, options?: WriteOptions): Promise<number>;
  /**
   * Linearizable read (or a fast one: `options.read`, the client's `read` option, the cluster's
   * read mode, in that order; issue 15); undefined when the key is absent.
   */
  get(key: Uint8Array | string, options?: ReadOptions): Promise<GetResult | undefined>;
  /** Deletes `key`; resolves to whether it existed (with `ifVersion`: only if at that version). */
  delete(key: Uint8Array | string, options?: WriteOptions): Promise<boolean>;
  /**
   * §16: runs `fn` in a serializable transaction across partitions (two-phase commit through
   * the partitions' primaries, docs/transactions.md): `tx.get` reads, `tx.put`/`tx.delete`
   * buffer writes, committed together when `fn` resolves; on a conflict `fn` runs again.
   * TransactionAbortedError when it could not commit within `maxAttempts`.
   */
  transaction<T>(fn: (tx: Transaction) => Promise<T>, options?: TransactionOptions): Promise<T>;
  /** Every service with data about it. */
  nodes(): Promise<ClusterInfo>;
  /** Issue 15: the dashboard's view (nodes, partition map, events, calls per second); the leading nameserver answers. */
  overview(): Promise<ClusterOverview>;
  /** Issue 15: the cluster's live settings (optional: a test double may leave it out). */
  config?(): Promise<ConfigReply>;
  /** Issue 15: switches a live setting; a typed error when refused (e.g. a weakening switch without `force`). */
  setConfig?(name: string, value: string, options?: { node?: string; force?: boolean }): Promise<ConfigReply>;
  /**
   * Issue 15: move every replica and primary off storage server `node` (`cancel`: stop), so
   * it can be removed; resolves at once with what it still holds (watch `nodes` for the rest).
   */
  drain(node: string, options?: { cancel?: boolean }): Promise<DrainReply>;
  /**
   * The keys of every storage server (for `dump`), read page by page; `limit` keys per
   * server (default 100); `timeoutMs` bounds each page's call (default: the client's).
   */
  dump(options?: { limit?: number; timeoutMs?: number }): Promise<StorageDump[]>;
  /**
   * Issue 14: up to `limit` keys (default 1000, at most 100,000) in byte order across every
   * partition, those starting with `prefix`, after `startAfter` (exclusive); with `values`,
   * their values and versions. Pass `next` as `startAfter` to go on; `next` is absent once the
   * scan is complete. Each partition's pages are read from its primary (linearizable per page),
   * but the whole is not a snapshot: a key written during a scan may or may not be listed.
   */
  scan(options?: ScanOptions): Promise<ScanResult>;
  /**
   * Issue 14: reads of several keys, grouped by partition, one call per partition's primary
   * (in parallel); each result as `get` would give it, in the order given. Not atomic across
   * partitions. At most 1000 keys (BATCH_TOO_LARGE). Throws BatchFailedError (its `results`:
   * every key's outcome) when some keys failed.
   */
  getMany(keys: ReadonlyArray<Uint8Array | string>): Promise<Array<GetResult | undefined>>;
  /**
   * Issue 14: writes of several keys, grouped by partition, one call per partition's primary
   * (in parallel); resolves to the versions, in the order given. NOT atomic: each entry is its
   * own write (exactly once, S10), a failed entry leaves the others applied. Each key at most
   * once; at most 1000 entries (BATCH_TOO_LARGE). Throws BatchFailedError naming the keys that
   * failed (OUTCOME_UNKNOWN for one that may have been applied).
   */
  putMany(
    entries: ReadonlyArray<{ readonly key: Uint8Array | string; readonly value: Uint8Array | string }>,
  ): Promise<number[]>;
  /** Every key (starting with `prefix`) in byte order, through `scan`'s cursor, a page at a time. */
  keys(options?: { prefix?: Uint8Array | string }): AsyncIterable<Uint8Array>;
  close(): Promise<void>;
}

/**
 * The public shape of the client library and of what `nodes` reports.
 */

/** What `nodes` reports: the wire schema's types (src/rpc/messages.ts), checked when they arrive. */
import type { ClusterInfo } from '../rpc/messages.js';
export type { ClusterInfo, NodeInfo } from '../rpc/messages.js';
import type { Transaction, TransactionOptions } from './transaction.js';
export type { Transaction, TransactionOptions };

export interface GetResult {
  readonly value: Uint8Array;
  readonly version: number;
  /** §16: the ms the value has left before it expires (by its primary's clock); absent: it does not expire. */
  readonly ttlMs?: number;
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
  /** Linearizable read; undefined when the key is absent. */
  get(key: Uint8Array | string): Promise<GetResult | undefined>;
  /** Deletes `key`; resolves to whether it existed (with `ifVersion`: only if at that version). */
  delete(key: Uint8Array | string, options?: WriteOptions): Promise<boolean>;
  /**
   * §16: runs `fn` in a serializable transaction across partitions (two-phase commit through
   * the partitions' primaries, docs/transactions.md): `tx.get` reads, `tx.put`/`tx.delete`
   * buffer writes, committed together when `fn` resolves; on a conflict `fn` runs again.
   * TransactionAbortedError when it could not commit within `maxAttempts`.
   */
  transaction<T>(fn: (tx: Transaction) => Promise<T>, options?: TransactionOptions): Promise<T>;
  /** Every key of the cluster, partition by partition (each once, read from primaries). */
  scan(): AsyncIterable<Uint8Array>;
  /** Every service with data about it. */
  nodes(): Promise<ClusterInfo>;
  /**
   * The keys of every storage server (for `dump`), read page by page; `limit` keys per
   * server (default 100); `timeoutMs` bounds each page's call (default: the client's).
   */
  dump(options?: { limit?: number; timeoutMs?: number }): Promise<StorageDump[]>;
  close(): Promise<void>;
}

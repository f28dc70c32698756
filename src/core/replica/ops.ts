/**
 * The storage operations the core asks for (DESIGN §8). The driver writes the ops of many
 * partitions in one atomic, durable batch (group commit); see src/storage/backend.ts.
 */
import type { Config, Epoch, LogEntry, PartitionId, Seq } from '../types.js';
import type { LogPosition } from './log.js';

export type { LogPosition };

/** Metadata persisted per partition before anything is sent under it (S3). */
export interface PartitionMeta {
  /** Highest epoch this replica has adopted. */
  readonly epoch: Epoch;
  /** The configuration of that epoch, when known. */
  readonly config: Config | null;
  /**
   * S13: why this replica found the partition corrupt, from then until it drops the
   * partition to relearn it (the drop's batch writes metadata without it). Recovered at
   * open: the replica starts corrupt. Absent in metadata written before issue 9's fixes.
   */
  readonly corrupt?: string;
}

/**
 * S10: the last write of one client in one partition. Recorded by `apply` for every entry
 * that carries a tag, in the same atomic batch as the data, so it survives failover and
 * learning (it is part of snapshots).
 */
export interface DedupRecord {
  readonly clientId: string;
  readonly requestSeq: number;
  /** Seq of the entry that carried the request (the write's version). */
  readonly seq: Seq;
  /** For a delete: whether the key existed just before it. */
  readonly existed?: boolean;
}

export type BatchOp =
  /** Append entries to the partition's log; seqs must follow the log's last seq. */
  | { readonly kind: 'appendLog'; readonly partition: PartitionId; readonly entries: readonly LogEntry[] }
  /** S1: delete the log entries with seq >= fromSeq (a conflict with the primary's log). */
  | { readonly kind: 'truncateLogFrom'; readonly partition: PartitionId; readonly fromSeq: Seq }
  /** S12: delete the log entries with seq <= base.seq; `base` becomes the log's base position. */
  | { readonly kind: 'truncateLogTo'; readonly partition: PartitionId; readonly base: LogPosition }
  /**
   * Apply entries in order to the partition's data (put: value with version = entry seq;
   * delete: remove; epochStart: nothing) and set its applied position to the last entry's.
   * Entries must start right after the current applied seq.
   */
  | { readonly kind: 'apply'; readonly partition: PartitionId; readonly entries: readonly LogEntry[] }
  | { readonly kind: 'setMeta'; readonly partition: PartitionId; readonly meta: PartitionMeta }
  /** Remove everything of the partition: data, log, metadata. */
  | { readonly kind: 'dropPartition'; readonly partition: PartitionId };

/**
 * The per-partition bookkeeping lmdb and redis share: the state each caches of every
 * partition (exact, since each is its store's only writer), `partitions()` built from that
 * cache, and the S13 corrupt markers. Each backend keeps its own on-disk layout (lmdb.ts,
 * redis.ts); what is shared here is only what both do the same way.
 *
 * Two notions of "corrupt" reach the storage server (backend.ts, `PartitionState`):
 * - `corrupt` on a cached state: found at open (a log record failed its checksum; on lmdb
 *   also a marker the format-1 upgrade left, see lmdb/corrupt-markers.ts). Not persisted by
 *   the cache: it is found again at every open until the partition is dropped.
 * - `meta.corrupt`: the replica's own marker, persisted with its metadata (setMeta) until it
 *   drops the partition. Decoded here for both backends (`decodeMeta`).
 */
import { type Config, type PartitionId, epoch as toEpoch } from '../core/types.js';
import type { LogPosition, PartitionMeta, PartitionState } from './backend.js';
import { CorruptRecordError, isUint } from './log-record.js';
import { ZERO_POSITION } from './preconditions.js';

/** What lmdb and redis cache of a partition; each adds its own fields. */
export interface CachedPartition {
  readonly meta: PartitionMeta | null;
  readonly applied: LogPosition;
  readonly logBase: LogPosition;
  readonly logLast: LogPosition;
  /** Data lives under (partition, generation); see each backend's layout. */
  readonly generation: number;
  /**
   * S13: why the partition was found corrupt at open, if it was; see PartitionState. Only
   * dropping the partition (which deletes the whole log) is expected of it.
   */
  readonly corrupt?: string;
}

/** A partition that did not exist yet: no metadata, nothing logged or applied. */
export function freshPartition(generation: number): CachedPartition {
  return { meta: null, applied: ZERO_POSITION, logBase: ZERO_POSITION, logLast: ZERO_POSITION, generation };
}

/** `partitions()`: every cached partition, by id. */
export function listPartitions(states: ReadonlyMap<PartitionId, CachedPartition>): PartitionState[] {
  const out: PartitionState[] = [];
  for (const [partition, s] of states) {
    const state: PartitionState = {
      partition,
      meta: s.meta,
      applied: s.applied,
      logBase: s.logBase,
      logLast: s.logLast,
    };
    out.push(s.corrupt === undefined ? state : { ...state, corrupt: s.corrupt });
  }
  return out.sort((a, b) => a.partition - b.partition);
}

/** Publishes committed changes into a cache; `null` marks a dropped partition. */
export function publishChanges<S>(
  cache: Map<PartitionId, S>,
  changes: Iterable<readonly [PartitionId, S | null]>,
): void {
  for (const [p, s] of changes) {
    if (s === null) cache.delete(p);
    else cache.set(p, s);
  }
}

/** S13: the state marked corrupt at open; the first reason found is kept. */
export function markCorrupt<S extends CachedPartition>(s: S, reason: string): S {
  return s.corrupt === undefined ? { ...s, corrupt: reason } : s;
}

/** Whether a persisted config field has the shape of a configuration (or is null). */
export function isConfigField(config: unknown): config is Config | null {
  return config === null || (typeof config === 'object' && !Array.isArray(config));
}

/**
 * The replica's metadata as a backend persisted it, checked: its epoch, its config and its
 * S13 corrupt marker (a string, present only while the replica holds one, so metadata
 * without one reads as before). `bad` gives the error message for a bad field.
 */
export function decodeMeta(
  fields: { readonly epoch: unknown; readonly config: unknown; readonly corrupt: unknown },
  bad: (field: 'epoch' | 'config' | 'corrupt marker') => string,
): PartitionMeta {
  const { epoch, config, corrupt } = fields;
  if (!isUint(epoch)) throw new CorruptRecordError(bad('epoch'));
  if (!isConfigField(config)) throw new CorruptRecordError(bad('config'));
  if (corrupt !== undefined && typeof corrupt !== 'string') throw new CorruptRecordError(bad('corrupt marker'));
  return corrupt === undefined ? { epoch: toEpoch(epoch), config } : { epoch: toEpoch(epoch), config, corrupt };
}

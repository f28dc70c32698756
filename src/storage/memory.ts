/**
 * The in-memory backend (DESIGN §8): for tests and the simulator. Nothing survives the
 * process; a restarted replica on it rejoins as a learner (S4).
 *
 * It implements the same contract as the durable backends, preconditions included, so a
 * test that passes on it says something about lmdb: `writeBatch` runs its ops in order,
 * each checked against the state the earlier ops of the batch left, and either all of a
 * batch takes effect or none of it (an undo list rolls back a batch that throws).
 * Batches take effect in call order. Stored and returned bytes are copies, returned as
 * plain `Uint8Array`s, so callers can neither alias nor corrupt the stored state.
 *
 * This file also holds the precondition checks every backend shares (`check*` below).
 */
import {
  type Epoch,
  type LogEntry,
  type Op,
  type PartitionId,
  type Seq,
  type VersionedValue,
  InvariantViolation,
  assert,
  assertNever,
  epoch as toEpoch,
  seq as toSeq,
} from '../core/types.js';
import { StorageFailureError } from '../core/errors.js';
import type {
  Backend,
  BatchOp,
  BatchResult,
  LogPosition,
  PartitionMeta,
  PartitionState,
  ScanPage,
  Snapshot,
  SnapshotItem,
} from './backend.js';

// ---------------------------------------------------------------------------------------
// Preconditions shared by every backend. A violation is a bug in the caller (the core
// decided something impossible), so it is an InvariantViolation (STYLE §3: broken
// invariants crash), thrown before anything of the batch is written.
// ---------------------------------------------------------------------------------------

export const ZERO_POSITION: LogPosition = { seq: toSeq(0), epoch: toEpoch(0) };

function violation(partition: PartitionId, message: string): never {
  throw new InvariantViolation(`partition ${partition}: ${message}`);
}

/**
 * appendLog and apply: entries must follow `prev` without a gap (seq prev.seq+1, +2, ...)
 * and their epochs never decrease (S1: an entry keeps the epoch it was proposed in, and a
 * primary of epoch e appends only after entries of epochs <= e).
 */
export function checkEntriesFollow(
  partition: PartitionId,
  what: 'appendLog' | 'apply',
  prev: LogPosition,
  entries: readonly LogEntry[],
): void {
  let expected = prev.seq + 1;
  let lastEpoch: number = prev.epoch;
  for (const entry of entries) {
    if (entry.seq !== expected) {
      violation(partition, `${what}: entry seq ${entry.seq} where seq ${expected} was expected (after ${prev.seq})`);
    }
    if (entry.epoch < lastEpoch) {
      violation(partition, `${what}: entry ${entry.seq} has epoch ${entry.epoch}, below the previous entry's ${lastEpoch}`);
    }
    lastEpoch = entry.epoch;
    expected += 1;
  }
}

/** S1: a conflict never deletes an applied (hence committed) entry. */
export function checkTruncateLogFrom(partition: PartitionId, fromSeq: Seq, applied: LogPosition): void {
  if (!Number.isSafeInteger(fromSeq) || fromSeq <= applied.seq) {
    violation(partition, `truncateLogFrom(${fromSeq}) would delete entries at or below the applied seq ${applied.seq} (S1)`);
  }
}

/**
 * S12: drop only entries at or below the applied seq; the base never moves back, and when
 * the new base is an entry of the log, `base.epoch` must be that entry's epoch.
 */
export function checkTruncateLogTo(
  partition: PartitionId,
  base: LogPosition,
  state: { readonly applied: LogPosition; readonly logBase: LogPosition; readonly logLast: LogPosition },
  epochAt: (s: Seq) => Epoch,
): void {
  if (!Number.isSafeInteger(base.seq) || base.seq > state.applied.seq) {
    violation(partition, `truncateLogTo(${base.seq}) is above the applied seq ${state.applied.seq} (S12)`);
  }
  if (base.seq < state.logBase.seq) {
    violation(partition, `truncateLogTo(${base.seq}) would move the log base back from ${state.logBase.seq}`);
  }
  if (base.seq === state.logBase.seq && base.epoch !== state.logBase.epoch) {
    violation(partition, `truncateLogTo(${base.seq}, epoch ${base.epoch}) but the base has epoch ${state.logBase.epoch}`);
  }
  if (base.seq > state.logBase.seq && base.seq <= state.logLast.seq) {
    const held = epochAt(base.seq);
    if (held !== base.epoch) {
      violation(partition, `truncateLogTo(${base.seq}, epoch ${base.epoch}) but entry ${base.seq} has epoch ${held}`);
    }
  }
}

/** S3: the adopted epoch never goes back. */
export function checkSetMeta(partition: PartitionId, current: PartitionMeta | null, meta: PartitionMeta): void {
  if (current !== null && meta.epoch < current.epoch) {
    violation(partition, `setMeta: epoch ${meta.epoch} is below the persisted epoch ${current.epoch} (S3)`);
  }
}

/** Snapshot items arrive in strictly ascending key order, none newer than the snapshot. */
export function checkSnapshotItem(
  partition: PartitionId,
  applied: LogPosition,
  previousKey: Uint8Array | undefined,
  item: SnapshotItem,
): void {
  if (item.key.length === 0) violation(partition, 'installSnapshot: empty key');
  if (previousKey !== undefined && compareBytes(previousKey, item.key) >= 0) {
    violation(partition, 'installSnapshot: items are not in strictly ascending key order');
  }
  if (item.version > applied.seq) {
    violation(partition, `installSnapshot: an item has version ${item.version}, above the snapshot's seq ${applied.seq}`);
  }
}

export function checkKey(partition: PartitionId, key: Uint8Array, maxKeyBytes: number): void {
  if (key.length === 0) violation(partition, 'apply: a put or delete with an empty key');
  if (key.length > maxKeyBytes) violation(partition, `apply: a key of ${key.length} bytes, over this backend's ${maxKeyBytes}`);
}

export function checkPageLimit(what: string, limit: number): void {
  assert(Number.isSafeInteger(limit) && limit >= 1, `${what}: limit must be an integer >= 1, got ${limit}`);
}

/** Byte-wise comparison (memcmp order), the order of scans and snapshots. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/** A plain Uint8Array copy (never a Buffer), so results compare equal across backends. */
export function copyBytes(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

// ---------------------------------------------------------------------------------------
// The memory backend.
// ---------------------------------------------------------------------------------------

/** Keys longer than any sane limit are refused even here, to match lmdb (1970 bytes). */
const MEMORY_MAX_KEY_BYTES = 1970;

interface StoredValue {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  readonly version: Seq;
}

interface MemPartition {
  meta: PartitionMeta | null;
  applied: LogPosition;
  logBase: LogPosition;
  /** Entries logBase.seq+1 .. logBase.seq+log.length, without gaps. */
  log: LogEntry[];
  /** Data by latin1 string of the key bytes; latin1 strings sort like the bytes. */
  data: Map<string, StoredValue>;
  /** The keys of `data`, sorted. */
  sortedKeys: string[];
}

const keyString = (key: Uint8Array): string => Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1');

/** Index of the first element of `sorted` greater than `s` (or >= when `inclusive`). */
function lowerBound(sorted: readonly string[], s: string, inclusive: boolean): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const m = sorted[mid]!;
    if (m < s || (!inclusive && m === s)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function lastPosition(p: MemPartition): LogPosition {
  const last = p.log[p.log.length - 1];
  return last ? { seq: last.seq, epoch: last.epoch } : p.logBase;
}

function copyOp(op: Op): Op {
  switch (op.kind) {
    case 'put':
      return { kind: 'put', key: copyBytes(op.key), value: copyBytes(op.value) };
    case 'delete':
      return { kind: 'delete', key: copyBytes(op.key) };
    case 'epochStart':
      return { kind: 'epochStart' };
    default:
      return assertNever(op);
  }
}

function copyEntry(e: LogEntry): LogEntry {
  const out: { -readonly [K in keyof LogEntry]: LogEntry[K] } = { epoch: e.epoch, seq: e.seq, op: copyOp(e.op) };
  if (e.tag !== undefined) out.tag = { clientId: e.tag.clientId, requestSeq: e.tag.requestSeq };
  return out;
}

export class MemoryBackend implements Backend {
  readonly kind = 'memory';
  private readonly parts = new Map<PartitionId, MemPartition>();
  private closed = false;

  async partitions(): Promise<PartitionState[]> {
    this.checkOpen();
    const out: PartitionState[] = [];
    for (const [partition, p] of this.parts) {
      out.push({ partition, meta: p.meta, applied: p.applied, logBase: p.logBase, logLast: lastPosition(p) });
    }
    return out.sort((a, b) => a.partition - b.partition);
  }

  async writeBatch(ops: readonly BatchOp[]): Promise<BatchResult> {
    this.checkOpen();
    const undo: Array<() => void> = [];
    const deletes: Array<{ partition: PartitionId; seq: Seq; existed: boolean }> = [];
    try {
      for (const op of ops) this.runOp(op, undo, deletes);
    } catch (err) {
      for (let i = undo.length - 1; i >= 0; i--) undo[i]!();
      throw err;
    }
    return { deletes };
  }

  async get(partition: PartitionId, key: Uint8Array): Promise<VersionedValue | undefined> {
    this.checkOpen();
    const stored = this.parts.get(partition)?.data.get(keyString(key));
    return stored ? { value: copyBytes(stored.value), version: stored.version } : undefined;
  }

  async scan(partition: PartitionId, options: { afterKey?: Uint8Array; limit: number }): Promise<ScanPage> {
    this.checkOpen();
    checkPageLimit('scan', options.limit);
    const p = this.parts.get(partition);
    if (!p) return { keys: [] };
    const start = options.afterKey === undefined ? 0 : lowerBound(p.sortedKeys, keyString(options.afterKey), false);
    const end = Math.min(p.sortedKeys.length, start + options.limit);
    const keys: Uint8Array[] = [];
    for (let i = start; i < end; i++) keys.push(copyBytes(p.data.get(p.sortedKeys[i]!)!.key));
    const last = keys[keys.length - 1];
    return end < p.sortedKeys.length && last !== undefined ? { keys, nextAfterKey: copyBytes(last) } : { keys };
  }

  async count(partition: PartitionId): Promise<number> {
    this.checkOpen();
    return this.parts.get(partition)?.data.size ?? 0;
  }

  async readLog(partition: PartitionId, options: { fromSeq: Seq; toSeq: Seq; limit: number }): Promise<LogEntry[]> {
    this.checkOpen();
    checkPageLimit('readLog', options.limit);
    const p = this.parts.get(partition);
    if (!p) return [];
    const from = Math.max(options.fromSeq, p.logBase.seq + 1);
    const to = Math.min(options.toSeq, p.logBase.seq + p.log.length, from + options.limit - 1);
    const out: LogEntry[] = [];
    for (let s = from; s <= to; s++) out.push(copyEntry(p.log[s - p.logBase.seq - 1]!));
    return out;
  }

  async snapshot(partition: PartitionId): Promise<Snapshot> {
    this.checkOpen();
    const p = this.parts.get(partition);
    // Stored values are never mutated in place (a put replaces the object), so copying
    // the sorted list of references is a point-in-time view.
    const items: StoredValue[] = p ? p.sortedKeys.map((k) => p.data.get(k)!) : [];
    const applied = p ? p.applied : ZERO_POSITION;
    let open = true;
    return {
      applied,
      async *items(pageItems: number): AsyncIterable<readonly SnapshotItem[]> {
        checkPageLimit('snapshot items', pageItems);
        for (let i = 0; i < items.length; i += pageItems) {
          assert(open, 'snapshot read after close');
          yield items.slice(i, i + pageItems).map((s) => ({ key: copyBytes(s.key), value: copyBytes(s.value), version: s.version }));
        }
      },
      async close(): Promise<void> {
        open = false;
      },
    };
  }

  async installSnapshot(partition: PartitionId, applied: LogPosition, items: AsyncIterable<readonly SnapshotItem[]>): Promise<void> {
    this.checkOpen();
    const data = new Map<string, StoredValue>();
    const sortedKeys: string[] = [];
    let previousKey: Uint8Array | undefined;
    // Loop bound: the caller's iterator; each page is held in memory until the swap.
    for await (const page of items) {
      for (const item of page) {
        checkSnapshotItem(partition, applied, previousKey, item);
        checkKey(partition, item.key, MEMORY_MAX_KEY_BYTES);
        const stored: StoredValue = { key: copyBytes(item.key), value: copyBytes(item.value), version: item.version };
        const k = keyString(stored.key);
        data.set(k, stored);
        sortedKeys.push(k);
        previousKey = stored.key;
      }
    }
    this.checkOpen();
    // S11: the swap is one synchronous step, so it is atomic.
    const meta = this.parts.get(partition)?.meta ?? null;
    this.parts.set(partition, { meta, applied, logBase: applied, log: [], data, sortedKeys });
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private checkOpen(): void {
    if (this.closed) throw new StorageFailureError('the memory backend is closed');
  }

  private partition(partition: PartitionId, undo: Array<() => void>): MemPartition {
    const existing = this.parts.get(partition);
    if (existing) return existing;
    const created: MemPartition = {
      meta: null,
      applied: ZERO_POSITION,
      logBase: ZERO_POSITION,
      log: [],
      data: new Map(),
      sortedKeys: [],
    };
    this.parts.set(partition, created);
    undo.push(() => this.parts.delete(partition));
    return created;
  }

  private runOp(op: BatchOp, undo: Array<() => void>, deletes: Array<{ partition: PartitionId; seq: Seq; existed: boolean }>): void {
    switch (op.kind) {
      case 'appendLog': {
        const p = this.partition(op.partition, undo);
        checkEntriesFollow(op.partition, 'appendLog', lastPosition(p), op.entries);
        const lengthBefore = p.log.length;
        for (const e of op.entries) p.log.push(copyEntry(e));
        undo.push(() => {
          p.log.length = lengthBefore;
        });
        return;
      }
      case 'truncateLogFrom': {
        const p = this.partition(op.partition, undo);
        checkTruncateLogFrom(op.partition, op.fromSeq, p.applied);
        const keep = Math.max(0, op.fromSeq - p.logBase.seq - 1);
        if (keep >= p.log.length) return;
        const removed = p.log.slice(keep);
        p.log.length = keep;
        undo.push(() => {
          for (const e of removed) p.log.push(e);
        });
        return;
      }
      case 'truncateLogTo': {
        const p = this.partition(op.partition, undo);
        const logLast = lastPosition(p);
        checkTruncateLogTo(op.partition, op.base, { applied: p.applied, logBase: p.logBase, logLast }, (s) => p.log[s - p.logBase.seq - 1]!.epoch);
        const drop = Math.min(op.base.seq - p.logBase.seq, p.log.length);
        const logBefore = p.log;
        const baseBefore = p.logBase;
        p.log = p.log.slice(drop);
        p.logBase = op.base;
        undo.push(() => {
          p.log = logBefore;
          p.logBase = baseBefore;
        });
        return;
      }
      case 'apply': {
        const p = this.partition(op.partition, undo);
        checkEntriesFollow(op.partition, 'apply', p.applied, op.entries);
        for (const e of op.entries) {
          if (e.op.kind === 'put' || e.op.kind === 'delete') checkKey(op.partition, e.op.key, MEMORY_MAX_KEY_BYTES);
        }
        const appliedBefore = p.applied;
        undo.push(() => {
          p.applied = appliedBefore;
        });
        for (const e of op.entries) {
          if (e.op.kind === 'put') this.putValue(p, { key: copyBytes(e.op.key), value: copyBytes(e.op.value), version: e.seq }, undo);
          else if (e.op.kind === 'delete') deletes.push({ partition: op.partition, seq: e.seq, existed: this.deleteValue(p, e.op.key, undo) });
          p.applied = { seq: e.seq, epoch: e.epoch };
        }
        return;
      }
      case 'setMeta': {
        const p = this.partition(op.partition, undo);
        checkSetMeta(op.partition, p.meta, op.meta);
        const before = p.meta;
        p.meta = op.meta;
        undo.push(() => {
          p.meta = before;
        });
        return;
      }
      case 'dropPartition': {
        const before = this.parts.get(op.partition);
        if (!before) return;
        this.parts.delete(op.partition);
        undo.push(() => this.parts.set(op.partition, before));
        return;
      }
      default:
        return assertNever(op);
    }
  }

  private putValue(p: MemPartition, stored: StoredValue, undo: Array<() => void>): void {
    const k = keyString(stored.key);
    const before = p.data.get(k);
    p.data.set(k, stored);
    if (before) {
      undo.push(() => p.data.set(k, before));
      return;
    }
    const at = lowerBound(p.sortedKeys, k, true);
    p.sortedKeys.splice(at, 0, k);
    undo.push(() => {
      p.data.delete(k);
      p.sortedKeys.splice(lowerBound(p.sortedKeys, k, true), 1);
    });
  }

  /** Returns whether the key existed. */
  private deleteValue(p: MemPartition, key: Uint8Array, undo: Array<() => void>): boolean {
    const k = keyString(key);
    const before = p.data.get(k);
    if (!before) return false;
    p.data.delete(k);
    p.sortedKeys.splice(lowerBound(p.sortedKeys, k, true), 1);
    undo.push(() => {
      p.data.set(k, before);
      p.sortedKeys.splice(lowerBound(p.sortedKeys, k, true), 0, k);
    });
    return true;
  }
}

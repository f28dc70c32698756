/**
 * Every partition's replica log in one segment log (segment-log.ts): the log half of the
 * "replica log in its own file, LMDB for the applied state" design (docs/benchmarks.md,
 * issue 11). Not wired into a backend yet.
 *
 * Records (msgpack arrays, one per op; a batch's records go in one append, one sync):
 * - `[APPEND, p, sealed entry]`  the entry (log-record.ts `encodeEntry`, its own checksum);
 * - `[TRUNC_FROM, p, fromSeq]`   S1: entries ≥ fromSeq are gone (a conflict with the primary);
 * - `[TRUNC_TO, p, seq, epoch]`  S12: entries ≤ seq are gone; (seq, epoch) is the log's base;
 * - `[META, p, meta]`            the partition's metadata (S3: durable before anything is sent);
 * - `[DROP, p]`                  the partition's log and metadata are gone;
 * - `[RESET, p, seq, epoch]`     S11: a snapshot was installed at (seq, epoch); the log is empty.
 *
 * Open replays the records in order into each partition's state: metadata, base, last, and
 * an index of the entries it holds (record number and epoch per seq; the entries themselves
 * stay on disk and are read back by number). Replay checks what it rebuilds: an APPEND must
 * follow the partition's last seq; anything else is corruption (S13) of the whole store.
 *
 * `compact()` deletes the oldest segments once nothing in them is live: no indexed entry,
 * and no partition's latest META or base record — those are written again first (one
 * checkpoint append) when they are all that keeps a segment.
 */
import { Packr } from 'msgpackr';
import type { PartitionMeta } from '../core/replica/ops.js';
import {
  type LogEntry,
  type PartitionId,
  InvariantViolation,
  assertNever,
  epoch as toEpoch,
  seq as toSeq,
} from '../core/types.js';
import type { LogPosition } from './backend.js';
import { StorageFailureError } from '../core/errors.js';
import { CorruptRecordError, decodeEntry, encodeEntry } from './log-record.js';
import { SegmentLog } from './segment-log.js';

const APPEND = 0;
const TRUNC_FROM = 1;
const TRUNC_TO = 2;
const META = 3;
const DROP = 4;
const RESET = 5;

const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });
const ZERO: LogPosition = { seq: toSeq(0), epoch: toEpoch(0) };

/** What the log store is asked to do: the log half of a backend batch. */
export type LogOp =
  | { readonly kind: 'append'; readonly partition: PartitionId; readonly entries: readonly LogEntry[] }
  | { readonly kind: 'truncateFrom'; readonly partition: PartitionId; readonly fromSeq: number }
  | { readonly kind: 'truncateTo'; readonly partition: PartitionId; readonly base: LogPosition }
  | { readonly kind: 'setMeta'; readonly partition: PartitionId; readonly meta: PartitionMeta }
  | { readonly kind: 'drop'; readonly partition: PartitionId }
  | { readonly kind: 'reset'; readonly partition: PartitionId; readonly at: LogPosition };

/** One partition's log as the store holds it. */
export interface PartitionLog {
  meta: PartitionMeta | null;
  base: LogPosition;
  last: LogPosition;
  /** Entry base.seq + 1 + i is record `records[i]`, of epoch `epochs[i]`. */
  records: number[];
  epochs: number[];
  /** The record that set `meta` and the one that set `base` (0: none). */
  metaRecord: number;
  baseRecord: number;
  /**
   * Replay only: the first seq met when the partition's earlier records were compacted away
   * (its first record here is an entry that does not follow 0). A base record later in the
   * log must then cover everything before it (checked at the end of the replay).
   */
  provisionalFrom: number;
}

const fresh = (): PartitionLog => ({
  meta: null,
  base: ZERO,
  last: ZERO,
  records: [],
  epochs: [],
  metaRecord: 0,
  baseRecord: 0,
  provisionalFrom: 0,
});

export class LogStore {
  /** The number the next record gets (records are numbered when written, before they are durable). */
  private next: number;
  /** Every record up to this number is durable. */
  private durable: number;
  /** Records written and not yet appended, in order, with who waits for them. */
  private queued: Buffer[] = [];
  private waiters: Array<{ last: number; resolve(): void; reject(err: unknown): void }> = [];
  private appending: Promise<void> | null = null;
  /** Set once an append failed: the file's end is unknown, nothing more is written. */
  private failure: StorageFailureError | undefined;

  private constructor(
    private readonly log: SegmentLog,
    private readonly parts: Map<PartitionId, PartitionLog>,
  ) {
    this.next = log.nextNumber;
    this.durable = log.nextNumber - 1;
  }

  static async open(
    dir: string,
    options: { segmentBytes?: number; sync?: boolean } = {},
  ): Promise<{ store: LogStore; tornTail?: { file: string; offset: number; bytes: number } }> {
    const opened = await SegmentLog.open(dir, options);
    const parts = new Map<PartitionId, PartitionLog>();
    try {
      for (const r of opened.records) replay(parts, r.n, r.payload);
      for (const [p, s] of parts) {
        // No base record after the first entry, or one that leaves a gap: records are missing.
        if (s.provisionalFrom > 0 && (s.baseRecord === 0 || s.base.seq < s.provisionalFrom - 1)) {
          const base = s.baseRecord === 0 ? 0 : s.base.seq;
          throw new CorruptRecordError(
            `partition ${p}: the log starts at entry ${s.provisionalFrom} but its base is ${base} (S13)`,
          );
        }
        s.provisionalFrom = 0;
      }
    } catch (err) {
      await opened.log.close();
      throw err;
    }
    const store = new LogStore(opened.log, parts);
    return opened.tornTail === undefined ? { store } : { store, tornTail: opened.tornTail };
  }

  /** Every partition with a log or metadata, as written (durable or about to be: see `write`). */
  partitions(): ReadonlyMap<PartitionId, Readonly<PartitionLog>> {
    return this.parts;
  }

  /** The epoch of the entry at `seq` (base's epoch at base.seq), undefined when not held. */
  epochAt(partition: PartitionId, seq: number): number | undefined {
    const p = this.parts.get(partition);
    if (!p) return seq === 0 ? 0 : undefined;
    if (seq === p.base.seq) return p.base.epoch;
    return p.epochs[seq - p.base.seq - 1];
  }

  /**
   * Writes the ops: checked and applied to the in-memory state at once (so `partitions`,
   * `epochAt` and the next write see them), and durable when the promise resolves. Writes
   * made while an append runs go together in the next one (group commit: one write, one
   * sync). Entries that do not follow the partition's last seq are refused: it throws
   * (InvariantViolation, synchronously) before anything changes. After a failed append every write fails:
   * the store must be reopened.
   */
  write(ops: readonly LogOp[]): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const payloads: Buffer[] = [];
    // Appends must follow each partition's last seq; checked before anything changes.
    const lastSeq = new Map<PartitionId, number>();
    for (const op of ops) {
      const p = op.partition;
      const last = lastSeq.get(p) ?? this.parts.get(p)?.last.seq ?? 0;
      switch (op.kind) {
        case 'append':
          for (const [i, e] of op.entries.entries()) {
            if (e.seq !== last + 1 + i) {
              throw new InvariantViolation(`partition ${p}: appending entry ${e.seq} after ${last + i}`);
            }
          }
          lastSeq.set(p, last + op.entries.length);
          break;
        case 'truncateFrom':
          lastSeq.set(p, Math.min(last, op.fromSeq - 1));
          break;
        case 'truncateTo':
        case 'reset':
          lastSeq.set(p, op.kind === 'reset' ? op.at.seq : Math.max(last, op.base.seq));
          break;
        case 'drop':
          lastSeq.set(p, 0);
          break;
        case 'setMeta':
          break;
        default:
          assertNever(op);
      }
      payloads.push(...encodeOp(op));
    }
    if (payloads.length === 0) return this.whenDurable(this.next - 1);
    for (const payload of payloads) {
      replay(this.parts, this.next, payload);
      this.next += 1;
      this.queued.push(payload);
    }
    const done = this.whenDurable(this.next - 1);
    this.appending ??= this.appendQueued();
    return done;
  }

  /** Entries fromSeq..toSeq (inclusive, at most `limit`) of what the partition holds, once durable. */
  async read(partition: PartitionId, fromSeq: number, toSeq: number, limit: number): Promise<LogEntry[]> {
    const p = this.parts.get(partition);
    if (!p) return [];
    const first = Math.max(fromSeq, p.base.seq + 1);
    const last = Math.min(toSeq, p.last.seq, first + limit - 1);
    const numbers: number[] = [];
    for (let seq = first; seq <= last; seq++) numbers.push(p.records[seq - p.base.seq - 1] as number);
    const highest = numbers[numbers.length - 1];
    if (highest !== undefined && highest > this.durable) await this.whenDurable(highest);
    const out: LogEntry[] = [];
    for (const [i, n] of numbers.entries()) {
      const seq = first + i;
      const payload = await this.log.read(n);
      if (payload === undefined) throw new CorruptRecordError(`partition ${partition}: log entry ${seq} is missing`);
      const entry = decodeAppend(payload, n);
      if (entry.seq !== seq)
        throw new CorruptRecordError(`partition ${partition}: record ${n} holds entry ${entry.seq}, not ${seq}`);
      out.push(entry);
    }
    return out;
  }

  /** Why the store stopped writing (an append failed), if it did. */
  get failed(): StorageFailureError | undefined {
    return this.failure;
  }

  /** How many segment files hold the log. */
  get segments(): number {
    return this.log.segmentCount;
  }

  /** Deletes the segments nothing live is in (checkpointing metadata and bases first). */
  async compact(): Promise<number> {
    // What is written is durable first: a truncation must not free a segment before it is.
    await this.whenDurable(this.next - 1);
    let firstLive = this.firstLiveRecord((s) => Math.min(s.metaRecord || Infinity, s.baseRecord || Infinity));
    const firstEntry = this.firstLiveRecord(() => Infinity);
    if (firstLive < firstEntry) {
      // Only metadata and bases keep the older segments: write them again, then drop those.
      const checkpoint: LogOp[] = [];
      for (const [partition, s] of this.parts) {
        if (s.meta) checkpoint.push({ kind: 'setMeta', partition, meta: s.meta });
        if (s.baseRecord > 0) checkpoint.push({ kind: 'truncateTo', partition, base: s.base });
      }
      await this.write(checkpoint);
      firstLive = this.firstLiveRecord((s) => Math.min(s.metaRecord || Infinity, s.baseRecord || Infinity));
    }
    // Only what is durable may be replaced: a record still queued keeps the segments before it.
    return this.log.dropBefore(Math.min(firstLive, this.durable + 1));
  }

  /** Waits for what was written, then closes the file. */
  async close(): Promise<void> {
    await this.whenDurable(this.next - 1).catch(() => undefined);
    await this.log.close();
  }

  /** Resolves once record `n` (and every one before it) is durable. */
  private whenDurable(n: number): Promise<void> {
    if (n <= this.durable) return Promise.resolve();
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => this.waiters.push({ last: n, resolve, reject }));
  }

  /** The group-commit loop: one append of everything queued, until nothing is. */
  private async appendQueued(): Promise<void> {
    // Bounded: each round appends every record queued so far; it ends when writers stop.
    while (this.queued.length > 0) {
      const batch = this.queued;
      this.queued = [];
      const expected = this.durable + 1;
      try {
        const first = await this.log.append(batch);
        if (first !== expected) throw new InvariantViolation(`log append numbered ${first}, expected ${expected}`);
      } catch (err) {
        this.failure =
          err instanceof StorageFailureError ? err : new StorageFailureError('log append failed', { cause: err });
        for (const w of this.waiters) w.reject(this.failure);
        this.waiters = [];
        this.queued = [];
        break;
      }
      this.durable = expected + batch.length - 1;
      const ready = this.waiters.filter((w) => w.last <= this.durable);
      this.waiters = this.waiters.filter((w) => w.last > this.durable);
      for (const w of ready) w.resolve();
    }
    this.appending = null;
  }

  /** The lowest record number still needed: indexed entries, plus what `also` names per partition. */
  private firstLiveRecord(also: (s: PartitionLog) => number): number {
    let min = Infinity;
    for (const s of this.parts.values()) {
      const first = s.records[0];
      if (first !== undefined) min = Math.min(min, first);
      min = Math.min(min, also(s));
    }
    return min;
  }
}

function encodeOp(op: LogOp): Buffer[] {
  const p = op.partition;
  switch (op.kind) {
    case 'append':
      return op.entries.map((e) => packr.pack([APPEND, p, encodeEntry(e)]));
    case 'truncateFrom':
      return [packr.pack([TRUNC_FROM, p, op.fromSeq])];
    case 'truncateTo':
      return [packr.pack([TRUNC_TO, p, op.base.seq, op.base.epoch])];
    case 'setMeta':
      return [packr.pack([META, p, op.meta])];
    case 'drop':
      return [packr.pack([DROP, p])];
    case 'reset':
      return [packr.pack([RESET, p, op.at.seq, op.at.epoch])];
    default:
      return assertNever(op);
  }
}

const isUint = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

function decodeAppend(payload: Buffer, n: number): LogEntry {
  const t = unpack(payload, n);
  if (t[0] !== APPEND || !(t[2] instanceof Uint8Array)) throw new CorruptRecordError(`log record ${n} is not an entry`);
  return decodeEntry(Buffer.from(t[2]), `log record ${n}`, (b) => b);
}

function unpack(payload: Buffer, n: number): unknown[] {
  let t: unknown;
  try {
    t = packr.unpack(payload);
  } catch (err) {
    throw new CorruptRecordError(`log record ${n} does not decode`, { cause: err });
  }
  if (!Array.isArray(t) || !isUint(t[0]) || !isUint(t[1])) throw new CorruptRecordError(`log record ${n} is malformed`);
  return t;
}

/** Applies record `n` to `parts`; throws CorruptRecordError when it does not fit what is there. */
function replay(parts: Map<PartitionId, PartitionLog>, n: number, payload: Buffer): void {
  const t = unpack(payload, n);
  const kind = t[0] as number;
  const partition = t[1] as PartitionId;
  const current = parts.get(partition);
  const s: PartitionLog = current ?? fresh();
  const bad = (why: string): CorruptRecordError =>
    new CorruptRecordError(`log record ${n} (partition ${partition}): ${why} (S13)`);
  switch (kind) {
    case APPEND: {
      const entry = decodeAppend(payload, n);
      if (current === undefined && entry.seq > 1) {
        // Its earlier records were compacted away: the log held here starts at this entry.
        s.provisionalFrom = entry.seq;
        s.base = { seq: toSeq(entry.seq - 1), epoch: toEpoch(0) };
        s.last = s.base;
      }
      if (entry.seq !== s.last.seq + 1) throw bad(`entry ${entry.seq} does not follow ${s.last.seq}`);
      s.records.push(n);
      s.epochs.push(entry.epoch);
      s.last = { seq: entry.seq, epoch: entry.epoch };
      break;
    }
    case TRUNC_FROM: {
      const from = t[2];
      if (!isUint(from)) throw bad('a malformed truncation');
      if (from <= s.last.seq) {
        const keep = Math.max(0, from - s.base.seq - 1);
        s.records.length = keep;
        s.epochs.length = keep;
        s.last = keep === 0 ? s.base : { seq: toSeq(s.base.seq + keep), epoch: toEpoch(s.epochs[keep - 1] as number) };
      }
      break;
    }
    case TRUNC_TO:
    case RESET: {
      const [seq, ep] = [t[2], t[3]];
      if (!isUint(seq) || !isUint(ep)) throw bad('a malformed base');
      const base = { seq: toSeq(seq), epoch: toEpoch(ep) };
      // A truncation below the base is an earlier one whose record follows entries a later one
      // dropped (truncations are written after the applies below them): it changes nothing.
      if (kind === TRUNC_TO && seq < s.base.seq) break;
      if (kind === RESET || seq >= s.last.seq) {
        s.records = [];
        s.epochs = [];
        s.last = base;
      } else {
        const drop = Math.max(0, seq - s.base.seq);
        s.records.splice(0, drop);
        s.epochs.splice(0, drop);
      }
      s.base = base;
      s.baseRecord = n;
      break;
    }
    case META:
      if (typeof t[2] !== 'object' || t[2] === null) throw bad('malformed metadata');
      s.meta = t[2] as PartitionMeta;
      s.metaRecord = n;
      break;
    case DROP:
      parts.delete(partition);
      return;
    default:
      throw bad(`an unknown record kind ${kind}`);
  }
  parts.set(partition, s);
}

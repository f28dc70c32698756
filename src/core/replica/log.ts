/**
 * The in-memory tail of a partition's log: the entries after `base`, in seq order with no
 * gaps. The backend holds the same entries durably; this copy lets the core re-send,
 * compare (S1) and apply without reading storage.
 */
import { assert, type Epoch, type LogEntry, type Seq, epoch as toEpoch, seq as toSeq } from '../types.js';

export interface LogPosition {
  readonly seq: Seq;
  readonly epoch: Epoch;
}

export const ZERO_POSITION: LogPosition = { seq: toSeq(0), epoch: toEpoch(0) };

export class LogTail {
  private entries: LogEntry[] = [];
  private basePos: LogPosition;

  constructor(base: LogPosition = ZERO_POSITION, entries: readonly LogEntry[] = []) {
    this.basePos = base;
    for (const e of entries) this.append(e);
  }

  /** Position of the last entry dropped from the front (or of nothing: seq 0). */
  get base(): LogPosition {
    return this.basePos;
  }

  get lastSeq(): Seq {
    const last = this.entries[this.entries.length - 1];
    return last ? last.seq : this.basePos.seq;
  }

  get last(): LogPosition {
    const last = this.entries[this.entries.length - 1];
    return last ? { seq: last.seq, epoch: last.epoch } : this.basePos;
  }

  get length(): number {
    return this.entries.length;
  }

  /** The entry at `s`, or undefined when it is at/below the base or past the end. */
  at(s: Seq): LogEntry | undefined {
    if (s <= this.basePos.seq) return undefined;
    return this.entries[s - this.basePos.seq - 1];
  }

  /** The position of seq `s` when known: the base itself, or an entry in the tail. */
  positionAt(s: Seq): LogPosition | undefined {
    if (s === this.basePos.seq) return this.basePos;
    const e = this.at(s);
    return e ? { seq: e.seq, epoch: e.epoch } : undefined;
  }

  append(entry: LogEntry): void {
    assert(entry.seq === this.lastSeq + 1, `log append of seq ${entry.seq} after ${this.lastSeq}`);
    assert(entry.epoch >= this.last.epoch, 'log entry epochs never decrease');
    this.entries.push(entry);
  }

  /** Entries with fromSeq <= seq <= toSeq that are in the tail, at most `limit`. */
  slice(fromSeq: Seq, toSeq: Seq, limit: number): LogEntry[] {
    const from = Math.max(fromSeq, this.basePos.seq + 1) - this.basePos.seq - 1;
    const to = Math.min(toSeq, this.lastSeq) - this.basePos.seq;
    if (to <= from) return [];
    return this.entries.slice(from, Math.min(to, from + limit));
  }

  /** S1: drop the entries with seq >= fromSeq. */
  truncateFrom(fromSeq: Seq): void {
    assert(fromSeq > this.basePos.seq, 'truncating into the base');
    this.entries.length = Math.max(0, fromSeq - this.basePos.seq - 1);
  }

  /** S11: after installing a snapshot at `base`: an empty log starting there. */
  reset(base: LogPosition): void {
    this.entries = [];
    this.basePos = base;
  }

  /** S12: drop the entries with seq <= toSeq; the entry at toSeq becomes the base. */
  truncateTo(toSeq: Seq): void {
    if (toSeq <= this.basePos.seq) return;
    const pos = this.positionAt(toSeq);
    assert(pos !== undefined, 'truncating past the end of the log');
    this.entries.splice(0, toSeq - this.basePos.seq);
    this.basePos = pos;
  }
}

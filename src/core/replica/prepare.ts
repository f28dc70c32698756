/**
 * The secondary's (and learner's) side of the write path (§5.4, S1, S2): append prepares in
 * order after the entry they hold, truncate a conflicting suffix above the commit point, ack
 * what is durable and matched, apply what is committed.
 */
import { assert, type LogEntry, type NodeId, type Seq, seq as toSeq } from '../types.js';
import { applyUpTo, onTruncated, persistLog } from './apply.js';
import { adopt, rejectStale } from './configure.js';
import type { ReplicaOutput } from './io.js';
import type { PrepareMessage } from './messages.js';
import type { BatchOp } from './ops.js';
import { ack, nack } from './outputs.js';
import type { ReplicaState } from './state.js';

export function onPrepare(r: ReplicaState, from: NodeId, m: PrepareMessage, out: ReplicaOutput[]): void {
  if (m.config.epoch < r.epoch) return rejectStale(r, from, out);
  if (m.config.epoch > r.epoch) adopt(r, m.config, out);
  if (!r.active || (r.role !== 'secondary' && r.role !== 'learner') || m.config.primary !== from) return;
  if (r.installing) return; // S11: a snapshot is being installed; we ask for entries after it

  // S1: append only after the previous entry we hold (or at/below our commit point).
  const prevHeld = m.prev.seq <= r.commitSeq || r.log.positionAt(m.prev.seq)?.epoch === m.prev.epoch;
  if (!prevHeld) {
    // A gap: ask from our last entry on; the primary sends it as `prev`, which checks it
    // and, by S1, everything before it. A mismatch within our log: from our commit point.
    const needFromSeq =
      m.prev.seq > r.log.lastSeq ? toSeq(r.log.lastSeq + 1) : toSeq(Math.min(r.commitSeq + 1, r.matchedSeq + 1));
    out.push(nack(r, from, needFromSeq));
    return;
  }
  const appended: LogEntry[] = [];
  let truncatedFrom: Seq | undefined;
  let expected = m.prev.seq + 1;
  for (const entry of m.entries) {
    if (entry.seq !== expected) break; // malformed run: keep what is contiguous
    expected++;
    if (entry.seq <= r.log.base.seq) continue; // applied and dropped: held
    const held = r.log.at(entry.seq);
    if (held && held.epoch === entry.epoch) continue; // S1: a duplicate
    if (held) {
      // S1: a different entry at this seq: drop it and everything after it.
      if (entry.seq <= r.commitSeq) {
        out.push({
          kind: 'log',
          level: 'error',
          message: 'FATAL: conflicting entry at or below the commit point',
          fields: { partition: r.partition, seq: entry.seq, commitSeq: r.commitSeq },
        });
        assert(false, `S1: conflict at seq ${entry.seq} <= commitSeq ${r.commitSeq}`);
      }
      r.log.truncateFrom(entry.seq);
      truncatedFrom ??= entry.seq;
      onTruncated(r, entry.seq);
    }
    if (entry.seq !== r.log.lastSeq + 1) break;
    r.log.append(entry);
    appended.push(entry);
  }
  const coveredSeq = toSeq(expected - 1);
  if (coveredSeq > r.matchedSeq) r.matchedSeq = coveredSeq;
  if (m.commitSeq > r.primaryCommitSeq) r.primaryCommitSeq = m.commitSeq;

  if (truncatedFrom !== undefined || appended.length > 0) {
    const ops: BatchOp[] = [];
    if (truncatedFrom !== undefined)
      ops.push({ kind: 'truncateLogFrom', partition: r.partition, fromSeq: truncatedFrom });
    if (appended.length > 0) ops.push({ kind: 'appendLog', partition: r.partition, entries: appended });
    persistLog(r, ops, out);
  } else if ((m.entries.length > 0 || r.role === 'learner') && r.ackedSeq > 0) {
    // Entries we already hold: the primary is re-sending because our ack may be lost. A
    // learner also answers the idle commit-point prepare, so a primary that holds a
    // previous incarnation's acks (S7) learns ours.
    out.push(ack(r, from, r.ackedSeq));
  }
  ackAndApply(r, from, out);
}

/** Secondary: ack what we hold durably and match (S1), apply what is committed (S2). */
export function ackAndApply(r: ReplicaState, primary: NodeId, out: ReplicaOutput[]): void {
  if (r.installing) return; // S11: the snapshot replaces the log; nothing is acked or applied meanwhile
  const ackable = toSeq(Math.min(r.matchedSeq, r.durableSeq));
  if (ackable > r.ackedSeq) {
    r.ackedSeq = ackable;
    out.push(ack(r, primary, ackable));
  }
  // S2: apply only entries that are committed and that we acked to this primary.
  const target = toSeq(Math.min(r.primaryCommitSeq, r.ackedSeq));
  if (target > r.commitSeq) r.commitSeq = target;
  applyUpTo(r, target, out);
}

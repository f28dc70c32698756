/**
 * Learning by snapshot (S11, S12): the primary offers one to a learner whose entries it
 * truncated; the learner fetches and installs it, then asks for the entries after it.
 */
import { assert, type NodeId, seq as toSeq } from '../types.js';
import { keyName } from '../txn-keys.js';
import { adopt, failPending, rejectStale } from './configure.js';
import { relearnFromZero } from './corruption.js';
import type { ReplicaOutput } from './io.js';
import type { LogPosition } from './log.js';
import type { SnapshotOfferMessage } from './messages.js';
import type { DedupRecord } from './ops.js';
import { nack, send } from './outputs.js';
import type { PeerState, ReplicaState } from './state.js';

export function onSnapshotOffer(r: ReplicaState, from: NodeId, m: SnapshotOfferMessage, out: ReplicaOutput[]): void {
  if (m.config.epoch < r.epoch) return rejectStale(r, from, out);
  if (m.config.epoch > r.epoch) adopt(r, m.config, out);
  if (!r.active || r.role !== 'learner' || m.config.primary !== from || r.installing) return;
  if (r.matchedSeq >= m.logBase) {
    // A stale offer (re-ordered behind our later acks): we can go on from our log.
    out.push(nack(r, from, toSeq(r.matchedSeq + 1)));
    return;
  }
  r.installing = true;
  out.push({ kind: 'fetchSnapshot', from, epoch: r.epoch });
}

export function onSnapshotInstalled(
  r: ReplicaState,
  applied: LogPosition,
  dedup: readonly DedupRecord[],
  out: ReplicaOutput[],
  intents: readonly Uint8Array[] = [],
): void {
  r.installing = false;
  // The disk now holds the snapshot whatever happened meanwhile: mirror it. Nothing was
  // acked or applied while it was being installed (ackAndApply waits), and everything we
  // acked before is at or below `applied` (we took the offer only below the primary's log
  // base), so no acked entry is lost.
  assert(applied.seq >= r.appliedSeq, 'a snapshot older than the applied state');
  // The backend replaced data, dedup table and log atomically (S11); mirror it.
  r.log.reset(applied);
  r.appliedSeq = applied.seq;
  r.digestCapture = null; // S16: a capture under way was of the state the snapshot replaced
  r.commitSeq = applied.seq;
  r.durableSeq = applied.seq;
  r.persistedSeq = applied.seq;
  r.matchedSeq = applied.seq;
  r.ackedSeq = applied.seq;
  r.primaryCommitSeq = applied.seq;
  r.pendingDurable = [];
  r.dedup.clear();
  for (const d of dedup) r.dedup.set(d.clientId, { requestSeq: d.requestSeq, seq: d.seq });
  r.appliedIntents.clear();
  for (const k of intents) r.appliedIntents.add(keyName(k));
  out.push({
    kind: 'log',
    level: 'info',
    message: 'snapshot installed',
    fields: { partition: r.partition, appliedSeq: applied.seq },
  });
  // S13: made a learner while corrupt during the install: only now, with the install on
  // disk, is the partition dropped (in a batch after it) and relearned.
  if (r.relearnPending) return relearnFromZero(r, r.config!, out);
  if (r.active && r.role === 'primary') {
    // Made primary while installing: the log we took over with is gone. Step down; the
    // nameserver sees us inactive in this epoch and picks another primary (S4, S5).
    out.push({
      kind: 'log',
      level: 'error',
      message: 'became primary while a snapshot was being installed; stepping down',
      fields: { partition: r.partition, epoch: r.epoch },
    });
    failPending(r, out);
    r.active = false;
    r.role = 'inactive';
    r.peers.clear();
    return;
  }
  // Ask for the entries after the snapshot.
  if (r.active && r.config) out.push(nack(r, r.config.primary, toSeq(applied.seq + 1)));
}

/** S11: the learner's entries are gone from our log; it fetches a snapshot (re-offered on tick until it asks again). */
export function offerSnapshot(r: ReplicaState, to: NodeId, peer: PeerState, out: ReplicaOutput[]): void {
  peer.snapshotting = true;
  peer.lastSentMs = r.nowMs;
  out.push(
    send(r, to, {
      kind: 'snapshotOffer',
      partition: r.partition,
      config: r.config!,
      logBase: r.log.base.seq,
    }),
  );
}

/** S11: the fetch or the install failed: ask the primary again (or, S13, drop and relearn now). */
export function onSnapshotFailed(r: ReplicaState, reason: string, out: ReplicaOutput[]): void {
  r.installing = false;
  out.push({
    kind: 'log',
    level: 'warn',
    message: 'snapshot fetch failed; asking again',
    fields: { partition: r.partition, reason },
  });
  if (r.relearnPending) relearnFromZero(r, r.config!, out);
  else if (r.config && r.active && r.role === 'learner') out.push(nack(r, r.config.primary, toSeq(r.appliedSeq + 1)));
}

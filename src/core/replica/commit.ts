/**
 * The primary's side of the write path (§5.4, S7, S8): prepare acks and nacks from peers,
 * per incarnation, and the commit point: what every secondary and the primary's own disk
 * hold. Committed writes are answered here.
 */
import { assert, type NodeId, seq as toSeq } from '../types.js';
import { applyUpTo } from './apply.js';
import type { ReplicaOutput } from './io.js';
import { offerSnapshot } from './learn.js';
import type { PrepareAckMessage, PrepareNackMessage } from './messages.js';
import { maybePromote } from './promote.js';
import { serveConfirmedReads } from './reads.js';
import type { PeerState, ReplicaState } from './state.js';

export function onPrepareAck(r: ReplicaState, from: NodeId, m: PrepareAckMessage, out: ReplicaOutput[]): void {
  if (m.epoch !== r.epoch || r.role !== 'primary') return; // another configuration's ack
  const peer = r.peers.get(from);
  if (!peer) return;
  noteIncarnation(r, from, peer, m.incarnation);
  if (m.seq > peer.ackedSeq) {
    peer.ackedSeq = m.seq;
    peer.lastProgressMs = r.nowMs;
  }
  if (peer.sentSeq < peer.ackedSeq) peer.sentSeq = peer.ackedSeq;
  advanceCommit(r, out);
  maybePromote(r, out);
}

/**
 * S7, S11: acks count only for the incarnation that sent them. A peer that restarted lost
 * what it acked as a learner (it discards its log above its applied seq), so a new
 * incarnation starts from nothing, and a promotion it has not earned again is dropped.
 */
function noteIncarnation(r: ReplicaState, from: NodeId, peer: PeerState, incarnation: string): void {
  if (peer.incarnation === incarnation) return;
  if (peer.incarnation !== '') {
    peer.ackedSeq = toSeq(0);
    if (r.promotion?.learner === from && !r.promotion.requested) r.promotion = null;
  }
  peer.incarnation = incarnation;
}

export function onPrepareNack(r: ReplicaState, from: NodeId, m: PrepareNackMessage, out: ReplicaOutput[]): void {
  if (m.epoch !== r.epoch || r.role !== 'primary') return;
  const peer = r.peers.get(from);
  if (!peer) return;
  noteIncarnation(r, from, peer, m.incarnation);
  peer.lastProgressMs = r.nowMs;
  if (m.needFromSeq <= peer.ackedSeq) {
    // S1, S7: acks are cumulative; a peer asking again for what it acked no longer holds
    // it (it dropped the partition, S13). Count only what it acks from now on, and do not
    // promote it on the strength of the old acks. (A request already sent is fenced by
    // the epoch: a replica relearns from zero only under a new one.)
    out.push({
      kind: 'log',
      level: 'warn',
      message: 'a peer asks again for entries it acked; its acks count from there',
      fields: { partition: r.partition, peer: from, ackedSeq: peer.ackedSeq, needFromSeq: m.needFromSeq },
    });
    peer.ackedSeq = toSeq(m.needFromSeq - 1);
    if (r.promotion?.learner === from && !r.promotion.requested) r.promotion = null;
  }
  if (m.needFromSeq <= r.log.base.seq) {
    // S11, S12: the entries are gone from our log: the peer relearns from a snapshot.
    if (r.config!.learners.includes(from)) {
      offerSnapshot(r, from, peer, out);
    } else {
      out.push({
        kind: 'log',
        level: 'warn',
        message: 'a secondary needs truncated entries; it must be removed and relearn',
        fields: { partition: r.partition, peer: from, needFromSeq: m.needFromSeq, logBase: r.log.base.seq },
      });
    }
    return;
  }
  peer.snapshotting = false;
  peer.sentSeq = toSeq(Math.min(peer.sentSeq, m.needFromSeq - 1));
}

/** Primary: commit what every secondary and our own disk hold (§5.4, S8). */
export function advanceCommit(r: ReplicaState, out: ReplicaOutput[]): void {
  if (r.role !== 'primary' || !r.active) return;
  if (r.promotion?.requested) return; // S7: nothing commits until the outcome is known
  const config = r.config!;
  let candidate = Math.min(r.durableSeq, r.log.lastSeq);
  for (const s of config.secondaries) candidate = Math.min(candidate, r.peers.get(s)?.ackedSeq ?? 0);
  if (1 + config.secondaries.length < r.minWriteReplicas) {
    // S8: no client entry of this epoch commits on fewer disks. The epoch-start entry and
    // the reconciliation suffix before it may (S8's exception): those entries were
    // prepared by earlier primaries, whatever of them was acknowledged is committed
    // already, and committing them lets this primary serve reads and promote a learner
    // (the partition would otherwise stay stuck). No client waits on them (see adopt).
    candidate = Math.min(candidate, r.epochStartSeq);
  }
  if (candidate <= r.commitSeq) return;
  const before = r.commitSeq;
  r.commitSeq = toSeq(candidate);
  assert(r.commitSeq >= before, 'commit point moved back');
  assert(r.commitSeq <= r.log.lastSeq, 'committed past the log');
  applyUpTo(r, r.commitSeq, out);
  replyCommitted(r, out);
  serveConfirmedReads(r, out);
}

/**
 * Answers the committed writes. A delete's answer needs whether the key existed, so it waits
 * for its apply: applies can lag the commit point while a digest entry's state is captured (S16).
 */
export function replyCommitted(r: ReplicaState, out: ReplicaOutput[]): void {
  let kept = 0;
  for (const w of r.pendingWrites) {
    if (w.seq > r.commitSeq || (w.op !== 'put' && w.seq > r.appliedSeq)) {
      r.pendingWrites[kept++] = w;
      continue;
    }
    // A put's answer needs nothing from the apply; a delete's needs whether the key existed.
    out.push({
      kind: 'reply',
      requestId: w.requestId,
      result: { kind: 'written', seq: w.seq },
      immediate: w.op === 'put',
      op: w.op,
    });
  }
  r.pendingWrites.length = kept;
}

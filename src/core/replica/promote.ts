/**
 * Promotion (S7): the primary asks the nameserver to make a caught-up learner a secondary,
 * holding commits and read confirmations while the request is pending.
 */
import { type Config, type Epoch, seq as toSeq } from '../types.js';
import { advanceCommit } from './commit.js';
import { adopt } from './configure.js';
import type { ReplicaOutput } from './io.js';
import type { ReplicaState } from './state.js';

/** S7: a learner that acked everything up to our last prepared seq is caught up. */
export function maybePromote(r: ReplicaState, out: ReplicaOutput[]): void {
  if (r.role !== 'primary' || !r.serving || r.promotion?.requested) return;
  for (const learner of r.config!.learners) {
    const peer = r.peers.get(learner);
    if (!peer || peer.snapshotting || peer.incarnation === '') continue;
    if (peer.ackedSeq >= r.commitSeq && !r.promotion) {
      // Close enough: hold new writes so the last prepared seq stops moving.
      r.promotion = { learner, requested: false, sinceMs: r.nowMs };
    }
    if (r.promotion?.learner === learner && peer.ackedSeq >= r.log.lastSeq) {
      r.promotion.requested = true;
      out.push({ kind: 'requestPromotion', learner, learnerIncarnation: peer.incarnation, epoch: r.epoch });
      return;
    }
  }
}

export function onPromotionAnswered(r: ReplicaState, config: Config, requestEpoch: Epoch, out: ReplicaOutput[]): void {
  if (config.epoch > r.epoch) return adopt(r, config, out);
  // The answer to a request of an earlier epoch says nothing of the one now pending (S7).
  if (requestEpoch !== r.epoch) return;
  // Not applied (the partition moved on, we asked twice, or the learner restarted since
  // its acks, S7): carry on in this epoch, and count only the learner's next acks.
  const peer = r.promotion ? r.peers.get(r.promotion.learner) : undefined;
  if (peer && r.promotion?.requested) {
    peer.ackedSeq = toSeq(0);
    peer.incarnation = '';
  }
  r.promotion = null;
  advanceCommit(r, out);
}

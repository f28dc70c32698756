/**
 * Time passes (§4, S7, S11): resend what was not acked, re-offer snapshots, give up a promotion
 * that does not catch up, and ask the nameserver to remove a silent secondary.
 */
import { seq as toSeq } from '../types.js';
import { onFlush } from './flush.js';
import type { ReplicaOutput } from './io.js';
import { offerSnapshot } from './learn.js';
import { maybePromote } from './promote.js';
import type { ReplicaState } from './state.js';

export function onTick(r: ReplicaState, nowMs: number, out: ReplicaOutput[]): void {
  const sinceLastTickMs = nowMs - r.nowMs;
  r.nowMs = nowMs;
  if (!r.active || r.role !== 'primary') return;
  if (sinceLastTickMs > 3 * r.opts.resendAfterMs) {
    // We were paused (or starved): our peers' silence meanwhile says nothing about them.
    for (const peer of r.peers.values()) peer.lastHeardMs = nowMs;
  }
  maybeRequestRemoval(r, out);
  for (const [peerId, peer] of r.peers) {
    if (peer.snapshotting) {
      // S11: the offer, the fetch or the learner's next nack may have been lost: offer
      // again (a learner already installing ignores it).
      if (nowMs - peer.lastSentMs > 4 * r.opts.resendAfterMs) offerSnapshot(r, peerId, peer, out);
      continue;
    }
    const behind = peer.ackedSeq < r.log.lastSeq;
    if (behind && nowMs - peer.lastProgressMs > r.opts.resendAfterMs) {
      // A prepare or its ack may have been lost with a connection: send again from the ack.
      peer.sentSeq = toSeq(Math.max(peer.ackedSeq, r.log.base.seq));
      peer.sentCommitSeq = toSeq(0);
      peer.lastProgressMs = nowMs;
    }
  }
  if (r.promotion && !r.promotion.requested && nowMs - r.promotion.sinceMs > 10 * r.opts.resendAfterMs) {
    r.promotion = null; // the learner did not catch up while writes were held: let writes in, try later
  }
  maybePromote(r, out);
  if (r.roundInFlight && nowMs - r.roundInFlight.sentMs > r.opts.resendAfterMs) {
    r.roundInFlight = null; // its reads wait for the next round
  }
  onFlush(r, out, true);
}

/**
 * §4: a secondary we need an answer from (an ack, or a read confirmation) and have not
 * heard from for `removeSilentAfterMs` blocks every commit and read of this partition, yet
 * it may still heartbeat to the nameserver (a link cut between us): ask for its removal.
 * Asked again after another period if the nameserver did not act (it refuses below
 * --min-write-replicas, S8).
 */
function maybeRequestRemoval(r: ReplicaState, out: ReplicaOutput[]): void {
  const after = r.opts.removeSilentAfterMs ?? 0;
  if (after <= 0) return;
  for (const s of r.config!.secondaries) {
    const peer = r.peers.get(s);
    if (!peer) continue;
    const waitedOn = peer.ackedSeq < r.log.lastSeq || (r.roundInFlight !== null && !r.roundInFlight.acks.has(s));
    if (!waitedOn) {
      peer.waitingSinceMs = 0;
      continue;
    }
    if (peer.waitingSinceMs === 0) peer.waitingSinceMs = r.nowMs;
    // Silent while we waited: a caught-up secondary says nothing while the partition is idle.
    const silentMs = r.nowMs - Math.max(peer.lastHeardMs, peer.waitingSinceMs);
    if (silentMs < after || r.nowMs - peer.removalRequestedMs < after) continue;
    peer.removalRequestedMs = r.nowMs;
    out.push({
      kind: 'log',
      level: 'warn',
      message: 'asking the nameserver to remove a silent secondary',
      fields: { partition: r.partition, epoch: r.epoch, secondary: s, silentMs },
    });
    out.push({ kind: 'requestRemoval', secondary: s, epoch: r.epoch });
  }
}

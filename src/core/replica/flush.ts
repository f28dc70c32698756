/**
 * Flush (end of an event-loop turn, and every tick): the primary sends this turn's prepares
 * to every peer, bounded per turn (§6), persists its own log appends in parallel (§5.4), and
 * tells peers the commit point (S2): with the next prepare, or on a tick when there is none.
 */
import { type Config, type LogEntry, type NodeId, type Seq, seq as toSeq } from '../types.js';
import { persistLog } from './apply.js';
import { advanceCommit } from './commit.js';
import type { ReplicaOutput } from './io.js';
import { send } from './outputs.js';
import { startRoundIfNeeded } from './reads.js';
import type { PeerState, ReplicaState } from './state.js';

export function onFlush(r: ReplicaState, out: ReplicaOutput[], tick = false): void {
  if (!r.active || r.role !== 'primary') return;
  const config = r.config!;
  // Prepares go out before our own append is durable: the two proceed in parallel (§5.4).
  for (const [peerId, peer] of r.peers) sendPrepares(r, peerId, peer, config, out, tick);
  if (r.persistedSeq < r.log.lastSeq) {
    const entries = r.log.slice(toSeq(r.persistedSeq + 1), r.log.lastSeq, Number.MAX_SAFE_INTEGER);
    persistLog(r, [{ kind: 'appendLog', partition: r.partition, entries }], out);
  }
  startRoundIfNeeded(r, out);
  // A primary alone (R=1) commits on its own disk.
  advanceCommit(r, out);
}

function sendPrepares(
  r: ReplicaState,
  peerId: NodeId,
  peer: PeerState,
  config: Config,
  out: ReplicaOutput[],
  tick: boolean,
): void {
  if (peer.snapshotting) return;
  const limits = r.opts.limits;
  let rounds = 0;
  // Bounded per turn, so catching up a learner never starves live traffic (§6).
  while (peer.sentSeq < r.log.lastSeq && rounds++ < 4) {
    const prev = r.log.positionAt(peer.sentSeq);
    if (!prev) return; // below our log base: needs a snapshot (issue 3)
    const entries = boundedSlice(r, toSeq(peer.sentSeq + 1), limits.maxEntriesPerPrepare, limits.maxPrepareBytes);
    out.push(
      send(r, peerId, {
        kind: 'prepare',
        partition: r.partition,
        config,
        prev,
        entries,
        commitSeq: r.commitSeq,
      }),
    );
    peer.sentSeq = entries[entries.length - 1]!.seq;
    peer.sentCommitSeq = r.commitSeq;
    peer.lastSentMs = r.nowMs;
  }
  const idle = r.nowMs - peer.lastSentMs >= r.opts.resendAfterMs;
  if (peer.sentSeq >= r.log.lastSeq && ((tick && peer.sentCommitSeq < r.commitSeq) || idle)) {
    // S2: with nothing to prepare, still tell the replica the commit point, on the next tick
    // (a replica needs it only to apply, and nothing waits for a replica's apply: under load
    // the next prepare carries it, so a write costs no message of its own for it); and say
    // it again while idle, since it may have been lost (it also shows a peer that restarted
    // and lost entries where to ask from: it answers with a nack).
    out.push(
      send(r, peerId, {
        kind: 'prepare',
        partition: r.partition,
        config,
        prev: r.log.last,
        entries: [],
        commitSeq: r.commitSeq,
      }),
    );
    peer.sentCommitSeq = r.commitSeq;
    peer.lastSentMs = r.nowMs;
  }
}

function boundedSlice(r: ReplicaState, fromSeq: Seq, maxEntries: number, maxBytes: number): LogEntry[] {
  const candidates = r.log.slice(fromSeq, r.log.lastSeq, maxEntries);
  let bytes = 0;
  let n = 0;
  for (const e of candidates) {
    bytes += entryBytes(e);
    if (n > 0 && bytes > maxBytes) break;
    n++;
  }
  return candidates.slice(0, n);
}

export function entryBytes(e: LogEntry): number {
  const op = e.op;
  const payload = op.kind === 'put' ? op.key.length + op.value.length : op.kind === 'delete' ? op.key.length : 0;
  return payload + 32;
}

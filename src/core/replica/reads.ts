/**
 * Linearizable reads (§7): a read waits for a confirmation round sent after it arrived
 * (every secondary, or the nameserver when there is none) and for the commit point it
 * arrived at to be applied, then is served from the applied state.
 */
import { OverloadedError } from '../errors.js';
import type { Epoch, NodeId } from '../types.js';
import { refuseClient } from './client.js';
import { adopt, rejectStale } from './configure.js';
import type { ReplicaOutput, RequestId } from './io.js';
import type { ConfirmAckMessage, ConfirmMessage } from './messages.js';
import { errorReply, send } from './outputs.js';
import type { ReplicaState } from './state.js';

export function onClientRead(r: ReplicaState, requestId: RequestId, key: Uint8Array, out: ReplicaOutput[]): void {
  const refusal = refuseClient(r, 'read');
  if (refusal) return void out.push(errorReply(requestId, refusal));
  if (r.pendingReads.length >= r.opts.limits.maxPendingReads) {
    return void out.push(
      errorReply(
        requestId,
        new OverloadedError(`partition ${r.partition} has ${r.pendingReads.length} reads waiting`).toWire(),
      ),
    );
  }
  // §7: confirmed by a round sent after this read arrived.
  r.pendingReads.push({ requestId, key, round: r.nextRound, commitAtArrival: r.commitSeq });
}

export function onConfirm(r: ReplicaState, from: NodeId, m: ConfirmMessage, out: ReplicaOutput[]): void {
  if (m.config.epoch < r.epoch) return rejectStale(r, from, out);
  if (m.config.epoch > r.epoch) adopt(r, m.config, out);
  // A secondary confirms only while active at the same epoch with the sender as primary.
  if (!r.active || r.role !== 'secondary' || r.config?.primary !== from) return;
  out.push(send(r, from, { kind: 'confirmAck', partition: r.partition, epoch: r.epoch, round: m.round }));
}

export function onConfirmAck(r: ReplicaState, from: NodeId, m: ConfirmAckMessage, out: ReplicaOutput[]): void {
  if (m.epoch !== r.epoch || r.role !== 'primary' || r.roundInFlight?.round !== m.round) return;
  r.roundInFlight.acks.add(from);
  if (r.config!.secondaries.every((s) => r.roundInFlight!.acks.has(s))) finishRound(r, out);
}

function finishRound(r: ReplicaState, out: ReplicaOutput[]): void {
  if (r.promotion?.requested) return; // S7: confirm no reads until the outcome is known
  const round = r.roundInFlight!.round;
  r.roundInFlight = null;
  r.confirmedRound = Math.max(r.confirmedRound, round);
  serveConfirmedReads(r, out);
}

export function serveConfirmedReads(r: ReplicaState, out: ReplicaOutput[]): void {
  if (!r.serving) return;
  let kept = 0;
  for (const read of r.pendingReads) {
    if (read.round <= r.confirmedRound && r.appliedSeq >= read.commitAtArrival) {
      if (read.failure !== undefined) out.push(errorReply(read.requestId, read.failure));
      else out.push({ kind: 'read', requestId: read.requestId, key: read.key });
    } else {
      r.pendingReads[kept++] = read;
    }
  }
  r.pendingReads.length = kept;
}

export function startRoundIfNeeded(r: ReplicaState, out: ReplicaOutput[]): void {
  if (r.roundInFlight || !r.serving) return;
  if (!r.pendingReads.some((read) => read.round > r.confirmedRound)) return;
  const round = r.nextRound++;
  r.roundInFlight = { round, acks: new Set(), sentMs: r.nowMs };
  const config = r.config!;
  if (config.secondaries.length === 0) {
    out.push({ kind: 'confirmWithNameserver', round, epoch: r.epoch });
    return;
  }
  for (const s of config.secondaries) out.push(send(r, s, { kind: 'confirm', partition: r.partition, config, round }));
}

/** §7: with no secondaries, the nameserver confirms the round: `epoch` is still current. */
export function onNameserverConfirmed(r: ReplicaState, round: number, epoch: Epoch, out: ReplicaOutput[]): void {
  if (r.roundInFlight?.round === round && epoch === r.epoch) finishRound(r, out);
}

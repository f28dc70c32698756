/**
 * The replica state machine of one partition on one storage server (DESIGN §5–§7, S1–S8).
 *
 * Role: as primary it orders client writes into log entries, prepares them on every
 * secondary, commits an entry once every secondary and its own disk hold it, applies it and
 * answers the client; it serves linearizable reads after a confirmation round. As secondary
 * it appends prepares in order, acks what it holds durably, and applies what is committed.
 *
 * Inputs: messages from peers, client requests, the nameserver's configurations, completed
 * storage writes (`persisted`), `flush` (end of an event-loop turn: send what accumulated)
 * and `tick` (time passes: resend what was not acked).
 * Outputs: `persist` (storage batch ops, executed in order), `send`, `reply`, `read`.
 *
 * Output ordering contract with the driver: outputs of one partition are executed in order;
 * a `persist` is asynchronous, and every later output not marked `immediate` waits until it
 * is durable. This is what makes "persist the epoch before sending under it" (S3), "reply
 * to a delete after applying it" and "read after applying" hold without more machinery.
 *
 * Invariants (asserted): commitSeq never moves back, never passes the log's end; applied
 * state only holds committed entries (S2); nothing at or below the commit point is ever
 * truncated (S1).
 *
 * Corruption (S13): when the driver finds a record of the partition corrupt (a stored value
 * failed its checksum on a read, a log record at open: input `corrupt`, or
 * `ReplicaRecovery.corrupt`), the replica steps out at once: it answers, acks and confirms
 * nothing (inactive), fails what waited on it as primary, and reports `corrupt` in its
 * progress, so the nameserver takes it out of its configuration (another member takes over
 * as primary, S5) and adds it back as a learner. Its data stays on disk, never served, until
 * then: only a configuration of a higher epoch that makes it a learner makes it drop the
 * partition (data, log, dedup table, in one batch with the new epoch) and relearn it from
 * zero (S11); never one of the epoch it found the corruption in, where its old acks and a
 * promotion request based on them may still count (S7). So a partition no healthy member
 * can supply stays unavailable rather than losing anything more. The reason is persisted in
 * the partition's metadata (and reported only once durable), so a restart before the drop
 * comes back corrupt; a snapshot install still running delays the drop until it ended.
 *
 * Layout: `Replica` is the facade the drivers use (`step`, `progress`, and the state they
 * read); it dispatches each input to the module of its concern, all acting on one state
 * object (state.ts): configure.ts (configurations, S3/S4/S6), corruption.ts (S13),
 * client.ts (client writes and refusals), flush.ts (sending prepares), prepare.ts (the
 * secondary's side of the write path), commit.ts (the primary's side), apply.ts
 * (durability, apply, log truncation S12), reads.ts (§7), learn.ts (snapshots, S11),
 * promote.ts (S7), tick.ts (resends, removals), outputs.ts (output builders), io.ts (the
 * types of the interface with the driver).
 */
import { assertNever, type NodeId } from '../types.js';
import { onDigestCaptured, onPersisted } from './apply.js';
import { onClientWrite } from './client.js';
import { onPrepareAck, onPrepareNack } from './commit.js';
import { onConfigure, onStaleEpoch } from './configure.js';
import { onCorrupt } from './corruption.js';
import { onFlush } from './flush.js';
import type { ReplicaInput, ReplicaOutput, ReplicaProgress } from './io.js';
import { onSnapshotFailed, onSnapshotInstalled, onSnapshotOffer } from './learn.js';
import type { PeerMessage } from './messages.js';
import { onPrepare } from './prepare.js';
import { onPromotionAnswered } from './promote.js';
import { onClientRead, onConfirm, onConfirmAck, onNameserverConfirmed } from './reads.js';
import { ReplicaState } from './state.js';
import { onTick } from './tick.js';

export { entryBytes } from './flush.js';
export type {
  ReplicaInput,
  ReplicaOptions,
  ReplicaOutput,
  ReplicaProgress,
  ReplicaRecovery,
  RequestId,
} from './io.js';

/**
 * One partition's replica: `step` takes an input and returns the outputs, in the order the
 * driver executes them (file comment); `progress` is what heartbeats report.
 */
export class Replica extends ReplicaState {
  step(input: ReplicaInput): ReplicaOutput[] {
    const out: ReplicaOutput[] = [];
    switch (input.kind) {
      case 'configure':
        onConfigure(this, input.config, out);
        break;
      case 'peer':
        this.onPeerMessage(input.from, input.message, out);
        break;
      case 'clientWrite':
        onClientWrite(this, input.requestId, input.op, input.tag, out, input.condition, input.sys === true);
        break;
      case 'clientRead':
        onClientRead(this, input.requestId, input.key, out);
        break;
      case 'persisted':
        onPersisted(this, input.writeId, out);
        break;
      case 'nameserverConfirmed':
        onNameserverConfirmed(this, input.round, input.epoch, out);
        break;
      case 'promotionAnswered':
        onPromotionAnswered(this, input.config, input.epoch, out);
        break;
      case 'snapshotInstalled':
        onSnapshotInstalled(this, input.applied, input.dedup, out, input.intents);
        break;
      case 'corrupt':
        onCorrupt(this, input.reason, out);
        break;
      case 'snapshotFailed':
        onSnapshotFailed(this, input.reason, out);
        break;
      case 'digestCaptured':
        onDigestCaptured(this, input.seq, out);
        break;
      case 'flush':
        onFlush(this, out);
        break;
      case 'tick':
        onTick(this, input.nowMs, out);
        break;
      default:
        assertNever(input);
    }
    return out;
  }

  private onPeerMessage(from: NodeId, message: PeerMessage, out: ReplicaOutput[]): void {
    const peer = this.role === 'primary' ? this.peers.get(from) : undefined;
    if (peer) peer.lastHeardMs = this.nowMs;
    switch (message.kind) {
      case 'prepare':
        return onPrepare(this, from, message, out);
      case 'prepareAck':
        return onPrepareAck(this, from, message, out);
      case 'prepareNack':
        return onPrepareNack(this, from, message, out);
      case 'staleEpoch':
        return onStaleEpoch(this, message, out);
      case 'confirm':
        return onConfirm(this, from, message, out);
      case 'confirmAck':
        return onConfirmAck(this, from, message, out);
      case 'snapshotOffer':
        return onSnapshotOffer(this, from, message, out);
      default:
        return assertNever(message);
    }
  }

  /** A summary for heartbeats and `nodes`. */
  progress(): ReplicaProgress {
    return {
      partition: this.partition,
      epoch: this.epoch,
      role: this.active ? this.role : 'inactive',
      lastSeq: this.log.lastSeq,
      lastEpoch: this.log.last.epoch,
      commitSeq: this.commitSeq,
      appliedSeq: this.appliedSeq,
      serving: this.serving,
      // S13: said once the marker is durable (see onCorrupt).
      ...(this.corrupt !== undefined && this.corruptReported ? { corrupt: true } : {}),
    };
  }
}

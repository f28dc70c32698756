/**
 * Configurations (S3, S4, S6): adopt a configuration from the nameserver or a peer, persist
 * its epoch before acting under it, take the role it gives (a new primary prepares its
 * epoch-start entry), and end what waited on the replica when its epoch ends.
 */
import { NotPrimaryError, OutcomeUnknownError, UnavailableError } from '../errors.js';
import { assert, type Config, type LogEntry, type NodeId, type Role, roleIn, seq as toSeq } from '../types.js';
import { onTruncated, persistLog } from './apply.js';
import { relearnFromZero } from './corruption.js';
import { onFlush } from './flush.js';
import type { ReplicaOutput } from './io.js';
import type { StaleEpochMessage } from './messages.js';
import type { BatchOp } from './ops.js';
import { errorReply, nack, send } from './outputs.js';
import type { ReplicaState } from './state.js';

export function onConfigure(r: ReplicaState, config: Config, out: ReplicaOutput[]): void {
  assert(config.partition === r.partition, 'configuration for another partition');
  if (config.epoch < r.epoch) return; // stale: the nameserver will push the newer one
  // S13: a corrupt replica relearns from zero only under a configuration of a higher epoch
  // (adopt), never in the epoch it found the corruption in: there the primary may still
  // count what this replica acked before it dropped the partition, and a promotion request
  // naming it may be on its way to the nameserver (S7). A new epoch voids both.
  if (config.epoch === r.epoch && r.corrupt !== undefined) return;
  if (config.epoch === r.epoch && r.active) return; // already in effect
  if (config.epoch === r.epoch) {
    // S4: after a restart only a secondary or learner may resume in the same epoch; a
    // restarted primary stays inactive until the nameserver makes a new epoch.
    const role = roleIn(config, r.node);
    if (role === 'secondary' || role === 'learner') {
      r.config = config;
      becomeActive(r, role, out);
    }
    return;
  }
  adopt(r, config, out);
}

/** S3: adopt a higher-epoch configuration: persist it, then act under it. */
export function adopt(r: ReplicaState, config: Config, out: ReplicaOutput[]): void {
  assert(config.epoch > r.epoch, 'adopting an older configuration');
  const role = roleIn(config, r.node);
  if (r.corrupt !== undefined) {
    r.relearnPending = false;
    // S13: a snapshot fetch still running would install after the drop: wait for it.
    if (role === 'learner' && !r.installing) return relearnFromZero(r, config, out);
    // S13: any other role waits (the nameserver takes us out); the epoch is still ours (S3).
    r.epoch = config.epoch;
    r.config = config;
    persistMeta(r, out);
    if (role === 'learner') {
      r.relearnPending = true;
      out.push({
        kind: 'log',
        level: 'info',
        message: 'corrupt partition: a snapshot install is still running; it is dropped once that ends (S13)',
        fields: { partition: r.partition, epoch: r.epoch },
      });
    }
    return;
  }
  const belowMinWrite = 1 + config.secondaries.length < r.minWriteReplicas;
  const stayPrimary = r.active && r.role === 'primary' && role === 'primary';
  // A primary that stays primary keeps its log and its waiting writes: they commit with
  // the new epoch-start entry. Anything else ends what waited on this replica, and so does
  // a configuration below --min-write-replicas. There the epoch-start entry and what
  // precedes it commit on this disk alone (see advanceCommit): DESIGN S8 lets only a *new*
  // primary's reconciliation suffix do so, and would have a staying primary's waiting
  // writes wait for a new secondary; but then the partition could neither serve reads nor
  // promote a learner (C1). Instead no client learns the outcome of those writes (unknown;
  // a retry is refused until the partition has enough members again, then answered from
  // the dedup table, S10), so nothing is acknowledged on fewer disks than S8 asks.
  if (stayPrimary && belowMinWrite) failPending(r, out, true);
  if (!stayPrimary) {
    failPending(r, out);
    // Entries appended as primary but never sent nor persisted are not committed: drop them.
    if (r.persistedSeq < r.log.lastSeq) r.log.truncateFrom(toSeq(r.persistedSeq + 1));
  }
  r.promotion = null;
  r.epoch = config.epoch;
  r.config = config;
  persistMeta(r, out);
  // Acks and matches are per epoch: only what is committed is known to match the new primary.
  r.matchedSeq = r.commitSeq;
  r.ackedSeq = r.commitSeq;
  r.primaryCommitSeq = r.commitSeq;
  becomeActive(r, role, out);
}

/**
 * S3: persist the epoch and configuration; sends wait for it. S13: a corrupt replica's
 * metadata carries the corrupt marker, so a restart before the drop comes back corrupt.
 */
export function persistMeta(r: ReplicaState, out: ReplicaOutput[], extra: readonly BatchOp[] = []): void {
  const meta =
    r.corrupt === undefined
      ? { epoch: r.epoch, config: r.config }
      : { epoch: r.epoch, config: r.config, corrupt: r.corrupt };
  r.metaDurable = false;
  r.metaWriteId = r.nextWriteId++;
  if (r.corrupt !== undefined && r.corruptMarkWriteId === 0) r.corruptMarkWriteId = r.metaWriteId;
  out.push({
    kind: 'persist',
    ops: [...extra, { kind: 'setMeta', partition: r.partition, meta }],
    writeId: r.metaWriteId,
  });
}

export function becomeActive(r: ReplicaState, role: Role, out: ReplicaOutput[]): void {
  r.role = role;
  r.active = role !== 'inactive';
  if (r.active) r.activatedOnce = true;
  r.peers.clear();
  r.roundInFlight = null;
  r.epochStartSeq = toSeq(0);
  if (role === 'learner' && r.log.lastSeq > r.appliedSeq && !r.installing) {
    // S11: a learner keeps only what it applied; the primary re-sends the rest.
    r.log.truncateFrom(toSeq(r.appliedSeq + 1));
    onTruncated(r, toSeq(r.appliedSeq + 1));
    persistLog(r, [{ kind: 'truncateLogFrom', partition: r.partition, fromSeq: toSeq(r.appliedSeq + 1) }], out);
    r.commitSeq = r.appliedSeq;
    r.matchedSeq = r.appliedSeq;
    r.ackedSeq = r.appliedSeq;
    r.primaryCommitSeq = r.appliedSeq;
  }
  if (role === 'learner' && !r.installing) {
    // S11: tell the primary who we are (incarnation) and where we are (applied seq); it
    // forgets whatever an earlier incarnation of us acked.
    out.push(nack(r, r.config!.primary, toSeq(r.log.lastSeq + 1)));
  }
  if (role !== 'primary') return;
  const config = r.config!;
  for (const peer of [...config.secondaries, ...config.learners]) {
    // Unknown progress: start from our commit point; a nack moves it back (S1).
    r.peers.set(peer, {
      ackedSeq: toSeq(0),
      sentSeq: r.commitSeq,
      sentCommitSeq: toSeq(0),
      lastProgressMs: r.nowMs,
      snapshotting: false,
      lastSentMs: r.nowMs,
      incarnation: '',
      lastHeardMs: r.nowMs,
      removalRequestedMs: 0,
      waitingSinceMs: 0,
    });
  }
  // S6: prepare an epoch-start entry after the last entry; it commits everything before it.
  const entry: LogEntry = { epoch: r.epoch, seq: toSeq(r.log.lastSeq + 1), op: { kind: 'epochStart' } };
  r.log.append(entry);
  r.epochStartSeq = entry.seq;
  out.push({
    kind: 'log',
    level: 'info',
    message: 'became primary',
    fields: { partition: r.partition, epoch: r.epoch, epochStartSeq: entry.seq, commitSeq: r.commitSeq },
  });
  onFlush(r, out);
}

/**
 * Everything waiting on this replica as primary ends when its epoch ends (or, `stillPrimary`,
 * when it shrinks below --min-write-replicas).
 */
export function failPending(r: ReplicaState, out: ReplicaOutput[], stillPrimary = false): void {
  for (const w of r.pendingWrites) {
    // S9: the entry was sent to replicas (or may have been): the outcome is unknown.
    const why = stillPrimary
      ? `partition ${r.partition} fell below --min-write-replicas before write ${w.seq} committed`
      : `primary of partition ${r.partition} lost its role before write ${w.seq} committed`;
    out.push(errorReply(w.requestId, new OutcomeUnknownError(why).toWire()));
  }
  for (const read of r.pendingReads) {
    const error = stillPrimary
      ? new UnavailableError(`partition ${r.partition} is reconfiguring; retry`)
      : new NotPrimaryError(`not primary of partition ${r.partition} any more`);
    out.push(errorReply(read.requestId, error.toWire()));
  }
  r.pendingWrites = [];
  r.pendingReads = [];
}

/** S3: a message from an older configuration is rejected with ours. */
export function rejectStale(r: ReplicaState, to: NodeId, out: ReplicaOutput[]): void {
  if (r.config) out.push(send(r, to, { kind: 'staleEpoch', partition: r.partition, config: r.config }));
}

export function onStaleEpoch(r: ReplicaState, m: StaleEpochMessage, out: ReplicaOutput[]): void {
  if (m.config.epoch > r.epoch && m.config.partition === r.partition) adopt(r, m.config, out);
}

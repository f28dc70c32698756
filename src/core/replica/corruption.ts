/**
 * Corruption (S13): step out of the configuration when a record of the partition failed its
 * checksum, and, made a learner under a higher epoch, drop the partition to relearn it from
 * zero (S11). See the file comment of replica.ts for the whole rule.
 */
import { assert, type Config, seq as toSeq } from '../types.js';
import { becomeActive, failPending, persistMeta } from './configure.js';
import type { ReplicaOutput } from './io.js';
import { ZERO_POSITION } from './log.js';
import type { ReplicaState } from './state.js';

/** S13: a record of the partition failed its checksum: step out (file comment). */
export function onCorrupt(r: ReplicaState, reason: string, out: ReplicaOutput[]): void {
  if (r.corrupt !== undefined) return;
  r.corrupt = reason;
  out.push({
    kind: 'log',
    level: 'error',
    message:
      'partition corrupt (S13): stepping out of its configuration; it relearns the partition from a healthy member',
    fields: { partition: r.partition, epoch: r.epoch, role: r.active ? r.role : 'inactive', reason },
  });
  // S13: the marker is persisted before the nameserver hears of it (progress reports
  // `corrupt` once it is durable): a restart must not bring the bad copy back as healthy.
  persistMeta(r, out);
  // S9: writes sent to replicas may still commit under the next primary: unknown. Reads
  // get a retryable NOT_PRIMARY, so the client refreshes its map and reads elsewhere.
  failPending(r, out);
  r.active = false;
  r.role = 'inactive';
  r.peers.clear();
  r.roundInFlight = null;
  r.promotion = null;
  r.epochStartSeq = toSeq(0);
}

/**
 * S13, S11: made a learner, a corrupt replica drops the partition (data, log, dedup table)
 * and persists the new configuration in the same batch, then learns it from zero. Only
 * now: until a healthy member serves the partition its own copy was all there was.
 */
export function relearnFromZero(r: ReplicaState, config: Config, out: ReplicaOutput[]): void {
  assert(config.epoch >= r.epoch, 'relearning under an older configuration');
  assert(!r.installing, 'S13: dropping a partition while a snapshot is being installed');
  out.push({
    kind: 'log',
    level: 'warn',
    message: 'dropping the corrupt partition to relearn it as a learner (S13, S11)',
    fields: { partition: r.partition, epoch: config.epoch, primary: config.primary, reason: r.corrupt },
  });
  r.corrupt = undefined;
  r.corruptMarkWriteId = 0;
  r.corruptReported = false;
  r.relearnPending = false;
  failPending(r, out);
  r.log.reset(ZERO_POSITION);
  r.appliedSeq = toSeq(0);
  r.commitSeq = toSeq(0);
  r.durableSeq = toSeq(0);
  r.persistedSeq = toSeq(0);
  r.matchedSeq = toSeq(0);
  r.ackedSeq = toSeq(0);
  r.primaryCommitSeq = toSeq(0);
  r.pendingDurable = [];
  r.dedup.clear();
  r.appliedIntents.clear();
  r.installing = false;
  r.digestCapture = null;
  r.promotion = null;
  r.epoch = config.epoch;
  r.config = config;
  // One batch: the drop, the new epoch and (no marker) the end of the corruption.
  persistMeta(r, out, [{ kind: 'dropPartition', partition: r.partition }]);
  becomeActive(r, 'learner', out);
}

/**
 * Durability and apply (S2): log writes and what they make durable once `persisted`, the
 * effect of a truncation on the durable notions above it, and applying committed entries to
 * the data and the dedup table (S10), and truncating the log below what every replica
 * applied (S12).
 */
import { isIntentKey, keyName, userKeyOfIntent } from '../txn-keys.js';
import { assert, isDataOp, type Seq, seq as toSeq } from '../types.js';
import { advanceCommit, replyCommitted } from './commit.js';
import type { ReplicaOutput } from './io.js';
import type { BatchOp } from './ops.js';
import { ackAndApply } from './prepare.js';
import { serveConfirmedReads } from './reads.js';
import type { ReplicaState } from './state.js';

export function persistLog(r: ReplicaState, ops: BatchOp[], out: ReplicaOutput[]): void {
  const writeId = r.nextWriteId++;
  r.pendingDurable.push({ writeId, upToSeq: r.log.lastSeq });
  r.persistedSeq = r.log.lastSeq;
  out.push({ kind: 'persist', ops, writeId });
}

export function onPersisted(r: ReplicaState, writeId: number, out: ReplicaOutput[]): void {
  if (writeId === r.metaWriteId) r.metaDurable = true;
  if (r.corruptMarkWriteId !== 0 && writeId >= r.corruptMarkWriteId) r.corruptReported = true;
  while (r.pendingDurable.length > 0 && r.pendingDurable[0]!.writeId <= writeId) {
    const p = r.pendingDurable.shift()!;
    if (p.upToSeq > r.durableSeq) r.durableSeq = p.upToSeq;
  }
  if (!r.active) return;
  if (r.role === 'primary') advanceCommit(r, out);
  else if (r.config) ackAndApply(r, r.config.primary, out);
}

/** A truncation makes un-synced notions of durability above it void. */
export function onTruncated(r: ReplicaState, fromSeq: Seq): void {
  const below = toSeq(fromSeq - 1);
  if (r.durableSeq > below) r.durableSeq = below;
  if (r.persistedSeq > below) r.persistedSeq = below;
  if (r.matchedSeq > below) r.matchedSeq = below;
  for (const p of r.pendingDurable) if (p.upToSeq > below) p.upToSeq = below;
}

export function applyUpTo(r: ReplicaState, target: Seq, out: ReplicaOutput[]): void {
  if (r.digestCapture !== null) return; // S16: the state at a digest entry is being captured
  if (target <= r.appliedSeq) return;
  assert(target <= r.commitSeq, 'S2: applying past the commit point');
  let entries = r.log.slice(toSeq(r.appliedSeq + 1), target, Number.MAX_SAFE_INTEGER);
  assert(entries.length === target - r.appliedSeq, 'applying entries missing from the log');
  // S16: stop at a digest entry; the driver captures the state there before anything later.
  const at = entries.findIndex((e) => e.op.kind === 'digest');
  const digest = at >= 0 ? entries[at]! : undefined;
  if (digest !== undefined) entries = entries.slice(0, at + 1);
  r.appliedSeq = entries[entries.length - 1]!.seq;
  for (const e of entries) {
    if (e.tag) r.dedup.set(e.tag.clientId, { requestSeq: e.tag.requestSeq, seq: e.seq });
    const op = e.op;
    if (isDataOp(op) && isIntentKey(op.key)) {
      // §16: the applied intents, for the check of user writes (client.ts hasIntent).
      const name = keyName(userKeyOfIntent(op.key));
      if (op.kind === 'put') r.appliedIntents.add(name);
      else r.appliedIntents.delete(name);
    }
  }
  out.push({ kind: 'persist', ops: [{ kind: 'apply', partition: r.partition, entries }], lazy: true });
  if (digest !== undefined && digest.op.kind === 'digest') {
    r.digestCapture = digest.seq;
    out.push({ kind: 'captureDigest', seq: digest.seq, buckets: digest.op.buckets });
  }
  maybeTruncate(r, out);
}

/**
 * S16: the driver holds the state at digest entry `seq`; apply what is committed past it. A
 * capture of a state since replaced (a snapshot installed, the partition dropped) is ignored.
 */
export function onDigestCaptured(r: ReplicaState, seq: Seq, out: ReplicaOutput[]): void {
  if (r.digestCapture !== seq) return;
  r.digestCapture = null;
  if (!r.active || r.installing) return;
  if (r.role === 'primary') {
    applyUpTo(r, r.commitSeq, out);
    replyCommitted(r, out);
    serveConfirmedReads(r, out);
  } else if (r.config) ackAndApply(r, r.config.primary, out);
}

/** S12: drop log entries every replica has applied, keeping a tail for laggards. */
function maybeTruncate(r: ReplicaState, out: ReplicaOutput[]): void {
  const retain = r.opts.limits.logRetainEntries;
  let point: number = r.appliedSeq;
  if (r.role === 'primary') for (const p of r.peers.values()) point = Math.min(point, p.ackedSeq);
  const target = toSeq(point - retain);
  if (target - r.log.base.seq < retain) return; // truncate in chunks, not per entry
  const base = r.log.positionAt(target);
  if (!base) return;
  r.log.truncateTo(target);
  out.push({ kind: 'persist', ops: [{ kind: 'truncateLogTo', partition: r.partition, base }], lazy: true });
}

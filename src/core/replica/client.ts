/**
 * Client writes (S8, S10): refuse what this replica may not accept (not primary, taking
 * over, corrupt, too few replicas, promoting, too many waiting), answer a retry from the
 * dedup table, and append the rest to the log for the next flush.
 */
import {
  type WireError,
  ConditionFailedError,
  InvalidArgumentError,
  KeyLockedError,
  NotPrimaryError,
  OverloadedError,
  UnavailableError,
} from '../errors.js';
import {
  type LogEntry,
  type Op,
  type RequestTag,
  type Seq,
  type WriteCondition,
  bytesEqual,
  expired,
  isDataOp,
  seq as toSeq,
} from '../types.js';
import { intentKey, isIntentKey, isReserved, keyName } from '../txn-keys.js';
import type { ReplicaOutput, RequestId } from './io.js';
import { errorReply } from './outputs.js';
import type { ReplicaState } from './state.js';

export function onClientWrite(
  r: ReplicaState,
  requestId: RequestId,
  op: Op,
  tag: RequestTag | undefined,
  out: ReplicaOutput[],
  condition?: WriteCondition,
  sys = false,
): void {
  const refusal = refuseClient(r, 'write');
  if (refusal) return void out.push(errorReply(requestId, refusal));
  if (op.kind === 'epochStart')
    return void out.push(errorReply(requestId, new UnavailableError('not a client operation').toWire()));
  if (tag) {
    // S10: a retry of a request we applied gets the original result, never a re-execution.
    const done = r.dedup.get(tag.clientId);
    if (done && done.requestSeq === tag.requestSeq) {
      return void out.push({
        kind: 'reply',
        requestId,
        result: { kind: 'written', seq: done.seq },
        immediate: op.kind === 'put',
        op: op.kind,
        duplicateOf: tag.clientId,
      });
    }
    if (done && done.requestSeq > tag.requestSeq) {
      return void out.push(
        errorReply(
          requestId,
          new InvalidArgumentError(
            `request ${tag.requestSeq} of client ${tag.clientId} ` +
              `is older than its last applied request ${done.requestSeq}`,
          ).toWire(),
        ),
      );
    }
    // A retry of a request still in the log waits for that entry.
    const inFlight = r.pendingWrites.find(
      (w) => w.tag?.clientId === tag.clientId && w.tag.requestSeq === tag.requestSeq,
    );
    if (inFlight) return void r.pendingWrites.push({ seq: inFlight.seq, requestId, op: inFlight.op, tag });
    // Or in the log but not applied yet (an earlier primary's entry, or one answered while
    // applies wait on a digest capture, S16): the dedup table does not know it yet.
    const logged = unappliedEntryOf(r, tag);
    if (logged && logged.op.kind !== 'epochStart')
      return void r.pendingWrites.push({ seq: logged.seq, requestId, op: logged.op.kind, tag });
  }
  if (r.promotion) {
    return void out.push(
      errorReply(
        requestId,
        new UnavailableError(`partition ${r.partition} is promoting a learner (S7); retry`).toWire(),
      ),
    );
  }
  if (r.pendingWrites.length >= r.opts.limits.maxPendingWrites) {
    return void out.push(
      errorReply(
        requestId,
        new OverloadedError(`partition ${r.partition} has ${r.pendingWrites.length} writes waiting`).toWire(),
      ),
    );
  }
  if (!sys && isDataOp(op) && hasIntent(r, op.key)) {
    // §16: a transaction holds the key; its own resolution writes are `sys`.
    const hex = [...op.key].map((b) => b.toString(16).padStart(2, '0')).join('');
    const error = new KeyLockedError(`a transaction holds the key (its intent is on it); retry once resolved`, hex);
    return void out.push(errorReply(requestId, error.toWire()));
  }
  if (condition) {
    const refusal = checkCondition(r, op, condition);
    if (refusal?.answerAt === undefined) {
      if (refusal) out.push(errorReply(requestId, refusal.error));
    } else {
      // §16: a failed condition is an observation of the key, answered like a read: after a
      // confirmation round sent now (a deposed primary cannot pass it) and once the entry
      // that decided it is committed (an entry of the tail that is never committed must not
      // fail anyone's condition: seeds 717 and 737 of the simulator's bank).
      r.pendingReads.push({
        requestId,
        key: op.kind === 'put' || op.kind === 'delete' ? op.key : new Uint8Array(0),
        round: r.nextRound,
        commitAtArrival: toSeq(Math.max(r.commitSeq, refusal.answerAt)),
        failure: refusal.error,
      });
    }
    if (refusal) return;
  }
  const entry: LogEntry = tag
    ? { epoch: r.epoch, seq: toSeq(r.log.lastSeq + 1), op, tag }
    : { epoch: r.epoch, seq: toSeq(r.log.lastSeq + 1), op };
  r.log.append(entry);
  r.pendingWrites.push(
    tag ? { seq: entry.seq, requestId, op: op.kind, tag } : { seq: entry.seq, requestId, op: op.kind },
  );
  // Sent and persisted at the next flush, together with the rest of this turn's writes.
}

/**
 * §16: whether user key `key` has an intent: the last entry of the unapplied log tail that
 * writes its intent key says (a put: yes), else the applied state.
 */
export function hasIntent(r: ReplicaState, key: Uint8Array): boolean {
  if (isReserved(key)) return false;
  let ik: Uint8Array | undefined;
  for (let s = r.log.lastSeq; s > r.appliedSeq; s--) {
    const o = r.log.at(toSeq(s))?.op;
    if (o === undefined || !isDataOp(o) || !isIntentKey(o.key)) continue;
    ik ??= intentKey(key);
    if (bytesEqual(o.key, ik)) return o.kind === 'put';
  }
  return r.appliedIntents.size > 0 && r.appliedIntents.has(keyName(key));
}

function unappliedEntryOf(r: ReplicaState, tag: RequestTag): LogEntry | undefined {
  for (let s = r.log.lastSeq; s > r.appliedSeq; s--) {
    const e = r.log.at(toSeq(s));
    if (e?.tag?.clientId === tag.clientId && e.tag.requestSeq === tag.requestSeq) return e;
  }
  return undefined;
}

/**
 * §16: the key's version now is what the driver read (`observed`), unless an entry of the
 * log after the state it read writes the key: the last such entry's. The write goes on only
 * when that equals `ifVersion`; it is then logged as a blind op, so the check and the write
 * are one step of the log.
 */
/**
 * Why a conditional write may not go on: `error` at once (`answerAt` absent: nothing was
 * observed), or a failed condition, to be answered once the entry at `answerAt` (the one
 * that decided it, or the state read) is committed and a confirmation round passed.
 */
function checkCondition(r: ReplicaState, op: Op, c: WriteCondition): { error: WireError; answerAt?: Seq } | undefined {
  if (!isDataOp(op)) return { error: new InvalidArgumentError(`a ${op.kind} entry takes no condition`).toWire() };
  // The read is of another epoch's state (a snapshot installed, a log truncated since) or
  // of a state whose later entries this log no longer holds: read again.
  if (c.epoch !== r.epoch || c.atSeq < r.log.base.seq || c.atSeq > r.log.lastSeq)
    return {
      error: new UnavailableError(
        `partition ${r.partition} moved on while the key's version was read for a conditional write; retry`,
      ).toWire(),
    };
  for (const k of c.keys) {
    let current = k.observed;
    let decidedAt = c.atSeq;
    for (let s = c.atSeq + 1; s <= r.log.lastSeq; s++) {
      const o = r.log.at(toSeq(s))!.op;
      if (isDataOp(o) && bytesEqual(o.key, k.key)) {
        current = o.kind === 'put' && !expired(o.expiresAt, c.nowMs) ? s : 0;
        decidedAt = toSeq(s);
      }
    }
    if (current !== k.ifVersion) {
      const other = bytesEqual(k.key, op.key) ? undefined : 'another key of the condition';
      const error = new ConditionFailedError(
        k.ifVersion,
        current,
        other && `condition failed on ${other}: expected version ${k.ifVersion}, it is at ${current}`,
      ).toWire();
      return { error, answerAt: decidedAt };
    }
  }
  return undefined;
}

export function refuseClient(r: ReplicaState, what: 'read' | 'write'): WireError | undefined {
  if (r.corrupt !== undefined) {
    // S13: never served from here; retryable, so the client refreshes its map.
    return new NotPrimaryError(
      `${r.node} found partition ${r.partition} corrupt and is relearning it (S13); another replica serves it`,
    ).toWire();
  }
  if (!r.active || r.role !== 'primary') {
    return new NotPrimaryError(`${r.node} is not primary of partition ${r.partition} (epoch ${r.epoch})`).toWire();
  }
  if (!r.serving)
    return new UnavailableError(`partition ${r.partition} has a new primary that is still taking over (S6)`).toWire();
  if (what === 'write' && 1 + r.config!.secondaries.length < r.minWriteReplicas) {
    // S8 / §5.7: never acknowledge on fewer disks than --min-write-replicas.
    return new UnavailableError(
      `partition ${r.partition} has ${1 + r.config!.secondaries.length} replica(s), ` +
        `fewer than --min-write-replicas=${r.minWriteReplicas}`,
    ).toWire();
  }
  return undefined;
}

/**
 * Client writes (S8, S10): refuse what this replica may not accept (not primary, taking
 * over, corrupt, too few replicas, promoting, too many waiting), answer a retry from the
 * dedup table, and append the rest to the log for the next flush.
 */
import {
  type WireError,
  ConditionFailedError,
  InvalidArgumentError,
  NotPrimaryError,
  OverloadedError,
  UnavailableError,
} from '../errors.js';
import {
  type LogEntry,
  type Op,
  type RequestTag,
  type WriteCondition,
  bytesEqual,
  expired,
  isDataOp,
  seq as toSeq,
} from '../types.js';
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
  if (condition) {
    const refusal = checkCondition(r, op, condition);
    if (refusal) return void out.push(errorReply(requestId, refusal));
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
function checkCondition(r: ReplicaState, op: Op, c: WriteCondition): WireError | undefined {
  if (!isDataOp(op)) return new InvalidArgumentError(`a ${op.kind} entry takes no condition`).toWire();
  const { observed } = c;
  // The read is of another epoch's state (a snapshot installed, a log truncated since) or
  // of a state whose later entries this log no longer holds: read again.
  if (observed.epoch !== r.epoch || observed.atSeq < r.log.base.seq || observed.atSeq > r.log.lastSeq)
    return new UnavailableError(
      `partition ${r.partition} moved on while the key's version was read for a conditional write; retry`,
    ).toWire();
  let current = observed.version;
  for (let s = observed.atSeq + 1; s <= r.log.lastSeq; s++) {
    const o = r.log.at(toSeq(s))!.op;
    if (isDataOp(o) && bytesEqual(o.key, op.key)) current = o.kind === 'put' && !expired(o.expiresAt, c.nowMs) ? s : 0;
  }
  if (current === c.ifVersion) return undefined;
  return new ConditionFailedError(c.ifVersion, current).toWire();
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

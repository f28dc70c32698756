/**
 * Builders of the replica's outputs to peers and clients. A `send` waits for the epoch's
 * persist while it is not durable (S3): it is `immediate` only once the metadata is.
 */
import type { WireError } from '../errors.js';
import type { NodeId, Seq } from '../types.js';
import type { ReplicaOutput, RequestId } from './io.js';
import type { PeerMessage } from './messages.js';
import type { ReplicaState } from './state.js';

export function send(r: ReplicaState, to: NodeId, message: PeerMessage): ReplicaOutput {
  return { kind: 'send', to, message, immediate: r.metaDurable };
}

export function ack(r: ReplicaState, to: NodeId, seq: Seq): ReplicaOutput {
  return send(r, to, {
    kind: 'prepareAck',
    partition: r.partition,
    epoch: r.epoch,
    seq,
    incarnation: r.opts.incarnation,
  });
}

export function nack(r: ReplicaState, to: NodeId, needFromSeq: Seq): ReplicaOutput {
  return send(r, to, {
    kind: 'prepareNack',
    partition: r.partition,
    epoch: r.epoch,
    needFromSeq,
    incarnation: r.opts.incarnation,
  });
}

export function errorReply(requestId: RequestId, error: WireError): ReplicaOutput {
  return { kind: 'reply', requestId, result: { kind: 'error', error }, immediate: true };
}

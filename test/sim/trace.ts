/**
 * Readable one-line forms of the core's messages and outputs, for the trace of a replayed
 * seed (`npm run sim -- --seed S`).
 */
import type { PeerMessage } from '../../src/core/replica/messages.js';
import type { BatchOp } from '../../src/core/replica/ops.js';
import type { ReplicaOutput } from '../../src/core/replica/replica.js';
import { assertNever, type Config, type LogEntry } from '../../src/core/types.js';
import { text } from './disk.js';

export function describeEntry(e: LogEntry): string {
  const op =
    e.op.kind === 'put'
      ? `put ${text(e.op.key)}=${text(e.op.value)}`
      : e.op.kind === 'delete'
        ? `del ${text(e.op.key)}`
        : 'start';
  return `${e.seq}@${e.epoch}:${op}${e.tag ? `(${e.tag.clientId}#${e.tag.requestSeq})` : ''}`;
}

function entries(list: readonly LogEntry[]): string {
  if (list.length === 0) return '[]';
  if (list.length <= 3) return `[${list.map(describeEntry).join(' ')}]`;
  return `[${describeEntry(list[0]!)} … ${describeEntry(list[list.length - 1]!)}]`;
}

function config(c: Config): string {
  return `e${c.epoch}[P ${c.primary}; S ${c.secondaries.join(',') || '-'}; L ${c.learners.join(',') || '-'}]`;
}

export function describeMessage(m: PeerMessage): string {
  switch (m.kind) {
    case 'prepare':
      return (
        `prepare p${m.partition} ${config(m.config)} prev ${m.prev.seq}@${m.prev.epoch} ` +
        `${entries(m.entries)} commit ${m.commitSeq}`
      );
    case 'prepareAck':
      return `prepareAck p${m.partition} e${m.epoch} seq ${m.seq}`;
    case 'prepareNack':
      return `prepareNack p${m.partition} e${m.epoch} needFrom ${m.needFromSeq}`;
    case 'staleEpoch':
      return `staleEpoch p${m.partition} ${config(m.config)}`;
    case 'confirm':
      return `confirm p${m.partition} ${config(m.config)} round ${m.round}`;
    case 'confirmAck':
      return `confirmAck p${m.partition} e${m.epoch} round ${m.round}`;
    case 'snapshotOffer':
      return `snapshotOffer p${m.partition} ${config(m.config)}`;
    default:
      return assertNever(m);
  }
}

function describeOp(o: BatchOp): string {
  switch (o.kind) {
    case 'appendLog':
      return `appendLog ${entries(o.entries)}`;
    case 'truncateLogFrom':
      return `truncateLogFrom ${o.fromSeq}`;
    case 'truncateLogTo':
      return `truncateLogTo ${o.base.seq}@${o.base.epoch}`;
    case 'apply':
      return `apply ${entries(o.entries)}`;
    case 'setMeta':
      return `setMeta e${o.meta.epoch}${o.meta.config ? ` ${config(o.meta.config)}` : ''}`;
    case 'dropPartition':
      return 'dropPartition';
    default:
      return assertNever(o);
  }
}

export function describeOutput(o: ReplicaOutput): string {
  switch (o.kind) {
    case 'persist':
      return `persist${o.writeId === undefined ? '' : ` w${o.writeId}`} ${o.ops.map(describeOp).join('; ')}`;
    case 'send':
      return `send ${o.to}${o.immediate ? '' : ' (after disk)'} ${describeMessage(o.message)}`;
    case 'reply': {
      const r = o.result;
      const what = r.kind === 'written' ? `written ${r.seq}` : `error ${r.error.code}: ${r.error.message}`;
      return `reply #${o.requestId}${o.immediate ? '' : ' (after disk)'} ${what}${o.duplicateOf ? ' (duplicate)' : ''}`;
    }
    case 'read':
      return `read #${o.requestId} ${text(o.key)} (after disk)`;
    case 'confirmWithNameserver':
      return `confirmWithNameserver round ${o.round} e${o.epoch}`;
    case 'requestPromotion':
      return `requestPromotion ${o.learner} (${o.learnerIncarnation}) e${o.epoch}`;
    case 'requestRemoval':
      return `requestRemoval ${o.secondary} e${o.epoch}`;
    case 'fetchSnapshot':
      return `fetchSnapshot from ${o.from} e${o.epoch}`;
    case 'captureDigest':
      return `captureDigest at ${o.seq}${o.buckets.length > 0 ? ` listing buckets ${o.buckets.join(',')}` : ''}`;
    case 'log':
      return `log ${o.level}: ${o.message}${o.fields ? ` ${JSON.stringify(o.fields)}` : ''}`;
    default:
      return assertNever(o);
  }
}

/**
 * A tiny in-process driver for replica cores: it keeps the messages and storage writes the
 * cores emit in queues that a test releases step by step, so a test can hold back one
 * secondary's ack, lose a message, or let a write become durable. No I/O, no timers.
 */
import { defaultLimits } from '../../src/core/limits.js';
import type { PeerMessage, ClientResult } from '../../src/core/replica/messages.js';
import type { BatchOp } from '../../src/core/replica/ops.js';
import {
  Replica,
  type ReplicaInput,
  type ReplicaOutput,
  type ReplicaRecovery,
} from '../../src/core/replica/replica.js';
import {
  type Config,
  type NodeId,
  type Op,
  type Seq,
  assertNever,
  epoch,
  nodeId,
  partitionId,
  seq,
} from '../../src/core/types.js';

export const P0 = partitionId(0);
export const [A, B, C] = [nodeId('a'), nodeId('b'), nodeId('c')];

export function config(e: number, primary: NodeId, secondaries: NodeId[], learners: NodeId[] = []): Config {
  return { partition: P0, epoch: epoch(e), primary, secondaries, learners };
}

export function replica(
  node: NodeId,
  recovery?: ReplicaRecovery,
  minWriteReplicas = 2,
  removeSilentAfterMs = 0,
): Replica {
  return new Replica(
    {
      node,
      partition: P0,
      minWriteReplicas,
      limits: defaultLimits({ logRetainEntries: 1000 }),
      resendAfterMs: 1000,
      incarnation: `${node}-1`,
      removeSilentAfterMs,
    },
    recovery,
  );
}

export const put = (key: string, value: string): Op => ({
  kind: 'put',
  key: Buffer.from(key),
  value: Buffer.from(value),
});

interface InFlight {
  readonly from: NodeId;
  readonly to: NodeId;
  readonly message: PeerMessage;
}

export class Cluster {
  readonly nodes = new Map<NodeId, Replica>();
  network: InFlight[] = [];
  /** Persists not yet durable, per node, with the write id to report. */
  readonly disk = new Map<NodeId, Array<{ ops: readonly BatchOp[]; writeId?: number }>>();
  readonly durableOps = new Map<NodeId, BatchOp[]>();
  readonly replies = new Map<number, ClientResult>();
  readonly reads: Array<{ node: NodeId; requestId: number; key: string }> = [];
  readonly logs: Array<{ node: NodeId; message: string }> = [];
  readonly promotions: Array<{ node: NodeId; learner: NodeId }> = [];
  readonly removals: Array<{ node: NodeId; secondary: NodeId }> = [];
  readonly captures: Array<{ node: NodeId; seq: Seq }> = [];

  add(node: NodeId, r: Replica): Replica {
    this.nodes.set(node, r);
    this.disk.set(node, []);
    this.durableOps.set(node, []);
    return r;
  }

  step(node: NodeId, input: ReplicaInput): ReplicaOutput[] {
    const out = this.nodes.get(node)!.step(input);
    for (const o of out) this.route(node, o);
    return out;
  }

  private route(node: NodeId, o: ReplicaOutput): void {
    switch (o.kind) {
      case 'persist':
        this.disk.get(node)!.push({ ops: o.ops, writeId: o.writeId });
        break;
      case 'send':
        this.network.push({ from: node, to: o.to, message: o.message });
        break;
      case 'reply':
        this.replies.set(o.requestId, o.result);
        break;
      case 'read':
        this.reads.push({ node, requestId: o.requestId, key: Buffer.from(o.key).toString() });
        break;
      case 'requestPromotion':
        this.promotions.push({ node, learner: o.learner });
        break;
      case 'requestRemoval':
        this.removals.push({ node, secondary: o.secondary });
        break;
      case 'captureDigest':
        this.captures.push({ node, seq: o.seq });
        break;
      case 'fetchSnapshot':
      case 'confirmWithNameserver':
      case 'log':
        if (o.kind === 'log') this.logs.push({ node, message: o.message });
        break;
      default:
        assertNever(o);
    }
  }

  /** Makes every pending write of `node` durable and tells its core. */
  sync(node: NodeId): void {
    const pending = this.disk.get(node)!.splice(0);
    for (const p of pending) {
      this.durableOps.get(node)!.push(...p.ops);
      if (p.writeId !== undefined) this.step(node, { kind: 'persisted', writeId: p.writeId });
    }
  }

  /** Delivers queued messages matching `filter` (all by default), once. */
  deliver(filter: (m: InFlight) => boolean = () => true): number {
    const now = this.network;
    this.network = [];
    let n = 0;
    for (const m of now) {
      if (!filter(m)) {
        this.network.push(m);
        continue;
      }
      n++;
      if (this.nodes.has(m.to)) this.step(m.to, { kind: 'peer', from: m.from, message: m.message });
    }
    return n;
  }

  flush(): void {
    for (const node of this.nodes.keys()) this.step(node, { kind: 'flush' });
  }

  /** A tick on every node at its own time (no time passes): it tells idle peers the commit point (S2). */
  tick(): void {
    for (const [node, r] of this.nodes) this.step(node, { kind: 'tick', nowMs: r.nowMs });
  }

  /** Flush, sync and deliver until nothing moves, not even on a tick (bounded). */
  settle(maxRounds = 100): void {
    const idle = () => this.network.length === 0 && [...this.disk.values()].every((d) => d.length === 0);
    for (let i = 0; i < maxRounds; i++) {
      this.flush();
      for (const node of this.nodes.keys()) this.sync(node);
      if (this.deliver() > 0 || !idle()) continue;
      this.tick();
      if (idle()) return;
    }
    throw new Error(`cluster did not settle within ${maxRounds} rounds`);
  }
}

/** A started three-replica partition at epoch 1 with primary A, serving. */
export function startedCluster(removeSilentAfterMs = 0): Cluster {
  const c = new Cluster();
  for (const n of [A, B, C]) c.add(n, replica(n, undefined, 2, removeSilentAfterMs));
  const cfg = config(1, A, [B, C]);
  for (const n of [A, B, C]) c.step(n, { kind: 'configure', config: cfg });
  c.settle();
  return c;
}

export { seq, epoch };

/**
 * The invariants the simulator checks while a run goes on (issue 5), from what it can see
 * that no process can: every replica's durable applies, every primary's commits, every
 * answer a client got.
 *
 * - State machine safety (S1, S2): every replica that applied seq s of a partition applied
 *   the same entry there, and after it holds the same data and dedup table (a digest).
 * - Snapshots (S11): a snapshot installed at seq s holds exactly what replicas that
 *   applied up to s hold.
 * - At most one primary per partition per epoch, and at most one primary commits in it.
 * - Acknowledged writes (§5.7): the entry at the version a client was given is that
 *   client's write; a read's version is the entry that wrote the value it returned.
 * - Election mode (issue 12, sim-etcd.ts): every map etcd stores was saved under the leadership
 *   that was current then, and by one candidate per leadership (the fence); the stored map's
 *   version never goes backwards; a storage server's replica never goes back to an older epoch
 *   than one it had in the same incarnation (a deposed leader's stale map must not reach it).
 * The end-of-run checks (convergence, acknowledged writes present everywhere,
 * linearizability) are in run.ts.
 */
import type { Replica } from '../../src/core/replica/replica.js';
import type { LogEntry, PartitionId, Seq } from '../../src/core/types.js';
import { text } from './disk.js';
import { SimulationFailure, type World } from './world.js';

export interface Violation {
  readonly kind: string;
  readonly atMs: number;
  readonly message: string;
}

export interface AckedWrite {
  readonly client: string;
  readonly partition: PartitionId;
  readonly seq: Seq;
  readonly clientId: string;
  readonly requestSeq: number;
  readonly op: 'put' | 'delete';
  readonly key: string;
  readonly value?: string;
}

function fingerprint(e: LogEntry): string {
  const op =
    e.op.kind === 'put'
      ? `put ${text(e.op.key)}=${text(e.op.value)}`
      : e.op.kind === 'delete'
        ? `delete ${text(e.op.key)}`
        : e.op.kind;
  return `${e.seq}@${e.epoch} ${op}${e.tag ? ` (${e.tag.clientId}#${e.tag.requestSeq})` : ''}`;
}

export class Observer {
  readonly violations: Violation[] = [];
  /** Per partition, seq → the entry first applied there and where. */
  readonly appliedEntry = new Map<
    PartitionId,
    Map<number, { fp: string; entry: LogEntry; node: string; holders: Set<string> }>
  >();
  private readonly digests = new Map<PartitionId, Map<number, { digest: string; node: string }>>();
  private readonly primaries = new Map<string, string>();
  private readonly committers = new Map<string, string>();
  private readonly lastCommit = new Map<string, number>();
  readonly acked = new Map<PartitionId, Map<number, AckedWrite>>();
  readonly stats = { applies: 0, snapshots: 0, commitsObserved: 0, primariesObserved: 0 };
  /** Election mode: the checks below run (off otherwise: they see nothing). */
  electionChecks = false;
  private readonly saverOf = new Map<number, string>();
  private storedVersion = -1;
  private readonly epochs = new Map<string, number>();
  /**
   * `node/p` whose applied state the silent corruption fault changed (issue 13), until it
   * installs a snapshot from a healthy copy: its digests after applies are not compared (the
   * damage is anti-entropy's to find, `replicas-disagree` at the end of the run).
   */
  private readonly tainted = new Set<string>();

  constructor(private readonly world: World) {}

  /** Records a violation and stops the run: the state after it proves nothing more. */
  fail(kind: string, message: string): never {
    this.violations.push({ kind, atMs: this.world.now, message });
    this.world.trace(`VIOLATION ${kind}: ${message}`);
    throw new SimulationFailure(`${kind}: ${message}`);
  }

  /** Records a violation found after the run (the run is over anyway). */
  report(kind: string, message: string): void {
    this.violations.push({ kind, atMs: this.world.now, message });
  }

  onApplied(node: string, p: PartitionId, entry: LogEntry, digest: string): void {
    this.stats.applies++;
    const fp = fingerprint(entry);
    let entries = this.appliedEntry.get(p);
    if (!entries) this.appliedEntry.set(p, (entries = new Map()));
    const first = entries.get(entry.seq);
    if (!first) {
      entries.set(entry.seq, { fp, entry, node, holders: new Set([node]) });
      const ack = this.acked.get(p)?.get(entry.seq);
      if (ack) this.checkAck(ack, entry);
    } else if (first.fp === fp) {
      first.holders.add(node);
    } else {
      const ack = this.acked.get(p)?.get(entry.seq);
      const acked = ack ? `; ${first.fp} was acknowledged to ${ack.client}` : '';
      this.fail(
        'divergent-apply',
        `partition ${p}: ${node} applied ${fp} but ${first.node} applied ${first.fp} at the same seq (S1, S2)${acked}`,
      );
    }
    if (this.tainted.has(`${node}/${p}`)) return;
    let ds = this.digests.get(p);
    if (!ds) this.digests.set(p, (ds = new Map()));
    const d = ds.get(entry.seq);
    if (!d) ds.set(entry.seq, { digest, node });
    else if (d.digest !== digest) {
      this.fail(
        'divergent-state',
        `partition ${p}: after applying seq ${entry.seq}, ${node} holds {${digest}} but ${d.node} holds {${d.digest}}`,
      );
    }
  }

  /**
   * A node lost its disk (memory backend, S4): what only it had applied is gone, and a
   * seq no one holds any more may be applied anew (that loss is the backend's promise, not
   * a divergence; the end-of-run checks report acknowledged writes it took).
   */
  onDiskLost(node: string): void {
    for (const k of [...this.tainted]) if (k.startsWith(`${node}/`)) this.tainted.delete(k);
    for (const k of [...this.epochs.keys()]) if (k.startsWith(`${node}/`)) this.epochs.delete(k);
    for (const [p, entries] of this.appliedEntry) {
      for (const [seq, e] of entries) {
        e.holders.delete(node);
        if (e.holders.size === 0) {
          entries.delete(seq);
          this.digests.get(p)?.delete(seq);
        }
      }
    }
  }

  /** The silent corruption fault changed `node`'s applied state of `p`. */
  onCorrupted(node: string, p: PartitionId): void {
    this.tainted.add(`${node}/${p}`);
  }

  isCorrupted(node: string, p: PartitionId): boolean {
    return this.tainted.has(`${node}/${p}`);
  }

  /** `corruptCopy`: the snapshot was read from a corrupted copy. */
  onSnapshotInstalled(node: string, p: PartitionId, seq: Seq, digest: string, corruptCopy = false): void {
    this.stats.snapshots++;
    // A copy of a corrupted copy is corrupted too (S11 copies what the primary stores).
    if (corruptCopy) {
      this.tainted.add(`${node}/${p}`);
      return;
    }
    this.tainted.delete(`${node}/${p}`);
    if (seq === 0) return;
    const d = this.digests.get(p)?.get(seq);
    if (!d)
      this.fail('snapshot', `partition ${p}: ${node} installed a snapshot at seq ${seq}, which no replica applied`);
    if (d.digest !== digest)
      this.fail(
        'snapshot',
        `partition ${p}: ${node} installed a snapshot at seq ${seq} holding {${digest}}, but ${d.node} holds ` +
          `{${d.digest}} there (S11)`,
      );
  }

  /** Election mode: etcd stored map `version`, saved by `by` under leadership `rev` while `current` led. */
  onMapStored(by: string, rev: number, current: number | undefined, version: number): void {
    if (rev !== current)
      this.fail(
        'unfenced-save',
        `${by}'s save of map v${version} under leadership (leader key revision) ${rev} was stored while ` +
          `${current === undefined ? 'nobody led' : `leadership ${current} was current`}: a deposed leader wrote`,
      );
    const saver = this.saverOf.get(rev);
    if (saver !== undefined && saver !== by)
      this.fail('two-savers', `both ${saver} and ${by} saved maps under leadership ${rev}`);
    this.saverOf.set(rev, by);
    if (version < this.storedVersion)
      this.fail(
        'map-version-regressed',
        `${by} stored map v${version} in etcd after v${this.storedVersion} was stored (leadership ${rev})`,
      );
    this.storedVersion = version;
  }

  /** After every step of a replica: one primary per epoch, one committer per epoch. */
  onStepped(node: string, r: Replica): void {
    if (this.electionChecks) {
      const ek = `${node}/${r.partition}`;
      const had = this.epochs.get(ek) ?? 0;
      if (r.epoch < had)
        this.fail(
          'epoch-regressed',
          `partition ${r.partition}: ${node} went back to epoch ${r.epoch} after it had epoch ${had}`,
        );
      else if (r.epoch > had) this.epochs.set(ek, r.epoch);
    }
    const k = `${r.partition}/${r.epoch}`;
    if (r.active && r.role === 'primary') {
      const other = this.primaries.get(k);
      if (other === undefined) {
        this.primaries.set(k, node);
        this.stats.primariesObserved++;
      } else if (other !== node)
        this.fail(
          'two-primaries',
          `partition ${r.partition}: both ${other} and ${node} acted as primary in epoch ${r.epoch} (S3)`,
        );
    }
    const nk = `${node}/${r.partition}`;
    const before = this.lastCommit.get(nk) ?? 0;
    if (r.commitSeq !== before) this.lastCommit.set(nk, r.commitSeq);
    if (r.active && r.role === 'primary' && r.commitSeq > before) {
      const other = this.committers.get(k);
      if (other === undefined) {
        this.committers.set(k, node);
        this.stats.commitsObserved++;
      } else if (other !== node)
        this.fail(
          'two-committers',
          `partition ${r.partition}: both ${other} and ${node} committed in epoch ${r.epoch}`,
        );
    }
  }

  /** The restarted replica starts over: its commit point is whatever it recovered. */
  onRestarted(node: string, p: PartitionId, commitSeq: Seq, epoch: number): void {
    this.lastCommit.set(`${node}/${p}`, commitSeq);
    // An epoch adopted in memory but not yet durable is gone after a crash: each incarnation starts from its disk's.
    this.epochs.set(`${node}/${p}`, epoch);
  }

  /** A client was told its write is acknowledged at version `seq`. */
  onAck(ack: AckedWrite): void {
    let m = this.acked.get(ack.partition);
    if (!m) this.acked.set(ack.partition, (m = new Map()));
    const prior = m.get(ack.seq);
    if (prior && (prior.clientId !== ack.clientId || prior.requestSeq !== ack.requestSeq)) {
      this.fail(
        'ack',
        `partition ${ack.partition}: version ${ack.seq} was acknowledged to ${prior.clientId}#${prior.requestSeq} ` +
          `and to ${ack.clientId}#${ack.requestSeq}`,
      );
    }
    m.set(ack.seq, ack);
    const applied = this.appliedEntry.get(ack.partition)?.get(ack.seq);
    if (applied) this.checkAck(ack, applied.entry);
  }

  private checkAck(ack: AckedWrite, e: LogEntry): void {
    const same =
      e.tag?.clientId === ack.clientId &&
      e.tag.requestSeq === ack.requestSeq &&
      e.op.kind === ack.op &&
      text((e.op as { key: Uint8Array }).key) === ack.key;
    if (!same) {
      this.fail(
        'lost-write',
        `partition ${ack.partition}: ${ack.client}'s ${ack.op} ` +
          `${ack.key}${ack.value === undefined ? '' : `=${ack.value}`} (${ack.clientId}#${ack.requestSeq}) was ` +
          `acknowledged at version ${ack.seq}, but the entry applied there is ${fingerprint(e)}`,
      );
    }
  }

  /** A read returned `value` at `version`: that entry must have written it. */
  onReadVersion(p: PartitionId, key: string, value: string, version: Seq): void {
    const applied = this.appliedEntry.get(p)?.get(version);
    if (!applied)
      this.fail(
        'read-version',
        `partition ${p}: a read of ${key} returned ${value} at version ${version}, which no replica applied`,
      );
    const e = applied.entry;
    if (e.op.kind !== 'put' || text(e.op.key) !== key || text(e.op.value) !== value) {
      this.fail(
        'read-version',
        `partition ${p}: a read of ${key} returned ${value} at version ${version}, but that entry is ${applied.fp}`,
      );
    }
  }
}

/**
 * The nameserver state machine (DESIGN §3, §4, §6, S3, S5, S15): membership, liveness,
 * the cluster map, and every reconfiguration.
 *
 * Inputs: registrations, heartbeats (with each replica's progress), ticks (time).
 * Outputs: the replies, and `mapChanged` when the persisted map must be written before the
 * replies go out (S3: a configuration is persisted before it is announced).
 *
 * Invariants: a partition's epoch only grows and is never reused (S3); a new primary is a
 * live secondary of the current configuration, or, when every member restarted, the
 * reporting member with the highest (last entry epoch, seq) (S5); the last member of a
 * configuration is never removed; no failover while fewer than half the registered storage
 * servers are alive (S15).
 */
import { initialPlacement } from '../partitioning.js';
import { InvalidArgumentError } from '../errors.js';
import { type BalanceView, bestSecondary, compareProgress, holds, rebalance } from './balance.js';
import type { LiveSettings } from './live.js';
import type { ReplicaProgress } from '../replica/replica.js';
import { assert, type Config, type NodeId, type PartitionId, epoch as toEpoch, partitionId } from '../types.js';

export interface ClusterSettings {
  readonly partitions: number;
  readonly replicas: number;
  readonly minWriteReplicas: number;
  /** Storage servers that must have registered before the map is created. */
  readonly initialNodes: number;
}

/** What the nameserver persists (S15). */
export interface PersistedMap {
  readonly formatVersion: 1;
  readonly clusterId: string;
  readonly settings: ClusterSettings;
  readonly version: number;
  /** Empty until the cluster is formed. */
  readonly configs: readonly Config[];
  /** Every storage server ever registered: id → advertised address. */
  readonly nodes: Readonly<Record<string, { address: string; backend: string }>>;
  /**
   * Issue 15: servers being drained (`dstore drain`): rebalancing moves every replica and
   * primary off them, and they receive none, until the drain is cancelled. Absent: none.
   */
  readonly draining?: readonly string[];
  /** Issue 15: the live settings (./live.ts); absent in an older map (the flags apply). */
  readonly live?: LiveSettings;
}

export interface NodeRecord {
  readonly id: NodeId;
  address: string;
  backend: string;
  incarnation: string;
  /** When this incarnation registered (nameserver clock). */
  registeredMs: number;
  lastHeartbeatMs: number;
  /** Uptime the node reported. */
  uptimeMs: number;
  /** Progress of this incarnation, per partition; empty until its first heartbeat. */
  progress: Map<PartitionId, ReplicaProgress>;
  /** This incarnation has sent a heartbeat (its progress, possibly empty, is known). */
  reported: boolean;
  keys: number;
  durable: boolean;
  /**
   * S4: partitions where this node is primary or secondary but restarted without its log
   * (memory backend, --sync none): it must be made a learner (or replaced as primary) under
   * a new epoch, and is not told the old configuration meanwhile.
   */
  relearn: Set<PartitionId>;
  /** Its storage failed (issue 4): it holds no replica until it registers again; dead at once. */
  storageFailed: boolean;
  /**
   * S13: partitions this incarnation reported corrupt. Like `relearn` it is taken out of
   * their configurations and made a learner, but it is never the member a partition starts
   * afresh from: its data is not to be trusted, and it still holds it until it relearns.
   */
  corrupt: Set<PartitionId>;
  /**
   * Issue 15: this incarnation is stopping (SIGTERM): it handed its primaries over and left
   * the secondaries (a learner now), and gets no role until it registers again.
   */
  leaving: boolean;
}

export interface Registration {
  readonly nodeId: NodeId;
  readonly address: string;
  readonly backend: string;
  readonly incarnation: string;
  /** False for the memory backend or --sync none (S4). */
  readonly durable: boolean;
  /**
   * The partitions whose replica had a role in this process (it holds their state). For a
   * non-durable node, every other partition it is primary or secondary of was lost (S4).
   */
  readonly activePartitions?: readonly number[];
}

export interface Heartbeat {
  readonly nodeId: NodeId;
  readonly incarnation: string;
  readonly uptimeMs: number;
  readonly keys: number;
  readonly progress: readonly ReplicaProgress[];
}

export type HeartbeatReply =
  | { readonly kind: 'ok'; readonly mapVersion: number; readonly configs: readonly Config[] }
  /** The nameserver does not know this incarnation (it restarted, or the node did): register again. */
  | { readonly kind: 'register' };

export interface NameserverOptions {
  readonly deadAfterMs: number;
  /** §6: a partition short of R replicas this long gets a learner on another live server. */
  readonly rereplicateAfterMs: number;
  /**
   * Issue 15: spread replicas and primaries evenly over the servers (balance.ts), this many
   * partitions moving a replica at a time; 0: no rebalancing (draining still moves). Default 2.
   */
  readonly rebalanceMoves?: number;
  /**
   * Issue 15: rebalancing waits until no failure has changed the map, and no server has
   * (re)registered, for this long, so it never adds moves to a cluster still recovering
   * (a drain does not wait). Default: 2 × deadAfterMs.
   */
  readonly rebalanceDelayMs?: number;
}

export class Nameserver {
  map: PersistedMap;
  readonly nodes = new Map<NodeId, NodeRecord>();
  private opts: NameserverOptions;
  /** When each partition was first seen with fewer than R replicas (not persisted). */
  private readonly underSinceMs = new Map<PartitionId, number>();
  /** Issue 15: when a failure last changed the map or a server last (re)registered. */
  private unsettledAtMs: number;

  constructor(map: PersistedMap, opts: NameserverOptions, nowMs: number) {
    this.map = map;
    this.opts = opts;
    this.unsettledAtMs = nowMs;
    // S15: every node we knew is treated as alive for one --dead-after-ms.
    for (const [id, n] of Object.entries(map.nodes)) {
      this.nodes.set(id as NodeId, {
        id: id as NodeId,
        address: n.address,
        backend: n.backend,
        incarnation: '',
        registeredMs: nowMs,
        lastHeartbeatMs: nowMs,
        uptimeMs: 0,
        progress: new Map(),
        reported: false,
        keys: 0,
        durable: true,
        relearn: new Set(),
        storageFailed: false,
        corrupt: new Set(),
        leaving: false,
      });
    }
  }

  static newMap(clusterId: string, settings: ClusterSettings): PersistedMap {
    assert(settings.replicas >= 1, 'replicas >= 1');
    assert(
      settings.minWriteReplicas >= 1 && settings.minWriteReplicas <= settings.replicas,
      '1 <= minWriteReplicas <= replicas',
    );
    assert(settings.initialNodes >= settings.replicas, 'initialNodes >= replicas');
    return { formatVersion: 1, clusterId, settings, version: 0, configs: [], nodes: {} };
  }

  /**
   * Issue 15: records the live settings in the map (a new version; the caller persists it
   * before announcing it, S3) and adopts their dead-after period at once.
   */
  setLive(live: LiveSettings): void {
    this.map = { ...this.map, version: this.map.version + 1, live };
    this.opts = { ...this.opts, deadAfterMs: live.deadAfterMs };
  }

  /** S8: the live --min-write-replicas (issue 15), else the one the cluster was created with. */
  get minWriteReplicas(): number {
    return this.map.live?.minWriteReplicas ?? this.map.settings.minWriteReplicas;
  }

  get formed(): boolean {
    return this.map.configs.length > 0;
  }

  isAlive(n: NodeRecord, nowMs: number): boolean {
    return !n.storageFailed && nowMs - n.lastHeartbeatMs <= this.opts.deadAfterMs;
  }

  /**
   * The storage server says its storage failed: it dropped every replica and holds nothing
   * until it reloads and registers again (a new incarnation), so it counts as dead now and
   * its partitions are reconfigured at the next tick, without waiting for --dead-after-ms.
   */
  onStorageFailed(nodeId: NodeId, incarnation: string): void {
    const n = this.nodes.get(nodeId);
    if (n && n.incarnation === incarnation) n.storageFailed = true;
  }

  /**
   * Issue 9: the live node that holds `r.nodeId` at another address, if any; such a
   * registration is refused until that node is dead, since two live servers under one id
   * would be sent each other's configurations. The same address is the same server
   * restarted (accepted), and a node known only from the persisted map (no incarnation yet,
   * after a nameserver restart, S15) is not known to be alive.
   */
  conflictingNode(r: Registration, nowMs: number): NodeRecord | undefined {
    const n = this.nodes.get(r.nodeId);
    if (!n || n.incarnation === '' || n.incarnation === r.incarnation || n.address === r.address) return undefined;
    return this.isAlive(n, nowMs) ? n : undefined;
  }

  /** Returns whether the persisted map changed. */
  onRegister(r: Registration, nowMs: number): boolean {
    const existing = this.nodes.get(r.nodeId);
    if (existing?.incarnation !== r.incarnation) this.unsettledAtMs = nowMs;
    const record: NodeRecord = {
      id: r.nodeId,
      address: r.address,
      backend: r.backend,
      incarnation: r.incarnation,
      registeredMs: nowMs,
      lastHeartbeatMs: nowMs,
      uptimeMs: 0,
      progress: new Map(),
      reported: false,
      keys: existing?.keys ?? 0,
      durable: r.durable,
      storageFailed: false,
      leaving: existing?.incarnation === r.incarnation ? existing.leaving : false,
      // A new incarnation finds corruption again when it reads the partition (S13).
      corrupt: existing?.incarnation === r.incarnation ? existing.corrupt : new Set(),
      // S4: a node that lost its state in a restart keeps none of its roles.
      relearn:
        existing?.incarnation === r.incarnation
          ? existing.relearn
          : new Set(
              r.durable
                ? []
                : this.map.configs
                    .filter(
                      (c) =>
                        (c.primary === r.nodeId || c.secondaries.includes(r.nodeId)) &&
                        !(r.activePartitions ?? []).includes(c.partition),
                    )
                    .map((c) => c.partition),
            ),
    };
    this.nodes.set(r.nodeId, record);
    const known = this.map.nodes[r.nodeId];
    if (known && known.address === r.address && known.backend === r.backend) return false;
    this.map = {
      ...this.map,
      version: this.map.version + 1,
      nodes: { ...this.map.nodes, [r.nodeId]: { address: r.address, backend: r.backend } },
    };
    return true;
  }

  onHeartbeat(h: Heartbeat, nowMs: number): HeartbeatReply {
    const n = this.nodes.get(h.nodeId);
    if (!n || n.incarnation !== h.incarnation) return { kind: 'register' };
    n.lastHeartbeatMs = nowMs;
    n.uptimeMs = h.uptimeMs;
    n.keys = h.keys;
    n.progress = new Map(h.progress.map((p) => [p.partition, p]));
    n.reported = true;
    this.noteCorrupt(n);
    // Also the configurations of partitions it holds without being a member, so a removed
    // replica learns it was removed (S3) and stops counting itself in. Not a role it lost
    // with its state (S4): it waits for the configuration that makes it a learner.
    const configs = this.map.configs.filter(
      (c) => (holds(c, h.nodeId) || n.progress.has(c.partition)) && !n.relearn.has(c.partition),
    );
    return { kind: 'ok', mapVersion: this.map.version, configs };
  }

  /**
   * S13: a replica that reports its partition corrupt steps out of the partition's
   * configuration (as primary: another member takes over, S5) and relearns it as a learner:
   * the `relearn` path, taken at the next tick. A corrupt learner stays a learner under a new
   * epoch (see `reconfigure`): it relearns from zero only under an epoch in which it acked
   * nothing, so no promotion request based on its old acks can be applied (S7).
   */
  private noteCorrupt(n: NodeRecord): void {
    n.corrupt.clear();
    for (const p of n.progress.values()) {
      if (p.corrupt !== true) continue;
      n.corrupt.add(p.partition);
      const c = this.map.configs[p.partition];
      if (c && (c.primary === n.id || c.secondaries.includes(n.id))) n.relearn.add(p.partition);
    }
  }

  /** S13: partitions a live node reported corrupt, by node (for `nodes` and the log). */
  corruptPartitions(nodeId: NodeId): PartitionId[] {
    return [...(this.nodes.get(nodeId)?.corrupt ?? [])].sort((a, b) => a - b);
  }

  /**
   * S13, S5: partitions no healthy member can serve: every member (primary, secondaries) is
   * dead or reported the partition corrupt, and at least one did. They stay unavailable
   * (nothing is started afresh from a corrupt copy, nor from a removed one). `holders` are
   * live non-members that still hold an older copy (a replica removed earlier that came
   * back): taking one would lose whatever was acknowledged after it was removed, so that is
   * left to an operator.
   */
  stuckCorrupt(nowMs: number): Array<{
    partition: PartitionId;
    epoch: number;
    corrupt: NodeId[];
    holders: Array<{ node: NodeId; lastEpoch: number; lastSeq: number }>;
  }> {
    const out = [];
    for (const c of this.map.configs) {
      const members = [c.primary, ...c.secondaries];
      const corrupt = members.filter((m) => {
        const n = this.nodes.get(m);
        return n !== undefined && this.isAlive(n, nowMs) && n.corrupt.has(c.partition);
      });
      if (corrupt.length === 0) continue;
      const healthy = members.some((m) => {
        const n = this.nodes.get(m);
        return n !== undefined && this.isAlive(n, nowMs) && !n.corrupt.has(c.partition);
      });
      if (healthy) continue;
      const holders = [...this.nodes.values()]
        .filter(
          (n) =>
            this.isAlive(n, nowMs) &&
            !members.includes(n.id) &&
            n.progress.has(c.partition) &&
            !n.corrupt.has(c.partition),
        )
        .map((n) => ({
          node: n.id,
          lastEpoch: n.progress.get(c.partition)!.lastEpoch as number,
          lastSeq: n.progress.get(c.partition)!.lastSeq as number,
        }));
      out.push({ partition: c.partition, epoch: c.epoch as number, corrupt, holders });
    }
    return out;
  }

  configsOf(node: NodeId): Config[] {
    return this.map.configs.filter((c) => holds(c, node));
  }

  /**
   * Time passes: form the cluster, replace lost primaries, remove dead secondaries. Returns
   * whether the map changed.
   */
  onTick(nowMs: number): boolean {
    if (!this.formed) return this.maybeForm(nowMs);
    const registered = [...this.nodes.values()];
    const alive = registered.filter((n) => this.isAlive(n, nowMs));
    // S15: no failover (a new primary) while fewer than half the registered storage servers
    // are alive. Removing dead secondaries goes on: it only lets a live primary continue.
    const frozen = alive.length * 2 < registered.length;
    let changed = false;
    const configs = this.map.configs.map((c) => {
      const next = this.reconfigure(c, nowMs, frozen);
      if (next !== c) changed = true;
      // Under-replication is timed from the first tick that sees it, whatever else changed.
      if (1 + next.secondaries.length + next.learners.length >= this.map.settings.replicas)
        this.underSinceMs.delete(c.partition);
      else if (!this.underSinceMs.has(c.partition)) this.underSinceMs.set(c.partition, nowMs);
      return next;
    });
    if (changed) {
      this.map = { ...this.map, version: this.map.version + 1, configs };
      this.unsettledAtMs = nowMs;
      return true;
    }
    return !frozen && this.balance(nowMs);
  }

  /** Servers being drained (issue 15). */
  get draining(): ReadonlySet<NodeId> {
    return new Set((this.map.draining ?? []) as NodeId[]);
  }

  /**
   * Issue 15: may receive replicas and primaries: alive, reported since it registered, not
   * draining, not leaving.
   */
  private eligible(n: NodeRecord, nowMs: number): boolean {
    return this.isAlive(n, nowMs) && n.incarnation !== '' && n.reported && !n.leaving && !this.draining.has(n.id);
  }

  /** Issue 15: one round of rebalancing (balance.ts) on a map no failure changed this tick. */
  private balance(nowMs: number): boolean {
    const draining = this.draining;
    const settled = nowMs - this.unsettledAtMs >= (this.opts.rebalanceDelayMs ?? 2 * this.opts.deadAfterMs);
    const maxMoves = settled ? (this.opts.rebalanceMoves ?? 2) : 0;
    if (maxMoves === 0 && draining.size === 0) return false;
    const next = rebalance({
      configs: this.map.configs,
      replicas: this.map.settings.replicas,
      eligible: [...this.nodes.values()].filter((n) => this.eligible(n, nowMs)).map((n) => n.id),
      draining,
      ...this.liveness(nowMs),
      maxMoves: Math.max(1, maxMoves),
    });
    // Without rebalancing (off, or not settled), only what a drain needs: moves off draining servers.
    const wanted =
      maxMoves > 0
        ? next
        : next.filter((c) => {
            const old = this.map.configs[c.partition]!;
            return [old.primary, ...old.secondaries, ...old.learners].some((n) => draining.has(n));
          });
    if (wanted.length === 0) return false;
    const byPartition = new Map(wanted.map((c) => [c.partition, c]));
    this.map = {
      ...this.map,
      version: this.map.version + 1,
      configs: this.map.configs.map((c) => byPartition.get(c.partition) ?? c),
    };
    return true;
  }

  /**
   * Issue 15, `dstore drain`: start (or with `on` false, cancel) moving every replica and
   * primary off `node`. Refused when the other live servers could not hold R replicas of
   * every partition. Returns whether the map changed.
   */
  setDraining(node: NodeId, on: boolean, nowMs: number): boolean {
    if (!this.nodes.has(node)) throw new InvalidArgumentError(`no storage server ${node} is known`);
    const now = this.draining;
    if (now.has(node) === on) return false;
    if (on) {
      const others = [...this.nodes.values()].filter((n) => n.id !== node && this.eligible(n, nowMs));
      if (others.length < this.map.settings.replicas)
        throw new InvalidArgumentError(
          `draining ${node} would leave ${others.length} live server(s) for ${this.map.settings.replicas} ` +
            'replicas of each partition; start another storage server first',
        );
    }
    const draining = on ? [...now, node].sort() : [...now].filter((n) => n !== node);
    const { draining: _old, ...rest } = this.map;
    this.map = { ...rest, version: this.map.version + 1, ...(draining.length > 0 ? { draining } : {}) };
    return true;
  }

  /**
   * Issue 15: the storage server is stopping (SIGTERM). Each partition it leads is handed to
   * its most advanced active secondary (S5; the new primary takes over through S6, as after a
   * failover, and the new epoch fences this one, S3), and each partition it is a secondary of
   * goes on without it: it stays in the configuration as a learner, which no commit waits for
   * (the path of `onRemoveSecondary`), so its exit stalls no write for --dead-after-ms. A
   * partition it leads with no active secondary stays as it is. Returns the configurations
   * changed, already in the map.
   */
  onLeave(node: NodeId, incarnation: string, nowMs: number): Config[] {
    const n = this.nodes.get(node);
    if (!n || n.incarnation !== incarnation || !this.isAlive(n, nowMs)) return [];
    n.leaving = true;
    const changed: Config[] = [];
    const configs = this.map.configs.map((c) => {
      let next: Config | undefined;
      if (c.primary === node) {
        // S5: the most advanced active secondary that is not stopping too.
        const heir = bestSecondary(this.liveness(nowMs), c, (s) => this.nodes.get(s)?.leaving !== true);
        if (heir !== undefined)
          next = {
            ...c,
            epoch: toEpoch(c.epoch + 1),
            primary: heir,
            secondaries: c.secondaries.filter((s) => s !== heir),
            learners: [...c.learners, node],
          };
      } else if (c.secondaries.includes(node)) {
        next = {
          ...c,
          epoch: toEpoch(c.epoch + 1),
          secondaries: c.secondaries.filter((s) => s !== node),
          learners: [...c.learners, node],
        };
      }
      if (next === undefined) return c;
      changed.push(next);
      return next;
    });
    if (changed.length > 0) this.map = { ...this.map, version: this.map.version + 1, configs };
    return changed;
  }

  /** What balance.ts reads of the live nodes at `nowMs`. */
  private liveness(nowMs: number): Pick<BalanceView, 'alive' | 'progress'> {
    return {
      alive: (id) => {
        const n = this.nodes.get(id);
        return n !== undefined && this.isAlive(n, nowMs);
      },
      progress: (id, p) => this.nodes.get(id)?.progress.get(p),
    };
  }

  private maybeForm(nowMs: number): boolean {
    const { settings } = this.map;
    const alive = [...this.nodes.values()].filter((n) => this.isAlive(n, nowMs) && n.incarnation !== '');
    if (alive.length < settings.initialNodes) return false;
    const placement = initialPlacement(
      alive.map((n) => n.id),
      settings.partitions,
      settings.replicas,
    );
    const configs: Config[] = placement.map((p, i) => ({
      partition: partitionId(i),
      epoch: toEpoch(1),
      primary: p.primary,
      secondaries: p.secondaries,
      learners: [],
    }));
    this.map = { ...this.map, version: this.map.version + 1, configs };
    return true;
  }

  /** The configuration that should replace `c` now, or `c` itself. */
  private reconfigure(c: Config, nowMs: number, frozen: boolean): Config {
    const node = (id: NodeId) => this.nodes.get(id);
    const aliveNode = (id: NodeId) => {
      const n = node(id);
      return n !== undefined && this.isAlive(n, nowMs);
    };
    const progressOf = (id: NodeId) => node(id)?.progress.get(c.partition);
    /** Reported in this epoch as inactive: it restarted and lost its role (S4). */
    const restarted = (id: NodeId) => {
      if (node(id)?.relearn.has(c.partition)) return true;
      const p = progressOf(id);
      return p !== undefined && p.epoch === c.epoch && p.role === 'inactive';
    };
    const primaryLost = !aliveNode(c.primary) || restarted(c.primary);
    if (primaryLost && frozen) return c;
    if (primaryLost) {
      // S5: only live secondaries active in this configuration; the highest log wins.
      // S4: not one that lost its state in a restart while another may hold the data.
      let candidates = c.secondaries.filter(
        (s) =>
          aliveNode(s) &&
          progressOf(s)?.epoch === c.epoch &&
          progressOf(s)?.role === 'secondary' &&
          !node(s)?.relearn.has(c.partition),
      );
      if (candidates.length === 0) {
        // S5: if every member restarted, the reporting member with the highest log.
        const members = [c.primary, ...c.secondaries];
        const everyMemberRestartedOrDead = members.every((m) => !aliveNode(m) || restarted(m));
        const amnesiac = (m: NodeId) => node(m)?.relearn.has(c.partition) === true;
        // S4: one that lost its state in a restart holds nothing; never prefer it to a dead
        // member that may hold the data.
        // S13: nor one that reported the partition corrupt: its copy is never served, so
        // making it primary would leave the partition to it (and drop the dead members that
        // hold the data); the partition waits for a healthy member instead.
        const reporting = members.filter(
          (m) => aliveNode(m) && restarted(m) && !amnesiac(m) && !node(m)?.corrupt.has(c.partition),
        );
        const allReported = members.every((m) => progressOf(m) !== undefined || !aliveNode(m) || amnesiac(m));
        if (everyMemberRestartedOrDead && allReported) candidates = reporting;
        // Every member alive and empty: the data is gone everywhere (the memory backend
        // promises no more), so one of them starts the partition afresh. Not when one found
        // the partition corrupt (S13): it still holds the data, so the partition waits.
        if (
          candidates.length === 0 &&
          members.every((m) => aliveNode(m) && amnesiac(m) && !node(m)?.corrupt.has(c.partition))
        )
          candidates = members;
      }
      if (candidates.length === 0) return c; // S5: stay unavailable, configuration unchanged
      const best = candidates.reduce((a, b) => (compareProgress(progressOf(b), progressOf(a)) > 0 ? b : a));
      // Every member restarted: the best of them starts the new epoch with what it holds.
      node(best)?.relearn.delete(c.partition);
      const members = [c.primary, ...c.secondaries].filter((m) => m !== best && aliveNode(m));
      // S4: a member whose log did not survive its restart rejoins as a learner.
      const secondaries = members.filter(
        (m) => (this.mayRejoin(m) || !restarted(m)) && !node(m)?.relearn.has(c.partition),
      );
      const learners = [...c.learners.filter(aliveNode), ...members.filter((m) => !secondaries.includes(m))];
      return this.relearned({
        partition: c.partition,
        epoch: toEpoch(c.epoch + 1),
        primary: best,
        secondaries,
        learners,
      });
    }
    const lost = [...c.secondaries, ...c.learners].filter((s) => !aliveNode(s));
    // S4: a secondary that restarted without its log (memory backend, --sync none) relearns.
    const amnesiac = c.secondaries.filter(
      (s) => aliveNode(s) && restarted(s) && (!this.mayRejoin(s) || node(s)!.relearn.has(c.partition)),
    );
    // S13, S7: a learner that found the partition corrupt in this epoch drops it and relearns
    // from zero only under a new epoch: that voids a promotion request based on its old acks
    // (onPromote checks the epoch) and resets the primary's count of them.
    const corruptLearner = c.learners.some(
      (l) => aliveNode(l) && node(l)!.corrupt.has(c.partition) && progressOf(l)?.epoch === c.epoch,
    );
    if (lost.length > 0 || amnesiac.length > 0 || corruptLearner) {
      // S13: not on the word of a primary that has not reported since it registered: it may
      // have restarted and find the partition corrupt, and then the lost members hold the only
      // healthy copies (found by the simulator's silent-corruption fault, issue 13).
      if (!node(c.primary)?.reported) return c;
      // §6: a lost secondary is removed; the primary goes on with the rest (S8 still applies).
      const secondaries = c.secondaries.filter((s) => aliveNode(s) && !amnesiac.includes(s));
      const learners = [...c.learners.filter(aliveNode), ...amnesiac];
      return this.relearned({ ...c, epoch: toEpoch(c.epoch + 1), secondaries, learners });
    }
    return this.maybeAddLearner(c, nowMs);
  }

  /** S4: a node that is no longer primary or secondary of `c` has nothing left to relearn there. */
  private relearned(c: Config): Config {
    for (const n of this.nodes.values()) {
      if (n.relearn.has(c.partition) && c.primary !== n.id && !c.secondaries.includes(n.id))
        n.relearn.delete(c.partition);
    }
    return c;
  }

  /**
   * §6: a partition with fewer than R replicas gets a learner: at once on a live server
   * that held it before (a node coming back), else after --rereplicate-after-ms on any live
   * server that does not hold it. One learner at a time.
   */
  private maybeAddLearner(c: Config, nowMs: number): Config {
    const size = 1 + c.secondaries.length + c.learners.length;
    if (size >= this.map.settings.replicas || c.learners.length > 0) return c;
    const since = this.underSinceMs.get(c.partition) ?? nowMs;
    // Any live server that reported since it registered, a brand-new empty one included.
    const candidates = [...this.nodes.values()].filter((n) => this.eligible(n, nowMs) && !holds(c, n.id));
    const returning = candidates.filter((n) => n.progress.has(c.partition));
    let pick = returning[0];
    if (!pick && nowMs - since >= this.opts.rereplicateAfterMs && candidates.length > 0) {
      // The least loaded server, so replicas spread.
      pick = candidates.reduce((a, b) => (this.configsOf(b.id).length < this.configsOf(a.id).length ? b : a));
    }
    if (!pick) return c;
    return { ...c, epoch: toEpoch(c.epoch + 1), learners: [pick.id] };
  }

  /**
   * S7: the primary of `partition` at `epoch` asks to make `learner` a secondary. Applied
   * only if the partition is still at that epoch and the learner is still the incarnation
   * whose acks the primary counted; the answer is always the current
   * configuration, so a repeated request gets the same answer. Returns whether the map changed.
   */
  onPromote(
    partition: PartitionId,
    epoch: number,
    learner: NodeId,
    learnerIncarnation: string,
  ): { config: Config | undefined; changed: boolean } {
    const c = this.map.configs[partition];
    if (!c || c.epoch !== epoch || !c.learners.includes(learner)) return { config: c, changed: false };
    // S7: the primary's acks came from this incarnation of the learner; one that restarted
    // since lost what it acked (S11) and must catch up again.
    if (this.nodes.get(learner)?.incarnation !== learnerIncarnation) return { config: c, changed: false };
    // Issue 15: a server that is stopping or being drained gets no role that writes wait for.
    if (this.nodes.get(learner)?.leaving || this.draining.has(learner)) return { config: c, changed: false };
    const next: Config = {
      ...c,
      epoch: toEpoch(c.epoch + 1),
      secondaries: [...c.secondaries, learner],
      learners: c.learners.filter((l) => l !== learner),
    };
    this.map = {
      ...this.map,
      version: this.map.version + 1,
      configs: this.map.configs.map((x) => (x.partition === partition ? next : x)),
    };
    return { config: next, changed: true };
  }

  /**
   * §4: the primary of `partition` at `epoch` has not heard from `secondary` for a while
   * (a link between them is cut, though both reach us): it becomes a learner under a new
   * epoch, so commits and reads go on without it, and is promoted again once it caught up
   * (S7). Refused when the partition would drop below --min-write-replicas (S8), and when
   * the partition is no longer at that epoch. Returns the current configuration.
   */
  onRemoveSecondary(
    partition: PartitionId,
    epoch: number,
    secondary: NodeId,
  ): { config: Config | undefined; changed: boolean } {
    const c = this.map.configs[partition];
    if (!c || c.epoch !== epoch || !c.secondaries.includes(secondary)) return { config: c, changed: false };
    if (c.secondaries.length < this.minWriteReplicas) return { config: c, changed: false };
    const next: Config = {
      ...c,
      epoch: toEpoch(c.epoch + 1),
      secondaries: c.secondaries.filter((s) => s !== secondary),
      learners: c.learners.length === 0 ? [secondary] : c.learners,
    };
    this.map = {
      ...this.map,
      version: this.map.version + 1,
      configs: this.map.configs.map((x) => (x.partition === partition ? next : x)),
    };
    return { config: next, changed: true };
  }

  /**
   * A member that restarted may stay a secondary only if its log survived (S4): the memory
   * backend and --sync none rejoin as learners (issue 3); until then they are left out.
   */
  private mayRejoin(id: NodeId): boolean {
    const n = this.nodes.get(id);
    return n?.durable === true;
  }

  /** Partitions whose live primary reported serving in the current epoch. */
  partitionsReady(nowMs: number): number {
    return this.map.configs.filter((c) => {
      const n = this.nodes.get(c.primary);
      const p = n?.progress.get(c.partition);
      return n !== undefined && this.isAlive(n, nowMs) && p?.epoch === c.epoch && p.serving;
    }).length;
  }

  /** §7: a primary with no secondaries confirms its epoch here. */
  isCurrent(partition: PartitionId, epoch: number): boolean {
    return this.map.configs[partition]?.epoch === epoch;
  }
}

/**
 * The nameserver host (DESIGN §1, §4, §6, S3, S13, S15): everything the nameserver process
 * decides around the core (src/core/nameserver) — requests (register, heartbeat, promote,
 * remove, confirm, map, nodes), ticks, when the map must be persisted, what is logged — as
 * a pure state machine in the style of etcd-io/raft's `Ready`. Inputs: a decoded request or
 * a tick, with `nowMs`. Outputs: effects, executed in order by the driver
 * (src/nameserver/server.ts with a file, sockets and timers; test/sim/nameserver-node.ts
 * over the simulated network and clock), then the reply.
 *
 * S3: a `persist` effect comes before the reply that depends on it; the driver writes the
 * map durably before it sends the reply. No I/O, no timers, no `Date.now()`, no randomness.
 */
import { InvalidArgumentError, NodeIdInUseError } from '../core/errors.js';
import { type LiveSettings, changeLive, defaultLive, liveForNode } from '../core/nameserver/live.js';
import { type ClusterSettings, Nameserver, type PersistedMap } from '../core/nameserver/nameserver.js';
import { assertNever, nodeId as toNodeId, partitionId } from '../core/types.js';
import {
  type ClusterInfo,
  type ClusterOverview,
  type NameserverRequest,
  type NodeInfo,
  type PartitionView,
  toProgress,
} from '../rpc/messages.js';
import { clusterLimits } from '../rpc/limits.js';
import { ClusterWatch } from './overview.js';

export interface NameserverHostOptions {
  /** The settings asked for; a persisted map's own win (S8). */
  readonly settings: ClusterSettings;
  readonly deadAfterMs: number;
  readonly rereplicateAfterMs: number;
  /** Issue 15: the flags the live settings start from in a map without them (default 1000, info). */
  readonly heartbeatMs?: number;
  readonly logLevel?: string;
}

export type NameserverEffect =
  /** Write the map durably before executing the effects after it or sending the reply (S3). */
  | { readonly kind: 'persist'; readonly map: PersistedMap }
  | {
      readonly kind: 'log';
      readonly level: 'info' | 'warn' | 'error';
      readonly fields: Record<string, unknown>;
      readonly msg: string;
    };

/**
 * `error`: a DstoreError is the answer (its wire form goes back); anything else is a bug the
 * driver reports as its transport does (INTERNAL), after executing the effects.
 */
export type NameserverReply =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly error: unknown };

/** What one input produced: effects to execute in order, then (for a request) the reply. */
export interface NameserverStep<R = NameserverReply> {
  readonly effects: readonly NameserverEffect[];
  readonly reply: R;
}

/** The period of the nameserver's tick for a heartbeat interval. */
export function tickPeriodMs(heartbeatMs: number): number {
  return Math.max(50, Math.floor(heartbeatMs / 2));
}

/** S15: the persisted map from its file's text, or why it is refused (`path` names it). */
export function parseMap(text: string, path: string): PersistedMap {
  let parsed: PersistedMap;
  try {
    parsed = JSON.parse(text) as PersistedMap;
  } catch (err) {
    throw new InvalidArgumentError(
      `${path} is not valid JSON; refusing to start rather than forget the cluster (move ` +
        `it away to start a new cluster)`,
      { cause: err },
    );
  }
  if (parsed.formatVersion !== 1 || !Array.isArray(parsed.configs) || typeof parsed.clusterId !== 'string') {
    throw new InvalidArgumentError(`${path} is not a dstore cluster map (format 1); refusing to start`);
  }
  return parsed;
}

export class NameserverHost {
  readonly core: Nameserver;
  private readonly startedMs: number;
  private persistedVersion = -1;
  private effects: NameserverEffect[] = [];
  /** Where the nameserver is reached (`nodes` shows it); the driver sets it once it listens. */
  address = '';
  /** --max-value-bytes of each storage server, from its registration (the map's `limits`). */
  private readonly maxValueBytesOf = new Map<string, number>();
  /** Issue 15: each storage server's HTTP address, from its registration (for `nodes`). */
  private readonly httpAddressOf = new Map<string, string>();
  /** Storage servers whose last heartbeat said their storage failed: when, and why. */
  /** S16: each storage server's anti-entropy report, from its last heartbeat (for `nodes`). */
  private readonly antiEntropy = new Map<string, NonNullable<NodeInfo['antiEntropy']>>();
  private readonly unhealthy = new Map<string, { readonly sinceMs: number; lastMs: number; readonly reason: string }>();
  /** What each node last reported corrupt (S13), so each change is logged once. */
  private readonly corruptLogged = new Map<string, string>();
  /** The stuck corrupt partitions last logged (see logStuckCorrupt), so each change is logged once. */
  private stuckLogged = '';
  /** Issue 15: recent events and the calls' time series, for `overview` (the dashboard, `dstore top`). */
  readonly watch = new ClusterWatch();

  /**
   * `map`: the persisted one, or a new one (`fresh`). The first effects (persist the map,
   * say what was loaded) are taken with `takeEffects()`.
   */
  constructor(
    map: PersistedMap,
    fresh: boolean,
    private readonly opts: NameserverHostOptions,
    nowMs: number,
  ) {
    this.startedMs = nowMs;
    if (!fresh) {
      const s = map.settings;
      const asked = opts.settings;
      if (
        s.partitions !== asked.partitions ||
        s.replicas !== asked.replicas ||
        s.minWriteReplicas !== asked.minWriteReplicas
      ) {
        // S8: fixed when the cluster was created; the persisted ones win.
        this.log(
          'warn',
          { persisted: s, requested: asked },
          'cluster settings are fixed at creation; using the persisted ones',
        );
      }
    }
    this.core = new Nameserver(
      map,
      { deadAfterMs: map.live?.deadAfterMs ?? opts.deadAfterMs, rereplicateAfterMs: opts.rereplicateAfterMs },
      nowMs,
    );
    if (map.live !== undefined)
      this.log('info', { live: map.live }, 'live settings loaded from the map (they win over the flags)');
    this.persist();
    this.log(
      'info',
      { clusterId: map.clusterId, fresh, settings: map.settings, mapVersion: map.version },
      fresh ? 'new cluster map' : 'cluster map loaded',
    );
  }

  /**
   * Issue 15: the live settings: the map's, else the flags' (an older map, or none set yet).
   * A driver applies `heartbeatMs` (its tick) and `logLevel` (its logger) when `epoch` changes.
   */
  get live(): LiveSettings {
    return (
      this.core.map.live ??
      defaultLive({
        minWriteReplicas: this.core.map.settings.minWriteReplicas,
        heartbeatMs: this.opts.heartbeatMs ?? 1000,
        deadAfterMs: this.opts.deadAfterMs,
        ...(this.opts.logLevel === undefined ? {} : { logLevel: this.opts.logLevel }),
      })
    );
  }

  /**
   * Issue 15: switches live setting `name` (read-mode, min-write-replicas, heartbeat-ms,
   * dead-after-ms, log-level, sync with `node`) to `value`. The reply is `{ live, weakens?,
   * summary, mapVersion }`, or a typed error (InvalidArgumentError: unknown setting, bad
   * value, a weakening switch without `force`, …). The `persist` effect comes first (S3):
   * storage servers learn the settings from the next heartbeat replies.
   */
  setSetting(
    name: string,
    value: string,
    options: { readonly node?: string; readonly force?: boolean },
    nowMs: number,
  ): NameserverStep {
    return this.onRequest(
      {
        t: 'configSet',
        name,
        value,
        ...(options.node === undefined ? {} : { node: options.node }),
        ...(options.force === undefined ? {} : { force: options.force }),
      },
      nowMs,
    );
  }

  /** The effects produced since the last call (the constructor's, for a driver starting). */
  takeEffects(): NameserverEffect[] {
    const out = this.effects;
    this.effects = [];
    return out;
  }

  /** The periodic tick: failure detection, failover, re-replication (§4, §6). */
  onTick(nowMs: number): readonly NameserverEffect[] {
    this.tick(nowMs);
    this.observe(nowMs);
    this.watch.sample(nowMs);
    return this.takeEffects();
  }

  /** A decoded request whose cluster token the driver checked (DESIGN §12). */
  onRequest(req: NameserverRequest, nowMs: number): NameserverStep {
    let reply: NameserverReply;
    try {
      reply = { ok: true, value: this.handle(req, nowMs) };
    } catch (err) {
      reply = { ok: false, error: err };
    }
    this.observe(nowMs);
    return { effects: this.takeEffects(), reply };
  }

  /** Issue 15: the events since the last input (map changes, nodes dead or alive again). */
  private observe(nowMs: number): void {
    const alive = new Map<string, boolean>();
    for (const n of this.core.nodes.values()) alive.set(n.id, this.core.isAlive(n, nowMs));
    this.watch.observe(this.core.map, alive, nowMs);
  }

  private log(level: 'info' | 'warn' | 'error', fields: Record<string, unknown>, msg: string): void {
    this.effects.push({ kind: 'log', level, fields, msg });
  }

  private persist(): void {
    if (this.core.map.version === this.persistedVersion) return;
    this.effects.push({ kind: 'persist', map: this.core.map });
    this.persistedVersion = this.core.map.version;
  }

  private tick(nowMs: number): void {
    const before = this.core.map;
    if (!this.core.onTick(nowMs)) return;
    this.persist();
    const changed = this.core.map.configs.filter((c, i) => before.configs[i]?.epoch !== c.epoch);
    if (before.configs.length === 0)
      this.log(
        'info',
        { partitions: this.core.map.configs.length, nodes: Object.keys(this.core.map.nodes) },
        'cluster formed',
      );
    else
      for (const c of changed)
        this.log(
          'info',
          { partition: c.partition, epoch: c.epoch, primary: c.primary, secondaries: c.secondaries },
          'partition reconfigured',
        );
  }

  private handle(req: NameserverRequest, now: number): unknown {
    switch (req.t) {
      case 'register': {
        const registration = {
          nodeId: toNodeId(req.nodeId),
          address: req.address,
          backend: req.backend,
          incarnation: req.incarnation,
          durable: req.durable,
          activePartitions: req.activePartitions ?? [],
        };
        const holder = this.core.conflictingNode(registration, now);
        if (holder) {
          const refusal = new NodeIdInUseError(
            req.nodeId,
            holder.address,
            req.address,
            now - holder.lastHeartbeatMs,
            this.live.deadAfterMs,
          );
          this.log(
            'warn',
            {
              nodeId: req.nodeId,
              address: holder.address,
              refusedAddress: req.address,
              heartbeatAgeMs: refusal.heartbeatAgeMs,
            },
            `registration refused: ${refusal.message}`,
          );
          throw refusal;
        }
        this.unhealthy.delete(req.nodeId);
        if (req.maxValueBytes !== undefined) this.maxValueBytesOf.set(req.nodeId, req.maxValueBytes);
        if (req.httpAddress === undefined) this.httpAddressOf.delete(req.nodeId);
        else this.httpAddressOf.set(req.nodeId, req.httpAddress);
        if (this.core.onRegister(registration, now)) this.persist();
        this.watch.record({
          atMs: now,
          kind: 'registered',
          node: req.nodeId,
          message: `${req.nodeId} registered (${req.address}, ${req.backend})`,
        });
        this.log(
          'info',
          { nodeId: req.nodeId, address: req.address, backend: req.backend },
          'storage server registered',
        );
        this.tick(now);
        const { settings, clusterId } = this.core.map;
        const live = this.core.map.live;
        return {
          clusterId,
          partitions: settings.partitions,
          minWriteReplicas: this.core.minWriteReplicas,
          deadAfterMs: this.live.deadAfterMs,
          ...(live === undefined ? {} : { live: liveForNode(live, req.nodeId) }),
        };
      }
      case 'heartbeat': {
        if (req.unhealthy !== undefined) return this.onUnhealthy(req.nodeId, req.incarnation, req.unhealthy, now);
        if (this.unhealthy.delete(req.nodeId)) this.log('info', { nodeId: req.nodeId }, 'storage server healthy again');
        if (req.antiEntropy !== undefined) this.antiEntropy.set(req.nodeId, req.antiEntropy);
        if (req.ops !== undefined) this.watch.onOps(req.nodeId, req.ops, now);
        const reply = this.core.onHeartbeat(
          {
            nodeId: toNodeId(req.nodeId),
            incarnation: req.incarnation,
            uptimeMs: req.uptimeMs,
            keys: req.keys,
            progress: req.progress.map(toProgress),
          },
          now,
        );
        if (reply.kind === 'register') return reply;
        this.logCorrupt(req.nodeId);
        this.logStuckCorrupt(now);
        const live = this.core.map.live;
        return {
          ...reply,
          addresses: this.addresses(),
          ...(live === undefined ? {} : { live: liveForNode(live, req.nodeId) }),
        };
      }
      case 'promote': {
        const { config, changed } = this.core.onPromote(
          partitionId(req.p),
          req.epoch,
          toNodeId(req.learner),
          req.learnerIncarnation,
        );
        if (changed) {
          this.persist();
          this.log(
            'info',
            { partition: req.p, epoch: config?.epoch, learner: req.learner },
            'learner promoted to secondary',
          );
        }
        if (!config) throw new InvalidArgumentError(`partition ${req.p} does not exist`);
        return { config };
      }
      case 'removeSecondary': {
        const { config, changed } = this.core.onRemoveSecondary(partitionId(req.p), req.epoch, toNodeId(req.secondary));
        if (changed) {
          this.persist();
          this.log(
            'warn',
            { partition: req.p, epoch: config?.epoch, secondary: req.secondary },
            "secondary removed at its primary's request (it does not answer the primary)",
          );
        }
        if (!config) throw new InvalidArgumentError(`partition ${req.p} does not exist`);
        return { config };
      }
      case 'confirmEpoch':
        return { current: this.core.isCurrent(partitionId(req.p), req.epoch) };
      case 'map':
        return this.mapReply();
      case 'nodes':
        return this.clusterInfo(now);
      case 'leave': {
        const changed = this.core.onLeave(toNodeId(req.nodeId), req.incarnation, now);
        if (changed.length > 0) {
          this.persist();
          this.log(
            'info',
            {
              nodeId: req.nodeId,
              handedOver: changed
                .filter((c) => c.learners.includes(toNodeId(req.nodeId)) && c.primary !== req.nodeId)
                .map((c) => ({ partition: c.partition, epoch: c.epoch, primary: c.primary })),
            },
            'storage server stopping: its primaries handed over, its secondaries go on without it',
          );
        }
        return { configs: changed };
      }
      case 'drain': {
        const node = toNodeId(req.node);
        if (this.core.setDraining(node, req.on, now)) {
          this.persist();
          this.log('info', { nodeId: req.node }, req.on ? 'draining storage server' : 'drain cancelled');
        }
        const held = this.core.configsOf(node);
        return {
          node: req.node,
          draining: [...this.core.draining],
          held: held.length,
          led: held.filter((c) => c.primary === node).length,
        };
      }
      case 'overview':
        return this.overview(now);
      case 'configGet':
        return this.configReply();
      case 'configSet': {
        const change = changeLive(
          this.live,
          this.core.map.settings.replicas,
          this.core.map.nodes,
          req.name,
          req.value,
          {
            ...(req.node === undefined ? {} : { node: req.node }),
            ...(req.force === undefined ? {} : { force: req.force }),
          },
        );
        this.core.setLive(change.live);
        this.persist(); // S3: on disk before any reply or heartbeat announces it
        this.log(
          change.weakens === undefined ? 'info' : 'warn',
          { setting: req.name, value: req.value, node: req.node, epoch: change.live.epoch, weakens: change.weakens },
          `live setting changed: ${change.summary}`,
        );
        return {
          ...this.configReply(),
          summary: change.summary,
          ...(change.weakens === undefined ? {} : { weakens: change.weakens }),
        };
      }
      case 'leader':
        // A nameserver alone (no etcd) leads itself since it started; an elected one answers this itself.
        return { self: 'nameserver', leader: { nodeId: 'nameserver', address: this.address, sinceMs: this.startedMs } };
      default:
        return assertNever(req);
    }
  }

  /**
   * A storage server whose storage failed holds no replica until it reloads and registers
   * again. The core counts it as dead at once, so its partitions fail over at this tick
   * (§4); meanwhile `nodes` shows it as unhealthy.
   */
  private onUnhealthy(nodeId: string, incarnation: string, reason: string, now: number): unknown {
    const known = this.unhealthy.get(nodeId);
    if (known) known.lastMs = now;
    else {
      this.unhealthy.set(nodeId, { sinceMs: now, lastMs: now, reason });
      this.log(
        'warn',
        { nodeId, reason },
        'storage server reports its storage failed; it counts as dead until it registers again',
      );
      this.core.onStorageFailed(toNodeId(nodeId), incarnation);
      this.tick(now);
    }
    return { kind: 'ok', mapVersion: this.core.map.version, configs: [], addresses: this.addresses() };
  }

  /** Issue 15: the live settings, as `config get` shows them. */
  private configReply(): { live: LiveSettings; replicas: number; mapVersion: number } {
    return { live: this.live, replicas: this.core.map.settings.replicas, mapVersion: this.core.map.version };
  }

  private addresses(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const n of this.core.nodes.values()) out[n.id] = n.address;
    return out;
  }

  private mapReply(): unknown {
    const { map } = this.core;
    return {
      clusterId: map.clusterId,
      formed: this.core.formed,
      partitions: map.settings.partitions,
      replicas: map.settings.replicas,
      minWriteReplicas: this.core.minWriteReplicas,
      readMode: this.live.readMode,
      version: map.version,
      configs: map.configs,
      addresses: this.addresses(),
      ...clusterLimits(this.core.nodes.keys(), this.maxValueBytesOf),
    };
  }

  /** S13: says in the log which partitions a storage server found corrupt, when that changes. */
  private logCorrupt(nodeId: string): void {
    const partitions = this.core.corruptPartitions(toNodeId(nodeId));
    const key = partitions.join(',');
    if ((this.corruptLogged.get(nodeId) ?? '') === key) return;
    this.corruptLogged.set(nodeId, key);
    if (partitions.length === 0) {
      this.log('info', { nodeId }, 'storage server reports no corrupt partition any more (S13)');
      return;
    }
    // Which of them have no other member that could take over: those stay unavailable.
    const stuck = partitions.filter((p) => {
      const c = this.core.map.configs[p];
      return c !== undefined && c.primary === nodeId && c.secondaries.length === 0;
    });
    this.log(
      'error',
      { nodeId, partitions, unavailable: stuck },
      'storage server found partitions corrupt (S13): it steps out of them and relearns each from a healthy member; ' +
        'a partition no healthy member holds stays unavailable',
    );
  }

  /**
   * S13, S5: names each partition that no healthy member can serve (its members are corrupt
   * or dead), and any live server that holds an older copy of it, when that changes. The
   * nameserver never picks such a copy by itself (it may lack acknowledged writes); no
   * command overrides this yet (DESIGN S5's `dstore force-primary` is not implemented).
   */
  private logStuckCorrupt(now: number): void {
    const stuck = this.core.stuckCorrupt(now);
    const key = JSON.stringify(stuck);
    if (key === this.stuckLogged) return;
    this.stuckLogged = key;
    for (const s of stuck) {
      this.log(
        'error',
        { partition: s.partition, epoch: s.epoch, corruptOn: s.corrupt, olderCopies: s.holders },
        s.holders.length > 0
          ? 'partition unavailable (S13, S5): every member found it corrupt or is dead; a live server holds an older ' +
              'copy from before it was removed, which may lack acknowledged writes, so it is not taken automatically ' +
              '(no force-primary command exists yet: bring a member with a healthy copy back)'
          : 'partition unavailable (S13, S5): every member found it corrupt or is dead; it waits ' +
              'for a member with a healthy copy',
      );
    }
  }

  private clusterInfo(now: number): ClusterInfo {
    const { map } = this.core;
    const nodes: NodeInfo[] = [
      {
        id: 'nameserver',
        role: 'nameserver',
        address: this.address,
        state: 'alive',
        partitionsHeld: 0,
        partitionsLed: 0,
        keys: 0,
        uptimeMs: now - this.startedMs,
      },
    ];
    for (const n of [...this.core.nodes.values()].sort((a, b) => a.id.localeCompare(b.id))) {
      const held = this.core.configsOf(n.id);
      nodes.push({
        id: n.id,
        role: 'storage',
        address: n.address,
        ...(this.httpAddressOf.has(n.id) ? { httpAddress: this.httpAddressOf.get(n.id)! } : {}),
        // Not heard from since this nameserver started (incarnation ''): S15 counts it alive
        // for one dead-after, but nothing is known of it, so no heartbeat time nor uptime.
        state: this.isUnhealthy(n.id, now)
          ? 'unhealthy'
          : n.incarnation === ''
            ? this.core.isAlive(n, now)
              ? 'unknown'
              : 'dead'
            : this.core.isAlive(n, now)
              ? 'alive'
              : 'dead',
        ...(n.incarnation === '' ? {} : { lastHeartbeatMs: n.lastHeartbeatMs }),
        partitionsHeld: held.length,
        partitionsLed: held.filter((c) => c.primary === n.id).length,
        keys: n.keys,
        logSeq: [...n.progress.values()].reduce((sum, p) => sum + p.lastSeq, 0),
        backend: n.backend,
        uptimeMs: n.uptimeMs,
        ...(n.corrupt.size > 0 && this.core.isAlive(n, now)
          ? { corruptPartitions: this.core.corruptPartitions(n.id) }
          : {}),
        ...(this.antiEntropy.has(n.id) ? { antiEntropy: this.antiEntropy.get(n.id)! } : {}),
        ...(this.core.draining.has(n.id)
          ? { moving: 'draining' as const }
          : n.leaving && this.core.isAlive(n, now)
            ? { moving: 'leaving' as const }
            : {}),
      });
    }
    return {
      clusterId: map.clusterId,
      partitions: map.settings.partitions,
      replicas: map.settings.replicas,
      minWriteReplicas: this.core.minWriteReplicas,
      readMode: this.live.readMode,
      live: this.live,
      formed: this.core.formed,
      partitionsReady: this.core.partitionsReady(now),
      mapVersion: map.version,
      nodes,
    };
  }

  /**
   * Issue 15: the dashboard's and `dstore top`'s view: `nodes` (the same rows), each with its
   * heartbeat age and calls, the partition map with each member's lag behind its primary (from
   * the progress they report), recent events and the calls' time series.
   */
  overview(now: number): ClusterOverview {
    const info = this.clusterInfo(now);
    const { map } = this.core;
    const nodes = info.nodes.map((n) => {
      const ops = n.role === 'storage' ? this.watch.opsOf(n.id, now) : undefined;
      return {
        ...n,
        ...(n.lastHeartbeatMs === undefined ? {} : { heartbeatAgeMs: Math.max(0, now - n.lastHeartbeatMs) }),
        ...(ops === undefined
          ? {}
          : { opsPerSec: Math.round(((ops.reads + ops.writes) * 100_000) / Math.max(1, ops.intervalMs)) / 100 }),
        ...(ops === undefined ? {} : { p99Ms: ops.p99Ms }),
      };
    });
    const partitions: PartitionView[] = map.configs.map((c) => {
      const lead = this.core.nodes.get(c.primary)?.progress.get(c.partition);
      const lag: Record<string, number> = {};
      if (lead !== undefined)
        for (const m of [...c.secondaries, ...c.learners]) {
          const p = this.core.nodes.get(m)?.progress.get(c.partition);
          if (p !== undefined) lag[m] = Math.max(0, lead.lastSeq - p.lastSeq);
        }
      return {
        partition: c.partition,
        epoch: c.epoch,
        primary: c.primary,
        secondaries: [...c.secondaries],
        learners: [...c.learners],
        ...(lead === undefined ? {} : { lastSeq: lead.lastSeq }),
        serving: lead?.serving === true && lead.epoch === c.epoch,
        lag,
      };
    });
    return {
      clusterId: info.clusterId,
      formed: info.formed,
      mapVersion: info.mapVersion,
      partitionsReady: info.partitionsReady,
      nowMs: now,
      // The live settings (readMode, minWriteReplicas, heartbeatMs, deadAfterMs, logLevel, sync) win.
      settings: {
        ...map.settings,
        rereplicateAfterMs: this.opts.rereplicateAfterMs,
        ...this.live,
        liveEpoch: this.live.epoch,
      },
      nodes,
      partitions,
      events: this.watch.recentEvents(),
      series: this.watch.series(),
    };
  }

  /** Said so within the last --dead-after-ms (a node that died unhealthy shows as dead). */
  private isUnhealthy(id: string, now: number): boolean {
    const u = this.unhealthy.get(id);
    return u !== undefined && now - u.lastMs <= this.live.deadAfterMs;
  }
}

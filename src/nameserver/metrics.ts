/**
 * The nameserver's Prometheus metrics (docs/metrics.md). Counted at the driver from the maps
 * it persists (the core stays pure): each new map is compared with the previous one. The
 * gauges (nodes by state, partitions ready) are read from `nodes` when scraped.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { DstoreError } from '../core/errors.js';
import type { PersistedMap } from '../core/nameserver/nameserver.js';
import type { ClusterInfo } from '../rpc/messages.js';

/** Why a partition's configuration changed, as `dstore_reconfigurations_total{kind}` counts it. */
export type ReconfigurationKind = 'formed' | 'failover' | 'promotion' | 'learner_added' | 'member_removed' | 'other';

/** Request types counted by name (others: `other`; not a string: `malformed`), bounding the label. */
const REQUESTS: ReadonlySet<string> = new Set([
  'register',
  'heartbeat',
  'confirmEpoch',
  'promote',
  'removeSecondary',
  'map',
  'nodes',
  'leader',
]);

const NODE_STATES = ['alive', 'dead', 'starting', 'unknown', 'unhealthy'] as const;

export class NameserverMetrics {
  readonly registry = new Registry();
  /** Reads `nodes` for the gauges; undefined while the process does not serve the map (a follower). */
  source: (() => Promise<ClusterInfo | undefined>) | undefined;
  private readonly reconfigurations: Counter<'kind'>;
  private readonly failovers: Counter;
  private readonly promotions: Counter;
  private readonly mapWrites: Counter;
  private previous: PersistedMap | undefined;
  private cached: { readonly atMs: number; readonly info: Promise<ClusterInfo | undefined> } | undefined;
  /** Open inbound RPC connections (set by the process once it listens). */
  connections: (() => number) | undefined;
  private readonly requests: Counter<'request' | 'outcome'>;
  private readonly errors: Counter<'code'>;
  private readonly requestChildren = new Map<string, Counter.Internal>();

  constructor() {
    const registers = [this.registry];
    const self = this;
    this.reconfigurations = new Counter({
      name: 'dstore_reconfigurations_total',
      help: 'Partition configurations changed by the nameserver (new epochs), by kind',
      labelNames: ['kind'],
      registers,
    });
    this.failovers = new Counter({
      name: 'dstore_failovers_total',
      help: 'Partitions whose primary the nameserver replaced (a secondary promoted to primary)',
      registers,
    });
    this.promotions = new Counter({
      name: 'dstore_learner_promotions_total',
      help: 'Learners promoted to secondaries once caught up',
      registers,
    });
    this.requests = new Counter({
      name: 'dstore_nameserver_requests_total',
      help: 'Requests this nameserver answered (register, heartbeat, map, nodes, …), by outcome',
      labelNames: ['request', 'outcome'],
      registers,
    });
    this.errors = new Counter({
      name: 'dstore_nameserver_errors_total',
      help: 'Nameserver requests refused with an error, by error code (docs/errors.md)',
      labelNames: ['code'],
      registers,
    });
    new Gauge({
      name: 'dstore_nameserver_connections',
      help: 'Open inbound RPC connections of the nameserver (clients, storage servers)',
      registers,
      collect() {
        this.set(self.connections?.() ?? 0);
      },
    });
    this.mapWrites = new Counter({
      name: 'dstore_cluster_map_writes_total',
      help: 'Cluster map versions persisted (file or etcd) by this nameserver',
      registers,
    });
    new Gauge({
      name: 'dstore_nodes',
      help: 'Storage servers known to the nameserver, by state (read at scrape; absent on a following candidate)',
      labelNames: ['state'],
      registers,
      async collect() {
        const info = await self.info();
        this.reset();
        if (!info) return;
        for (const s of NODE_STATES) this.set({ state: s }, 0);
        for (const n of info.nodes) if (n.role === 'storage') this.inc({ state: n.state });
      },
    });
    new Gauge({
      name: 'dstore_partitions',
      help: 'Partitions of the cluster (0 until it is formed)',
      registers,
      async collect() {
        const info = await self.info();
        this.set(info?.formed ? info.partitions : 0);
      },
    });
    new Gauge({
      name: 'dstore_partitions_ready',
      help: 'Partitions whose primary reported that it serves reads and writes',
      registers,
      async collect() {
        const info = await self.info();
        this.set(info?.partitionsReady ?? 0);
      },
    });
    new Gauge({
      name: 'dstore_cluster_formed',
      help: '1 once the cluster map is formed, else 0',
      registers,
      async collect() {
        const info = await self.info();
        this.set(info?.formed ? 1 : 0);
      },
    });
    new Gauge({
      name: 'dstore_nameserver_leading',
      help: '1 while this nameserver serves the map (always for a single one; the leader in HA)',
      registers,
      async collect() {
        this.set(self.source === undefined ? 0 : (await self.info()) === undefined ? 0 : 1);
      },
    });
  }

  /** Runs an RPC call's handler, counting it by request type and outcome. */
  async counted(body: unknown, handle: (body: unknown) => unknown): Promise<unknown> {
    const t = typeof body === 'object' && body !== null ? (body as { t?: unknown }).t : undefined;
    const request = typeof t !== 'string' ? 'malformed' : REQUESTS.has(t) ? t : 'other';
    try {
      const value = await handle(body);
      this.request(request);
      return value;
    } catch (err) {
      this.request(request, err);
      throw err;
    }
  }

  /** A request answered (`t` its type, bounded), `err` when refused. */
  request(t: string, err?: unknown): void {
    const outcome = err === undefined ? 'ok' : err instanceof DstoreError ? err.code : 'INTERNAL';
    const key = `${t} ${outcome}`;
    let c = this.requestChildren.get(key);
    if (!c) {
      c = this.requests.labels(t, outcome);
      this.requestChildren.set(key, c);
    }
    c.inc();
    if (err !== undefined) this.errors.inc({ code: outcome });
  }

  /** One `nodes` per scrape: the gauges of one scrape share it (reused for 250 ms). */
  private info(): Promise<ClusterInfo | undefined> {
    const now = Date.now();
    if (this.cached && now - this.cached.atMs < 250) return this.cached.info;
    const info = (async () => {
      try {
        return await this.source?.();
      } catch {
        return undefined;
      }
    })();
    this.cached = { atMs: now, info };
    return info;
  }

  /** The map a new term starts from (HA: loaded from etcd): changes are counted from it. */
  baseline(map: PersistedMap): void {
    this.previous = map;
  }

  /** A map this nameserver persisted: counts what changed since the previous one it saw. */
  onMapPersisted(map: PersistedMap): void {
    const before = this.previous;
    this.previous = map;
    this.mapWrites.inc();
    if (!before) return;
    if (before.configs.length === 0) {
      if (map.configs.length > 0) this.reconfigurations.inc({ kind: 'formed' }, map.configs.length);
      return;
    }
    for (const c of map.configs) {
      const old = before.configs[c.partition];
      if (!old || old.epoch === c.epoch) continue;
      const kind = reconfigurationKind(old, c);
      this.reconfigurations.inc({ kind });
      if (kind === 'failover') this.failovers.inc();
      const promoted = c.secondaries.filter((n) => old.learners.includes(n)).length;
      if (promoted > 0) this.promotions.inc(promoted);
    }
  }
}

/** How one partition's configuration changed (the first that applies). */
export function reconfigurationKind(
  old: PersistedMap['configs'][number],
  now: PersistedMap['configs'][number],
): ReconfigurationKind {
  if (old.primary !== now.primary) return 'failover';
  if (now.secondaries.some((n) => old.learners.includes(n))) return 'promotion';
  if (now.learners.some((n) => !old.learners.includes(n))) return 'learner_added';
  const members = (c: typeof old): string[] => [c.primary, ...c.secondaries, ...c.learners];
  if (members(old).some((n) => !members(now).includes(n))) return 'member_removed';
  return 'other';
}

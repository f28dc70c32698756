/**
 * Issue 15: what the nameserver remembers for the dashboard and `dstore top`, beside the map:
 * recent events, derived by comparing each map (and each node's liveness) with the one seen
 * before, and a short time series of the cluster's client calls, summed from what the storage
 * servers report in their heartbeats. Pure like the host that owns it (./host.ts): time comes
 * in as `nowMs`; nothing here changes the map or the core.
 */
import type { PersistedMap } from '../core/nameserver/nameserver.js';
import type { Config } from '../core/types.js';
import type { ClusterEvent, OpsReport, SeriesPoint } from '../rpc/messages.js';

/** Events kept (the oldest dropped first). */
export const MAX_EVENTS = 200;
/** Points of the series kept: one a second, five minutes. */
export const MAX_SERIES_POINTS = 300;
/** Period of the series, in ms. */
export const SERIES_STEP_MS = 1000;
/** A server's report counts in the series this long after it came (then the server is taken as idle or gone). */
export const OPS_REPORT_FRESH_MS = 3000;

interface OpsSeen {
  readonly report: OpsReport;
  readonly atMs: number;
}

export class ClusterWatch {
  private readonly events: ClusterEvent[] = [];
  private readonly points: SeriesPoint[] = [];
  private readonly ops = new Map<string, OpsSeen>();
  /**
   * Each node's reports since the last point, merged: a node heartbeats more often than the
   * series samples, and every report's calls must count, not only the last one's.
   */
  private readonly sinceSample = new Map<string, OpsSeen>();
  private lastMap: PersistedMap | undefined;
  private readonly alive = new Map<string, boolean>();
  private lastSampleMs = 0;

  /** The events, the oldest first. */
  recentEvents(): ClusterEvent[] {
    return [...this.events];
  }

  /** The series, the oldest first. */
  series(): SeriesPoint[] {
    return [...this.points];
  }

  /** A node's last report, while fresh. */
  opsOf(nodeId: string, nowMs: number): OpsReport | undefined {
    const seen = this.ops.get(nodeId);
    return seen !== undefined && nowMs - seen.atMs <= OPS_REPORT_FRESH_MS ? seen.report : undefined;
  }

  record(event: ClusterEvent): void {
    this.events.push(event);
    if (this.events.length > MAX_EVENTS) this.events.splice(0, this.events.length - MAX_EVENTS);
  }

  /** A heartbeat's report of calls. */
  onOps(nodeId: string, report: OpsReport, nowMs: number): void {
    this.ops.set(nodeId, { report, atMs: nowMs });
    const before = this.sinceSample.get(nodeId);
    this.sinceSample.set(nodeId, {
      report: before === undefined ? report : mergeReports(before.report, report),
      atMs: nowMs,
    });
  }

  /**
   * Compares `map` and the nodes' liveness with those of the last call and records what
   * changed. The first call only remembers them.
   */
  observe(map: PersistedMap, alive: ReadonlyMap<string, boolean>, nowMs: number): void {
    const before = this.lastMap;
    this.lastMap = map;
    for (const [id, isAlive] of alive) {
      const was = this.alive.get(id);
      this.alive.set(id, isAlive);
      if (was === undefined || was === isAlive) continue;
      this.record({
        atMs: nowMs,
        kind: isAlive ? 'alive' : 'dead',
        node: id,
        message: isAlive ? `${id} is alive again` : `${id} is dead (no heartbeat within --dead-after-ms)`,
      });
    }
    if (before === undefined || before.version === map.version) return;
    if (before.configs.length === 0 && map.configs.length > 0) {
      this.record({
        atMs: nowMs,
        kind: 'formed',
        message: `cluster formed: ${map.configs.length} partitions on ${Object.keys(map.nodes).join(', ')}`,
      });
      return;
    }
    for (const c of map.configs) {
      const prev = before.configs[c.partition];
      if (prev === undefined || prev.epoch === c.epoch) continue;
      for (const e of configEvents(prev, c)) this.record({ atMs: nowMs, ...e });
    }
  }

  /** Adds a point to the series when a step passed since the last one. */
  sample(nowMs: number): void {
    if (nowMs - this.lastSampleMs < SERIES_STEP_MS) return;
    this.lastSampleMs = nowMs;
    // Per node: what it reported since the last point, or, when no heartbeat came in between
    // (a heartbeat slower than the step), its last report while fresh.
    const seen = [...this.ops.entries()]
      .map(([id, last]) => this.sinceSample.get(id) ?? last)
      .filter((x) => nowMs - x.atMs <= OPS_REPORT_FRESH_MS);
    this.sinceSample.clear();
    this.points.push(aggregate(seen, nowMs));
    if (this.points.length > MAX_SERIES_POINTS) this.points.splice(0, this.points.length - MAX_SERIES_POINTS);
  }
}

/** What changed from one configuration of a partition to the next, as events (without their time). */
export function configEvents(prev: Config, next: Config): Omit<ClusterEvent, 'atMs'>[] {
  const out: Omit<ClusterEvent, 'atMs'>[] = [];
  const p = next.partition;
  const at = { partition: p, epoch: next.epoch };
  if (prev.primary !== next.primary)
    out.push({
      ...at,
      kind: 'failover',
      node: next.primary,
      message: `partition ${p}: new primary ${next.primary} (was ${prev.primary}), epoch ${next.epoch}`,
    });
  for (const l of next.learners)
    if (!prev.learners.includes(l))
      out.push({ ...at, kind: 'learner', node: l, message: `partition ${p}: learner ${l} added, epoch ${next.epoch}` });
  for (const s of next.secondaries)
    if (prev.learners.includes(s))
      out.push({
        ...at,
        kind: 'promotion',
        node: s,
        message: `partition ${p}: learner ${s} promoted to secondary, epoch ${next.epoch}`,
      });
  for (const s of prev.secondaries)
    if (!next.secondaries.includes(s) && s !== next.primary)
      out.push({
        ...at,
        kind: 'secondaryRemoved',
        node: s,
        message:
          `partition ${p}: secondary ${s} removed` +
          `${next.learners.includes(s) ? ' (now a learner)' : ''}, epoch ${next.epoch}`,
      });
  return out;
}

/** One point from the servers' fresh reports: rates summed, p99 the largest, p50 weighted by calls. */
/** Two consecutive reports of one node as one: counts and intervals add, p99 is the larger, p50 weighted by calls. */
export function mergeReports(a: OpsReport, b: OpsReport): OpsReport {
  const na = a.reads + a.writes;
  const nb = b.reads + b.writes;
  return {
    intervalMs: a.intervalMs + b.intervalMs,
    reads: a.reads + b.reads,
    writes: a.writes + b.writes,
    errors: a.errors + b.errors,
    p99Ms: Math.max(na > 0 ? a.p99Ms : 0, nb > 0 ? b.p99Ms : 0),
    p50Ms: na + nb === 0 ? 0 : (a.p50Ms * na + b.p50Ms * nb) / (na + nb),
  };
}

export function aggregate(seen: readonly OpsSeen[], nowMs: number): SeriesPoint {
  let reads = 0;
  let writes = 0;
  let errors = 0;
  let p99Ms = 0;
  let p50Weighted = 0;
  let calls = 0;
  for (const { report: r } of seen) {
    const perSec = 1000 / Math.max(1, r.intervalMs);
    reads += r.reads * perSec;
    writes += r.writes * perSec;
    errors += r.errors * perSec;
    const n = r.reads + r.writes;
    if (n > 0) {
      p99Ms = Math.max(p99Ms, r.p99Ms);
      p50Weighted += r.p50Ms * n;
      calls += n;
    }
  }
  return {
    atMs: nowMs,
    readsPerSec: round2(reads),
    writesPerSec: round2(writes),
    errorsPerSec: round2(errors),
    p99Ms: round2(p99Ms),
    p50Ms: calls === 0 ? 0 : round2(p50Weighted / calls),
  };
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

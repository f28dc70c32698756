/**
 * Rebalancing (issue 15, DESIGN §3 "primaries are spread evenly", §6): the configuration
 * changes that spread replicas and primaries evenly over the storage servers that may hold
 * them, and move everything off a server being drained. Pure: it reads the map and what the
 * nameserver knows of the nodes, and proposes new configurations; the nameserver core applies
 * them like any other reconfiguration (a new epoch each, persisted before announced, S3).
 *
 * Every change is one of the moves the failure paths already make, so it keeps their safety:
 * - add a learner (§6): it holds nothing that counts until its primary asks to promote it,
 *   caught up (S7);
 * - remove a member from a partition that has more than R of them (after a learner was
 *   promoted): every committed entry is on every member (§5), so the others hold it;
 * - hand the primary role to an active secondary (S5: a live secondary of the current
 *   configuration, the most advanced one): it holds every committed entry and takes over
 *   through S6, as after a failover; the old primary is fenced by the new epoch (S3).
 * A replica therefore moves as learner → secondary → the old member removed: the partition
 * never has fewer than R members beyond what failures already took (the "no window
 * without R replicas beyond the learner catch-up").
 *
 * A change is made only to a healthy partition: its primary alive and serving at the current
 * epoch, every member alive and active at it. At most `maxMoves` partitions carry a moving
 * replica at a time, and at most one primary hand-off is made per call (or one chain of them,
 * when only a chain spreads the primaries: see handOver), so catch-up traffic and takeover
 * pauses stay small.
 */
import type { ReplicaProgress } from '../replica/io.js';
import { type Config, type NodeId, type PartitionId, epoch as toEpoch } from '../types.js';

export interface BalanceView {
  readonly configs: readonly Config[];
  /** R: the members (primary and secondaries) a partition should have. */
  readonly replicas: number;
  /** Live servers that may receive replicas and primaries (not draining, not leaving). */
  readonly eligible: readonly NodeId[];
  /** Servers being drained: they must end up holding nothing. */
  readonly draining: ReadonlySet<NodeId>;
  /** Whether a server is alive now. */
  alive(node: NodeId): boolean;
  /** What `node` last reported of `partition`, if anything. */
  progress(node: NodeId, partition: PartitionId): ReplicaProgress | undefined;
  /** Partitions that may carry a moving replica at once (a learner, or more than R members). */
  readonly maxMoves: number;
}

/** The configurations to replace, in partition order (empty: balanced, or nothing may move now). */
export function rebalance(v: BalanceView): Config[] {
  const changes = new Map<PartitionId, Config>();
  const current = (p: PartitionId): Config => changes.get(p) ?? v.configs[p]!;
  const healthy = v.configs.filter((c) => isHealthy(v, c));

  // 1. Shrink: learners on draining servers go; a partition with a spare member loses one.
  for (const c of healthy) {
    const next = shrink(v, c);
    if (next) changes.set(c.partition, next);
  }

  // 2. Move a replica: a learner on the least-loaded eligible server that does not hold the
  //    partition, taken from a draining server or from the most loaded one.
  const moving = v.configs.filter(
    (c) => current(c.partition).learners.length > 0 || members(current(c.partition)).length > v.replicas,
  );
  if (moving.length < v.maxMoves) {
    const next = addLearner(
      v,
      healthy.filter((c) => !changes.has(c.partition)),
    );
    if (next) changes.set(next.partition, next);
  }

  // 3. Hand one primary role over (or one chain of them): off a draining server, or from the server leading most.
  for (const next of handOver(
    v,
    healthy.filter((c) => !changes.has(c.partition)),
  ))
    changes.set(next.partition, next);

  return [...changes.values()].sort((a, b) => a.partition - b.partition);
}

function members(c: Config): NodeId[] {
  return [c.primary, ...c.secondaries];
}

/** `node` holds a replica of `c` (primary, secondary or learner). */
export function holds(c: Config, node: NodeId): boolean {
  return c.primary === node || c.secondaries.includes(node) || c.learners.includes(node);
}

/** Primary serving and every member active at the current epoch (learners: alive). */
function isHealthy(v: BalanceView, c: Config): boolean {
  const p = v.progress(c.primary, c.partition);
  if (!v.alive(c.primary) || p?.epoch !== c.epoch || p.role !== 'primary' || !p.serving) return false;
  if (c.learners.some((l) => !v.alive(l))) return false;
  return c.secondaries.every((s) => {
    const q = v.progress(s, c.partition);
    return v.alive(s) && q?.epoch === c.epoch && q.role === 'secondary';
  });
}

/** Replicas (any role) each eligible server holds, in `configs`. */
function replicaLoad(v: BalanceView, configs: readonly Config[]): Map<NodeId, number> {
  const load = new Map<NodeId, number>(v.eligible.map((n) => [n, 0]));
  for (const c of configs)
    for (const n of [...members(c), ...c.learners]) if (load.has(n)) load.set(n, load.get(n)! + 1);
  return load;
}

function leaderLoad(v: BalanceView): Map<NodeId, number> {
  const load = new Map<NodeId, number>(v.eligible.map((n) => [n, 0]));
  for (const c of v.configs) if (load.has(c.primary)) load.set(c.primary, load.get(c.primary)! + 1);
  return load;
}

/** S5's order: by (last entry epoch, last seq); a replica with no progress known is lowest. */
export function compareProgress(a: ReplicaProgress | undefined, b: ReplicaProgress | undefined): number {
  if (!a || !b) return a ? 1 : b ? -1 : 0;
  if (a.lastEpoch !== b.lastEpoch) return a.lastEpoch - b.lastEpoch;
  return a.lastSeq - b.lastSeq;
}

/** The active secondary of `c` most advanced in its log (S5), among `allowed` servers. */
export function bestSecondary(
  v: Pick<BalanceView, 'alive' | 'progress'>,
  c: Config,
  allowed: (n: NodeId) => boolean,
): NodeId | undefined {
  const active = c.secondaries.filter((s) => {
    const p = v.progress(s, c.partition);
    return allowed(s) && v.alive(s) && p?.epoch === c.epoch && p.role === 'secondary';
  });
  if (active.length === 0) return undefined;
  const progress = (n: NodeId) => v.progress(n, c.partition);
  return active.reduce((a, b) => (compareProgress(progress(b), progress(a)) > 0 ? b : a));
}

function shrink(v: BalanceView, c: Config): Config | undefined {
  const learners = c.learners.filter((l) => !v.draining.has(l));
  const ms = members(c);
  if (ms.length <= v.replicas || learners.length > 0) {
    return learners.length === c.learners.length ? undefined : { ...c, epoch: toEpoch(c.epoch + 1), learners };
  }
  // Which member goes: a draining one first, then the one on the most loaded server; a
  // secondary rather than the primary among equals (no hand-off needed).
  const load = replicaLoad(v, v.configs);
  const rank = (n: NodeId): number => (v.draining.has(n) || !load.has(n) ? Number.MAX_SAFE_INTEGER : load.get(n)!);
  const victim = [...ms].sort(
    (a, b) => rank(b) - rank(a) || Number(a === c.primary) - Number(b === c.primary) || (a < b ? 1 : -1),
  )[0]!;
  if (victim !== c.primary)
    return { ...c, epoch: toEpoch(c.epoch + 1), secondaries: c.secondaries.filter((s) => s !== victim) };
  const heir = bestSecondary(v, c, (n) => !v.draining.has(n));
  if (!heir) return undefined;
  return {
    ...c,
    epoch: toEpoch(c.epoch + 1),
    primary: heir,
    secondaries: c.secondaries.filter((s) => s !== heir),
  };
}

function addLearner(v: BalanceView, candidates: readonly Config[]): Config | undefined {
  const open = candidates.filter((c) => c.learners.length === 0 && members(c).length === v.replicas);
  const load = replicaLoad(v, v.configs);
  const leastLoaded = (c: Config): NodeId | undefined =>
    [...load.entries()].filter(([n]) => !holds(c, n)).sort(([a, x], [b, y]) => x - y || (a < b ? -1 : 1))[0]?.[0];
  // Off a draining server: any destination will do.
  for (const c of open) {
    if (!members(c).some((m) => v.draining.has(m))) continue;
    const to = leastLoaded(c);
    if (to) return { ...c, epoch: toEpoch(c.epoch + 1), learners: [to] };
  }
  // Spread: from a server holding at least two more replicas than the destination.
  const byLoad = [...load.entries()].sort(([a, x], [b, y]) => y - x || (a < b ? -1 : 1));
  for (const [from, fromLoad] of byLoad) {
    // Prefer a partition where the source is a secondary (no hand-off at the removal).
    const options = open
      .filter((c) => members(c).includes(from))
      .sort((a, b) => Number(a.primary === from) - Number(b.primary === from) || a.partition - b.partition);
    for (const c of options) {
      const to = leastLoaded(c);
      if (to && load.get(to)! + 2 <= fromLoad) return { ...c, epoch: toEpoch(c.epoch + 1), learners: [to] };
    }
  }
  return undefined;
}

function handOver(v: BalanceView, candidates: readonly Config[]): Config[] {
  const transfer = (c: Config, heir: NodeId): Config => ({
    ...c,
    epoch: toEpoch(c.epoch + 1),
    primary: heir,
    secondaries: [c.primary, ...c.secondaries.filter((s) => s !== heir)],
  });
  const leads = leaderLoad(v);
  const eligible = (n: NodeId): boolean => leads.has(n);
  for (const c of candidates) {
    if (!v.draining.has(c.primary)) continue;
    const heir = bestSecondary(v, c, eligible);
    if (heir) return [transfer(c, heir)];
  }
  // Spread: from a server leading at least two more partitions than the heir. Not a
  // partition with a learner: a new primary would restart its catch-up.
  const byLeads = [...leads.entries()].sort(([a, x], [b, y]) => y - x || (a < b ? -1 : 1));
  for (const [from, fromLeads] of byLeads) {
    for (const c of candidates) {
      if (c.primary !== from || c.learners.length > 0) continue;
      const heir = bestSecondary(v, c, (n) => eligible(n) && leads.get(n)! + 2 <= fromLeads);
      if (heir) return [transfer(c, heir)];
    }
  }
  // A chain: no secondary of what the busiest server leads leads two fewer (each leads one
  // fewer), but following "is a secondary of a partition led by" from it reaches a server
  // that does. Each hop hands one partition over, all at once: the first server leads one
  // fewer, the last one more, those between as many as before. Done one hop per call, the
  // middle hop would be undone by the next call (it leads one more than the server it took
  // over from), and the primaries never spread (found by the simulator's --rebalance mode,
  // seed 10: 4 primaries on 5 servers stuck at 2,1,1,0,0). Each chain lowers the sum of the
  // squares of the servers' primary counts, so the hand-overs end.
  for (const [from, fromLeads] of byLeads) {
    const path = chain(v, candidates, leads, from, fromLeads);
    if (path.length > 0) return path.map(([c, heir]) => transfer(c, heir));
  }
  return [];
}

/**
 * The shortest path (breadth first, in partition order) from `from` to a server leading at
 * least two fewer than `fromLeads`, each hop a partition with no learner led by the server
 * before and an active secondary of it, eligible; empty when there is none.
 */
function chain(
  v: BalanceView,
  candidates: readonly Config[],
  leads: ReadonlyMap<NodeId, number>,
  from: NodeId,
  fromLeads: number,
): Array<[Config, NodeId]> {
  const via = new Map<NodeId, [Config, NodeId]>(); // server → the hop that reached it
  const seen = new Set<NodeId>([from]);
  let frontier = [from];
  while (frontier.length > 0) {
    const next: NodeId[] = [];
    for (const a of frontier) {
      for (const c of candidates) {
        if (c.primary !== a || c.learners.length > 0) continue;
        for (const b of c.secondaries) {
          if (seen.has(b) || bestSecondary(v, c, (n) => n === b && leads.has(n)) !== b) continue;
          seen.add(b);
          via.set(b, [c, a]);
          if (leads.get(b)! + 2 <= fromLeads) {
            const path: Array<[Config, NodeId]> = [];
            for (let n: NodeId = b; n !== from; n = via.get(n)![1]) path.unshift([via.get(n)![0], n]);
            return path;
          }
          next.push(b);
        }
      }
    }
    frontier = next;
  }
  return [];
}

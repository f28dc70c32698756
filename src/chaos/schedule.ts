/**
 * The nemesis schedule of a chaos run: a list of faults, each with its start and length in
 * ms from the start of the load, drawn from the seed alone (the same seed, duration, nodes
 * and fault kinds give the same schedule; nothing here looks at the cluster).
 *
 * Faults come one at a time: a fault, then a quiet gap in which the cluster may recover,
 * then the next. The kinds cycle through a seeded shuffle of those allowed, so a short run
 * still sees each kind. Every fault ends (healed) before `durationMs - COOLDOWN_MS`.
 *
 * Kinds:
 * - `kill`: SIGKILL a storage server; start it again (same data dir and address) at the end.
 * - `stop`: SIGTERM a storage server, which hands its primaries over and leaves its
 *   secondaries before it exits (issue 15); start it again at the end.
 * - `pause`: SIGSTOP a storage server or the nameserver; SIGCONT at the end.
 * - `restart-nameserver`: SIGTERM the nameserver; start it again at the end.
 * - `isolate`: cut one storage server off from every other host (nameserver, storage
 *   servers, clients) — needs network namespaces.
 * - `split`: split the nameserver and storage servers into two sides that cannot reach each
 *   other; the clients still reach both sides, so a deposed primary on the minority side
 *   keeps getting requests — needs network namespaces.
 * - `disk-full`: fill a storage server's data dir (its own small tmpfs) until writes fail
 *   with ENOSPC; remove the filler at the end (issue 9) — needs root to mount the tmpfs.
 *
 * Leader faults (issue 12), for a cluster of `dstore node` processes electing their nameserver
 * through etcd (`chaos --ha`). The leader is asked for when the fault starts, so the plan has
 * no target for them (the applied fault names it):
 * - `kill-leader`: SIGKILL the node whose candidate leads; start it again at the end.
 * - `pause-leader`: SIGSTOP the leading node for longer than the lease TTL; SIGCONT at the end.
 * - `kill-etcd`: SIGKILL one etcd member (target m1..m3); start it again at the end. One at a
 *   time, so etcd keeps its quorum.
 * - `isolate-leader`: cut the leading node off from etcd only (its relays to every member drop
 *   every byte); storage servers, clients and the other candidates still reach it.
 */
import { Rng } from '../core/rng.js';
import { assertNever } from '../core/types.js';

export const FAULT_KINDS = ['kill', 'pause', 'restart-nameserver', 'isolate', 'split', 'disk-full', 'stop'] as const;
/** Kinds of a `--ha` cluster only (issue 12). */
export const LEADER_FAULT_KINDS = ['kill-leader', 'pause-leader', 'kill-etcd', 'isolate-leader'] as const;
export const ALL_FAULT_KINDS = [...FAULT_KINDS, ...LEADER_FAULT_KINDS] as const;
export type FaultKind = (typeof ALL_FAULT_KINDS)[number];
/** Kinds with no meaning in a `--ha` cluster (there is no single nameserver; partitions need namespaces). */
export const NON_HA_FAULT_KINDS: readonly FaultKind[] = ['restart-nameserver', 'isolate', 'split'];
/** Kinds that must outlast the lease TTL to depose the leader. */
const PAST_LEASE_KINDS: readonly FaultKind[] = ['pause-leader', 'isolate-leader'];
/** Kinds that cut network links (skipped without network namespaces). */
export const NETWORK_FAULT_KINDS: readonly FaultKind[] = ['isolate', 'split'];
/** Kinds that need each storage server's data dir on a small filesystem of its own (root). */
export const DISK_FAULT_KINDS: readonly FaultKind[] = ['disk-full'];

export interface PlannedFault {
  /** ms from the start of the load. */
  readonly atMs: number;
  readonly durationMs: number;
  readonly kind: FaultKind;
  /** The process signalled (kill, stop, pause, restart-nameserver) or the host cut off (isolate). */
  readonly target?: string;
  /** split: the two sides (node names, 'nameserver' included). */
  readonly sides?: readonly [readonly string[], readonly string[]];
}

export interface ScheduleOptions {
  readonly seed: number;
  readonly durationMs: number;
  /** Storage server names, e.g. ['s1', 's2', 's3']. */
  readonly storageIds: readonly string[];
  readonly kinds: readonly FaultKind[];
  /** `--ha`: etcd member names (kill-etcd targets); no 'nameserver' target for `pause`. */
  readonly etcdMembers?: readonly string[];
  /** `--ha`: pause-leader and isolate-leader last at least this long (the lease TTL + a margin). */
  readonly pastLeaseMs?: number;
}

/** No fault in the first WARMUP_MS of the load: a baseline of healthy operations. */
export const WARMUP_MS = 2000;
/** Every fault is healed this long before the load ends. */
export const COOLDOWN_MS = 2000;
export const MIN_FAULT_MS = 1000;
export const MAX_FAULT_MS = 6000;
export const MIN_GAP_MS = 1000;
export const MAX_GAP_MS = 4000;
/** Bound on the number of faults of one run. */
const MAX_FAULTS = 100_000;

export function planNemesis(o: ScheduleOptions): PlannedFault[] {
  const rng = new Rng((o.seed ^ 0x6e656d65) >>> 0); // "neme": the schedule's own stream
  const out: PlannedFault[] = [];
  if (o.kinds.length === 0 || o.storageIds.length === 0) return out;
  const end = o.durationMs - COOLDOWN_MS;
  let cycle: FaultKind[] = [];
  let t = WARMUP_MS;
  for (let i = 0; i < MAX_FAULTS; i++) {
    let durationMs = rng.int(MIN_FAULT_MS, MAX_FAULT_MS);
    const kind = nextKind();
    const minMs = PAST_LEASE_KINDS.includes(kind) ? Math.max(MIN_FAULT_MS, o.pastLeaseMs ?? 0) : MIN_FAULT_MS;
    durationMs = Math.max(durationMs, minMs);
    if (t + durationMs > end) {
      // A shorter fault still fits: take it rather than leave the end quiet.
      if (end - t >= minMs) out.push(fault(rng, kind, t, end - t, o));
      break;
    }
    out.push(fault(rng, kind, t, durationMs, o));
    t += durationMs + rng.int(MIN_GAP_MS, MAX_GAP_MS);
  }
  return out;

  function nextKind(): FaultKind {
    if (cycle.length === 0) cycle = rng.shuffle([...o.kinds]);
    return cycle.shift()!;
  }
}

function fault(rng: Rng, kind: FaultKind, atMs: number, durationMs: number, o: ScheduleOptions): PlannedFault {
  switch (kind) {
    case 'kill':
    case 'stop':
    case 'isolate':
    case 'disk-full':
      return { atMs, durationMs, kind, target: rng.pick(o.storageIds) };
    case 'pause':
      // The nameserver one time in four: storage servers are where the data is.
      return {
        atMs,
        durationMs,
        kind,
        target: rng.float() < 0.25 && o.etcdMembers === undefined ? 'nameserver' : rng.pick(o.storageIds),
      };
    case 'restart-nameserver':
      return { atMs, durationMs, kind, target: 'nameserver' };
    case 'split': {
      const hosts = rng.shuffle(['nameserver', ...o.storageIds]);
      const cut = rng.int(1, hosts.length - 1);
      return { atMs, durationMs, kind, sides: [hosts.slice(0, cut).sort(), hosts.slice(cut).sort()] };
    }
    case 'kill-leader':
    case 'pause-leader':
    case 'isolate-leader':
      return { atMs, durationMs, kind };
    case 'kill-etcd':
      return { atMs, durationMs, kind, target: rng.pick(o.etcdMembers ?? ['m1', 'm2', 'm3']) };
    default:
      return assertNever(kind);
  }
}

/** One line per fault, e.g. `kill s2` or `split nameserver,s1 | s2,s3`. */
export function describeFault(f: Pick<PlannedFault, 'kind' | 'target' | 'sides'>): string {
  switch (f.kind) {
    case 'kill':
      return `kill ${f.target} (SIGKILL, then start again)`;
    case 'stop':
      return `stop ${f.target} (SIGTERM: it hands its roles over; then start again)`;
    case 'pause':
      return `pause ${f.target} (SIGSTOP, then SIGCONT)`;
    case 'restart-nameserver':
      return 'restart the nameserver (SIGTERM, then start again)';
    case 'isolate':
      return `isolate ${f.target} from every other host`;
    case 'split':
      return `split ${f.sides?.[0].join(',')} | ${f.sides?.[1].join(',')}`;
    case 'disk-full':
      return `fill the disk of ${f.target} (ENOSPC), then free it`;
    case 'kill-leader':
      return `kill the leader${f.target ? ` ${f.target}` : ''} (SIGKILL, then start again)`;
    case 'pause-leader':
      return `pause the leader${f.target ? ` ${f.target}` : ''} past the lease TTL (SIGSTOP, then SIGCONT)`;
    case 'kill-etcd':
      return `kill etcd member ${f.target} (SIGKILL, then start again)`;
    case 'isolate-leader':
      return `isolate the leader${f.target ? ` ${f.target}` : ''} from etcd only`;
    default:
      return assertNever(f.kind);
  }
}

/** Parses `--faults kill,pause,…`; throws naming the bad kind. */
export function parseFaultKinds(text: string): FaultKind[] {
  const kinds = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const k of kinds)
    if (!(ALL_FAULT_KINDS as readonly string[]).includes(k))
      throw new Error(`unknown fault kind ${JSON.stringify(k)}; the kinds are ${ALL_FAULT_KINDS.join(', ')}`);
  return [...new Set(kinds)] as FaultKind[];
}

/**
 * One simulation run from one seed (issue 5): knobs, cluster, clients, nemesis, checks.
 *
 * Phases, in simulated time:
 * 1. start: the nameserver, N storage servers (the map forms once all registered) and the
 *    clients, which retry until the cluster serves;
 * 2. faults (`faultMs`): the nemesis crashes and restarts storage servers (a crash keeps
 *    only what was fsynced), pauses them or the nameserver, isolates one endpoint or splits
 *    the servers in two, crashes and restarts the nameserver; the network drops,
 *    duplicates, delays and reorders messages as the knobs say;
 * 3. heal: every fault ends, the network becomes reliable; clients go on for `calmMs`,
 *    then stop starting operations and finish the ones they have;
 * 4. quiesce: run until every partition converged — a full configuration of R members,
 *    no learner, a serving primary, every member at the primary's commit point with the
 *    same data — or until `convergeLimitMs` (a liveness violation);
 * 5. final reads of every key, then the end checks: linearizability of the whole history,
 *    every acknowledged write applied by every member.
 * The observer checks safety on every step meanwhile (observer.ts).
 */
import { type CheckResult, type HistoryOp, checkHistory, formatResult } from '../../src/check/linearizability.js';
import type { ClusterSettings } from '../../src/core/nameserver/nameserver.js';
import { type PartitionId, assertNever, nodeId } from '../../src/core/types.js';
import { type ClientKnobs, SimClient } from './client.js';
import type { Nameserver } from '../../src/core/nameserver/nameserver.js';
import { Rng } from '../../src/core/rng.js';
import type { Config } from '../../src/core/types.js';
import type { ElectionKnobs } from './elected-node.js';
import { SimElection } from './election.js';
import { SimNameserver } from './nameserver-node.js';
import { SimAntiEntropy } from './anti-entropy.js';
import { ABANDON_P, Bank, INITIAL, TXN_TIMEOUT_MS } from './bank.js';
import { Observer, type Violation } from './observer.js';
import { describeConfig, type Mutation, type NodeKnobs, SimStorageNode } from './storage-node.js';
import { type Endpoint, type NetworkKnobs, RELIABLE, type SimEvent, SimulationFailure, World } from './world.js';

export interface Knobs {
  readonly nodes: number;
  readonly settings: ClusterSettings;
  readonly clients: number;
  readonly keys: readonly string[];
  readonly node: NodeKnobs;
  readonly deadAfterMs: number;
  readonly rereplicateAfterMs: number;
  readonly client: ClientKnobs;
  readonly net: NetworkKnobs;
  readonly faultMs: number;
  /** Mean time between faults. */
  readonly faultEveryMs: number;
  readonly faultWeights: Readonly<Record<FaultKind, number>>;
  readonly maxFaultMs: number;
  readonly calmMs: number;
  readonly convergeLimitMs: number;
  readonly maxEvents: number;
  /**
   * Anti-entropy (issue 13, anti-entropy.ts): every partition is checked this often while the
   * clients run, and once more after the faults heal, with repair; 0: never (the default, a
   * constant: no seed's schedule changed). `--corrupt` turns it on with the `corrupt` fault.
   */
  readonly antiEntropyEveryMs: number;
  /** Election mode (issue 12): candidates elected through a simulated etcd instead of one `ns`. */
  readonly election?: ElectionKnobs;
  /**
   * The bank workload (issue 14, bank.ts): this many accounts, the clients run transactions
   * instead of single-key operations; 0: off (the default, a constant: no seed changed). `--bank`.
   */
  readonly bankAccounts: number;
  /**
   * Rebalancing under faults (issue 15), `--rebalance`: storage servers beyond `nodes` that are
   * not in the initial map and start mid-run (the `join` fault, or at the heal); 0: none (the
   * default, a constant: no seed changed).
   */
  readonly spareNodes: number;
  /**
   * `--rebalance`: the end checks of rebalancing — after the heal the convergence wait also
   * waits for the spread (every live eligible server within ±1 of the even share of replicas
   * and of primaries, `liveness:unbalanced`) and for drained servers to hold nothing
   * (`liveness:drain-incomplete`), then the map must stay still (`liveness:endless-moves`).
   */
  readonly rebalanceChecks: boolean;
}

/** What the run sees of the nameserver: the one `ns`, or in election mode the candidate that leads. */
export interface NameserverView {
  readonly up: boolean;
  readonly paused: boolean;
  readonly core: Nameserver | undefined;
  configs(): readonly Config[];
  readonly stats: { readonly reconfigurations: number };
  /** Rebalancing moves seen in the map (issue 15, nameserver-node.ts countMoves). */
  readonly moves: Readonly<Record<string, number>>;
}

/** `--election`: on in every seed, off in every seed, or (default) in the seeds `electionChosen` picks. */
export type ElectionMode = 'on' | 'off' | 'mixed';

/**
 * Whether a seed runs in election mode under `mixed`: one seed in three, decided by an Rng of
 * its own (derived from the seed), so the other seeds draw exactly what they drew before the
 * election model existed and replay byte-identically.
 */
export function electionChosen(seed: number): boolean {
  return electionRng(seed).int(0, 2) === 0;
}

function electionRng(seed: number): Rng {
  return new Rng(seed * 3 + 0x5eed_e1ec);
}

/** The election knobs of a seed in election mode (from its derived Rng, after the mode draw). */
export function chooseElection(seed: number): ElectionKnobs {
  const rng = electionRng(seed);
  rng.int(0, 2); // the mode draw
  return {
    candidates: rng.weighted([
      [1, 2],
      [3, 3],
    ]),
    leaseTtlMs: rng.pick([300, 500, 1000, 2000]),
    etcdTimeoutMs: rng.pick([1000, 5000]),
  };
}

export type FaultKind =
  | 'crash'
  | 'pause'
  | 'isolate'
  | 'split'
  | 'nsCrash'
  | 'nsPause'
  | 'link'
  | 'crashAll'
  | 'etcdDown'
  | 'corrupt'
  | 'join'
  | 'leave'
  | 'drain'
  | 'undrain';

export interface RunOptions {
  /** Trace every event to this sink (a replay of one seed). */
  readonly trace?: (line: string) => void;
  /** Knob overrides `path=value` (e.g. `settings.minWriteReplicas=1`), applied after the seed chose the knobs. */
  readonly set?: readonly string[];
  /** Per-key budget of the linearizability check, in ms. */
  readonly checkBudgetMs?: number;
  /** A deliberate bug to plant (mutation testing of the simulator itself). */
  readonly mutation?: Mutation;
  /**
   * Election mode; default `off`, so every existing caller (the pinned regression seeds of
   * sim.test.ts among them) runs exactly as before. `npm run sim -- --runs` defaults to `mixed`.
   */
  readonly election?: ElectionMode;
}

export interface RunResult {
  readonly seed: number;
  readonly knobs: Knobs;
  readonly violations: readonly Violation[];
  readonly linearizability: CheckResult | undefined;
  readonly history: readonly HistoryOp[];
  readonly stats: Record<string, number>;
  readonly simulatedMs: number;
  readonly wallMs: number;
}

/** `--rebalance`: its knobs (issue 15). */
export const REBALANCE_SET: readonly string[] = [
  'spareNodes=2',
  'faultWeights.join=2',
  'faultWeights.leave=2',
  'faultWeights.drain=1',
  'faultWeights.undrain=1',
  'rebalanceChecks=true',
  'convergeLimitMs=120000',
];
/** Every knob, from the seed: the cluster's shape, timing, network and faults vary per run. */
export function chooseKnobs(rng: Rng): Knobs {
  const replicas = rng.weighted([
    [1, 1],
    [2, 2],
    [8, 3],
  ]);
  const nodes =
    replicas +
    rng.weighted([
      [5, 0],
      [3, 1],
      [2, 2],
    ]);
  const minWriteReplicas =
    replicas === 1
      ? 1
      : rng.weighted([
          [1, 1],
          [4, 2],
          [replicas === 3 ? 1 : 0, 3],
        ]);
  const partitions = rng.weighted([
    [2, 1],
    [3, 2],
    [3, 4],
  ]);
  const keyCount = rng.int(2, 6);
  const heartbeatMs = rng.pick([100, 200, 300]);
  const deadAfterMs = heartbeatMs * rng.pick([3, 5]);
  const dropP = rng.weighted([
    [3, 0],
    [3, 0.01],
    [2, 0.05],
    [1, 0.2],
  ]);
  const dupP = rng.weighted([
    [3, 0],
    [2, 0.01],
    [1, 0.05],
  ]);
  const slowP = rng.weighted([
    [3, 0],
    [2, 0.02],
    [1, 0.1],
  ]);
  const maxDelayMs = rng.pick([2, 5, 20]);
  const faultMs = rng.int(5_000, 20_000);
  return {
    nodes,
    settings: { partitions, replicas, minWriteReplicas, initialNodes: nodes },
    clients: rng.int(2, 5),
    keys: Array.from({ length: keyCount }, (_, i) => `k${i}`),
    node: {
      tickMs: rng.pick([20, 50]),
      heartbeatMs,
      callTimeoutMs: Math.max(300, heartbeatMs * 2),
      resendAfterMs: 300,
      logRetainEntries: rng.pick([2, 10, 100]),
      fsyncMinMs: 1,
      fsyncMaxMs: rng.pick([2, 10, 40]),
      durable: true,
      snapshotTimeoutMs: 2000,
      // Constants, not draws: off unless --set, so no seed's schedule changed (issue 10).
      batchFailP: 0,
      reopenFailP: 0,
      slowBatchP: 0,
      slowBatchMs: 500,
    },
    deadAfterMs,
    rereplicateAfterMs: rng.pick([500, 2000, 5000]),
    client: {
      timeoutMs: rng.pick([1000, 3000, 8000]),
      attemptTimeoutMs: rng.pick([200, 500, 10_000]),
      thinkMinMs: 0,
      thinkMaxMs: rng.pick([5, 30, 100]),
      // cas (issue 14): weight 0 unless --cas, so no seed changed.
      weights: { put: 4, get: 4, delete: rng.pick([0, 1, 2]), cas: 0 },
    },
    net: { dropP, dupP, slowP, minDelayMs: 1, maxDelayMs, slowMaxDelayMs: rng.pick([100, 500, 2000]) },
    faultMs,
    faultEveryMs: rng.pick([300, 1000, 3000]),
    // `link` (one link between two storage servers cut; both still reach the nameserver) is
    // last with weight 0, so adding it changed no seed's schedule: --set faultWeights.link=3.
    // `crashAll` (every storage server at one instant, as a power cut would) catches a write
    // whose durability came from anything but the synced log: applies are lazy (issue 11).
    // `etcdDown` (the election service without quorum) only in election mode (runSeed sets it).
    faultWeights: {
      crash: 4,
      pause: 3,
      isolate: 3,
      split: 2,
      nsCrash: 1,
      nsPause: 1,
      link: 0,
      crashAll: 1,
      etcdDown: 0,
      // Silent corruption (issue 13): last, weight 0 unless --corrupt (or --set), so no seed changed.
      corrupt: 0,
      // Rebalancing (issue 15): last, weight 0 unless --rebalance (or --set), so no seed changed.
      join: 0,
      leave: 0,
      drain: 0,
      undrain: 0,
    },
    maxFaultMs: rng.pick([1000, 4000, 10_000]),
    calmMs: 2000,
    convergeLimitMs: 60_000,
    maxEvents: 5_000_000,
    antiEntropyEveryMs: 0,
    bankAccounts: 0,
    spareNodes: 0,
    rebalanceChecks: false,
  };
}

/** Applies `a.b.c=value` overrides (value parsed as JSON, else taken as a string) to a copy. */
export function applySettings(knobs: Knobs, settings: readonly string[]): Knobs {
  const copy = structuredClone(knobs) as unknown as Record<string, unknown>;
  for (const setting of settings) {
    const eq = setting.indexOf('=');
    if (eq <= 0) throw new Error(`--set ${setting}: expected path=value`);
    const path = setting.slice(0, eq).split('.');
    const raw = setting.slice(eq + 1);
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch {
      value = raw;
    }
    let target = copy;
    for (const key of path.slice(0, -1)) {
      const next = target[key];
      if (typeof next !== 'object' || next === null) throw new Error(`--set ${setting}: no knob ${path.join('.')}`);
      target = next as Record<string, unknown>;
    }
    const last = path[path.length - 1]!;
    if (!(last in target)) throw new Error(`--set ${setting}: no knob ${path.join('.')}`);
    if (typeof target[last] !== typeof value)
      throw new Error(`--set ${setting}: ${path.join('.')} is a ${typeof target[last]}`);
    target[last] = value;
  }
  return copy as unknown as Knobs;
}

export function describeKnobs(seed: number, k: Knobs): string {
  const s = k.settings;
  return [
    `seed ${seed}`,
    `cluster: ${k.nodes} storage servers, ${s.partitions} partitions, R=${s.replicas}, min write replicas ` +
      `${s.minWriteReplicas}; ${k.clients} clients on keys ${k.keys.join(',')}`,
    `timing: tick ${k.node.tickMs} ms, heartbeat ${k.node.heartbeatMs} ms, dead after ${k.deadAfterMs} ms, ` +
      `rereplicate after ${k.rereplicateAfterMs} ms, fsync ${k.node.fsyncMinMs}-${k.node.fsyncMaxMs} ms, log ` +
      `retain ${k.node.logRetainEntries}${k.node.durable ? '' : ', NOT durable'}`,
    `clients: deadline ${k.client.timeoutMs} ms, attempt timeout ${k.client.attemptTimeoutMs} ms, think ` +
      `0-${k.client.thinkMaxMs} ms, put/get/delete ` +
      `${k.client.weights.put}/${k.client.weights.get}/${k.client.weights.delete}` +
      `${k.client.weights.cas ? `/cas ${k.client.weights.cas}` : ''}`,
    `network: drop ${k.net.dropP}, duplicate ${k.net.dupP}, slow ${k.net.slowP} (up to ${k.net.slowMaxDelayMs} ms), ` +
      `delay ${k.net.minDelayMs}-${k.net.maxDelayMs} ms`,
    ...(k.antiEntropyEveryMs > 0
      ? [`ANTI-ENTROPY: every partition checked every ${k.antiEntropyEveryMs} ms and after the heal, with repair`]
      : []),
    ...(k.bankAccounts > 0
      ? [
          `BANK: ${k.bankAccounts} accounts of ${INITIAL}; the clients run transfers and audits (transactions with ` +
            `a ${TXN_TIMEOUT_MS} ms timeout), abandoning ${ABANDON_P * 100}% of transfers mid-way`,
        ]
      : []),
    ...(k.spareNodes > 0 || k.rebalanceChecks
      ? [
          `REBALANCE: ${k.spareNodes} spare storage server(s) that join mid-run (or at the heal); graceful stops ` +
            `(leave), drains and undrains among the faults; end checks ${k.rebalanceChecks ? 'on' : 'off'}`,
        ]
      : []),
    ...(k.node.mutation ? [`MUTATION (a deliberately planted bug): ${k.node.mutation}`] : []),
    ...(k.election
      ? [
          `ELECTION MODE: ${k.election.candidates} nameserver candidates elected through a simulated etcd, lease ` +
            `TTL ${k.election.leaseTtlMs} ms, etcd call timeout ${k.election.etcdTimeoutMs} ms`,
        ]
      : []),
    `faults: ${k.faultMs} ms, one every ~${k.faultEveryMs} ms lasting up to ${k.maxFaultMs} ms; weights ` +
      Object.entries(k.faultWeights)
        // (etcdDown is an election-mode fault: not listed otherwise, so those traces stay as they were)
        .filter(([f]) => f !== 'etcdDown' || k.election !== undefined)
        .filter(([f, w]) => !['corrupt', 'join', 'leave', 'drain', 'undrain'].includes(f) || w > 0)
        .map(([f, w]) => `${f} ${w}`)
        .join(', '),
  ].join('\n');
}

export function runSeed(seed: number, options: RunOptions = {}): RunResult {
  const wallStart = Date.now();
  const world = new World(seed);
  world.traceSink = options.trace;
  const drawn = chooseKnobs(world.rng);
  const mode = options.election ?? 'off';
  const elected = mode === 'on' || (mode === 'mixed' && electionChosen(seed));
  const withElection: Knobs = elected
    ? {
        ...drawn,
        election: chooseElection(seed),
        // Leader changes while the map changes: the leader crashes and pauses (past its lease) more often.
        faultWeights: { ...drawn.faultWeights, nsCrash: 2, nsPause: 2, etcdDown: 1 },
      }
    : drawn;
  const chosen = applySettings(withElection, options.set ?? []);
  const knobs: Knobs = options.mutation ? { ...chosen, node: { ...chosen.node, mutation: options.mutation } } : chosen;
  const observer = new Observer(world);
  const history: HistoryOp[] = [];
  const nsKnobs = {
    settings: knobs.settings,
    heartbeatMs: knobs.node.heartbeatMs,
    deadAfterMs: knobs.deadAfterMs,
    rereplicateAfterMs: knobs.rereplicateAfterMs,
  };
  let ns: SimNameserver | SimElection;
  if (knobs.election) {
    ns = new SimElection(world, nsKnobs, knobs.election, observer, knobs.node.mutation === 'unfenced-save');
  } else {
    ns = new SimNameserver(world, nsKnobs);
    world.add(ns);
  }
  const nodes: SimStorageNode[] = [];
  // (The spare servers of --rebalance follow the initial ones; they start at a `join` or at the heal.)
  for (let i = 1; i <= knobs.nodes + knobs.spareNodes; i++) {
    const n = new SimStorageNode(nodeId(`n${i}`), world, knobs.node, observer);
    nodes.push(n);
    world.add(n);
  }
  const clients: SimClient[] = [];
  for (let i = 1; i <= knobs.clients; i++) {
    const c = new SimClient(`c${i}`, world, knobs.client, knobs.keys, history, observer);
    clients.push(c);
    world.add(c);
  }
  const stats: Record<string, number> = {};
  const count = (k: string) => (stats[k] = (stats[k] ?? 0) + 1);
  // Issue 15: the operator that drains servers through the nameserver's `drain` request.
  const operator = knobs.rebalanceChecks || knobs.faultWeights.drain > 0 ? new SimOperator(world) : undefined;
  if (operator) world.add(operator);
  const ae =
    knobs.antiEntropyEveryMs > 0 ? new SimAntiEntropy(world, knobs.node.mutation !== 'repair-disabled') : undefined;
  if (ae) world.add(ae);
  let periodicChecks = ae !== undefined;
  const checkAll = (): void => {
    for (const c of ns.configs()) ae!.check(c);
  };
  const periodic = (): void => {
    if (!periodicChecks) return;
    checkAll();
    world.schedule(knobs.antiEntropyEveryMs, 'ae', periodic);
  };
  let linearizability: CheckResult | undefined;
  const bank =
    knobs.bankAccounts > 0
      ? new Bank(
          world,
          observer,
          knobs.bankAccounts,
          knobs.node.mutation === 'txn-reads-ignore-intents' ? knobs.node.mutation : undefined,
        )
      : undefined;

  try {
    // 1. Start.
    ns.start();
    for (const n of nodes.slice(0, knobs.nodes)) world.schedule(world.rng.int(0, 300), 'world', () => n.start());
    if (bank) {
      // The accounts first (c1), then every client's transfers and audits.
      const starts = clients.map(() => world.rng.int(0, 100));
      world.schedule(300, 'world', () =>
        bank.initialise(clients[0]!, () =>
          clients.forEach((c, i) => world.schedule(starts[i]!, c.id, () => bank.startLoop(c, knobs.client.thinkMaxMs))),
        ),
      );
    } else for (const c of clients) c.startLoop(world.rng.int(300, 800));
    const faultStart = 1500;
    const faultEnd = faultStart + knobs.faultMs;

    // 2. Faults.
    world.net = knobs.net;
    const nemesis = new Nemesis(world, knobs, ns, nodes, count, faultEnd, operator);
    world.schedule(faultStart, 'world', () => nemesis.next());
    if (ae) world.schedule(faultStart + knobs.antiEntropyEveryMs, 'ae', periodic);
    world.run(faultEnd, knobs.maxEvents);

    // 3. Heal.
    world.trace('HEAL: every fault ends; the network is reliable from now on');
    world.net = RELIABLE;
    nemesis.healAll();
    for (const n of nodes) n.disksHealed = true; // disk failures are faults too
    // Issue 15: half the time every drain is cancelled at the heal (then the spread is checked
    // over every server), else the drained servers must end up holding nothing.
    if (operator && knobs.rebalanceChecks && world.rng.chance(0.5)) nemesis.undrainAll();
    world.run(world.now + knobs.calmMs, knobs.maxEvents);
    for (const c of clients) c.active = false;
    periodicChecks = false;
    // (A transaction makes many calls, each up to the client's deadline: the bank's clients get longer.)
    const drainMs = bank ? 60_000 : knobs.client.timeoutMs + 1000;
    world.run(world.now + drainMs, knobs.maxEvents, () => clients.every((c) => !c.busy));

    // 4. Quiesce and converge.
    const convergeStart = world.now;
    // With anti-entropy the data is compared after it (below): the silent corruption fault is its to repair.
    const compareData = ae === undefined;
    // Issue 15 (--rebalance): converged also means spread evenly, drained servers empty, and
    // no move for QUIET_MS (±1 of the even share can hold while balance.ts still moves towards
    // its own target, at most one apart: a move under way is not the end).
    const epochs = (): number => ns.configs().reduce((n, c) => n + c.epoch, 0);
    let lastEpochs = epochs();
    let movedAt = world.now;
    // (The nameserver moves nothing until the map was settled for 2 x dead-after: a wait that ends sooner is no end.)
    const quietMs = Math.max(QUIET_MS, 2 * knobs.deadAfterMs + 1000);
    const settled = (): string | undefined => {
      const problem = convergence(ns, nodes, knobs, compareData);
      if (problem !== undefined || !knobs.rebalanceChecks) return problem;
      const e = epochs();
      if (e !== lastEpochs) [lastEpochs, movedAt] = [e, world.now];
      return (
        balanceProblem(ns, nodes) ??
        (world.now - movedAt < quietMs ? `a configuration changed ${world.now - movedAt} ms ago` : undefined)
      );
    };
    const quiesce = (): string | undefined => {
      const start = world.now;
      let problem = settled();
      // A known way of being stuck that persists this long will not resolve: stop waiting.
      let stuckSince: number | undefined;
      while (problem !== undefined && world.now - start < knobs.convergeLimitMs) {
        world.run(world.now + 250, knobs.maxEvents);
        problem = settled();
        if (problem !== undefined && diagnose(ns, nodes, knobs)) stuckSince ??= world.now;
        else stuckSince = undefined;
        if (stuckSince !== undefined && world.now - stuckSince >= 10_000) break;
      }
      return problem;
    };
    let problem = quiesce();
    // 4b. Anti-entropy after the heal: every partition checked with repair, until the members
    // of every configuration hold the same applied state (or 3 rounds); then they must.
    if (ae && problem === undefined) {
      for (let round = 1; round <= 3 && problem === undefined; round++) {
        world.run(world.now + 1000, knobs.maxEvents, () => ae.idle); // a periodic check still running
        world.trace(`ANTI-ENTROPY round ${round} after the heal`);
        checkAll();
        world.run(world.now + 30_000, knobs.maxEvents, () => ae.idle);
        problem = quiesce();
        if (disagreeing(ns, nodes).length === 0) break;
      }
      if (problem === undefined) {
        for (const d of disagreeing(ns, nodes)) {
          if (d.majority) observer.report('replicas-disagree', d.text);
          else count('unrepairable');
        }
      }
    }
    stats.convergeMs = world.now - convergeStart;
    if (problem === undefined && knobs.rebalanceChecks) {
      // Issue 15: once spread, the moves stop: the map stays still (no move back and forth).
      // (The configurations' epochs, not the count of changes: a new leader's reload is none.)
      const before = epochs();
      world.run(world.now + STILL_MS, knobs.maxEvents);
      const moved = epochs() - before;
      if (moved > 0)
        observer.report(
          'liveness:endless-moves',
          `the map was converged and spread evenly, yet its configurations moved ${moved} epoch(s) in the next ` +
            `${STILL_MS} ms with no fault: rebalancing moves that never end\n${describeReplicas(ns, nodes, knobs)}`,
        );
      problem = settled();
    }
    if (problem !== undefined && convergence(ns, nodes, knobs, compareData) === undefined) {
      // Converged, but not spread, not drained, or still moving (issue 15).
      const unbalanced = balanceProblem(ns, nodes);
      observer.report(
        unbalanced === undefined
          ? 'liveness:endless-moves'
          : unbalanced.startsWith('drained')
            ? 'liveness:drain-incomplete'
            : 'liveness:unbalanced',
        `${world.now - convergeStart} ms after the faults stopped every partition converged but ${problem}\n` +
          describeReplicas(ns, nodes, knobs),
      );
      problem = undefined; // the data converged: the end checks and final reads go on
    }
    if (problem !== undefined) {
      const why = diagnose(ns, nodes, knobs);
      observer.report(
        why?.kind ?? 'no-convergence',
        `${world.now - convergeStart} ms after the faults stopped the replicas have not converged: ` +
          `${problem}${why ? `\ndiagnosis: ${why.text}` : ''}\n${describeReplicas(ns, nodes, knobs)}`,
      );
    } else {
      world.trace(`converged after ${world.now - convergeStart} ms`);
      // Every acknowledged write is applied by every member of the final configuration.
      for (const [p, acks] of observer.acked) {
        const c = ns.configs()[p]!;
        const primary = nodes.find((n) => n.id === c.primary)!.replicas.get(p)!;
        for (const [s, a] of acks) {
          if (s > primary.appliedSeq)
            observer.report(
              'lost-write',
              `partition ${p}: ${a.client}'s ${a.op} ${a.key} acknowledged at version ${s} is beyond the converged ` +
                `applied seq ${primary.appliedSeq}`,
            );
        }
      }
      // 5. Final reads.
      const reader = new SimClient(
        'final',
        world,
        { ...knobs.client, timeoutMs: 10_000 },
        knobs.keys,
        history,
        observer,
      );
      world.add(reader);
      let done = false;
      reader.readAll(() => (done = true));
      world.run(world.now + 10_000 * knobs.keys.length + 1000, knobs.maxEvents, () => done);
      if (!done) observer.report('no-convergence', 'the final reads did not complete');
      // The bank's total, once every client is idle (a transfer still running could be half-read).
      if (bank?.initialised && clients.every((c) => !c.busy)) {
        const bankReader = new SimClient('bank-final', world, { ...knobs.client, timeoutMs: 10_000 }, [], [], observer);
        world.add(bankReader);
        let bankDone = false;
        bank.finalCheck(bankReader, () => (bankDone = true));
        world.run(world.now + 120_000, knobs.maxEvents, () => bankDone);
        if (!bankDone) observer.report('no-convergence', "the bank's final reads did not complete");
      } else if (bank) count(bank.initialised ? 'bank.finalSkippedBusy' : 'bank.neverInitialised');
    }

    linearizability = checkHistory(history, { timeBudgetMs: options.checkBudgetMs ?? 10_000 });
    if (linearizability.verdict === 'violation') observer.report('linearizability', formatResult(linearizability));
    if (linearizability.verdict === 'unknown') count('linearizabilityUnknown');
  } catch (e) {
    if (!(e instanceof SimulationFailure)) {
      observer.report('simulator-crash', (e as Error).stack ?? String(e));
    } else if (observer.violations.length === 0) {
      observer.report('simulator', e.message);
    }
  }

  for (const c of [...clients]) {
    for (const [k, v] of Object.entries(c.stats)) stats[`ops.${k}`] = (stats[`ops.${k}`] ?? 0) + v;
  }
  if (bank) for (const [k, v] of Object.entries(bank.stats)) stats[`bank.${k}`] = v;
  for (const n of nodes) stats.crashes = (stats.crashes ?? 0) + n.stats.crashes;
  for (const n of nodes) stats.failedBatches = (stats.failedBatches ?? 0) + n.stats.failedBatches;
  for (const n of nodes) stats.storageReloads = (stats.storageReloads ?? 0) + n.stats.reloads;
  stats.reconfigurations = ns.stats.reconfigurations;
  for (const [k, v] of Object.entries(ns.moves)) stats[`balance.${k}`] = v;
  if (ns instanceof SimElection) {
    stats.elections = ns.etcd.stats.campaignsWon;
    stats.fencedRefusals = ns.etcd.stats.fencedRefusals;
    stats.leasesExpired = ns.etcd.stats.leasesExpired;
    stats.etcdSaves = ns.etcd.stats.saves;
    stats.leaderChangesDuringReconfiguration = ns.stats.leaderChangesDuringReconfiguration;
  }
  if (ae) for (const [k, v] of Object.entries(ae.stats)) stats[`antiEntropy.${k}`] = v;
  stats.events = world.events;
  stats.messages = world.messagesSent;
  stats.dropped = world.messagesDropped;
  Object.assign(stats, Object.fromEntries(Object.entries(observer.stats).map(([k, v]) => [`observed.${k}`, v])));
  return {
    seed,
    knobs,
    violations: observer.violations,
    linearizability,
    history,
    stats,
    simulatedMs: world.now,
    wallMs: Date.now() - wallStart,
  };
}

/**
 * Names the known ways a partition stays stuck after the faults stopped (each a liveness
 * bug found by this simulator, see docs/consistency.md); undefined for anything else.
 */
export function diagnose(
  ns: NameserverView,
  nodes: readonly SimStorageNode[],
  knobs: Knobs,
): { kind: string; text: string } | undefined {
  const byId = new Map(nodes.map((n) => [n.id as string, n]));
  for (const c of ns.configs()) {
    const p = c.partition;
    // S13 (here by anti-entropy's relearn, S16): every member stepped out as corrupt, the
    // healthy copies were removed meanwhile; no corrupt copy serves and none is started afresh:
    // unavailable until an operator acts (Nameserver.stuckCorrupt). By design, not a bug.
    const members = [c.primary, ...c.secondaries];
    if (members.every((m) => byId.get(m)?.replicas.get(p)?.corrupt !== undefined)) {
      return {
        kind: 'liveness:only-corrupt-members',
        text:
          `partition ${p} e${c.epoch} ${describeConfig(c)}: every member stepped out of it as corrupt (S13; told ` +
          `to relearn by anti-entropy, S16) and its healthy copies were removed from the configuration ` +
          `meanwhile: it stays unavailable until an operator acts (Nameserver.stuckCorrupt)`,
      };
    }
    const primary = byId.get(c.primary)?.replicas.get(p);
    if (!primary) continue;
    // The primary cannot commit its epoch-start entry with fewer members than
    // --min-write-replicas (S8), so it never serves (S6), so it never asks to promote its
    // learner (S7: maybePromote requires serving): stuck for good.
    if (1 + c.secondaries.length < knobs.settings.minWriteReplicas && c.learners.length > 0 && !primary.serving) {
      return {
        kind: 'liveness:primary-below-min-write-replicas',
        text:
          `partition ${p}: primary ${c.primary} has ${1 + c.secondaries.length} member(s), fewer than ` +
          `--min-write-replicas=${knobs.settings.minWriteReplicas}: its epoch-start entry cannot commit (S8), so ` +
          `it never serves (S6) and never asks to promote learner ${c.learners.join(',')} (S7)`,
      };
    }
    // S11: a learner that needs a snapshot (its applied seq is below the primary's log
    // base) and gets nowhere: the offer, the learner's request for the entries after the
    // snapshot, or the learner itself (a crash mid-fetch) was lost, and nothing re-sends.
    for (const l of c.learners) {
      const r = byId.get(l)?.replicas.get(p);
      // Diagnosis only: the primary's private per-peer state says whether it waits for a snapshot.
      const peer = (primary as unknown as { peers?: Map<string, { snapshotting?: boolean }> }).peers?.get(l);
      if (r && primary.serving && r.active && r.epoch === c.epoch && peer?.snapshotting === true) {
        return {
          kind: 'liveness:learner-snapshot-stalled',
          text:
            `partition ${p}: learner ${l} (applied ${r.appliedSeq}, log to ${r.lastSeq}; primary's log ` +
            `${primary.log.base.seq}..${primary.lastSeq}) is marked as snapshotting by the primary, which sends it ` +
            `no prepare until it asks again (S11); the snapshot handshake (snapshotOffer → fetch → install → ` +
            `prepareNack) was interrupted — a lost offer, a lost request, or a learner restarted ` +
            `mid-fetch — and nothing retries it`,
        };
      }
    }
    // A secondary that needs entries the primary no longer has: nothing removes it (S12
    // says it relearns, but only a warning is logged), so the primary never commits again.
    // One way in: a learner acked, restarted and discarded its log above its applied seq
    // (S11), and the primary still counted its old ack to ask for its promotion (S7: no
    // incarnation id in acks or promotion requests).
    for (const s2 of c.secondaries) {
      const r = byId.get(s2)?.replicas.get(p);
      if (r?.active && r.epoch === c.epoch && r.role === 'secondary' && r.lastSeq < primary.log.base.seq) {
        return {
          kind: 'liveness:secondary-needs-truncated-entries',
          text:
            `partition ${p}: secondary ${s2} holds entries up to ${r.lastSeq} but the primary's log starts after ` +
            `${primary.log.base.seq}: it can never catch up, and nothing removes it (S12), so the primary never ` +
            `commits (and never serves) again`,
        };
      }
    }
    // A secondary holds every entry but was never told the last commit point: the
    // commit-only prepare was lost and nothing re-sends it while no write comes.
    for (const s of c.secondaries) {
      const r = byId.get(s)?.replicas.get(p);
      if (
        r &&
        primary.serving &&
        r.epoch === c.epoch &&
        r.lastSeq === primary.lastSeq &&
        r.appliedSeq < primary.commitSeq &&
        primary.commitSeq === primary.lastSeq
      ) {
        return {
          kind: 'liveness:commit-point-not-resent',
          text:
            `partition ${p}: secondary ${s} holds every entry up to ${r.lastSeq} but applied only ` +
            `${r.appliedSeq} of the primary's ${primary.commitSeq}: the prepare carrying the commit point was lost ` +
            `and is never re-sent (S2)`,
        };
      }
    }
    // Under-replicated with no learner while a live server holds no replica at all: the
    // nameserver only picks servers that report some progress (maybeAddLearner).
    const size = 1 + c.secondaries.length + c.learners.length;
    if (size < Math.min(knobs.settings.replicas, nodes.length) && c.learners.length === 0) {
      // (An unhealthy server holds no replica until its storage reopens: not a candidate.)
      const empty = nodes.filter(
        (n) => n.up && n.healthy && n.replicas.size === 0 && ![c.primary, ...c.secondaries].includes(n.id),
      );
      if (empty.length > 0) {
        return {
          kind: 'liveness:empty-server-never-chosen',
          text:
            `partition ${p} has ${size} of R=${knobs.settings.replicas} members and no learner, while ` +
            `${empty.map((n) => n.id).join(',')} is alive and holds no replica: Nameserver.maybeAddLearner only ` +
            `considers servers whose heartbeat reports some progress`,
        };
      }
    }
  }
  return undefined;
}

/** Issue 15: how long the map must stay still once converged and spread (`liveness:endless-moves`). */
const STILL_MS = 5000;
/**
 * Issue 15: a map with no change for this long (or 2 x dead-after + 1 s, the nameserver's
 * settling time before it rebalances, if longer) is done moving (a move's steps come within a
 * heartbeat or two).
 */
const QUIET_MS = 2000;

/** Issue 15: the bounded wait of a graceful stop for its new primaries (HAND_OFF_WAIT_MS in server.ts). */
const HAND_OFF_WAIT_MS = 2000;

/**
 * Issue 15 (--rebalance), once converged: undefined when every drained server holds nothing
 * and every live eligible server (up, healthy, not draining) holds within ±1 of the even
 * share of the replicas and of the primaries; else what is not there yet.
 */
export function balanceProblem(ns: NameserverView, nodes: readonly SimStorageNode[]): string | undefined {
  const core = ns.core;
  if (!core) return 'the nameserver is not serving';
  const draining = core.draining;
  const configs = ns.configs();
  for (const d of draining) {
    const held = configs.filter((c) => [c.primary, ...c.secondaries, ...c.learners].includes(d));
    if (held.length > 0) return `drained ${d} still holds partition(s) ${held.map((c) => c.partition).join(',')}`;
  }
  const eligible = nodes.filter((n) => n.up && !n.paused && n.healthy && !draining.has(n.id));
  if (eligible.length === 0) return undefined;
  const replicas = new Map<string, number>(eligible.map((n) => [n.id, 0]));
  const primaries = new Map<string, number>(eligible.map((n) => [n.id, 0]));
  for (const c of configs) {
    for (const m of [c.primary, ...c.secondaries]) if (replicas.has(m)) replicas.set(m, replicas.get(m)! + 1);
    if (primaries.has(c.primary)) primaries.set(c.primary, primaries.get(c.primary)! + 1);
  }
  for (const [what, load] of [
    ['replicas', replicas],
    ['primaries', primaries],
  ] as const) {
    const total = [...load.values()].reduce((a, b) => a + b, 0);
    const share = total / eligible.length;
    if ([...load.values()].some((x) => Math.abs(x - share) > 1))
      return (
        `the ${what} are not spread evenly over the ${eligible.length} eligible servers (even share ` +
        `${share.toFixed(2)}): ${[...load].map(([n, x]) => `${n} ${x}`).join(', ')}`
      );
  }
  return undefined;
}

/** Issue 15: the operator, who drains and undrains servers through the nameserver's `drain` request. */
export class SimOperator implements Endpoint {
  readonly id = 'op';
  up = true;
  paused = false;
  inc = 0;
  held: SimEvent[] = [];

  constructor(private readonly world: World) {}

  /** `dstore drain <node>` (`on` false: `--cancel`); `done` gets the servers draining after it, or the error. */
  drain(node: string, on: boolean, done: (r: { draining: string[] } | { error: string }) => void): void {
    this.world.nsCall(
      this.id,
      { t: 'drain', node, on },
      1000,
      () => `drain ${node}${on ? '' : ' (cancel)'}`,
      (r) => done(r.ok ? { draining: (r.value as { draining: string[] }).draining } : { error: r.error.code }),
    );
  }

  onCall(): void {
    // The operator answers nothing.
  }

  onMessage(): void {}
}

/** Every replica of every partition, one line each, for a no-convergence report. */
function describeReplicas(ns: NameserverView, nodes: readonly SimStorageNode[], knobs: Knobs): string {
  const lines: string[] = [];
  for (let p = 0; p < knobs.settings.partitions; p++) {
    const c = ns.configs()[p];
    lines.push(`partition ${p}: ${c ? `e${c.epoch} ${describeConfig(c)}` : 'no configuration'}`);
    for (const n of nodes) {
      const r = n.replicas.get(p as PartitionId);
      if (!r) continue;
      const pr = r.progress();
      lines.push(
        `  ${n.id}${n.up ? '' : ' (down)'}: ${pr.role} e${pr.epoch}${pr.serving ? ' serving' : ''}, log ` +
          `${r.log.base.seq}..${pr.lastSeq} (last epoch ${pr.lastEpoch}), commit ${pr.commitSeq}, applied ` +
          `${pr.appliedSeq}, durable applied ${n.disk.parts.get(p as PartitionId)?.applied.seq ?? 0}`,
      );
    }
  }
  return lines.join('\n');
}

/**
 * The partitions whose configured members (primary and secondaries) do not all hold the same
 * applied state, with whether a strict majority of them does (S16: only then is any repaired).
 */
function disagreeing(
  ns: NameserverView,
  nodes: readonly SimStorageNode[],
): Array<{ partition: number; majority: boolean; text: string }> {
  const byId = new Map(nodes.map((n) => [n.id as string, n]));
  const out: Array<{ partition: number; majority: boolean; text: string }> = [];
  for (const c of ns.configs()) {
    const members = [c.primary as string, ...c.secondaries];
    const states = members.map((m) => byId.get(m)!.disk.digest(c.partition));
    const counts = new Map<string, number>();
    for (const s of states) counts.set(s, (counts.get(s) ?? 0) + 1);
    if (counts.size <= 1) continue;
    const top = Math.max(...counts.values());
    out.push({
      partition: c.partition,
      majority: top * 2 > members.length,
      text:
        `partition ${c.partition} e${c.epoch} ${describeConfig(c)}: after anti-entropy its members still differ: ` +
        members.map((m, i) => `${m} holds {${states[i]}}`).join('; '),
    });
  }
  return out;
}

/** Undefined when every partition converged; else what is not there yet. `compareData`: also the members' data. */
function convergence(
  ns: NameserverView,
  nodes: readonly SimStorageNode[],
  knobs: Knobs,
  compareData = true,
): string | undefined {
  if (!ns.up || ns.paused || !ns.core?.formed) return 'the nameserver is not serving a formed map';
  const byId = new Map(nodes.map((n) => [n.id as string, n]));
  for (const c of ns.configs()) {
    const p = c.partition;
    const where = `partition ${p} e${c.epoch} ${describeConfig(c)}`;
    if (c.learners.length > 0) return `${where}: a learner is still catching up`;
    if (1 + c.secondaries.length < Math.min(knobs.settings.replicas, nodes.length))
      return `${where}: fewer than R members`;
    const primaryNode = byId.get(c.primary)!;
    const primary = primaryNode.replicas.get(p);
    if (!primary?.active || primary.role !== 'primary' || primary.epoch !== c.epoch)
      return (
        `${where}: ${c.primary} is not acting as its primary ` +
        `(${primary ? `${primary.role} e${primary.epoch}` : 'no replica'})`
      );
    if (!primary.serving) return `${where}: the primary is not serving yet`;
    if (primary.commitSeq !== primary.lastSeq || primary.appliedSeq !== primary.commitSeq)
      return (
        `${where}: the primary has prepared ${primary.lastSeq}, committed ${primary.commitSeq}, ` +
        `applied ${primary.appliedSeq}`
      );
    const digest = primaryNode.disk.digest(p);
    if ((primaryNode.disk.parts.get(p)?.applied.seq ?? 0) !== primary.appliedSeq)
      return `${where}: the primary's applies are not all durable yet`;
    for (const s of c.secondaries) {
      const node = byId.get(s)!;
      const r = node.replicas.get(p);
      if (!r?.active || r.role !== 'secondary' || r.epoch !== c.epoch)
        return (
          `${where}: ${s} is not acting as its secondary ` +
          `(${r ? `${r.active ? r.role : 'inactive'} e${r.epoch}` : 'no replica'})`
        );
      if (r.appliedSeq !== primary.commitSeq) return `${where}: ${s} applied ${r.appliedSeq} of ${primary.commitSeq}`;
      if ((node.disk.parts.get(p)?.applied.seq ?? 0) !== r.appliedSeq)
        return `${where}: ${s}'s applies are not all durable yet`;
      if (compareData && node.disk.digest(p) !== digest)
        return `${where}: ${s} holds {${node.disk.digest(p)}} but the primary holds {${digest}}`;
    }
  }
  return undefined;
}

/** Injects faults on a schedule drawn from the seed until `faultEnd`; each fault heals itself. */
class Nemesis {
  private readonly cutBy = new Map<number, Array<[string, string]>>();
  private nextFault = 1;

  constructor(
    private readonly world: World,
    private readonly knobs: Knobs,
    private readonly ns: SimNameserver | SimElection,
    private readonly nodes: readonly SimStorageNode[],
    private readonly count: (k: string) => void,
    private readonly faultEnd: number,
    private readonly operator?: SimOperator,
  ) {}

  /** Issue 15: the servers draining, as the nameserver's last `drain` answer said. */
  private draining: string[] = [];
  /** Issue 15: the servers stopping gracefully now. */
  private readonly leaving = new Set<SimStorageNode>();

  next(): void {
    const w = this.world;
    if (w.now >= this.faultEnd) return;
    // Without durable storage a crash of every replica loses everything by definition: not a fault to inject.
    const weights = Object.entries(this.knobs.faultWeights).map(
      ([k, v]) => [k === 'crashAll' && !this.knobs.node.durable ? 0 : v, k as FaultKind] as const,
    );
    const kind = w.rng.weighted(weights);
    this.inject(kind);
    w.schedule(Math.max(1, w.rng.exp(this.knobs.faultEveryMs)), 'world', () => this.next());
  }

  private duration(): number {
    return this.world.rng.int(50, this.knobs.maxFaultMs);
  }

  private later(ms: number, fn: () => void): void {
    this.world.schedule(ms, 'world', fn);
  }

  private inject(kind: FaultKind): void {
    const w = this.world;
    const rng = w.rng;
    switch (kind) {
      case 'crash': {
        const up = this.nodes.filter((n) => n.up);
        if (up.length === 0) return;
        const n = rng.pick(up);
        const ms = rng.chance(0.2) ? rng.int(0, 20) : this.duration();
        w.trace(`NEMESIS crash ${n.id}, restart in ${ms} ms`);
        this.count('fault.crash');
        n.crash();
        this.later(ms, () => {
          if (!n.up) n.start();
        });
        return;
      }
      case 'crashAll': {
        const up = this.nodes.filter((n) => n.up);
        if (up.length === 0) return;
        const ms = rng.chance(0.5) ? rng.int(0, 20) : this.duration();
        w.trace(`NEMESIS crash every storage server (${up.map((n) => n.id).join(' ')}), restart in ${ms} ms`);
        this.count('fault.crashAll');
        for (const n of up) n.crash();
        this.later(ms, () => {
          for (const n of up) if (!n.up) n.start();
        });
        return;
      }
      case 'pause': {
        const up = this.nodes.filter((n) => n.up && !n.paused);
        if (up.length === 0) return;
        const n = rng.pick(up);
        const ms = this.duration();
        w.trace(`NEMESIS pause ${n.id} for ${ms} ms`);
        this.count('fault.pause');
        w.pause(n.id);
        this.later(ms, () => w.resume(n.id));
        return;
      }
      case 'nsPause': {
        if (this.ns instanceof SimElection) return this.pauseCandidate(this.ns);
        if (!this.ns.up || this.ns.paused) return;
        const ms = this.duration();
        w.trace(`NEMESIS pause ns for ${ms} ms`);
        this.count('fault.nsPause');
        w.pause('ns');
        this.later(ms, () => w.resume('ns'));
        return;
      }
      case 'nsCrash': {
        if (this.ns instanceof SimElection) return this.crashCandidate(this.ns);
        if (!this.ns.up) return;
        const ms = rng.chance(0.3) ? rng.int(0, 20) : this.duration();
        w.trace(`NEMESIS crash ns, restart in ${ms} ms`);
        this.count('fault.nsCrash');
        const ns = this.ns;
        ns.crash();
        this.later(ms, () => {
          if (!ns.up) ns.restart();
        });
        return;
      }
      case 'etcdDown': {
        if (!(this.ns instanceof SimElection) || !this.ns.etcd.available) return;
        const etcd = this.ns.etcd;
        const ms = this.duration();
        w.trace(`NEMESIS the election service loses quorum for ${ms} ms`);
        this.count('fault.etcdDown');
        etcd.setAvailable(false);
        this.later(ms, () => {
          etcd.setAvailable(true);
          w.trace('NEMESIS the election service has quorum again');
        });
        return;
      }
      case 'isolate': {
        const servers = [...this.nsIds(), ...this.nodes.map((n) => n.id as string)];
        const victim = rng.pick(servers);
        const links: Array<[string, string]> = [];
        for (const other of w.endpoints.keys()) if (other !== victim) links.push([victim, other]);
        this.cut(`isolate ${victim}`, links);
        this.count('fault.isolate');
        return;
      }
      case 'link': {
        const [a, b] = rng.shuffle(this.nodes.map((n) => n.id as string));
        if (a === undefined || b === undefined) return;
        this.cut(`link ${a} | ${b}`, [[a, b]]);
        this.count('fault.link');
        return;
      }
      case 'split': {
        const servers = rng.shuffle([...this.nsIds(), ...this.nodes.map((n) => n.id as string)]);
        const k = rng.int(1, servers.length - 1);
        const a = servers.slice(0, k);
        const b = servers.slice(k);
        // Each client lands on one side.
        for (const id of w.endpoints.keys()) if (id.startsWith('c')) (rng.chance(0.5) ? a : b).push(id);
        const links: Array<[string, string]> = [];
        for (const x of a) for (const y of b) links.push([x, y]);
        this.cut(`split {${a.join(',')}} | {${b.join(',')}}`, links);
        this.count('fault.split');
        return;
      }
      case 'corrupt': {
        // Silent corruption (issue 13): a live replica's stored state changes, no log entry.
        const holders = this.nodes.filter((n) => n.up && n.disk.parts.size > 0);
        if (holders.length === 0) return;
        const n = rng.pick(holders);
        const p = rng.pick([...n.disk.parts.keys()].sort((a, b) => a - b));
        const what = n.corrupt(p);
        if (what === undefined) return;
        w.trace(`NEMESIS silent corruption on ${n.id} p${p}: ${what}`);
        this.count('fault.corrupt');
        return;
      }
      case 'join': {
        // A storage server that was not in the initial map starts (issue 15).
        const spare = this.nodes.slice(this.knobs.nodes).find((n) => !n.up && n.inc === 0);
        if (!spare) return;
        w.trace(`NEMESIS ${spare.id} joins the cluster`);
        this.count('fault.join');
        spare.start();
        return;
      }
      case 'leave': {
        // A graceful stop (SIGTERM, issue 15): hand-off through the nameserver, then down; back later, or at the heal.
        const up = this.nodes.filter((n) => n.up && !n.paused && !this.leaving.has(n));
        if (up.length === 0) return;
        const n = rng.pick(up);
        const restartMs = rng.chance(0.6) ? this.duration() : undefined;
        w.trace(
          `NEMESIS ${n.id} stops gracefully (SIGTERM)` +
            `${restartMs === undefined ? ', not restarted before the heal' : `, restart ${restartMs} ms after`}`,
        );
        this.count('fault.leave');
        this.leaving.add(n);
        const inc = n.inc;
        n.leave(HAND_OFF_WAIT_MS, (outcome) => {
          this.count(`leave.${outcome}`);
          this.leaving.delete(n);
          // A stop that ends after the heal (its leave call timed out then) restarts at once:
          // every server runs after the heal (found by seed 424: n2 stayed down as the only member of p3).
          const back = this.healed ? 0 : restartMs;
          if (back !== undefined)
            this.later(back, () => {
              if (!n.up && n.inc === inc) n.start();
            });
        });
        // A crash meanwhile ends the stop (the crash fault restarts it).
        this.later(HAND_OFF_WAIT_MS + this.knobs.node.callTimeoutMs + 100, () => this.leaving.delete(n));
        return;
      }
      case 'drain':
      case 'undrain': {
        const op = this.operator;
        if (!op) return;
        const on = kind === 'drain';
        const started = this.nodes.filter((n) => n.inc > 0).map((n) => n.id as string);
        const options = on ? started.filter((n) => !this.draining.includes(n)) : this.draining;
        if (options.length === 0) return;
        const node = rng.pick(options);
        w.trace(`NEMESIS the operator ${on ? 'drains' : 'cancels the drain of'} ${node}`);
        op.drain(node, on, (r) => {
          if ('error' in r) {
            w.trace(`NEMESIS ${kind} ${node} refused: ${r.error}`);
            this.count(`fault.${kind}Refused`);
            return;
          }
          this.draining = r.draining;
          this.count(`fault.${kind}`);
        });
        return;
      }
      default:
        assertNever(kind);
    }
  }

  /**
   * Issue 15, at the heal: the operator cancels every drain the nameserver knows of, retrying
   * (every 200 ms, up to 30 s) while the nameserver does not answer.
   */
  undrainAll(): void {
    const op = this.operator;
    if (!op) return;
    const w = this.world;
    const deadline = w.now + 30_000;
    const attempt = (): void => {
      const draining = [...(this.ns.core?.draining ?? [])];
      if (w.now > deadline) return;
      if (this.ns.core === undefined) return this.later(200, attempt);
      if (draining.length === 0) return;
      w.trace(`HEAL: the operator cancels the drain of ${draining.join(',')}`);
      op.drain(draining[0]!, false, (r) => {
        if (!('error' in r)) {
          this.draining = r.draining;
          this.count('undrainAtHeal');
        }
        this.later('error' in r ? 200 : 0, attempt);
      });
    };
    attempt();
  }

  private cut(what: string, links: Array<[string, string]>): void {
    const w = this.world;
    const id = this.nextFault++;
    const ms = this.duration();
    w.trace(`NEMESIS ${what} for ${ms} ms`);
    for (const [a, b] of links) w.cut(a, b);
    this.cutBy.set(id, links);
    this.later(ms, () => {
      for (const [a, b] of this.cutBy.get(id) ?? []) w.heal(a, b);
      this.cutBy.delete(id);
      w.trace(`NEMESIS heals ${what}`);
    });
  }

  private nsIds(): string[] {
    return this.ns instanceof SimElection ? this.ns.candidates.map((c) => c.id) : ['ns'];
  }

  /** The candidate a leader fault hits: the leader mostly (a leader change), else any. */
  private victim(e: SimElection, ok: (c: SimElection['candidates'][number]) => boolean) {
    const leader = e.leader;
    if (leader && ok(leader) && this.world.rng.chance(0.7)) return leader;
    const others = e.candidates.filter(ok);
    return others.length > 0 ? this.world.rng.pick(others) : undefined;
  }

  private crashCandidate(e: SimElection): void {
    const c = this.victim(e, (x) => x.up);
    if (!c) return;
    const ms = this.world.rng.chance(0.3) ? this.world.rng.int(0, 20) : this.duration();
    this.world.trace(`NEMESIS crash ${c.id}${c === e.leader ? ' (the leader)' : ''}, restart in ${ms} ms`);
    this.count('fault.nsCrash');
    c.crash();
    this.later(ms, () => {
      if (!c.up) c.start();
    });
  }

  private pauseCandidate(e: SimElection): void {
    const c = this.victim(e, (x) => x.up && !x.paused);
    if (!c) return;
    // Past its lease more often than not: its late saves must be refused.
    const ms = this.world.rng.chance(0.6) ? e.election.leaseTtlMs + this.duration() : this.duration();
    this.world.trace(`NEMESIS pause ${c.id}${c === e.leader ? ' (the leader)' : ''} for ${ms} ms`);
    this.count('fault.nsPause');
    this.world.pause(c.id);
    this.later(ms, () => this.world.resume(c.id));
  }

  /** Set by healAll: from then on every server runs. */
  private healed = false;

  /** Ends every fault at once. */
  healAll(): void {
    const w = this.world;
    this.healed = true;
    w.heal();
    this.cutBy.clear();
    if (this.ns instanceof SimElection) this.ns.healAll();
    else {
      if (!this.ns.up) this.ns.restart();
      if (this.ns.paused) w.resume('ns');
    }
    for (const n of this.nodes) {
      if (!n.up) n.start();
      else if (n.paused) w.resume(n.id);
    }
  }
}

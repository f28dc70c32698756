/**
 * Election mode (issue 12): the simulated election service (sim-etcd.ts) and the nameserver
 * candidates (elected-node.ts), seen by the run as one nameserver: the candidate that leads
 * now (its term installed, its leadership the one etcd holds).
 */
import type { Nameserver } from '../../src/core/nameserver/nameserver.js';
import type { Config } from '../../src/core/types.js';
import { type ElectionKnobs, SimCandidate } from './elected-node.js';
import { countMoves, type NameserverKnobs, traceMapChanges } from './nameserver-node.js';
import type { Observer } from './observer.js';
import { seedRouter } from './seeds.js';
import { SimEtcd } from './sim-etcd.js';
import type { World } from './world.js';

export class SimElection {
  readonly etcd: SimEtcd;
  readonly candidates: SimCandidate[] = [];
  readonly stats = { reconfigurations: 0, leaderChangesDuringReconfiguration: 0 };
  /** Rebalancing moves (issue 15) seen in the saved maps, by kind (countMoves). */
  readonly moves: Record<string, number> = {};
  private lastReconfigurationMs = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly world: World,
    knobs: NameserverKnobs,
    readonly election: ElectionKnobs,
    observer: Observer,
    unfenced: boolean,
  ) {
    observer.electionChecks = true;
    this.etcd = new SimEtcd(world, observer, unfenced);
    world.add(this.etcd);
    for (let i = 1; i <= election.candidates; i++) {
      const c = new SimCandidate(`ns${i}`, world, knobs, election, (before, after) => {
        const n = traceMapChanges(world, c.id, before, after);
        this.stats.reconfigurations += n;
        countMoves(world, before, after, this.moves);
        if (n > 0) this.lastReconfigurationMs = world.now;
      });
      this.candidates.push(c);
      world.add(c);
    }
    // A leader change during a reconfiguration: a learner being caught up (re-replication, a
    // promotion to come), or a configuration changed (a failover) within two dead-after periods.
    this.etcd.onElected = () => {
      if (this.etcd.stats.campaignsWon <= 1) return;
      const learners = this.etcd.storedMap?.configs.some((c) => c.learners.length > 0) ?? false;
      if (learners || world.now - this.lastReconfigurationMs < 2 * knobs.deadAfterMs)
        this.stats.leaderChangesDuringReconfiguration++;
    };
    world.nsRouter = seedRouter(
      world,
      this.candidates.map((c) => c.id),
    );
  }

  start(): void {
    for (const c of this.candidates) c.start();
  }

  /** The candidate that leads now, if any. */
  get leader(): SimCandidate | undefined {
    const rev = this.etcd.leaderRevision;
    return this.candidates.find((c) => c.leading && c.lead?.held.rev === rev);
  }

  get up(): boolean {
    return this.leader !== undefined;
  }

  get paused(): boolean {
    return this.leader?.paused ?? false;
  }

  get core(): Nameserver | undefined {
    return this.leader?.core;
  }

  configs(): readonly Config[] {
    return this.leader?.configs() ?? [];
  }

  /** Ends every election fault. */
  healAll(): void {
    this.etcd.setAvailable(true);
    for (const c of this.candidates) {
      if (!c.up) c.start();
      else if (c.paused) this.world.resume(c.id);
    }
  }
}

/**
 * The simulated nameserver: the host the nameserver process runs (src/nameserver/host.ts),
 * driven by the same glue as src/nameserver/server.ts over the simulated network and clock:
 * calls go to `onRequest`, a tick every `tickPeriodMs(heartbeatMs)`, and the effects are
 * executed in order — the map persisted (here: serialised to a string that survives
 * crashes) before the reply that depends on it. A restart reloads the persisted map (S15).
 */
import { DstoreError } from '../../src/core/errors.js';
import { type ClusterSettings, Nameserver, type PersistedMap } from '../../src/core/nameserver/nameserver.js';
import { assertNever, type Config } from '../../src/core/types.js';
import { type NameserverEffect, NameserverHost, parseMap, tickPeriodMs } from '../../src/nameserver/host.js';
import type { NameserverRequest } from '../../src/rpc/messages.js';
import { describeConfig } from './storage-node.js';
import { type CallResult, type Endpoint, type SimEvent, SimulationFailure, type World } from './world.js';

export interface NameserverKnobs {
  readonly settings: ClusterSettings;
  readonly heartbeatMs: number;
  readonly deadAfterMs: number;
  readonly rereplicateAfterMs: number;
}

export class SimNameserver implements Endpoint {
  readonly id = 'ns';
  up = false;
  paused = false;
  inc = 0;
  held: SimEvent[] = [];
  /** The durable map file; undefined until the first start. */
  private persisted: string | undefined;
  /** The map last persisted, to trace what changed. */
  private lastMap: PersistedMap | undefined;
  host: NameserverHost | undefined;
  readonly stats = { restarts: 0, reconfigurations: 0 };
  /** Rebalancing moves (issue 15) seen in the persisted map, by kind (countMoves). */
  readonly moves: Record<string, number> = {};

  constructor(
    private readonly world: World,
    private readonly knobs: NameserverKnobs,
  ) {}

  get core(): Nameserver | undefined {
    return this.host?.core;
  }

  start(): void {
    this.world.started(this.id);
    const fresh = this.persisted === undefined;
    const map =
      this.persisted === undefined
        ? Nameserver.newMap('sim', this.knobs.settings)
        : parseMap(this.persisted, 'the simulated map');
    const { deadAfterMs, rereplicateAfterMs, settings } = this.knobs;
    this.host = new NameserverHost(map, fresh, { settings, deadAfterMs, rereplicateAfterMs }, this.world.now);
    this.host.address = this.id;
    this.lastMap = map;
    this.execute(this.host.takeEffects());
    this.world.trace(`ns starts (map version ${map.version})`);
    const period = tickPeriodMs(this.knobs.heartbeatMs);
    const timer = () => {
      if (this.host) this.execute(this.host.onTick(this.world.now));
      this.world.schedule(period, this.id, timer);
    };
    this.world.schedule(period, this.id, timer);
  }

  crash(): void {
    if (!this.up) return;
    this.host = undefined;
    this.world.crashed(this.id);
    this.world.trace('ns CRASHES');
  }

  restart(): void {
    this.stats.restarts++;
    this.start();
  }

  private execute(effects: readonly NameserverEffect[]): void {
    for (const e of effects) {
      switch (e.kind) {
        case 'persist':
          this.persisted = JSON.stringify(e.map);
          this.traceChanges(this.lastMap, e.map);
          this.lastMap = e.map;
          break;
        case 'log':
          if (e.level !== 'info' && this.world.tracing) this.world.trace(`ns ${e.level}: ${e.msg}`);
          break;
        default:
          assertNever(e);
      }
    }
  }

  private traceChanges(before: PersistedMap | undefined, after: PersistedMap): void {
    this.stats.reconfigurations += traceMapChanges(this.world, 'ns', before, after);
    countMoves(this.world, before, after, this.moves);
  }

  onMessage(): void {
    // The nameserver only answers calls.
  }

  onCall(_from: string, body: unknown, respond: (r: CallResult) => void): void {
    const host = this.host;
    if (!host) return;
    // The simulated storage servers are reached by id, with no backend of their own.
    const call = body as { t: string; nodeId?: string };
    const req = call.t === 'register' ? { backend: 'sim', address: call.nodeId, ...call } : call;
    const { effects, reply } = host.onRequest(req as NameserverRequest, this.world.now);
    this.execute(effects);
    if (reply.ok) return respond({ ok: true, value: reply.value });
    if (reply.error instanceof DstoreError) return respond({ ok: false, error: reply.error.toWire() });
    const why = reply.error instanceof Error ? reply.error.message : String(reply.error);
    throw new SimulationFailure(`nameserver: ${why}`);
  }

  /** The current configurations (for the convergence check). */
  configs(): readonly Config[] {
    return this.host?.core.map.configs ?? [];
  }
}

/** Traces each configuration that changed from `before` to `after` (by `who`); returns how many. */
export function traceMapChanges(
  world: World,
  who: string,
  before: PersistedMap | undefined,
  after: PersistedMap,
): number {
  if (before === undefined) return 0;
  let n = 0;
  for (const c of after.configs) {
    const old = before.configs[c.partition];
    if (old?.epoch === c.epoch) continue;
    n++;
    if (world.tracing)
      world.trace(
        `${who} map v${after.version}: p${c.partition} e${c.epoch} ${describeConfig(c)}` +
          `${old ? ` (was e${old.epoch} ${describeConfig(old)})` : ''}`,
      );
  }
  return n;
}

/**
 * Issue 15: counts into `moves` the changes from `before` to `after` that rebalancing makes
 * (balance.ts) while every server of the old configuration is up and not paused, so no
 * failure explains them: `learner` (a learner added to a partition with no spare member),
 * `shrink` (a member removed from a partition with more than R), `handOver` (the primary role
 * given to a secondary, the old primary staying a secondary). A graceful stop's changes
 * (the old primary or secondary turned learner) are not among them.
 */
export function countMoves(
  world: World,
  before: PersistedMap | undefined,
  after: PersistedMap,
  moves: Record<string, number>,
): void {
  if (before === undefined) return;
  const r = after.settings.replicas;
  const add = (k: string): void => void (moves[k] = (moves[k] ?? 0) + 1);
  for (const c of after.configs) {
    const old = before.configs[c.partition];
    if (!old || old.epoch === c.epoch) continue;
    const all = [old.primary, ...old.secondaries, ...old.learners];
    if (!all.every((n) => world.endpoints.get(n)?.up === true && !world.endpoints.get(n)?.paused)) continue;
    const size = (x: Config): number => 1 + x.secondaries.length;
    if (old.learners.length === 0 && c.learners.length === 1 && size(old) === r && size(c) === r) add('learner');
    else if (size(old) > r && size(c) === size(old) - 1 && c.learners.length === 0) add('shrink');
    else if (c.primary !== old.primary && c.secondaries.includes(old.primary)) add('handOver');
  }
}

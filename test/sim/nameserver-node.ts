/**
 * The simulated nameserver: the real Nameserver core driven as src/nameserver/server.ts
 * drives it — registrations, heartbeats, promotions and epoch confirmations as calls, a
 * tick every max(50, heartbeatMs/2), and the map persisted (here: serialised to a string
 * that survives crashes) before any reply that depends on it. A restart reloads the
 * persisted map (S15).
 */
import { type ClusterSettings, Nameserver, type PersistedMap } from '../../src/core/nameserver/nameserver.js';
import type { ReplicaProgress } from '../../src/core/replica/replica.js';
import { type Config, type NodeId, partitionId } from '../../src/core/types.js';
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
  core: Nameserver | undefined;
  readonly stats = { restarts: 0, reconfigurations: 0 };

  constructor(
    private readonly world: World,
    private readonly knobs: NameserverKnobs,
  ) {}

  start(): void {
    this.world.started(this.id);
    const map: PersistedMap = this.persisted === undefined ? Nameserver.newMap('sim', this.knobs.settings) : (JSON.parse(this.persisted) as PersistedMap);
    this.core = new Nameserver(map, { deadAfterMs: this.knobs.deadAfterMs, rereplicateAfterMs: this.knobs.rereplicateAfterMs }, this.world.now);
    this.persist();
    this.world.trace(`ns starts (map version ${map.version})`);
    const period = Math.max(50, Math.floor(this.knobs.heartbeatMs / 2));
    const timer = () => {
      this.tick();
      this.world.schedule(period, this.id, timer);
    };
    this.world.schedule(period, this.id, timer);
  }

  crash(): void {
    if (!this.up) return;
    this.core = undefined;
    this.world.crashed(this.id);
    this.world.trace('ns CRASHES');
  }

  restart(): void {
    this.stats.restarts++;
    this.start();
  }

  private persist(): void {
    this.persisted = JSON.stringify(this.core!.map);
  }

  private tick(): void {
    const core = this.core!;
    const before = core.map;
    if (!core.onTick(this.world.now)) return;
    this.persist();
    this.traceChanges(before);
  }

  private traceChanges(before: PersistedMap): void {
    const after = this.core!.map;
    for (const c of after.configs) {
      const old = before.configs[c.partition];
      if (old?.epoch === c.epoch) continue;
      this.stats.reconfigurations++;
      if (this.world.tracing) this.world.trace(`ns map v${after.version}: p${c.partition} e${c.epoch} ${describeConfig(c)}${old ? ` (was e${old.epoch} ${describeConfig(old)})` : ''}`);
    }
  }

  onMessage(): void {
    // The nameserver only answers calls.
  }

  onCall(_from: string, body: unknown, respond: (r: CallResult) => void): void {
    const core = this.core;
    if (!core) return;
    const now = this.world.now;
    const req = body as { t: string } & Record<string, unknown>;
    switch (req.t) {
      case 'register': {
        const r = req as unknown as { nodeId: NodeId; incarnation: string; durable: boolean; activePartitions: number[] };
        if (core.onRegister({ nodeId: r.nodeId, address: r.nodeId, backend: 'sim', incarnation: r.incarnation, durable: r.durable, activePartitions: r.activePartitions }, now)) this.persist();
        this.tick();
        const { settings } = core.map;
        return respond({ ok: true, value: { partitions: settings.partitions, minWriteReplicas: settings.minWriteReplicas, deadAfterMs: this.knobs.deadAfterMs } });
      }
      case 'heartbeat': {
        const h = req as unknown as { nodeId: NodeId; incarnation: string; uptimeMs: number; keys: number; progress: ReplicaProgress[] };
        const reply = core.onHeartbeat({ nodeId: h.nodeId, incarnation: h.incarnation, uptimeMs: h.uptimeMs, keys: h.keys, progress: h.progress }, now);
        return respond({ ok: true, value: reply });
      }
      case 'promote': {
        const r = req as unknown as { p: number; epoch: number; learner: NodeId; learnerIncarnation: string };
        const before = core.map;
        const { config, changed } = core.onPromote(partitionId(r.p), r.epoch, r.learner, r.learnerIncarnation);
        if (changed) {
          this.persist();
          this.traceChanges(before);
        }
        if (!config) return respond({ ok: false, error: { code: 'INVALID_ARGUMENT', message: `partition ${r.p} does not exist` } });
        return respond({ ok: true, value: { config } });
      }
      case 'removeSecondary': {
        const r = req as unknown as { p: number; epoch: number; secondary: NodeId };
        const before = core.map;
        const { config, changed } = core.onRemoveSecondary(partitionId(r.p), r.epoch, r.secondary);
        if (changed) {
          this.persist();
          this.traceChanges(before);
        }
        if (!config) return respond({ ok: false, error: { code: 'INVALID_ARGUMENT', message: `partition ${r.p} does not exist` } });
        return respond({ ok: true, value: { config } });
      }
      case 'confirmEpoch': {
        const r = req as unknown as { p: number; epoch: number };
        return respond({ ok: true, value: { current: core.isCurrent(partitionId(r.p), r.epoch) } });
      }
      case 'map': {
        const { map } = core;
        return respond({ ok: true, value: { formed: core.formed, partitions: map.settings.partitions, configs: map.configs } });
      }
      default:
        throw new SimulationFailure(`nameserver: unknown call ${req.t}`);
    }
  }

  /** The current configurations (for the convergence check). */
  configs(): readonly Config[] {
    return this.core?.map.configs ?? [];
  }
}

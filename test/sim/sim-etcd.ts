/**
 * The simulated election service (issue 12): what src/control/etcd.ts asks of etcd, as one
 * endpoint (`etcd`) reached over the simulated network, on the simulated clock.
 *
 * - A key-value store with one revision counter; each key keeps its create revision.
 * - Leases with a TTL that expire on the simulated clock unless kept alive; an expired or
 *   revoked lease deletes the keys attached to it.
 * - `campaign`: the leader key is put with a fresh lease if absent (etcd.ts's `tryOnce`:
 *   get, grant, `if create_revision(leader) == 0 then put`, here one step); the winner's
 *   create revision is the fence's token.
 * - `save` / `check`: a transaction `if create_revision(leader) == <token>` that puts the map
 *   or writes nothing; refused with NOT_LEADER naming the leader otherwise.
 * - Reads of the map and of who leads.
 * - A fault: `available = false` answers nothing (an etcd without quorum: calls time out);
 *   when it heals, every lease is granted its TTL again, as an etcd member that becomes
 *   leader does (its lessor "promotes" the leases).
 * The observer hears of every stored map and every fenced write (the election checks).
 * Mutation `unfenced-save`: a save is accepted whatever the fence says (the bug the
 * election checks must catch).
 */
import { NotLeaderError } from '../../src/core/errors.js';
import type { PersistedMap } from '../../src/core/nameserver/nameserver.js';
import { assertNever } from '../../src/core/types.js';
import type { CallResult, Endpoint, SimEvent, World } from './world.js';

export interface SimLeaderInfo {
  readonly nodeId: string;
  readonly address: string;
  readonly sinceMs: number;
}

export type EtcdRequest =
  | { readonly t: 'campaign'; readonly info: SimLeaderInfo; readonly ttlMs: number }
  | { readonly t: 'keepalive'; readonly lease: number }
  | { readonly t: 'revoke'; readonly lease: number }
  | { readonly t: 'leader' }
  | { readonly t: 'loadMap' }
  | { readonly t: 'save'; readonly rev: number; readonly map: PersistedMap; readonly by: string }
  | { readonly t: 'check'; readonly rev: number; readonly by: string };

export type EtcdReply =
  | { readonly t: 'campaign'; readonly won: false }
  | { readonly t: 'campaign'; readonly won: true; readonly rev: number; readonly lease: number }
  | { readonly t: 'keepalive'; readonly alive: boolean }
  | { readonly t: 'ok' }
  | { readonly t: 'leader'; readonly leader: SimLeaderInfo | undefined }
  | { readonly t: 'loadMap'; readonly map: PersistedMap | undefined };

interface Kv {
  readonly value: string;
  readonly createRevision: number;
  readonly lease: number | undefined;
}

export interface EtcdObserver {
  /** A map was written under the leadership `rev` (the caller's token) while `current` led. */
  onMapStored(by: string, rev: number, current: number | undefined, version: number): void;
}

export const LEADER_KEY = 'leader';
export const MAP_KEY = 'map';

export class SimEtcd implements Endpoint {
  readonly id = 'etcd';
  up = true;
  paused = false;
  inc = 1;
  held: SimEvent[] = [];
  /** False: no quorum, no answers. */
  available = true;
  revision = 1;
  private nextLease = 1;
  readonly kv = new Map<string, Kv>();
  readonly leases = new Map<number, { ttlMs: number; expiresAt: number }>();
  readonly stats = { campaignsWon: 0, leasesExpired: 0, fencedRefusals: 0, saves: 0 };
  /** Hears of each leadership granted. */
  onElected: (() => void) | undefined;

  constructor(
    private readonly world: World,
    private readonly observer: EtcdObserver | undefined,
    private readonly unfenced = false,
  ) {}

  setAvailable(available: boolean): void {
    if (available && !this.available) {
      // A new etcd leader refreshes every lease by its TTL (lessor Promote).
      for (const l of this.leases.values()) l.expiresAt = Math.max(l.expiresAt, this.world.now + l.ttlMs);
    }
    this.available = available;
  }

  /** Deletes the leases that expired by now and their keys. */
  expire(): void {
    for (const [id, l] of this.leases) {
      if (l.expiresAt > this.world.now) continue;
      this.stats.leasesExpired++;
      this.world.trace(`etcd lease ${id} EXPIRES`);
      this.dropLease(id);
    }
  }

  private dropLease(id: number): void {
    this.leases.delete(id);
    for (const [k, v] of this.kv) if (v.lease === id) this.kv.delete(k);
  }

  private put(key: string, value: string, lease?: number): number {
    const rev = ++this.revision;
    const old = this.kv.get(key);
    this.kv.set(key, { value, createRevision: old?.createRevision ?? rev, lease });
    return rev;
  }

  /** The leader key's create revision (the current leadership), undefined when nobody leads. */
  get leaderRevision(): number | undefined {
    return this.kv.get(LEADER_KEY)?.createRevision;
  }

  get leader(): SimLeaderInfo | undefined {
    const v = this.kv.get(LEADER_KEY);
    return v ? (JSON.parse(v.value) as SimLeaderInfo) : undefined;
  }

  get storedMap(): PersistedMap | undefined {
    const v = this.kv.get(MAP_KEY);
    return v ? (JSON.parse(v.value) as PersistedMap) : undefined;
  }

  onMessage(): void {
    // Only calls.
  }

  onCall(_from: string, body: unknown, respond: (r: CallResult) => void): void {
    if (!this.available) return;
    this.expire();
    const req = body as EtcdRequest;
    const ok = (value: EtcdReply): void => respond({ ok: true, value });
    switch (req.t) {
      case 'campaign': {
        if (this.kv.has(LEADER_KEY)) return ok({ t: 'campaign', won: false });
        const lease = this.nextLease++;
        this.leases.set(lease, { ttlMs: req.ttlMs, expiresAt: this.world.now + req.ttlMs });
        const rev = this.put(LEADER_KEY, JSON.stringify(req.info), lease);
        this.stats.campaignsWon++;
        this.onElected?.();
        this.world.trace(`etcd: ${req.info.nodeId} LEADS (leader key revision ${rev}, lease ${lease})`);
        return ok({ t: 'campaign', won: true, rev, lease });
      }
      case 'keepalive': {
        const l = this.leases.get(req.lease);
        if (l) l.expiresAt = this.world.now + l.ttlMs;
        return ok({ t: 'keepalive', alive: l !== undefined });
      }
      case 'revoke':
        if (this.leases.has(req.lease)) {
          this.world.trace(`etcd lease ${req.lease} revoked`);
          this.dropLease(req.lease);
        }
        return ok({ t: 'ok' });
      case 'leader':
        return ok({ t: 'leader', leader: this.leader });
      case 'loadMap':
        return ok({ t: 'loadMap', map: this.storedMap });
      case 'save':
      case 'check': {
        const current = this.leaderRevision;
        const fenced = current === req.rev || (req.t === 'save' && this.unfenced);
        if (!fenced) {
          this.stats.fencedRefusals++;
          const now = this.leader;
          this.world.trace(
            `etcd REFUSES ${req.by}'s ${req.t === 'save' ? `map v${req.map.version}` : 'leadership check'}: ` +
              `leader key revision ${current ?? 'none'}, not ${req.rev}`,
          );
          const err = new NotLeaderError(
            `etcd refused the ${req.t === 'save' ? 'map transaction' : 'leadership check'}: the leader key was ` +
              `created at revision ${current ?? 'none'}, not ${req.rev}${now ? `; ${now.nodeId} leads` : ''}`,
            now?.address,
          );
          return respond({ ok: false, error: err.toWire() });
        }
        if (req.t === 'save') {
          this.stats.saves++;
          this.put(MAP_KEY, JSON.stringify(req.map));
          this.observer?.onMapStored(req.by, req.rev, current, req.map.version);
        }
        return ok({ t: 'ok' });
      }
      default:
        return assertNever(req);
    }
  }
}

/**
 * The nameserver as one of several identical candidates elected through etcd (issue 12,
 * `dstore nameserver --etcd URL[,URL…]`). The same pure host (src/nameserver/host.ts) decides;
 * this driver differs from the file-backed one (src/nameserver/server.ts) in three ways:
 *
 * - It starts as a follower and campaigns (src/control/etcd.ts). Once elected it loads the map
 *   from etcd (a new one when there is none, created by the leader only, through the fenced
 *   write) and builds a fresh host, which counts every storage server alive for one dead-after
 *   period, as a restarted nameserver does (S15).
 * - A `persist` effect becomes a fenced `saveMap` on one ordered queue. EVERY reply of the
 *   leader — `map`, `nodes` and heartbeats included, they announce the map — waits until each
 *   save queued before or by its request has resolved (S3: persisted before announced). When a
 *   save fails (etcd refused it: deposed; or an etcd error) the process steps down at once: the
 *   host is dropped, every waiting reply fails with NOT_LEADER, the refusal is logged, and it
 *   campaigns again. Losing the lease steps down the same way.
 * - `confirmEpoch` ("is this epoch still current?", asked by a primary with no secondaries
 *   before it serves a read, §7) is answered only after a fenced etcd check that this node
 *   still leads, so a deposed leader that has not noticed yet never confirms a stale epoch.
 * - A follower answers `map` and `nodes` from the map stored in etcd (a linearizable read per
 *   request, so never a map newer than etcd's) and refuses the calls that would change or
 *   confirm it (register, heartbeat, promote, removeSecondary, confirmEpoch) with NOT_LEADER
 *   carrying the leader's address when known. Everyone answers `leader`.
 */
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import { NotLeaderError } from '../core/errors.js';
import { Nameserver } from '../core/nameserver/nameserver.js';
import { assertNever } from '../core/types.js';
import { type NameserverConfig, decodeNameserverRequest, listenNameserver } from '../nameserver/server.js';
import { type NameserverEffect, NameserverHost, tickPeriodMs } from '../nameserver/host.js';
import { formatHostPort } from '../process/address.js';
import type { Logger } from '../process/log.js';
import type { ClusterInfo, LeaderReply, NameserverRequest } from '../rpc/messages.js';
import type { RpcServer } from '../rpc/transport.js';
import { EtcdControl, type LeaderInfo, type Leadership, leaseTtlSeconds } from './etcd.js';

export interface EtcdSettings {
  /** etcd client URLs. */
  readonly endpoints: readonly string[];
  /** `--etcd-prefix`: every key of this cluster is under it. */
  readonly prefix: string;
  /** `--lease-ttl-ms`: rounded up to whole seconds (etcd's unit). */
  readonly leaseTtlMs: number;
  /** `--node-id`: this candidate's name (default: `<hostname>:<port>`). */
  readonly nodeId?: string;
}

/** After a map that could not be loaded, the pause before campaigning again. */
const LOAD_RETRY_MS = 1000;
/**
 * Bound on a follower's etcd read made to answer a call (who leads, the map): a candidate cut
 * off from etcd answers NOT_LEADER within it, rather than after the etcd client's own deadline
 * and retries (seconds), so callers move on to another seed.
 */
const FOLLOWER_READ_MS = 1000;

/** `p`, or a rejection once `ms` passed. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer from etcd within ${ms} ms`)), ms);
  });
  p.catch(() => undefined); // settled late: nobody waits any more
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** What this process holds while it leads. */
interface Lead {
  readonly leadership: Leadership;
  readonly host: NameserverHost;
  readonly timer: NodeJS.Timeout;
  /** The ordered queue of fenced saves; rejected once one failed (then the lead is over). */
  saves: Promise<void>;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class ElectedNameserverProcess {
  private server: RpcServer | undefined;
  private address = '';
  private nodeId = '';
  private control: EtcdControl | undefined;
  private lead: Lead | undefined;
  private readonly stop = new AbortController();
  private closed = false;
  /** Campaigning again after the map could not be loaded. */
  private retry: NodeJS.Timeout | undefined;

  constructor(
    private readonly cfg: NameserverConfig,
    private readonly etcd: EtcdSettings,
    private readonly log: Logger,
  ) {}

  async start(): Promise<number> {
    const { server, port, address } = await listenNameserver(this.cfg, this.log, (body) => this.onCall(body));
    this.server = server;
    this.address = address;
    this.nodeId = this.etcd.nodeId ?? `${hostname()}:${port}`;
    const control = new EtcdControl({
      endpoints: this.etcd.endpoints,
      prefix: this.etcd.prefix,
      leaseTtlMs: this.etcd.leaseTtlMs,
      nodeId: this.nodeId,
    });
    this.control = control;
    control.on('lost', (reason) => {
      if (this.lead) this.stepDown(this.lead, reason);
    });
    const token = this.cfg.clusterToken ? 'required' : 'none';
    const listen = formatHostPort(this.cfg.host, port);
    this.log.info(
      {
        listen,
        advertise: this.address,
        token,
        nodeId: this.nodeId,
        etcd: this.etcd.endpoints,
        prefix: control.leaderKey.slice(0, -'leader'.length),
        leaseTtlSeconds: leaseTtlSeconds(this.etcd.leaseTtlMs),
      },
      'nameserver listening as a follower; campaigning through etcd',
    );
    if (this.etcd.leaseTtlMs % 1000 !== 0)
      this.log.info(
        { leaseTtlMs: this.etcd.leaseTtlMs, leaseTtlSeconds: control.ttlSeconds },
        'etcd leases are in whole seconds: the lease TTL is rounded up',
      );
    this.campaign();
    return port;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.stop.abort();
    clearTimeout(this.retry);
    if (this.lead) clearInterval(this.lead.timer);
    this.lead = undefined;
    await this.server?.close();
    await this.control?.close();
  }

  private campaign(): void {
    const control = this.control;
    if (this.closed || !control) return;
    let errors = 0;
    control
      .campaign(this.address, this.stop.signal, (err) => {
        // etcd unreachable: said once per outage start, then every 20th attempt.
        if (errors++ % 20 === 0) this.log.warn({ err: message(err) }, 'campaign: etcd call failed; retrying');
      })
      .then(
        (won) => this.onElected(won),
        () => undefined, // stopped by close()
      );
  }

  private async onElected(won: Leadership): Promise<void> {
    const control = this.control;
    if (!control) return;
    this.log.info({ nodeId: this.nodeId, leaderKeyRevision: won.createRevision }, 'elected leader of the nameservers');
    let stored: Awaited<ReturnType<EtcdControl['loadMap']>>;
    try {
      stored = await control.loadMap();
    } catch (err) {
      // S15: an unreadable map is never replaced; another candidate may read it, or an operator fixes it.
      this.log.error(
        { err: message(err), retryInMs: LOAD_RETRY_MS },
        'could not load the cluster map from etcd; stepping down',
      );
      await control.resign();
      this.retry = setTimeout(() => this.campaign(), LOAD_RETRY_MS);
      return;
    }
    if (this.closed) return;
    if (control.leadership !== won) {
      this.log.warn({}, 'lost the leadership while loading the map; following again');
      this.campaign();
      return;
    }
    const { settings, deadAfterMs, rereplicateAfterMs } = this.cfg;
    const fresh = stored === undefined;
    const map = stored ?? Nameserver.newMap(randomUUID(), settings);
    const host = new NameserverHost(map, fresh, { settings, deadAfterMs, rereplicateAfterMs }, Date.now());
    host.address = this.address;
    const lead: Lead = {
      leadership: won,
      host,
      saves: Promise.resolve(),
      timer: setInterval(() => {
        if (this.lead === lead) this.execute(lead, lead.host.onTick(Date.now()));
      }, tickPeriodMs(this.cfg.heartbeatMs)),
    };
    this.lead = lead;
    // The constructor's persist: a new map is created by the leader only, through the fence.
    this.execute(lead, host.takeEffects());
  }

  /** Steps down at once (idempotent per lead): drops the host, resigns, campaigns again. */
  private stepDown(lead: Lead, reason: string): void {
    if (this.lead !== lead) return;
    this.lead = undefined;
    clearInterval(lead.timer);
    this.log.warn(
      { nodeId: this.nodeId, reason, mapVersion: lead.host.core.map.version },
      'stepping down: no longer the leader of the nameservers; following',
    );
    const control = this.control;
    if (!control) return;
    void control.resign().finally(() => this.campaign());
  }

  /** The host's effects, in order: each map goes into the queue of fenced saves (S3). */
  private execute(lead: Lead, effects: readonly NameserverEffect[]): void {
    for (const e of effects) {
      switch (e.kind) {
        case 'persist': {
          const map = e.map;
          lead.saves = lead.saves.then(() => this.save(lead, map));
          lead.saves.catch(() => undefined); // failures are handled in save(); replies see them too
          break;
        }
        case 'log':
          this.log[e.level](e.fields, e.msg);
          break;
        default:
          assertNever(e);
      }
    }
  }

  private async save(lead: Lead, map: NameserverHost['core']['map']): Promise<void> {
    const control = this.control;
    if (this.lead !== lead || !control) throw new NotLeaderError('this nameserver stepped down before saving the map');
    try {
      await control.saveMap(map);
    } catch (err) {
      if (err instanceof NotLeaderError)
        this.log.error(
          { mapVersion: map.version, err: err.message, leader: err.leader },
          'etcd refused the map transaction (fenced: this nameserver no longer leads); nothing was written',
        );
      else
        this.log.error(
          { mapVersion: map.version, err: message(err) },
          'the map transaction to etcd failed; stepping down (a new leader reloads the map from etcd)',
        );
      this.stepDown(lead, `map transaction failed: ${message(err)}`);
      throw err;
    }
  }

  private async onCall(body: unknown): Promise<unknown> {
    const req = decodeNameserverRequest(body, this.cfg.clusterToken);
    if (req.t === 'leader') return this.leaderReply();
    const lead = this.lead;
    if (!lead) return this.asFollower(req);
    const { effects, reply } = lead.host.onRequest(req, Date.now());
    this.execute(lead, effects);
    try {
      await lead.saves; // every save queued before or by this request (S3)
    } catch {
      throw await this.notLeader('it stepped down: its map transaction was refused or failed');
    }
    if (this.lead !== lead) throw await this.notLeader('it stepped down');
    // §7: a primary without secondaries serves a read once the nameserver says its epoch is
    // current. A deposed leader that does not know it yet (paused, cut off from etcd) must not
    // say so from its old map: the answer is given only after etcd confirmed the leadership.
    if (req.t === 'confirmEpoch' && reply.ok) await this.confirmLeadership(lead);
    if (!reply.ok) throw reply.error;
    if (req.t === 'nodes') return this.withLeader(reply.value as ClusterInfo, lead.leadership.info);
    return reply.value;
  }

  /** Resolves while `lead` still leads (a fenced etcd check); steps down and throws NOT_LEADER otherwise. */
  private async confirmLeadership(lead: Lead): Promise<void> {
    try {
      await this.control?.confirmLeadership();
    } catch (err) {
      this.log.warn({ err: message(err) }, 'the leadership check before a confirmEpoch answer failed; stepping down');
      this.stepDown(lead, `leadership check failed: ${message(err)}`);
      throw await this.notLeader('its leadership could not be confirmed');
    }
    if (this.lead !== lead) throw await this.notLeader('it stepped down');
  }

  private withLeader(info: ClusterInfo, leader: LeaderInfo | undefined): ClusterInfo {
    return { ...info, nameserverId: this.nodeId, ...(leader ? { leader } : {}) };
  }

  private async leaderReply(): Promise<LeaderReply> {
    const lead = this.lead;
    const leader = lead ? lead.leadership.info : await this.knownLeader();
    return { self: this.nodeId, ...(leader ? { leader } : {}) };
  }

  /** The leader etcd names, or undefined when none or etcd does not answer. */
  private async knownLeader(): Promise<LeaderInfo | undefined> {
    try {
      return this.control ? await within(this.control.leader(), FOLLOWER_READ_MS, 'who leads') : undefined;
    } catch {
      return undefined;
    }
  }

  private async notLeader(why: string): Promise<NotLeaderError> {
    const leader = await this.knownLeader();
    const who = leader && leader.nodeId !== this.nodeId ? `; ${leader.nodeId} at ${leader.address} leads` : '';
    return new NotLeaderError(
      `nameserver ${this.nodeId} does not lead (${why})${who}`,
      leader && leader.nodeId !== this.nodeId ? leader.address : undefined,
    );
  }

  private async asFollower(req: NameserverRequest): Promise<unknown> {
    switch (req.t) {
      case 'map':
      case 'nodes': {
        let map: Awaited<ReturnType<EtcdControl['loadMap']>>;
        try {
          map = this.control ? await within(this.control.loadMap(), FOLLOWER_READ_MS, 'the map') : undefined;
        } catch (err) {
          throw await this.notLeader(`it follows, and cannot read the map from etcd: ${message(err)}`);
        }
        if (!map) throw await this.notLeader('it follows, and no leader stored a cluster map in etcd yet');
        // A read-only view of etcd's map: a host built for this request, its effects dropped.
        const { settings, deadAfterMs, rereplicateAfterMs } = this.cfg;
        const now = Date.now();
        const view = new NameserverHost(map, false, { settings, deadAfterMs, rereplicateAfterMs }, now);
        view.address = this.address;
        const { reply } = view.onRequest(req, now);
        if (!reply.ok) throw reply.error;
        if (req.t === 'map') return reply.value;
        return this.withLeader(reply.value as ClusterInfo, await this.knownLeader());
      }
      case 'register':
      case 'heartbeat':
      case 'promote':
      case 'removeSecondary':
      case 'confirmEpoch':
        throw await this.notLeader('it follows');
      case 'leader':
        return this.leaderReply();
      default:
        return assertNever(req);
    }
  }
}

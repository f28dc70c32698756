/**
 * The nameserver as one of several identical candidates elected through etcd (issue 12,
 * `dstore nameserver --etcd URL[,URL…]`). The same pure host (src/nameserver/host.ts) decides;
 * this driver differs from the file-backed one (src/nameserver/server.ts) in three ways:
 *
 * - It starts as a follower and campaigns (src/control/etcd.ts). Once elected it loads the map
 *   from etcd (a new one when there is none, created by the leader only, through the fenced
 *   write) and builds a fresh host, which counts every storage server alive for one dead-after
 *   period, as a restarted nameserver does (S15).
 * - While it leads, a pure LeaderTerm (src/nameserver/term.ts) decides around the host: its
 *   `persist` effects become fenced `saveMap`s, one at a time in order; EVERY reply — `map`,
 *   `nodes` and heartbeats included, they announce the map — waits until each save issued
 *   before or by its request succeeded (S3: persisted before announced); `confirmEpoch`'s
 *   "yes" (a primary with no secondaries serves a read on it, §7) also waits for a fenced
 *   leadership check, so a deposed leader that has not noticed never confirms a stale epoch.
 *   A failed save or check, or a lost lease, ends the term: waiting replies fail with
 *   NOT_LEADER, the refusal is logged, and it resigns and campaigns again. This driver runs
 *   the term's effects against etcd.
 * - A follower answers `map` and `nodes` from the map stored in etcd (a linearizable read per
 *   request, so never a map newer than etcd's) and refuses the calls that would change or
 *   confirm it (register, heartbeat, promote, removeSecondary, confirmEpoch) with NOT_LEADER
 *   carrying the leader's address when known. Everyone answers `leader`. Those decisions are
 *   pure (src/nameserver/follower.ts), shared with the simulator's candidates.
 */
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import { NotLeaderError } from '../core/errors.js';
import { Nameserver } from '../core/nameserver/nameserver.js';
import { assertNever } from '../core/types.js';
import { type NameserverConfig, decodeNameserverRequest, listenNameserver } from '../nameserver/server.js';
import { answerFromStoredMap, followerPlan, notLeaderError } from '../nameserver/follower.js';
import { tickPeriodMs } from '../nameserver/host.js';
import { LeaderTerm } from '../nameserver/term.js';
import { formatHostPort } from '../process/address.js';
import type { Logger } from '../process/log.js';
import type { ClusterInfo, LeaderReply, NameserverRequest } from '../rpc/messages.js';
import type { RpcServer } from '../rpc/transport.js';
import type { NameserverView } from '../nameserver/http.js';
import { NameserverMetrics } from '../nameserver/metrics.js';
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

/** What this process holds while it leads: the pure term (src/nameserver/term.ts) and its calls. */
interface Lead {
  readonly leadership: Leadership;
  readonly term: LeaderTerm;
  readonly timer: NodeJS.Timeout;
  /** Calls waiting for the term's reply, by number. */
  readonly calls: Map<number, { resolve(value: unknown): void; reject(err: unknown): void }>;
  nextCall: number;
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
  /**
   * Set from winning the election until the term is installed (the map loaded): etcd already
   * names this node, so calls wait for it rather than be refused as by a follower.
   */
  private electing: Promise<void> | undefined;
  readonly metrics = new NameserverMetrics();
  /** What the HTTP port sees of this candidate (src/nameserver/http.ts). */
  readonly view: NameserverView;

  constructor(
    private readonly cfg: NameserverConfig,
    private readonly etcd: EtcdSettings,
    private readonly log: Logger,
  ) {
    this.view = {
      request: (req) => this.onCall({ ...req, token: this.cfg.clusterToken }),
      leading: () => this.lead !== undefined,
      elected: true,
      leader: async () => (this.lead ? this.address : (await this.knownLeader())?.address),
      metrics: this.metrics,
    };
    this.metrics.source = async () =>
      this.lead ? ((await this.view.request({ t: 'nodes' })) as ClusterInfo) : undefined;
  }

  async start(): Promise<number> {
    const { server, port, address } = await listenNameserver(this.cfg, this.log, (body) =>
      this.metrics.counted(body, (b) => this.onCall(b)),
    );
    this.server = server;
    this.metrics.connections = () => server.connectionCount;
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
      const lead = this.lead;
      if (!lead) return;
      lead.term.lose(reason);
      this.drive(lead);
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
        (won) => {
          const electing = this.onElected(won)
            .catch((err: unknown) => this.log.error({ err: message(err) }, 'taking up the leadership failed'))
            .finally(() => {
              if (this.electing === electing) this.electing = undefined;
            });
          this.electing = electing;
        },
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
    const { settings, deadAfterMs, rereplicateAfterMs, heartbeatMs } = this.cfg;
    const liveFlags = { heartbeatMs, ...(this.cfg.logLevel === undefined ? {} : { logLevel: this.cfg.logLevel }) };
    const fresh = stored === undefined;
    const map = stored ?? Nameserver.newMap(randomUUID(), settings);
    if (stored) this.metrics.baseline(stored);
    // The term's first save is the map a new cluster starts with: created by the leader only, through the fence.
    const term = new LeaderTerm(
      map,
      fresh,
      { settings, deadAfterMs, rereplicateAfterMs, ...liveFlags },
      Date.now(),
      this.address,
    );
    const lead: Lead = {
      leadership: won,
      term,
      calls: new Map(),
      nextCall: 0,
      timer: setInterval(() => {
        if (this.lead !== lead) return;
        lead.term.tick(Date.now());
        this.drive(lead);
      }, tickPeriodMs(this.cfg.heartbeatMs)),
    };
    this.lead = lead;
    this.drive(lead);
  }

  /** Executes the term's effects: fenced saves and checks at etcd, replies, the end of the term. */
  private drive(lead: Lead): void {
    const control = this.control;
    // Issue 15: the live log level (the tick keeps the --heartbeat-ms period it started with).
    const live = lead.term.host.live;
    if (live.epoch > 0 && this.log.level !== live.logLevel) this.log.level = live.logLevel;
    for (const e of lead.term.takeEffects()) {
      switch (e.kind) {
        case 'log':
          this.log[e.level](e.fields, e.msg);
          break;
        case 'save':
          if (!control) break;
          control
            .saveMap(e.map)
            .then(
              () => {
                this.metrics.onMapPersisted(e.map);
                lead.term.saved(e.id);
              },
              (err: unknown) => lead.term.saved(e.id, err),
            )
            .finally(() => this.drive(lead));
          break;
        case 'check':
          if (!control) break;
          control
            .confirmLeadership()
            .then(
              () => lead.term.checked(e.call),
              (err: unknown) => lead.term.checked(e.call, err),
            )
            .finally(() => this.drive(lead));
          break;
        case 'reply': {
          const waiting = lead.calls.get(e.call);
          lead.calls.delete(e.call);
          if (!waiting) break;
          if (e.reply.ok) waiting.resolve(e.reply.value);
          else waiting.reject(e.reply.error);
          break;
        }
        case 'over':
          this.stepDown(lead);
          break;
        default:
          assertNever(e);
      }
    }
  }

  /** The term is over: stop its tick, resign, campaign again (idempotent per lead). */
  private stepDown(lead: Lead): void {
    if (this.lead !== lead) return;
    this.lead = undefined;
    clearInterval(lead.timer);
    const control = this.control;
    if (!control) return;
    void control.resign().finally(() => this.campaign());
  }

  private async onCall(body: unknown): Promise<unknown> {
    const req = decodeNameserverRequest(body, this.cfg.clusterToken);
    if (this.electing) await this.electing;
    if (req.t === 'leader') return this.leaderReply();
    const lead = this.lead;
    if (!lead) return this.asFollower(req);
    let value: unknown;
    try {
      value = await new Promise<unknown>((resolve, reject) => {
        const call = ++lead.nextCall;
        lead.calls.set(call, { resolve, reject });
        lead.term.request(call, req, Date.now());
        this.drive(lead);
      });
    } catch (err) {
      // A term that ended knows no leader: name the one etcd knows, so the caller moves there.
      if (err instanceof NotLeaderError && err.leader === undefined)
        throw await this.notLeader(lead.term.over ?? 'it stepped down');
      throw err;
    }
    if (req.t === 'nodes') return this.withLeader(value as ClusterInfo, lead.leadership.info);
    return value;
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
    return notLeaderError(this.nodeId, why, await this.knownLeader());
  }

  private async asFollower(req: NameserverRequest): Promise<unknown> {
    const plan = followerPlan(req);
    switch (plan) {
      case 'fromStoredMap': {
        let map: Awaited<ReturnType<EtcdControl['loadMap']>>;
        try {
          map = this.control ? await within(this.control.loadMap(), FOLLOWER_READ_MS, 'the map') : undefined;
        } catch (err) {
          throw await this.notLeader(`it follows, and cannot read the map from etcd: ${message(err)}`);
        }
        if (!map) throw await this.notLeader('it follows, and no leader stored a cluster map in etcd yet');
        const { settings, deadAfterMs, rereplicateAfterMs, heartbeatMs } = this.cfg;
        const opts = { settings, deadAfterMs, rereplicateAfterMs, heartbeatMs };
        const reply = answerFromStoredMap(map, req, opts, Date.now(), this.address);
        if (!reply.ok) throw reply.error;
        if (req.t === 'map') return reply.value;
        return this.withLeader(reply.value as ClusterInfo, await this.knownLeader());
      }
      case 'refuse':
        throw await this.notLeader('it follows');
      case 'leader':
        return this.leaderReply();
      default:
        return assertNever(plan);
    }
  }
}

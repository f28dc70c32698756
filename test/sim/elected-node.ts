/**
 * Election mode (issue 12): one nameserver candidate, doing what src/control/elected-nameserver.ts
 * and src/control/etcd.ts do, over the simulated election service (sim-etcd.ts), network and
 * clock. The pure parts run unchanged: the host (src/nameserver/host.ts) and the leadership term
 * (src/nameserver/term.ts).
 *
 * - It starts as a follower and campaigns every `pollMs` (a quarter of the TTL, 50..100 ms)
 *   until it wins; then it keeps its lease alive (a keepalive every TTL/3) and a watchdog
 *   (every `pollMs`) loses the leadership when no keepalive sent in the last TTL was answered,
 *   or etcd says the lease is gone.
 * - Once elected it loads the map from etcd (a new one when there is none), builds a fresh
 *   LeaderTerm (a fresh host: every storage server alive for one dead-after period) and runs
 *   its effects against etcd: fenced saves one at a time, fenced checks, replies; a failed save
 *   or check or a lost lease ends the term: it resigns (revokes its lease) and campaigns again.
 *   Calls that arrive while it loads the map wait for it.
 * - A follower answers `map` and `nodes` from the map in etcd (a read per call) and refuses
 *   the rest with NOT_LEADER, naming the leader etcd knows.
 */
import { DstoreError, NotLeaderError, errorFromWire } from '../../src/core/errors.js';
import { Nameserver, type PersistedMap } from '../../src/core/nameserver/nameserver.js';
import { assertNever, type Config } from '../../src/core/types.js';
import { answerFromStoredMap, followerPlan, notLeaderError } from '../../src/nameserver/follower.js';
import { tickPeriodMs } from '../../src/nameserver/host.js';
import { LeaderTerm } from '../../src/nameserver/term.js';
import type { NameserverRequest } from '../../src/rpc/messages.js';
import type { NameserverKnobs } from './nameserver-node.js';
import type { EtcdReply, EtcdRequest, SimLeaderInfo } from './sim-etcd.js';
import { type CallResult, type Endpoint, type SimEvent, SimulationFailure, type World } from './world.js';

export interface ElectionKnobs {
  /** Nameserver candidates (ns1..nsN). */
  readonly candidates: number;
  readonly leaseTtlMs: number;
  /** Bound on a leader's etcd call (the etcd client's deadline). */
  readonly etcdTimeoutMs: number;
}

/** As in elected-nameserver.ts. */
const LOAD_RETRY_MS = 1000;
const FOLLOWER_READ_MS = 1000;

type Respond = (r: CallResult) => void;

interface Held {
  readonly rev: number;
  readonly lease: number;
  readonly info: SimLeaderInfo;
}

interface Lead {
  readonly held: Held;
  readonly term: LeaderTerm;
  readonly calls: Map<number, { req: NameserverRequest; respond: Respond }>;
  nextCall: number;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class SimCandidate implements Endpoint {
  up = false;
  paused = false;
  inc = 0;
  held: SimEvent[] = [];
  /** The leadership etcd granted (the control's `held`), from the win until it is lost or resigned. */
  private leadership: Held | undefined;
  lead: Lead | undefined;
  /** From the win until the term is installed: calls wait here. */
  private electing: Array<() => void> | undefined;
  readonly stats = { elected: 0, termsEnded: 0 };
  private readonly pollMs: number;

  constructor(
    readonly id: string,
    private readonly world: World,
    private readonly knobs: NameserverKnobs,
    private readonly election: ElectionKnobs,
    private readonly onReconfigured: (before: PersistedMap | undefined, after: PersistedMap) => void,
  ) {
    this.pollMs = Math.min(100, Math.max(50, Math.floor(election.leaseTtlMs / 4)));
  }

  /** The term installed and not over: this candidate acts as the leader. */
  get leading(): boolean {
    return this.up && this.lead !== undefined && this.lead.term.over === undefined;
  }

  get core(): Nameserver | undefined {
    return this.lead?.term.host.core;
  }

  configs(): readonly Config[] {
    return this.core?.map.configs ?? [];
  }

  start(): void {
    this.world.started(this.id);
    this.leadership = undefined;
    this.lead = undefined;
    this.electing = undefined;
    this.world.trace(`${this.id} starts as a follower; campaigning`);
    this.campaign();
  }

  crash(): void {
    if (!this.up) return;
    this.leadership = undefined;
    this.lead = undefined;
    this.electing = undefined;
    this.world.crashed(this.id);
    this.world.trace(`${this.id} CRASHES`);
  }

  private etcd(req: EtcdRequest, timeoutMs: number, cb: (r: CallResult) => void): void {
    this.world.call(this.id, 'etcd', req, timeoutMs, () => `etcd ${req.t}`, cb);
  }

  // ---- the election (src/control/etcd.ts) ----

  private campaign(): void {
    const attempt = (): void => {
      const info: SimLeaderInfo = { nodeId: this.id, address: this.id, sinceMs: this.world.now };
      const sentAt = this.world.now;
      this.etcd({ t: 'campaign', info, ttlMs: this.election.leaseTtlMs }, FOLLOWER_READ_MS, (r) => {
        const v = r.ok ? (r.value as EtcdReply) : undefined;
        if (v?.t === 'campaign' && v.won) return this.onElected({ rev: v.rev, lease: v.lease, info }, sentAt);
        this.world.schedule(this.pollMs, this.id, attempt);
      });
    };
    attempt();
  }

  private onElected(won: Held, grantSentMs: number): void {
    this.leadership = won;
    this.stats.elected++;
    this.watchLease(won, grantSentMs);
    this.world.trace(`${this.id} elected leader of the nameservers (leader key revision ${won.rev})`);
    const waiting: Array<() => void> = [];
    this.electing = waiting;
    const done = (): void => {
      if (this.electing !== waiting) return;
      this.electing = undefined;
      for (const w of waiting) w();
    };
    this.etcd({ t: 'loadMap' }, this.election.etcdTimeoutMs, (r) => {
      if (!r.ok) {
        this.world.trace(`${this.id}: could not load the map from etcd (${r.error.message}); stepping down`);
        this.resign(() => this.world.schedule(LOAD_RETRY_MS, this.id, () => this.campaign()));
        return done();
      }
      if (this.leadership !== won) {
        this.world.trace(`${this.id} lost the leadership while loading the map; following again`);
        this.campaign();
        return done();
      }
      const stored = (r.value as EtcdReply & { t: 'loadMap' }).map;
      const { settings, deadAfterMs, rereplicateAfterMs } = this.knobs;
      const map = stored ?? Nameserver.newMap('sim', settings);
      const term = new LeaderTerm(
        map,
        stored === undefined,
        { settings, deadAfterMs, rereplicateAfterMs },
        this.world.now,
        this.id,
      );
      const lead: Lead = { held: won, term, calls: new Map(), nextCall: 0 };
      this.lead = lead;
      this.lastMap = map;
      this.world.trace(`${this.id} leads with map v${map.version}${stored ? '' : ' (new)'}`);
      const period = tickPeriodMs(this.knobs.heartbeatMs);
      const tick = (): void => {
        if (this.lead !== lead) return;
        lead.term.tick(this.world.now);
        this.drive(lead);
        this.world.schedule(period, this.id, tick);
      };
      this.world.schedule(period, this.id, tick);
      this.drive(lead);
      done();
    });
  }

  private lastMap: PersistedMap | undefined;

  /** Keepalives every TTL/3; the watchdog loses the leadership a TTL after the last answered one was sent. */
  private watchLease(held: Held, grantSentMs: number): void {
    const ttl = this.election.leaseTtlMs;
    let renewedMs = grantSentMs;
    const expired = (): boolean => this.world.now - renewedMs >= ttl;
    const keepalive = (): void => {
      if (this.leadership !== held) return;
      const firedMs = this.world.now;
      this.etcd({ t: 'keepalive', lease: held.lease }, ttl, (r) => {
        if (this.leadership !== held) return;
        const v = r.ok ? (r.value as EtcdReply) : undefined;
        if (v?.t === 'keepalive' && v.alive) renewedMs = Math.max(renewedMs, firedMs);
        else if (v?.t === 'keepalive') this.lose(held, 'lease lost: etcd says it expired');
        else if (expired()) this.lose(held, `lease keepalive failed for a TTL: ${r.ok ? '' : r.error.message}`);
      });
      this.world.schedule(Math.max(1, Math.floor(ttl / 3)), this.id, keepalive);
    };
    this.world.schedule(Math.max(1, Math.floor(ttl / 3)), this.id, keepalive);
    const watchdog = (): void => {
      if (this.leadership !== held) return;
      if (expired()) return this.lose(held, `no keepalive answered for a TTL (${ttl} ms)`);
      this.world.schedule(this.pollMs, this.id, watchdog);
    };
    this.world.schedule(this.pollMs, this.id, watchdog);
  }

  /** As etcd.ts's loseLeadership: reported after the events of this instant (setImmediate). */
  private lose(held: Held, reason: string): void {
    this.world.schedule(0, this.id, () => {
      if (this.leadership !== held) return;
      this.leadership = undefined;
      this.world.trace(`${this.id} LOSES the leadership: ${reason}`);
      const lead = this.lead;
      if (!lead || lead.held !== held) return;
      lead.term.lose(reason);
      this.drive(lead);
    });
  }

  /** Revokes the lease held, if any (the leader key goes at once), then `then`. */
  private resign(then: () => void): void {
    const held = this.leadership;
    this.leadership = undefined;
    if (!held) return then();
    this.etcd({ t: 'revoke', lease: held.lease }, this.election.etcdTimeoutMs, () => then());
  }

  // ---- the term (elected-nameserver.ts's drive) ----

  private drive(lead: Lead): void {
    for (const e of lead.term.takeEffects()) {
      switch (e.kind) {
        case 'log':
          if (e.level !== 'info' && this.world.tracing) this.world.trace(`${this.id} ${e.level}: ${e.msg}`);
          break;
        case 'save': {
          const map = e.map;
          this.etcd({ t: 'save', rev: lead.held.rev, map, by: this.id }, this.election.etcdTimeoutMs, (r) => {
            if (r.ok) {
              if (this.lead === lead) {
                this.onReconfigured(this.lastMap, map);
                this.lastMap = map;
              }
              lead.term.saved(e.id);
            } else lead.term.saved(e.id, errorFromWire(r.error));
            this.drive(lead);
          });
          break;
        }
        case 'check':
          this.etcd({ t: 'check', rev: lead.held.rev, by: this.id }, this.election.etcdTimeoutMs, (r) => {
            if (r.ok) lead.term.checked(e.call);
            else lead.term.checked(e.call, errorFromWire(r.error));
            this.drive(lead);
          });
          break;
        case 'reply': {
          const waiting = lead.calls.get(e.call);
          lead.calls.delete(e.call);
          if (!waiting) break;
          if (e.reply.ok) {
            waiting.respond({ ok: true, value: e.reply.value });
            break;
          }
          const err = e.reply.error;
          if (err instanceof NotLeaderError && err.leader === undefined) {
            this.notLeader(lead.term.over ?? 'it stepped down', waiting.respond);
            break;
          }
          if (err instanceof DstoreError) waiting.respond({ ok: false, error: err.toWire() });
          else throw new SimulationFailure(`${this.id}: ${message(err)}`);
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

  private stepDown(lead: Lead): void {
    if (this.lead !== lead) return;
    this.lead = undefined;
    this.stats.termsEnded++;
    this.resign(() => this.campaign());
  }

  // ---- calls ----

  onMessage(): void {
    // The nameserver only answers calls.
  }

  onCall(_from: string, body: unknown, respond: Respond): void {
    if (this.electing) {
      this.electing.push(() => this.onCall(_from, body, respond));
      return;
    }
    // The simulated storage servers are reached by id, with no backend of their own.
    const call = body as { t: string; nodeId?: string };
    const req = (call.t === 'register' ? { backend: 'sim', address: call.nodeId, ...call } : call) as NameserverRequest;
    if (req.t === 'leader') {
      const leader = this.leading ? this.lead?.held.info : undefined;
      return respond({ ok: true, value: { self: this.id, ...(leader ? { leader } : {}) } });
    }
    const lead = this.lead;
    if (!lead) return this.asFollower(req, respond);
    const n = ++lead.nextCall;
    lead.calls.set(n, { req, respond });
    lead.term.request(n, req, this.world.now);
    this.drive(lead);
  }

  /** NOT_LEADER naming the leader etcd knows (a read bounded like the real follower's). */
  private notLeader(why: string, respond: Respond): void {
    this.etcd({ t: 'leader' }, FOLLOWER_READ_MS, (r) => {
      const v = r.ok ? (r.value as EtcdReply) : undefined;
      respond({ ok: false, error: notLeaderError(this.id, why, v?.t === 'leader' ? v.leader : undefined).toWire() });
    });
  }

  /** elected-nameserver.ts's asFollower, on the same pure decisions (src/nameserver/follower.ts). */
  private asFollower(req: NameserverRequest, respond: Respond): void {
    const plan = followerPlan(req);
    switch (plan) {
      case 'fromStoredMap':
        this.etcd({ t: 'loadMap' }, FOLLOWER_READ_MS, (r) => {
          if (!r.ok)
            return this.notLeader(`it follows, and cannot read the map from etcd: ${r.error.message}`, respond);
          const map = (r.value as EtcdReply & { t: 'loadMap' }).map;
          if (!map) return this.notLeader('it follows, and no leader stored a cluster map in etcd yet', respond);
          const { settings, deadAfterMs, rereplicateAfterMs } = this.knobs;
          const opts = { settings, deadAfterMs, rereplicateAfterMs };
          const reply = answerFromStoredMap(map, req, opts, this.world.now, this.id);
          if (reply.ok) return respond({ ok: true, value: reply.value });
          if (reply.error instanceof DstoreError) return respond({ ok: false, error: reply.error.toWire() });
          throw new SimulationFailure(`${this.id}: ${message(reply.error)}`);
        });
        return;
      case 'refuse':
        return this.notLeader('it follows', respond);
      case 'leader':
        return respond({ ok: true, value: { self: this.id } });
      default:
        return assertNever(plan);
    }
  }
}

/**
 * The nameserver's control plane in etcd (issue 12): one leader among identical nameserver
 * candidates, and the cluster map stored in etcd instead of `<dataDir>/cluster-map.json`.
 * Edge code (network I/O through the `etcd3` client); the decisions stay in the pure host.
 *
 * Keys, under the prefix (`--etcd-prefix`, default `/dstore/default/`):
 * - `<prefix>leader`: JSON `{ nodeId, address, sinceMs }` of the candidate that leads, attached
 *   to that candidate's lease;
 * - `<prefix>map`: the cluster map (JSON, the format of cluster-map.json).
 *
 * Election: plain lease + transaction rather than etcd3's `Election` (whose campaign keys are
 * ordered by create revision and whose `observe()` hides when a key is gone), because the fence
 * below needs exactly one key and its create revision. A candidate grants a lease (etcd leases
 * are in whole seconds: `--lease-ttl-ms` is rounded UP to the next second, at least 1 s), then
 * runs `if create_revision(leader) == 0 then put(leader, self, lease) else get(leader)`. It
 * wins when the `then` branch ran; the leader key's create revision is then the transaction's
 * revision, and identifies this leadership: a later leader, even the same candidate again,
 * creates the key anew with a higher create revision. A loser polls the leader key (every
 * `pollMs`, a quarter of the TTL, at most 100 ms) until it is gone — deleted when its holder
 * resigns, or expired with its lease — and tries again. Polling instead of a watch: one read
 * per interval per follower, no watch stream to re-establish after an etcd member fails, and
 * a follower takes over at most `pollMs` after the key expired (within the TTL + 1 s bound).
 *
 * Fence (S3 with several candidates): `saveMap` is ONE transaction `if
 * create_revision(leader) == <the one this candidate won with> then put(map)`, so a candidate
 * that was deposed (its lease expired while it was paused, partitioned or slow) writes nothing,
 * whatever it still believes; it fails with NotLeaderError naming the current leader.
 *
 * Losing the lease (etcd says it expired or was revoked, or no keepalive sent in the last TTL
 * was answered) emits `lost` once per leadership, in the same turn of the event loop; the
 * process steps down at once. A keepalive that failed is not a loss by itself: etcd3 retries
 * it on another endpoint, so the death of one etcd member changes nothing.
 */
import { EventEmitter } from 'node:events';
import { Etcd3, type Lease } from 'etcd3';
import { NotLeaderError } from '../core/errors.js';
import type { PersistedMap } from '../core/nameserver/nameserver.js';
import { parseMap } from '../nameserver/host.js';

/** Who leads, as stored in the leader key. */
export interface LeaderInfo {
  readonly nodeId: string;
  readonly address: string;
  /** When it won the election (ms since epoch, its clock). */
  readonly sinceMs: number;
}

export interface EtcdControlOptions {
  /** etcd client URLs (`http://host:port`). */
  readonly endpoints: readonly string[];
  /** Key prefix, e.g. `/dstore/default/`. */
  readonly prefix: string;
  /** Lease TTL asked for; rounded up to whole seconds (etcd's unit). */
  readonly leaseTtlMs: number;
  /** This candidate's name. */
  readonly nodeId: string;
  /** Bound on every etcd call (ms); default 5000. */
  readonly callTimeoutMs?: number;
}

/** What winning the election gave: the fence's token and the leader key's value. */
export interface Leadership {
  readonly createRevision: string;
  readonly leaseId: string;
  readonly info: LeaderInfo;
}

/** The lease TTL etcd gets, in whole seconds, for `--lease-ttl-ms` (rounded up, at least 1). */
export function leaseTtlSeconds(leaseTtlMs: number): number {
  return Math.max(1, Math.ceil(leaseTtlMs / 1000));
}

/** A default prefix ends with `/` so that `a` and `ab` do not share keys. */
export function normalizePrefix(prefix: string): string {
  return prefix.endsWith('/') ? prefix : `${prefix}/`;
}

function parseLeader(text: string | null | undefined): LeaderInfo | undefined {
  if (!text) return undefined;
  try {
    const v = JSON.parse(text) as Partial<LeaderInfo>;
    if (typeof v.nodeId === 'string' && typeof v.address === 'string' && typeof v.sinceMs === 'number')
      return { nodeId: v.nodeId, address: v.address, sinceMs: v.sinceMs };
  } catch {
    // not ours: reported as unknown
  }
  return undefined;
}

/**
 * Events: `lost` (reason: string) when the leadership won by `campaign` is lost — emitted once
 * per leadership, never after `resign()`.
 */
export class EtcdControl extends EventEmitter<{ lost: [reason: string] }> {
  readonly client: Etcd3;
  readonly leaderKey: string;
  readonly mapKey: string;
  readonly ttlSeconds: number;
  readonly pollMs: number;
  private lease: Lease | undefined;
  private held: Leadership | undefined;
  private losing = false;
  /** While leading: checks every `pollMs` that a keepalive was answered within the TTL. */
  private watchdog: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly opts: EtcdControlOptions) {
    super();
    const timeoutMs = opts.callTimeoutMs ?? 5000;
    this.client = new Etcd3({
      hosts: [...opts.endpoints],
      dialTimeout: timeoutMs,
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeoutMs }),
    });
    const prefix = normalizePrefix(opts.prefix);
    this.leaderKey = `${prefix}leader`;
    this.mapKey = `${prefix}map`;
    this.ttlSeconds = leaseTtlSeconds(opts.leaseTtlMs);
    this.pollMs = Math.min(100, Math.max(50, Math.floor((this.ttlSeconds * 1000) / 4)));
  }

  /** The leadership this candidate holds, if any. */
  get leadership(): Leadership | undefined {
    return this.held;
  }

  /**
   * Campaigns until this candidate leads (resolves with the leadership) or `signal` aborts
   * (rejects). etcd errors are retried after `pollMs` (`onError` hears of each).
   */
  async campaign(address: string, signal: AbortSignal, onError: (err: unknown) => void): Promise<Leadership> {
    while (!signal.aborted && !this.closed) {
      try {
        const won = await this.tryOnce(address);
        if (won) return won;
      } catch (err) {
        onError(err);
      }
      await this.pause(signal);
    }
    throw new Error('campaign stopped');
  }

  private pause(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, this.pollMs);
      function done(): void {
        clearTimeout(t);
        signal.removeEventListener('abort', done);
        resolve();
      }
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /** One attempt: the leadership when the leader key was free, undefined when someone holds it. */
  private async tryOnce(address: string): Promise<Leadership | undefined> {
    const existing = await this.client.get(this.leaderKey).exec();
    if (existing.kvs.length > 0) return undefined;
    const lease = this.client.lease(this.ttlSeconds, { autoKeepAlive: true });
    const grantSentMs = performance.now();
    let leaseId: string;
    try {
      leaseId = await lease.grant();
    } catch (err) {
      lease.release();
      throw err;
    }
    const info: LeaderInfo = { nodeId: this.opts.nodeId, address, sinceMs: Date.now() };
    let res: Awaited<ReturnType<ReturnType<Etcd3['if']>['commit']>>;
    try {
      res = await this.client
        .if(this.leaderKey, 'Create', '==', 0)
        .then(this.client.put(this.leaderKey).value(JSON.stringify(info)).lease(leaseId))
        .commit();
    } catch (err) {
      await lease.revoke().catch(() => undefined);
      throw err;
    }
    if (!res.succeeded) {
      await lease.revoke().catch(() => undefined);
      return undefined;
    }
    const held: Leadership = { createRevision: String(res.header.revision), leaseId, info };
    this.held = held;
    this.lease = lease;
    this.watchLease(held, lease, grantSentMs);
    return held;
  }

  /**
   * Loses `held` when etcd says the lease is gone (`lost`: expired, revoked, or etcd3 gave up
   * after 2 TTLs without etcd), or when no keepalive sent in the last TTL was answered — checked
   * every `pollMs` and at each failed keepalive — since by then the lease may have expired. A
   * failed keepalive alone is not a loss: etcd3 retries it at once on another endpoint (an etcd
   * member that died dropped the stream), and the lease lives on meanwhile.
   */
  private watchLease(held: Leadership, lease: Lease, grantSentMs: number): void {
    const ttlMs = this.ttlSeconds * 1000;
    // performance.now(): monotonic, so a clock step cannot stretch or shorten the TTL.
    let renewedMs = grantSentMs; // when the last answered keepalive was sent: the lease lives until then + TTL
    let firedMs = grantSentMs;
    const expired = (): boolean => performance.now() - renewedMs >= ttlMs;
    lease.on('keepaliveFired', () => {
      firedMs = performance.now();
    });
    lease.on('keepaliveSucceeded', () => {
      renewedMs = firedMs;
    });
    lease.on('lost', (err) => this.loseLeadership(held, `lease lost: ${err.message}`));
    lease.on('keepaliveFailed', (err: unknown) => {
      if (expired()) this.loseLeadership(held, `lease keepalive failed for a TTL: ${String(err)}`);
    });
    this.watchdog = setInterval(() => {
      if (expired()) this.loseLeadership(held, `no keepalive answered for a TTL (${ttlMs} ms)`);
    }, this.pollMs);
  }

  /**
   * Reported from the check phase of this turn of the event loop (setImmediate): after the
   * requests already received (a process waking from a pause reads them in the poll phase,
   * after its overdue timers) went through the fence like any other — their saves are refused
   * at etcd, not skipped, so the refusal shows in the log.
   */
  private loseLeadership(which: Leadership, reason: string): void {
    if (this.held !== which || this.losing) return;
    this.losing = true;
    setImmediate(() => {
      this.losing = false;
      if (this.held !== which) return;
      this.dropLease(false);
      this.emit('lost', reason);
    });
  }

  private dropLease(revoke: boolean): Promise<void> {
    clearInterval(this.watchdog);
    this.watchdog = undefined;
    const lease = this.lease;
    this.held = undefined;
    this.lease = undefined;
    if (!lease) return Promise.resolve();
    lease.removeAllListeners();
    if (!revoke) {
      lease.release();
      return Promise.resolve();
    }
    return lease.revoke().catch(() => lease.release());
  }

  /** Gives up the leadership (revokes the lease, so the leader key goes at once); no `lost`. */
  resign(): Promise<void> {
    return this.dropLease(true);
  }

  /** Who leads now, from etcd (a linearizable read). */
  async leader(): Promise<LeaderInfo | undefined> {
    return parseLeader(await this.client.get(this.leaderKey).string());
  }

  /** The stored cluster map (a linearizable read), undefined when none was ever saved. */
  async loadMap(): Promise<PersistedMap | undefined> {
    const text = await this.client.get(this.mapKey).string();
    if (text === null) return undefined;
    return parseMap(text, `etcd key ${this.mapKey}`);
  }

  /**
   * Writes the map in ONE transaction, only while the leader key is the one this candidate
   * created (the fence); otherwise nothing is written and it fails with NotLeaderError naming
   * the leader etcd knows. An etcd error is thrown as it is (the write may or may not have
   * happened; either way only this candidate's leadership could have written it).
   */
  async saveMap(map: PersistedMap): Promise<void> {
    await this.fenced(
      this.client.put(this.mapKey).value(JSON.stringify(map)),
      `the map transaction (map version ${map.version})`,
    );
  }

  /**
   * Resolves only if this candidate still leads at the moment etcd answers (a linearizable
   * check, no clock involved): the fence of `saveMap` with nothing to write. For answers that
   * are only true while this node leads and write nothing (confirmEpoch).
   */
  async confirmLeadership(): Promise<void> {
    await this.fenced(this.client.get(this.leaderKey), 'the leadership check');
  }

  /** `then` runs only while the leader key is the one this candidate created; NotLeaderError otherwise. */
  private async fenced(then: Parameters<ReturnType<Etcd3['if']>['then']>[0], what: string): Promise<void> {
    const held = this.held;
    if (!held) throw new NotLeaderError('this nameserver does not lead (no leadership held)');
    const res = await this.client
      .if(this.leaderKey, 'Create', '==', held.createRevision)
      .then(then)
      .else(this.client.get(this.leaderKey))
      .commit();
    if (res.succeeded) return;
    const kv = res.responses[0]?.response_range?.kvs[0];
    const now = parseLeader(kv?.value.toString());
    throw new NotLeaderError(
      `etcd refused ${what}: the leader key was created at revision ` +
        `${kv?.create_revision ?? 'none'}, not ${held.createRevision} (this candidate's)` +
        (now ? `; ${now.nodeId} leads` : ''),
      now?.address,
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.resign().catch(() => undefined);
    this.client.close();
  }
}

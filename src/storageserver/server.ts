/**
 * The storage server process (DESIGN §1, §4, §5, §7): hosts replicas, each driven by the
 * pure replica core (src/core/replica), with the network (src/rpc) and the backend
 * (src/storage) at the edges.
 *
 * Driver loop: decode → step → execute outputs. Outputs of one partition run in order;
 * `persist` ops go to the group-commit writer, and every later output not marked immediate
 * runs after they are durable (see BatchWriter.after). At the end of each event-loop turn
 * every partition that saw input gets a `flush` (one prepare message per peer for all the
 * writes of the turn); a timer ticks every `tickMs`.
 *
 * Storage failure (issue 4): a batch the backend did not confirm may or may not be durable,
 * and the replica cores already act on it. So the server goes **unhealthy** at once: it
 * drops every replica core (nothing after the failed batch is replied, acked, confirmed or
 * sent: the writer runs no later callback), answers pending writes with OUTCOME_UNKNOWN and
 * every call with a retryable UNAVAILABLE, closes its snapshot sessions, and heartbeats with
 * `unhealthy` instead of progress, the first such heartbeat sent at once, so the nameserver
 * shows it and fails its partitions over at once, without waiting --dead-after-ms (§4).
 * Then it reopens the backend with bounded exponential backoff (RECOVER_FIRST_MS →
 * RECOVER_MAX_MS; the redis backend checks S14 again; an lmdb data dir with less than
 * MIN_FREE_BYTES_TO_REOPEN free counts as still full, issue 9) and reloads in place exactly
 * as a restart would: a new incarnation, every replica rebuilt from the backend, inactive
 * (S4), registered again. The host decides (host.ts: the backoff, registering, heartbeats);
 * this class runs its effects. Work started before the failure (promotion requests,
 * snapshot fetches, epoch confirmations) belongs to an older `life` and is ignored when it
 * completes. A batch that breaks a backend precondition
 * (InvariantViolation) is a bug, not a storage failure: the process still exits 70.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { OpStats, opKindOf } from './op-stats.js';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import {
  BatchTooLargeError,
  errorToWire,
  InvalidArgumentError,
  MalformedMessageError,
  NotPrimaryError,
  OverloadedError,
  UnauthorizedError,
  StorageFailureError,
  UnavailableError,
} from '../core/errors.js';
import {
  INTENT_PREFIX,
  intentKey,
  isIntentKey,
  isReserved,
  RESERVED_PREFIX,
  userKeyOfIntent,
} from '../core/txn-keys.js';
import type { Probe } from '../http/process-http.js';
import { StorageMetrics } from './metrics.js';
import { defaultLimits, MiB, type Limits } from '../core/limits.js';
import { type DumpCursor, dumpPage } from './dump.js';
import type { PeerMessage } from '../core/replica/messages.js';
import type { ReplicaRecovery } from '../core/replica/replica.js';
import {
  assertNever,
  expired,
  type Config,
  type Epoch,
  type InvariantViolation,
  type NodeId,
  type PartitionId,
  type LogEntry,
  type Seq,
  nodeId as toNodeId,
  partitionId,
} from '../core/types.js';
import { advertisedAddress, formatHostPort } from '../process/address.js';
import { DataDirError } from '../process/data-dir.js';
import { readFileIfExists, writeFileDurably } from '../process/files.js';
import type { Logger } from '../process/log.js';
import {
  HeartbeatReplySchema,
  type NodeLiveMsg,
  PeerEnvelope,
  RegisterReply,
  StorageRequest,
  toConfig,
  toPeerMessage,
  codec,
  ConfirmEpochReply,
  PromoteReply,
  SnapshotReadReply,
  DigestAtReply,
  LeaveReply,
} from '../rpc/messages.js';
import { tokenField, tokenMatches, unauthorizedMessage } from '../rpc/token.js';
import { RpcPool, RpcServer, type CallContext } from '../rpc/transport.js';
import { NameserverSeeds, parseSeeds } from '../rpc/seeds.js';
import { valueTooLargeForPut } from '../rpc/oversized.js';
import {
  type Backend,
  type DedupRecord,
  type Snapshot,
  type SnapshotItem,
  isCorruptRecord,
} from '../storage/backend.js';
import { checkDataDirNotFull, freeSpaceOf } from './disk-space.js';
import { DigestRecords } from './digests.js';
import { AntiEntropy } from './anti-entropy.js';
import type { CheckTransport, PartitionConfigView } from '../check/replicas.js';
import { digestSnapshot } from '../storage/digest.js';
import {
  askRequest,
  type ClientCall,
  type HeartbeatRequest,
  type HostEffect,
  type NameserverAsk,
  type RegisterRequest,
  type StorageHealth,
  StorageHost,
  recoveryOf,
} from './host.js';

export type { StorageHealth } from './host.js';

/** How long a scan, dump or key count waits for lazy applies to be written before reading anyway. */
const APPLIED_WAIT_MS = 2000;

export interface StorageServerConfig {
  readonly nameserver: string;
  readonly host: string;
  readonly port: number;
  readonly advertise?: string;
  readonly nodeId?: string;
  readonly dataDir: string;
  readonly heartbeatMs: number;
  readonly tickMs: number;
  readonly maxValueBytes: number;
  readonly logRetainEntries: number;
  readonly durable: boolean;
  readonly clusterToken?: string;
  readonly callTimeoutMs: number;
  /** S16: check each partition this server leads every this many ms (0: never; default 300,000). */
  readonly antiEntropyMs?: number;
  /** S16: have the odd replicas an anti-entropy check finds relearn (default true); false only reports. */
  readonly antiEntropyRepair?: boolean;
  /**
   * Called on a fatal error (a broken invariant, a storage that did not come back): the entry
   * point ends the process (src/process/fatal.ts); a library never calls process.exit.
   */
  readonly onFatal?: () => void;
  /** Issue 15: the port of the process's HTTP server, registered (at the advertised host) for `nodes`. */
  readonly httpPort?: number;
}

/** How long a `digestAt` waits for a digest not computed yet (the entry may still be applying). */
const DIGEST_WAIT_MS = 15_000;
/** S16: the default interval of the background anti-entropy check (`--anti-entropy-ms`). */
export const DEFAULT_ANTI_ENTROPY_MS = 300_000;

const storageRequest = codec(StorageRequest);
const peerEnvelope = codec(PeerEnvelope);
const registerReply = codec(RegisterReply);
const heartbeatReply = codec(HeartbeatReplySchema);
const confirmEpochReply = codec(ConfirmEpochReply);
const promoteReply = codec(PromoteReply);
const snapshotReadReply = codec(SnapshotReadReply);
const digestAtReply = codec(DigestAtReply);
const leaveReply = codec(LeaveReply);
/** Issue 15: how long a stopping server waits for the new primaries to take over, in ms. */
const HAND_OFF_WAIT_MS = 2000;

/** The driver's handle of a waiting client call: the host answers it through an effect. */
interface Handle {
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: Error) => void;
}
/** An lmdb data dir whose filesystem has less free space than this is still full (issue 9). */
const MIN_FREE_BYTES_TO_REOPEN = 1024 * 1024;
const CORRUPT_AT_OPEN =
  'partition corrupt at open (S13): nothing of its log is applied; it relearns the partition from a healthy member';
/** A snapshot session no read used for this long is closed (it pins backend state). */
const SNAPSHOT_SESSION_IDLE_MS = 60_000;
/** At most this many snapshot sessions open at once; a new one beyond it is OVERLOADED. */
const MAX_SNAPSHOT_SESSIONS = 64;

/** Reads the node id kept in the data dir, or creates it (from the flag or at random). */
export function loadNodeId(dataDir: string, requested?: string): NodeId {
  const path = join(dataDir, 'node-id');
  const stored = readFileIfExists(path)?.trim();
  if (stored && requested && stored !== requested) {
    throw new DataDirError(
      `data dir ${dataDir} belongs to node ${stored}, not ${requested}; use another --data-dir`,
      dataDir,
    );
  }
  const id = stored || requested || `n-${randomBytes(3).toString('hex')}`;
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(id))
    throw new InvalidArgumentError(`node id ${JSON.stringify(id)}: use 1-64 of A-Z a-z 0-9 . _ -`);
  if (!stored) writeFileDurably(path, `${id}\n`);
  return toNodeId(id);
}

/** The request types a call is counted under (anything else: `malformed`), bounding the op label. */
const STORAGE_CALLS: ReadonlySet<string> = new Set([
  'put',
  'del',
  'get',
  'scan',
  'getMany',
  'putMany',
  'dump',
  'stats',
  'snapshotRead',
  'digest',
  'digestAt',
  'relearn',
]);

/** Key and value bytes of snapshot items. */
function snapshotBytes(items: ReadonlyArray<{ key: Uint8Array; value: Uint8Array }>): number {
  let n = 0;
  for (const i of items) n += i.key.length + i.value.length;
  return n;
}

/** Key and value bytes of log entries' puts and deletes. */
function entryBytes(entries: readonly LogEntry[]): number {
  let n = 0;
  for (const e of entries) {
    if (e.op.kind === 'put') n += e.op.key.length + e.op.value.length;
    else if (e.op.kind === 'delete') n += e.op.key.length;
  }
  return n;
}

/** The key /health reads (reserved: never written, so the read is the backend's, never data). */
const HEALTH_PROBE_KEY = Uint8Array.of(...RESERVED_PREFIX, 0x68);

export class StorageServer {
  readonly nodeId: NodeId;
  private readonly limits: Limits;
  /** What the server decides (host.ts); this class executes its effects. */
  private readonly host: StorageHost<Handle>;
  private readonly addresses = new Map<NodeId, string>();
  /** Batches being written (close waits for them). */
  private batchesInFlight = 0;
  private readonly pool: RpcPool;
  /** S16: the digests computed at digest entries, for checks to compare. */
  private readonly digests = new DigestRecords();
  /** S16: the background check of the partitions this server leads. */
  private readonly antiEntropy: AntiEntropy;
  /** Issue 15: client calls since the last heartbeat, sent with the next one. */
  private readonly opStats = new OpStats(performance.now());
  /** --nameserver's seeds: register, heartbeats and asks go to the leader among them (issue 12). */
  private readonly nameservers: NameserverSeeds;
  private server: RpcServer | undefined;
  private timers: NodeJS.Timeout[] = [];
  private advertised = '';
  private keyCount = 0;
  private closed = false;
  readonly metrics = new StorageMetrics();
  /** The first registration answered (start returned). */
  private registeredOnce = false;
  /** Issue 15: the live settings' epoch held, the heartbeat period, the cluster's read mode. */
  private liveEpoch = 0;
  private heartbeatMs: number;
  private heartbeatInterval: NodeJS.Timeout | undefined;
  private readMode: 'linearizable' | 'fast' = 'linearizable';
  /** The configurations of the last heartbeat reply (what the map says this server holds), for /ready. */
  private knownConfigs: readonly Config[] | undefined;

  /**
   * `reopen` opens the backend again after a storage failure (a new connection and S14 check
   * for redis); it is how the server recovers in place instead of exiting.
   */
  constructor(
    private readonly cfg: StorageServerConfig,
    private backend: Backend,
    private readonly log: Logger,
    private readonly reopen: () => Promise<Backend>,
  ) {
    this.nodeId = loadNodeId(cfg.dataDir, cfg.nodeId);
    this.heartbeatMs = cfg.heartbeatMs;
    this.limits = defaultLimits({ maxValueBytes: cfg.maxValueBytes, logRetainEntries: cfg.logRetainEntries });
    this.host = new StorageHost<Handle>(
      {
        nodeId: this.nodeId,
        limits: this.limits,
        now: Date.now,
        newIncarnation: () => randomBytes(8).toString('hex'),
        durable: cfg.durable,
        heartbeatMs: cfg.heartbeatMs,
        nameserver: cfg.nameserver,
      },
      // §16: the answers to the host's own deletes of expired keys (nobody waits on them).
      { resolve: () => undefined, reject: () => undefined },
    );
    this.pool = new RpcPool({ maxFrameBytes: this.limits.maxFrameBytes, logger: log });
    const host = this.host;
    this.metrics.source = {
      *primaries() {
        for (const r of host.replicas.values()) {
          if (!r.serving) continue;
          const peers = [...r.peers].map(([id, peer]) => [id as string, peer.ackedSeq as number] as const);
          yield { partition: r.partition, lastSeq: r.lastSeq, peers };
        }
      },
      connections: () => ({ inbound: this.server?.connectionCount ?? 0, outbound: this.pool.size }),
    };
    this.nameservers = new NameserverSeeds(parseSeeds(cfg.nameserver, '--nameserver'), this.pool, { logger: log });
    this.antiEntropy = new AntiEntropy({
      intervalMs: cfg.antiEntropyMs ?? DEFAULT_ANTI_ENTROPY_MS,
      repair: cfg.antiEntropyRepair ?? true,
      led: () => this.ledPartitions(),
      transport: this.checkTransport(),
      log,
    });
  }

  /** S16: the partitions this server serves as primary, with their configurations. */
  private ledPartitions(): PartitionConfigView[] {
    const out: PartitionConfigView[] = [];
    for (const r of this.host.replicas.values()) {
      if (r.serving && r.config) out.push(r.config);
    }
    return out;
  }

  /** S16: the calls of a check, from this server: its own host and digests, the others by RPC. */
  private checkTransport(): CheckTransport {
    const call = (node: string, body: Record<string, unknown>, timeoutMs: number): Promise<unknown> => {
      const address = this.addresses.get(toNodeId(node));
      if (!address) return Promise.reject(new UnavailableError(`no address for ${node}`));
      return this.pool.get(address, 'storage').call({ ...body, ...tokenField(this.cfg.clusterToken) }, { timeoutMs });
    };
    return {
      propose: (p, buckets) =>
        new Promise<number>((resolve, reject) =>
          this.run(
            this.host.clientDigest(p, buckets, {
              resolve: (v) => resolve((v as { version: number }).version),
              reject,
            }),
          ),
        ),
      digestAt: async (node, p, seq) => {
        if (node === this.nodeId) return this.digests.waitFor(partitionId(p), seq, DIGEST_WAIT_MS);
        const raw = await call(node, { t: 'digestAt', p, seq, waitMs: DIGEST_WAIT_MS }, DIGEST_WAIT_MS + 5000);
        const d = digestAtReply.decode(raw);
        if (!d.ok) throw new MalformedMessageError(`malformed digest reply from ${node}: ${d.reason}`);
        return d.value;
      },
      relearn: async (node, p, seq, digest, reason) => {
        if (node === this.nodeId) this.relearn(partitionId(p), seq, digest, reason);
        else await call(node, { t: 'relearn', p, seq, digest, reason }, this.cfg.callTimeoutMs);
      },
    };
  }

  async start(): Promise<number> {
    await this.loadLogs();
    this.server = new RpcServer({
      host: this.cfg.host,
      port: this.cfg.port,
      maxFrameBytes: this.limits.maxFrameBytes,
      role: 'storage',
      oversizedCall: valueTooLargeForPut(this.limits.maxValueBytes),
      logger: this.log,
      handler: (body, ctx) => this.onCall(body, ctx),
      onMessage: (body) => this.onPeerFrame(body),
    });
    const port = await this.server.listen();
    this.advertised = advertisedAddress({ listen: this.cfg.host, port, advertise: this.cfg.advertise });
    this.log.info(
      {
        nodeId: this.nodeId,
        listen: formatHostPort(this.cfg.host, port),
        advertise: this.advertised,
        backend: this.backend.kind,
        incarnation: this.incarnation,
      },
      'storage server listening',
    );
    await this.registerFirst();
    this.registeredOnce = true;
    this.heartbeatInterval = setInterval(() => this.heartbeatTimer(), this.heartbeatMs);
    this.timers.push(setInterval(() => this.tick(), this.cfg.tickMs));
    this.antiEntropy.start();
    this.timers.push(
      setInterval(
        () => void this.closeIdleSnapshotSessions(SNAPSHOT_SESSION_IDLE_MS),
        Math.min(SNAPSHOT_SESSION_IDLE_MS / 4, 15_000),
      ),
    );
    return port;
  }

  /**
   * Closes the server. `handOff` (the default; a SIGTERM): first, while it still serves, it
   * tells the nameserver it is stopping (issue 15): its primaries go to their most advanced
   * secondaries and it leaves their secondaries, so writes neither wait for it nor for
   * --dead-after-ms to pass. Bounded by one nameserver call; a nameserver that does not
   * answer leaves the failover to failure detection, as for a crash.
   */
  async close(options: { readonly handOff?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    if (options.handOff !== false) await this.handOff();
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    if (this.heartbeatInterval !== undefined) clearInterval(this.heartbeatInterval);
    this.antiEntropy.stop();
    await this.server?.close();
    this.pool.close();
    for (let i = 0; i < 10_000 && this.batchesInFlight > 0; i++) await new Promise((r) => setTimeout(r, 5));
    await this.closeIdleSnapshotSessions(0);
    await this.backend.close();
  }

  private async handOff(): Promise<void> {
    if (this.starting !== undefined) return;
    const request = this.host.leaveRequest();
    if (request === undefined) return;
    const life = this.host.life;
    try {
      const r = leaveReply.decode(await this.nameserverCall(request));
      if (!r.ok) throw new InvalidArgumentError(`nameserver sent a malformed leave reply: ${r.reason}`);
      const configs = r.value.configs.map(toConfig);
      const handedOver = configs.filter((c) => c.learners.includes(toNodeId(this.nodeId))).length;
      this.log.info({ partitions: handedOver }, 'stopping: primaries handed over, secondaries left (issue 15)');
      const { effects, handOff } = this.host.leaveAnswered(life, configs);
      this.run(effects);
      // The new configurations reach the new primaries through this server's replicas, now
      // learners (S11: a learner's first message carries its configuration, S3), or at their
      // next heartbeat. A new primary that took over (S6) sends its epoch-start entry to its
      // learners too: wait, bounded, until each of ours got one, so no client is left with
      // no primary to turn to while this server exits.
      const deadline = Date.now() + HAND_OFF_WAIT_MS;
      while (Date.now() < deadline && !this.host.handedOff(handOff)) await sleep(20);
      await this.applied(undefined);
    } catch (err) {
      this.log.warn(
        { err: (err as Error).message },
        'stopping without a hand-over: the nameserver did not answer; its failure detection takes over',
      );
    }
  }

  /**
   * The storage engine failed outside any batch (crash-guard.ts: a rejection inside the
   * engine's own code): unhealthy, exactly as for a failed batch; ignored while unhealthy.
   */
  reportStorageFailure(err: Error): void {
    this.onStorageFailure(err, this.host.life);
  }

  /** Whether the backend is usable; `stats` and heartbeats report it. */
  get storageHealth(): StorageHealth {
    return this.host.health;
  }

  /**
   * /health (DESIGN §13): the storage is healthy and the backend answers a read of a reserved
   * key (never written) within the probe's bound (ProcessHttp bounds it).
   */
  async probeHealth(): Promise<Probe> {
    const health = this.host.health;
    if (health.state !== 'healthy')
      return { ok: false, reasons: [`storage is ${health.state}: ${health.reason}`], detail: { nodeId: this.nodeId } };
    const started = Date.now();
    await this.backend.get(partitionId(0), HEALTH_PROBE_KEY);
    return {
      ok: true,
      reasons: [],
      detail: { nodeId: this.nodeId, backend: this.backend.kind, readMs: Date.now() - started },
    };
  }

  /**
   * /ready (DESIGN §13): registered, healthy, and every partition this server is a member of
   * (primary or secondary in its configuration) has its role active at the configuration's
   * epoch; a primary serves (S6). A learner catching up does not make it unready.
   */
  async probeReady(): Promise<Probe> {
    const reasons: string[] = [];
    const health = this.host.health;
    if (!this.registeredOnce) reasons.push('not registered with the nameserver yet');
    if (health.state !== 'healthy') reasons.push(`storage is ${health.state}: ${health.reason}`);
    let primaries = 0;
    let secondaries = 0;
    let learners = 0;
    if (this.knownConfigs === undefined) reasons.push('no heartbeat answered by the nameserver yet');
    for (const c of this.knownConfigs ?? []) {
      const isPrimary = c.primary === this.nodeId;
      const isSecondary = c.secondaries.includes(this.nodeId);
      if (c.learners.includes(this.nodeId)) learners++;
      if (!isPrimary && !isSecondary) continue;
      if (isPrimary) primaries++;
      else secondaries++;
      const want = isPrimary ? 'primary' : 'secondary';
      const r = this.host.replicas.get(c.partition);
      if (!r?.active || r.role !== want || r.epoch < c.epoch)
        reasons.push(
          `partition ${c.partition}: ${want} at epoch ${c.epoch} is not active yet ` +
            `(role ${r?.active ? r.role : 'inactive'}, epoch ${r?.epoch ?? 0})`,
        );
      else if (isPrimary && !r.serving) reasons.push(`partition ${c.partition}: the primary does not serve yet`);
    }
    const shown = reasons.length > 20 ? [...reasons.slice(0, 20), `… and ${reasons.length - 20} more`] : reasons;
    return {
      ok: reasons.length === 0,
      reasons: shown,
      detail: { nodeId: this.nodeId, primaries, secondaries, learners },
    };
  }

  /** New at every start and every reload after a storage failure (S4, S7). */
  get incarnation(): string {
    return this.host.incarnation;
  }

  // ---- nameserver ----

  /** While `start` waits for the first registration: how to end that wait. */
  private starting: { resolve: () => void; reject: (err: Error) => void } | undefined;

  /** Registers and returns once registered; rejects when registering cannot succeed. */
  private registerFirst(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.starting = { resolve, reject };
      this.run(this.host.register());
    });
  }

  private async sendRegister(gen: number, request: RegisterRequest): Promise<void> {
    if (this.closed) return;
    try {
      const raw = await this.nameserverCall({
        ...request,
        address: this.advertised,
        backend: this.backend.kind,
        maxValueBytes: this.limits.maxValueBytes,
        ...(this.cfg.httpPort === undefined
          ? {}
          : { httpAddress: `${this.advertised.replace(/:\d+$/, '')}:${this.cfg.httpPort}` }),
      });
      const r = registerReply.decode(raw);
      if (!r.ok)
        throw new InvalidArgumentError(
          `nameserver ${this.nameservers.target} sent a malformed register reply: ${r.reason}`,
        );
      if (r.value.live !== undefined) this.applyLive(r.value.live);
      this.run(this.host.registerAnswered(gen, r.value));
    } catch (err) {
      if (!this.closed) this.run(this.host.registerFailed(gen, err as Error));
    }
  }

  /**
   * Issue 15: live settings from a register or heartbeat reply. The epoch orders them: one at
   * or below the epoch held is ignored (a reply overtaken by a later one, or an old leader's).
   */
  private applyLive(live: NodeLiveMsg): void {
    if (live.epoch <= this.liveEpoch) return;
    this.liveEpoch = live.epoch;
    this.readMode = live.readMode;
    this.host.setLive(live);
    if (this.log.level !== live.logLevel) {
      this.log.level = live.logLevel;
      this.log.info({ logLevel: live.logLevel, epoch: live.epoch }, 'log level switched live');
    }
    if (live.heartbeatMs !== this.heartbeatMs) {
      this.log.info({ from: this.heartbeatMs, to: live.heartbeatMs }, 'heartbeat period switched live');
      this.heartbeatMs = live.heartbeatMs;
      if (this.heartbeatInterval !== undefined && !this.closed) {
        clearInterval(this.heartbeatInterval);
        this.heartbeatInterval = setInterval(() => this.heartbeatTimer(), this.heartbeatMs);
      }
    }
    // The nameserver accepts a live sync switch only for the memory backend, which holds
    // nothing durably in either mode (docs/consistency.md): there is nothing to switch.
    if (live.sync !== undefined) this.log.debug({ sync: live.sync }, 'sync setting recorded (nothing to switch)');
    this.log.debug({ live }, 'live settings applied');
  }

  /** To the leader among the nameservers (a new leader takes over heartbeats and asks by itself). */
  private nameserverCall(body: Record<string, unknown>): Promise<unknown> {
    return this.nameservers.call({ ...body, ...tokenField(this.cfg.clusterToken) }, this.cfg.callTimeoutMs);
  }

  /** The heartbeat timer; it also notices a backend gone bad between writes (say, on an idle cluster). */
  private heartbeatTimer(): void {
    if (this.closed) return;
    if (this.host.health.state === 'healthy') {
      const health = this.backend.health?.();
      if (health && (health.broken !== undefined || !health.connected)) {
        const detail = health.lastError ? `: ${health.lastError}` : '';
        this.onStorageFailure(new Error(health.broken ?? `backend not connected${detail}`), this.host.life);
        return;
      }
    }
    this.run(this.host.heartbeatDue());
  }

  private async sendHeartbeat(life: number, request: HeartbeatRequest): Promise<void> {
    try {
      const ae = this.antiEntropy.stats;
      const raw = await this.nameserverCall({
        ...request,
        keys: this.keyCount,
        ops: this.opStats.take(performance.now()),
        ...(ae.checks > 0
          ? { antiEntropy: { ...ae, ...(ae.last ? { last: { ...ae.last, odd: [...ae.last.odd] } } : {}) } }
          : {}),
      });
      const r = heartbeatReply.decode(raw);
      if (!r.ok) throw new InvalidArgumentError(`nameserver sent a malformed heartbeat reply: ${r.reason}`);
      if (r.value.kind === 'ok') {
        if (r.value.live !== undefined) this.applyLive(r.value.live);
        for (const [id, address] of Object.entries(r.value.addresses)) this.addresses.set(toNodeId(id), address);
        const configs = r.value.configs.map(toConfig);
        this.knownConfigs = configs;
        this.run(this.host.heartbeatAnswered(life, { kind: 'ok', configs }));
        void this.refreshKeyCount();
      } else this.run(this.host.heartbeatAnswered(life, r.value));
    } catch (err) {
      if (!this.closed) this.run(this.host.heartbeatFailed(err as Error));
    }
  }

  /**
   * Resolves once the applies of `p` (every partition, when undefined) queued so far are
   * written (they are lazy, issue 11), or after APPLIED_WAIT_MS: a failed backend drops what
   * waited on it, and a listing then shows what the backend holds.
   */
  private applied(p: PartitionId | undefined): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, APPLIED_WAIT_MS);
      timer.unref();
      this.run(
        this.host.whenApplied(p, () => {
          clearTimeout(timer);
          resolve();
        }),
      );
    });
  }

  private async refreshKeyCount(): Promise<void> {
    let total = 0;
    try {
      await this.applied(undefined);
      for (const r of this.host.replicas.values())
        if (r.progress().role !== 'inactive') total += await this.backend.count(r.partition);
      this.keyCount = total;
    } catch (err) {
      // Reads may fail while the backend is away; the next heartbeat tries again.
      this.log.debug({ err: (err as Error).message }, 'cannot count keys');
    }
  }

  // ---- executing the host's effects ----

  private run(effects: ReadonlyArray<HostEffect<Handle>>): void {
    for (const e of effects) {
      switch (e.kind) {
        case 'scheduleBatch':
          if (e.lazyMs === undefined) queueMicrotask(() => this.run(this.host.startBatch()));
          else
            setTimeout(() => {
              if (!this.closed) this.run(this.host.startBatch(true));
            }, e.lazyMs);
          break;
        case 'writeBatch':
          this.writeBatch(e.life, e.batch, e.ops);
          break;
        case 'scheduleFlush':
          setImmediate(() => this.run(this.host.endOfTurn()));
          break;
        case 'send':
          this.sendPeer(e.to, e.message);
          break;
        case 'answer':
          if (e.result.ok) e.handle.resolve(e.result.value);
          else e.handle.reject(e.result.error);
          break;
        case 'read':
          void this.serveRead(e.handle, e.p, e.key);
          break;
        case 'readDedup':
          void this.readDedup(e.handle, e.p, e.clientId, e.seq);
          break;
        case 'readForCondition':
          void this.readForCondition(e.token, e.p, e.keys);
          break;
        case 'scanExpiry':
          void this.scanExpiry(e.life, e.p);
          break;
        case 'ask':
          void this.ask(e.life, e.ask);
          break;
        case 'askLater':
          setTimeout(() => {
            if (!this.closed) this.run(this.host.retryAsk(e.life, e.ask));
          }, e.afterMs);
          break;
        case 'fetchSnapshot':
          void this.fetchSnapshot(e.life, e.p, e.from, e.epoch);
          break;
        case 'unhealthy':
          this.log.error(
            { err: e.reason, backend: this.backend.kind },
            'storage failed: unhealthy; no replica acts on state the backend may not hold; reopening it with backoff',
          );
          this.failedBackend = this.backend;
          void this.closeIdleSnapshotSessions(0);
          break;
        case 'reopen':
          // Unref: the backoff alone must not keep a closed server's process alive.
          setTimeout(() => void this.reopenStorage(e.life, e.attempt), e.afterMs).unref();
          break;
        case 'gaveUp':
          this.cfg.onFatal?.();
          break;
        case 'register':
          void this.sendRegister(e.gen, e.request);
          break;
        case 'registerLater':
          setTimeout(() => {
            if (!this.closed) this.run(this.host.retryRegister(e.gen));
          }, e.afterMs).unref();
          break;
        case 'registered':
          this.starting?.resolve();
          this.starting = undefined;
          break;
        case 'registerGaveUp':
          // At start the server exits with the error; later (a heartbeat reply asked to
          // register again) the next heartbeat asks again.
          if (this.starting) this.starting.reject(e.error);
          else
            this.log.error(
              { err: e.error.message },
              'cannot register with the nameserver; the next heartbeat asks again',
            );
          this.starting = undefined;
          break;
        case 'heartbeat':
          void this.sendHeartbeat(e.life, e.request);
          break;
        case 'fatal':
          this.onInvariantViolation(e.error);
          break;
        case 'defer':
          setImmediate(() => this.run(this.host.deferred(e.life, e.p, e.input)));
          break;
        case 'captureDigest':
          void this.captureDigest(e.life, e.p, e.seq, e.buckets);
          break;
        case 'log':
          this.log[e.level]({ ...e.fields }, e.message);
          break;
        default:
          assertNever(e);
      }
    }
  }

  private writeBatch(life: number, batch: number, ops: Parameters<Backend['writeBatch']>[0]): void {
    this.batchesInFlight += 1;
    const started = performance.now();
    this.backend.writeBatch(ops).then(
      (result) => {
        this.batchesInFlight -= 1;
        this.metrics.batchWritten(ops.length, (performance.now() - started) / 1000);
        this.run(this.host.batchDone(life, batch, result.deletes));
      },
      (err: unknown) => {
        // The in-memory state now runs ahead of the disk: stop rather than diverge.
        this.batchesInFlight -= 1;
        this.metrics.batchFailed();
        if (!this.closed) this.run(this.host.batchFailed(life, err instanceof Error ? err : new Error(String(err))));
      },
    );
  }

  private tick(): void {
    const now = Date.now();
    for (const r of this.host.replicas.values())
      if (r.serving) this.metrics.sampleLastSeq(r.partition, r.lastSeq, now);
      else if (r.role !== 'primary') this.metrics.forgetPartition(r.partition);
    this.run(this.host.tick(now));
  }

  /** Log tails read at start (S3: the epoch also comes from the log), as the host's recovery. */
  private async loadLogs(): Promise<void> {
    const states = await this.backend.partitions();
    const recoveries = new Map<PartitionId, ReplicaRecovery>();
    // S4: a store that holds no partition registers as not durable (the host decides).
    for (const state of states) {
      if (state.corrupt !== undefined || state.meta?.corrupt !== undefined) {
        this.log.error({ partition: state.partition, reason: state.corrupt ?? state.meta?.corrupt }, CORRUPT_AT_OPEN);
        recoveries.set(state.partition, recoveryOf(state, [], []));
        continue;
      }
      try {
        const entries = [];
        let from = state.logBase.seq + 1;
        while (from <= state.logLast.seq) {
          const page = await this.backend.readLog(state.partition, {
            fromSeq: from as never,
            toSeq: state.logLast.seq,
            limit: 4096,
          });
          if (page.length === 0) break;
          entries.push(...page);
          from = page[page.length - 1]!.seq + 1;
        }
        const dedup = await this.backend.dedupTable(state.partition);
        recoveries.set(
          state.partition,
          recoveryOf(state, entries, dedup, await intentsOf(this.backend, state.partition)),
        );
      } catch (err) {
        if (!isCorruptRecord(err)) throw err;
        // S13: a log or dedup record failed its checksum: the replica starts corrupt.
        this.log.error({ partition: state.partition, reason: err.message }, CORRUPT_AT_OPEN);
        recoveries.set(state.partition, recoveryOf({ ...state, corrupt: err.message }, [], []));
      }
    }
    this.host.loaded(recoveries, this.backend.logLost?.());
  }

  /** S13: a read of `p` met a corrupt record: the host steps the replica out; the caller answers with this error. */
  private onCorruptRead(p: PartitionId, err: Error): Error {
    const answer = this.host.corruptRead(p, err);
    this.run(this.host.pending());
    return answer;
  }

  private async serveRead(handle: Handle, p: PartitionId, key: Uint8Array): Promise<void> {
    let v: Awaited<ReturnType<Backend['get']>>;
    let intent: Awaited<ReturnType<Backend['get']>>;
    try {
      // §16: the intent first, then the value: a resolution writes the value before it deletes
      // the intent, so no intent read here means the value read after it is final.
      intent = isReserved(key) ? undefined : await this.backend.get(p, intentKey(key));
      v = await this.backend.get(p, key);
    } catch (err) {
      return this.run(this.host.readFailed(handle, p, err as Error, isCorruptRecord(err)));
    }
    this.run(this.host.readDone(handle, p, v, intent));
  }

  private async readForCondition(token: number, p: PartitionId, keys: readonly Uint8Array[]): Promise<void> {
    let values: Array<Awaited<ReturnType<Backend['get']>>>;
    try {
      values = await Promise.all(keys.map((k) => this.backend.get(p, k)));
    } catch (err) {
      return this.run(this.host.conditionReadFailed(token, err as Error, isCorruptRecord(err)));
    }
    this.run(this.host.conditionRead(token, values));
  }

  private async readDedup(handle: Handle, p: PartitionId, clientId: string, seq: Seq): Promise<void> {
    let record: DedupRecord | undefined;
    try {
      record = (await this.backend.dedupTable(p)).find((d) => d.clientId === clientId && d.seq === seq);
    } catch (err) {
      return this.run(this.host.readFailed(handle, p, err as Error, isCorruptRecord(err)));
    }
    this.run(this.host.dedupRead(handle, p, seq, record));
  }

  /** Asks the nameserver once; the host decides what the answer (or its absence) means. */
  private async ask(life: number, ask: NameserverAsk): Promise<void> {
    if (this.closed) return;
    try {
      switch (ask.t) {
        case 'confirmEpoch': {
          const r = confirmEpochReply.decode(await this.nameserverCall(askRequest(ask)));
          if (r.ok) this.run(this.host.answered(life, ask, { t: 'confirmEpoch', current: r.value.current }));
          return;
        }
        case 'promote': {
          const r = promoteReply.decode(await this.nameserverCall(askRequest(ask)));
          if (!r.ok) throw new MalformedMessageError(`nameserver sent a malformed promote reply: ${r.reason}`);
          this.run(this.host.answered(life, ask, { t: 'promote', config: toConfig(r.value.config) }));
          return;
        }
        case 'removeSecondary': {
          const r = promoteReply.decode(await this.nameserverCall(askRequest(ask)));
          if (!r.ok) throw new MalformedMessageError(`nameserver sent a malformed removeSecondary reply: ${r.reason}`);
          this.run(this.host.answered(life, ask, { t: 'removeSecondary', config: toConfig(r.value.config) }));
          return;
        }
        default:
          assertNever(ask);
      }
    } catch (err) {
      if (!this.closed) this.run(this.host.askFailed(life, ask, err as Error));
    }
  }

  /** S11: fetches a snapshot of partition `p` from its primary and installs it atomically. */
  /**
   * S16: open a snapshot of `p`, whose applied state is at the digest entry `seq` (the core
   * applies nothing past it until `digestCaptured`), then compute the digest from it in the
   * background. A corrupt record met while reading it is corruption like any other (S13).
   */
  /**
   * §16: the values of `p` that expire, read from a snapshot a page at a time (yielding to
   * other work between pages), for the host's expiry index. A failure is logged: keys read
   * as absent past their expiry all the same; only their deletes wait for the next load.
   */
  private async scanExpiry(life: number, p: PartitionId): Promise<void> {
    let snapshot: Snapshot | undefined;
    let found = 0;
    try {
      snapshot = await this.backend.snapshot(p);
      for await (const page of snapshot.items(1000)) {
        const items = [];
        for (const i of page)
          if (i.expiresAt !== undefined) items.push({ key: i.key, version: i.version, expiresAt: i.expiresAt });
        found += items.length;
        if (items.length > 0) this.host.expiryFound(life, p, items);
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (this.closed) return;
      }
      if (found > 0) this.log.info({ partition: p, keys: found }, 'keys with an expiry found');
    } catch (err) {
      this.log.warn({ partition: p, err: (err as Error).message }, 'cannot read which keys expire');
    } finally {
      await snapshot?.close().catch(() => undefined);
    }
  }

  private async captureDigest(life: number, p: PartitionId, seq: Seq, buckets: readonly number[]): Promise<void> {
    const epoch = this.host.replicas.get(p)?.epoch;
    let snapshot: Snapshot | undefined;
    let error: string | undefined;
    try {
      snapshot = await this.backend.snapshot(p);
      if (snapshot.applied.seq !== seq) {
        error = `the snapshot is at seq ${snapshot.applied.seq}, not at the digest entry`;
        await snapshot.close();
        snapshot = undefined;
      }
    } catch (err) {
      error = (err as Error).message;
    }
    this.run(this.host.digestCaptured(life, p, seq));
    if (snapshot === undefined) {
      this.log.warn({ partition: p, seq, err: error }, 'digest not computed (S16)');
      this.digests.record(p, { ok: false, seq, error: error ?? 'no snapshot' });
      return;
    }
    try {
      const d = await digestSnapshot(snapshot, { detail: new Set(buckets) });
      this.digests.record(p, { ok: true, seq, ...d }, epoch);
      this.log.debug({ partition: p, seq, digest: d.digest, keys: d.keys }, 'digest computed (S16)');
    } catch (err) {
      this.digests.record(p, { ok: false, seq, error: (err as Error).message });
      if (isCorruptRecord(err) && life === this.host.life) this.onCorruptRead(p, err as Error);
      else this.log.warn({ partition: p, seq, err }, 'digest not computed (S16)');
    } finally {
      await snapshot.close().catch(() => undefined);
    }
  }

  /**
   * S16: a check found this copy of `p` odd at `seq`: step out and relearn (the S13 path),
   * but only if the digest the check saw is this server's digest there.
   */
  private relearn(p: PartitionId, seq: number, digest: string, reason: string): { relearning: true } {
    this.host.checkPartition(p);
    const mine = this.digests.get(p, seq);
    if (mine === undefined || !mine.ok)
      throw new UnavailableError(`${this.nodeId} has no digest of partition ${p} at seq ${seq}`);
    if (mine.digest !== digest)
      throw new InvalidArgumentError(
        `${this.nodeId}'s digest of partition ${p} at seq ${seq} is ${mine.digest}, not ${digest}: refusing to relearn`,
      );
    // The majority that found this copy odd was of the configuration at the digest entry: once
    // it changed (a member removed, a failover), that verdict may name the last healthy copy.
    const then = this.digests.epochAt(p, seq);
    const now = this.host.replicas.get(p)?.epoch;
    if (then === undefined || then !== now)
      throw new UnavailableError(
        `partition ${p} on ${this.nodeId} moved from epoch ${then} to ${now} since the digest at seq ${seq}: ` +
          'refusing to relearn on that check; check again',
      );
    this.log.error(
      { partition: p, seq, digest, reason },
      'this copy of the partition differs from the others (S16): relearning it',
    );
    this.onCorruptRead(p, new Error(`digest mismatch at seq ${seq} (S16): ${reason}`));
    this.digests.forget(p);
    return { relearning: true };
  }

  private async fetchSnapshot(life: number, p: PartitionId, from: NodeId, epoch: number): Promise<void> {
    const address = this.addresses.get(from);
    let installed: { applied: { seq: Seq; epoch: Epoch }; dedup: DedupRecord[]; intents: Uint8Array[] };
    // A storage failure meanwhile replaces the backend: never install into the next life.
    const backend = this.backend;
    try {
      if (!address) throw new InvalidArgumentError(`no address for ${from}`);
      const conn = this.pool.get(address, 'storage');
      const read = async (session?: string) => {
        const token = tokenField(this.cfg.clusterToken);
        const r = snapshotReadReply.decode(
          await conn.call(
            session ? { t: 'snapshotRead', p, epoch, session, ...token } : { t: 'snapshotRead', p, epoch, ...token },
            { timeoutMs: 30_000 },
          ),
        );
        if (!r.ok) throw new MalformedMessageError(`malformed snapshot page: ${r.reason}`);
        return r.value;
      };
      const first = await read();
      const metrics = this.metrics;
      let items = 0;
      async function* pages(): AsyncIterable<SnapshotItem[]> {
        let page = first;
        for (let n = 0; n < 10_000_000; n++) {
          items += page.items.length;
          metrics.snapshotPage('received', snapshotBytes(page.items));
          yield page.items.map((i) => ({
            key: i.key,
            value: i.value,
            version: i.version as Seq,
            ...(i.expiresAt === undefined ? {} : { expiresAt: i.expiresAt }),
          }));
          if (page.done) return;
          page = await read(first.session);
        }
      }
      const applied = { seq: first.applied.seq as Seq, epoch: first.applied.epoch as Epoch };
      const dedup = first.dedup.map((d) => ({ ...d, seq: d.seq as Seq }));
      // S11: only a learner installs a snapshot (it may have been promoted meanwhile).
      if (!this.host.mayInstallSnapshot(life, p))
        throw new InvalidArgumentError(`partition ${p} is no longer a learner here; snapshot not installed`);
      await backend.installSnapshot(p, applied, pages(), dedup);
      this.log.info({ partition: p, from, appliedSeq: applied.seq, items }, 'snapshot fetched and installed');
      installed = { applied, dedup, intents: await intentsOf(backend, p) };
    } catch (err) {
      this.metrics.snapshot('received', 'error');
      this.run(this.host.snapshotFailed(life, p, (err as Error).message));
      return;
    }
    this.metrics.snapshot('received', 'ok');
    // Outside the try: an invariant the core asserts must stop the server, not look like a failed fetch.
    this.run(this.host.snapshotInstalled(life, p, installed.applied, installed.dedup, installed.intents));
  }

  /**
   * Open snapshot reads, by session id; closed when done, when a read fails, when idle for
   * SNAPSHOT_SESSION_IDLE_MS (a timer: a learner that gave up sends no further read, and an
   * open snapshot pins an LMDB read transaction or Redis pre-images), on a storage failure
   * and on close.
   */
  private readonly snapshotSessions = new Map<
    string,
    {
      snapshot: Snapshot;
      iterator: AsyncIterator<readonly SnapshotItem[]>;
      buffer: SnapshotItem[];
      lastUsedMs: number;
      partition: PartitionId;
      busy: boolean;
    }
  >();

  /** Closes every session idle for at least `idleMs` (0: every session not being read). */
  private async closeIdleSnapshotSessions(idleMs: number): Promise<void> {
    const now = Date.now();
    for (const [id, s] of [...this.snapshotSessions]) {
      if (s.busy || now - s.lastUsedMs < idleMs) continue;
      this.snapshotSessions.delete(id);
      try {
        await s.snapshot.close();
      } catch (err) {
        this.log.warn(
          { partition: s.partition, err: (err as Error).message },
          'closing an idle snapshot session failed',
        );
      }
    }
  }

  private async snapshotRead(p: PartitionId, epoch: number, sessionId: string | undefined): Promise<unknown> {
    this.host.checkSnapshotSource(p, epoch);
    let session = sessionId ? this.snapshotSessions.get(sessionId) : undefined;
    let dedup: DedupRecord[] = [];
    if (sessionId && !session) throw new InvalidArgumentError(`snapshot session ${sessionId} expired`);
    if (session?.busy) throw new InvalidArgumentError(`snapshot session ${sessionId} is being read`);
    const id = sessionId ?? randomBytes(8).toString('hex');
    if (!session) {
      if (this.snapshotSessions.size >= MAX_SNAPSHOT_SESSIONS)
        await this.closeIdleSnapshotSessions(SNAPSHOT_SESSION_IDLE_MS / 4);
      if (this.snapshotSessions.size >= MAX_SNAPSHOT_SESSIONS)
        throw new OverloadedError(`${this.snapshotSessions.size} snapshot sessions open on ${this.nodeId}`);
      const snapshot = await this.backend.snapshot(p);
      session = {
        snapshot,
        iterator: snapshot.items(256)[Symbol.asyncIterator](),
        buffer: [],
        lastUsedMs: Date.now(),
        partition: p,
        busy: false,
      };
      this.snapshotSessions.set(id, session);
      dedup = [...snapshot.dedup];
    }
    session.lastUsedMs = Date.now();
    session.busy = true;
    const items: SnapshotItem[] = [];
    let bytes = 0;
    let done = false;
    try {
      // Bounded pages: at most 1 MiB of values (or one larger value) and 4096 items.
      while (items.length < 4096 && (bytes < MiB || items.length === 0)) {
        if (session.buffer.length === 0) {
          const next = await session.iterator.next();
          if (next.done) {
            done = true;
            break;
          }
          session.buffer.push(...next.value);
          continue;
        }
        const item = session.buffer.shift()!;
        items.push(item);
        bytes += item.key.length + item.value.length;
      }
    } catch (err) {
      done = true; // a failed read ends the session: the learner starts over
      this.metrics.snapshot('sent', 'error');
      // S13: a corrupt record is never shipped; the learner learns from the next primary.
      throw isCorruptRecord(err) ? this.onCorruptRead(p, err) : err;
    } finally {
      session.busy = false;
      session.lastUsedMs = Date.now();
      if (done) {
        this.snapshotSessions.delete(id);
        await session.snapshot.close();
      }
    }
    this.metrics.snapshotPage('sent', bytes);
    if (done) this.metrics.snapshot('sent', 'ok');
    return { session: id, applied: session.snapshot.applied, dedup, items, done };
  }

  /**
   * A batch broke a backend precondition: a bug in the core or this driver, not a storage
   * failure. STYLE §3: broken invariants crash, loudly (a restart reloads from the backend).
   */
  private onInvariantViolation(err: InvariantViolation): void {
    this.log.fatal(
      { err: err.message },
      'storage precondition violated; stopping so no replica acts on state the backend does not hold',
    );
    this.cfg.onFatal?.();
  }

  /**
   * A storage write failed (or the backend reports itself unusable): go unhealthy at once,
   * then reload in place (file header). `life` is the life the failure belongs to; a second
   * report of the same failure does nothing.
   */
  private onStorageFailure(err: Error, life: number): void {
    if (this.closed) return;
    this.run(this.host.storageFailed(life, err));
  }

  /** The backend that failed (or a reopened one that failed to load), closed before the next reopen. */
  private failedBackend: Backend | undefined;

  /** One reopen attempt of the host's backoff (host.ts): on success, reload as a restart would. */
  private async reopenStorage(life: number, attempt: number): Promise<void> {
    if (this.closed || !this.host.reopenAttempt(life, attempt)) return;
    let opened: Backend | undefined;
    try {
      const failed = this.failedBackend;
      this.failedBackend = undefined;
      await failed
        ?.close()
        .catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'closing the failed backend failed'));
      checkDataDirNotFull(this.backend.kind, this.cfg.dataDir, MIN_FREE_BYTES_TO_REOPEN);
      opened = await this.reopen();
      if (this.closed) {
        await opened.close();
        return;
      }
      this.backend = opened;
      await this.loadLogs();
    } catch (err) {
      if (opened) this.failedBackend = opened;
      if (!this.closed) this.run(this.host.reopenFailed(life, attempt, err as Error));
      return;
    }
    // S4, S7: a reload is a restart; peers and the nameserver must see a new incarnation.
    this.host.reloaded();
    this.log.info(
      {
        attempt,
        incarnation: this.incarnation,
        partitions: this.host.recoveredPartitions,
        ...freeSpaceOf(this.backend.kind, this.cfg.dataDir),
      },
      'backend reopened; registering again',
    );
    this.run(this.host.register());
  }

  private sendPeer(to: NodeId, message: PeerMessage): void {
    const address = this.addresses.get(to);
    if (!address) {
      this.log.warn({ to }, 'no address for peer yet; message dropped (it will be re-sent)');
      return;
    }
    this.pool
      .get(address, 'storage')
      .send({ t: 'peer', from: this.nodeId, addr: this.advertised, m: message, ...tokenField(this.cfg.clusterToken) });
  }

  private unauthorizedPeerLoggedMs = 0;

  private onPeerFrame(body: unknown): void {
    const d = peerEnvelope.decode(body);
    if (!d.ok) {
      this.log.warn({ reason: d.reason }, 'malformed peer message dropped');
      return;
    }
    if (!tokenMatches(this.cfg.clusterToken, d.value.token)) {
      // DESIGN §12: one-way, so nobody to answer; logged at most every 10 s.
      const now = Date.now();
      if (now - this.unauthorizedPeerLoggedMs >= 10_000) {
        this.unauthorizedPeerLoggedMs = now;
        this.log.warn(
          { from: d.value.from, addr: d.value.addr },
          'peer message with a wrong or missing cluster token dropped',
        );
      }
      return;
    }
    const message = toPeerMessage(d.value.m);
    if (message.kind === 'prepare' && message.config.learners.includes(this.nodeId))
      this.metrics.learnerEntries(entryBytes(message.entries));
    if (!this.addresses.has(toNodeId(d.value.from))) this.addresses.set(toNodeId(d.value.from), d.value.addr);
    // Before registering we do not know the cluster's settings (S8): the primary will re-send.
    this.run(this.host.peer(toNodeId(d.value.from), message));
  }

  // ---- client calls ----

  /**
   * Every call, counted and timed once: by op and outcome for /metrics (metrics.ts), and, for
   * a client's read or write, for the heartbeat's report to the dashboard (OpStats).
   */
  private async onCall(body: unknown, ctx: CallContext): Promise<unknown> {
    const started = performance.now();
    const call =
      typeof body === 'object' && body !== null ? (body as { t?: unknown; keys?: unknown; entries?: unknown }) : {};
    const op = typeof call.t === 'string' && STORAGE_CALLS.has(call.t) ? call.t : 'malformed';
    const kind = opKindOf(call.t);
    const count =
      Array.isArray(call.keys) && call.t === 'getMany'
        ? call.keys.length
        : Array.isArray(call.entries)
          ? call.entries.length
          : 1;
    try {
      const value = await this.answerCall(body, ctx);
      const ms = performance.now() - started;
      this.metrics.call(op, ms / 1000);
      if (kind !== undefined) this.opStats.record(kind, ms, false, count);
      return value;
    } catch (err) {
      const ms = performance.now() - started;
      this.metrics.call(op, ms / 1000, err);
      if (kind !== undefined) this.opStats.record(kind, ms, true, count);
      throw err;
    }
  }

  private async answerCall(body: unknown, _ctx: CallContext): Promise<unknown> {
    const d = storageRequest.decode(body);
    if (!d.ok) throw new MalformedMessageError(`malformed request: ${d.reason}`);
    const req = d.value;
    if (!tokenMatches(this.cfg.clusterToken, req.token))
      throw new UnauthorizedError(unauthorizedMessage(`storage server ${this.nodeId}`));
    const health = this.host.health;
    if (health.state !== 'healthy' && req.t !== 'stats')
      throw new UnavailableError(`storage unavailable on ${this.nodeId}: ${health.reason}`);
    switch (req.t) {
      case 'put':
      case 'del':
        return new Promise((resolve, reject) => this.run(this.host.clientCall(req, { resolve, reject })));
      case 'get': {
        const answer = new Promise((resolve, reject) => this.run(this.host.clientCall(req, { resolve, reject })));
        // Issue 15: a fast read's answer says it may be stale (DESIGN §7).
        return req.fast === true ? answer.then((v) => ({ ...(v as object), stale: true })) : answer;
      }
      case 'scan': {
        this.host.checkPartition(req.p);
        const r = this.host.replicas.get(partitionId(req.p));
        if (!r?.serving) throw new NotPrimaryError(`${this.nodeId} is not the serving primary of partition ${req.p}`);
        let page: Awaited<ReturnType<Backend['scan']>>;
        await this.applied(partitionId(req.p));
        try {
          // Values are always read (the backend reads each to verify it anyway, S13), bounded by
          // bytes, so that a key past its expiry (§16) is left out as `get` leaves it out.
          page = await this.backend.scan(partitionId(req.p), {
            ...(req.after === undefined ? {} : { afterKey: req.after }),
            ...(req.prefix === undefined ? {} : { prefix: req.prefix }),
            limit: Math.min(req.limit, this.limits.maxScanPageKeys),
            values: true,
            maxBytes: Math.min(req.maxBytes ?? Number.POSITIVE_INFINITY, this.limits.maxScanPageBytes),
          });
        } catch (err) {
          throw isCorruptRecord(err) ? this.onCorruptRead(partitionId(req.p), err) : err;
        }
        const nowMs = Date.now();
        const keys: Uint8Array[] = [];
        const values: Array<{ value: Uint8Array; version: number }> = [];
        page.keys.forEach((key, i) => {
          const v = page.values?.[i];
          // Reserved keys (transactions' intents and records, src/core/txn-keys.ts) are dstore's own.
          if (isReserved(key) || (v !== undefined && expired(v.expiresAt, nowMs))) return;
          keys.push(key);
          if (v !== undefined) values.push({ value: v.value, version: v.version });
        });
        // `next` is where the partition goes on: past the keys left out too.
        return {
          keys,
          ...(req.values === true ? { values } : {}),
          ...(page.nextAfterKey === undefined ? {} : { next: page.nextAfterKey }),
        };
      }
      case 'getMany':
        return this.many(
          req.p,
          req.keys.map((key) => ({ t: 'get', p: req.p, key }) as const),
        );
      case 'putMany':
        return this.many(
          req.p,
          req.entries.map(({ key, value, cid, rs }) => ({ t: 'put', p: req.p, key, value, cid, rs }) as const),
        );
      case 'dump':
        return this.dump(req.limit, req.after, req.maxBytes);
      case 'snapshotRead':
        this.host.checkPartition(req.p);
        return this.snapshotRead(partitionId(req.p), req.epoch, req.session);
      case 'digest':
        return new Promise((resolve, reject) =>
          this.run(this.host.clientDigest(req.p, req.buckets, { resolve, reject })),
        );
      case 'digestAt':
        this.host.checkPartition(req.p);
        return this.digests.waitFor(partitionId(req.p), req.seq, req.waitMs ?? DIGEST_WAIT_MS);
      case 'relearn':
        return this.relearn(partitionId(req.p), req.seq, req.digest, req.reason);
      case 'stats':
        return {
          nodeId: this.nodeId,
          keys: this.keyCount,
          health: this.host.health,
          incarnation: this.incarnation,
          partitions: this.host.progress(),
          antiEntropy: this.antiEntropy.stats,
        };
      default:
        assertNever(req);
    }
  }

  /**
   * Issue 14: a getMany / putMany: every call stepped into the replica in one turn
   * (host.clientMany), each answered on its own; the reply lists each one's result or typed
   * error, in order. Read results stop once their values reach maxScanPageBytes (at least one
   * is listed): the client asks again for the rest.
   */
  private async many(p: number, calls: ReadonlyArray<ClientCall>): Promise<unknown> {
    this.host.checkPartition(p);
    if (calls.length > this.limits.maxBatchKeys) throw new BatchTooLargeError(calls.length, this.limits.maxBatchKeys);
    const pending = calls.map((call) => {
      let handle!: Handle;
      const promise = new Promise<unknown>((resolve, reject) => {
        handle = { resolve, reject };
      });
      return { call, handle, promise };
    });
    this.run(this.host.clientMany(pending));
    const settled = await Promise.allSettled(pending.map((x) => x.promise));
    const results: unknown[] = [];
    let bytes = 0;
    for (const s of settled) {
      if (results.length > 0 && bytes >= this.limits.maxScanPageBytes) break;
      if (s.status === 'rejected') {
        const { code, message } = errorToWire(s.reason);
        results.push({ error: { code, message } });
        continue;
      }
      const value = (s.value as { value?: Uint8Array }).value;
      bytes += value?.length ?? 0;
      results.push(s.value);
    }
    return { results };
  }

  /** One page of this server's keys (dump.ts): at most `limit` keys and maxDumpPageBytes. */
  private async dump(limit: number, after: DumpCursor | undefined, maxBytes: number | undefined): Promise<unknown> {
    // Only replicas this server holds as a member: a removed replica's leftovers do not count.
    const held = [...this.host.replicas.values()]
      .filter((r) => r.progress().role !== 'inactive')
      .map((r) => r.partition)
      .sort((a, b) => a - b);
    await this.applied(undefined);
    let keyCount = 0;
    for (const p of held) keyCount += await this.backend.count(p);
    if (limit === 0) return { nodeId: this.nodeId, keyCount, keys: [], truncated: keyCount > 0 };
    // A corrupt value met while listing is reported like any corrupt read (S13).
    const scan: Pick<Backend, 'scan'>['scan'] = (p, options) =>
      this.backend.scan(p, options).catch((err: unknown) => {
        throw isCorruptRecord(err) ? this.onCorruptRead(p, err) : err;
      });
    const page = await dumpPage({ scan }, held, {
      ...(after === undefined ? {} : { after }),
      maxKeys: Math.min(limit, this.limits.maxScanPageKeys),
      maxBytes: Math.min(maxBytes ?? this.limits.maxDumpPageBytes, this.limits.maxDumpPageBytes),
      scanPageKeys: this.limits.maxScanPageKeys,
    });
    return {
      nodeId: this.nodeId,
      keyCount,
      keys: page.keys,
      truncated: page.next !== undefined,
      ...(page.next === undefined ? {} : { next: page.next }),
    };
  }
}

/**
 * §16: the user keys of partition `p` with an intent in the stored state: a prefix scan of
 * the intent keys (the backend seeks to them and reads no other record), page by page.
 */
async function intentsOf(backend: Backend, p: PartitionId): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  let after: Uint8Array | undefined;
  for (let page = 0; page < 1_000_000; page++) {
    const got = await backend.scan(
      p,
      after === undefined
        ? { prefix: INTENT_PREFIX, limit: 1000 }
        : { prefix: INTENT_PREFIX, afterKey: after, limit: 1000 },
    );
    for (const k of got.keys) if (isIntentKey(k)) out.push(userKeyOfIntent(k));
    if (got.nextAfterKey === undefined) return out;
    after = got.nextAfterKey;
  }
  throw new StorageFailureError(`the intents of partition ${p} did not end within 1,000,000 pages`);
}

/**
 * Schemas of every message dstore sends (DESIGN §10). Untrusted bytes become typed
 * messages only here: each process decodes a frame body with the compiled validator of
 * the requests it serves, and answers a malformed one with MALFORMED_MESSAGE.
 *
 * Discriminator: `t`. Requests to the nameserver, to storage servers, and peer messages
 * between replicas each form one union.
 */
import { Type, type Static } from '@sinclair/typebox';
export { codec } from './schema.js';
import type { Config, Epoch, LogEntry, NodeId, PartitionId, Seq } from '../core/types.js';
import type { PeerMessage } from '../core/replica/messages.js';
import type { ReplicaProgress } from '../core/replica/replica.js';
import { DIGEST_BUCKETS, MAX_DETAIL_ENTRIES, MAX_TTL_MS } from '../core/limits.js';

const Uint = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const Partition = Type.Integer({ minimum: 0, maximum: 65535 });
const Id = Type.String({ minLength: 1, maxLength: 128 });
const Address = Type.String({
  minLength: 3,
  maxLength: 300,
  pattern: '^(\\[[0-9A-Fa-f:.]+\\]|[^\\s:\\[\\]]+):[0-9]{1,5}$',
});
/**
 * The largest `--max-value-bytes` any dstore process accepts (the CLI's bound); no message
 * carries more binary data than this, and a client accepts frames up to the frame size it
 * implies (`defaultLimits({ maxValueBytes: MAX_VALUE_BYTES_CEILING }).maxFrameBytes`).
 */
export const MAX_VALUE_BYTES_CEILING = 64 * 1024 * 1024;

const Bytes = Type.Uint8Array({ maxByteLength: MAX_VALUE_BYTES_CEILING });
const Token = Type.Optional(Type.String({ maxLength: 1024 }));

export const ConfigSchema = Type.Object({
  partition: Partition,
  epoch: Uint,
  primary: Id,
  secondaries: Type.Array(Id, { maxItems: 64 }),
  learners: Type.Array(Id, { maxItems: 64 }),
});

const DigestBuckets = Type.Array(Type.Integer({ minimum: 0, maximum: DIGEST_BUCKETS - 1 }), {
  maxItems: DIGEST_BUCKETS,
});
const DigestHex = Type.String({ pattern: '^[0-9a-f]{32}$' });
const Reason = Type.String({ maxLength: 1024 });

const OpSchema = Type.Union([
  Type.Object({ kind: Type.Literal('put'), key: Bytes, value: Bytes, expiresAt: Type.Optional(Uint) }),
  Type.Object({ kind: Type.Literal('delete'), key: Bytes }),
  Type.Object({ kind: Type.Literal('epochStart') }),
  Type.Object({ kind: Type.Literal('digest'), buckets: DigestBuckets }),
]);

const EntrySchema = Type.Object({
  epoch: Uint,
  seq: Uint,
  op: OpSchema,
  tag: Type.Optional(Type.Object({ clientId: Id, requestSeq: Uint })),
});

const Position = Type.Object({ seq: Uint, epoch: Uint });

const PeerMessageSchema = Type.Union([
  Type.Object({
    kind: Type.Literal('prepare'),
    partition: Partition,
    config: ConfigSchema,
    prev: Position,
    entries: Type.Array(EntrySchema, { maxItems: 100_000 }),
    commitSeq: Uint,
  }),
  Type.Object({ kind: Type.Literal('prepareAck'), partition: Partition, epoch: Uint, seq: Uint, incarnation: Id }),
  Type.Object({
    kind: Type.Literal('prepareNack'),
    partition: Partition,
    epoch: Uint,
    needFromSeq: Uint,
    incarnation: Id,
  }),
  Type.Object({ kind: Type.Literal('staleEpoch'), partition: Partition, config: ConfigSchema }),
  Type.Object({ kind: Type.Literal('confirm'), partition: Partition, config: ConfigSchema, round: Uint }),
  Type.Object({ kind: Type.Literal('confirmAck'), partition: Partition, epoch: Uint, round: Uint }),
  Type.Object({ kind: Type.Literal('snapshotOffer'), partition: Partition, config: ConfigSchema, logBase: Uint }),
]);

/** One-way messages between storage servers. */
/** `addr` is where the sender listens, so a receiver can answer before the nameserver told it. */
/** `token`: the cluster token (DESIGN §12); a receiver with a token drops a message without it. */
export const PeerEnvelope = Type.Object({
  t: Type.Literal('peer'),
  from: Id,
  addr: Address,
  m: PeerMessageSchema,
  token: Token,
});

/** Where the next page of `dump` starts: partition `p`, after `key` (none: its first key). */
const DumpCursorSchema = Type.Object({ p: Partition, key: Type.Optional(Bytes) });

const Tagged = { cid: Type.Optional(Id), rs: Type.Optional(Uint) };
/**
 * §16 (docs/transactions.md): `ifk`, more keys of the partition that must be at these versions
 * (0: absent); `sys`, a transaction's own write (it may name reserved keys, and is not refused
 * for an intent).
 */
const TxnFields = {
  ifk: Type.Optional(Type.Array(Type.Object({ key: Bytes, v: Uint }), { maxItems: 16 })),
  sys: Type.Optional(Type.Boolean()),
};

/** Calls a storage server answers; `token` is the cluster token (DESIGN §12), refused when wrong. */
export const StorageRequest = Type.Union([
  Type.Object({
    t: Type.Literal('put'),
    p: Partition,
    key: Bytes,
    value: Bytes,
    ...Tagged,
    ifv: Type.Optional(Uint),
    /** §16: the value expires this many ms after the primary logs it. */
    ttl: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_TTL_MS })),
    ...TxnFields,
    token: Token,
  }),
  Type.Object({
    t: Type.Literal('del'),
    p: Partition,
    key: Bytes,
    ...Tagged,
    ifv: Type.Optional(Uint),
    ...TxnFields,
    token: Token,
  }),
  /**
   * `fast` (DESIGN §7, issue 15): served by any active replica (primary or secondary) from its
   * applied state with no confirmation round; the reply says `stale: true`.
   */
  Type.Object({ t: Type.Literal('get'), p: Partition, key: Bytes, fast: Type.Optional(Type.Boolean()), token: Token }),
  /**
   * One page of partition `p`'s keys in byte order, read by its serving primary: after `after`
   * (exclusive), starting with `prefix` (issue 14), at most `limit` (the server caps it at
   * maxScanPageKeys); with `values`, each key's value and version too, the page then also
   * bounded by about `maxBytes` (capped at maxScanPageBytes). `next`: the last key, when keys
   * are left.
   */
  Type.Object({
    t: Type.Literal('scan'),
    p: Partition,
    after: Type.Optional(Bytes),
    prefix: Type.Optional(Bytes),
    limit: Type.Integer({ minimum: 1, maximum: 100_000 }),
    values: Type.Optional(Type.Boolean()),
    maxBytes: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 * 1024 * 1024 })),
    token: Token,
  }),
  /**
   * Issue 14: reads of several keys of partition `p` at its primary, in one flush and one
   * read-confirmation round; answered with a BatchReply of GetReply results (possibly fewer than
   * `keys` when their values reached maxScanPageBytes: the caller asks again for the rest).
   */
  Type.Object({
    t: Type.Literal('getMany'),
    p: Partition,
    keys: Type.Array(Bytes, { minItems: 1, maxItems: 100_000 }),
    token: Token,
  }),
  /**
   * Issue 14: writes of several keys of partition `p`, each with its own client slot (cid, rs)
   * so the dedup table (S10) recognises each entry of a retried batch; answered with a
   * BatchReply of PutReply results, one per entry, in order.
   */
  Type.Object({
    t: Type.Literal('putMany'),
    p: Partition,
    entries: Type.Array(Type.Object({ key: Bytes, value: Bytes, cid: Id, rs: Uint }), {
      minItems: 1,
      maxItems: 100_000,
    }),
    token: Token,
  }),
  /**
   * One page of the keys a storage server holds (issue 9: never one reply of a whole store):
   * at most `limit` keys and about `maxBytes` of them (the server caps both), from the cursor
   * `after` (partition `p`, after `key`; none: from the start).
   */
  Type.Object({
    t: Type.Literal('dump'),
    limit: Type.Integer({ minimum: 0, maximum: 100_000_000 }),
    after: Type.Optional(DumpCursorSchema),
    maxBytes: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 * 1024 * 1024 })),
    token: Token,
  }),
  Type.Object({ t: Type.Literal('stats'), token: Token }),
  /** S11: a learner pages through a snapshot of a partition its primary holds. */
  Type.Object({ t: Type.Literal('snapshotRead'), p: Partition, epoch: Uint, session: Type.Optional(Id), token: Token }),
  /**
   * S16: the primary of `p` logs a digest entry (every replica computes its digest as it
   * applies it, listing the entries of `buckets`); answered with its seq, as a PutReply.
   */
  Type.Object({ t: Type.Literal('digest'), p: Partition, buckets: DigestBuckets, token: Token }),
  /** S16: this server's digest of `p` at the digest entry `seq`, waiting up to `waitMs` for it. */
  Type.Object({
    t: Type.Literal('digestAt'),
    p: Partition,
    seq: Uint,
    waitMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 600_000 })),
    token: Token,
  }),
  /**
   * S16: a check found this server's copy of `p` odd at `seq` (its digest there was `digest`,
   * the others agreed on another): it steps out and relearns, as for corruption (S13). Refused
   * unless this server's digest at `seq` is `digest`.
   */
  Type.Object({ t: Type.Literal('relearn'), p: Partition, seq: Uint, digest: DigestHex, reason: Reason, token: Token }),
]);
export type StorageRequest = Static<typeof StorageRequest>;

const ProgressSchema = Type.Object({
  partition: Partition,
  epoch: Uint,
  role: Type.Union([
    Type.Literal('inactive'),
    Type.Literal('primary'),
    Type.Literal('secondary'),
    Type.Literal('learner'),
  ]),
  lastSeq: Uint,
  lastEpoch: Uint,
  commitSeq: Uint,
  appliedSeq: Uint,
  serving: Type.Boolean(),
  /** S13: the replica found the partition corrupt and waits to relearn it (absent: no). */
  corrupt: Type.Optional(Type.Boolean()),
});

/** S16: a storage server's anti-entropy counts and its last divergence, for `nodes`. */
const AntiEntropyReport = Type.Object({
  checks: Uint,
  divergences: Uint,
  repaired: Uint,
  incomplete: Uint,
  last: Type.Optional(
    Type.Object({ partition: Partition, seq: Uint, odd: Type.Array(Id, { maxItems: 64 }), atMs: Uint }),
  ),
});

/**
 * Issue 15: the client calls a storage server served over `intervalMs` (since its last
 * heartbeat): reads (get, getMany, scan), writes (put, del, putMany), those of them that
 * failed, and their latency's median and 99th percentile in ms (0 with no call).
 */
export const OpsReport = Type.Object({
  intervalMs: Uint,
  reads: Uint,
  writes: Uint,
  errors: Uint,
  p50Ms: Type.Number({ minimum: 0, maximum: 1e9 }),
  p99Ms: Type.Number({ minimum: 0, maximum: 1e9 }),
});
export type OpsReport = Static<typeof OpsReport>;
/** Issue 15: the live settings (src/core/nameserver/live.ts), as the map records them. */
const ReadModeSchema = Type.Union([Type.Literal('linearizable'), Type.Literal('fast')]);
const SyncSchema = Type.Union([Type.Literal('batch'), Type.Literal('none')]);
const LogLevelSchema = Type.Union([
  Type.Literal('trace'),
  Type.Literal('debug'),
  Type.Literal('info'),
  Type.Literal('warn'),
  Type.Literal('error'),
  Type.Literal('fatal'),
]);
const liveFields = {
  epoch: Uint,
  readMode: ReadModeSchema,
  minWriteReplicas: Type.Integer({ minimum: 1, maximum: 64 }),
  heartbeatMs: Type.Integer({ minimum: 1, maximum: 3_600_000 }),
  deadAfterMs: Type.Integer({ minimum: 1, maximum: 3_600_000 }),
  logLevel: LogLevelSchema,
};
export const LiveSettingsSchema = Type.Object({ ...liveFields, sync: Type.Record(Type.String(), SyncSchema) });
/** What a storage server is told (heartbeat and register replies): the cluster's settings, its own sync. */
export const NodeLiveSchema = Type.Object({ ...liveFields, sync: Type.Optional(SyncSchema) });
export type NodeLiveMsg = Static<typeof NodeLiveSchema>;

/** Calls the nameserver answers; `token` is the cluster token (DESIGN §12), refused when wrong. */
export const NameserverRequest = Type.Union([
  /** `maxValueBytes`: the server's --max-value-bytes; the map tells clients the cluster's (see MapReply.limits). */
  Type.Object({
    t: Type.Literal('register'),
    nodeId: Id,
    address: Address,
    backend: Id,
    incarnation: Id,
    durable: Type.Boolean(),
    activePartitions: Type.Optional(Type.Array(Partition, { maxItems: 65536 })),
    maxValueBytes: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_VALUE_BYTES_CEILING })),
    /** Issue 15: host:port of its HTTP port (/health, /ready, /metrics), when it has one. */
    httpAddress: Type.Optional(Address),
    token: Token,
  }),
  /**
   * `unhealthy`: the storage server's backend failed (issue 4) and it holds no replica until
   * it reloaded; the reason, for `nodes`. Such a heartbeat does not keep the node alive.
   */
  Type.Object({
    t: Type.Literal('heartbeat'),
    nodeId: Id,
    incarnation: Id,
    uptimeMs: Uint,
    keys: Uint,
    progress: Type.Array(ProgressSchema, { maxItems: 65536 }),
    unhealthy: Type.Optional(Type.String({ maxLength: 1024 })),
    /** S16: what this server's background anti-entropy check found (absent: nothing yet). */
    antiEntropy: Type.Optional(AntiEntropyReport),
    /** Issue 15: the client calls it served since its last heartbeat (absent: an older server). */
    ops: Type.Optional(OpsReport),
    token: Token,
  }),
  Type.Object({ t: Type.Literal('confirmEpoch'), p: Partition, epoch: Uint, token: Token }),
  Type.Object({
    t: Type.Literal('promote'),
    p: Partition,
    epoch: Uint,
    learner: Id,
    learnerIncarnation: Id,
    token: Token,
  }),
  Type.Object({ t: Type.Literal('removeSecondary'), p: Partition, epoch: Uint, secondary: Id, token: Token }),
  Type.Object({ t: Type.Literal('map'), token: Token }),
  Type.Object({ t: Type.Literal('nodes'), token: Token }),
  /** Issue 12: who leads the nameservers (answered by the leader and by followers); see LeaderReply. */
  Type.Object({ t: Type.Literal('leader'), token: Token }),
  /**
   * Issue 15: the storage server is stopping (SIGTERM): hand its primaries over and take it out
   * of the secondaries; answered with the configurations that changed (see LeaveReply).
   */
  Type.Object({ t: Type.Literal('leave'), nodeId: Id, incarnation: Id, token: Token }),
  /** Issue 15, `dstore drain`: move everything off `node` (`on` false: cancel); see DrainReply. */
  Type.Object({ t: Type.Literal('drain'), node: Id, on: Type.Boolean(), token: Token }),
  /** Issue 15: the dashboard's and `dstore top`'s view of the cluster (ClusterOverview); the leader answers. */
  Type.Object({ t: Type.Literal('overview'), token: Token }),
  /** Issue 15: the live settings; see ConfigReply. */
  Type.Object({ t: Type.Literal('configGet'), token: Token }),
  /**
   * Issue 15: switch live setting `name` to `value` (`node`: the storage server, for sync;
   * `force`: accept a switch that weakens durability); answered with a ConfigReply.
   */
  Type.Object({
    t: Type.Literal('configSet'),
    name: Type.String({ minLength: 1, maxLength: 64 }),
    value: Type.String({ minLength: 1, maxLength: 64 }),
    node: Type.Optional(Id),
    force: Type.Optional(Type.Boolean()),
    token: Token,
  }),
]);
export type NameserverRequest = Static<typeof NameserverRequest>;

// ---- replies (validated by the receiving client too: a peer can be wrong or malicious) ----

/**
 * The limits a client checks before sending (README "Limits"): keys up to `maxKeyBytes`,
 * values up to `maxValueBytes` — the smallest --max-value-bytes of the storage servers the
 * nameserver knows, so every replica accepts what a client lets through — and frames up to
 * `maxFrameBytes`, the frame size of the largest --max-value-bytes among them.
 */
export const ClusterLimits = Type.Object({
  maxKeyBytes: Type.Integer({ minimum: 1, maximum: 1024 * 1024 }),
  maxValueBytes: Type.Integer({ minimum: 0, maximum: MAX_VALUE_BYTES_CEILING }),
  maxFrameBytes: Type.Integer({ minimum: 1, maximum: 0xffff_ffff }),
});
export type ClusterLimits = Static<typeof ClusterLimits>;

/** `limits`: absent until a storage server registered with its --max-value-bytes (older ones do not). */
export const MapReply = Type.Object({
  clusterId: Type.String(),
  formed: Type.Boolean(),
  partitions: Uint,
  replicas: Uint,
  minWriteReplicas: Uint,
  version: Uint,
  configs: Type.Array(ConfigSchema),
  addresses: Type.Record(Type.String(), Type.String()),
  limits: Type.Optional(ClusterLimits),
  /** Issue 15: the cluster's read mode, which clients follow unless told otherwise (absent: linearizable). */
  readMode: Type.Optional(ReadModeSchema),
});
export type MapReply = Static<typeof MapReply>;

/** `deadAfterMs`: the nameserver's; a primary asks to remove a secondary silent that long (§4). */
export const RegisterReply = Type.Object({
  clusterId: Type.String(),
  partitions: Uint,
  minWriteReplicas: Uint,
  deadAfterMs: Type.Optional(Uint),
  /** Issue 15: the live settings (absent: none switched yet). */
  live: Type.Optional(NodeLiveSchema),
});
export type RegisterReply = Static<typeof RegisterReply>;

export const HeartbeatReplySchema = Type.Union([
  Type.Object({
    kind: Type.Literal('ok'),
    mapVersion: Uint,
    configs: Type.Array(ConfigSchema),
    addresses: Type.Record(Type.String(), Type.String()),
    /** Issue 15: the live settings (absent: none switched yet); a server ignores an epoch it has seen. */
    live: Type.Optional(NodeLiveSchema),
  }),
  Type.Object({ kind: Type.Literal('register') }),
]);
export type HeartbeatReplyMsg = Static<typeof HeartbeatReplySchema>;

/** One service as `nodes` lists it (DESIGN §4 "list services"). */
export const NodeInfo = Type.Object({
  /** Stable id: 'nameserver' for the nameserver, else the storage server's id (e.g. 's1'). */
  id: Type.String(),
  role: Type.Union([Type.Literal('nameserver'), Type.Literal('storage')]),
  /** host:port it is reachable at. */
  address: Type.String(),
  /** Issue 15: host:port of its HTTP port (/health, /ready, /metrics), when it has one. */
  httpAddress: Type.Optional(Type.String()),
  /**
   * `unhealthy`: its storage backend failed; it serves nothing until it reloaded (issue 4).
   * `unknown`: not heard from since the nameserver (re)started, which counts it as alive for
   * one --dead-after-ms (S15); `dead` after that.
   */
  state: Type.Union([
    Type.Literal('alive'),
    Type.Literal('dead'),
    Type.Literal('starting'),
    Type.Literal('unknown'),
    Type.Literal('unhealthy'),
  ]),
  /** ms since epoch of the last heartbeat; absent for the nameserver and for a node not heard from since it started. */
  lastHeartbeatMs: Type.Optional(Uint),
  /** Partitions it holds a replica of. */
  partitionsHeld: Uint,
  /** Partitions it is primary of. */
  partitionsLed: Uint,
  /** Keys over every partition it holds. */
  keys: Uint,
  /** Sum over partitions of the last log seq it holds. */
  logSeq: Type.Optional(Uint),
  backend: Type.Optional(Type.String()),
  uptimeMs: Uint,
  /**
   * S13: partitions whose replica on this node failed a checksum: it serves none of them and
   * relearns each from a healthy member (absent: none).
   */
  corruptPartitions: Type.Optional(Type.Array(Partition)),
  /** S16: what its background anti-entropy check found, as of its last heartbeat. */
  antiEntropy: Type.Optional(AntiEntropyReport),
  /**
   * Issue 15: `draining` — `dstore drain` moves everything off it; `leaving` — it is stopping
   * and handed its roles over (absent: neither).
   */
  moving: Type.Optional(Type.Union([Type.Literal('draining'), Type.Literal('leaving')])),
});
export type NodeInfo = Static<typeof NodeInfo>;

/** Issue 15: the answer to `leave`: the configurations that changed, which the server adopts at once. */
export const LeaveReply = Type.Object({ configs: Type.Array(ConfigSchema, { maxItems: 65536 }) });
export type LeaveReply = Static<typeof LeaveReply>;

/** Issue 15: the answer to `drain`: what the node still holds and leads, and who is draining. */
export const DrainReply = Type.Object({
  node: Type.String(),
  draining: Type.Array(Type.String()),
  held: Uint,
  led: Uint,
});
export type DrainReply = Static<typeof DrainReply>;

/** The nameserver that leads (issue 12): its node id, where it listens, since when (ms since epoch). */
export const LeaderInfoSchema = Type.Object({ nodeId: Type.String(), address: Type.String(), sinceMs: Uint });

/** The answer to `leader`: the answering nameserver's node id, and the leader when one is known. */
export const LeaderReply = Type.Object({ self: Type.String(), leader: Type.Optional(LeaderInfoSchema) });
export type LeaderReply = Static<typeof LeaderReply>;

/** The nameserver's answer to `nodes`. */
export const ClusterInfo = Type.Object({
  clusterId: Type.String(),
  partitions: Uint,
  replicas: Uint,
  minWriteReplicas: Uint,
  /** Issue 15: the cluster's read mode and live settings (absent from older nameservers). */
  readMode: Type.Optional(ReadModeSchema),
  live: Type.Optional(LiveSettingsSchema),
  /** False until enough storage servers registered to create the cluster map. */
  formed: Type.Boolean(),
  /** Partitions whose primary reported (last heartbeat) that it serves reads and writes. */
  partitionsReady: Uint,
  mapVersion: Uint,
  nodes: Type.Array(NodeInfo),
  /** Issue 12: the node id of the nameserver that answered (absent from older nameservers). */
  nameserverId: Type.Optional(Type.String()),
  /** Issue 12: the nameserver that leads and since when (absent: unknown, or an older nameserver). */
  leader: Type.Optional(LeaderInfoSchema),
});
export type ClusterInfo = Static<typeof ClusterInfo>;

/** Issue 15: a partition as the dashboard shows it; `lag`: entries each member is behind its primary. */
export const PartitionView = Type.Object({
  partition: Partition,
  epoch: Uint,
  primary: Id,
  secondaries: Type.Array(Id, { maxItems: 64 }),
  learners: Type.Array(Id, { maxItems: 64 }),
  /** The primary's last reported seq (absent: no report from it yet). */
  lastSeq: Type.Optional(Uint),
  /** Its primary reported that it serves reads and writes. */
  serving: Type.Boolean(),
  lag: Type.Record(Type.String(), Uint),
});
export type PartitionView = Static<typeof PartitionView>;

/** Issue 15: something that happened to the cluster, as the nameserver saw it. */
export const ClusterEvent = Type.Object({
  atMs: Uint,
  kind: Type.Union([
    Type.Literal('formed'),
    Type.Literal('registered'),
    Type.Literal('dead'),
    Type.Literal('alive'),
    Type.Literal('failover'),
    Type.Literal('learner'),
    Type.Literal('promotion'),
    Type.Literal('secondaryRemoved'),
  ]),
  node: Type.Optional(Type.String({ maxLength: 128 })),
  partition: Type.Optional(Partition),
  epoch: Type.Optional(Uint),
  message: Type.String({ maxLength: 1024 }),
});
export type ClusterEvent = Static<typeof ClusterEvent>;

/** Issue 15: one second of the cluster's client calls (summed over the storage servers' heartbeats). */
export const SeriesPoint = Type.Object({
  atMs: Uint,
  readsPerSec: Type.Number({ minimum: 0 }),
  writesPerSec: Type.Number({ minimum: 0 }),
  errorsPerSec: Type.Number({ minimum: 0 }),
  /** The largest p99 any server reported for its last interval (an upper bound of the cluster's). */
  p99Ms: Type.Number({ minimum: 0 }),
  /** The servers' medians weighted by their calls. */
  p50Ms: Type.Number({ minimum: 0 }),
});
export type SeriesPoint = Static<typeof SeriesPoint>;

/** Issue 15: a node of the overview: what `nodes` shows, with its heartbeat age and its last interval's calls. */
export const OverviewNode = Type.Intersect([
  NodeInfo,
  Type.Object({
    heartbeatAgeMs: Type.Optional(Uint),
    opsPerSec: Type.Optional(Type.Number({ minimum: 0 })),
    p99Ms: Type.Optional(Type.Number({ minimum: 0 })),
  }),
]);
export type OverviewNode = Static<typeof OverviewNode>;

/** Issue 15: the answer to `overview` (`GET /api/cluster`): the dashboard's and `dstore top`'s data. */
export const ClusterOverview = Type.Object({
  clusterId: Type.String(),
  formed: Type.Boolean(),
  mapVersion: Uint,
  partitionsReady: Uint,
  /** The nameserver's clock when it answered (ms since epoch). */
  nowMs: Uint,
  /** The map's settings and the nameserver's timings (other settings may be added). */
  settings: Type.Record(Type.String(), Type.Unknown()),
  nodes: Type.Array(OverviewNode),
  partitions: Type.Array(PartitionView),
  /** The most recent last. */
  events: Type.Array(ClusterEvent),
  /** One point a second, the oldest first. */
  series: Type.Array(SeriesPoint),
});
export type ClusterOverview = Static<typeof ClusterOverview>;
/** Issue 15: the answer to configGet / configSet (`summary`, `weakens`: configSet's change). */
export const ConfigReply = Type.Object({
  live: LiveSettingsSchema,
  replicas: Uint,
  mapVersion: Uint,
  summary: Type.Optional(Type.String()),
  weakens: Type.Optional(Type.String()),
});
export type ConfigReply = Static<typeof ConfigReply>;

export const PutReply = Type.Object({ version: Uint });
export const DelReply = Type.Object({ existed: Type.Boolean(), version: Uint });
const IntentSchema = Type.Object({ value: Bytes, version: Uint });
export const GetReply = Type.Union([
  /**
   * `ttl`: the ms the value has left (§16), by the primary's clock; absent: it does not expire.
   * `intent`: a transaction's intent on the key (its value and version; docs/transactions.md):
   * the client resolves it before it trusts the value.
   */
  Type.Object({
    found: Type.Literal(true),
    value: Bytes,
    version: Uint,
    ttl: Type.Optional(Uint),
    intent: Type.Optional(IntentSchema),
    /** Issue 15: a fast read's answer, from a replica's applied state: it may be stale. */
    stale: Type.Optional(Type.Boolean()),
  }),
  Type.Object({
    found: Type.Literal(false),
    intent: Type.Optional(IntentSchema),
    stale: Type.Optional(Type.Boolean()),
  }),
]);
/** `values` (when asked): each key's value and version, in the order of `keys`. */
export const ScanReply = Type.Object({
  keys: Type.Array(Bytes),
  values: Type.Optional(Type.Array(Type.Object({ value: Bytes, version: Uint }))),
  next: Type.Optional(Bytes),
});
/** One entry's failure in a batch: a typed error's wire form (errorFromWire rebuilds it). */
const EntryError = Type.Object(
  { code: Type.String({ maxLength: 64 }), message: Type.String({ maxLength: 4096 }) },
  { additionalProperties: true },
);
/** Issue 14: the answer to getMany (GetReply results) and putMany (PutReply results), in order. */
export const GetManyReply = Type.Object({
  results: Type.Array(Type.Union([GetReply.anyOf[0], GetReply.anyOf[1], Type.Object({ error: EntryError })])),
});
export const PutManyReply = Type.Object({
  results: Type.Array(Type.Union([PutReply, Type.Object({ error: EntryError })])),
});
/** `truncated`: keys are left after this page; `next`: the cursor of the next page. */
export const DumpReply = Type.Object({
  nodeId: Type.String(),
  keyCount: Uint,
  keys: Type.Array(Bytes),
  truncated: Type.Boolean(),
  next: Type.Optional(DumpCursorSchema),
});
export const ConfirmEpochReply = Type.Object({ current: Type.Boolean() });
export const PromoteReply = Type.Object({ config: ConfigSchema });
const DedupSchema = Type.Object({ clientId: Id, requestSeq: Uint, seq: Uint, existed: Type.Optional(Type.Boolean()) });
export const SnapshotReadReply = Type.Object({
  session: Id,
  applied: Position,
  dedup: Type.Array(DedupSchema, { maxItems: 10_000_000 }),
  items: Type.Array(Type.Object({ key: Bytes, value: Bytes, version: Uint, expiresAt: Type.Optional(Uint) }), {
    maxItems: 100_000,
  }),
  done: Type.Boolean(),
});
export type SnapshotReadReply = Static<typeof SnapshotReadReply>;

/** S16: a replica's digest of a partition at a digest entry (src/storage/digest.ts), or why it has none. */
export const DigestAtReply = Type.Union([
  Type.Object({
    ok: Type.Literal(true),
    seq: Uint,
    digest: DigestHex,
    content: DigestHex,
    keys: Uint,
    /** §16: of `keys`, those with an expiry (`content` leaves them out). */
    transient: Type.Optional(Uint),
    buckets: Type.Array(DigestHex, { minItems: DIGEST_BUCKETS, maxItems: DIGEST_BUCKETS }),
    dedup: DigestHex,
    detail: Type.Optional(
      Type.Array(
        Type.Object({
          bucket: Type.Integer({ minimum: 0, maximum: DIGEST_BUCKETS - 1 }),
          entries: Type.Array(Type.Object({ key: Bytes, version: Uint, hash: Type.String({ maxLength: 64 }) }), {
            maxItems: MAX_DETAIL_ENTRIES,
          }),
        }),
        { maxItems: DIGEST_BUCKETS },
      ),
    ),
    detailTruncated: Type.Optional(Type.Boolean()),
  }),
  Type.Object({ ok: Type.Literal(false), seq: Uint, error: Type.String({ maxLength: 4096 }) }),
]);
export type DigestAtReply = Static<typeof DigestAtReply>;

// ---- conversions to core types (the schema checked the shapes; ids get their brands) ----

export function toConfig(c: Static<typeof ConfigSchema>): Config {
  return c as unknown as Config;
}

export function toPeerMessage(m: Static<typeof PeerMessageSchema>): PeerMessage {
  return m as unknown as PeerMessage;
}

export function toProgress(p: Static<typeof ProgressSchema>): ReplicaProgress {
  return p as unknown as ReplicaProgress;
}

export type { Config, Epoch, LogEntry, NodeId, PartitionId, Seq };

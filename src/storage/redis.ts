/**
 * The redis backend (DESIGN §8): each storage server keeps its data, log and metadata in
 * its own Redis database (`--backend redis://HOST:PORT[/DB]`), as the original did. Client:
 * ioredis (docs/dependencies.md).
 *
 * Key layout (one Redis database per storage server; every key starts with `ds:`; `<p>` is
 * a partition id, `<g>` a data generation, both decimal):
 * - `ds:format`       layout version (2; 1 had values without checksums and is refused at
 *                     open, naming both versions); a database without it must be empty.
 * - `ds:owner`        token of the process that opened the database last (a fence, below).
 * - `ds:bseq`         number of write scripts run so far (a fence, below).
 * - `ds:nextgen`      the next unused data generation.
 * - `ds:parts`        SET of the partitions that exist.
 * - `ds:p:<p>`        HASH, the partition's state: `as`/`ae` applied seq/epoch, `bs`/`be` log
 *                     base seq/epoch, `g` its data generation, `m` its metadata (JSON, S3).
 * - `ds:l:<p>`        LIST of log records base+1 .. last, each crc32 · msgpack (S13).
 * - `ds:d:<p>:<g>`    HASH key → crc32 · msgpack [version, value], the checksum bound to the
 *                     key (log-record.ts; S13: checked by every get, scan and snapshot).
 * - `ds:z:<p>:<g>`    ZSET of the same keys, all with score 0: ZRANGEBYLEX gives byte order
 *                     (Redis compares members with memcmp), which `scan` and snapshots need.
 * - `ds:u:<p>:<g>`    HASH client id (UTF-8) → `requestSeq:seq:existed` (S10 dedup table).
 * - `ds:snaps`, `ds:s:<p>:<g>`, `ds:pv:<sid>`, `ds:pz:<sid>`: open snapshots, below.
 * - `ds:orphans`      SET of `<p>:<g>` generations to delete once no snapshot reads them.
 *
 * Writes: Lua scripts, not MULTI/EXEC. A script runs atomically, and once Redis has
 * appended its effects to the AOF (as one MULTI/EXEC block, which a restart replays whole
 * or not at all) it is durable with `appendfsync always`. A script is needed, not a
 * transaction, because a batch must read while it writes: a delete learns whether the key
 * existed (for its result and its dedup record) and a write to a key a snapshot is reading
 * first saves the key's old value (below). Preconditions (preconditions.ts, the same checks
 * memory and lmdb run) are checked here, in JavaScript, against a cached copy of every
 * partition's positions, before the script is sent: a violation sends nothing, so it leaves
 * nothing written. The cache is exact because this process is the database's only writer,
 * which two fences make sure of: every write script first checks `ds:owner` (a second
 * process opening the database takes it over, and the first one's writes fail from then
 * on) and `ds:bseq` (each script names the counter value it expects, so a script never runs
 * on a state other than the one it was planned on — say after an earlier one was lost, or
 * after Redis restarted with less than it had acknowledged). A script does all its checks
 * before its first write, so a rejected script changes nothing (Redis does not roll back a
 * script that fails half-way; its out-of-memory check happens only at the first write).
 *
 * Failures: commands are never queued while Redis is unreachable (enableOfflineQueue off),
 * a command in flight when the connection drops fails at once (maxRetriesPerRequest 0, no
 * re-sending), and one without a reply fails after `commandTimeoutMs`. A `writeBatch` is
 * resolved only after Redis confirmed its script. A write that failed after it was sent
 * may or may not have happened, so the backend stops writing ("broken": every later write
 * is a StorageFailureError) until it is reopened, which reloads the state from Redis; reads
 * go on. ioredis reconnects with backoff meanwhile. A write refused because Redis is not
 * connected right now was never sent and does not break the backend.
 *
 * Durability (S14): with sync 'batch', `open` checks that Redis runs `appendonly yes` with
 * `appendfsync always` (then Redis fsyncs before it answers); otherwise, on Redis 7.2 and
 * newer with the AOF on, each write is followed by `WAITAOF 1 0 <timeout>`; otherwise it
 * refuses with a RedisNotDurableError saying how to configure Redis. With sync 'none' it
 * only refuses an `allkeys-*` eviction policy (Redis could drop dstore's data), as always.
 *
 * Snapshots (S11) are point-in-time, by copy-on-write. Redis has no point-in-time reads,
 * and a snapshot read page by page while writes go on would otherwise be fuzzy: its items
 * could be newer than the seq it claims (which installSnapshot refuses) and a learner
 * replaying deletes over it would record other `existed` flags in its dedup table than the
 * source did (S10, S16). So `snapshot()` registers itself on the partition's generation in
 * the same script that reads the applied position and the dedup table, and from then on
 * every write script that changes a key of that generation first saves the key's value as
 * of the snapshot (empty string: absent) into the snapshot's pre-image hash `ds:pv:<sid>`
 * and orders it in `ds:pz:<sid>`, once per key. A page merges the live keys with the
 * pre-images (a pre-image wins), read in one script. The pre-images hold at most one copy
 * of each key changed while the snapshot is open, so at most the partition's size; they
 * are deleted when the snapshot closes, and at the next open if the process died.
 *
 * Generations make `installSnapshot` and `dropPartition` atomic at the moment they happen:
 * a snapshot is staged under a new generation (registered in `ds:orphans` first) in as
 * many scripts as it needs, then one write script switches the partition to it, empties
 * its log and releases the old generation (deleted with UNLINK, in the background, or
 * left in `ds:orphans` while a snapshot reads it). Opening deletes every orphan, so a
 * half-installed snapshot is discarded on restart (S11).
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import {
  type Config,
  type Epoch,
  type LogEntry,
  type PartitionId,
  type Seq,
  type VersionedValue,
  InvariantViolation,
  assert,
  assertNever,
  epoch as toEpoch,
  seq as toSeq,
} from '../core/types.js';
import { DstoreError, OverloadedError, StorageFailureError } from '../core/errors.js';
import { SCAN_VERIFY_BATCH_BYTES } from '../core/limits.js';
import type {
  Backend,
  BackendHealth,
  BackendOptions,
  BatchOp,
  BatchResult,
  DedupRecord,
  LogPosition,
  PartitionMeta,
  PartitionState,
  ScanPage,
  Snapshot,
  SnapshotItem,
} from './backend.js';
import { CorruptRecordError, decodeEntry as decodeRecord, decodeStoredValue, encodeEntry, encodeStoredValue, isCorruptRecord, isUint } from './log-record.js';
import {
  ZERO_POSITION,
  checkBatchOp,
  byClientId,
  checkDedupTable,
  checkKey,
  checkPageLimit,
  checkSnapshotItem,
  compareBytes,
  copyBytes,
  dedupRecord,
} from './preconditions.js';
import { type RedisUrl, describeRedisUrl, parseRedisUrl } from './redis-url.js';

export interface RedisBackendOptions extends BackendOptions {
  /** `redis://HOST:PORT[/DB]`, optionally with `:PASSWORD@` or `USER:PASSWORD@`. */
  readonly url: string;
  /** Bound on reaching Redis when opening, in ms (default 10 000). */
  readonly connectTimeoutMs?: number;
  /** A command without a reply after this long fails, in ms (default 10 000). */
  readonly commandTimeoutMs?: number;
}

/** Redis is set up so that dstore cannot keep its promises on it; the message says how to fix it. */
export class RedisSetupError extends StorageFailureError {}

/** S14: with --sync batch, Redis must fsync each write before it answers (or offer WAITAOF). */
export class RedisNotDurableError extends RedisSetupError {}

/** 2: stored values are checksummed records (S13). */
const FORMAT_VERSION = '2';
/** Same bound as the other backends (lmdb's is 1970), far above DESIGN §2's 1 KiB. */
export const REDIS_MAX_KEY_BYTES = 1970;
const MAX_PARTITION = 0xffff_fffe;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_COMMAND_TIMEOUT_MS = 10_000;
/** Write scripts sent and not yet answered (STYLE §4); more is an OverloadedError. */
const MAX_WRITES_IN_FLIGHT = 4096;
/** A snapshot is staged in scripts of at most this many items or bytes. */
const STAGE_MAX_ITEMS = 4096;
const STAGE_MAX_BYTES = 8 * 1024 * 1024;
/** Log records read per command when opening. */
const LOAD_CHUNK = 1024;
/** Keys and bytes (soft: at least one key) each list of a snapshot page script returns. */
const SNAPSHOT_FETCH_KEYS = 512;
const SNAPSHOT_FETCH_BYTES = 4 * 1024 * 1024;
/** Far above any real cluster (P is at most 4096). */
const MAX_PARTITIONS_AT_OPEN = 1 << 20;
/** Reconnect backoff: 50 ms doubling to 2 s, plus up to 50 ms of jitter. */
const RECONNECT_FIRST_MS = 50;
const RECONNECT_MAX_MS = 2000;

type Arg = string | Buffer;

// ---------------------------------------------------------------------------------------
// Lua. Scripts read and write keys they build themselves (a standalone Redis, not a
// cluster). Numbers that become arguments are formatted with %d: Lua 5.1 would otherwise
// print large ones in exponent form.
// ---------------------------------------------------------------------------------------

/** Shared by the scripts that delete generations. */
const LUA_RELEASE = `
local function release(p, g)
  local pg = p .. ':' .. g
  if redis.call('SCARD', 'ds:s:' .. pg) == 0 then
    redis.call('UNLINK', 'ds:d:' .. pg, 'ds:z:' .. pg, 'ds:u:' .. pg)
    redis.call('SREM', 'ds:orphans', pg)
  else
    redis.call('SADD', 'ds:orphans', pg)
  end
end
`;

/**
 * ARGV: owner, expected ds:bseq, next ds:bseq, next generation, then ops:
 *   L p n rec*n           append n log records
 *   F p keep              keep the first `keep` log records (truncateLogFrom)
 *   T p drop              drop the first `drop` log records (truncateLogTo)
 *   A p g n (kind key value client rec)*n   apply entries to generation g; kind p|d|e;
 *                         client '' for an untagged entry; a delete's rec gets 0|1 appended
 *   S p n (field value)*n set fields of the partition's state (and mark it existing)
 *   X p g                 drop the partition, whose data is generation g
 *   W p g old             switch to the staged generation g (installSnapshot), empty the log
 * Returns the `existed` flag (0|1) of every delete, in order.
 */
const LUA_WRITE = `
if redis.call('GET', 'ds:owner') ~= ARGV[1] then
  return redis.error_reply('DSFENCED another dstore process opened this Redis database since this one did')
end
local bseq = redis.call('GET', 'ds:bseq') or '0'
if bseq ~= ARGV[2] then
  return redis.error_reply('DSFENCED the write counter is ' .. bseq .. ' where this process expected ' .. ARGV[2])
end
${LUA_RELEASE}
local function str(x) return string.format('%d', x) end
local function preimage(pins, dkey, k)
  local old = nil
  for _, sid in ipairs(pins) do
    local pv = 'ds:pv:' .. sid
    if redis.call('HEXISTS', pv, k) == 0 then
      if old == nil then old = redis.call('HGET', dkey, k) or '' end
      redis.call('HSET', pv, k, old)
      redis.call('ZADD', 'ds:pz:' .. sid, 0, k)
    end
  end
end
local n = #ARGV
local existed = {}
-- Pass 1 (run false) only walks the op stream, so a malformed one writes nothing.
local function walk(run)
  local i = 5
  while i <= n do
    local op, p = ARGV[i], ARGV[i + 1]
    if p == nil then return false end
    if op == 'L' then
      local last = i + 2 + tonumber(ARGV[i + 2])
      if run then
        local j = i + 3
        while j <= last do
          local hi = math.min(j + 999, last)
          redis.call('RPUSH', 'ds:l:' .. p, unpack(ARGV, j, hi))
          j = hi + 1
        end
      end
      i = last + 1
    elseif op == 'F' then
      if run then
        local keep = tonumber(ARGV[i + 2])
        if keep == 0 then redis.call('DEL', 'ds:l:' .. p) else redis.call('LTRIM', 'ds:l:' .. p, 0, str(keep - 1)) end
      end
      i = i + 3
    elseif op == 'T' then
      if run then redis.call('LTRIM', 'ds:l:' .. p, ARGV[i + 2], -1) end
      i = i + 3
    elseif op == 'A' then
      local c = tonumber(ARGV[i + 3])
      if run then
        local pg = p .. ':' .. ARGV[i + 2]
        local dkey, zkey, ukey = 'ds:d:' .. pg, 'ds:z:' .. pg, 'ds:u:' .. pg
        local pins = redis.call('SMEMBERS', 'ds:s:' .. pg)
        for e = 0, c - 1 do
          local at = i + 4 + 5 * e
          local kind, k, client, rec = ARGV[at], ARGV[at + 1], ARGV[at + 3], ARGV[at + 4]
          if kind ~= 'e' then
            if #pins > 0 then preimage(pins, dkey, k) end
            if kind == 'p' then
              if redis.call('HSET', dkey, k, ARGV[at + 2]) == 1 then redis.call('ZADD', zkey, 0, k) end
            else
              local had = redis.call('HDEL', dkey, k)
              if had == 1 then redis.call('ZREM', zkey, k) end
              existed[#existed + 1] = had
              rec = rec .. had
            end
          end
          if client ~= '' then redis.call('HSET', ukey, client, rec) end
        end
      end
      i = i + 4 + 5 * c
    elseif op == 'S' then
      local c = tonumber(ARGV[i + 2])
      if run then
        redis.call('HSET', 'ds:p:' .. p, unpack(ARGV, i + 3, i + 2 + 2 * c))
        redis.call('SADD', 'ds:parts', p)
      end
      i = i + 3 + 2 * c
    elseif op == 'X' then
      if run then
        redis.call('DEL', 'ds:p:' .. p, 'ds:l:' .. p)
        redis.call('SREM', 'ds:parts', p)
        release(p, ARGV[i + 2])
      end
      i = i + 3
    elseif op == 'W' then
      if run then
        redis.call('DEL', 'ds:l:' .. p)
        redis.call('SREM', 'ds:orphans', p .. ':' .. ARGV[i + 2])
        if ARGV[i + 3] ~= '' then release(p, ARGV[i + 3]) end
      end
      i = i + 4
    else
      return false
    end
  end
  return i == n + 1
end
if not walk(false) then return redis.error_reply('DSBADOPS a malformed op stream') end
redis.call('SET', 'ds:bseq', ARGV[3])
redis.call('SET', 'ds:nextgen', ARGV[4])
walk(true)
return existed
`;

/**
 * At open. ARGV: owner, format. Takes the database over, drops what dead processes left
 * (snapshot pins and pre-images, orphaned generations: S11), returns [bseq, nextgen, parts].
 */
const LUA_INIT = `
local format = redis.call('GET', 'ds:format')
if format and format ~= ARGV[2] then
  return redis.error_reply('DSFORMAT this database holds dstore data of layout ' .. format .. ', not ' .. ARGV[2])
end
if not format then
  if redis.call('DBSIZE') ~= 0 then
    return redis.error_reply('DSFOREIGN this database holds keys that are not dstore data')
  end
  redis.call('SET', 'ds:format', ARGV[2])
end
redis.call('SET', 'ds:owner', ARGV[1])
local snaps = redis.call('HGETALL', 'ds:snaps')
for i = 1, #snaps, 2 do
  redis.call('UNLINK', 'ds:pv:' .. snaps[i], 'ds:pz:' .. snaps[i], 'ds:s:' .. snaps[i + 1])
end
redis.call('DEL', 'ds:snaps')
for _, pg in ipairs(redis.call('SMEMBERS', 'ds:orphans')) do
  local p, g = string.match(pg, '^(%d+):(%d+)$')
  if p and redis.call('HGET', 'ds:p:' .. p, 'g') ~= g then
    redis.call('UNLINK', 'ds:d:' .. pg, 'ds:z:' .. pg, 'ds:u:' .. pg)
  end
end
redis.call('DEL', 'ds:orphans')
return { redis.call('GET', 'ds:bseq') or '0', redis.call('GET', 'ds:nextgen') or '1', redis.call('SMEMBERS', 'ds:parts') }
`;

/** ARGV: owner, p, g, 'd'|'u', (field value)*: stages snapshot data or dedup records under g. */
const LUA_STAGE = `
if redis.call('GET', 'ds:owner') ~= ARGV[1] then
  return redis.error_reply('DSFENCED another dstore process opened this Redis database since this one did')
end
local pg = ARGV[2] .. ':' .. ARGV[3]
redis.call('SADD', 'ds:orphans', pg)
if ARGV[4] == 'd' then
  for i = 5, #ARGV, 2 do
    redis.call('HSET', 'ds:d:' .. pg, ARGV[i], ARGV[i + 1])
    redis.call('ZADD', 'ds:z:' .. pg, 0, ARGV[i])
  end
else
  for i = 5, #ARGV, 2 do redis.call('HSET', 'ds:u:' .. pg, ARGV[i], ARGV[i + 1]) end
end
return 1
`;

/** ARGV: owner, p, g: deletes a staged generation that will not be installed. */
const LUA_DISCARD = `
if redis.call('GET', 'ds:owner') ~= ARGV[1] then return 0 end
if redis.call('HGET', 'ds:p:' .. ARGV[2], 'g') == ARGV[3] then return 0 end
local pg = ARGV[2] .. ':' .. ARGV[3]
redis.call('UNLINK', 'ds:d:' .. pg, 'ds:z:' .. pg, 'ds:u:' .. pg)
redis.call('SREM', 'ds:orphans', pg)
return 1
`;

/** ARGV: owner, sid, p. Pins the partition's generation; returns [as, ae, g, dedup] or {}. */
const LUA_SNAP_OPEN = `
if redis.call('GET', 'ds:owner') ~= ARGV[1] then
  return redis.error_reply('DSFENCED another dstore process opened this Redis database since this one did')
end
local st = redis.call('HMGET', 'ds:p:' .. ARGV[3], 'as', 'ae', 'g')
if not st[3] then return {} end
local pg = ARGV[3] .. ':' .. st[3]
redis.call('SADD', 'ds:s:' .. pg, ARGV[2])
redis.call('HSET', 'ds:snaps', ARGV[2], pg)
return { st[1], st[2], st[3], redis.call('HGETALL', 'ds:u:' .. pg) }
`;

/**
 * ARGV: sid, p, g, min ('-' or '(' .. key), keys, bytes. Returns, from the live keys and
 * from the pre-images, [exhausted 0|1, {key, value}*] each: one consistent view.
 */
const LUA_SNAP_PAGE = `
local pg = ARGV[2] .. ':' .. ARGV[3]
local limit, maxBytes = tonumber(ARGV[5]), tonumber(ARGV[6])
local function page(zkey, hkey)
  local keys = redis.call('ZRANGEBYLEX', zkey, ARGV[4], '+', 'LIMIT', 0, limit)
  local out, bytes = {}, 0
  local exhausted = #keys < limit and 1 or 0
  for idx, k in ipairs(keys) do
    local v = redis.call('HGET', hkey, k)
    if not v then return redis.error_reply('DSCORRUPT key without a value in ' .. hkey) end
    out[#out + 1] = k
    out[#out + 1] = v
    bytes = bytes + #k + #v
    if bytes >= maxBytes and idx < #keys then
      exhausted = 0
      break
    end
  end
  return { exhausted, out }
end
local live = page('ds:z:' .. pg, 'ds:d:' .. pg)
if live.err then return live end
local pre = page('ds:pz:' .. ARGV[1], 'ds:pv:' .. ARGV[1])
if pre.err then return pre end
return { live[1], live[2], pre[1], pre[2] }
`;

/** ARGV: owner, sid: unpins; deletes the pre-images, and the generation if it is an orphan now. */
const LUA_SNAP_CLOSE = `
if redis.call('GET', 'ds:owner') ~= ARGV[1] then return 0 end
local pg = redis.call('HGET', 'ds:snaps', ARGV[2])
redis.call('HDEL', 'ds:snaps', ARGV[2])
redis.call('UNLINK', 'ds:pv:' .. ARGV[2], 'ds:pz:' .. ARGV[2])
if pg then
  redis.call('SREM', 'ds:s:' .. pg, ARGV[2])
  if redis.call('SCARD', 'ds:s:' .. pg) == 0 and redis.call('SISMEMBER', 'ds:orphans', pg) == 1 then
    redis.call('UNLINK', 'ds:d:' .. pg, 'ds:z:' .. pg, 'ds:u:' .. pg)
    redis.call('SREM', 'ds:orphans', pg)
  end
end
return 1
`;

/** Reads resolve the generation inside Redis, so they never see half of a switch. */
const LUA_GET = `
local g = redis.call('HGET', 'ds:p:' .. ARGV[1], 'g')
if not g then return false end
return redis.call('HGET', 'ds:d:' .. ARGV[1] .. ':' .. g, ARGV[2])
`;

/**
 * ARGV: p, min, limit, bytes. Returns [exhausted 0|1, {key, value|false}*]: the keys after
 * `min`, each with its stored value (false when the index lists a key the hash lacks), until
 * `limit` keys or until the next value would take the reply past `bytes` (soft: the first
 * always fits). Issue 9: values are measured (HSTRLEN) before they are read, so one reply, and
 * the script's own memory, never holds more than `bytes` of values plus one.
 */
const LUA_SCAN = `
local g = redis.call('HGET', 'ds:p:' .. ARGV[1], 'g')
if not g then return { 1, {} } end
local pg = ARGV[1] .. ':' .. g
local hkey = 'ds:d:' .. pg
local limit, maxBytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local keys = redis.call('ZRANGEBYLEX', 'ds:z:' .. pg, ARGV[2], '+', 'LIMIT', 0, limit)
local out, bytes = {}, 0
local exhausted = #keys < limit and 1 or 0
for idx, k in ipairs(keys) do
  local n = redis.call('HSTRLEN', hkey, k)
  if idx > 1 and bytes + n > maxBytes then
    exhausted = 0
    break
  end
  out[#out + 1] = k
  out[#out + 1] = redis.call('HGET', hkey, k)
  bytes = bytes + n
end
return { exhausted, out }
`;

const LUA_COUNT = `
local g = redis.call('HGET', 'ds:p:' .. ARGV[1], 'g')
if not g then return 0 end
return redis.call('HLEN', 'ds:d:' .. ARGV[1] .. ':' .. g)
`;

const LUA_DEDUP = `
local g = redis.call('HGET', 'ds:p:' .. ARGV[1], 'g')
if not g then return {} end
return redis.call('HGETALL', 'ds:u:' .. ARGV[1] .. ':' .. g)
`;

/** ARGV: p, fromSeq, toSeq, limit. Returns [first seq, records] (first seq '' when none). */
const LUA_READ_LOG = `
local function str(x) return string.format('%d', x) end
local base = redis.call('HGET', 'ds:p:' .. ARGV[1], 'bs')
if not base then return { '', {} } end
base = tonumber(base)
local key = 'ds:l:' .. ARGV[1]
local len = redis.call('LLEN', key)
local from = math.max(tonumber(ARGV[2]), base + 1)
local to = math.min(tonumber(ARGV[3]), base + len, from + tonumber(ARGV[4]) - 1)
if from > to then return { '', {} } end
return { str(from), redis.call('LRANGE', key, str(from - base - 1), str(to - base - 1)) }
`;

const SCRIPTS = {
  dsWrite: LUA_WRITE,
  dsInit: LUA_INIT,
  dsStage: LUA_STAGE,
  dsDiscard: LUA_DISCARD,
  dsSnapOpen: LUA_SNAP_OPEN,
  dsSnapPage: LUA_SNAP_PAGE,
  dsSnapClose: LUA_SNAP_CLOSE,
  dsGet: LUA_GET,
  dsScan: LUA_SCAN,
  dsCount: LUA_COUNT,
  dsDedup: LUA_DEDUP,
  dsReadLog: LUA_READ_LOG,
} as const;

/** The scripts as ioredis defines them: `<name>Buffer` answers with Buffers for bulk strings. */
type ScriptCommands = { [K in keyof typeof SCRIPTS as `${K}Buffer`]: (...args: Arg[]) => Promise<unknown> };
type Client = Redis & ScriptCommands;

// ---------------------------------------------------------------------------------------
// Encoding.
// ---------------------------------------------------------------------------------------



/** A plain Uint8Array copy of (part of) a reply buffer. */
function bytesOf(buf: Buffer, start = 0): Uint8Array {
  return new Uint8Array(buf.subarray(start));
}

function checkPartition(partition: PartitionId): void {
  assert(Number.isInteger(partition) && partition >= 0 && partition <= MAX_PARTITION, `partition id out of range: ${partition}`);
}

/** S13: a stored value read under `key`, checked; the value is a copy (ioredis may reuse reply buffers). */
function decodeValue(key: Uint8Array, raw: Buffer, what: string): VersionedValue {
  return decodeStoredValue(raw, key, what, copyBytes);
}

/** A log entry read from Redis; key and value are copies (ioredis may reuse reply buffers). */
function decodeEntry(raw: Buffer, what: string): LogEntry {
  return decodeRecord(raw, what, copyBytes);
}

/** S10: `requestSeq:seq:` plus, for a delete, 0|1 (appended by the script, which knows). */
function dedupPrefix(requestSeq: number, entrySeq: number): string {
  return `${requestSeq}:${entrySeq}:`;
}

function decodeDedup(clientId: Buffer, raw: Buffer, what: string): DedupRecord {
  const m = /^(\d{1,16}):(\d{1,16}):([01]?)$/.exec(raw.toString('latin1'));
  if (!m) throw new CorruptRecordError(`${what}: not a dedup record`);
  const requestSeq = Number(m[1]);
  const entrySeq = Number(m[2]);
  if (!isUint(requestSeq) || !isUint(entrySeq)) throw new CorruptRecordError(`${what}: bad request seq or seq`);
  const existed = m[3] === '' ? undefined : m[3] === '1';
  return dedupRecord({ clientId: clientId.toString('utf8'), requestSeq }, toSeq(entrySeq), existed);
}

function decodeDedupTable(reply: unknown, partition: PartitionId): DedupRecord[] {
  const flat = reply as Buffer[];
  const out: DedupRecord[] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push(decodeDedup(flat[i]!, flat[i + 1]!, `partition ${partition} dedup record`));
  return out.sort(byClientId);
}

function decodeMeta(raw: string, what: string): PartitionMeta {
  let m: unknown;
  try {
    m = JSON.parse(raw);
  } catch (err) {
    throw new CorruptRecordError(`${what}: metadata is not JSON`, { cause: err });
  }
  if (typeof m !== 'object' || m === null) throw new CorruptRecordError(`${what}: metadata is not an object`);
  const { epoch: e, config, corrupt } = m as { epoch?: unknown; config?: unknown; corrupt?: unknown };
  if (!isUint(e)) throw new CorruptRecordError(`${what}: bad epoch in the metadata`);
  if (config !== null && (typeof config !== 'object' || Array.isArray(config))) throw new CorruptRecordError(`${what}: bad config in the metadata`);
  if (corrupt !== undefined && typeof corrupt !== 'string') throw new CorruptRecordError(`${what}: bad corrupt marker in the metadata`);
  // S13: the replica's corrupt marker, until it drops the partition.
  return corrupt === undefined ? { epoch: toEpoch(e), config: config as Config | null } : { epoch: toEpoch(e), config: config as Config | null, corrupt };
}

/** ZRANGEBYLEX bound: every key after `key`, or from the start. */
function lexAfter(key: Uint8Array | undefined): Arg {
  return key === undefined ? '-' : Buffer.concat([Buffer.from('('), key]);
}

// ---------------------------------------------------------------------------------------
// The cached state of a partition (exact: see the file comment).
// ---------------------------------------------------------------------------------------

/** The log's entries from `fromSeq` up to the next run's have epoch `epoch`. */
interface EpochRun {
  readonly fromSeq: number;
  readonly epoch: Epoch;
}

interface PartState {
  readonly meta: PartitionMeta | null;
  readonly applied: LogPosition;
  readonly logBase: LogPosition;
  readonly logLast: LogPosition;
  readonly generation: number;
  /** Epochs of the entries logBase.seq+1 .. logLast.seq (S1, S12 checks need them). */
  readonly runs: readonly EpochRun[];
  /**
   * S13: a log record failed its checksum at open; logLast is the entry before it. Only
   * dropping the partition (which deletes the whole log) is expected of it.
   */
  readonly corrupt?: string;
}

function epochAt(s: PartState, at: number): Epoch {
  let lo = 0;
  let hi = s.runs.length - 1;
  assert(hi >= 0 && at > s.logBase.seq && at <= s.logLast.seq, `no log entry ${at} to read the epoch of`);
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (s.runs[mid]!.fromSeq <= at) lo = mid;
    else hi = mid - 1;
  }
  return s.runs[lo]!.epoch;
}

function appendRuns(runs: readonly EpochRun[], entries: readonly LogEntry[]): readonly EpochRun[] {
  let out = runs;
  for (const e of entries) {
    if (out[out.length - 1]?.epoch !== e.epoch) out = [...out, { fromSeq: e.seq, epoch: e.epoch }];
  }
  return out;
}

/** The runs of entries before `fromSeq`. */
function runsBefore(runs: readonly EpochRun[], fromSeq: number): readonly EpochRun[] {
  return runs.filter((r) => r.fromSeq < fromSeq);
}

/** The runs of entries after `baseSeq`. */
function runsAfter(runs: readonly EpochRun[], baseSeq: number): readonly EpochRun[] {
  return runs.filter((r, i) => (runs[i + 1]?.fromSeq ?? Number.POSITIVE_INFINITY) > baseSeq + 1);
}

function stateFields(s: PartState): string[] {
  const fields = [
    'as', String(s.applied.seq),
    'ae', String(s.applied.epoch),
    'bs', String(s.logBase.seq),
    'be', String(s.logBase.epoch),
    'g', String(s.generation),
  ];
  if (s.meta !== null) fields.push('m', JSON.stringify(s.meta));
  return fields;
}

/** A planned write: its script arguments and the partition states once it ran. */
interface Plan {
  readonly args: Arg[];
  readonly states: ReadonlyMap<PartitionId, PartState | null>;
  readonly deletes: ReadonlyArray<{ readonly partition: PartitionId; readonly seq: Seq }>;
  readonly nextGeneration: number;
}

type Durability = 'fsync-always' | 'waitaof' | 'none';

// ---------------------------------------------------------------------------------------
// The backend.
// ---------------------------------------------------------------------------------------

export class RedisBackend implements Backend {
  readonly kind = 'redis';
  /** After every write sent; plans build on it. */
  private readonly pending = new Map<PartitionId, PartState>();
  /** After every write Redis confirmed; what `partitions()` reports. */
  private readonly committed = new Map<PartitionId, PartState>();
  private batchCount: number;
  private nextGeneration: number;
  private writesInFlight = 0;
  private lastWrite: Promise<unknown> = Promise.resolve();
  private broken: StorageFailureError | undefined;
  private closing = false;
  private closePromise: Promise<void> | null = null;
  private readonly installing = new Set<PartitionId>();
  private readonly openSnapshots = new Set<string>();
  /**
   * Diagnostics (issue 9): the most stored-value bytes one scan read returned since open;
   * at most SCAN_VERIFY_BATCH_BYTES, or one value when a single value is larger.
   */
  scanPeakBytes = 0;

  private constructor(
    private readonly redis: Client,
    private readonly owner: string,
    private readonly where: string,
    private readonly durability: Durability,
    private readonly commandTimeoutMs: number,
    init: { batchCount: number; nextGeneration: number },
  ) {
    this.batchCount = init.batchCount;
    this.nextGeneration = init.nextGeneration;
  }

  /** The last error ioredis reported (connection errors, mostly). */
  private get lastError(): Error | undefined {
    return lastErrors.get(this.redis);
  }

  /**
   * Connects (waiting up to `connectTimeoutMs` for Redis to come up), checks how Redis is
   * configured (S14), takes the database over and loads every partition's positions.
   */
  static async open(options: RedisBackendOptions): Promise<RedisBackend> {
    const url = parseRedisUrl(options.url);
    const where = describeRedisUrl(url);
    const sync = options.sync ?? 'batch';
    const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const commandTimeoutMs = options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    const owner = randomBytes(12).toString('hex');
    const redis = createClient(url, owner, commandTimeoutMs);
    try {
      await connectWithin(redis, connectTimeoutMs, where);
      const durability = await checkConfig(redis, sync, where);
      await checkNoOtherOwner(redis, owner, url, where);
      const init = (await redis.dsInitBuffer(owner, FORMAT_VERSION)) as [Buffer, Buffer, Buffer[]];
      const batchCount = Number(init[0].toString());
      const nextGeneration = Number(init[1].toString());
      if (!isUint(batchCount) || !isUint(nextGeneration) || nextGeneration < 1) {
        throw new CorruptRecordError(`${where}: bad ds:bseq or ds:nextgen`);
      }
      const backend = new RedisBackend(redis, owner, where, durability, commandTimeoutMs, { batchCount, nextGeneration });
      await backend.load(init[2].map((b) => b.toString()));
      return backend;
    } catch (err) {
      redis.disconnect();
      if (err instanceof DstoreError || err instanceof InvariantViolation) throw err;
      throw new StorageFailureError(`cannot open the redis backend at ${where}: ${messageOf(err)}`, { cause: err });
    }
  }

  /** Whether writes can go through now; `broken` says why they cannot until reopened. */
  health(): BackendHealth {
    return {
      connected: this.redis.status === 'ready',
      ...(this.broken ? { broken: this.broken.message } : {}),
      ...(this.lastError ? { lastError: this.lastError.message } : {}),
    };
  }

  // -------------------------------------------------------------------------------------
  // Reads: each one script, so each sees one consistent state.
  // -------------------------------------------------------------------------------------

  async partitions(): Promise<PartitionState[]> {
    this.checkOpen();
    const out: PartitionState[] = [];
    for (const [partition, s] of this.committed) {
      const state: PartitionState = { partition, meta: s.meta, applied: s.applied, logBase: s.logBase, logLast: s.logLast };
      out.push(s.corrupt === undefined ? state : { ...state, corrupt: s.corrupt });
    }
    return out.sort((a, b) => a.partition - b.partition);
  }

  async get(partition: PartitionId, key: Uint8Array): Promise<VersionedValue | undefined> {
    this.checkOpen();
    checkPartition(partition);
    if (key.length > REDIS_MAX_KEY_BYTES || key.length === 0) return undefined; // never stored
    const raw = (await this.read(this.redis.dsGetBuffer(String(partition), Buffer.from(key)))) as Buffer | null;
    return raw === null ? undefined : decodeValue(key, raw, `partition ${partition} stored value`);
  }

  /**
   * S13: every listed key's stored value is read and verified, in round trips of at most
   * SCAN_VERIFY_BATCH_BYTES of values (issue 9: one reply of a page's values would be up to
   * 1,001 × 64 MiB), each one script. A page may so span several reads of the partition;
   * each continues strictly after the previous one's last key, so the page is still keys in
   * byte order after `afterKey`, as a shorter page size would give.
   */
  async scan(partition: PartitionId, options: { afterKey?: Uint8Array; limit: number }): Promise<ScanPage> {
    this.checkOpen();
    checkPageLimit('scan', options.limit);
    checkPartition(partition);
    // One more than asked tells whether the scan is complete.
    const wanted = options.limit + 1;
    const found: Uint8Array[] = [];
    let after = options.afterKey;
    // Bounded: every round but the last adds at least one key (the first value always fits).
    for (let round = 0; found.length < wanted; round++) {
      assert(round <= wanted, 'scan: a round added no key');
      const reply = (await this.read(
        this.redis.dsScanBuffer(String(partition), lexAfter(after), String(wanted - found.length), String(SCAN_VERIFY_BATCH_BYTES)),
      )) as [number, Array<Buffer | null>];
      const [exhausted, pairs] = reply;
      let bytes = 0;
      for (let i = 0; i + 1 < pairs.length; i += 2) {
        const k = pairs[i]!;
        const raw = pairs[i + 1];
        // S13: a scan lists no key whose stored value is missing or corrupt.
        if (raw === null || raw === undefined) throw new CorruptRecordError(`partition ${partition}: key listed in its index has no stored value`);
        decodeValue(k, raw, `partition ${partition} stored value`);
        bytes += raw.length;
        found.push(bytesOf(k));
      }
      this.scanPeakBytes = Math.max(this.scanPeakBytes, bytes);
      if (Number(exhausted) === 1) break;
      assert(pairs.length >= 2, 'scan: a round that is not the last returned no key');
      after = found[found.length - 1];
    }
    const keys = found.slice(0, options.limit);
    const last = keys[keys.length - 1];
    return found.length > options.limit && last !== undefined ? { keys, nextAfterKey: last } : { keys };
  }

  async count(partition: PartitionId): Promise<number> {
    this.checkOpen();
    checkPartition(partition);
    return Number(await this.read(this.redis.dsCountBuffer(String(partition))));
  }

  /** Entries are checked: checksum (S13), and seqs following each other from the first. */
  async readLog(partition: PartitionId, options: { fromSeq: Seq; toSeq: Seq; limit: number }): Promise<LogEntry[]> {
    this.checkOpen();
    checkPageLimit('readLog', options.limit);
    checkPartition(partition);
    const from = Math.max(options.fromSeq, 1);
    const to = Math.min(options.toSeq, Number.MAX_SAFE_INTEGER);
    if (from > to) return [];
    const [first, records] = (await this.read(this.redis.dsReadLogBuffer(String(partition), String(from), String(to), String(options.limit)))) as [Buffer, Buffer[]];
    const firstSeq = Number(first.toString());
    return records.map((raw, i) => {
      const at = firstSeq + i;
      const entry = decodeEntry(raw, `partition ${partition} log entry ${at}`);
      if (entry.seq !== at) throw new CorruptRecordError(`partition ${partition}: log position ${at} holds entry ${entry.seq}`);
      return entry;
    });
  }

  async dedupTable(partition: PartitionId): Promise<DedupRecord[]> {
    this.checkOpen();
    checkPartition(partition);
    return decodeDedupTable(await this.read(this.redis.dsDedupBuffer(String(partition))), partition);
  }

  async snapshot(partition: PartitionId): Promise<Snapshot> {
    this.checkOpen();
    checkPartition(partition);
    const sid = randomBytes(8).toString('hex');
    const reply = (await this.read(this.redis.dsSnapOpenBuffer(this.owner, sid, String(partition)))) as [Buffer, Buffer, Buffer, Buffer[]] | [];
    if (reply.length === 0) return emptySnapshot();
    this.openSnapshots.add(sid);
    const [appliedSeq, appliedEpoch, generation, dedupReply] = reply;
    const applied: LogPosition = { seq: toSeq(Number(appliedSeq.toString())), epoch: toEpoch(Number(appliedEpoch.toString())) };
    const dedup = decodeDedupTable(dedupReply, partition);
    let open = true;
    const close = async (): Promise<void> => {
      if (!open) return;
      open = false;
      await this.closeSnapshot(sid);
    };
    const pageOf = (min: Arg) =>
      this.read(this.redis.dsSnapPageBuffer(sid, String(partition), generation.toString(), min, String(SNAPSHOT_FETCH_KEYS), String(SNAPSHOT_FETCH_BYTES)));
    const checkReadable = (): void => {
      if (!open) throw new StorageFailureError('snapshot read after close');
      this.checkOpen();
    };
    return {
      applied,
      dedup,
      async *items(pageItems: number): AsyncIterable<readonly SnapshotItem[]> {
        checkPageLimit('snapshot items', pageItems);
        let buffer: SnapshotItem[] = [];
        let after: Uint8Array | undefined;
        // Bounded: every round consumes at least one key of the view, or ends it.
        for (let round = 0; ; round++) {
          assert(round <= Number.MAX_SAFE_INTEGER, 'snapshot paging did not end');
          checkReadable();
          const [liveDone, live, preDone, pre] = (await pageOf(lexAfter(after))) as [number, Buffer[], number, Buffer[]];
          const merged = mergePage(live, liveDone === 1, pre, preDone === 1, applied, partition);
          buffer.push(...merged.items);
          while (buffer.length >= pageItems) {
            yield buffer.slice(0, pageItems);
            buffer = buffer.slice(pageItems);
          }
          if (merged.upTo === undefined) break;
          after = merged.upTo;
        }
        if (buffer.length > 0) yield buffer;
      },
      close,
    };
  }

  // -------------------------------------------------------------------------------------
  // Writes.
  // -------------------------------------------------------------------------------------

  /**
   * Checked and encoded (copied) now, against the state every earlier call leaves, and sent
   * at once; batches take effect in call order. Resolves once Redis confirmed the script
   * (and, in 'waitaof' mode, its fsync).
   */
  async writeBatch(ops: readonly BatchOp[]): Promise<BatchResult> {
    this.checkWritable();
    if (ops.length === 0) return { deletes: [] };
    const plan = this.plan(ops);
    const reply = (await this.send(plan)) as number[];
    if (!Array.isArray(reply) || reply.length !== plan.deletes.length) {
      throw this.breakWith(new StorageFailureError(`${this.where}: a write script answered ${JSON.stringify(reply)}`));
    }
    return { deletes: plan.deletes.map((d, i) => ({ partition: d.partition, seq: d.seq, existed: reply[i] === 1 })) };
  }

  async installSnapshot(
    partition: PartitionId,
    applied: LogPosition,
    items: AsyncIterable<readonly SnapshotItem[]>,
    dedup: readonly DedupRecord[] = [],
  ): Promise<void> {
    this.checkWritable();
    checkPartition(partition);
    if (this.installing.has(partition)) {
      throw new InvariantViolation(`partition ${partition}: installSnapshot while another install is running`);
    }
    checkDedupTable(partition, applied, dedup);
    const generation = this.nextGeneration++;
    const p = String(partition);
    const g = String(generation);
    this.installing.add(partition);
    try {
      // S10: the dedup table is staged under the new generation too, so the switch below
      // installs both, and an interrupted install leaves only an orphan.
      for (let i = 0; i < dedup.length; i += STAGE_MAX_ITEMS) {
        const args: Arg[] = [];
        for (const r of dedup.slice(i, i + STAGE_MAX_ITEMS)) {
          args.push(r.clientId, dedupPrefix(r.requestSeq, r.seq) + (r.existed === undefined ? '' : r.existed ? '1' : '0'));
        }
        await this.stage(p, g, 'u', args);
      }
      let staged: Arg[] = [];
      let stagedBytes = 0;
      let previousKey: Uint8Array | undefined;
      // Bounded by the caller's iterator; at most one stage (8 MiB) is held in memory.
      for await (const page of items) {
        for (const item of page) {
          checkSnapshotItem(partition, applied, previousKey, item);
          checkKey(partition, item.key, REDIS_MAX_KEY_BYTES);
          const key = Buffer.from(item.key);
          staged.push(key, encodeStoredValue(item.key, item.version, item.value));
          stagedBytes += key.length + item.value.length + 8;
          previousKey = key;
          if (staged.length / 2 >= STAGE_MAX_ITEMS || stagedBytes >= STAGE_MAX_BYTES) {
            await this.stage(p, g, 'd', staged);
            staged = [];
            stagedBytes = 0;
          }
        }
      }
      if (staged.length > 0) await this.stage(p, g, 'd', staged);
      // S11: the switch is one write script: state, applied, log base, empty log, old data released.
      this.checkWritable();
      const before = this.pending.get(partition);
      const after: PartState = { meta: before?.meta ?? null, applied, logBase: applied, logLast: applied, generation, runs: [] };
      const fields = stateFields(after);
      const args: Arg[] = ['W', p, g, before ? String(before.generation) : '', 'S', p, String(fields.length / 2), ...fields];
      await this.send({ args, states: new Map([[partition, after]]), deletes: [], nextGeneration: this.nextGeneration });
    } catch (err) {
      // Never the installed generation: the script checks (the switch may have run even if it failed here).
      await this.discard(p, g);
      throw err;
    } finally {
      this.installing.delete(partition);
    }
  }

  close(): Promise<void> {
    this.closePromise ??= this.shutDown();
    return this.closePromise;
  }

  private async shutDown(): Promise<void> {
    this.closing = true;
    // Writes already sent complete (or fail) first, as on lmdb.
    await this.lastWrite.then(
      () => undefined,
      () => undefined, // its caller got the failure
    );
    for (const sid of [...this.openSnapshots]) await this.closeSnapshot(sid);
    if (this.redis.status === 'ready') {
      try {
        await this.redis.quit();
      } catch (err) {
        // Redis went away while we said goodbye: nothing is left to flush on our side.
        noteError(this.redis, err);
      }
    }
    this.redis.disconnect();
  }

  // -------------------------------------------------------------------------------------
  // Internals.
  // -------------------------------------------------------------------------------------

  private checkOpen(): void {
    if (this.closing) throw new StorageFailureError('the redis backend is closed');
  }

  private checkWritable(): void {
    this.checkOpen();
    if (this.broken) {
      throw new StorageFailureError(`the redis backend at ${this.where} stopped writing after a write whose outcome is unknown (${this.broken.message}); reopen it to reload its state`, {
        cause: this.broken,
      });
    }
    if (this.redis.status !== 'ready') {
      const why = this.lastError ? `: ${this.lastError.message}` : '';
      throw new StorageFailureError(`Redis at ${this.where} is not reachable (${this.redis.status})${why}`);
    }
  }

  private breakWith(err: StorageFailureError): StorageFailureError {
    this.broken ??= err;
    return err;
  }

  /** A read command; Redis' errors become StorageFailureErrors. */
  private async read(command: Promise<unknown>): Promise<unknown> {
    try {
      return await command;
    } catch (err) {
      throw this.failure('read', err);
    }
  }

  private failure(what: string, err: unknown): StorageFailureError {
    if (err instanceof StorageFailureError) return err;
    const message = messageOf(err);
    if (message.includes('DSCORRUPT')) return new CorruptRecordError(`${this.where}: ${message}`, { cause: err });
    return new StorageFailureError(`${what} on Redis at ${this.where} failed: ${message}`, { cause: err });
  }

  /**
   * Sends a write script planned on `pending`, and updates `pending` at once so the next
   * plan builds on it. Any failure after sending breaks the backend: the script may or may
   * not have run.
   */
  private send(plan: Plan): Promise<unknown> {
    if (this.writesInFlight >= MAX_WRITES_IN_FLIGHT) {
      return Promise.reject(new OverloadedError(`${this.writesInFlight} storage writes in flight to Redis`));
    }
    const expected = this.batchCount;
    const command = this.redis.dsWriteBuffer(this.owner, String(expected), String(expected + 1), String(plan.nextGeneration), ...plan.args);
    const fsync = this.durability === 'waitaof' ? this.redis.call('WAITAOF', '1', '0', String(this.commandTimeoutMs)) : undefined;
    this.batchCount = expected + 1;
    this.nextGeneration = Math.max(this.nextGeneration, plan.nextGeneration);
    for (const [p, s] of plan.states) {
      if (s === null) this.pending.delete(p);
      else this.pending.set(p, s);
    }
    this.writesInFlight += 1;
    const done = (async () => {
      try {
        const [reply, synced] = await Promise.allSettled([command, fsync]);
        if (reply.status === 'rejected') throw reply.reason;
        if (synced.status === 'rejected') throw synced.reason;
        if (fsync !== undefined) {
          const local = Array.isArray(synced.value) ? Number(synced.value[0]) : 0;
          if (local < 1) throw new Error(`WAITAOF answered ${JSON.stringify(synced.value)}: the write is not known to be on disk`);
        }
        // Confirmed (replies come in order, so `committed` moves in call order too).
        for (const [p, s] of plan.states) {
          if (s === null) this.committed.delete(p);
          else this.committed.set(p, s);
        }
        return reply.value;
      } catch (err) {
        throw this.breakWith(this.failure('a write', err));
      } finally {
        this.writesInFlight -= 1;
      }
    })();
    this.lastWrite = done;
    return done;
  }

  /** Stages snapshot data or dedup records under a generation nobody reads yet. */
  private async stage(p: string, g: string, kind: 'd' | 'u', pairs: Arg[]): Promise<void> {
    this.checkWritable();
    try {
      await this.redis.dsStageBuffer(this.owner, p, g, kind, ...pairs);
    } catch (err) {
      // Not a fence: staged data changes nothing until the switch, so the backend goes on.
      throw this.failure('staging a snapshot', err);
    }
  }

  /** Best effort: an orphan left behind is deleted at the next open. */
  private async discard(p: string, g: string): Promise<void> {
    if (this.redis.status !== 'ready') return;
    try {
      await this.redis.dsDiscardBuffer(this.owner, p, g);
    } catch (err) {
      noteError(this.redis, err);
    }
  }

  /** Best effort: pins and pre-images left behind are deleted at the next open. */
  private async closeSnapshot(sid: string): Promise<void> {
    this.openSnapshots.delete(sid);
    if (this.redis.status !== 'ready') return;
    try {
      await this.redis.dsSnapCloseBuffer(this.owner, sid);
    } catch (err) {
      noteError(this.redis, err);
    }
  }

  /**
   * Checks `ops` against `pending` (the same preconditions as memory and lmdb) and encodes
   * them as one write script. Throws, leaving everything as it was, on a violation.
   */
  private plan(ops: readonly BatchOp[]): Plan {
    const view = new Map<PartitionId, PartState | null>();
    const stateOf = (p: PartitionId): PartState | undefined => (view.has(p) ? (view.get(p) ?? undefined) : this.pending.get(p));
    let nextGeneration = this.nextGeneration;
    const dirty = new Set<PartitionId>();
    const args: Arg[] = [];
    const deletes: Array<{ partition: PartitionId; seq: Seq }> = [];
    const existing = (p: PartitionId): PartState => {
      checkPartition(p);
      const s = stateOf(p);
      if (s) return s;
      const created: PartState = { meta: null, applied: ZERO_POSITION, logBase: ZERO_POSITION, logLast: ZERO_POSITION, generation: nextGeneration++, runs: [] };
      view.set(p, created);
      dirty.add(p);
      return created;
    };
    for (const op of ops) {
      const p = op.partition;
      const ps = String(p);
      if (op.kind !== 'dropPartition') {
        const s = existing(p);
        checkBatchOp(op, s, REDIS_MAX_KEY_BYTES, (at) => epochAt(s, at));
      }
      switch (op.kind) {
        case 'appendLog': {
          const s = existing(p);
          const last = op.entries[op.entries.length - 1];
          if (last === undefined) break;
          args.push('L', ps, String(op.entries.length));
          for (const e of op.entries) args.push(encodeEntry(e));
          view.set(p, { ...s, logLast: { seq: last.seq, epoch: last.epoch }, runs: appendRuns(s.runs, op.entries) });
          break;
        }
        case 'truncateLogFrom': {
          const s = existing(p);
          if (op.fromSeq > s.logLast.seq) break;
          const from = Math.max(op.fromSeq, s.logBase.seq + 1);
          const logLast = from - 1 === s.logBase.seq ? s.logBase : { seq: toSeq(from - 1), epoch: epochAt(s, from - 1) };
          args.push('F', ps, String(from - s.logBase.seq - 1));
          view.set(p, { ...s, logLast, runs: runsBefore(s.runs, from) });
          break;
        }
        case 'truncateLogTo': {
          const s = existing(p);
          const drop = Math.min(op.base.seq, s.logLast.seq) - s.logBase.seq;
          if (drop > 0) args.push('T', ps, String(drop));
          const emptied = op.base.seq >= s.logLast.seq;
          view.set(p, { ...s, logBase: op.base, logLast: emptied ? op.base : s.logLast, runs: emptied ? [] : runsAfter(s.runs, op.base.seq) });
          dirty.add(p);
          break;
        }
        case 'apply': {
          const s = existing(p);
          const last = op.entries[op.entries.length - 1];
          if (last === undefined) break;
          args.push('A', ps, String(s.generation), String(op.entries.length));
          for (const e of op.entries) {
            const client = e.tag === undefined ? '' : e.tag.clientId;
            const rec = e.tag === undefined ? '' : dedupPrefix(e.tag.requestSeq, e.seq);
            if (e.op.kind === 'put') args.push('p', Buffer.from(e.op.key), encodeStoredValue(e.op.key, e.seq, e.op.value), client, rec);
            else if (e.op.kind === 'delete') {
              args.push('d', Buffer.from(e.op.key), '', client, rec);
              deletes.push({ partition: p, seq: e.seq });
            } else args.push('e', '', '', client, rec);
          }
          view.set(p, { ...s, applied: { seq: last.seq, epoch: last.epoch } });
          dirty.add(p);
          break;
        }
        case 'setMeta': {
          const s = existing(p);
          view.set(p, { ...s, meta: op.meta });
          dirty.add(p);
          break;
        }
        case 'dropPartition': {
          checkPartition(p);
          const s = stateOf(p);
          if (!s) break;
          args.push('X', ps, String(s.generation));
          view.set(p, null); // its data is released; a snapshot reading it keeps it until closed
          break;
        }
        default:
          return assertNever(op);
      }
    }
    for (const p of dirty) {
      const s = stateOf(p);
      if (!s) continue;
      const fields = stateFields(s);
      args.push('S', String(p), String(fields.length / 2), ...fields);
    }
    return { args, states: view, deletes, nextGeneration };
  }

  /** Loads every partition's state and its log's epochs, checking every record (S13). */
  private async load(parts: readonly string[]): Promise<void> {
    assert(parts.length <= MAX_PARTITIONS_AT_OPEN, `${parts.length} partitions in ${this.where}`);
    for (const ps of parts) {
      const partition = Number(ps) as PartitionId;
      const what = `${this.where} partition ${ps}`;
      if (!/^\d{1,10}$/.test(ps) || partition > MAX_PARTITION) throw new CorruptRecordError(`${this.where}: bad partition id '${ps}' in ds:parts`);
      const h = await this.redis.hgetall(`ds:p:${ps}`);
      const nums = [h.as, h.ae, h.bs, h.be, h.g].map((v) => (v !== undefined && /^\d{1,16}$/.test(v) ? Number(v) : NaN));
      if (!nums.every(isUint)) throw new CorruptRecordError(`${what}: bad state record ${JSON.stringify(h)}`);
      const [as, ae, bs, be, g] = nums as [number, number, number, number, number];
      const logBase: LogPosition = { seq: toSeq(bs), epoch: toEpoch(be) };
      let logLast = logBase;
      let runs: readonly EpochRun[] = [];
      let corrupt: string | undefined;
      const length = await this.redis.llen(`ds:l:${ps}`);
      for (let start = 0; start < length && corrupt === undefined; start += LOAD_CHUNK) {
        const records = await this.redis.lrangeBuffer(`ds:l:${ps}`, start, Math.min(start + LOAD_CHUNK, length) - 1);
        const entries: LogEntry[] = [];
        for (const [i, raw] of records.entries()) {
          const at = bs + start + i + 1;
          try {
            const entry = decodeEntry(raw, `${what} log entry ${at}`);
            if (entry.seq !== at) throw new CorruptRecordError(`${what}: log position ${at} holds entry ${entry.seq}`);
            entries.push(entry);
          } catch (err) {
            // S13: the partition opens, marked corrupt; its replica relearns it.
            if (!isCorruptRecord(err)) throw err;
            corrupt = err.message;
            break;
          }
        }
        const last = entries[entries.length - 1];
        if (last !== undefined) logLast = { seq: last.seq, epoch: last.epoch };
        runs = appendRuns(runs, entries);
      }
      const state: PartState = {
        meta: h.m === undefined ? null : decodeMeta(h.m, what),
        applied: { seq: toSeq(as), epoch: toEpoch(ae) },
        logBase,
        logLast,
        generation: g,
        runs,
        ...(corrupt === undefined ? {} : { corrupt }),
      };
      this.pending.set(partition, state);
      this.committed.set(partition, state);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function emptySnapshot(): Snapshot {
  return {
    applied: ZERO_POSITION,
    dedup: [],
    async *items(pageItems: number): AsyncIterable<readonly SnapshotItem[]> {
      checkPageLimit('snapshot items', pageItems);
    },
    async close(): Promise<void> {},
  };
}

/**
 * One page of a point-in-time view: the live keys and the snapshot's pre-images, each in
 * key order, merged up to the last key both lists are known complete to. A pre-image wins
 * over the live value; an empty one marks a key that was absent. Returns the items and the
 * key to continue after (undefined when the view is exhausted).
 */
function mergePage(
  live: readonly Buffer[],
  liveDone: boolean,
  pre: readonly Buffer[],
  preDone: boolean,
  applied: LogPosition,
  partition: PartitionId,
): { items: SnapshotItem[]; upTo: Uint8Array | undefined } {
  const lastLive = liveDone ? undefined : live[live.length - 2];
  const lastPre = preDone ? undefined : pre[pre.length - 2];
  let upTo: Buffer | undefined;
  if (lastLive !== undefined && lastPre !== undefined) upTo = compareBytes(lastLive, lastPre) <= 0 ? lastLive : lastPre;
  else upTo = lastLive ?? lastPre;
  const within = (k: Buffer): boolean => upTo === undefined || compareBytes(k, upTo) <= 0;
  const items: SnapshotItem[] = [];
  let i = 0;
  let j = 0;
  const what = `partition ${partition} snapshot`;
  // Bounded by the two lists.
  while (i < live.length || j < pre.length) {
    const lk = i < live.length ? live[i]! : undefined;
    const pk = j < pre.length ? pre[j]! : undefined;
    const order = lk === undefined ? 1 : pk === undefined ? -1 : compareBytes(lk, pk);
    const key = order <= 0 ? lk! : pk!;
    if (!within(key)) break;
    let raw: Buffer;
    if (order < 0) {
      raw = live[i + 1]!;
      i += 2;
    } else {
      raw = pre[j + 1]!;
      j += 2;
      if (order === 0) i += 2; // the pre-image is the value as of the snapshot
      if (raw.length === 0) continue; // absent when the snapshot was taken
    }
    const v = decodeValue(key, raw, what);
    assert(v.version <= applied.seq, `${what}: an item of version ${v.version} above the snapshot's seq ${applied.seq} has no pre-image`);
    items.push({ key: bytesOf(key), value: v.value, version: v.version });
  }
  return { items, upTo: upTo === undefined ? undefined : bytesOf(upTo) };
}

/** Per client, the last error it reported; ioredis also wants an 'error' listener at all times. */
const lastErrors = new WeakMap<Redis, Error>();

function noteError(redis: Redis, err: unknown): void {
  lastErrors.set(redis, err instanceof Error ? err : new Error(String(err)));
}

function createClient(url: RedisUrl, owner: string, commandTimeoutMs: number): Client {
  const redis = new Redis({
    host: url.host,
    port: url.port,
    db: url.db,
    ...(url.username === undefined ? {} : { username: url.username }),
    ...(url.password === undefined ? {} : { password: url.password }),
    protocol: 2,
    lazyConnect: true,
    connectionName: `dstore-${owner}`,
    // Never queue a command while Redis is away, never re-send one: a write must either be
    // confirmed or fail (and then break the backend), so nothing acknowledged depends on a
    // write Redis did not confirm.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    commandTimeout: commandTimeoutMs,
    connectTimeout: Math.min(commandTimeoutMs, 10_000),
    retryStrategy: (times: number) => Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** Math.min(times - 1, 6)) + Math.floor(Math.random() * 50),
    reconnectOnError: null,
    disableClientInfo: true,
  }) as Client;
  for (const [name, lua] of Object.entries(SCRIPTS)) redis.defineCommand(name, { numberOfKeys: 0, lua });
  redis.on('error', (err: unknown) => noteError(redis, err));
  return redis;
}

/** Waits for the connection, which ioredis retries with backoff, up to `ms`. */
async function connectWithin(redis: Client, ms: number, where: string): Promise<void> {
  let lastError: unknown;
  const onError = (err: unknown): void => {
    lastError = err;
  };
  redis.on('error', onError);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        const why = lastError === undefined ? '' : `: ${messageOf(lastError)}`;
        reject(new StorageFailureError(`cannot reach Redis at ${where} within ${ms} ms${why}`, { cause: lastError }));
      }, ms);
      const onReady = (): void => {
        cleanup();
        resolve();
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        redis.off('ready', onReady);
      };
      redis.once('ready', onReady);
      redis.connect().catch(onError); // a failed first attempt: ioredis keeps retrying
    });
  } finally {
    redis.off('error', onError);
  }
}

/** CONFIG GET one parameter; undefined when CONFIG is not allowed (managed Redis, ACLs). */
async function configValue(redis: Client, name: string): Promise<string | undefined> {
  try {
    const reply = (await redis.config('GET', name)) as unknown;
    return Array.isArray(reply) && typeof reply[1] === 'string' ? reply[1] : undefined;
  } catch {
    // CONFIG is disallowed here: the setting is unknown, and the caller decides what that means.
    return undefined;
  }
}

/**
 * S14. Eviction would silently drop dstore's data in any sync mode. With sync 'batch',
 * Redis must fsync before it answers (appendfsync always) or offer WAITAOF (7.2+, AOF on).
 */
async function checkConfig(redis: Client, sync: 'batch' | 'none', where: string): Promise<Durability> {
  const policy = await configValue(redis, 'maxmemory-policy');
  if (policy !== undefined && policy.startsWith('allkeys-')) {
    throw new RedisSetupError(
      `Redis at ${where} runs maxmemory-policy ${policy}, so it may evict dstore's data when full; ` +
        `set maxmemory-policy noeviction (redis.conf, or CONFIG SET maxmemory-policy noeviction): a full Redis then fails writes instead`,
    );
  }
  if (sync === 'none') return 'none';
  const appendonly = await configValue(redis, 'appendonly');
  const appendfsync = await configValue(redis, 'appendfsync');
  if (appendonly === 'yes' && appendfsync === 'always') return 'fsync-always';
  if (appendonly !== 'no' && (await waitaofWorks(redis))) return 'waitaof';
  throw new RedisNotDurableError(
    `Redis at ${where} answers before its writes are on disk (appendonly ${appendonly ?? 'unknown'}, appendfsync ${appendfsync ?? 'unknown'}), ` +
      `but --sync batch acknowledges a write only once it is durable (DESIGN S14). Start redis-server with --appendonly yes --appendfsync always ` +
      `(redis.conf: appendonly yes, appendfsync always; or on the running server: CONFIG SET appendonly yes, then CONFIG SET appendfsync always), ` +
      `or use Redis 7.2 or newer with appendonly yes (dstore then waits for each write with WAITAOF), or run with --sync none to rely on the other replicas`,
  );
}

/** WAITAOF 1 0: Redis 7.2+ with the AOF on confirms a local fsync. */
async function waitaofWorks(redis: Client): Promise<boolean> {
  try {
    const reply = (await redis.call('WAITAOF', '1', '0', '1000')) as unknown;
    return Array.isArray(reply) && Number(reply[0]) >= 1;
  } catch {
    // An unknown command (Redis before 7.2) or the AOF is off: WAITAOF cannot help.
    return false;
  }
}

/**
 * Each storage server needs its own database: refuse one another dstore process is
 * connected to (best effort: CLIENT LIST may be disallowed). The `ds:owner` fence stops a
 * second writer anyway; this turns the mistake into a clear error at start.
 */
async function checkNoOtherOwner(redis: Client, owner: string, url: RedisUrl, where: string): Promise<void> {
  let list: string;
  try {
    list = String(await redis.client('LIST'));
  } catch {
    return; // CLIENT LIST is disallowed here: the owner fence still protects the data
  }
  for (const line of list.split('\n')) {
    const fields = new Map(line.trim().split(' ').map((f) => [f.slice(0, f.indexOf('=')), f.slice(f.indexOf('=') + 1)] as const));
    const name = fields.get('name') ?? '';
    if (name.startsWith('dstore-') && name !== `dstore-${owner}` && fields.get('db') === String(url.db)) {
      throw new RedisSetupError(
        `another dstore process (connection from ${fields.get('addr') ?? '?'}) is using Redis ${where}; ` +
          `every storage server needs its own Redis database: give this one another database (redis://HOST:PORT/N) or another Redis`,
      );
    }
  }
}

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
export { REDIS_MAX_KEY_BYTES } from './redis/layout.js';
export { RedisSetupError, RedisNotDurableError } from './redis/connection.js';
export type { RedisBackendOptions } from './redis/backend.js';
export { RedisBackend } from './redis/backend.js';

/**
 * The lmdb backend (DESIGN §8), the default: embedded and durable. One LMDB environment
 * per data dir (`<dataDir>/lmdb`) holds every partition's data, log and metadata, so one
 * LMDB transaction moves all of them together.
 *
 * Layout (named databases, binary keys compared as bytes, big-endian numbers so they sort):
 * - `part`: u32 partition → state record: meta, applied, log base, data generation, key count.
 * - `log`:  u32 partition · u64 seq → crc32 · msgpack entry (S13: checked on every read).
 * - `data`: u32 partition · u32 generation · key → crc32 · msgpack [version, value], the
 *   checksum bound to the key (log-record.ts, S13: checked by every get, scan and snapshot).
 * - `dedup`: u32 partition · u32 generation · client id (UTF-8) → crc32 · msgpack
 *   [requestSeq, seq, existed|null] (S10: a client's last applied write).
 * - `sys`:  'format' → format version of this layout (2; see `upgradeFrom1` for 1, whose
 *   data values were u64 version · value bytes with no checksum); 'upgrade' → the upgrade's
 *   cursor while it runs; 'upgrade-corrupt:' · u32 partition · u32 generation → why the
 *   upgrade found a record there it could not read (S13, lmdb/corrupt-markers.ts).
 *
 * Generations make `installSnapshot` (S11) and `dropPartition` O(1) at the moment they take
 * effect: a snapshot (data and dedup table) is staged under a fresh generation in as many
 * transactions as it needs, then one transaction switches the partition's state record to
 * it (and empties its log). Data and dedup records under any generation other than the
 * current one are garbage: a background collector deletes them in bounded chunks, and on
 * open it finds what a crash left behind, so a half-installed snapshot, dedup table
 * included, is discarded on restart (S11). `apply` writes a tagged entry's dedup record
 * (one put) in the batch's own transaction, next to the data.
 *
 * Writes: `writeBatch` calls queue up; the queue runs one LMDB write transaction at a time
 * holding every batch queued meanwhile (group commit: one commit, one fsync). Each batch
 * runs in its own child transaction, so a batch whose preconditions fail (see
 * preconditions.ts) is rolled back alone and rejected, while the others commit.
 * Batches take effect in call order. With sync 'batch' the commit includes the fsync
 * (overlappingSync off), so a resolved batch is durable; with 'none' LMDB runs noSync.
 *
 * Reads are LMDB's synchronous reads; per-partition positions are cached in memory and
 * updated once a transaction commits. A snapshot holds an LMDB read transaction.
 */
export { LMDB_MAX_KEY_BYTES } from './lmdb/layout.js';
export { LmdbBackend } from './lmdb/backend.js';
export { CorruptRecordError } from './log-record.js';

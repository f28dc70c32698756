/**
 * The lmdb backend (DESIGN §8), the default: embedded and durable. Format 3: a data dir
 * holds an LMDB environment (`<dataDir>/lmdb`: the applied state) and a segment log
 * (`<dataDir>/log`: every partition's replica log, log-store.ts over segment-log.ts).
 *
 * LMDB layout (named databases, binary keys compared as bytes, big-endian numbers so they sort):
 * - `part`: u32 partition → state record: applied position, data generation, key count (its
 *   metadata and log base fields, from format 2, are written but not read: the log holds them).
 * - `data`: u32 partition · u32 generation · key → crc32 · msgpack [version, value], the
 *   checksum bound to the key (log-record.ts, S13: checked by every get, scan and snapshot).
 * - `dedup`: u32 partition · u32 generation · client id (UTF-8) → crc32 · msgpack
 *   [requestSeq, seq, existed|null] (S10: a client's last applied write).
 * - `log`: format 2's log (u32 partition · u64 seq → checksummed entry), moved to the segment
 *   log at open and deleted.
 * - `sys`: 'format' → 3; 'upgrade' → the format-1 upgrade's cursor while it runs;
 *   'upgrade-corrupt:' · u32 partition · u32 generation → why the format-1 upgrade found a
 *   record there it could not read (S13, lmdb/corrupt-markers.ts).
 *
 * Generations make `installSnapshot` (S11) and `dropPartition` O(1) at the moment they take
 * effect: a snapshot (data and dedup table) is staged under a fresh generation in as many
 * transactions as it needs, then the log is emptied and one transaction switches the
 * partition's state record to it. Data and dedup records under any generation other than
 * the current one are garbage: a background collector deletes them in bounded chunks, and on
 * open it finds what a crash left behind, so a half-installed snapshot, dedup table
 * included, is discarded on restart (S11).
 *
 * Writes (lmdb/backend.ts, `writeBatch`): a batch is checked and takes effect in memory in
 * call order; it resolves when its log half is durable (one append and one fdatasync for
 * every batch written meanwhile); its applies are committed to LMDB afterwards in synced
 * transactions, one at a time, each holding every apply queued meanwhile. The log keeps
 * every entry above what LMDB holds durably, so a crash loses no acknowledged write: the
 * replica re-applies from the log. With sync 'none' neither is synced.
 *
 * Reads: `get` answers from the accepted applies not yet in LMDB, else LMDB; `scan`,
 * `snapshot` and `dedupTable` wait for the applies first; `readLog` reads the segment log.
 */
export { LMDB_MAX_KEY_BYTES } from './lmdb/layout.js';
export { LmdbBackend } from './lmdb/backend.js';
export { CorruptRecordError } from './log-record.js';

/**
 * The exit codes of `dstore backup` and `dstore restore` and their --help text: a module without
 * imports, so the program's --help does not load the client.
 */
export const EXIT_BACKUP_UNUSABLE = 3;
export const EXIT_TARGET_NOT_EMPTY = 4;
export const EXIT_PARTIAL_RESTORE = 5;

export const BACKUP_EXIT_HELP = `
Exit codes: 0 the backup is complete (DIR/manifest.json written last); 1 the cluster failed
(e.g. UNAVAILABLE: a partition's snapshot could not be taken in 8 attempts; the partition files
written are removed); 2 bad input (a bad flag, DIR not empty or not a directory).`;

export const RESTORE_EXIT_HELP = `
Checks the whole backup first (manifest, every file's size, sha256 and frame CRCs, and the
digests recomputed from the items), refuses a cluster that holds any key, loads the keys with
puts, then compares the cluster's content digest (keys and values, summed over partitions)
with the backup's. Versions and the dedup table are not restored: writes get new versions.
Exit codes: 0 restored and verified; 1 the cluster failed before anything was written
(e.g. UNAVAILABLE); 2 bad input (a bad flag); 3 the backup is not usable (missing or invalid
manifest, a file missing, truncated or corrupt: named with its partition), nothing written;
4 the target cluster is not empty, nothing written; 5 the cluster holds a partial or different
restore (loading stopped, or its digest differs from the backup's): wipe it and restore again.`;

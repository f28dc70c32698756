/**
 * Memory of a server process from /proc (Linux) and the size of its data dir, for
 * `bench:size`. From `/proc/<pid>/status`: VmRSS (resident set), RssAnon (anonymous pages:
 * the JS heap, malloc, buffers), RssFile (file-backed pages: for lmdb mostly its mmap'd data
 * file, page cache the kernel may reclaim) and VmHWM (the peak RSS). The data dir is summed
 * like `du`: apparent size (st_size) and allocated blocks (st_blocks × 512), with the LMDB
 * data file apart (its apparent size is its high-water mark, sparse until written).
 */
import { type Dirent, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';

/** Memory figures of one process, in KiB as /proc gives them. */
export interface ProcMemory {
  readonly vmRssKiB: number;
  readonly rssAnonKiB: number;
  readonly rssFileKiB: number;
  readonly vmHwmKiB: number;
}

const STATUS_FIELDS = { VmRSS: 'vmRssKiB', RssAnon: 'rssAnonKiB', RssFile: 'rssFileKiB', VmHWM: 'vmHwmKiB' } as const;

/** The memory fields of a /proc/<pid>/status text; throws when one is missing. */
export function parseStatusMemory(status: string): ProcMemory {
  const out: Record<string, number> = {};
  for (const line of status.split('\n')) {
    const m = /^(\w+):\s+(\d+)\s+kB$/.exec(line.trim());
    if (m === null) continue;
    const field = STATUS_FIELDS[m[1] as keyof typeof STATUS_FIELDS];
    if (field !== undefined) out[field] = Number(m[2]);
  }
  for (const [name, field] of Object.entries(STATUS_FIELDS)) {
    if (out[field] === undefined) throw new Error(`no ${name} in /proc/<pid>/status`);
  }
  return out as unknown as ProcMemory;
}

/** Memory of process `pid`; undefined when /proc cannot be read (not Linux, the process is gone). */
export function sampleMemory(pid: number | undefined): ProcMemory | undefined {
  if (pid === undefined) return undefined;
  try {
    return parseStatusMemory(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return undefined; // no /proc here, or the server exited: no memory figure
  }
}

/** A data dir's size in bytes: every regular file under it, and the LMDB data file alone. */
export interface DirUsage {
  readonly apparentBytes: number;
  readonly allocatedBytes: number;
  readonly lmdbApparentBytes: number;
  readonly lmdbAllocatedBytes: number;
}

/** LMDB's data file: `lmdb` (the storage server opens it without a subdir) or `data.mdb`. */
const isLmdbDataFile = (path: string): boolean => basename(path) === 'lmdb' || basename(path) === 'data.mdb';

/** Sums the regular files under `dir` (symbolic links not followed); a file that vanishes meanwhile is skipped. */
export function dirUsage(dir: string): DirUsage {
  let apparentBytes = 0;
  let allocatedBytes = 0;
  let lmdbApparentBytes = 0;
  let lmdbAllocatedBytes = 0;
  const walk = (d: string): void => {
    let entries: Dirent[];
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return; // gone or unreadable
    }
    for (const e of entries) {
      const path = join(d, e.name);
      if (e.isDirectory()) {
        walk(path);
        continue;
      }
      if (!e.isFile()) continue;
      try {
        const st = lstatSync(path);
        apparentBytes += st.size;
        allocatedBytes += st.blocks * 512;
        if (isLmdbDataFile(path)) {
          lmdbApparentBytes += st.size;
          lmdbAllocatedBytes += st.blocks * 512;
        }
      } catch {
        // removed between readdir and lstat (a rotated log): not counted
      }
    }
  };
  walk(dir);
  return { apparentBytes, allocatedBytes, lmdbApparentBytes, lmdbAllocatedBytes };
}

/**
 * S13, lmdb: the one place that reads and writes the format upgrade's corrupt markers. The
 * backend reads them at open with the log checks and presents both the same way, as a cached
 * state's `corrupt` (partition-cache.ts): `partitions()` names the partition corrupt either
 * way. (The replica's own marker travels in its metadata, in the state record: layout.ts.)
 *
 * `sys` keys: 'upgrade-corrupt:' · u32 partition · u32 generation → why the format-1 upgrade
 * found a data record there it could not read. Written once, by the upgrade; honoured at
 * every open while the partition still has that generation; stale (deleted) once the
 * partition's data lives under another one.
 */
import type { Database } from 'lmdb';
import type { PartitionId } from '../../core/types.js';

const UPGRADE_CORRUPT_PREFIX = Buffer.from('upgrade-corrupt:');

function upgradeCorruptKey(partition: number, generation: number): Buffer {
  const key = Buffer.alloc(UPGRADE_CORRUPT_PREFIX.length + 8);
  UPGRADE_CORRUPT_PREFIX.copy(key, 0);
  key.writeUInt32BE(partition, UPGRADE_CORRUPT_PREFIX.length);
  key.writeUInt32BE(generation, UPGRADE_CORRUPT_PREFIX.length + 4);
  return key;
}

/** Marks the partition and generation of the data key `dataKeyBytes` corrupt (in the caller's transaction). */
export function writeUpgradeMarker(sysDb: Database<Buffer, Buffer>, dataKeyBytes: Buffer, why: string): void {
  sysDb.putSync(upgradeCorruptKey(dataKeyBytes.readUInt32BE(0), dataKeyBytes.readUInt32BE(4)), Buffer.from(why));
}

/**
 * Every upgrade marker: `marked`, each partition whose current generation (`generationOf`) a
 * marker names, with the reason to report; `stale`, the keys of the others, to delete.
 */
export function readUpgradeMarkers(
  sysDb: Database<Buffer, Buffer>,
  generationOf: (partition: PartitionId) => number | undefined,
): { marked: Array<[PartitionId, string]>; stale: Buffer[] } {
  const marked: Array<[PartitionId, string]> = [];
  const stale: Buffer[] = [];
  const range = sysDb.getRange({
    start: upgradeCorruptKey(0, 0),
    end: Buffer.concat([UPGRADE_CORRUPT_PREFIX, Buffer.alloc(9, 0xff)]),
  });
  for (const { key, value } of range) {
    if (key.length !== UPGRADE_CORRUPT_PREFIX.length + 8) continue;
    const partition = key.readUInt32BE(UPGRADE_CORRUPT_PREFIX.length) as PartitionId;
    const generation = key.readUInt32BE(UPGRADE_CORRUPT_PREFIX.length + 4);
    if (generationOf(partition) !== generation) stale.push(Buffer.from(key));
    else marked.push([partition, `partition ${partition}: ${Buffer.from(value).toString()}`]);
  }
  return { marked, stale };
}

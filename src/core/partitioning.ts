/**
 * DESIGN §3: a key belongs to partition CRC-32(key bytes) mod P (a reserved key of §16, the
 * key it names). The hash is stable
 * across versions and machines; P is fixed when the cluster is created.
 */
import { routeOf } from './txn-keys.js';
import { type NodeId, type PartitionId, partitionId, assert } from './types.js';

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (IEEE 802.3), as zlib computes it. */
export function crc32(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) {
    crc = (CRC_TABLE[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8)) >>> 0;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** A reserved key (txn-keys.ts) goes with the user key it names. */
export function partitionOf(key: Uint8Array, partitions: number): PartitionId {
  assert(partitions >= 1, 'partitions >= 1');
  return partitionId(crc32(routeOf(key)) % partitions);
}

/**
 * Initial placement: partition p's primary is nodes[p mod N] and its secondaries the next
 * R-1 nodes around the ring, so primaries (and replicas) are spread evenly (§3).
 */
export function initialPlacement(
  nodes: readonly NodeId[],
  partitions: number,
  replicas: number,
): Array<{ primary: NodeId; secondaries: NodeId[] }> {
  assert(nodes.length >= replicas, 'enough nodes for the replication factor');
  assert(replicas >= 1, 'replicas >= 1');
  const sorted = [...nodes].sort();
  const out: Array<{ primary: NodeId; secondaries: NodeId[] }> = [];
  for (let p = 0; p < partitions; p++) {
    const members: NodeId[] = [];
    for (let r = 0; r < replicas; r++) members.push(sorted[(p + r) % sorted.length]!);
    out.push({ primary: members[0]!, secondaries: members.slice(1) });
  }
  return out;
}

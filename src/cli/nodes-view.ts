/**
 * What `nodes` shows: the nameserver's view, with each live storage server's key count
 * read from the server itself. The nameserver only knows the count of the last heartbeat
 * (up to two heartbeats old), so right after an insert KEYS said 0 (issue 9); a `dump` call
 * with limit 0 returns the count now. A server that does not answer within a short bound
 * keeps the heartbeat's count.
 */
import type { ClusterInfo, Db } from '../client/api.js';

/** Bound on asking each storage server for its key count, in ms (`nodes` must stay quick). */
export const FRESH_KEYS_TIMEOUT_MS = 500;

export async function nodesWithFreshKeys(db: Db): Promise<ClusterInfo> {
  const info = await db.nodes();
  if (!info.nodes.some((n) => n.role === 'storage' && n.state === 'alive')) return info;
  let fresh: Map<string, number>;
  try {
    const dumps = await db.dump({ limit: 0, timeoutMs: FRESH_KEYS_TIMEOUT_MS });
    fresh = new Map(dumps.filter((d) => d.error === undefined).map((d) => [d.nodeId, d.keyCount]));
  } catch {
    // The heartbeat counts are still right, only older: show them rather than fail `nodes`
    // (db.dump reports a server's failure in its entry; this is the nameserver call failing).
    return info;
  }
  return {
    ...info,
    nodes: info.nodes.map((n) => {
      const keys = n.role === 'storage' && n.state === 'alive' ? fresh.get(n.id) : undefined;
      return keys === undefined ? n : { ...n, keys };
    }),
  };
}

/**
 * The cluster's limits as the nameserver's map reports them to clients (messages.ts
 * `ClusterLimits`), derived from what each storage server said when it registered.
 */
import { defaultLimits } from '../core/limits.js';
import type { ClusterLimits } from './messages.js';

/**
 * `{ limits }` for the map reply, or `{}` while no known storage server reported its
 * --max-value-bytes. Values: the smallest (a value every replica accepts); frames: the
 * largest (a reply any of them may send).
 */
export function clusterLimits(
  nodeIds: Iterable<string>,
  maxValueBytesOf: ReadonlyMap<string, number>,
): { limits?: ClusterLimits } {
  let smallest: number | undefined;
  let largest: number | undefined;
  for (const id of nodeIds) {
    const v = maxValueBytesOf.get(id);
    if (v === undefined) continue;
    smallest = smallest === undefined ? v : Math.min(smallest, v);
    largest = largest === undefined ? v : Math.max(largest, v);
  }
  if (smallest === undefined || largest === undefined) return {};
  const d = defaultLimits({ maxValueBytes: largest });
  return { limits: { maxKeyBytes: d.maxKeyBytes, maxValueBytes: smallest, maxFrameBytes: d.maxFrameBytes } };
}

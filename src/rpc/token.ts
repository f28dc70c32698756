/**
 * The cluster token (DESIGN §12): a shared secret every call and peer message carries when
 * the cluster has one. Compared in constant time: both sides are hashed to 32 bytes first,
 * so neither the content nor the length of the expected token leaks through timing.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

/** True when `given` is the cluster's token, or when the cluster has none (undefined or ''). */
export function tokenMatches(expected: string | undefined, given: string | undefined): boolean {
  if (expected === undefined || expected === '') return true;
  if (given === undefined) return false;
  const a = createHash('sha256').update(expected, 'utf8').digest();
  const b = createHash('sha256').update(given, 'utf8').digest();
  return timingSafeEqual(a, b);
}

/** The field to add to an outgoing call or message: `{ token }`, or nothing without a token. */
export function tokenField(token: string | undefined): { token?: string } {
  return token === undefined || token === '' ? {} : { token };
}

/** What a refused caller reads (its own side prints it with the code UNAUTHORIZED). */
export function unauthorizedMessage(who: string): string {
  return (
    `wrong or missing cluster token: ${who} refused the call (set --cluster-token ` +
    `or DSTORE_CLUSTER_TOKEN to the cluster's token)`
  );
}

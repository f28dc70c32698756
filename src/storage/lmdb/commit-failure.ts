/** What a failed lmdb commit reports: the disk error lmdb hangs on it. */
/**
 * A failed lmdb commit rejects with "Commit failed (see commitError for details)" and hangs
 * the real error (ENOSPC, EROFS, EIO) on `commitError`, a second promise lmdb rejects in the
 * same turn and never handles itself: unhandled, it would exit the process (issue 9). So it
 * is always handled here, and its error, when it has one by the next macrotask, is the cause
 * we report. Bounded: a commitError that never settles costs one setImmediate.
 */
export async function commitFailureCause(err: unknown): Promise<unknown> {
  const commitError = (err as { commitError?: unknown } | null)?.commitError;
  if (
    commitError === undefined ||
    commitError === null ||
    typeof (commitError as PromiseLike<unknown>).then !== 'function'
  )
    return err;
  const real = Promise.resolve(commitError as PromiseLike<unknown>).then(
    () => err,
    (e: unknown) => e,
  );
  const nextTurn = new Promise<unknown>((resolve) => setImmediate(() => resolve(err)));
  return Promise.race([real, nextTurn]);
}

/** "No space left on device (ENOSPC)": the engine's message and, when known, its errno name. */
export function describeCause(cause: unknown): string {
  if (!(cause instanceof Error)) return String(cause);
  const code = (cause as { code?: unknown }).code;
  const name = typeof code === 'number' ? ERRNO_NAMES[code] : typeof code === 'string' ? code : undefined;
  const message = cause.message.split(':')[0] ?? cause.message;
  return name === undefined ? message : `${message} (${name})`;
}

/** lmdb reports system errors with a numeric errno; the ones a failing disk gives. */
export const ERRNO_NAMES: Readonly<Record<number, string>> = { 5: 'EIO', 28: 'ENOSPC', 30: 'EROFS', 122: 'EDQUOT' };

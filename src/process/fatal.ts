/**
 * How a process ends on a fatal error a library reported (STYLE §3: a broken invariant
 * crashes, loudly). Library code never calls `process.exit`: it takes an `onFatal` callback,
 * and the entry point (src/cli, a role's main.ts) passes this one.
 */

/** Exit code of a process that stopped on a bug or a storage that did not come back. */
export const FATAL_EXIT_CODE = 70;

/** Sets the exit code and exits after one turn, which gives the log a turn to write its last line. */
export function exitOnFatal(code = FATAL_EXIT_CODE): void {
  process.exitCode = code;
  setImmediate(() => process.exit(code));
}

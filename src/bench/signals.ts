/**
 * Ctrl-C for the benchmarks that start servers (`bench:compare`, `bench:size`): the first
 * SIGINT or SIGTERM stops what is running (`current()`) and lets the run end and report; a
 * second exits at once with 130, and the process-exit handlers kill what is still running.
 */
import { describeError } from '../cli/shell.js';

export interface StopSignals {
  /** Whether a stop was asked for. */
  readonly requested: () => boolean;
  /** Removes the handlers (at the end of the run). */
  dispose(): void;
}

export function handleStopSignals(
  err: NodeJS.WritableStream,
  current: () => (() => Promise<void>) | undefined,
): StopSignals {
  let stopRequested = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopRequested) {
      err.write(`\n${signal} again: exiting (exit handlers kill what is still running)\n`);
      process.exit(130);
    }
    stopRequested = true;
    err.write(`\n${signal}: stopping (again to exit at once)\n`);
    current()?.().catch((e: unknown) => err.write(`error while stopping: ${describeError(e)}\n`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    requested: () => stopRequested,
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

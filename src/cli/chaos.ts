/**
 * `dstore chaos`: runs one chaos run (src/chaos/run.ts), prints progress on stderr and the
 * report on stdout, and ends with the verdict's exit code: 0 ok, 1 a linearizability
 * violation, 3 inconclusive (the checker's budget ran out on some key), 4 a liveness
 * problem (the cluster did not settle after healing, a final read failed, or a node exited
 * on its own). SIGINT or SIGTERM stops the run, removes every process and namespace, and
 * exits 130.
 */
import type { ChaosOptions } from '../chaos/run.js';
import { CliExit } from './commands.js';

export async function runChaosCommand(o: ChaosOptions & { readonly seedGiven: boolean }): Promise<void> {
  const { runChaos } = await import('../chaos/run.js');
  const controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    process.stderr.write(`chaos: ${sig}: stopping, healing and removing every process and namespace\n`);
    controller.abort();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const progress = (line: string): void => {
    process.stderr.write(`${line}\n`);
  };
  progress(`chaos: seed ${o.seed}${o.seedGiven ? '' : ' (chosen at random; replay the schedule with --seed)'}`);
  try {
    const result = await runChaos(o, progress, controller.signal);
    process.stdout.write(`${result.report}\n`);
    if (result.exitCode !== 0) throw new CliExit(result.exitCode);
  } catch (err) {
    if (controller.signal.aborted) throw new CliExit(130);
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

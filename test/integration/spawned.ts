/**
 * Processes a test starts itself, with their own environment and command (e.g. `ip netns
 * exec NS node …`), for the tests that the shared LocalCluster harness does not fit
 * (security, multi-host). Output is kept (bounded) for the failure message; `stopAll()`
 * kills whatever is left and waits for it, and is safe to call twice.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { cleanEnv } from '../shared/dstore.js';

/** Bytes of each process's stdout and stderr kept. */
const KEEP_OUTPUT_BYTES = 64 * 1024;

export interface Spawned {
  readonly name: string;
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stdout: string;
  stderr: string;
}

export { cleanEnv };

export class Processes {
  readonly all = new Map<string, Spawned>();

  start(name: string, command: string, args: readonly string[], env: NodeJS.ProcessEnv = cleanEnv()): Spawned {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    const p: Spawned = {
      name,
      child,
      stdout: '',
      stderr: '',
      exited: new Promise((resolve) => {
        child.once('exit', (code, signal) => resolve({ code, signal }));
        child.once('error', () => resolve({ code: null, signal: null }));
      }),
    };
    child.stdout?.on('data', (b: Buffer) => (p.stdout = (p.stdout + b.toString('utf8')).slice(-KEEP_OUTPUT_BYTES)));
    child.stderr?.on('data', (b: Buffer) => (p.stderr = (p.stderr + b.toString('utf8')).slice(-KEEP_OUTPUT_BYTES)));
    this.all.set(name, p);
    return p;
  }

  /** The exit of `name`, or undefined when it is still running after `timeoutMs`. */
  async waitExit(
    name: string,
    timeoutMs: number,
  ): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined> {
    const p = this.all.get(name);
    if (!p) throw new Error(`no process ${name}`);
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        p.exited,
        new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), timeoutMs))),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The last lines of every process's stderr, for a failure message. */
  describe(lines = 8): string {
    return [...this.all.values()]
      .map(
        (p) =>
          `--- ${p.name} (exit ${p.child.exitCode ?? p.child.signalCode ?? 'running'})\n` +
          p.stderr.trim().split('\n').slice(-lines).join('\n'),
      )
      .join('\n');
  }

  /** SIGKILL to every process still running; waits for them (bounded). */
  async stopAll(timeoutMs = 10_000): Promise<void> {
    for (const p of this.all.values())
      if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all([...this.all.values()].map((p) => p.exited)),
      new Promise((r) => (timer = setTimeout(r, timeoutMs))),
    ]);
    clearTimeout(timer);
  }
}

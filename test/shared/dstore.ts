/**
 * Shared by the tests that run `dstore` as a real process (test/cli, test/integration): the
 * entry point, an environment without the caller's DSTORE_* variables, bounded runs (with
 * stdin, or synchronous), a bounded wait for a condition (never a sleep as synchronisation),
 * and `startUp`: a local cluster started with `dstore up --no-shell`, stopped with SIGTERM
 * (`up` stops its children), its children killed if anything is left.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** The test's environment without DSTORE_* (flags are explicit), colours off, plus `extra`. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { NO_COLOR: '1' };
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('DSTORE_')) env[k] = v;
  return { ...env, ...extra };
}

/** Whether a process with this pid exists (a zombie counts). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

export interface RunResult {
  readonly code: number | null;
  readonly stdout: Buffer;
  readonly stderr: Buffer;
}

export interface TextResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `dstore args…` with `input` on stdin until it exits. After `timeoutMs` it is sent
 * SIGTERM (`dstore up` then stops its children), SIGKILL 15 s later, and the run fails.
 */
export function runDstore(
  args: readonly string[],
  options: { input?: string | Buffer; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], {
      env: cleanEnv(options.env),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 15_000).unref();
      reject(
        new Error(
          `dstore ${args.join(' ')} did not exit within ${timeoutMs} ms; stdout: ${Buffer.concat(out).toString()}; ` +
            `stderr: ${Buffer.concat(err).toString()}`,
        ),
      );
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err) });
    });
    child.stdin.end(options.input ?? '');
  });
}

/** runDstore with stdout and stderr as UTF-8 text. */
export async function runDstoreText(
  args: readonly string[],
  options: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<TextResult> {
  const r = await runDstore(args, options);
  return { code: r.code, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') };
}

/** Runs `dstore args…` synchronously (nothing on stdin), killed after `timeoutMs`. */
export function runDstoreSync(args: readonly string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000): TextResult {
  const r = spawnSync(process.execPath, [MAIN, ...args], { env: cleanEnv(env), encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Polls `condition` every 50 ms until true; fails with `explain()` after `ms`. */
export async function waitFor(condition: () => boolean, ms: number, explain: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${explain()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface UpExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A running `dstore up --no-shell`. */
export interface UpCluster {
  readonly child: ChildProcess;
  /** host:port of its nameserver, from the banner. */
  readonly nameserver: string;
  /** The pids of its banner, in order: the nameserver, then s1, s2, … */
  readonly pids: readonly number[];
  /** What it wrote so far. */
  stdout(): string;
  stderr(): string;
  /** Its exit, once it exited. */
  exit(): UpExit | undefined;
  /**
   * SIGTERM (up stops its children), SIGKILL after `timeoutMs`, then SIGKILL to any child
   * still there. Safe to call twice; resolves with up's exit.
   */
  stop(timeoutMs?: number): Promise<UpExit>;
}

/**
 * Starts `dstore up --no-shell args…` and resolves once its banner says it runs (the
 * cluster formed), or rejects (after stopping it) when it exits first or `timeoutMs` passes.
 */
export async function startUp(args: readonly string[], timeoutMs = 60_000): Promise<UpCluster> {
  const child = spawn(process.execPath, [MAIN, 'up', '--no-shell', ...args], {
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  let exit: UpExit | undefined;
  child.stdout!.on('data', (c: Buffer) => (out += c.toString('utf8')));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString('utf8')));
  const exited = new Promise<UpExit>((resolve) =>
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    }),
  );
  let pids: number[] = [];
  const stop = async (stopTimeoutMs = 20_000): Promise<UpExit> => {
    if (exit === undefined) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), stopTimeoutMs);
    try {
      await exited;
    } finally {
      clearTimeout(timer);
    }
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    return exit!;
  };
  try {
    await waitFor(
      () => /^running until SIGINT/m.test(out) || exit !== undefined,
      timeoutMs,
      () => `dstore up did not report ready; stdout: ${out}; stderr: ${err}`,
    );
    if (exit !== undefined) throw new Error(`dstore up exited during start: ${JSON.stringify(exit)}; stderr: ${err}`);
  } catch (e) {
    await stop();
    throw e;
  }
  pids = [...out.matchAll(/pid (\d+)/g)].map((m) => Number(m[1]));
  const nameserver = /--nameserver (\S+)$/m.exec(out)?.[1] ?? '';
  return { child, nameserver, pids, stdout: () => out, stderr: () => err, exit: () => exit, stop };
}

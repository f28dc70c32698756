/**
 * Shared by the CLI tests that run `dstore` as a real process: the entry point, an
 * environment without the caller's DSTORE_* variables, a bounded run with stdin, and a
 * bounded wait for a condition (never a sleep as synchronisation).
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** The test's environment without DSTORE_* (flags are explicit), colours off, plus `extra`. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { NO_COLOR: '1' };
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('DSTORE_')) env[k] = v;
  return { ...env, ...extra };
}

export interface RunResult {
  readonly code: number | null;
  readonly stdout: Buffer;
  readonly stderr: Buffer;
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
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await runDstore(args, options);
  return { code: r.code, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') };
}

/** Polls `condition` every 50 ms until true; fails with `explain()` after `ms`. */
export async function waitFor(condition: () => boolean, ms: number, explain: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${explain()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

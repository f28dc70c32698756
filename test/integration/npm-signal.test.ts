/**
 * Issue 9: SIGTERM to the npm process of `npm start` stops the whole local cluster. npm
 * forwards the signal to the `sh -c` it runs the script in, and dash dies of it without
 * passing it on; before the fix `dstore up` and its nameserver and storage servers ran on as
 * orphans. The test runs the real `npm start` (build skipped), collects every descendant
 * process of npm by pid from /proc, sends SIGTERM to npm alone, and asserts that every one of
 * those pids is gone within a bound. Linux only (it reads /proc); skipped, saying why, without
 * npm on PATH.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { waitFor } from './cluster.js';
import { cleanEnv, Processes } from './spawned.js';

const npmMissing = spawnSync('npm', ['--version'], { encoding: 'utf8' }).status !== 0;
const skip = process.platform !== 'linux' ? 'reads /proc (Linux only)' : npmMissing ? 'npm is not on PATH' : false;

/** pid → [ppid, state] of every process, from /proc. */
function processTable(): Map<number, { ppid: number; state: string }> {
  const out = new Map<number, { ppid: number; state: string }>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(name), { state: fields[0] ?? '?', ppid: Number(fields[1]) });
    } catch {
      // The process exited while we listed: it is not in the table.
    }
  }
  return out;
}

function descendants(root: number): number[] {
  const table = processTable();
  const found: number[] = [];
  const queue = [root];
  for (let i = 0; i < queue.length && i < 10_000; i++) {
    for (const [pid, p] of table) {
      if (p.ppid === queue[i] && !found.includes(pid)) {
        found.push(pid);
        queue.push(pid);
      }
    }
  }
  return found;
}

/** Running, i.e. neither gone nor a zombie waiting to be reaped. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] !== 'Z';
  } catch {
    return false;
  }
}

const dir = mkdtempSync(join(tmpdir(), 'dstore-npm-signal-'));
const procs = new Processes();
after(async () => {
  await procs.stopAll();
  // Whatever the test could not stop (the bug it looks for) is SIGKILLed by pid.
  for (const pid of leftovers) if (alive(pid)) process.kill(pid, 'SIGKILL');
  if (!process.env.DSTORE_TEST_KEEP) rmSync(dir, { recursive: true, force: true });
});
let leftovers: number[] = [];

test('SIGTERM to `npm start` stops the cluster: no process of it is left', { skip }, async () => {
  const npm = procs.start(
    'npm-start',
    'npm',
    [
      'start',
      '--ignore-scripts',
      '--',
      '--no-shell',
      '--data-dir',
      join(dir, 'data'),
      '--port',
      '0',
      '--nodes',
      '2',
      '--replicas',
      '2',
    ],
    {
      ...cleanEnv(),
      npm_config_update_notifier: 'false',
    },
  );
  await waitFor(
    'the cluster to be ready',
    () => {
      if (npm.child.exitCode !== null) throw new Error(`npm exited (${npm.child.exitCode}): ${npm.stderr}`);
      return npm.stdout.includes('local cluster ready');
    },
    60_000,
  ).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\n${procs.describe()}`);
  });
  const npmPid = npm.child.pid!;
  const tree = descendants(npmPid);
  leftovers = tree;
  // sh, dstore up, the nameserver, s1, s2.
  assert.ok(tree.length >= 4, `npm's descendants: ${tree.join(', ')}`);
  for (const name of ['nameserver', 's1', 's2']) {
    const pid = Number(new RegExp(`  ${name} +\\S+ +pid (\\d+)`).exec(npm.stdout)?.[1]);
    assert.ok(tree.includes(pid), `${name} (pid ${pid}) is among npm's descendants ${tree.join(', ')}`);
  }

  process.kill(npmPid, 'SIGTERM');
  await waitFor(
    'every process of the cluster to exit',
    () => [npmPid, ...tree].every((pid) => !alive(pid)),
    20_000,
  ).catch((err: unknown) => {
    const left = [npmPid, ...tree].filter(alive);
    const commandLine = (pid: number): string =>
      readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').slice(0, 120);
    throw new Error(
      `${(err as Error).message}; still running: ${left.map((pid) => `${pid} ${commandLine(pid)}`).join('; ')}`,
    );
  });
  assert.match(npm.stderr, /parent process \d+ exited: stopping the cluster/);
});

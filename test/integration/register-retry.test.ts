/**
 * Issue 9, a storage server that cannot register, on real processes:
 * - with the nameserver unreachable it does not give up (it used to exit after 60 s): it is
 *   still running after 61 s, its log said so at once and then every 15 s (not at every
 *   attempt), and once the nameserver starts it registers by itself;
 * - pointed at an address that answers with an error retrying cannot fix (here another
 *   storage server's port, which refuses the nameserver's messages as malformed) it gives up
 *   at once, with that message and a non-zero exit code, instead of retrying for a minute.
 * The long wait is the point of the first test; it sleeps in a process of its own, so it
 * costs wall time but no CPU.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { freePort, MAIN, waitFor } from './cluster.js';
import { cleanEnv, Processes, type Spawned } from './spawned.js';

const dir = mkdtempSync(join(tmpdir(), 'dstore-register-retry-'));
const procs = new Processes();
after(async () => {
  await procs.stopAll();
  if (!process.env.DSTORE_TEST_KEEP) rmSync(dir, { recursive: true, force: true });
});

const dstore = (name: string, args: string[]): Spawned =>
  procs.start(name, process.execPath, [MAIN, ...args], cleanEnv());
const logged = (p: Spawned, msg: string): number =>
  p.stderr.split('\n').filter((l) => l.includes(`"msg":"${msg}`)).length;
const WAITING = 'cannot register with the nameserver yet; retrying with backoff until it answers';
/** Past the old hard-coded 60 s. */
const WAIT_MS = 61_000;

test('a storage server waits for its nameserver as long as it takes, and gives up at once on a non-retryable error', {
  timeout: 180_000,
}, async () => {
  const nsPort = await freePort();
  const nameserver = `127.0.0.1:${nsPort}`;
  const storagePort = await freePort();
  const t0 = Date.now();
  const s1 = dstore('s1', [
    'storage',
    '--nameserver',
    nameserver,
    '--port',
    String(storagePort),
    '--node-id',
    's1',
    '--backend',
    'memory',
    '--data-dir',
    join(dir, 's1'),
  ]);
  await waitFor('s1 to say it waits for the nameserver', () => logged(s1, WAITING) >= 1, 20_000);

  // Pointed at s1's port: the answer is an error that retrying cannot fix.
  const wrong = dstore('wrong', [
    'storage',
    '--nameserver',
    `127.0.0.1:${storagePort}`,
    '--port',
    String(await freePort()),
    '--node-id',
    's9',
    '--backend',
    'memory',
    '--data-dir',
    join(dir, 's9'),
  ]);
  const tWrong = Date.now();
  const exit = await procs.waitExit('wrong', 15_000);
  assert.ok(exit, `still retrying after 15 s: ${wrong.stderr.slice(-2000)}`);
  assert.ok(Date.now() - tWrong < 10_000, `gave up only after ${Date.now() - tWrong} ms`);
  assert.notEqual(exit.code, 0, wrong.stderr);
  assert.match(wrong.stderr, /retrying cannot help; giving up/);
  assert.match(wrong.stderr.trim().split('\n').at(-1) ?? '', /^error: .*\([A-Z_]+\)$/);
  assert.equal(logged(wrong, WAITING), 0, 'no retries were logged');

  await waitFor(
    `${WAIT_MS} ms to pass with s1 running`,
    () => {
      if (s1.child.exitCode !== null || s1.child.signalCode !== null)
        throw new Error(
          `s1 exited (${s1.child.exitCode ?? s1.child.signalCode}) after ${Date.now() - t0} ms: ` +
            `${s1.stderr.slice(-2000)}`,
        );
      return Date.now() - t0 >= WAIT_MS;
    },
    WAIT_MS + 10_000,
    500,
  );
  const lines = logged(s1, WAITING);
  // At once, then every 15 s: 5 lines in 61 s (4..6 allowing for start-up time), not one per attempt.
  assert.ok(lines >= 4 && lines <= 6, `${lines} waiting lines in ${WAIT_MS} ms:\n${s1.stderr.slice(-3000)}`);

  const ns = dstore('nameserver', [
    'nameserver',
    '--port',
    String(nsPort),
    '--http-port',
    'off',
    '--data-dir',
    join(dir, 'nameserver'),
    '--replicas',
    '1',
    '--min-write-replicas',
    '1',
  ]);
  await waitFor(
    's1 to register once the nameserver runs',
    () => logged(s1, 'registered with the nameserver') >= 1,
    20_000,
  ).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\n${procs.describe()}`);
  });
  assert.equal(ns.child.exitCode, null);
});

/**
 * `dstore up` and the settings a user gives it, on real processes (lmdb, free ports, a temp
 * data dir):
 * - DSTORE_NO_SHELL=0 means "shell on": up runs the shell on its piped stdin, which quits,
 *   and up stops the cluster and exits 0 (before, any value turned the shell off and up ran
 *   until a signal);
 * - run again on the same data dir with --partitions 8 --replicas 1, up prints the settings
 *   the cluster has (4 partitions, R=2) and says in the terminal that the given ones were
 *   ignored because they are fixed at creation.
 * Every run is bounded; the temp dir is removed and no child is left even when a test fails.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort } from '../../src/cli/options.js';
import { runDstoreText } from '../shared/dstore.js';

const RUN_TIMEOUT_MS = 90_000;

const up = (args: string[], input: string, env: NodeJS.ProcessEnv) =>
  runDstoreText(['up', ...args], { input, env, timeoutMs: RUN_TIMEOUT_MS });

describe('dstore up: settings as given and as the cluster has them', { timeout: 240_000 }, () => {
  let dataDir = '';
  let port = 0;

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'dstore-up-settings-'));
    port = await freePort();
  });

  after(() => {
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  const common = (): string[] => ['--data-dir', dataDir, '--port', String(port), '--storage-port', '0', '--nodes', '2'];

  test('DSTORE_NO_SHELL=0 keeps the shell on: it reads stdin, quits, and up exits 0', async () => {
    const r = await up([...common(), '--partitions', '4', '--replicas', '2'], 'nodes\nquit\n', {
      DSTORE_NO_SHELL: '0',
    });
    assert.equal(r.code, 0, `exit code; stderr: ${r.stderr}`);
    assert.match(r.stdout, /local cluster ready \(4 partitions, R=2,/);
    assert.match(r.stdout, /^NODE +ROLE +ADDRESS/m, 'the shell ran `nodes`');
    assert.doesNotMatch(r.stdout, /running until SIGINT/);
    assert.match(r.stderr, /stopped/);
  });

  test('on an existing data dir, up shows the real settings and says the given ones were ignored', async () => {
    const r = await up([...common(), '--partitions', '8', '--replicas', '1'], 'quit\n', {});
    assert.equal(r.code, 0, `exit code; stderr: ${r.stderr}`);
    assert.match(r.stdout, /local cluster ready \(4 partitions, R=2, min write replicas 2,/, r.stdout);
    assert.match(
      r.stderr,
      new RegExp(
        'warning: ignored --partitions 8 \\(it has 4\\), --replicas 1 \\(it has R=2\\): ' +
          'these are fixed when a cluster is created',
      ),
      r.stderr,
    );
  });
});

/**
 * Issue 12: `dstore up --ha` — a local 3-member etcd and three identical `dstore node`
 * processes. With --no-shell: it starts, its banner and `dstore nodes` (given every node as a
 * seed) name the leader, and SIGINT leaves no process behind (nodes and etcd members). With
 * the shell on piped stdin: `procs` lists the nodes and the etcd members, `nodes` names the
 * leader, a put/get works, `kill`, `restart`, `pause` and `resume` work on nodes, and the end
 * of input stops everything (the restarted node too). A data dir of an earlier
 * `up --ha` is refused (exit 2): its etcd is gone.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ETCD_INSTALL_HINT, findEtcd } from '../../src/process/etcd-server.js';
import { alive, runDstoreText, startUp, waitFor } from '../shared/dstore.js';

const skip = findEtcd() === undefined ? `etcd is not installed: ${ETCD_INSTALL_HINT}` : false;
const COMMON = ['--ha', '--port', '0', '--backend', 'memory', '--partitions', '4', '--lease-ttl-ms', '2000'];

describe('dstore up --ha', { skip }, () => {
  let root = '';
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'dstore-up-ha-'));
  });
  after(() => {
    rmSync(root, { recursive: true, force: true });
  });

  test('--no-shell: starts, names its leader, and SIGINT leaves no process behind', async () => {
    const dataDir = join(root, 'no-shell');
    const up = await startUp([...COMMON, '--data-dir', dataDir], 90_000);
    try {
      const out = up.stdout();
      assert.match(out, /^ {2}leader {6}n[123] \(127\.0\.0\.1:\d+\) since /m, out);
      assert.match(out, /etcd m1 +http:\/\/127\.0\.0\.1:\d+/, out);
      // Three nodes and three etcd members, each with its pid in the banner.
      assert.equal(up.pids.length, 6, out);
      const seeds = up.nameserver.split(',');
      assert.equal(seeds.length, 3, `the connect line names every node: ${up.nameserver}`);
      const leader = /^ {2}leader {6}(n[123])/m.exec(out)?.[1];
      const nodes = await runDstoreText(['nodes', '--nameserver', up.nameserver]);
      assert.equal(nodes.code, 0, nodes.stderr);
      assert.match(nodes.stdout, new RegExp(`^leader ${leader} \\(`, 'm'), nodes.stdout);
      for (const id of ['n1', 'n2', 'n3']) assert.match(nodes.stdout, new RegExp(`^${id} +storage .* alive`, 'm'));

      for (const pid of up.pids) assert.ok(alive(pid), `${pid} runs before SIGINT`);
      up.child.kill('SIGINT');
      await waitFor(
        () => up.exit() !== undefined,
        30_000,
        () => `up --ha did not exit after SIGINT; stderr: ${up.stderr()}`,
      );
      assert.deepEqual(up.exit(), { code: 0, signal: null }, up.stderr());
      await waitFor(
        () => up.pids.every((pid) => !alive(pid)),
        10_000,
        () => `left running after SIGINT: ${up.pids.filter(alive).join(', ')}`,
      );
    } finally {
      await up.stop();
    }

    // Its etcd is gone: the same data dir is refused rather than joined to an empty etcd.
    const again = await runDstoreText(['up', '--no-shell', ...COMMON, '--data-dir', dataDir]);
    assert.equal(again.code, 2, again.stderr);
    assert.match(again.stderr, /holds a node of an earlier `up --ha`/);
  });

  test('the shell on piped stdin: procs, nodes, put/get, kill/restart/pause/resume a node; EOF stops all', async () => {
    const dataDir = join(root, 'shell');
    const r = await runDstoreText(['up', ...COMMON, '--data-dir', dataDir], {
      input: 'procs\nnodes\nput hello world\nget hello\nkill n1\nrestart n1\npause n2\nresume n2\n',
      timeoutMs: 120_000,
    });
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    for (const m of ['m1', 'm2', 'm3']) assert.match(r.stdout, new RegExp(`^etcd ${m} +pid \\d+`, 'm'), r.stdout);
    for (const n of ['n1', 'n2', 'n3']) assert.match(r.stdout, new RegExp(`^${n} +pid \\d+`, 'm'), r.stdout);
    assert.match(r.stdout, /^leader n[123] \(127\.0\.0\.1:\d+\) since .*elected through etcd/m, r.stdout);
    assert.match(r.stdout, /^"world" \(version \d+\)$/m, r.stdout);
    assert.match(r.stdout, /^n1 killed \(SIGKILL\)$/m, r.stdout);
    assert.match(r.stdout, /^n1 started \(pid \d+, port \d+\)$/m, r.stdout);
    assert.match(r.stdout, /^n2 paused \(SIGSTOP\)/m, r.stdout);
    assert.match(r.stdout, /^n2 resumed \(SIGCONT\)$/m, r.stdout);
    assert.match(r.stderr, /stopped/);
    const pids = [...r.stdout.matchAll(/pid (\d+)/g)].map((m) => Number(m[1]));
    assert.ok(pids.length >= 6, r.stdout);
    await waitFor(
      () => pids.every((pid) => !alive(pid)),
      10_000,
      () => `left running after the shell ended: ${pids.filter(alive).join(', ')}`,
    );
  });
});

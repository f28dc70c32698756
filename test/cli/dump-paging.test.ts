/**
 * `dstore dump --all` on a real cluster (`dstore up --no-shell`, lmdb, free ports, a temp
 * data dir) with 5,000 keys of 1 KB (issue 9: 4,800 made one 4.8 MB reply, over the 4 MiB
 * frame limit; every server was labelled unreachable and the exit code was 0): the listing
 * pages through each server's keys, so it lists all 5,000 on each of the 3 servers (R=3)
 * and exits 0; `dump` without --all lists 100 per server and says how many more. A server
 * that cannot be listed (SIGSTOPped) makes dump exit 1 naming it. Every wait is bounded; the
 * cluster is stopped and the temp dir removed even when a test fails.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort } from '../../src/cli/options.js';
import { connect } from '../../src/client/index.js';
import { runDstoreText, startUp, type UpCluster } from '../shared/dstore.js';

const KEYS = 5000;
const KEY_BYTES = 1000;

const run = (args: string[]) => runDstoreText(args);

const keyOf = (i: number): string => `key-${String(i).padStart(5, '0')}-`.padEnd(KEY_BYTES, 'k');

describe('dump pages through 5,000 keys of 1 KB on a real cluster', { timeout: 300_000 }, () => {
  let dataDir = '';
  let up: UpCluster | undefined;
  let nameserver = '';

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'dstore-dump-paging-'));
    const port = await freePort();
    up = await startUp(['--data-dir', dataDir, '--port', String(port), '--storage-port', '0', '--sync', 'none']);
    nameserver = up.nameserver;
    const db = await connect(nameserver, { timeoutMs: 30_000 });
    try {
      const value = 'v'.repeat(16);
      for (let start = 0; start < KEYS; start += 100) {
        await Promise.all(
          Array.from({ length: Math.min(100, KEYS - start) }, (_, j) => db.put(keyOf(start + j), value)),
        );
      }
    } finally {
      await db.close();
    }
  });

  after(async () => {
    // A test may leave a server SIGSTOPped: resume it so that up can stop it.
    for (const pid of up?.pids ?? []) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // already gone: nothing to resume
      }
    }
    await up?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  test('dump --all --json lists every key on every server and exits 0', async () => {
    const r = await run(['dump', '--all', '--json', '--nameserver', nameserver]);
    assert.equal(r.code, 0, r.stderr);
    const servers = JSON.parse(r.stdout) as {
      nodeId: string;
      keyCount: number;
      keys: string[];
      truncated: boolean;
      error?: string;
    }[];
    assert.equal(servers.length, 3);
    const expected = Array.from({ length: KEYS }, (_, i) => keyOf(i)).sort();
    for (const s of servers) {
      assert.equal(s.error, undefined, `${s.nodeId}: ${s.error}`);
      assert.equal(s.keyCount, KEYS, s.nodeId);
      assert.equal(s.truncated, false, s.nodeId);
      assert.deepEqual([...s.keys].sort(), expected, `${s.nodeId} lists each key once`);
    }
  });

  test('dump --all as text and dump (first 100) exit 0', async () => {
    const all = await run(['dump', '--all', '--nameserver', nameserver]);
    assert.equal(all.code, 0, all.stderr);
    assert.equal((all.stdout.match(/^ {2}key-/gm) ?? []).length, 3 * KEYS);
    const first = await run(['dump', '--nameserver', nameserver]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal((first.stdout.match(/^ {2}key-/gm) ?? []).length, 300);
    assert.equal((first.stdout.match(/… 4900 more \(dump --all lists every key\)/g) ?? []).length, 3, first.stdout);
  });

  test('a server that cannot be listed makes dump exit 1, naming it', async () => {
    const storagePid = up!.pids[1]; // banner order: nameserver, s1, s2, s3
    assert.ok(storagePid !== undefined, up!.stdout());
    process.kill(storagePid, 'SIGSTOP');
    try {
      const r = await run(['dump', '--nameserver', nameserver, '--timeout-ms', '1500', '--attempt-timeout-ms', '1000']);
      assert.equal(r.code, 1, `exit code; stdout: ${r.stdout}; stderr: ${r.stderr}`);
      assert.match(r.stdout, /^s1 \(127\.0\.0\.1:\d+\): listing failed: /m);
      assert.match(r.stderr, /^error: could not list the keys of s1 /m);
    } finally {
      process.kill(storagePid, 'SIGCONT');
    }
  });
});

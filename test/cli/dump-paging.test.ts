/**
 * `dstore dump --all` on a real cluster (`dstore up --no-shell`, lmdb, free ports, a temp
 * data dir) with 5,000 keys of 1 KB (issue 9: 4,800 made one 4.8 MB reply, over the 4 MiB
 * frame limit; every server was labelled unreachable and the exit code was 0): the listing
 * pages through each server's keys, so it lists all 5,000 on each of the 3 servers (R=3)
 * and exits 0; `dump` without --all lists 100 per server and says how many more. A server
 * that cannot be listed (SIGSTOPped) makes dump exit 1 naming it. `dstore scan` (issue 14) pages
 * through the same keys in byte order with its cursor, with --prefix and --values. Every wait is bounded; the
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

  test('dstore scan pages through every key in byte order with its cursor; --prefix and --values (issue 14)', async () => {
    const expected = Array.from({ length: KEYS }, (_, i) => keyOf(i)).sort();
    const got: string[] = [];
    let startAfter: string | undefined;
    for (let call = 0; call < 10; call++) {
      const args = ['scan', '--json', '--limit', '2000', '--nameserver', nameserver];
      const r = await run(startAfter === undefined ? args : [...args, '--start-after', startAfter]);
      assert.equal(r.code, 0, r.stderr);
      const page = JSON.parse(r.stdout) as { entries: { key: string }[]; next?: string };
      assert.ok(page.entries.length <= 2000);
      got.push(...page.entries.map((e) => e.key));
      if (page.next === undefined) break;
      startAfter = page.next;
    }
    assert.deepEqual(got, expected, 'three pages list every key once, in byte order');
    const prefix = 'key-0499';
    const text = await run(['scan', '--prefix', prefix, '--values', '--nameserver', nameserver]);
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 11, text.stdout);
    assert.match(lines[0]!, /^key-04990-k+ = "v{16}" \(version \d+\)$/);
    assert.equal(lines[10], '(10 keys; end of the scan)');
    const more = await run(['scan', '--prefix', prefix, '--limit', '3', '--nameserver', nameserver]);
    assert.equal(more.code, 0, more.stderr);
    assert.match(
      more.stdout,
      /\(3 keys; more remain: resume with dstore scan --prefix key-0499 --start-after key-04992-k+\)/,
    );
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

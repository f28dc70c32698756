/**
 * Compare-and-set and TTL on a real cluster (issue 14, DESIGN §16): `dstore up --no-shell`
 * (3 lmdb storage servers, R=3, free ports, a temp data dir), driven through the client
 * library and the CLI.
 *
 * Proves:
 * - CAS: `ifVersion` 0 writes only an absent key; a stale version fails with a definite
 *   CONDITION_FAILED naming the current version, and writes nothing; the CLI's
 *   `put --if-version` exits 1 saying so.
 * - TTL: `get` never returns a key past its deadline; every replica drops expired keys
 *   (their deletes are logged by the primary) within the stated bound after the deadline;
 *   a key's deadline survives a SIGKILL of its primary (the new primary reports what is left
 *   of the same deadline, and the key goes at it); `dstore ttl` and `put --ttl` work.
 * Every wait is bounded; the cluster is stopped and the temp dir removed even when a test fails.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort } from '../../src/cli/options.js';
import { ConditionFailedError, connectAdmin, type Admin } from '../../src/client/index.js';
import { partitionOf } from '../../src/core/partitioning.js';
import { runDstoreText, startUp, type UpCluster } from '../shared/dstore.js';

/** The bound docs/consistency.md states for every replica to drop a key after its deadline. */
const EXPIRY_BOUND_MS = 5000;

describe('compare-and-set and TTL on a real cluster', { timeout: 240_000 }, () => {
  let dataDir = '';
  let up: UpCluster | undefined;
  let db: Admin | undefined;
  const cli = (args: string[]) => runDstoreText([...args, '--nameserver', up!.nameserver]);

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'dstore-ttl-cas-'));
    const port = await freePort();
    up = await startUp([
      '--data-dir',
      dataDir,
      '--port',
      String(port),
      '--storage-port',
      '0',
      '--partitions',
      '4',
      '--heartbeat-ms',
      '200',
      '--dead-after-ms',
      '1500',
    ]);
    db = await connectAdmin(up.nameserver, { timeoutMs: 15_000 });
  });

  after(async () => {
    await db?.close();
    await up?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('ifVersion: 0 writes only an absent key; a stale version fails definitely with the current one', async () => {
    const v1 = await db!.put('cas-k', 'a', { ifVersion: 0 });
    await assert.rejects(db!.put('cas-k', 'b', { ifVersion: 0 }), (e: unknown) => {
      assert.ok(e instanceof ConditionFailedError, String(e));
      assert.equal(e.current, v1);
      return true;
    });
    const v2 = await db!.put('cas-k', 'b', { ifVersion: v1 });
    assert.ok(v2 > v1);
    await assert.rejects(db!.put('cas-k', 'c', { ifVersion: v1 }), /CONDITION_FAILED|expected version/);
    await assert.rejects(db!.delete('cas-k', { ifVersion: v1 }), ConditionFailedError);
    assert.equal(Buffer.from((await db!.get('cas-k'))!.value).toString(), 'b');
    assert.equal(await db!.delete('cas-k', { ifVersion: v2 }), true);
    assert.equal(await db!.get('cas-k'), undefined);
    // Through the CLI: exit 1 with the code and the current version.
    const ok = await cli(['put', 'cas-cli', 'x', '--if-version', '0']);
    assert.equal(ok.code, 0, ok.stderr);
    const version = Number(/version (\d+)/.exec(ok.stdout)?.[1]);
    const stale = await cli(['put', 'cas-cli', 'y', '--if-version', '0']);
    assert.equal(stale.code, 1, stale.stdout + stale.stderr);
    assert.match(stale.stderr, new RegExp(`CONDITION_FAILED|the key is at version ${version}`));
    const bad = await cli(['put', 'cas-cli', 'y', '--if-version', '-3']);
    assert.equal(bad.code, 2, bad.stderr);
  });

  test('a key past its deadline is never read, and every replica drops it within the bound', async () => {
    const keys = Array.from({ length: 40 }, (_, i) => `ttl-${i}`);
    const ttlMs = 1500;
    await Promise.all(keys.map((k) => db!.put(k, 'v', { ttlMs })));
    // Every primary's deadline is at most this (one machine, one clock).
    const deadline = Date.now() + ttlMs;
    const left = await db!.get(keys[0]!);
    assert.ok(left?.ttlMs !== undefined && left.ttlMs <= ttlMs && left.ttlMs > 0, JSON.stringify(left));
    // Read in a loop across the deadline: once a read starts after it, the key is absent.
    for (let i = 0; i < 200 && Date.now() < deadline + 500; i++) {
      const started = Date.now();
      const got = await db!.get(keys[i % keys.length]!);
      if (started > deadline) assert.equal(got, undefined, `read at +${started - deadline} ms returned the key`);
      await new Promise((r) => setTimeout(r, 20));
    }
    // Every replica's store (R=3: every server holds every key) drops them.
    let stored = -1;
    let elapsed = 0;
    for (let i = 0; i < 100; i++) {
      const dumps = await db!.dump({ limit: 10_000 });
      stored = dumps.reduce((n, d) => n + d.keys.filter((k) => Buffer.from(k).toString().startsWith('ttl-')).length, 0);
      elapsed = Date.now() - deadline;
      if (stored === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(stored, 0, `${stored} expired keys still stored on some replica ${elapsed} ms after the deadline`);
    assert.ok(elapsed < EXPIRY_BOUND_MS, `every replica dropped them ${elapsed} ms after the deadline`);
    console.log(`# every replica dropped 40 expired keys within ${elapsed} ms of the deadline`);
  });

  test('the deadline survives a SIGKILL of the primary; dstore ttl and put --ttl', async () => {
    const key = 'ttl-failover';
    const ttlMs = 8000;
    await db!.put(key, 'v', { ttlMs });
    const putDone = Date.now(); // the primary's deadline is at most this + ttlMs (one machine, one clock)
    const map = await db!.clusterMap();
    const primary = map.configs[partitionOf(Buffer.from(key), map.partitions)]!.primary;
    const pid = up!.pids[Number(primary.slice(1))]!;
    process.kill(pid, 'SIGKILL');
    // The new primary serves it with what is left of the same deadline.
    const readStart = Date.now();
    const got = await db!.get(key);
    assert.ok(got?.ttlMs !== undefined, `read after failover: ${JSON.stringify(got)}`);
    assert.ok(got.ttlMs <= putDone + ttlMs - readStart, `ttl ${got.ttlMs} ms left at +${readStart - putDone} ms`);
    assert.ok(got.ttlMs > 0);
    const newPrimary = (await db!.clusterMap()).configs[partitionOf(Buffer.from(key), map.partitions)]!.primary;
    assert.notEqual(newPrimary, primary, 'another replica took over');
    const shown = await cli(['ttl', key]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /expires in \d/);
    // Gone at the deadline.
    const wait = putDone + ttlMs + 100 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    assert.equal(await db!.get(key), undefined);
    const gone = await cli(['ttl', key]);
    assert.equal(gone.code, 1);
    // put --ttl through the CLI, and a bad duration.
    const put = await cli(['put', 'cli-ttl', 'v', '--ttl', '1h']);
    assert.equal(put.code, 0, put.stderr);
    const ttl = await db!.get('cli-ttl');
    assert.ok(ttl?.ttlMs !== undefined && ttl.ttlMs > 3_590_000 && ttl.ttlMs <= 3_600_000, JSON.stringify(ttl));
    const bad = await cli(['put', 'cli-ttl', 'v', '--ttl', '5 parsecs']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /duration/);
  });
});

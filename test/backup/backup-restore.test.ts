/**
 * `dstore backup` and `dstore restore` against real clusters (issue 13): cluster A (3 storage
 * servers, 4 partitions) under a write load of unique keys from a background loop (bounded in
 * count), `dstore backup DIR` while it runs. Proves: every key acknowledged before the backup
 * started is in the backup with its value, and every key in it is one the load wrote, with that
 * value; a copy with a flipped byte is refused by `dstore restore` (exit 3) naming the file and
 * the partition, and the target cluster B (6 partitions) stays empty; a second backup at rest
 * has A's content digest as A's primaries compute it; the backup restores into B
 * (exit 0, verified), B then holds exactly the backup's keys and values (read back with get), and
 * a second restore into B is refused (exit 4). Clusters and the temp dir go also on failure.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { readPartitionFile } from '../../src/backup/format.js';
import type { Manifest } from '../../src/backup/manifest.js';
import { clusterContents } from '../../src/backup/restore.js';
import { Client } from '../../src/client/client.js';
import { addDigests } from '../../src/storage/digest.js';
import { LocalCluster, waitFor } from '../integration/cluster.js';
import { runDstoreText } from '../shared/dstore.js';

const MAX_WRITES = 20_000;
const LOAD_CONCURRENCY = 8;
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Writes unique keys until stopped or MAX_WRITES: `attempted` and `acked` map key → value. */
function startLoad(client: Client) {
  const attempted = new Map<string, string>();
  const acked = new Map<string, string>();
  const errors: string[] = [];
  let next = 0;
  let stopped = false;
  const worker = async (): Promise<void> => {
    while (!stopped && next < MAX_WRITES) {
      const n = next++;
      const key = `load-${n}`;
      const value = `value-${n}-${'x'.repeat(n % 50)}`;
      attempted.set(key, value);
      try {
        await client.put(key, value);
        acked.set(key, value);
      } catch (err) {
        errors.push((err as Error).message); // outcome unknown: the key may or may not be there
      }
    }
  };
  const done = Promise.all(Array.from({ length: LOAD_CONCURRENCY }, worker));
  return {
    attempted,
    acked,
    errors,
    stop: async (): Promise<void> => {
      stopped = true;
      await done;
    },
  };
}

async function backupItems(dir: string, m: Manifest): Promise<Map<string, string>> {
  const items = new Map<string, string>();
  for (const e of m.entries)
    await readPartitionFile(join(dir, e.file), async (page) => {
      for (const i of page) items.set(Buffer.from(i.key).toString('utf8'), Buffer.from(i.value).toString('utf8'));
    });
  return items;
}

test('backup under load, a corrupt copy refused, restore into a fresh cluster verified', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'dstore-backup-it-'));
  try {
    await using a = await LocalCluster.start({ nodes: 3, partitions: 4, replicas: 3 });
    await using b = await LocalCluster.start({ nodes: 3, partitions: 6, replicas: 3, backend: 'memory' });
    const clientA = await a.client();
    assert.ok(clientA instanceof Client);
    const load = startLoad(clientA);
    let ackedBefore: Map<string, string>;
    const dir = join(tmp, 'backup');
    let backup: Awaited<ReturnType<typeof runDstoreText>>;
    try {
      await waitFor('300 acknowledged writes before the backup', () => load.acked.size >= 300, 30_000, 20);
      ackedBefore = new Map(load.acked);
      backup = await runDstoreText(['backup', dir, '--json', '--nameserver', a.nameserverAddress], {
        timeoutMs: 120_000,
      });
      assert.ok(load.acked.size > ackedBefore.size, 'the load went on during the backup');
    } finally {
      await load.stop();
    }
    assert.equal(backup.code, 0, `backup failed: ${backup.stderr}`);
    const summary = JSON.parse(backup.stdout) as { partitions: number; keys: number; bytes: number };
    assert.equal(summary.partitions, 4);
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Manifest;
    assert.equal(summary.keys, manifest.keys);
    assert.deepEqual(readdirSync(dir).sort(), ['manifest.json', ...manifest.entries.map((e) => e.file)].sort());

    const items = await backupItems(dir, manifest);
    assert.equal(items.size, manifest.keys);
    for (const [k, v] of ackedBefore) assert.equal(items.get(k), v, `key ${k} acknowledged before the backup`);
    for (const [k, v] of items) assert.equal(load.attempted.get(k), v, `key ${k} in the backup was written so`);
    console.log(
      `# backup: ${manifest.keys} keys (${ackedBefore.size} acknowledged before it, ${load.acked.size} by the end,` +
        ` ${load.errors.length} write errors), ${summary.bytes} bytes`,
    );

    // At rest (the load stopped), a backup in text form: its content digest is A's, as A's primaries compute it.
    const still = join(tmp, 'still');
    const text = await runDstoreText(['backup', still, '--nameserver', a.nameserverAddress], { timeoutMs: 120_000 });
    assert.equal(text.code, 0, `backup failed: ${text.stderr}`);
    assert.match(
      text.stdout,
      /^backup of cluster [0-9a-f-]{8} in .*: 4 partitions, \d+ keys, .* in [\d.]+ s \(content/,
    );
    const stillManifest = JSON.parse(readFileSync(join(still, 'manifest.json'), 'utf8')) as Manifest;
    const contentsA = await clusterContents(clientA);
    assert.equal(addDigests(contentsA.map((c) => c.content)), stillManifest.content, 'A and its backup at rest');
    assert.equal(
      contentsA.reduce((n, c) => n + c.keys, 0),
      stillManifest.keys,
    );
    assert.ok(stillManifest.keys >= manifest.keys);

    // A copy with one byte flipped in the largest partition file: refused, nothing written.
    const bad = join(tmp, 'bad');
    cpSync(dir, bad, { recursive: true });
    const largest = [...manifest.entries].sort((x, y) => y.bytes - x.bytes)[0]!;
    const path = join(bad, largest.file);
    const bytes = readFileSync(path);
    const at = Math.floor(bytes.length / 2);
    bytes[at] = bytes[at]! ^ 0x40;
    writeFileSync(path, bytes);
    const refused = await runDstoreText(['restore', bad, '--nameserver', b.nameserverAddress], { timeoutMs: 60_000 });
    assert.equal(refused.code, 3, refused.stderr);
    assert.match(
      refused.stderr,
      new RegExp(`^error: backup file ${largest.file} \\(partition ${largest.partition}\\) is corrupt: `),
    );
    const clientB = await b.client();
    assert.ok(clientB instanceof Client);
    const empty = await clusterContents(clientB);
    assert.equal(empty.length, 6);
    assert.deepEqual(
      empty.map((c) => c.keys),
      [0, 0, 0, 0, 0, 0],
      'the target stays empty',
    );

    // The good backup into B: verified.
    const restored = await runDstoreText(['restore', dir, '--json', '--nameserver', b.nameserverAddress], {
      timeoutMs: 120_000,
    });
    assert.equal(restored.code, 0, `restore failed: ${restored.stderr}`);
    const r = JSON.parse(restored.stdout) as { keys: number; content: string; verified: boolean; partitions: number };
    assert.equal(r.verified, true);
    assert.equal(r.keys, manifest.keys);
    assert.equal(r.content, manifest.content);
    assert.equal(r.partitions, 6);
    const entries = [...items];
    for (let i = 0; i < entries.length; i += 64)
      await Promise.all(
        entries.slice(i, i + 64).map(async ([k, v]) => {
          const got = await clientB.get(k);
          assert.ok(got, `key ${k} restored`);
          assert.equal(hex(got.value), hex(Buffer.from(v)), `value of ${k}`);
        }),
      );
    const after = await clusterContents(clientB);
    assert.equal(
      after.reduce((n, c) => n + c.keys, 0),
      manifest.keys,
      'no key more than the backup',
    );
    // The restored cluster's replicas agree with each other (issue 13: `dstore check` clean).
    const check = await runDstoreText(['check', '--nameserver', b.nameserverAddress], { timeoutMs: 60_000 });
    assert.equal(check.code, 0, `dstore check on the restored cluster: ${check.stdout}${check.stderr}`);

    // Once more into B: not empty any more.
    const again = await runDstoreText(['restore', dir, '--nameserver', b.nameserverAddress], { timeoutMs: 60_000 });
    assert.equal(again.code, 4, again.stderr);
    assert.match(again.stderr, /the target cluster is not empty: it holds \d+ keys/);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

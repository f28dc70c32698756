/**
 * Backups without a cluster (issue 13): `runBackup` against a fake snapshot source (paged, one
 * primary change mid-snapshot), `runRestore` against a fake target that keeps its puts in a map
 * and computes digests with the real DigestBuilder. Proves the file format round-trips (every item
 * back, digests equal), and that a flipped byte in an item, a truncated file, a missing file, a
 * wrong sha256 and a hand-edited manifest are each found, named with file and partition where it
 * is one, with nothing put; and that a non-empty target or an empty DIR-in-use is refused.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { runBackup } from '../../src/backup/backup.js';
import {
  BackupCorruptError,
  BackupDirNotEmptyError,
  ClusterNotEmptyError,
  RestoreMismatchError,
} from '../../src/backup/errors.js';
import { readPartitionFile } from '../../src/backup/format.js';
import type { Manifest } from '../../src/backup/manifest.js';
import { runRestore, verifyBackup } from '../../src/backup/restore.js';
import { NotPrimaryError } from '../../src/core/errors.js';
import type { DigestAtReply, MapReply, SnapshotReadReply } from '../../src/rpc/messages.js';
import { DigestBuilder } from '../../src/storage/digest.js';

const PARTITIONS = 3;
const enc = new TextEncoder();
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Partition p holds keys p-0 … p-(4+p) (partition 0: 4 keys, …), version = index + 10. */
function partitionItems(p: number): Array<{ key: Uint8Array; value: Uint8Array; version: number }> {
  return Array.from({ length: 4 + p }, (_, i) => ({
    key: enc.encode(`k${p}-${i}`),
    value: enc.encode(`value of ${p}-${i} `.repeat(i + 1)),
    version: i + 10,
  }));
}

const MAP: MapReply = {
  clusterId: 'c0ffee00-test',
  formed: true,
  partitions: PARTITIONS,
  replicas: 1,
  minWriteReplicas: 1,
  version: 1,
  configs: Array.from({ length: PARTITIONS }, (_, p) => ({
    partition: p,
    epoch: 2,
    primary: 's1',
    secondaries: [],
    learners: [],
  })),
  addresses: { s1: '127.0.0.1:1' },
};

/** Pages of 2 items; the first has the dedup table; partition 1's second page fails once (NOT_PRIMARY). */
function fakeSource(expiry: (p: number, i: number) => number | undefined = () => undefined) {
  const sessions = new Map<string, { p: number; at: number }>();
  let n = 0;
  let failedOnce = false;
  return {
    clusterMap: async (): Promise<MapReply> => MAP,
    snapshotPage: async (_address: string, p: number, epoch: number, session?: string): Promise<SnapshotReadReply> => {
      assert.equal(epoch, 2);
      const items = partitionItems(p).map((item, i) => {
        const expiresAt = expiry(p, i);
        return expiresAt === undefined ? item : { ...item, expiresAt };
      });
      let s = session === undefined ? undefined : sessions.get(session);
      const id = session ?? `s${n++}`;
      if (s === undefined) {
        s = { p, at: 0 };
        sessions.set(id, s);
      } else if (p === 1 && !failedOnce) {
        failedOnce = true;
        throw new NotPrimaryError('s1 is not the primary of partition 1 (test)');
      }
      const page = items.slice(s.at, s.at + 2);
      const first = s.at === 0;
      s.at += page.length;
      return {
        session: id,
        applied: { seq: 100 + p, epoch: 2 },
        dedup: first ? [{ clientId: `c${p}`, requestSeq: 3, seq: 99 }] : [],
        items: page,
        done: s.at >= items.length,
      };
    },
  };
}

/** A target cluster of `partitions` partitions (keys spread by their first byte), its puts in a map. */
function fakeTarget(partitions: number, preload: Array<[string, string]> = []) {
  const data = new Map<string, { key: Uint8Array; value: Uint8Array; ttlMs?: number }>();
  for (const [k, v] of preload) data.set(hex(enc.encode(k)), { key: enc.encode(k), value: enc.encode(v) });
  let puts = 0;
  let digests = 0;
  const partitionOf = (key: Uint8Array): number => key[key.length - 1]! % partitions;
  return {
    data,
    get puts() {
      return puts;
    },
    get digests() {
      return digests;
    },
    clusterMap: async (): Promise<MapReply> => ({
      ...MAP,
      partitions,
      configs: Array.from({ length: partitions }, (_, p) => ({
        partition: p,
        epoch: 1,
        primary: 's1',
        secondaries: [],
        learners: [],
      })),
    }),
    proposeDigest: async (_p: number): Promise<number> => 7,
    digestAt: async (_address: string, p: number, seq: number): Promise<DigestAtReply> => {
      digests += 1;
      const b = new DigestBuilder();
      for (const { key, value, ttlMs } of data.values())
        if (partitionOf(key) === p) b.addEntry(key, value, 1, ttlMs === undefined ? undefined : Date.now() + ttlMs);
      const d = b.finish();
      return {
        ok: true,
        seq,
        digest: d.digest,
        content: d.content,
        keys: d.keys,
        ...(d.transient === undefined ? {} : { transient: d.transient }),
        buckets: [...d.buckets],
        dedup: d.dedup,
      };
    },
    put: async (key: Uint8Array, value: Uint8Array, options?: { ttlMs?: number }): Promise<number> => {
      puts += 1;
      data.set(hex(key), options?.ttlMs === undefined ? { key, value } : { key, value, ttlMs: options.ttlMs });
      return puts;
    },
  };
}

const root = mkdtempSync(join(tmpdir(), 'dstore-backup-test-'));
after(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;
const newDir = (): string => join(root, `b${dirs++}`);

async function freshBackup(): Promise<{ dir: string; manifest: Manifest }> {
  const dir = newDir();
  const { manifest } = await runBackup(fakeSource(), dir);
  return { dir, manifest };
}

/** Restore of a damaged backup: refused with BackupCorruptError matching `message`, nothing put or asked. */
async function assertRefused(dir: string, message: RegExp): Promise<void> {
  const target = fakeTarget(2);
  await assert.rejects(runRestore(target, dir), (err: unknown) => {
    assert.ok(err instanceof BackupCorruptError, `expected BackupCorruptError, got ${String(err)}`);
    assert.match(err.message, message);
    return true;
  });
  assert.equal(target.puts, 0, 'nothing is loaded from a damaged backup');
  assert.equal(target.digests, 0, 'the target is not even asked');
}

describe('backup files', () => {
  test('round trip: every item back, digests equal, a restore into 2 partitions verifies', async () => {
    const { dir, manifest } = await freshBackup();
    assert.equal(manifest.partitions, PARTITIONS);
    assert.equal(manifest.keys, 4 + 5 + 6);
    assert.equal(manifest.clusterId, MAP.clusterId);
    for (let p = 0; p < PARTITIONS; p++) {
      const e = manifest.entries[p]!;
      assert.equal(e.file, `partition-${p}.dsb`);
      assert.equal(e.seq, 100 + p);
      assert.equal(e.bytes, statSync(join(dir, e.file)).size);
      const read: Array<{ key: Uint8Array; value: Uint8Array; version: number }> = [];
      const got = await readPartitionFile(join(dir, e.file), async (items) => {
        read.push(...items);
      });
      assert.deepEqual(
        read.map((i) => [hex(i.key), hex(i.value), i.version]),
        partitionItems(p).map((i) => [hex(i.key), hex(i.value), i.version]),
      );
      assert.equal(got.trailer.dedup, 1);
      // The replica's digest at that seq: entries and the dedup table.
      const b = new DigestBuilder();
      for (const i of partitionItems(p)) b.addEntry(i.key, i.value, i.version);
      b.addDedup({ clientId: `c${p}`, requestSeq: 3, seq: 99 as never });
      assert.equal(e.digest, b.finish().digest);
    }
    assert.deepEqual(await verifyBackup(dir), manifest);
    const target = fakeTarget(2);
    const summary = await runRestore(target, dir, { concurrency: 4 });
    assert.equal(summary.keys, manifest.keys);
    assert.equal(summary.content, manifest.content);
    assert.equal(target.data.size, manifest.keys);
    for (let p = 0; p < PARTITIONS; p++)
      for (const i of partitionItems(p)) assert.equal(hex(target.data.get(hex(i.key))!.value), hex(i.value));
  });

  test('keys with a TTL (§16): backed up with their expiry, restored with what is left, skipped once past', async () => {
    const now = Date.now();
    // Partition 2: item 0 expires in an hour, item 1 expired a minute ago.
    const expiry = (p: number, i: number) =>
      p !== 2 ? undefined : i === 0 ? now + 3_600_000 : i === 1 ? now - 60_000 : undefined;
    const dir = newDir();
    const { manifest } = await runBackup(fakeSource(expiry), dir);
    assert.equal(manifest.keys, 15);
    assert.equal(manifest.entries[2]!.transient, 2);
    const read: Array<{ expiresAt?: number }> = [];
    await readPartitionFile(join(dir, manifest.entries[2]!.file), async (items) => {
      read.push(...items);
    });
    assert.deepEqual(
      read.slice(0, 3).map((i) => i.expiresAt),
      [now + 3_600_000, now - 60_000, undefined],
    );
    assert.deepEqual(await verifyBackup(dir), manifest);
    const target = fakeTarget(2);
    const summary = await runRestore(target, dir);
    assert.equal(summary.keys, 13, 'the keys without an expiry are compared');
    assert.equal(target.data.size, 14, 'the expired key is not restored');
    const kept = target.data.get(hex(enc.encode('k2-0')))!;
    assert.ok(kept.ttlMs !== undefined && kept.ttlMs <= 3_600_000 && kept.ttlMs > 3_500_000, String(kept.ttlMs));
    assert.equal(target.data.has(hex(enc.encode('k2-1'))), false);
  });

  test('a DIR that is not empty is refused, and nothing in it is touched', async () => {
    const { dir } = await freshBackup();
    const before = readFileSync(join(dir, 'manifest.json'), 'utf8');
    await assert.rejects(runBackup(fakeSource(), dir), BackupDirNotEmptyError);
    assert.equal(readFileSync(join(dir, 'manifest.json'), 'utf8'), before);
  });

  test('a flipped byte in an item is found, named with its partition', async () => {
    const { dir, manifest } = await freshBackup();
    const e = manifest.entries[2]!;
    const path = join(dir, e.file);
    const bytes = readFileSync(path);
    const at = bytes.indexOf(Buffer.from('value of 2-3'));
    assert.ok(at > 0);
    bytes[at] = bytes[at]! ^ 0x01;
    writeFileSync(path, bytes);
    await assertRefused(dir, /^backup file partition-2\.dsb \(partition 2\) is corrupt: a frame fails its CRC at byte/);
  });

  test('a truncated file is found', async () => {
    const { dir, manifest } = await freshBackup();
    truncateSync(join(dir, 'partition-1.dsb'), manifest.entries[1]!.bytes - 5);
    await assertRefused(dir, /^backup file partition-1\.dsb \(partition 1\) is corrupt: it is \d+ bytes, the manifest/);
    // Truncated and the manifest's size edited to match: the frames say so.
    const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Manifest;
    const edited = {
      ...m,
      bytes: m.bytes - 5,
      entries: m.entries.map((e) => (e.partition === 1 ? { ...e, bytes: e.bytes - 5 } : e)),
    };
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify(edited));
    await assertRefused(dir, /^backup file partition-1\.dsb \(partition 1\) is corrupt: the file ends inside a frame/);
  });

  test('a missing file is found', async () => {
    const { dir } = await freshBackup();
    unlinkSync(join(dir, 'partition-0.dsb'));
    await assertRefused(dir, /^backup file partition-0\.dsb \(partition 0\) is corrupt: the file is missing$/);
  });

  test('a wrong sha256 is found', async () => {
    const { dir } = await freshBackup();
    const text = readFileSync(join(dir, 'manifest.json'), 'utf8');
    const m = JSON.parse(text) as Manifest;
    const wrong = m.entries[1]!.sha256.replace(/^./, (c) => (c === '0' ? '1' : '0'));
    writeFileSync(join(dir, 'manifest.json'), text.replace(m.entries[1]!.sha256, wrong));
    await assertRefused(
      dir,
      /^backup file partition-1\.dsb \(partition 1\) is corrupt: its sha256 is [0-9a-f]{64}, the/,
    );
  });

  test('a manifest edited by hand is found', async () => {
    const { dir } = await freshBackup();
    const path = join(dir, 'manifest.json');
    const text = readFileSync(path, 'utf8');
    const m = JSON.parse(text) as Manifest;
    // Keys changed on one entry only: the totals no longer add up.
    writeFileSync(path, JSON.stringify({ ...m, entries: m.entries.map((e, i) => (i === 0 ? { ...e, keys: 5 } : e)) }));
    await assertRefused(dir, /^backup .* is not usable: manifest\.json says 15 keys, its partitions add up to 16$/);
    // Keys changed consistently: the file holds another count.
    const keys = { ...m, keys: 16, entries: m.entries.map((e, i) => (i === 0 ? { ...e, keys: 5 } : e)) };
    writeFileSync(path, JSON.stringify(keys));
    await assertRefused(
      dir,
      /^backup file partition-0\.dsb \(partition 0\) is corrupt: it holds 4 items, the manifest/,
    );
    // Not JSON at all; and no manifest.
    writeFileSync(path, text.slice(0, 40));
    await assertRefused(dir, /is not usable: manifest\.json is not valid JSON/);
    unlinkSync(path);
    await assertRefused(dir, /is not usable: there is no manifest\.json/);
  });

  test('a target cluster that holds a key is refused before anything is put', async () => {
    const { dir } = await freshBackup();
    const target = fakeTarget(2, [['already', 'here']]);
    await assert.rejects(runRestore(target, dir), ClusterNotEmptyError);
    assert.equal(target.puts, 0);
  });

  test('a target that loses a put is reported as a mismatch, not a success', async () => {
    const { dir } = await freshBackup();
    const target = fakeTarget(2);
    const put = target.put;
    let n = 0;
    target.put = async (key, value) => (n++ === 3 ? 0 : put(key, value)); // acknowledged, never stored
    await assert.rejects(runRestore(target, dir), (err: unknown) => {
      assert.ok(err instanceof RestoreMismatchError);
      assert.match(err.message, /holds 14 keys .* the backup 15 keys .* partial or different restore/);
      return true;
    });
  });
});

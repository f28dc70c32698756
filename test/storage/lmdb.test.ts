/**
 * The lmdb backend passes the backend conformance suite (DESIGN §8) with --sync batch and
 * --sync none, each test in a fresh temp dir removed afterwards. Beyond the suite, through
 * the raw LMDB files: a corrupted log record is detected on read (S13), a snapshot
 * half-installed when the process stopped is discarded on restart with its dedup table
 * (S11, S10), also when only the dedup table was staged, and the data and dedup records
 * of dropped partitions and replaced snapshots are garbage-collected.
 */
import { test } from 'node:test';
import { readFileSync, readdirSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open } from 'lmdb';
import { InvalidArgumentError, StorageFailureError } from '../../src/core/errors.js';
import { SmallFs, smallFsUnavailableReason } from '../../src/process/small-fs.js';
import { epoch, partitionId, seq } from '../../src/core/types.js';
import type { SnapshotItem, SyncMode } from '../../src/storage/backend.js';
import { CorruptRecordError, LmdbBackend } from '../../src/storage/lmdb.js';
import { openBackend } from '../../src/storage/open.js';
import { type BackendHarness, backendConformance, fixtures } from './conformance.js';
import { flipInFile } from './flip-bytes.js';
import { LogStore } from '../../src/storage/log-store.js';
import { encodeEntry } from '../../src/storage/log-record.js';
import { decodeState, encodeState, logKey, partKey } from '../../src/storage/lmdb/layout.js';

const { P1, P2, b, pos, put, puts, tag, rec, append, apply, pagesOf } = fixtures;
const SMALL_FS_SKIP = smallFsUnavailableReason('the lmdb upgrade disk-full test');

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'dstore-lmdb-'));
}

async function harness(sync: SyncMode): Promise<BackendHarness> {
  const dir = await tempDir();
  let current: LmdbBackend;
  try {
    current = await LmdbBackend.open({ dataDir: dir, sync });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    backend: current,
    reopen: async () => {
      await current.close();
      current = await LmdbBackend.open({ dataDir: dir, sync });
      return current;
    },
    corruptValue: async (value) => {
      await current.close();
      assert.ok(flipInFile(join(dir, 'lmdb', 'data.mdb'), Buffer.from(value)) >= 1, 'the value is in data.mdb');
      current = await LmdbBackend.open({ dataDir: dir, sync });
      return current;
    },
    scanPeakBytes: () => current.scanPeakBytes,
    cleanup: async () => {
      try {
        await current.close();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}

backendConformance('lmdb (sync batch)', () => harness('batch'));
backendConformance('lmdb (sync none)', () => harness('none'));

/** Runs `body` with a temp dir that is removed whatever happens. */
async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await tempDir();
  try {
    await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Opens the raw environment (the backend must be closed). */
async function withRaw<T>(dir: string, body: (db: ReturnType<typeof openDbs>) => T): Promise<T> {
  const env = open<Buffer, Buffer>({
    path: join(dir, 'lmdb'),
    maxDbs: 8,
    overlappingSync: false,
    keyEncoding: 'binary',
    encoding: 'binary',
  });
  try {
    return body(openDbs(env));
  } finally {
    await env.close();
  }
}
function openDbs(env: ReturnType<typeof open<Buffer, Buffer>>) {
  const options = { keyEncoding: 'binary', encoding: 'binary' } as const;
  return {
    log: env.openDB<Buffer, Buffer>('log', options),
    data: env.openDB<Buffer, Buffer>('data', options),
    dedup: env.openDB<Buffer, Buffer>('dedup', options),
    sys: env.openDB<Buffer, Buffer>('sys', options),
  };
}

/** Data (or dedup) keys stored for a partition, whatever their generation. */
function dataKeysOf(data: ReturnType<typeof openDbs>['data'], partition: number): number {
  const lo = Buffer.alloc(8);
  lo.writeUInt32BE(partition, 0);
  const hi = Buffer.alloc(8);
  hi.writeUInt32BE(partition + 1, 0);
  return data.getCount({ start: lo, end: hi });
}

test('openBackend opens lmdb in <dataDir>/lmdb and needs a data dir', async () => {
  await assert.rejects(openBackend('lmdb', {}), InvalidArgumentError);
  await withDir(async (dir) => {
    const backend = await openBackend('lmdb', { dataDir: dir, sync: 'batch' });
    try {
      assert.equal(backend.kind, 'lmdb');
      assert.ok((await stat(join(dir, 'lmdb'))).isDirectory());
    } finally {
      await backend.close();
    }
    await assert.rejects(backend.writeBatch([]), StorageFailureError, 'a closed backend refuses writes');
  });
});

/** The segment files of the replica log (format 3), oldest first. */
function segmentsOf(dir: string): string[] {
  return readdirSync(join(dir, 'log'))
    .filter((f) => f.endsWith('.seg'))
    .sort()
    .map((f) => join(dir, 'log', f));
}

test('S13: a log record corrupted on disk is detected on read, never returned', async () => {
  await withDir(async (dir) => {
    const backend = await LmdbBackend.open({ dataDir: dir });
    try {
      await backend.writeBatch([
        append(P1, [...puts(1, 1, 1), put(2, 1, 'k2', 'SECOND-ENTRY-VALUE'), ...puts(3, 5, 1)]),
      ]);
      const [segment] = segmentsOf(dir);
      assert.ok(segment && flipInFile(segment, Buffer.from('SECOND-ENTRY-VALUE')) === 1);
      assert.equal((await backend.readLog(P1, { fromSeq: seq(1), toSeq: seq(1), limit: 10 })).length, 1);
      await assert.rejects(backend.readLog(P1, { fromSeq: seq(1), toSeq: seq(5), limit: 10 }), (err: unknown) => {
        assert.ok(err instanceof CorruptRecordError && err instanceof StorageFailureError);
        assert.match(err.message, /checksum/);
        return true;
      });
    } finally {
      await backend.close();
    }
  });
});

test(
  'S13: a log record corrupted inside the log does not stop the open: the log is moved aside ' +
    'and every partition opens corrupt (relearned); dropping them leaves a working backend',
  async () => {
    await withDir(async (dir) => {
      let backend = await LmdbBackend.open({ dataDir: dir });
      await backend.writeBatch([
        append(P1, [put(1, 1, 'k1', 'FIRST-ENTRY-VALUE'), ...puts(2, 4, 1)]),
        apply(P1, puts(1, 2, 1)),
        append(P2, puts(1, 2, 1)),
      ]);
      await backend.close();
      const [segment] = segmentsOf(dir);
      assert.ok(segment && flipInFile(segment, Buffer.from('FIRST-ENTRY-VALUE')) === 1);
      backend = await LmdbBackend.open({ dataDir: dir });
      try {
        const states = await backend.partitions();
        assert.deepStrictEqual(
          states.map((p) => p.partition),
          [P1],
          'P2 had nothing applied: with its log gone it holds nothing',
        );
        assert.match(states[0]?.corrupt ?? '', /replica log failed its checks at open \(moved to .*log\.corrupt-/);
        assert.ok(
          readdirSync(dir).some((f) => f.startsWith('log.corrupt-')),
          'the bad log is kept for a look',
        );
        await backend.writeBatch([{ kind: 'dropPartition', partition: P1 }]);
        await backend.writeBatch([append(P1, puts(1, 1, 2))]);
        assert.equal((await backend.readLog(P1, { fromSeq: seq(1), toSeq: seq(9), limit: 10 })).length, 1);
      } finally {
        await backend.close();
      }
    });
  },
);

test('S11: a snapshot half-installed when the process stopped is discarded on restart', async () => {
  await withDir(async (dir) => {
    let backend = await LmdbBackend.open({ dataDir: dir });
    await backend.writeBatch([
      apply(P1, [tag(put(1, 1, 'k1', 'v'), 'c1', 1), tag(put(2, 1, 'k2', 'v'), 'c2', 1), put(3, 1, 'k3', 'v')]),
    ]);
    const dedupBefore = await backend.dedupTable(P1);
    const items: SnapshotItem[] = [];
    for (let i = 0; i < 6000; i++)
      items.push({ key: b(`s${String(i).padStart(5, '0')}`), value: b('v'), version: seq(1) });
    let release: () => void = () => undefined;
    const stalled = new Promise<void>((resolve) => (release = resolve));
    let pagesTaken = 0;
    async function* source(): AsyncIterable<readonly SnapshotItem[]> {
      for (let i = 0; i < items.length; i += 1000) {
        if (i === 5000) await stalled; // the "crash": more than one stage is written by now
        pagesTaken += 1;
        yield items.slice(i, i + 1000);
      }
    }
    const install = backend.installSnapshot(P1, pos(10, 1), source(), [rec('c1', 9, 10), rec('c3', 1, 9)]);
    for (let i = 0; i < 1000 && pagesTaken < 5; i++) await new Promise((r) => setImmediate(r));
    await backend.idle();
    await backend.close();
    release();
    await assert.rejects(install, StorageFailureError);
    // A stage holds 4096 puts, dedup records first: 3 + 2 keys were there before it.
    const staged = await withRaw(dir, ({ data, dedup }) => dataKeysOf(data, P1) + dataKeysOf(dedup, P1));
    assert.ok(staged >= 3 + 2 + 4096, `the first stage was written (${staged} keys)`);
    assert.equal(await withRaw(dir, ({ dedup }) => dataKeysOf(dedup, P1)), 2 + 2, 'the dedup table was staged');
    backend = await LmdbBackend.open({ dataDir: dir });
    try {
      assert.equal(await backend.count(P1), 3);
      assert.deepStrictEqual((await backend.partitions())[0]?.applied, pos(3, 1));
      assert.deepStrictEqual(await backend.dedupTable(P1), dedupBefore);
      await backend.idle();
    } finally {
      await backend.close();
    }
    assert.equal(await withRaw(dir, ({ data }) => dataKeysOf(data, P1)), 3, 'the staged generation is gone');
    assert.equal(await withRaw(dir, ({ dedup }) => dataKeysOf(dedup, P1)), 2, 'so is its dedup table');
  });
});

test('the data and dedup records of a dropped partition and of a replaced snapshot are garbage-collected', async () => {
  const tagged = (from: number, to: number) => puts(from, to, 1).map((e) => tag(e, `client-${e.seq}`, 1));
  await withDir(async (dir) => {
    const backend = await LmdbBackend.open({ dataDir: dir, sync: 'none' });
    try {
      await backend.writeBatch([apply(P1, tagged(1, 3000)), apply(P2, tagged(1, 2500))]);
      await backend.writeBatch([{ kind: 'dropPartition', partition: P1 }]);
      await backend.installSnapshot(P2, pos(5, 2), pagesOf([{ key: b('only'), value: b('1'), version: seq(5) }], 1), [
        rec('c', 1, 5),
      ]);
      await backend.idle();
      assert.equal(await backend.count(P2), 1);
      assert.deepStrictEqual(await backend.dedupTable(P2), [rec('c', 1, 5)]);
    } finally {
      await backend.close();
    }
    await withRaw(dir, ({ data, dedup }) => {
      assert.equal(dataKeysOf(data, P1), 0);
      assert.equal(dataKeysOf(data, P2), 1);
      assert.equal(dataKeysOf(data, partitionId(3)), 0);
      assert.equal(dataKeysOf(dedup, P1), 0);
      assert.equal(dataKeysOf(dedup, P2), 1);
    });
  });
});

test(
  'S11: an install interrupted after staging only its dedup table ' +
    'is discarded on restart, and its generation is never reused',
  async () => {
    await withDir(async (dir) => {
      let backend = await LmdbBackend.open({ dataDir: dir });
      await backend.writeBatch([apply(P1, [tag(put(1, 1, 'k', 'v'), 'c1', 1)])]);
      const dedup = Array.from({ length: 5000 }, (_, i) =>
        rec(`client-${String(i).padStart(4, '0')}`, i, 1 + (i % 10)),
      );
      let release: () => void = () => undefined;
      const stalled = new Promise<void>((resolve) => (release = resolve));
      let started = false;
      async function* source(): AsyncIterable<readonly SnapshotItem[]> {
        started = true;
        await stalled; // the "crash": the dedup table is staged, no data yet
        yield [];
      }
      const install = backend.installSnapshot(P1, pos(10, 1), source(), dedup);
      for (let i = 0; i < 1000 && !started; i++) await new Promise((r) => setImmediate(r));
      await backend.idle();
      await backend.close();
      release();
      await assert.rejects(install, StorageFailureError);
      const stagedGeneration = await withRaw(dir, ({ data, dedup: db }) => {
        assert.ok(dataKeysOf(db, P1) >= 1 + 4096, 'the first stage of the dedup table was written');
        assert.equal(dataKeysOf(data, P1), 1, 'no data was staged');
        return Math.max(...[...db.getKeys({})].map((key) => key.readUInt32BE(4)));
      });
      backend = await LmdbBackend.open({ dataDir: dir });
      try {
        assert.deepStrictEqual(await backend.dedupTable(P1), [rec('c1', 1, 1)]);
        // A new partition takes a fresh generation: it must be above the staged one, which
        // only the dedup records show, or a new generation of P1 could pick them up.
        await backend.writeBatch([apply(P2, [put(1, 1, 'x', 'y')])]);
        await backend.idle();
      } finally {
        await backend.close();
      }
      await withRaw(dir, ({ data, dedup: db }) => {
        assert.equal(dataKeysOf(db, P1), 1, 'the staged dedup records are gone');
        const p2Generations = [...data.getKeys({})]
          .filter((key) => key.readUInt32BE(0) === P2)
          .map((key) => key.readUInt32BE(4));
        assert.deepStrictEqual(p2Generations.length, 1);
        assert.ok(
          p2Generations[0]! > stagedGeneration,
          `generation ${p2Generations[0]} is above the staged ${stagedGeneration}`,
        );
      });
    });
  },
);

/**
 * Rewrites the (closed) environment in `dir` as format 1 wrote it: data values u64 version ·
 * value bytes (the test values are `v<seq>` under `k<seq>`), format byte 1. The value of
 * each key in `shorten` becomes 3 bytes long, as a torn or garbled format-1 write left it.
 */
/**
 * Turns a closed format-3 data dir into the format-2 layout an older dstore wrote: every
 * partition's log entries in LMDB's `log` database, its metadata and log base in its state
 * record, no segment log.
 */
async function rewriteAsFormat2(dir: string): Promise<void> {
  const { store } = await LogStore.open(join(dir, 'log'));
  const env = open<Buffer, Buffer>({ path: join(dir, 'lmdb'), maxDbs: 8, keyEncoding: 'binary', encoding: 'binary' });
  try {
    const dbs = openDbs(env);
    const part = env.openDB<Buffer, Buffer>('part', { keyEncoding: 'binary', encoding: 'binary' });
    const writes: Array<[typeof part, Buffer, Buffer]> = [];
    for (const [p, l] of store.partitions()) {
      for (const e of await store.read(p, l.base.seq + 1, l.last.seq, 1_000_000)) {
        writes.push([dbs.log, logKey(p, e.seq), encodeEntry(e)]);
      }
      const raw = part.get(partKey(p));
      const r = raw === undefined ? undefined : decodeState(raw, 'state');
      const state = {
        meta: l.meta,
        applied: r?.applied ?? pos(0, 0),
        logBase: l.base,
        logLast: l.last,
        generation: r?.generation ?? 1,
        keyCount: r?.keyCount ?? 0,
      };
      writes.push([part, partKey(p), encodeState(state)]);
    }
    await env.transaction(() => {
      for (const [db, k, v] of writes) db.putSync(k, v);
      dbs.sys.putSync(Buffer.from('format'), Buffer.from([2]));
    });
  } finally {
    await store.close();
    await env.close();
  }
  await rm(join(dir, 'log'), { recursive: true, force: true });
}

test('format 2 (the log inside LMDB) is moved to the segment log at open: metadata, base and entries', async () => {
  await withDir(async (dir) => {
    let backend = await LmdbBackend.open({ dataDir: dir });
    const m = { epoch: epoch(3), config: null };
    const log = puts(1, 2100, 1); // more than one move chunk (1024)
    await backend.writeBatch([
      append(P1, log),
      apply(P1, log.slice(0, 2000)),
      { kind: 'setMeta', partition: P1, meta: m },
    ]);
    await backend.writeBatch([{ kind: 'truncateLogTo', partition: P1, base: pos(100, 1) }]);
    await backend.writeBatch([append(P2, puts(1, 2, 1))]);
    await backend.close(); // the truncation reaches the log at close
    await rewriteAsFormat2(dir);
    for (let open = 0; open < 2; open++) {
      backend = await LmdbBackend.open({ dataDir: dir });
      try {
        assert.equal(backend.migrated, open === 0 ? 2000 + 2 : 0);
        const [p1, p2] = await backend.partitions();
        assert.deepStrictEqual(
          [p1?.meta, p1?.logBase, p1?.logLast, p1?.applied],
          [m, pos(100, 1), pos(2100, 1), pos(2000, 1)],
        );
        assert.deepStrictEqual(p2?.logLast, pos(2, 1));
        const entries = await backend.readLog(P1, { fromSeq: seq(1), toSeq: seq(3000), limit: 5000 });
        assert.deepStrictEqual([entries.length, entries[0]?.seq], [2000, 101]);
        assert.deepStrictEqual(await backend.get(P1, b('k2000')), { value: b('v2000'), version: seq(2000) });
      } finally {
        await backend.close();
      }
    }
    await withRaw(dir, ({ log, sys }) => {
      assert.equal(log.getCount({}), 0, "LMDB's copy of the log is deleted");
      assert.deepStrictEqual([...(sys.get(Buffer.from('format')) ?? [])], [3]);
    });
  });
});

async function rewriteAsFormat1(dir: string, shorten: readonly string[] = []): Promise<void> {
  await rewriteAsFormat2(dir);
  const env = open<Buffer, Buffer>({ path: join(dir, 'lmdb'), maxDbs: 8, keyEncoding: 'binary', encoding: 'binary' });
  try {
    const dataDb = env.openDB<Buffer, Buffer>('data', { keyEncoding: 'binary', encoding: 'binary' });
    const sysDb = env.openDB<Buffer, Buffer>('sys', { keyEncoding: 'binary', encoding: 'binary' });
    const old: Array<[Buffer, Buffer]> = [];
    for (const { key } of dataDb.getRange({})) {
      const name = Buffer.from(key).subarray(8).toString();
      const s = Number(name.slice(1));
      const v = Buffer.alloc(8);
      v.writeUInt32BE(s, 4);
      old.push([
        Buffer.from(key),
        shorten.includes(name) ? Buffer.from([1, 2, 3]) : Buffer.concat([v, Buffer.from(`v${s}`)]),
      ]);
    }
    await env.transaction(() => {
      for (const [k, v] of old) dataDb.putSync(k, v);
      sysDb.putSync(Buffer.from('format'), Buffer.from([1]));
    });
  } finally {
    await env.close();
  }
}

test(
  'format 1 (values without checksums) is upgraded at open: every value gets ' +
    'its checksum, reads are unchanged, a flipped byte is caught afterwards ' +
    '(S13)',
  async () => {
    await withDir(async (dir) => {
      let backend = await LmdbBackend.open({ dataDir: dir });
      const log = puts(1, 2500, 1); // more than one upgrade chunk (1024)
      await backend.writeBatch([append(P1, log), apply(P1, log), append(P2, puts(1, 3, 1)), apply(P2, puts(1, 3, 1))]);
      await backend.close();
      await rewriteAsFormat1(dir);
      backend = await LmdbBackend.open({ dataDir: dir });
      try {
        assert.equal(backend.upgraded, 2503);
        assert.deepStrictEqual(await backend.get(P1, b('k2500')), { value: b('v2500'), version: seq(2500) });
        assert.deepStrictEqual(await backend.get(P2, b('k3')), { value: b('v3'), version: seq(3) });
        assert.equal((await backend.scan(P1, { limit: 5000 })).keys.length, 2500);
      } finally {
        await backend.close();
      }
      backend = await LmdbBackend.open({ dataDir: dir });
      assert.equal(backend.upgraded, 0, 'upgraded once');
      await backend.close();
    });
  },
);

test(
  'a format-1 value too short to upgrade marks only its partition corrupt ' +
    '(S13): the upgrade completes, the value is never served, the mark lasts ' +
    'until the partition is replaced',
  async () => {
    await withDir(async (dir) => {
      let backend = await LmdbBackend.open({ dataDir: dir });
      const p1 = puts(1, 1500, 1); // the bad record in the first upgrade chunk, others after it
      await backend.writeBatch([append(P1, p1), apply(P1, p1), append(P2, puts(1, 3, 1)), apply(P2, puts(1, 3, 1))]);
      await backend.close();
      await rewriteAsFormat1(dir, ['k7']);
      backend = await LmdbBackend.open({ dataDir: dir });
      try {
        assert.equal(backend.upgraded, 1503, 'every record was read by the upgrade');
        const states = await backend.partitions();
        assert.match(
          states.find((s) => s.partition === P1)?.corrupt ?? '',
          /partition 1: upgrading lmdb format 1: a data value of 3 bytes is shorter than its version/,
        );
        assert.equal(states.find((s) => s.partition === P2)?.corrupt, undefined, 'the other partition is healthy');
        assert.deepStrictEqual(await backend.get(P2, b('k3')), { value: b('v3'), version: seq(3) });
        assert.deepStrictEqual(
          await backend.get(P1, b('k1500')),
          { value: b('v1500'), version: seq(1500) },
          'records after the bad one were upgraded',
        );
        await assert.rejects(backend.get(P1, b('k7')), CorruptRecordError, 'the bad record is never served');
        await assert.rejects(backend.scan(P1, { limit: 2000 }), CorruptRecordError);
      } finally {
        await backend.close();
      }
      // Still marked at the next open (the storage server had no time to relearn it).
      backend = await LmdbBackend.open({ dataDir: dir });
      try {
        assert.equal(backend.upgraded, 0);
        assert.match(
          (await backend.partitions()).find((s) => s.partition === P1)?.corrupt ?? '',
          /shorter than its version/,
        );
        // What a replica does to relearn it: drop it, then install a snapshot under a new generation.
        await backend.writeBatch([{ kind: 'dropPartition', partition: P1 }]);
        await backend.installSnapshot(
          P1,
          pos(2, 1),
          pagesOf([{ key: b('k1'), value: b('fresh'), version: seq(2) }], 10),
        );
      } finally {
        await backend.close();
      }
      backend = await LmdbBackend.open({ dataDir: dir });
      try {
        assert.equal(
          (await backend.partitions()).find((s) => s.partition === P1)?.corrupt,
          undefined,
          'the relearned partition is healthy',
        );
        assert.deepStrictEqual(await backend.get(P1, b('k1')), { value: b('fresh'), version: seq(2) });
      } finally {
        await backend.close();
      }
      await withRaw(dir, (dbs) => {
        assert.equal(
          [...dbs.sys.getKeys({})].filter((k) => Buffer.from(k).toString().startsWith('upgrade-corrupt:')).length,
          0,
          'the stale marker is deleted',
        );
      });
    });
  },
);

// S13: the upgrade marker (sys) names the partition corrupt; the replica's (its metadata) reads back as written.
test('S13: both corrupt markers are honoured at open', async () => {
  await withDir(async (dir) => {
    let backend = await LmdbBackend.open({ dataDir: dir });
    const meta = (corrupt: string) => ({ epoch: epoch(1), config: null, corrupt });
    await backend.writeBatch([append(P1, puts(1, 9, 1)), apply(P1, puts(1, 9, 1)), append(P2, puts(1, 3, 1))]);
    await backend.writeBatch([
      apply(P2, puts(1, 3, 1)),
      { kind: 'setMeta', partition: P1, meta: meta('found on read') },
    ]);
    await backend.writeBatch([{ kind: 'setMeta', partition: P2, meta: meta('P2 found on read') }]);
    await backend.close();
    await rewriteAsFormat1(dir, ['k7']); // P1 gets an upgrade marker too; P2 only its replica marker
    for (let open = 0; open < 2; open++) {
      backend = await LmdbBackend.open({ dataDir: dir });
      try {
        const [p1, p2] = await backend.partitions();
        assert.match(p1?.corrupt ?? '', /partition 1: upgrading lmdb format 1: a data value of 3 bytes/);
        assert.deepStrictEqual(p1?.meta, meta('found on read'), 'the replica marker as written');
        assert.equal(p2?.corrupt, undefined, 'nothing found at open');
        assert.deepStrictEqual(p2?.meta, meta('P2 found on read'));
      } finally {
        await backend.close();
      }
    }
  });
});

test('a full disk during the format-1 upgrade (or the first format write) fails ' +
  'the open with a typed error naming ENOSPC and no unhandled rejection; ' +
  'with space again the upgrade completes', {
  skip: SMALL_FS_SKIP ?? false,
  timeout: 60_000,
}, async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason);
  };
  process.on('unhandledRejection', onUnhandled);
  const mountDir = await mkdtemp(join(tmpdir(), 'dstore-lmdb-upgrade-full-'));
  let fs: SmallFs | undefined;
  try {
    await withDir(async (src) => {
      // A format-1 environment, copied compacted onto a 4 MiB tmpfs: no free pages inside its
      // file, so the upgrade's first transaction must grow it (copy-on-write).
      const backend = await LmdbBackend.open({ dataDir: src });
      const log = puts(1, 3000, 1);
      await backend.writeBatch([apply(P1, log)]);
      await backend.close();
      await rewriteAsFormat1(src);
      fs = SmallFs.mount(mountDir, 4 * 1024 * 1024);
      await mkdir(join(mountDir, 'lmdb'));
      const env = open<Buffer, Buffer>({
        path: join(src, 'lmdb'),
        maxDbs: 8,
        keyEncoding: 'binary',
        encoding: 'binary',
      });
      try {
        await env.backup(join(mountDir, 'lmdb'), true);
      } finally {
        await env.close();
      }
    });
    // And two environments dstore never opened: one with nothing in it (opening creates its
    // named databases), one with its databases and no format record (the first format write).
    for (const name of ['fresh', 'unformatted']) {
      await mkdir(join(mountDir, name, 'lmdb'), { recursive: true });
      const env = open<Buffer, Buffer>({ path: join(mountDir, name, 'lmdb'), maxDbs: 8 });
      if (name === 'unformatted')
        for (const db of ['sys', 'part', 'log', 'data', 'dedup'])
          env.openDB<Buffer, Buffer>(db, { keyEncoding: 'binary', encoding: 'binary' });
      await env.close();
    }
    // LMDB maps lock.mdb and writes it through the map: on a full tmpfs a page not yet backed
    // kills the process with SIGBUS (lmdb's, not ours: a server restarted on a full disk has
    // its lock file from before). Back every page of the lock files before filling the disk.
    for (const dir of ['lmdb', 'fresh/lmdb', 'unformatted/lmdb'].map((d) => join(mountDir, d))) {
      await open<Buffer, Buffer>({ path: dir, maxDbs: 8 }).close();
      const lock = join(dir, 'lock.mdb');
      writeFileSync(lock, readFileSync(lock));
    }
    assert.ok(fs !== undefined);
    fs.fill();
    const failure = await LmdbBackend.open({ dataDir: mountDir }).then(
      async (b) => {
        await b.close();
        return undefined;
      },
      (err: unknown) => err,
    );
    assert.ok(
      failure instanceof StorageFailureError,
      `the open failed with a StorageFailureError, not ${String(failure)}`,
    );
    assert.match(failure.message, /upgrading lmdb format 1 to 2: lmdb transaction failed: .*\((ENOSPC|EIO)\)/);
    for (const [name, message] of [
      ['fresh', /cannot open lmdb in .*: .*\((ENOSPC|EIO)\)/],
      ['unformatted', /writing the lmdb format record: lmdb transaction failed: .*\((ENOSPC|EIO)\)/],
    ] as const) {
      await assert.rejects(LmdbBackend.open({ dataDir: join(mountDir, name) }), (err: unknown) => {
        assert.ok(
          err instanceof StorageFailureError,
          `${name}: the open failed with a StorageFailureError, not ${String(err)}`,
        );
        assert.match(err.message, message);
        return true;
      });
    }
    // Two macrotasks: lmdb rejects its commitError promise in the commit's own callback.
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 0));
    assert.deepEqual(
      unhandled.map((r) => (r as Error).message ?? String(r)),
      [],
      'no unhandled rejection',
    );

    fs.free();
    const backend = await LmdbBackend.open({ dataDir: mountDir });
    try {
      assert.equal(backend.upgraded, 3000);
      assert.deepStrictEqual(await backend.get(P1, b('k3000')), { value: b('v3000'), version: seq(3000) });
    } finally {
      await backend.close();
    }
  } finally {
    process.off('unhandledRejection', onUnhandled);
    fs?.unmount();
    await rm(mountDir, { recursive: true, force: true });
  }
});

test('an lmdb environment of an unknown format is refused with one line naming the versions', async () => {
  await withDir(async (dir) => {
    const backend = await LmdbBackend.open({ dataDir: dir });
    await backend.close();
    const env = open<Buffer, Buffer>({ path: join(dir, 'lmdb'), maxDbs: 8, keyEncoding: 'binary', encoding: 'binary' });
    await env
      .openDB<Buffer, Buffer>('sys', { keyEncoding: 'binary', encoding: 'binary' })
      .put(Buffer.from('format'), Buffer.from([7]));
    await env.close();
    await assert.rejects(
      LmdbBackend.open({ dataDir: dir }),
      /lmdb data format 07 is not one this version reads \(1 or 2, upgraded at open, or 3\)/,
    );
  });
});

test(
  'a torn tail (the last append cut short by a crash, never acknowledged) is cut off at open; ' +
    'the log before it is intact and goes on',
  async () => {
    await withDir(async (dir) => {
      let backend = await LmdbBackend.open({ dataDir: dir });
      await backend.writeBatch([append(P1, puts(1, 4, 1)), apply(P1, puts(1, 3, 1))]);
      await backend.writeBatch([append(P1, [put(5, 1, 'last', 'LAST-RECORD-0123456789abcdef')])]);
      await backend.close();
      const [segment] = segmentsOf(dir);
      assert.ok(segment);
      truncateSync(segment, statSync(segment).size - 7);
      backend = await LmdbBackend.open({ dataDir: dir });
      try {
        const [p1] = await backend.partitions();
        assert.equal(p1?.corrupt, undefined);
        assert.deepStrictEqual([p1?.applied, p1?.logLast], [pos(3, 1), pos(4, 1)]);
        await backend.writeBatch([append(P1, [put(5, 1, 'again', 'v')])]);
        const log = await backend.readLog(P1, { fromSeq: seq(1), toSeq: seq(9), limit: 10 });
        assert.deepStrictEqual(
          log.map((e) => e.seq),
          [1, 2, 3, 4, 5],
        );
        assert.deepStrictEqual(await backend.get(P1, b('k3')), { value: b('v3'), version: seq(3) });
      } finally {
        await backend.close();
      }
    });
  },
);

test('S12: under a steady load with truncations, log segments whose entries are all applied are deleted', async () => {
  await withDir(async (dir) => {
    const backend = await LmdbBackend.open({ dataDir: dir, logSegmentBytes: 16 * 1024 });
    try {
      let most = 0;
      // Bounded: 300 batches of 20 entries, each applied and truncated behind (a tail of 100 kept).
      for (let i = 0; i < 300; i++) {
        const entries = puts(1 + i * 20, 20 + i * 20, 1);
        const last = 20 + i * 20;
        const ops = [append(P1, entries), apply(P1, entries)];
        if (last > 100) ops.push({ kind: 'truncateLogTo', partition: P1, base: pos(last - 100, 1) });
        await backend.writeBatch(ops);
        most = Math.max(most, segmentsOf(dir).length);
      }
      await backend.idle();
      await backend.writeBatch([append(P1, puts(6001, 6001, 1))]); // carries the last truncation
      await backend.idle();
      const segments = segmentsOf(dir).length;
      assert.ok(segments <= 8, `old segments are deleted (of ~55 written) (${segments} left, at most ${most} at once)`);
      const [p1] = await backend.partitions();
      assert.deepStrictEqual(p1?.logBase, pos(5900, 1));
      const kept = await backend.readLog(P1, { fromSeq: seq(1), toSeq: seq(7000), limit: 1000 });
      assert.deepStrictEqual([kept[0]?.seq, kept.length], [5901, 101]);
    } finally {
      await backend.close();
    }
    const reopened = await LmdbBackend.open({ dataDir: dir, logSegmentBytes: 16 * 1024 });
    try {
      const [p1] = await reopened.partitions();
      assert.deepStrictEqual([p1?.applied, p1?.logLast], [pos(6000, 1), pos(6001, 1)]);
      assert.ok((p1?.logBase.seq ?? 0) >= 5800, `the truncation survived (base ${p1?.logBase.seq})`);
      assert.deepStrictEqual(await reopened.get(P1, b('k6000')), { value: b('v6000'), version: seq(6000) });
    } finally {
      await reopened.close();
    }
  });
});

test('S13: a data dir whose replica log was deleted (LMDB kept) opens with every partition corrupt', async () => {
  await withDir(async (dir) => {
    let backend = await LmdbBackend.open({ dataDir: dir });
    await backend.writeBatch([append(P1, puts(1, 5, 1)), apply(P1, puts(1, 3, 1)), append(P2, puts(1, 2, 1))]);
    await backend.close();
    await rm(join(dir, 'log'), { recursive: true, force: true });
    backend = await LmdbBackend.open({ dataDir: dir });
    try {
      const states = await backend.partitions();
      assert.deepStrictEqual(
        states.map((s) => s.partition),
        [P1],
        'P2 applied nothing: nothing of it is left',
      );
      assert.match(states[0]?.corrupt ?? '', /its replica log is missing/);
    } finally {
      await backend.close();
    }
  });
});

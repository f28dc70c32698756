/**
 * The lmdb backend on a real full disk (issue 9): a 4 MiB tmpfs holds its data dir; batches
 * are written until a filler file took every free byte. Proves:
 * - the batch that hits the full disk rejects with a StorageFailureError naming ENOSPC (or
 *   EIO, which lmdb reports for some failed page writes), and the process sees no unhandled
 *   rejection (lmdb's own commit promises used to reject unhandled and exit the process);
 * - after the filler is removed, the backend reopened holds every acknowledged batch and
 *   writes again.
 * And the crash guard's rule (crash-guard.ts): a rejection raised inside lmdb's code, or the
 * Redis client's (ioredis, redis-parser, redis-errors, standard-as-callback, cluster-key-slot),
 * is a storage failure, anything else is not.
 * The disk test skips with one line when a tmpfs cannot be mounted (not root, not Linux).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { StorageFailureError } from '../../src/core/errors.js';
import { epoch, partitionId, seq } from '../../src/core/types.js';
import { SmallFs, smallFsUnavailableReason } from '../../src/process/small-fs.js';
import { LmdbBackend } from '../../src/storage/lmdb.js';
import { isStorageEngineRejection } from '../../src/storageserver/crash-guard.js';

const SKIP = smallFsUnavailableReason('the lmdb disk-full test');
const P = partitionId(0);
const VALUE = new Uint8Array(32 * 1024).fill(0x61);

function appendBatch(s: number) {
  return [
    {
      kind: 'appendLog' as const,
      partition: P,
      entries: [
        { seq: seq(s), epoch: epoch(1), op: { kind: 'put' as const, key: Buffer.from(`k${s}`), value: VALUE } },
      ],
    },
  ];
}

test('a full disk fails an lmdb batch with a typed error and no unhandled rejection; ' +
  'reopened after freeing space, nothing acknowledged is lost', {
  skip: SKIP ?? false,
  timeout: 60_000,
}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dstore-lmdb-full-'));
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason);
  };
  process.on('unhandledRejection', onUnhandled);
  const fs = SmallFs.mount(dir, 4 * 1024 * 1024);
  let backend: LmdbBackend | undefined;
  try {
    backend = await LmdbBackend.open({ dataDir: dir });
    let acked = 0;
    for (let s = 1; s <= 10; s++) {
      await backend.writeBatch(appendBatch(s));
      acked = s;
    }
    fs.fill();
    let failure: unknown;
    // Bounded: the filesystem is 4 MiB and each batch adds 32 KiB.
    for (let s = acked + 1; s <= acked + 200; s++) {
      try {
        await backend.writeBatch(appendBatch(s));
        acked = s;
      } catch (err) {
        failure = err;
        break;
      }
    }
    assert.ok(
      failure instanceof StorageFailureError,
      `a batch failed with a StorageFailureError, not ${String(failure)}`,
    );
    assert.match(failure.message, /ENOSPC|EIO/);
    // Two macrotasks: lmdb rejects its commitError promise in the commit's own callback.
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 0));
    assert.deepEqual(
      unhandled.map((r) => (r as Error).message ?? String(r)),
      [],
      'no unhandled rejection',
    );
    await backend.close();
    backend = undefined;

    fs.free();
    backend = await LmdbBackend.open({ dataDir: dir });
    const [state] = await backend.partitions();
    assert.ok(
      state !== undefined && state.logLast.seq >= acked,
      `the log holds every acknowledged batch (last ${state?.logLast.seq}, acknowledged ${acked})`,
    );
    const entries = await backend.readLog(P, { fromSeq: seq(1), toSeq: seq(acked), limit: acked });
    assert.equal(entries.length, acked);
    await backend.writeBatch(appendBatch(state.logLast.seq + 1));
  } finally {
    process.off('unhandledRejection', onUnhandled);
    await backend?.close();
    fs.unmount();
    rmdirSync(dir);
  }
});

test(
  'the crash guard treats a rejection thrown in lmdb or Redis client (ioredis ' +
    'and its helpers) code as a storage failure, and nothing else',
  () => {
    const fromLmdb = new Error('Commit failed (see commitError for details)');
    fromLmdb.stack =
      `Error: Commit failed\n    at rejectCommit (file:///srv/dstore/node_modules/lmdb/write.js:612:17)\n ` +
      `   at resolveWrites (file:///srv/dstore/node_modules/lmdb/write.js:574:40)`;
    assert.equal(isStorageEngineRejection(fromLmdb), true);
    const ours = new Error('a bug');
    ours.stack =
      `Error: a bug\n    at StorageServer.step (file:///srv/dstore/dist/src/storageserver/server.js:10:1)\n ` +
      `   at file:///srv/dstore/node_modules/lmdb/write.js:500:4`;
    assert.equal(isStorageEngineRejection(ours), false, 'only the first frame decides');
    assert.equal(isStorageEngineRejection('a string'), false);
    // The redis backend's client is ioredis, whose replies and errors pass through these packages.
    for (const frame of [
      'at Redis.sendCommand (/srv/dstore/node_modules/ioredis/built/Redis.js:387:28)',
      'at JavascriptRedisParser.execute (/srv/dstore/node_modules/redis-parser/lib/parser.js:544:14)',
      'at new ReplyError (/srv/dstore/node_modules/redis-errors/lib/old.js:8:5)',
      'at Object.asCallback (/srv/dstore/node_modules/standard-as-callback/built/index.js:6:5)',
      'at generateMulti (/srv/dstore/node_modules/cluster-key-slot/lib/index.js:150:3)',
      'at exists (/srv/dstore/node_modules/@ioredis/commands/built/index.js:20:9)',
      'at Object.<anonymous> (C:\\dstore\\node_modules\\ioredis\\built\\Redis.js:1:1)',
    ]) {
      const fromRedisClient = new Error('Connection is closed.');
      fromRedisClient.stack = `Error: Connection is closed.\n    ${frame}`;
      assert.equal(isStorageEngineRejection(fromRedisClient), true, frame);
    }
    const lookalike = new Error('not a dependency');
    lookalike.stack = `Error: x\n    at f (/srv/dstore/node_modules/ioredis-mock/index.js:1:1)`;
    assert.equal(
      isStorageEngineRejection(lookalike),
      false,
      'a package whose name only starts like one is not the engine',
    );
    assert.equal(isStorageEngineRejection(new Error('no stack frames')), false);
  },
);

/**
 * The redis backend passes the backend conformance suite (DESIGN §8) against real
 * redis-server processes (loopback, free ports, throwaway dirs, `--appendonly yes
 * --appendfsync always --save ''`), with --sync batch and --sync none. Beyond the suite,
 * each against its own redis-server:
 * - S14: a Redis that answers before fsync is refused with --sync batch (a typed error that
 *   says how to configure it), accepted with --sync none; an allkeys-* eviction policy is
 *   refused always;
 * - a Redis killed (SIGKILL) under pipelined load: every write in flight or later fails,
 *   none hangs; after Redis restarts from its AOF, a reopened backend holds every
 *   acknowledged batch, and every batch whole or not at all;
 * - a hung Redis (SIGSTOP): writes fail after the command timeout instead of waiting; a Redis
 *   that went away while idle: writes fail at once without breaking the backend, and work
 *   again once ioredis has reconnected;
 * - fences: a second process on the same database is refused, a process whose database was
 *   taken over (or whose write counter does not match) stops writing; a database holding
 *   foreign keys is refused; two databases of one server are independent;
 * - S11: a half-installed snapshot and the pins and pre-images of snapshots a dead process
 *   left are discarded on reopen; a pre-image is kept once per key;
 * - S13: a corrupted log record is detected on read and at open (the partition is named corrupt);
 * - URLs: `--backend redis://HOST:PORT[/DB]` parsing, and openBackend by URL.
 * Without redis-server installed, everything here skips with one line saying how to get it.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidArgumentError, StorageFailureError } from '../../src/core/errors.js';
import { type LogEntry, InvariantViolation, seq } from '../../src/core/types.js';
import type { Backend, BatchOp, SnapshotItem, SyncMode } from '../../src/storage/backend.js';
import { CorruptRecordError } from '../../src/storage/lmdb.js';
import { openBackend, parseBackendSpec } from '../../src/storage/open.js';
import { RedisBackend, RedisNotDurableError, RedisSetupError } from '../../src/storage/redis.js';
import { describeRedisUrl, parseRedisUrl } from '../../src/storage/redis-url.js';
import { backendConformance, fixtures } from './conformance.js';
import { REDIS_SKIP, type RedisServer, redisInstalled, startRedis, withRaw } from './redis-server.js';

const { P1, P2, b, pos, put, puts, del, tag, rec, append, apply, dump, pagesOf } = fixtures;

/** A reply larger than this closes the connection in the conformance Redis (see there). */
const REPLY_LIMIT_BYTES = 8 * 1024 * 1024;

function conformance(sync: SyncMode): void {
  let server: RedisServer | undefined;
  after(async () => server?.destroy());
  backendConformance(`redis (sync ${sync})`, async () => {
    server ??= await startRedis();
    const url = `${server.url}/0`;
    await withRaw(url, async (r) => {
      await r.flushall();
      // Issue 9: Redis drops a client whose pending replies pass 8 MiB, so a backend that
      // builds one reply of a scan page's values (12 MiB in the large-values test) fails here.
      await r.config('SET', 'client-output-buffer-limit', `normal ${REPLY_LIMIT_BYTES} 0 0`);
    });
    let current = await RedisBackend.open({ url, sync });
    return {
      backend: current,
      reopen: async () => {
        await current.close();
        current = await RedisBackend.open({ url, sync });
        return current;
      },
      corruptValue: async (value) => {
        // In the running Redis: the stored value (a field of a ds:d:<p>:<g> hash) holding it.
        await withRaw(url, async (r) => {
          let flipped = 0;
          for (const hash of await r.keys('ds:d:*')) {
            const fields = await r.hgetallBuffer(hash);
            for (const [field, raw] of Object.entries(fields)) {
              const at = raw.indexOf(Buffer.from(value));
              if (at < 0) continue;
              raw[at + 3] = raw[at + 3]! ^ 0x01;
              await r.hset(hash, field, raw);
              flipped += 1;
            }
          }
          assert.ok(flipped >= 1, 'the value is in a ds:d hash');
        });
        return current;
      },
      scanPeakBytes: () => current.scanPeakBytes,
      cleanup: () => current.close(),
    };
  });
}

/** Runs `body` with its own redis-server, destroyed whatever happens. */
async function withRedis(
  options: Parameters<typeof startRedis>[0],
  body: (server: RedisServer) => Promise<void>,
): Promise<void> {
  const server = await startRedis(options);
  try {
    await body(server);
  } finally {
    await server.destroy();
  }
}

/** Opens a backend, closed whatever happens (a second close is a no-op). */
async function withBackend(
  url: string,
  options: { sync?: SyncMode; commandTimeoutMs?: number },
  body: (backend: RedisBackend) => Promise<void>,
): Promise<void> {
  const backend = await RedisBackend.open({ url, ...options });
  try {
    await body(backend);
  } finally {
    await backend.close();
  }
}

/** Batch k (1-based) of the load tests: in P1 and P2, entry k appended and applied, key k put, tagged. */
function loadBatch(k: number): BatchOp[] {
  const ops: BatchOp[] = [];
  for (const p of [P1, P2]) {
    const entry = tag(put(k, 1, `key-${k}`, `value-${k}`), `client-${p}`, k);
    ops.push(append(p, [entry]), apply(p, [entry]));
  }
  return ops;
}

/** Checks that the backend holds exactly batches 1..n of loadBatch, each whole; returns n. */
async function checkLoadPrefix(backend: Backend): Promise<number> {
  const states = await backend.partitions();
  const n = states.find((s) => s.partition === P1)?.applied.seq ?? 0;
  for (const p of [P1, P2]) {
    const s = states.find((x) => x.partition === p);
    assert.deepStrictEqual(
      [s?.applied, s?.logLast],
      [pos(n, 1), pos(n, 1)],
      `partition ${p}: the log, the applied seq and the other partition moved together`,
    );
    assert.equal(await backend.count(p), n);
    const last = await backend.get(p, b(`key-${n}`));
    if (n > 0) assert.equal(last?.version, n);
    assert.equal(await backend.get(p, b(`key-${n + 1}`)), undefined);
    assert.deepStrictEqual(await backend.dedupTable(p), n === 0 ? [] : [rec(`client-${p}`, n, n)]);
  }
  return n;
}

if (!redisInstalled) {
  test('redis backend', { skip: REDIS_SKIP }, () => undefined);
} else {
  conformance('batch');
  conformance('none');

  describe('redis backend', () => {
    test(
      'S14: with --sync batch, a Redis that answers before fsync ' +
        'is refused with how to fix it; --sync none accepts it',
      async () => {
        for (const options of [{ appendfsync: 'everysec' as const }, { appendonly: false }]) {
          await withRedis(options, async (server) => {
            await assert.rejects(RedisBackend.open({ url: server.url, sync: 'batch' }), (err: unknown) => {
              assert.ok(err instanceof RedisNotDurableError && err instanceof StorageFailureError, String(err));
              assert.match(err.message, /--appendonly yes --appendfsync always/);
              assert.match(err.message, /--sync none/);
              assert.match(err.message, /S14/);
              return true;
            });
            await withBackend(server.url, { sync: 'none' }, async (backend) => {
              await backend.writeBatch([apply(P1, puts(1, 3, 1))]);
              assert.equal(await backend.count(P1), 3);
            });
          });
        }
      },
    );

    test('an allkeys-* eviction policy is refused in any sync mode: Redis could drop the data', async () => {
      await withRedis({ extraArgs: ['--maxmemory-policy', 'allkeys-lru'] }, async (server) => {
        for (const sync of ['batch', 'none'] as const) {
          await assert.rejects(RedisBackend.open({ url: server.url, sync }), (err: unknown) => {
            assert.ok(err instanceof RedisSetupError);
            assert.match(err.message, /maxmemory-policy allkeys-lru.*noeviction/);
            return true;
          });
        }
      });
    });

    test('an unreachable Redis fails the open within the connect timeout', async () => {
      const server = await startRedis();
      const url = server.url;
      await server.destroy(); // nothing listens on its port now
      const started = Date.now();
      await assert.rejects(RedisBackend.open({ url, connectTimeoutMs: 300 }), (err: unknown) => {
        assert.ok(err instanceof StorageFailureError);
        assert.match(err.message, /cannot reach Redis at redis:\/\/127\.0\.0\.1:\d+\/0 within 300 ms/);
        return true;
      });
      assert.ok(Date.now() - started < 3000);
    });

    test(
      'Redis killed under pipelined load: no write hangs, and after ' +
        'its restart every acknowledged batch is there, each whole',
      async () => {
        await withRedis({}, async (server) => {
          const backend = await RedisBackend.open({ url: server.url, commandTimeoutMs: 2000 });
          let acknowledged = 0;
          const failures: unknown[] = [];
          let next = 1;
          let stop = false;
          // 8 writers keep batches in flight (pipelined); the backend orders them by call.
          const writer = async (): Promise<void> => {
            for (let i = 0; i < 100_000 && !stop; i++) {
              const k = next++;
              try {
                await backend.writeBatch(loadBatch(k));
                acknowledged = Math.max(acknowledged, k);
              } catch (err) {
                failures.push(err);
                return;
              }
            }
          };
          const writers = Array.from({ length: 8 }, writer);
          while (acknowledged < 300) await sleep(5);
          server.kill('SIGKILL');
          const started = Date.now();
          const settled = await Promise.race([Promise.all(writers).then(() => true), sleep(5000).then(() => false)]);
          stop = true;
          assert.ok(settled, 'every writer got an answer after Redis died');
          assert.ok(Date.now() - started < 5000);
          assert.equal(failures.length, 8, 'every writer saw a failure');
          for (const err of failures) assert.ok(err instanceof StorageFailureError, String(err));
          assert.ok(backend.health().broken !== undefined || !backend.health().connected);
          await assert.rejects(backend.writeBatch(loadBatch(next)), StorageFailureError);
          await backend.close();
          await server.restart();
          await withBackend(server.url, {}, async (reopened) => {
            const n = await checkLoadPrefix(reopened);
            assert.ok(n >= acknowledged, `Redis holds ${n} batches, ${acknowledged} were acknowledged`);
            // And it goes on from there.
            await reopened.writeBatch(loadBatch(n + 1));
            assert.equal(await checkLoadPrefix(reopened), n + 1);
          });
        });
      },
    );

    test(
      'a hung Redis (SIGSTOP): a write fails after the command ' +
        'timeout, and the backend stops writing until reopened',
      async () => {
        await withRedis({}, async (server) => {
          const backend = await RedisBackend.open({ url: server.url, commandTimeoutMs: 400 });
          try {
            await backend.writeBatch(loadBatch(1));
            server.kill('SIGSTOP');
            const started = Date.now();
            await assert.rejects(backend.writeBatch(loadBatch(2)), StorageFailureError);
            assert.ok(Date.now() - started < 3000, 'the write did not wait for Redis');
            server.kill('SIGCONT');
            assert.match(backend.health().broken ?? '', /timed out/i);
            await assert.rejects(
              backend.writeBatch(loadBatch(3)),
              /stopped writing after a write whose outcome is unknown/,
            );
          } finally {
            server.kill('SIGCONT');
            await backend.close();
          }
          await withBackend(server.url, {}, async (reopened) => {
            const n = await checkLoadPrefix(reopened);
            assert.ok(n === 1 || n === 2, `batch 2 ran whole or not at all (${n})`);
          });
        });
      },
    );

    test(
      'a Redis that went away while idle: writes fail at once without ' +
        'breaking the backend, and work again after the reconnect',
      async () => {
        await withRedis({}, async (server) => {
          await withBackend(server.url, { commandTimeoutMs: 2000 }, async (backend) => {
            await backend.writeBatch(loadBatch(1));
            await server.stop();
            for (let i = 0; i < 200 && backend.health().connected; i++) await sleep(10);
            assert.equal(backend.health().connected, false);
            await assert.rejects(backend.writeBatch(loadBatch(2)), (err: unknown) => {
              assert.ok(err instanceof StorageFailureError);
              assert.match(err.message, /not reachable/);
              return true;
            });
            await assert.rejects(backend.get(P1, b('key-1')), StorageFailureError);
            assert.equal(backend.health().broken, undefined, 'a write never sent breaks nothing');
            await server.restart();
            for (let i = 0; i < 500 && !backend.health().connected; i++) await sleep(10);
            assert.ok(backend.health().connected, 'ioredis reconnected');
            await backend.writeBatch(loadBatch(2));
            assert.equal(await checkLoadPrefix(backend), 2);
          });
        });
      },
    );

    test(
      'fences: a second process on the same database is refused; a process whose ' +
        'database was taken over, or whose write counter is off, stops writing',
      async () => {
        await withRedis({}, async (server) => {
          const url = `${server.url}/3`;
          await withBackend(url, {}, async (first) => {
            await first.writeBatch(loadBatch(1));
            await assert.rejects(RedisBackend.open({ url }), (err: unknown) => {
              assert.ok(err instanceof RedisSetupError);
              assert.match(err.message, /another dstore process .* every storage server needs its own Redis database/);
              return true;
            });
            // Another process took the database over (as after a missed CLIENT LIST check).
            await withRaw(url, (r) => r.set('ds:owner', 'someone-else'));
            await assert.rejects(first.writeBatch(loadBatch(2)), /another dstore process opened this Redis database/);
            await assert.rejects(first.writeBatch(loadBatch(2)), StorageFailureError);
          });
          await withBackend(url, {}, async (second) => {
            assert.equal(await checkLoadPrefix(second), 1, 'the fenced write left nothing');
            await withRaw(url, (r) => r.incr('ds:bseq'));
            await assert.rejects(second.writeBatch(loadBatch(2)), /write counter is \d+ where this process expected/);
          });
          await withBackend(url, {}, async (third) => {
            assert.equal(await checkLoadPrefix(third), 1);
          });
        });
      },
    );

    test(
      'a database with keys that are not dstore data is refused; ' + 'two databases of one Redis are independent',
      async () => {
        await withRedis({}, async (server) => {
          await withRaw(`${server.url}/5`, (r) => r.set('someone:else', 'x'));
          await assert.rejects(RedisBackend.open({ url: `${server.url}/5` }), /holds keys that are not dstore data/);
          await withBackend(`${server.url}/1`, {}, async (one) => {
            await withBackend(`${server.url}/2`, {}, async (two) => {
              await one.writeBatch(loadBatch(1));
              await two.writeBatch([apply(P1, [put(1, 1, 'other', 'x'), put(2, 1, 'keys', 'y')])]);
              assert.equal(await one.count(P1), 1);
              assert.equal(await two.count(P1), 2);
              assert.equal(await two.get(P1, b('key-1')), undefined);
            });
          });
        });
      },
    );

    test(
      'S11: a snapshot half-installed when the process stopped ' + 'is discarded on reopen, dedup table included',
      async () => {
        await withRedis({}, async (server) => {
          let backend = await RedisBackend.open({ url: server.url });
          await backend.writeBatch([apply(P1, [tag(put(1, 1, 'k1', 'v'), 'c1', 1), put(2, 1, 'k2', 'v')])]);
          const before = await dump(backend, [P1]);
          const items: SnapshotItem[] = Array.from({ length: 9000 }, (_, i) => ({
            key: b(`s${String(i).padStart(5, '0')}`),
            value: b('v'),
            version: seq(1),
          }));
          let release: () => void = () => undefined;
          const stalled = new Promise<void>((resolve) => (release = resolve));
          let pagesTaken = 0;
          async function* source(): AsyncIterable<readonly SnapshotItem[]> {
            for (let i = 0; i < items.length; i += 1000) {
              if (i === 8000) await stalled; // the "crash": two stages of 4096 are written by now
              pagesTaken += 1;
              yield items.slice(i, i + 1000);
            }
          }
          const install = backend.installSnapshot(P1, pos(10, 1), source(), [rec('c1', 9, 10), rec('c2', 1, 9)]);
          for (let i = 0; i < 1000 && pagesTaken < 8; i++) await sleep(5);
          await sleep(50);
          await backend.close();
          release();
          await assert.rejects(install, StorageFailureError);
          const leftover = await withRaw(server.url, async (r) => ({
            orphans: await r.smembers('ds:orphans'),
            keys: (await r.keys('ds:d:1:*')).length,
          }));
          assert.equal(leftover.orphans.length, 1, 'the staged generation is registered');
          assert.equal(leftover.keys, 2, 'the current and the staged data hashes');
          backend = await RedisBackend.open({ url: server.url });
          try {
            assert.deepStrictEqual(await dump(backend, [P1]), before);
          } finally {
            await backend.close();
          }
          const after = await withRaw(server.url, async (r) => ({
            orphans: await r.smembers('ds:orphans'),
            keys: await r.keys('ds:[dzu]:1:*'),
          }));
          assert.deepStrictEqual(after.orphans, []);
          assert.equal(
            after.keys.length,
            3,
            `only the current generation's data, order and dedup table: ${after.keys.join(' ')}`,
          );
        });
      },
    );

    test(
      'S11: snapshot pre-images are kept once per key, deleted on ' +
        "close, and a dead process's pins are dropped on reopen",
      async () => {
        await withRedis({}, async (server) => {
          const backend = await RedisBackend.open({ url: server.url });
          await backend.writeBatch([apply(P1, puts(1, 10, 1))]);
          const snap = await backend.snapshot(P1);
          for (let s = 11; s <= 110; s++) await backend.writeBatch([apply(P1, [put(s, 1, 'k1', `v${s}`)])]);
          await backend.writeBatch([apply(P1, [del(111, 1, 'k2'), put(112, 1, 'new', 'n')])]);
          const raw = await withRaw(server.url, async (r) => ({
            pre: await r.keys('ds:pv:*'),
            pins: await r.hlen('ds:snaps'),
          }));
          assert.equal(raw.pins, 1);
          assert.equal(raw.pre.length, 1);
          assert.equal(await withRaw(server.url, (r) => r.hlen(raw.pre[0]!)), 3, 'k1 (once for 100 writes), k2, new');
          const items: SnapshotItem[] = [];
          for await (const page of snap.items(4)) items.push(...page);
          assert.deepStrictEqual(
            items.map((i) => [Buffer.from(i.key).toString(), i.version]),
            puts(1, 10, 1)
              .map((e) => [`k${e.seq}`, e.seq])
              .sort(),
          );
          await snap.close();
          assert.deepStrictEqual(await withRaw(server.url, (r) => r.keys('ds:p[vz]:*')), []);
          assert.equal(await withRaw(server.url, (r) => r.hlen('ds:snaps')), 0);
          // A snapshot left open by a process that died (its connection gone, nothing closed).
          const dead = await backend.snapshot(P1);
          await backend.writeBatch([{ kind: 'dropPartition', partition: P1 }]);
          assert.equal(
            (await withRaw(server.url, (r) => r.keys('ds:d:1:*'))).length,
            1,
            'the dropped generation is kept for the open snapshot',
          );
          (backend as unknown as { redis: { disconnect(): void } }).redis.disconnect();
          await backend.close();
          await assert.rejects(dead.items(10)[Symbol.asyncIterator]().next(), StorageFailureError);
          await withBackend(server.url, {}, async (reopened) => {
            assert.deepStrictEqual(await reopened.partitions(), []);
          });
          const left = await withRaw(server.url, async (r) => (await r.keys('*')).sort());
          assert.deepStrictEqual(left, ['ds:bseq', 'ds:format', 'ds:nextgen', 'ds:owner']);
        });
      },
    );

    test('S13: a corrupted log record is detected on read and when opening', async () => {
      await withRedis({}, async (server) => {
        await withBackend(server.url, {}, async (backend) => {
          await backend.writeBatch([append(P1, puts(1, 5, 1))]);
          const good = await withRaw(server.url, (r) => r.lindexBuffer('ds:l:1', 1));
          assert.ok(good);
          const bad = Buffer.from(good);
          bad[bad.length - 1] = bad[bad.length - 1]! ^ 0x01;
          await withRaw(server.url, (r) => r.lset('ds:l:1', 1, bad));
          assert.equal((await backend.readLog(P1, { fromSeq: seq(1), toSeq: seq(1), limit: 10 })).length, 1);
          await assert.rejects(backend.readLog(P1, { fromSeq: seq(1), toSeq: seq(5), limit: 10 }), (err: unknown) => {
            assert.ok(err instanceof CorruptRecordError && err instanceof StorageFailureError);
            assert.match(err.message, /log entry 2: checksum mismatch \(S13\)/);
            return true;
          });
        });
        // S13: opening does not fail: the partition is named corrupt (its replica relearns it).
        await withBackend(server.url, {}, async (reopened) => {
          const [state] = await reopened.partitions();
          assert.equal(state?.partition, P1);
          assert.match(state?.corrupt ?? '', /log entry 2: checksum mismatch \(S13\)/);
          assert.equal(state?.logLast.seq, 1, 'the log ends before the bad record');
          // Dropping it (as the replica does to relearn) deletes the whole log, bad record included.
          await reopened.writeBatch([{ kind: 'dropPartition', partition: P1 }]);
          assert.deepStrictEqual(await reopened.partitions(), []);
          assert.equal(await withRaw(server.url, (r) => r.exists('ds:l:1')), 0);
        });
      });
    });

    test('state survives a Redis restart (SIGTERM, AOF replay)', async () => {
      await withRedis({}, async (server) => {
        let before: unknown;
        await withBackend(server.url, {}, async (backend) => {
          const log: LogEntry[] = [...puts(1, 50, 1), tag(del(51, 2, 'k7'), 'c', 3)];
          await backend.writeBatch([
            append(P1, log),
            apply(P1, log),
            { kind: 'setMeta', partition: P1, meta: fixtures.meta(2) },
          ]);
          await backend.writeBatch([{ kind: 'truncateLogTo', partition: P1, base: pos(20, 1) }]);
          await backend.installSnapshot(P2, pos(9, 1), pagesOf([{ key: b('x'), value: b('y'), version: seq(4) }], 1), [
            rec('c', 1, 9),
          ]);
          before = await dump(backend, [P1, P2]);
        });
        await server.stop();
        await server.restart();
        await withBackend(server.url, {}, async (backend) => {
          assert.deepStrictEqual(await dump(backend, [P1, P2]), before);
        });
      });
    });

    test('a precondition violation sends nothing and leaves the backend writing', async () => {
      await withRedis({}, async (server) => {
        await withBackend(server.url, {}, async (backend) => {
          await backend.writeBatch(loadBatch(1));
          const counter = await withRaw(server.url, (r) => r.get('ds:bseq'));
          await assert.rejects(backend.writeBatch([apply(P1, [put(5, 1, 'x', 'y')])]), InvariantViolation);
          assert.equal(await withRaw(server.url, (r) => r.get('ds:bseq')), counter, 'no script ran');
          assert.equal(backend.health().broken, undefined);
          await backend.writeBatch(loadBatch(2));
          assert.equal(await checkLoadPrefix(backend), 2);
        });
      });
    });

    test('openBackend opens redis by URL; `redis` alone and malformed URLs are refused', async () => {
      await withRedis({}, async (server) => {
        const backend = await openBackend(`${server.url}/4` as `redis://${string}`, { sync: 'batch' });
        try {
          assert.equal(backend.kind, 'redis');
          await backend.writeBatch([apply(P1, puts(1, 1, 1))]);
          assert.equal(await withRaw(`${server.url}/4`, (r) => r.exists('ds:p:1')), 1);
        } finally {
          await backend.close();
        }
      });
      await assert.rejects(
        openBackend('redis', {}),
        /needs the URL of its Redis: --backend redis:\/\/HOST:PORT\[\/DB\]/,
      );
      assert.throws(() => parseBackendSpec('redis'), InvalidArgumentError);
      assert.throws(
        () => parseBackendSpec('rocksdb'),
        /unknown backend 'rocksdb'; expected one of: memory, lmdb, redis:\/\/HOST:PORT\[\/DB\]/,
      );
      assert.equal(parseBackendSpec('lmdb'), 'lmdb');
      assert.equal(parseBackendSpec('redis://10.0.0.5:6380/2'), 'redis://10.0.0.5:6380/2');
    });
  });
}

describe('redis URLs', () => {
  test('redis://HOST:PORT[/DB], with an optional password; anything else is an InvalidArgumentError', () => {
    assert.deepStrictEqual(parseRedisUrl('redis://127.0.0.1:6380/3'), { host: '127.0.0.1', port: 6380, db: 3 });
    assert.deepStrictEqual(parseRedisUrl('redis://redis-s1'), { host: 'redis-s1', port: 6379, db: 0 });
    assert.deepStrictEqual(parseRedisUrl('redis://[::1]:7000/'), { host: '::1', port: 7000, db: 0 });
    assert.deepStrictEqual(parseRedisUrl('redis://:s%40cret@h:1/0'), { host: 'h', port: 1, db: 0, password: 's@cret' });
    assert.deepStrictEqual(parseRedisUrl('redis://u:p@h:1/0'), {
      host: 'h',
      port: 1,
      db: 0,
      username: 'u',
      password: 'p',
    });
    assert.equal(describeRedisUrl(parseRedisUrl('redis://u:secret@h:1/2')), 'redis://h:1/2');
    for (const bad of [
      'http://h:1',
      'redis://',
      'redis://h:0',
      'redis://h:70000',
      'redis://h:1/x',
      'redis://h:1/1/2',
      'redis://h:1/0?tls=1',
      'redis:/h',
    ]) {
      assert.throws(() => parseRedisUrl(bad), InvalidArgumentError, bad);
    }
    assert.throws(
      () => parseRedisUrl('redis://:hunter2@h:1/x'),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentError);
        assert.doesNotMatch(err.message, /hunter2/);
        return true;
      },
    );
  });
});

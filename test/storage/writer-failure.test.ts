/**
 * The storage server's group-commit writer (src/storageserver/writer.ts) never acknowledges
 * anything a failed batch, or any batch after it, carried (issue 4: nothing acknowledged may
 * depend on a write Redis did not confirm). Against a real redis-server, no mock:
 * - a batch confirmed by Redis runs its `after` callbacks (the acks);
 * - Redis is hung (SIGSTOP) so the next batch is sent and left unanswered, a third batch
 *   queues behind it, then Redis is killed (SIGKILL): the writer reports the failure once,
 *   runs neither batch's callbacks nor `onDone`, and drops every later `enqueue`/`after`,
 *   also for a partition that had nothing in flight;
 * - Redis restarted from its AOF holds the confirmed batch, and the failed one whole or not
 *   at all (never the queued third);
 * - a fresh writer on the reopened backend (what the storage server does when it reloads)
 *   writes and acknowledges again.
 * Skips (one line) when redis-server is not installed; the server and its dir are removed
 * whatever happens.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { partitionId } from '../../src/core/types.js';
import { RedisBackend } from '../../src/storage/redis.js';
import { BatchWriter } from '../../src/storageserver/writer.js';
import { fixtures } from './conformance.js';
import { REDIS_SKIP, redisInstalled, startRedis } from './redis-server.js';

const { P1, P2, puts, append, apply } = fixtures;
const P3 = partitionId(3);
const BOUND_MS = 15_000;

function within<T>(what: string, promise: Promise<T>, ms = BOUND_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

test('a batch Redis did not confirm is never acknowledged, nor anything after it', {
  skip: redisInstalled ? false : REDIS_SKIP,
}, async () => {
  await using server = await startRedis();
  const url = `${server.url}/0`;
  const backends: RedisBackend[] = [];
  const open = async (): Promise<RedisBackend> => {
    const b = await RedisBackend.open({ url, sync: 'batch', commandTimeoutMs: BOUND_MS, connectTimeoutMs: BOUND_MS });
    backends.push(b);
    return b;
  };
  try {
    const backend = await open();
    const acked: string[] = [];
    const doneWriteIds: number[] = [];
    const failures: Error[] = [];
    let reportFailure: (err: Error) => void = () => undefined;
    const failed = new Promise<Error>((resolve) => (reportFailure = resolve));
    const writer = new BatchWriter(
      backend,
      (d) => doneWriteIds.push(...d.writeIds.map((w) => w.writeId)),
      (err) => {
        failures.push(err);
        reportFailure(err);
      },
    );

    // 1. Confirmed: acknowledged.
    const first = new Promise<void>((resolve) => {
      writer.enqueue(P1, [append(P1, puts(1, 2, 1)), apply(P1, puts(1, 2, 1))], 1);
      writer.after(P1, () => {
        acked.push('batch 1');
        resolve();
      });
    });
    await within('the first batch to be confirmed', first);

    // 2. Sent to a hung Redis, then Redis dies: the outcome is unknown.
    server.kill('SIGSTOP');
    writer.enqueue(P1, [append(P1, puts(3, 4, 1))], 2);
    writer.after(P1, () => acked.push('batch 2 (P1)'));
    // The batch starts in a microtask and is written to the socket at once; one macrotask later it is in flight.
    await new Promise<void>((resolve) => setImmediate(resolve));
    // 3. Queued behind it (another partition too).
    writer.enqueue(P2, [append(P2, puts(1, 1, 1))], 3);
    writer.after(P2, () => acked.push('batch 3 (P2)'));
    server.kill('SIGKILL');
    const err = await within('the writer to report the failure', failed);
    assert.match(err.message, /redis|connection|closed|Redis/i);

    // Later calls are dropped: nothing after the failure runs, even with no write in flight.
    writer.enqueue(P1, [append(P1, puts(5, 5, 1))], 4);
    writer.after(P1, () => acked.push('after failure (P1)'));
    writer.after(P3, () => acked.push('after failure (P3, nothing written)'));
    await new Promise<void>((resolve) => setImmediate(resolve));
    assert.deepEqual(acked, ['batch 1']);
    assert.deepEqual(doneWriteIds, [1]);
    assert.equal(failures.length, 1, 'the failure is reported once');
    assert.equal(writer.failure, err);

    // Redis back from its AOF: the confirmed batch is there, the failed one whole or not at all.
    // The failed backend is closed first, as the storage server's reload does: left open, its
    // client reconnects to the restarted Redis and the reopen sees another dstore using it.
    await backend.close().catch(() => undefined);
    await within('redis-server to restart', server.restart());
    const reopened = await open();
    const state = new Map((await reopened.partitions()).map((s) => [s.partition, s]));
    assert.equal(state.get(P1)?.applied.seq, 2, 'the confirmed batch was applied');
    assert.ok(
      [2, 4].includes(state.get(P1)?.logLast.seq ?? -1),
      `P1's log ends at ${state.get(P1)?.logLast.seq}: the failed batch must be whole or absent`,
    );
    assert.equal(state.get(P2), undefined, 'the batch queued behind the failed one was never sent');

    // A new writer on the reopened backend acknowledges again (the storage server's reload).
    const writer2 = new BatchWriter(
      reopened,
      () => undefined,
      (e) => assert.fail(`unexpected failure: ${e.message}`),
    );
    const last = state.get(P1)!.logLast.seq;
    await within(
      'a write after the reload',
      new Promise<void>((resolve) => {
        writer2.enqueue(P1, [append(P1, puts(last + 1, last + 1, 1))], 5);
        writer2.after(P1, resolve);
      }),
    );
  } finally {
    for (const b of backends) await b.close().catch(() => undefined);
  }
});

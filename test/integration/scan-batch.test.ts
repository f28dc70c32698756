/**
 * Issue 14, scans and batches on real processes (a nameserver and 3 lmdb storage servers,
 * R=3, 8 partitions):
 *
 * 1. 3,000 keys written with putMany: a scan paged with its cursor (limit 700) lists exactly
 *    the sorted model, across every partition; prefix and startAfter scans match the model's
 *    range; `values` returns each key's value and version (the versions `get` reports);
 *    getMany answers as single gets do (missing keys included); putMany's versions are those
 *    `get` then reports; a batch over maxBatchKeys is refused with BATCH_TOO_LARGE; a putMany
 *    call sent twice (a retry after a lost reply) is answered with the first call's versions and
 *    applies nothing again.
 * 2. A putMany of 1,000 entries with the primary of some of its partitions SIGKILLed while it
 *    runs: every entry acknowledged holds its value at exactly the acknowledged version (applied
 *    once: a second application would have raised the version), and entries reported failed
 *    name their keys with a typed error; a retry of the failed ones applies them.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BatchFailedError, BatchTooLargeError } from '../../src/core/errors.js';
import type { Db } from '../../src/client/api.js';
import { partitionOf } from '../../src/core/partitioning.js';
import { LocalCluster } from './cluster.js';
import { TIMING, withLogsOnFailure } from './failures-harness.js';

const P = 8;
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

async function scanAll(db: Db, options: { prefix?: string; startAfter?: Uint8Array; limit: number; values?: boolean }) {
  const got: Array<{ key: Uint8Array; value?: Uint8Array; version?: number }> = [];
  let startAfter = options.startAfter;
  for (let call = 0; call < 10_000; call++) {
    const page = await db.scan({ ...options, ...(startAfter === undefined ? {} : { startAfter }) });
    assert.ok(page.entries.length <= options.limit, `a page of ${page.entries.length} > limit ${options.limit}`);
    got.push(...page.entries);
    if (page.next === undefined) return got;
    assert.ok(page.entries.length > 0, 'a page with a cursor has entries');
    startAfter = page.next;
  }
  assert.fail('the scan did not end');
}

test('scan across partitions matches a sorted model; getMany/putMany equal single calls', async () => {
  await using cluster = await LocalCluster.start({ nodes: 3, partitions: P, replicas: 3, backend: 'lmdb', ...TIMING });
  await withLogsOnFailure(cluster, async () => {
    await cluster.waitFormed(3);
    const db = await cluster.client(20_000);
    const model = new Map<string, { key: Buffer; value: Buffer; version: number }>();
    const all: Array<{ key: Buffer; value: Buffer }> = [];
    for (let i = 0; i < 1200; i++) all.push({ key: Buffer.from(`user/${i}`), value: Buffer.from(`u${i}`) });
    for (let i = 0; i < 1200; i++) all.push({ key: Buffer.from(`item/${i}`), value: Buffer.alloc(100 + (i % 50), i) });
    for (let i = 0; i < 600; i++) all.push({ key: Buffer.from([0xff, i >> 8, i & 0xff]), value: Buffer.from(`b${i}`) });
    for (let from = 0; from < all.length; from += 500) {
      const batch = all.slice(from, from + 500);
      const versions = await db.putMany(batch);
      assert.equal(versions.length, batch.length);
      batch.forEach((e, j) => model.set(hex(e.key), { ...e, version: versions[j]! }));
    }
    // putMany's versions are what get reports.
    for (const e of all.filter((_, i) => i % 97 === 0)) {
      const got = await db.get(e.key);
      assert.ok(got, `key ${hex(e.key)} readable`);
      assert.equal(got.version, model.get(hex(e.key))!.version);
      assert.deepStrictEqual(Buffer.from(got.value), e.value);
    }
    const sorted = [...model.values()].sort((a, b) => Buffer.compare(a.key, b.key));
    // Every key, paged with the cursor.
    const whole = await scanAll(db, { limit: 700 });
    assert.deepStrictEqual(
      whole.map((e) => hex(e.key)),
      sorted.map((e) => hex(e.key)),
    );
    // A prefix, a prefix with startAfter.
    const users = sorted.filter((e) => e.key.toString().startsWith('user/'));
    assert.deepStrictEqual(
      (await scanAll(db, { prefix: 'user/', limit: 250 })).map((e) => hex(e.key)),
      users.map((e) => hex(e.key)),
    );
    const after = Buffer.from('user/5');
    assert.deepStrictEqual(
      (await scanAll(db, { prefix: 'user/', startAfter: after, limit: 333 })).map((e) => hex(e.key)),
      users.filter((e) => Buffer.compare(e.key, after) > 0).map((e) => hex(e.key)),
    );
    assert.deepStrictEqual(await db.scan({ prefix: 'nothing/' }), { entries: [] });
    // Values and versions.
    const items = await scanAll(db, { prefix: 'item/', limit: 400, values: true });
    const itemModel = sorted.filter((e) => e.key.toString().startsWith('item/'));
    assert.equal(items.length, itemModel.length);
    items.forEach((e, i) => {
      assert.equal(hex(e.key), hex(itemModel[i]!.key));
      assert.deepStrictEqual(Buffer.from(e.value!), itemModel[i]!.value);
      assert.equal(e.version, itemModel[i]!.version);
    });
    // A key past its TTL is never listed (§16), also before its delete is logged.
    await db.put('ttl/kept', 'k', { ttlMs: 600_000 });
    await db.put('ttl/gone', 'g', { ttlMs: 1 });
    await new Promise((r) => setTimeout(r, 20)); // the TTL itself: nothing to await
    const ttlScan = await db.scan({ prefix: 'ttl/', values: true });
    assert.deepStrictEqual(
      ttlScan.entries.map((e) => Buffer.from(e.key).toString()),
      ['ttl/kept'],
    );
    // keys() walks every key once.
    let n = 0;
    for await (const _k of db.keys({ prefix: Buffer.from([0xff]) })) n++;
    assert.equal(n, 600);
    // getMany equals single gets, missing keys included.
    const asked = [...all.filter((_, i) => i % 4 === 0).map((e) => e.key), Buffer.from('missing/1'), 'missing/2'];
    const many = await db.getMany(asked);
    assert.equal(many.length, asked.length);
    for (const [i, k] of asked.entries()) {
      if (i % 50 !== 0 && i < asked.length - 2) continue;
      assert.deepStrictEqual(many[i], await db.get(k));
    }
    assert.equal(many[asked.length - 1], undefined);
    assert.deepStrictEqual(many[0]?.version, model.get(hex(all[0]!.key))!.version);
    // Bounds.
    const tooMany = Array.from({ length: 1001 }, (_, i) => `k${i}`);
    await assert.rejects(db.getMany(tooMany), BatchTooLargeError);
    await assert.rejects(
      db.putMany(tooMany.map((key) => ({ key, value: 'v' }))),
      (err: unknown) => err instanceof BatchTooLargeError && err.code === 'BATCH_TOO_LARGE',
    );
    await assert.rejects(
      db.putMany([
        { key: 'a', value: '1' },
        { key: 'a', value: '2' },
      ]),
      /appears twice/,
    );
    // A putMany call sent twice to the primary (a retry after a lost reply): the second answers
    // each entry with the first's version, applies nothing again and refuses nothing (S10).
    const map = await cluster.map();
    const p = partitionOf(Buffer.from('retry/0'), P);
    const keysOfP = Array.from({ length: 400 }, (_, i) => Buffer.from(`retry/${i}`)).filter(
      (k) => partitionOf(k, P) === p,
    );
    const body = {
      t: 'putMany',
      p,
      entries: keysOfP.map((key, i) => ({ key, value: Buffer.from(`r${i}`), cid: `retry-test-${i}`, rs: 1 })),
    };
    const primary = map.configs[p]!.primary;
    const first = (await cluster.call(cluster.storageAddress(primary), body)) as { results: { version: number }[] };
    const second = (await cluster.call(cluster.storageAddress(primary), body)) as { results: { version: number }[] };
    assert.equal(first.results.length, keysOfP.length);
    assert.ok(
      first.results.every((r) => typeof r.version === 'number'),
      JSON.stringify(first.results[0]),
    );
    assert.deepStrictEqual(second, first, 'the retry is answered with the versions of the first call');
    const now = await db.getMany(keysOfP);
    now.forEach((g, i) => assert.equal(g?.version, first.results[i]!.version, 'applied once'));
  });
});

test('a putMany whose primary is SIGKILLed mid-batch applies each acknowledged entry exactly once', async () => {
  await using cluster = await LocalCluster.start({ nodes: 3, partitions: P, replicas: 3, backend: 'lmdb', ...TIMING });
  await withLogsOnFailure(cluster, async () => {
    await cluster.waitFormed(3);
    const db = await cluster.client(30_000);
    await db.put('warm', 'up');
    const before = await cluster.map();
    const victim = before.configs[0]!.primary;
    const led = LocalCluster.ledBy(before, victim);
    assert.ok(led.length > 0);
    const entries = Array.from({ length: 1000 }, (_, i) => ({
      key: Buffer.from(`batch/${i}`),
      value: Buffer.alloc(2000, i % 251),
    }));
    const started = Date.now();
    const call = db.putMany(entries).then(
      (versions) => ({ versions, error: undefined }),
      (error: unknown) => ({ versions: undefined, error }),
    );
    await new Promise((r) => setImmediate(r));
    await cluster.kill(victim, 'SIGKILL');
    const outcome = await call;
    console.log(
      `# putMany ended after ${Date.now() - started} ms: ${outcome.error ? (outcome.error as Error).message.slice(0, 200) : 'every entry acknowledged'}`,
    );
    let acked: Array<number | undefined>;
    if (outcome.error !== undefined) {
      assert.ok(outcome.error instanceof BatchFailedError, `a typed batch error, got ${String(outcome.error)}`);
      acked = outcome.error.results.map((r) => (r.ok ? (r.value as number) : undefined));
      for (const f of outcome.error.failures) {
        assert.equal(hex(f.key), hex(entries[f.index]!.key), 'a failure names its key');
        assert.ok(typeof f.error.code === 'string');
      }
    } else acked = outcome.versions!;
    // Exactly once: an acknowledged entry holds its value at the acknowledged version.
    const got = await db.getMany(entries.map((e) => e.key));
    let checked = 0;
    entries.forEach((e, i) => {
      const v = acked[i];
      if (v === undefined) return;
      assert.ok(got[i], `acknowledged key ${e.key} is readable`);
      assert.equal(got[i]!.version, v, `key ${e.key} was applied once (version ${v}, now ${got[i]!.version})`);
      assert.deepStrictEqual(Buffer.from(got[i]!.value), e.value);
      checked++;
    });
    console.log(`# ${checked} of ${entries.length} entries acknowledged and checked`);
    // The failed ones (if any) go through on a retry.
    const failed = entries.filter((_, i) => acked[i] === undefined);
    if (failed.length > 0) await db.putMany(failed);
    const after = await db.getMany(entries.map((e) => e.key));
    after.forEach((g, i) => assert.deepStrictEqual(Buffer.from(g!.value), entries[i]!.value));
  });
});

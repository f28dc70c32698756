/**
 * The one conformance suite every storage backend passes (DESIGN §8). It proves, through
 * the public `Backend` interface only, that a backend:
 * - appends and reads the log in order, within seq windows and limits; truncates it on an
 *   S1 conflict (`truncateLogFrom`) and below a new base (S12, `truncateLogTo`);
 * - applies put/delete/epochStart entries (version = entry seq, delete reports `existed`)
 *   and moves the applied position with them;
 * - runs a batch atomically: a batch whose preconditions fail (log or apply continuity, an
 *   S1/S12/S3 violation) is rejected with an InvariantViolation and leaves NOTHING behind,
 *   and batches take effect in call order;
 * - keeps per-partition metadata, reports every partition's positions, scans keys in byte
 *   order page by page (also over large values, reading at most SCAN_VERIFY_BATCH_BYTES of
 *   them at once where it verifies them, issue 9), counts keys;
 * - takes point-in-time snapshots (which stay so while writes, drops and re-creations go on
 *   between their pages) and installs snapshots atomically (S11); drops partitions;
 * - keeps the S10 dedup table: `apply` records each tagged entry (client, request seq, seq,
 *   and for a delete whether the key existed), replacing the client's previous record, in
 *   the batch's atomic step; snapshots carry the table as of their applied position;
 *   `installSnapshot` replaces it (empty when none is given); `dropPartition` removes it;
 * - survives close + reopen (when the harness can reopen), with binary keys, UTF-8 keys,
 *   1 MiB values and empty values, dedup tables included;
 * - S13 (backends that keep checksums, whose harness can corrupt a stored value): a stored
 *   value with a flipped byte is never returned: `get`, `scan` and snapshot items throw a
 *   CorruptRecordError (`isCorruptRecord`), the other keys still read, and dropping the
 *   partition (what a replica does to relearn it) leaves nothing corrupt behind.
 *
 * `dump` includes the dedup table, so every "nothing of the batch stays" check covers it.
 *
 * Each test gets a fresh backend from `make` and cleans it up, also when it fails.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  type LogEntry,
  type PartitionId,
  type RequestTag,
  InvariantViolation,
  epoch,
  nodeId,
  partitionId,
  seq,
} from '../../src/core/types.js';
import {
  type Backend,
  type BatchOp,
  type DedupRecord,
  type LogPosition,
  type PartitionMeta,
  type SnapshotItem,
  isCorruptRecord,
} from '../../src/storage/backend.js';
import { MAX_CLIENT_ID_BYTES } from '../../src/storage/preconditions.js';
import { MiB, SCAN_VERIFY_BATCH_BYTES } from '../../src/core/limits.js';

export interface BackendHarness {
  readonly backend: Backend;
  /** Closes the current backend and opens the same store again (durable backends). */
  readonly reopen?: () => Promise<Backend>;
  /**
   * S13: flips one byte inside the stored record that holds `value` (which appears in no
   * log record: the test truncates the log first); returns the backend to use from then on
   * (reopened when the engine must be closed to touch its files). Absent for a backend that
   * keeps no checksums (memory).
   */
  readonly corruptValue?: (value: Uint8Array) => Promise<Backend>;
  /**
   * Issue 9: the most stored-value bytes one scan read held at once since open (a backend
   * that verifies values when it scans). Absent for a backend that reads no values to scan (memory).
   */
  readonly scanPeakBytes?: () => number;
  readonly cleanup: () => Promise<void>;
}

// ---------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------

const P1 = partitionId(1);
const P2 = partitionId(2);
const P3 = partitionId(3);
/** Upper bound on pages any helper walks; far above what a test writes. */
const MAX_PAGES = 10_000;

const enc = new TextEncoder();
const b = (s: string): Uint8Array => enc.encode(s);
const hex = (u: Uint8Array): string => Buffer.from(u.buffer, u.byteOffset, u.byteLength).toString('hex');
const pos = (s: number, e: number): LogPosition => ({ seq: seq(s), epoch: epoch(e) });

function put(s: number, e: number, key: Uint8Array | string, value: Uint8Array | string): LogEntry {
  const k = typeof key === 'string' ? b(key) : key;
  const v = typeof value === 'string' ? b(value) : value;
  return { epoch: epoch(e), seq: seq(s), op: { kind: 'put', key: k, value: v } };
}
function del(s: number, e: number, key: Uint8Array | string): LogEntry {
  return { epoch: epoch(e), seq: seq(s), op: { kind: 'delete', key: typeof key === 'string' ? b(key) : key } };
}
function start(s: number, e: number): LogEntry {
  return { epoch: epoch(e), seq: seq(s), op: { kind: 'epochStart' } };
}
/** The entry with a client's tag (S10). */
function tag(entry: LogEntry, clientId: string, requestSeq: number): LogEntry {
  return { ...entry, tag: { clientId, requestSeq } };
}
/** A dedup record as a backend returns it: `existed` only for deletes. */
function rec(clientId: string, requestSeq: number, s: number, existed?: boolean): DedupRecord {
  return existed === undefined ? { clientId, requestSeq, seq: seq(s) } : { clientId, requestSeq, seq: seq(s), existed };
}
/** Entries seq from..to, puts of `k<seq>` in epoch `e`. */
function puts(from: number, to: number, e: number): LogEntry[] {
  const out: LogEntry[] = [];
  for (let s = from; s <= to; s++) out.push(put(s, e, `k${s}`, `v${s}`));
  return out;
}

const append = (partition: PartitionId, entries: readonly LogEntry[]): BatchOp => ({
  kind: 'appendLog',
  partition,
  entries,
});
const apply = (partition: PartitionId, entries: readonly LogEntry[]): BatchOp => ({
  kind: 'apply',
  partition,
  entries,
});

/** A comparable form of an entry: bytes as hex, an absent tag stays absent. */
function norm(e: LogEntry): unknown {
  const op =
    e.op.kind === 'put'
      ? e.op.expiresAt === undefined
        ? { kind: 'put', key: hex(e.op.key), value: hex(e.op.value) }
        : { kind: 'put', key: hex(e.op.key), value: hex(e.op.value), expiresAt: e.op.expiresAt }
      : e.op.kind === 'delete'
        ? { kind: 'delete', key: hex(e.op.key) }
        : { kind: e.op.kind };
  return e.tag === undefined
    ? { epoch: e.epoch, seq: e.seq, op }
    : { epoch: e.epoch, seq: e.seq, op, tag: { ...e.tag } };
}
const normAll = (entries: readonly LogEntry[]): unknown[] => entries.map(norm);

async function readAll(backend: Backend, partition: PartitionId): Promise<LogEntry[]> {
  return backend.readLog(partition, { fromSeq: seq(0), toSeq: seq(Number.MAX_SAFE_INTEGER), limit: 1_000_000 });
}

async function scanAll(backend: Backend, partition: PartitionId, limit = 7): Promise<Uint8Array[]> {
  const keys: Uint8Array[] = [];
  let afterKey: Uint8Array | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    const result = await backend.scan(partition, afterKey === undefined ? { limit } : { afterKey, limit });
    assert.ok(result.keys.length <= limit, 'a scan page is at most `limit` keys');
    keys.push(...result.keys);
    if (result.nextAfterKey === undefined) return keys;
    assert.ok(result.keys.length > 0, 'a page that is not the last has keys');
    afterKey = result.nextAfterKey;
  }
  assert.fail('scan did not end');
}

async function snapshotItems(
  backend: Backend,
  partition: PartitionId,
  pageItems: number,
): Promise<{ applied: LogPosition; dedup: readonly DedupRecord[]; pages: SnapshotItem[][] }> {
  const snap = await backend.snapshot(partition);
  try {
    const pages: SnapshotItem[][] = [];
    for await (const page of snap.items(pageItems)) pages.push([...page]);
    return { applied: snap.applied, dedup: snap.dedup, pages };
  } finally {
    await snap.close();
  }
}

const normItems = (items: readonly SnapshotItem[]): unknown[] =>
  items.map((i) => ({ key: hex(i.key), value: hex(i.value), version: i.version }));

async function* pagesOf(items: readonly SnapshotItem[], pageItems: number): AsyncIterable<readonly SnapshotItem[]> {
  for (let i = 0; i < items.length; i += pageItems) yield items.slice(i, i + pageItems);
}

/** Everything observable about some partitions (and only them), in comparable form. */
async function dump(backend: Backend, partitions: readonly PartitionId[]): Promise<unknown> {
  const per: unknown[] = [];
  for (const p of partitions) {
    const keys = await scanAll(backend, p);
    const values: unknown[] = [];
    for (const k of keys) {
      const v = await backend.get(p, k);
      values.push(v === undefined ? null : { value: hex(v.value), version: v.version });
    }
    per.push({
      p,
      count: await backend.count(p),
      keys: keys.map(hex),
      values,
      log: normAll(await readAll(backend, p)),
      dedup: await backend.dedupTable(p),
    });
  }
  return { partitions: (await backend.partitions()).filter((s) => partitions.includes(s.partition)), per };
}

function meta(e: number, partition: PartitionId = P1): PartitionMeta {
  return {
    epoch: epoch(e),
    config: {
      partition,
      epoch: epoch(e),
      primary: nodeId('n1'),
      secondaries: [nodeId('n2'), nodeId('n3')],
      learners: [],
    },
  };
}

async function stateOf(backend: Backend, partition: PartitionId) {
  return (await backend.partitions()).find((s) => s.partition === partition);
}

// ---------------------------------------------------------------------------------------
// The suite.
// ---------------------------------------------------------------------------------------

export function backendConformance(name: string, make: () => Promise<BackendHarness>): void {
  /** A test with a fresh backend, cleaned up whatever happens. */
  const it = (title: string, body: (h: BackendHarness, backend: Backend) => Promise<void>): void => {
    test(title, async () => {
      const h = await make();
      try {
        await body(h, h.backend);
      } finally {
        await h.cleanup();
      }
    });
  };

  describe(`${name} backend conformance (DESIGN §8)`, () => {
    it('a fresh backend is empty', async (_h, backend) => {
      assert.ok(typeof backend.kind === 'string' && backend.kind.length > 0);
      assert.deepStrictEqual(await backend.partitions(), []);
      assert.equal(await backend.get(P1, b('k')), undefined);
      assert.deepStrictEqual(await backend.scan(P1, { limit: 10 }), { keys: [] });
      assert.equal(await backend.count(P1), 0);
      assert.deepStrictEqual(await readAll(backend, P1), []);
      const snap = await snapshotItems(backend, P1, 10);
      assert.deepStrictEqual(snap, { applied: pos(0, 0), dedup: [], pages: [] });
      assert.deepStrictEqual(await backend.dedupTable(P1), []);
      assert.deepStrictEqual(await backend.writeBatch([]), { deletes: [] });
    });

    describe('log', () => {
      it('appendLog then readLog returns the entries in order, with tags', async (_h, backend) => {
        const tagged: LogEntry = { ...put(3, 1, 'a', 'x'), tag: { clientId: 'c1', requestSeq: 7 } };
        const first = [put(1, 1, 'a', '1'), del(2, 1, 'b'), tagged];
        await backend.writeBatch([append(P1, first.slice(0, 2)), append(P1, first.slice(2))]);
        const second = [start(4, 2), ...puts(5, 10, 2)];
        await backend.writeBatch([append(P1, second)]);
        const all = [...first, ...second];
        assert.deepStrictEqual(normAll(await readAll(backend, P1)), normAll(all));
        const got = await readAll(backend, P1);
        assert.equal('tag' in got[0]!, false, 'an entry without a tag reads back without one');
        assert.deepStrictEqual(got[2]!.tag, { clientId: 'c1', requestSeq: 7 });
        assert.deepStrictEqual(await stateOf(backend, P1), {
          partition: P1,
          meta: null,
          applied: pos(0, 0),
          logBase: pos(0, 0),
          logLast: pos(10, 2),
        });
      });

      it('readLog honours fromSeq, toSeq and limit', async (_h, backend) => {
        const entries = puts(1, 20, 1);
        await backend.writeBatch([append(P1, entries)]);
        const read = async (fromSeq: number, toSeq: number, limit: number) =>
          (await backend.readLog(P1, { fromSeq: seq(fromSeq), toSeq: seq(toSeq), limit })).map((e) => e.seq);
        assert.deepStrictEqual(await read(3, 7, 100), [3, 4, 5, 6, 7]);
        assert.deepStrictEqual(await read(3, 7, 2), [3, 4]);
        assert.deepStrictEqual(await read(18, 100, 100), [18, 19, 20]);
        assert.deepStrictEqual(await read(0, 2, 100), [1, 2]);
        assert.deepStrictEqual(await read(21, 30, 100), []);
        assert.deepStrictEqual(await read(7, 6, 100), []);
        assert.deepStrictEqual(await read(5, 5, 1), [5]);
        assert.deepStrictEqual(await backend.readLog(P2, { fromSeq: seq(1), toSeq: seq(5), limit: 10 }), []);
      });

      it(
        'appendLog must continue the log: gaps, repeats, ' + 'a wrong first seq or an older epoch are rejected',
        async (_h, backend) => {
          await backend.writeBatch([append(P1, puts(1, 3, 2))]);
          const before = await dump(backend, [P1, P2]);
          const bad: Array<readonly LogEntry[]> = [
            [put(5, 2, 'a', 'x')], // gap after 3
            [put(3, 2, 'a', 'x')], // repeats 3
            [put(4, 2, 'a', 'x'), put(6, 2, 'b', 'y')], // gap inside the op
            [put(4, 1, 'a', 'x')], // epoch goes back (S1)
          ];
          for (const entries of bad) {
            await assert.rejects(backend.writeBatch([append(P1, entries)]), InvariantViolation);
          }
          await assert.rejects(
            backend.writeBatch([append(P2, [put(2, 1, 'a', 'x')])]),
            InvariantViolation,
            'an empty log starts at seq 1',
          );
          assert.deepStrictEqual(await dump(backend, [P1, P2]), before);
          await backend.writeBatch([append(P1, [put(4, 3, 'a', 'x')])]);
          assert.deepStrictEqual(
            (await readAll(backend, P1)).map((e) => e.seq),
            [1, 2, 3, 4],
          );
        },
      );

      it(
        'truncateLogFrom deletes the conflicting suffix ' + '(S1) and appending continues from there',
        async (_h, backend) => {
          const log = [...puts(1, 3, 1), ...puts(4, 6, 2)];
          await backend.writeBatch([append(P1, log), apply(P1, log.slice(0, 2))]);
          // The new primary's entry 4 (epoch 3) conflicts with ours: drop 4.. and append, in one batch.
          const replacement = put(4, 3, 'k4', 'new');
          await backend.writeBatch([
            { kind: 'truncateLogFrom', partition: P1, fromSeq: seq(4) },
            append(P1, [replacement]),
          ]);
          assert.deepStrictEqual(normAll(await readAll(backend, P1)), normAll([...log.slice(0, 3), replacement]));
          assert.deepStrictEqual((await stateOf(backend, P1))?.logLast, pos(4, 3));
          // Only truncation: the last position becomes the entry before fromSeq.
          await backend.writeBatch([{ kind: 'truncateLogFrom', partition: P1, fromSeq: seq(3) }]);
          assert.deepStrictEqual((await stateOf(backend, P1))?.logLast, pos(2, 1));
          // Past the end: nothing to delete.
          await backend.writeBatch([{ kind: 'truncateLogFrom', partition: P1, fromSeq: seq(10) }]);
          assert.deepStrictEqual(
            (await readAll(backend, P1)).map((e) => e.seq),
            [1, 2],
          );
          await backend.writeBatch([append(P1, [put(3, 4, 'x', 'y')])]);
          assert.deepStrictEqual((await stateOf(backend, P1))?.logLast, pos(3, 4));
        },
      );

      it('truncateLogFrom never deletes an applied entry (S1)', async (_h, backend) => {
        await backend.writeBatch([append(P1, puts(1, 5, 1)), apply(P1, puts(1, 3, 1))]);
        const before = await dump(backend, [P1]);
        for (const fromSeq of [3, 1, 0]) {
          await assert.rejects(
            backend.writeBatch([{ kind: 'truncateLogFrom', partition: P1, fromSeq: seq(fromSeq) }]),
            InvariantViolation,
          );
        }
        assert.deepStrictEqual(await dump(backend, [P1]), before);
      });

      it('truncateLogTo drops entries up to the new base (S12) and the log goes on after it', async (_h, backend) => {
        const log = [...puts(1, 3, 1), ...puts(4, 6, 2)];
        await backend.writeBatch([append(P1, log), apply(P1, log.slice(0, 4))]);
        await backend.writeBatch([{ kind: 'truncateLogTo', partition: P1, base: pos(4, 2) }]);
        assert.deepStrictEqual(
          (await readAll(backend, P1)).map((e) => e.seq),
          [5, 6],
        );
        assert.deepStrictEqual(
          (await backend.readLog(P1, { fromSeq: seq(1), toSeq: seq(5), limit: 10 })).map((e) => e.seq),
          [5],
          'dropped entries are no longer returned',
        );
        let s = await stateOf(backend, P1);
        assert.deepStrictEqual([s?.logBase, s?.logLast, s?.applied], [pos(4, 2), pos(6, 2), pos(4, 2)]);
        // The same base again is a no-op.
        await backend.writeBatch([{ kind: 'truncateLogTo', partition: P1, base: pos(4, 2) }]);
        // Truncate everything applied, with the apply in the same batch: the log empties.
        await backend.writeBatch([apply(P1, log.slice(4)), { kind: 'truncateLogTo', partition: P1, base: pos(6, 2) }]);
        s = await stateOf(backend, P1);
        assert.deepStrictEqual([s?.logBase, s?.logLast, s?.applied], [pos(6, 2), pos(6, 2), pos(6, 2)]);
        assert.deepStrictEqual(await readAll(backend, P1), []);
        await assert.rejects(backend.writeBatch([append(P1, [put(8, 2, 'a', 'b')])]), InvariantViolation);
        await backend.writeBatch([append(P1, [put(7, 3, 'a', 'b')])]);
        assert.deepStrictEqual(
          (await readAll(backend, P1)).map((e) => e.seq),
          [7],
        );
        s = await stateOf(backend, P1);
        assert.deepStrictEqual([s?.logBase, s?.logLast], [pos(6, 2), pos(7, 3)]);
      });

      it(
        'truncateLogTo past the log (entries applied without ' + 'being logged here) leaves an empty log at the base',
        async (_h, backend) => {
          await backend.writeBatch([apply(P1, puts(1, 3, 1))]);
          await backend.writeBatch([{ kind: 'truncateLogTo', partition: P1, base: pos(3, 1) }]);
          const s = await stateOf(backend, P1);
          assert.deepStrictEqual([s?.logBase, s?.logLast], [pos(3, 1), pos(3, 1)]);
          await backend.writeBatch([append(P1, [put(4, 1, 'a', 'b')])]);
          assert.deepStrictEqual(
            (await readAll(backend, P1)).map((e) => e.seq),
            [4],
          );
        },
      );

      it(
        'truncateLogTo is refused above the applied seq, ' + 'backwards, or with the wrong epoch (S12)',
        async (_h, backend) => {
          const log = [...puts(1, 3, 1), ...puts(4, 6, 2)];
          await backend.writeBatch([append(P1, log), apply(P1, log.slice(0, 4))]);
          await backend.writeBatch([{ kind: 'truncateLogTo', partition: P1, base: pos(2, 1) }]);
          const before = await dump(backend, [P1]);
          const bad = [pos(5, 2), pos(1, 1), pos(2, 7), pos(4, 1)];
          for (const base of bad) {
            await assert.rejects(
              backend.writeBatch([{ kind: 'truncateLogTo', partition: P1, base }]),
              InvariantViolation,
              `base ${base.seq}/${base.epoch}`,
            );
          }
          assert.deepStrictEqual(await dump(backend, [P1]), before);
        },
      );
    });

    describe('apply', () => {
      it('a put keeps its expiry (§16) in the log, the data, snapshots and installs; a plain put drops it', async (_h, backend) => {
        const expiring: LogEntry = {
          epoch: epoch(1),
          seq: seq(1),
          op: { kind: 'put', key: b('t'), value: b('v'), expiresAt: 1_900_000_000_123 },
        };
        const entries = [expiring, put(2, 1, 'u', 'U')];
        await backend.writeBatch([append(P1, entries), apply(P1, entries)]);
        assert.deepStrictEqual(normAll(await readAll(backend, P1)), normAll(entries));
        const got = await backend.get(P1, b('t'));
        assert.equal(got?.expiresAt, 1_900_000_000_123);
        assert.equal('expiresAt' in (await backend.get(P1, b('u')))!, false, 'a value without an expiry has none');
        const snap = await snapshotItems(backend, P1, 10);
        const items = snap.pages.flat();
        assert.deepStrictEqual(
          items.map((i) => [Buffer.from(i.key).toString(), i.expiresAt]),
          [
            ['t', 1_900_000_000_123],
            ['u', undefined],
          ],
        );
        // A scan with values carries the expiry too (issue 14: the primary leaves expired keys out).
        const scanned = await backend.scan(P1, { limit: 10, values: true });
        assert.deepStrictEqual(
          scanned.values?.map((v) => v.expiresAt),
          [1_900_000_000_123, undefined],
        );
        await backend.installSnapshot(P2, pos(2, 1), pagesOf(items, 1));
        assert.equal((await backend.get(P2, b('t')))?.expiresAt, 1_900_000_000_123);
        // A later put without an expiry replaces the value and its expiry.
        const again = [put(3, 1, 't', 'plain')];
        await backend.writeBatch([append(P1, again), apply(P1, again)]);
        assert.equal((await backend.get(P1, b('t')))?.expiresAt, undefined);
      });

      it(
        'put, delete and epochStart change the data, versions ' + 'are entry seqs, the applied position moves',
        async (_h, backend) => {
          const entries = [
            put(1, 1, 'a', 'A1'),
            put(2, 1, 'b', 'B2'),
            start(3, 2),
            put(4, 2, 'a', 'A4'),
            del(5, 2, 'b'),
            del(6, 2, 'nope'),
          ];
          const result = await backend.writeBatch([append(P1, entries), apply(P1, entries)]);
          assert.deepStrictEqual(result.deletes, [
            { partition: P1, seq: 5, existed: true },
            { partition: P1, seq: 6, existed: false },
          ]);
          const a = await backend.get(P1, b('a'));
          assert.ok(a);
          assert.equal(hex(a.value), hex(b('A4')));
          assert.equal(a.version, 4);
          assert.equal(await backend.get(P1, b('b')), undefined);
          assert.equal(await backend.count(P1), 1);
          assert.deepStrictEqual((await stateOf(backend, P1))?.applied, pos(6, 2));
          assert.equal(await backend.get(P2, b('a')), undefined, 'partitions do not share keys');
        },
      );

      it(
        'apply continues after the applied seq; a gap or a ' + 'repeat is rejected and nothing of the batch stays',
        async (_h, backend) => {
          await backend.writeBatch([apply(P1, puts(1, 3, 1))]);
          const before = await dump(backend, [P1]);
          await assert.rejects(backend.writeBatch([apply(P1, [put(5, 1, 'x', 'y')])]), InvariantViolation);
          await assert.rejects(backend.writeBatch([apply(P1, [put(3, 1, 'x', 'y')])]), InvariantViolation);
          await assert.rejects(
            backend.writeBatch([apply(P1, [put(4, 1, 'x', 'y'), put(4, 1, 'z', 'y')])]),
            InvariantViolation,
          );
          assert.deepStrictEqual(await dump(backend, [P1]), before);
          await backend.writeBatch([apply(P1, [put(4, 1, 'x', 'y')]), apply(P1, [del(5, 1, 'x')])]);
          assert.deepStrictEqual((await stateOf(backend, P1))?.applied, pos(5, 1));
        },
      );

      it('within one batch, later entries see earlier ones (put then delete, put twice)', async (_h, backend) => {
        const result = await backend.writeBatch([
          apply(P1, [put(1, 1, 'k', 'one'), put(2, 1, 'k', 'two')]),
          apply(P1, [del(3, 1, 'k'), put(4, 1, 'j', 'J')]),
          apply(P2, [put(1, 1, 'k', 'p2')]),
          apply(P2, [del(2, 1, 'k')]),
        ]);
        assert.deepStrictEqual(result.deletes, [
          { partition: P1, seq: 3, existed: true },
          { partition: P2, seq: 2, existed: true },
        ]);
        assert.equal(await backend.count(P1), 1);
        assert.equal(await backend.count(P2), 0);
        assert.equal(await backend.get(P1, b('k')), undefined);
      });

      it('an empty apply or appendLog changes nothing', async (_h, backend) => {
        await backend.writeBatch([apply(P1, puts(1, 2, 1)), append(P1, puts(1, 2, 1))]);
        const before = await dump(backend, [P1]);
        await backend.writeBatch([apply(P1, []), append(P1, [])]);
        assert.deepStrictEqual(await dump(backend, [P1]), before);
      });
    });

    describe('atomicity and order', () => {
      it('a batch that fails anywhere leaves nothing of it, in any partition', async (_h, backend) => {
        await backend.writeBatch([
          append(P1, puts(1, 2, 1)),
          apply(P1, puts(1, 2, 1)),
          { kind: 'setMeta', partition: P1, meta: meta(1) },
        ]);
        const before = await dump(backend, [P1, P2, P3]);
        const failing: BatchOp[][] = [
          // Everything valid, then an appendLog whose first seq does not follow the log's last.
          [
            append(P2, puts(1, 5, 1)),
            apply(P2, puts(1, 5, 1)),
            append(P1, puts(3, 4, 1)),
            apply(P1, [put(3, 1, 'k3', 'v3'), del(4, 1, 'k1')]),
            { kind: 'setMeta', partition: P1, meta: meta(2) },
            { kind: 'setMeta', partition: P3, meta: meta(1, P3) },
            { kind: 'truncateLogTo', partition: P1, base: pos(2, 1) },
            append(P1, [put(9, 1, 'x', 'y')]),
          ],
          // An apply that does not start right after the applied seq, after a drop.
          [{ kind: 'dropPartition', partition: P1 }, apply(P2, puts(1, 1, 1)), apply(P2, puts(3, 3, 1))],
          // A conflict truncation below the applied seq (S1), after valid ops.
          [append(P3, puts(1, 1, 1)), { kind: 'truncateLogFrom', partition: P1, fromSeq: seq(1) }],
          // An older epoch in the metadata (S3).
          [
            apply(P1, puts(3, 3, 1)),
            { kind: 'setMeta', partition: P1, meta: meta(2) },
            { kind: 'setMeta', partition: P1, meta: meta(1) },
          ],
        ];
        for (const ops of failing) {
          await assert.rejects(backend.writeBatch(ops), InvariantViolation);
          assert.deepStrictEqual(await dump(backend, [P1, P2, P3]), before);
        }
      });

      it('batches take effect in call order; a failing one does not disturb its neighbours', async (_h, backend) => {
        const results = await Promise.allSettled([
          backend.writeBatch([append(P1, puts(1, 1, 1))]),
          backend.writeBatch([append(P1, puts(2, 2, 1))]),
          backend.writeBatch([append(P1, puts(9, 9, 1))]), // out of sequence
          backend.writeBatch([append(P1, puts(3, 3, 1)), apply(P1, puts(1, 3, 1))]),
          backend.writeBatch([apply(P2, [put(1, 1, 'a', 'b')])]),
        ]);
        assert.deepStrictEqual(
          results.map((r) => r.status),
          ['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled'],
        );
        const rejected = results[2];
        assert.ok(rejected?.status === 'rejected' && rejected.reason instanceof InvariantViolation);
        assert.deepStrictEqual(
          (await readAll(backend, P1)).map((e) => e.seq),
          [1, 2, 3],
        );
        assert.deepStrictEqual((await stateOf(backend, P1))?.applied, pos(3, 1));
      });

      it('a resolved batch is visible to every read at once', async (_h, backend) => {
        await backend.writeBatch([append(P1, [put(1, 1, 'a', 'x')]), apply(P1, [put(1, 1, 'a', 'x')])]);
        assert.equal(hex((await backend.get(P1, b('a')))!.value), hex(b('x')));
        assert.equal(await backend.count(P1), 1);
        assert.equal((await backend.scan(P1, { limit: 10 })).keys.length, 1);
        assert.equal((await readAll(backend, P1)).length, 1);
      });

      it(
        'stored bytes are not aliased by the caller nor ' + 'by results; a batch is taken when it is called',
        async (_h, backend) => {
          const value = b('original');
          const key = b('key');
          const written = backend.writeBatch([append(P1, [put(1, 1, key, value)]), apply(P1, [put(1, 1, key, value)])]);
          value.fill(0x21);
          key.fill(0x21);
          await written;
          const got = await backend.get(P1, b('key'));
          assert.ok(got);
          assert.equal(hex(got.value), hex(b('original')));
          got.value.fill(0x22);
          assert.equal(hex((await backend.get(P1, b('key')))!.value), hex(b('original')));
          const [entry] = await readAll(backend, P1);
          assert.ok(entry?.op.kind === 'put');
          assert.equal(hex(entry.op.value), hex(b('original')));
          entry.op.value.fill(0x23);
          const [again] = await readAll(backend, P1);
          assert.ok(again?.op.kind === 'put');
          assert.equal(hex(again.op.value), hex(b('original')));
        },
      );
    });

    describe('metadata and partitions', () => {
      it('setMeta round-trips; the epoch only moves forward (S3)', async (_h, backend) => {
        const m1 = meta(3);
        await backend.writeBatch([{ kind: 'setMeta', partition: P1, meta: m1 }]);
        assert.deepStrictEqual((await stateOf(backend, P1))?.meta, m1);
        const noConfig: PartitionMeta = { epoch: epoch(4), config: null };
        await backend.writeBatch([{ kind: 'setMeta', partition: P1, meta: noConfig }]);
        assert.deepStrictEqual((await stateOf(backend, P1))?.meta, noConfig);
        const same: PartitionMeta = { ...meta(4), config: { ...meta(4).config!, learners: [nodeId('n4')] } };
        await backend.writeBatch([{ kind: 'setMeta', partition: P1, meta: same }]);
        assert.deepStrictEqual((await stateOf(backend, P1))?.meta, same);
        await assert.rejects(
          backend.writeBatch([{ kind: 'setMeta', partition: P1, meta: meta(2) }]),
          InvariantViolation,
        );
        assert.deepStrictEqual((await stateOf(backend, P1))?.meta, same);
      });

      it(
        'S13: the corrupt marker in the metadata round-trips, ' + 'survives a reopen, and the drop batch clears it',
        async (h) => {
          // A replica that found its partition corrupt persists a marker in the partition's
          // metadata, so a restart before it dropped the partition comes back corrupt, not as a
          // healthy copy; the drop and metadata without the marker go in one batch.
          let backend = h.backend;
          const log = puts(1, 3, 1);
          const marked: PartitionMeta = { ...meta(2), corrupt: 'partition 1 stored value: checksum mismatch (S13)' };
          await backend.writeBatch([
            append(P1, log),
            apply(P1, log),
            { kind: 'setMeta', partition: P1, meta: meta(1) },
          ]);
          assert.equal((await stateOf(backend, P1))?.meta?.corrupt, undefined, 'no marker by default');
          await backend.writeBatch([{ kind: 'setMeta', partition: P1, meta: marked }]);
          assert.deepStrictEqual((await stateOf(backend, P1))?.meta, marked);
          assert.deepStrictEqual(
            (await stateOf(backend, P1))?.applied,
            pos(3, 1),
            'the marker leaves the data as it is',
          );
          if (h.reopen) {
            backend = await h.reopen();
            assert.deepStrictEqual((await stateOf(backend, P1))?.meta, marked, 'the marker is durable');
          }
          // A later epoch adopted while still corrupt keeps it.
          const later: PartitionMeta = { ...meta(3), corrupt: marked.corrupt! };
          await backend.writeBatch([{ kind: 'setMeta', partition: P1, meta: later }]);
          assert.deepStrictEqual((await stateOf(backend, P1))?.meta, later);
          // The drop batch (relearnFromZero) writes metadata without it.
          await backend.writeBatch([
            { kind: 'dropPartition', partition: P1 },
            { kind: 'setMeta', partition: P1, meta: meta(4) },
          ]);
          const after = await stateOf(backend, P1);
          assert.deepStrictEqual(after?.meta, meta(4));
          assert.equal(after?.meta?.corrupt, undefined);
          assert.deepStrictEqual(after?.applied, pos(0, 0));
          if (h.reopen) {
            backend = await h.reopen();
            assert.deepStrictEqual((await stateOf(backend, P1))?.meta, meta(4), 'cleared durably');
          }
        },
      );

      it('partitions() reports every partition with its meta, applied, log base and last', async (_h, backend) => {
        await backend.writeBatch([
          { kind: 'setMeta', partition: P3, meta: meta(5, P3) },
          append(P2, [...puts(1, 4, 1), start(5, 2)]),
          apply(P1, puts(1, 2, 3)),
          apply(P2, puts(1, 3, 1)),
        ]);
        await backend.writeBatch([{ kind: 'truncateLogTo', partition: P2, base: pos(2, 1) }]);
        assert.deepStrictEqual(await backend.partitions(), [
          { partition: P1, meta: null, applied: pos(2, 3), logBase: pos(0, 0), logLast: pos(0, 0) },
          { partition: P2, meta: null, applied: pos(3, 1), logBase: pos(2, 1), logLast: pos(5, 2) },
          { partition: P3, meta: meta(5, P3), applied: pos(0, 0), logBase: pos(0, 0), logLast: pos(0, 0) },
        ]);
      });

      it('dropPartition removes data, log and metadata of that partition only', async (_h, backend) => {
        for (const p of [P1, P2]) {
          await backend.writeBatch([
            append(p, puts(1, 30, 1)),
            apply(p, puts(1, 30, 1)),
            { kind: 'setMeta', partition: p, meta: meta(1, p) },
          ]);
        }
        const p2Before = await dump(backend, [P2]);
        await backend.writeBatch([{ kind: 'dropPartition', partition: P1 }]);
        assert.deepStrictEqual(
          (await backend.partitions()).map((s) => s.partition),
          [P2],
        );
        assert.equal(await backend.get(P1, b('k1')), undefined);
        assert.equal(await backend.count(P1), 0);
        assert.deepStrictEqual(await backend.scan(P1, { limit: 10 }), { keys: [] });
        assert.deepStrictEqual(await readAll(backend, P1), []);
        assert.deepStrictEqual((await snapshotItems(backend, P1, 10)).pages, []);
        assert.deepStrictEqual(await dump(backend, [P2]), p2Before);
        // Dropping an unknown partition is a no-op; a dropped partition starts afresh.
        await backend.writeBatch([{ kind: 'dropPartition', partition: P3 }]);
        await backend.writeBatch([append(P1, puts(1, 1, 1)), apply(P1, [put(1, 1, 'fresh', 'f')])]);
        assert.deepStrictEqual((await scanAll(backend, P1)).map(hex), [hex(b('fresh'))]);
        assert.equal(await backend.count(P1), 1);
        // Drop and recreate in one batch.
        await backend.writeBatch([{ kind: 'dropPartition', partition: P1 }, apply(P1, [put(1, 2, 'again', 'a')])]);
        assert.deepStrictEqual((await scanAll(backend, P1)).map(hex), [hex(b('again'))]);
        assert.deepStrictEqual(await readAll(backend, P1), []);
      });
    });

    describe('scan and count', () => {
      it('scan pages through the keys in byte order with afterKey/nextAfterKey and limit', async (_h, backend) => {
        const keys: Uint8Array[] = [];
        for (let i = 0; i < 23; i++) keys.push(b(`key-${String((i * 7) % 23).padStart(2, '0')}`));
        keys.push(new Uint8Array([0x00]), new Uint8Array([0xff, 0x00]), new Uint8Array([0x6b]));
        const entries = keys.map((k, i) => put(i + 1, 1, k, `v${i}`));
        await backend.writeBatch([apply(P1, entries), apply(P2, [put(1, 1, 'other', 'o')])]);
        const sorted = [...keys].sort(Buffer.compare).map(hex);
        for (const limit of [1, 5, 13, 26, 100]) {
          assert.deepStrictEqual((await scanAll(backend, P1, limit)).map(hex), sorted, `limit ${limit}`);
        }
        const first = await backend.scan(P1, { limit: 5 });
        assert.deepStrictEqual(first.keys.map(hex), sorted.slice(0, 5));
        assert.equal(first.nextAfterKey && hex(first.nextAfterKey), sorted[4]);
        // A full last page has no nextAfterKey: the scan is complete.
        const last = await backend.scan(P1, { afterKey: Buffer.from(sorted[20]!, 'hex'), limit: 5 });
        assert.deepStrictEqual(last.keys.map(hex), sorted.slice(21));
        assert.equal(last.nextAfterKey, undefined);
        // afterKey need not be a stored key.
        const between = await backend.scan(P1, { afterKey: b('key-10x'), limit: 3 });
        assert.deepStrictEqual(between.keys.map(hex), [b('key-11'), b('key-12'), b('key-13')].map(hex));
        assert.deepStrictEqual(await backend.scan(P1, { afterKey: new Uint8Array([0xff, 0xff]), limit: 3 }), {
          keys: [],
        });
        assert.equal(await backend.count(P1), keys.length);
        assert.equal(await backend.count(P2), 1);
      });

      it('scan with a prefix and afterKey lists only the range, seeking to it (issue 14)', async (_h, backend) => {
        const names = ['a', 'ab', 'abc', 'abd', 'ab\u00ff', 'ac', 'b', 'ba', 'abz', 'aa'];
        const keys = names.map((n) => Buffer.from(n, 'latin1'));
        keys.push(Buffer.from([0xff]), Buffer.from([0xff, 0x01]), Buffer.from([0xff, 0xff, 0x02]), Buffer.from([0xfe]));
        const entries = keys.map((k, i) => put(i + 1, 1, k, `v${i}`));
        await backend.writeBatch([apply(P1, entries), apply(P2, [put(1, 1, 'abq', 'other')])]);
        const sorted = [...keys].sort(Buffer.compare);
        const model = (prefix: Uint8Array, after?: Uint8Array): string[] =>
          sorted
            .filter((k) => k.subarray(0, prefix.length).equals(prefix))
            .filter((k) => after === undefined || Buffer.compare(k, after) > 0)
            .map(hex);
        const prefixes = [b('ab'), b('a'), b('abc'), b('c'), b(''), Buffer.from([0xff]), Buffer.from([0xff, 0xff])];
        const afters = [undefined, b('a'), b('ab'), b('abd'), b('zz'), b('')];
        for (const prefix of prefixes)
          for (const afterKey of afters)
            for (const limit of [1, 2, 100]) {
              const want = model(prefix, afterKey);
              const got: string[] = [];
              let after = afterKey;
              for (let page = 0; page < MAX_PAGES; page++) {
                const r = await backend.scan(P1, {
                  prefix,
                  limit,
                  ...(after === undefined ? {} : { afterKey: after }),
                });
                assert.ok(r.keys.length <= limit);
                got.push(...r.keys.map(hex));
                if (r.nextAfterKey === undefined) break;
                after = r.nextAfterKey;
              }
              const what = `prefix ${hex(prefix)} after ${afterKey && hex(afterKey)} limit ${limit}`;
              assert.deepStrictEqual(got, want, what);
            }
        // A page that ends exactly at the last key of the prefix says the scan is complete.
        const ab = await backend.scan(P1, { prefix: b('ab'), limit: model(b('ab')).length });
        assert.equal(ab.nextAfterKey, undefined);
      });

      it('scan with values returns each value and version, a page bounded by maxBytes (issue 14)', async (_h, backend) => {
        const entries: LogEntry[] = [];
        for (let i = 0; i < 10; i++) entries.push(put(i + 1, 1, `k-${i}`, new Uint8Array(1000).fill(i)));
        await backend.writeBatch([apply(P1, entries)]);
        await backend.writeBatch([apply(P1, [put(11, 1, 'k-3', 'three')])]);
        const all = await backend.scan(P1, { limit: 100, values: true });
        assert.deepStrictEqual(
          all.keys.map(hex),
          entries.map((e) => hex((e.op as { key: Uint8Array }).key)),
        );
        assert.equal(all.values?.length, 10);
        assert.deepStrictEqual(Buffer.from(all.values![3]!.value).toString(), 'three');
        assert.equal(all.values![3]!.version, 11);
        assert.equal(all.values![0]!.version, 1);
        assert.deepStrictEqual(Buffer.from(all.values![9]!.value), Buffer.alloc(1000, 9));
        assert.equal((await backend.scan(P1, { limit: 100 })).values, undefined, 'no values unless asked');
        // About 2,500 bytes a page: three or four entries (the page is full once it reaches the bound).
        const got: string[] = [];
        let after: Uint8Array | undefined;
        for (let page = 0; page < 20; page++) {
          const r = await backend.scan(P1, {
            limit: 100,
            values: true,
            maxBytes: 2500,
            ...(after === undefined ? {} : { afterKey: after }),
          });
          assert.ok(r.keys.length >= 1 && r.keys.length <= 4, `page of ${r.keys.length} keys`);
          assert.equal(r.values?.length, r.keys.length);
          got.push(...r.keys.map(hex));
          if (r.nextAfterKey === undefined) break;
          after = r.nextAfterKey;
        }
        assert.deepStrictEqual(got, all.keys.map(hex));
        // A page holds at least one key, however small maxBytes is.
        assert.equal((await backend.scan(P1, { limit: 100, values: true, maxBytes: 1 })).keys.length, 1);
      });

      it(
        'a scan over keys with large values lists them right, page by page, ' +
          'and reads a bounded number of value bytes at once (issue 9)',
        async (h, backend) => {
          // 12 values of 1 MiB between small ones: one page of every key would be 12 MiB of
          // values read to verify them; a backend must read at most SCAN_VERIFY_BATCH_BYTES at once.
          const big = (i: number): Uint8Array => new Uint8Array(MiB).fill(0x30 + i);
          const entries: LogEntry[] = [];
          for (let i = 0; i < 12; i++) {
            entries.push(put(entries.length + 1, 1, `big-${String(i).padStart(2, '0')}`, big(i)));
            entries.push(put(entries.length + 1, 1, `big-${String(i).padStart(2, '0')}-small`, `s${i}`));
          }
          for (const e of entries) await backend.writeBatch([apply(P1, [e])]);
          const sorted = entries.map((e) => hex((e.op as { key: Uint8Array }).key)).sort();
          const whole = await backend.scan(P1, { limit: 1000 });
          assert.deepStrictEqual(whole.keys.map(hex), sorted, 'one page lists every key');
          assert.equal(whole.nextAfterKey, undefined, 'and says the scan is complete');
          for (const limit of [1, 5, 24])
            assert.deepStrictEqual((await scanAll(backend, P1, limit)).map(hex), sorted, `limit ${limit}`);
          const tail = await backend.scan(P1, { afterKey: b('big-03'), limit: 6 });
          assert.deepStrictEqual(tail.keys.map(hex), sorted.slice(7, 13));
          assert.equal(tail.nextAfterKey && hex(tail.nextAfterKey), sorted[12]);
          if (h.scanPeakBytes)
            assert.ok(
              h.scanPeakBytes() <= SCAN_VERIFY_BATCH_BYTES,
              `a scan read ${h.scanPeakBytes()} value bytes at once, more than ${SCAN_VERIFY_BATCH_BYTES}`,
            );
          // A value larger than the bound is still read (alone) and listed.
          const huge = new Uint8Array(SCAN_VERIFY_BATCH_BYTES + MiB).fill(0x7a);
          await backend.writeBatch([apply(P1, [put(entries.length + 1, 1, 'big-05-huge', huge)])]);
          const withHuge = [...sorted, hex(b('big-05-huge'))].sort();
          assert.deepStrictEqual((await backend.scan(P1, { limit: 1000 })).keys.map(hex), withHuge);
          assert.deepStrictEqual((await scanAll(backend, P1, 4)).map(hex), withHuge);
          // 1 KiB: a stored record's own bytes beyond its value (checksum, version, framing).
          if (h.scanPeakBytes)
            assert.ok(
              h.scanPeakBytes() <= huge.length + 1024,
              `a scan read ${h.scanPeakBytes()} value bytes at once, more than one value`,
            );
        },
      );

      it('count follows puts, overwrites and deletes', async (_h, backend) => {
        await backend.writeBatch([apply(P1, [put(1, 1, 'a', '1'), put(2, 1, 'b', '2'), put(3, 1, 'a', '3')])]);
        assert.equal(await backend.count(P1), 2);
        await backend.writeBatch([apply(P1, [del(4, 1, 'a'), del(5, 1, 'a'), put(6, 1, 'c', '6')])]);
        assert.equal(await backend.count(P1), 2);
        assert.equal((await scanAll(backend, P1)).length, 2);
      });
    });

    describe('snapshots (S11)', () => {
      it('a snapshot is a point-in-time view of the data with its applied position', async (_h, backend) => {
        const entries = puts(1, 10, 2);
        await backend.writeBatch([append(P1, entries), apply(P1, entries)]);
        const snap = await backend.snapshot(P1);
        try {
          await backend.writeBatch([
            apply(P1, [put(11, 2, 'k1', 'changed'), del(12, 2, 'k2'), put(13, 2, 'new', 'n')]),
          ]);
          assert.deepStrictEqual(snap.applied, pos(10, 2));
          const pages: SnapshotItem[][] = [];
          for await (const page of snap.items(3)) pages.push([...page]);
          assert.deepStrictEqual(
            pages.map((p) => p.length),
            [3, 3, 3, 1],
          );
          const expected = entries
            .map((e) => ({
              key: e.op.kind === 'put' ? e.op.key : new Uint8Array(),
              value: e.op.kind === 'put' ? e.op.value : new Uint8Array(),
              version: e.seq,
            }))
            .sort((x, y) => Buffer.compare(x.key, y.key));
          assert.deepStrictEqual(normItems(pages.flat()), normItems(expected));
        } finally {
          await snap.close();
        }
        const now = await snapshotItems(backend, P1, 100);
        assert.deepStrictEqual(now.applied, pos(13, 2));
        assert.equal(now.pages.flat().length, 10);
      });

      it(
        'a snapshot stays point-in-time while writes change keys ' +
          'on both sides of its read position, and across a drop',
        async (_h, backend) => {
          const pad = (i: number): string => String(i).padStart(3, '0');
          const initial = Array.from({ length: 300 }, (_, i) => put(i + 1, 1, `k${pad(i)}`, `v${i}`));
          await backend.writeBatch([apply(P1, initial), apply(P1, [tag(del(301, 1, 'none'), 'c1', 1)])]);
          const snap = await backend.snapshot(P1);
          const read: SnapshotItem[] = [];
          try {
            let s = 302;
            let page = 0;
            // Between pages, change keys already read, keys ahead of the position, and the table.
            for await (const items of snap.items(25)) {
              read.push(...items);
              page += 1;
              const at = read.length; // keys k000..k(at-1) were read
              const ops: LogEntry[] = [];
              if (at + 40 < 300) ops.push(put(s++, 1, `k${pad(at + 40)}`, 'overwritten'));
              if (at + 50 < 300) ops.push(del(s++, 1, `k${pad(at + 50)}`));
              if (at + 5 < 300) ops.push(put(s++, 1, `k${pad(at + 5)}+new`, 'inserted ahead'));
              ops.push(
                put(s++, 1, `a${page}`, 'inserted behind'),
                del(s++, 1, `k${pad(at - 1)}`),
                tag(put(s++, 1, `k${pad(at - 2)}`, 'again'), 'c1', page + 1),
              );
              await backend.writeBatch([apply(P1, ops)]);
              if (page === 6) {
                // Dropped and recreated under the snapshot's feet: it still reads the old partition.
                await backend.writeBatch([
                  { kind: 'dropPartition', partition: P1 },
                  apply(P1, [put(1, 2, 'k150', 'recreated')]),
                ]);
                await backend.writeBatch([{ kind: 'dropPartition', partition: P1 }]);
                s = 1; // later pages write to a fresh partition P1
              }
            }
            assert.deepStrictEqual(snap.applied, pos(301, 1));
            assert.deepStrictEqual(snap.dedup, [rec('c1', 1, 301, false)]);
          } finally {
            await snap.close();
          }
          assert.deepStrictEqual(
            normItems(read),
            normItems(
              initial.map((e) => ({
                key: (e.op as { key: Uint8Array }).key,
                value: (e.op as { value: Uint8Array }).value,
                version: e.seq,
              })),
            ),
          );
        },
      );

      it(
        'installSnapshot replaces the data, sets applied ' + 'and log base, empties the log, keeps the meta',
        async (_h, backend) => {
          await backend.writeBatch([
            append(P1, puts(1, 8, 1)),
            apply(P1, puts(1, 5, 1)),
            { kind: 'setMeta', partition: P1, meta: meta(3) },
            apply(P2, puts(1, 3, 1)),
          ]);
          const p2Before = await dump(backend, [P2]);
          const items: SnapshotItem[] = [];
          for (let i = 0; i < 50; i++)
            items.push({ key: b(`s${String(i).padStart(3, '0')}`), value: b(`value ${i}`), version: seq(10 + i) });
          await backend.installSnapshot(P1, pos(60, 3), pagesOf(items, 7));
          assert.deepStrictEqual(await stateOf(backend, P1), {
            partition: P1,
            meta: meta(3),
            applied: pos(60, 3),
            logBase: pos(60, 3),
            logLast: pos(60, 3),
          });
          assert.deepStrictEqual(await readAll(backend, P1), []);
          assert.equal(await backend.get(P1, b('k1')), undefined, 'old data is gone');
          assert.equal(await backend.count(P1), 50);
          assert.deepStrictEqual(normItems((await snapshotItems(backend, P1, 16)).pages.flat()), normItems(items));
          const got = await backend.get(P1, b('s007'));
          assert.deepStrictEqual(got && { value: hex(got.value), version: got.version }, {
            value: hex(b('value 7')),
            version: 17,
          });
          assert.deepStrictEqual(await dump(backend, [P2]), p2Before, 'other partitions are untouched');
          // The log and the data continue after the snapshot.
          await backend.writeBatch([append(P1, [put(61, 3, 'after', 'a')]), apply(P1, [put(61, 3, 'after', 'a')])]);
          assert.equal(await backend.count(P1), 51);
          await assert.rejects(backend.writeBatch([apply(P1, [put(63, 3, 'x', 'y')])]), InvariantViolation);
        },
      );

      it(
        'installSnapshot into an unknown partition, of ' + 'an empty snapshot, and from a snapshot stream',
        async (_h, backend) => {
          await backend.installSnapshot(P3, pos(0, 0), pagesOf([], 10));
          await backend.installSnapshot(
            P2,
            pos(7, 2),
            pagesOf([{ key: b('x'), value: new Uint8Array(), version: seq(7) }], 10),
          );
          assert.deepStrictEqual(await stateOf(backend, P2), {
            partition: P2,
            meta: null,
            applied: pos(7, 2),
            logBase: pos(7, 2),
            logLast: pos(7, 2),
          });
          // Ship a partition through snapshot → installSnapshot, as learning does.
          const entries = puts(1, 40, 1);
          await backend.writeBatch([apply(P1, entries)]);
          const snap = await backend.snapshot(P1);
          try {
            await backend.installSnapshot(P3, snap.applied, snap.items(9));
          } finally {
            await snap.close();
          }
          assert.deepStrictEqual((await scanAll(backend, P3)).map(hex), (await scanAll(backend, P1)).map(hex));
          assert.deepStrictEqual((await stateOf(backend, P3))?.applied, pos(40, 1));
          assert.equal(await backend.count(P3), 40);
        },
      );

      it('a failed installSnapshot leaves the partition as it was', async (_h, backend) => {
        await backend.writeBatch([
          append(P1, puts(1, 6, 1)),
          apply(P1, puts(1, 4, 1)),
          { kind: 'setMeta', partition: P1, meta: meta(2) },
        ]);
        const before = await dump(backend, [P1]);
        const many: SnapshotItem[] = [];
        for (let i = 0; i < 5000; i++)
          many.push({ key: b(`m${String(i).padStart(5, '0')}`), value: b('v'), version: seq(1) });
        async function* failing(): AsyncIterable<readonly SnapshotItem[]> {
          yield* pagesOf(many, 1000);
          throw new Error('the source went away');
        }
        await assert.rejects(backend.installSnapshot(P1, pos(9, 2), failing()), /the source went away/);
        assert.deepStrictEqual(await dump(backend, [P1]), before);
        const unordered = [many[1]!, many[0]!];
        await assert.rejects(backend.installSnapshot(P1, pos(9, 2), pagesOf(unordered, 10)), InvariantViolation);
        const tooNew = [{ key: b('a'), value: b('v'), version: seq(10) }];
        await assert.rejects(backend.installSnapshot(P1, pos(9, 2), pagesOf(tooNew, 10)), InvariantViolation);
        assert.deepStrictEqual(await dump(backend, [P1]), before);
        // It still works afterwards, with a snapshot of several stages.
        await backend.installSnapshot(P1, pos(9, 2), pagesOf(many, 1000));
        assert.equal(await backend.count(P1), 5000);
        assert.equal((await scanAll(backend, P1, 1000)).length, 5000);
      });
    });

    describe('exactly once: the dedup table (S10)', () => {
      it(
        'apply records every tagged entry: client, request ' + 'seq, seq, and for a delete whether the key existed',
        async (_h, backend) => {
          const entries = [
            tag(put(1, 1, 'a', 'A'), 'c1', 1),
            put(2, 1, 'b', 'B'), // untagged: no record
            tag(del(3, 1, 'a'), 'c2', 7),
            tag(del(4, 1, 'never'), 'c3', 2),
            tag(start(5, 2), 'c4', 0),
          ];
          const result = await backend.writeBatch([append(P1, entries), apply(P1, entries)]);
          assert.deepStrictEqual(result.deletes, [
            { partition: P1, seq: 3, existed: true },
            { partition: P1, seq: 4, existed: false },
          ]);
          const table = await backend.dedupTable(P1);
          assert.deepStrictEqual(table, [
            rec('c1', 1, 1),
            rec('c2', 7, 3, true),
            rec('c3', 2, 4, false),
            rec('c4', 0, 5),
          ]);
          assert.equal('existed' in table[0]!, false, 'a put has no existed flag');
          assert.deepStrictEqual(await backend.dedupTable(P2), [], 'partitions do not share tables');
          // Appending tagged entries records nothing: only applying does.
          const pending = [tag(put(6, 2, 'p', 'P'), 'c5', 1)];
          await backend.writeBatch([append(P1, pending)]);
          assert.deepStrictEqual(await backend.dedupTable(P1), table);
          await backend.writeBatch([apply(P1, pending)]);
          assert.deepStrictEqual(
            (await backend.dedupTable(P1)).map((r) => r.clientId),
            ['c1', 'c2', 'c3', 'c4', 'c5'],
          );
        },
      );

      it(
        "a client's later write replaces its record, also later " + 'in the same op or batch; tables are per partition',
        async (_h, backend) => {
          await backend.writeBatch([apply(P1, [tag(put(1, 1, 'k', '1'), 'c1', 1), tag(put(2, 1, 'k', '2'), 'c2', 1)])]);
          await backend.writeBatch([
            apply(P1, [tag(put(3, 1, 'k', '3'), 'c1', 2), tag(del(4, 1, 'k'), 'c1', 3)]),
            apply(P1, [tag(put(5, 1, 'j', '5'), 'c2', 2), put(6, 1, 'j', '6')]),
            apply(P2, [tag(put(1, 1, 'k', 'p2'), 'c1', 50)]),
          ]);
          assert.deepStrictEqual(await backend.dedupTable(P1), [rec('c1', 3, 4, true), rec('c2', 2, 5)]);
          assert.deepStrictEqual(await backend.dedupTable(P2), [rec('c1', 50, 1)]);
          // An untagged write of the same key leaves the client's record alone.
          await backend.writeBatch([apply(P1, [del(7, 1, 'j')])]);
          assert.deepStrictEqual(await backend.dedupTable(P1), [rec('c1', 3, 4, true), rec('c2', 2, 5)]);
        },
      );

      it('dedupTable is in client id order (JavaScript string order), whatever the characters', async (_h, backend) => {
        const longest = 'é'.repeat(MAX_CLIENT_ID_BYTES / 2); // 2 bytes each in UTF-8
        // '\uffff' sorts after '😀' in UTF-8 bytes but before it in JavaScript order.
        const ids = ['😀', '\uffff', 'b', 'a', 'é', 'a\u0000', longest, 'A'];
        const entries = ids.map((id, i) => tag(put(i + 1, 1, `k${i}`, 'v'), id, i));
        await backend.writeBatch([apply(P1, entries)]);
        const expected = ids.map((id, i) => rec(id, i, i + 1)).sort((x, y) => (x.clientId < y.clientId ? -1 : 1));
        assert.deepStrictEqual(await backend.dedupTable(P1), expected);
        assert.deepStrictEqual((await snapshotItems(backend, P1, 10)).dedup, expected);
      });

      it('a tag a backend cannot store is rejected and nothing of the batch stays', async (_h, backend) => {
        await backend.writeBatch([apply(P1, [tag(put(1, 1, 'a', '1'), 'c1', 1)])]);
        const before = await dump(backend, [P1, P2]);
        const bad: RequestTag[] = [
          { clientId: '', requestSeq: 1 },
          { clientId: 'x\ud800', requestSeq: 1 }, // a lone surrogate has no UTF-8 form
          { clientId: 'x'.repeat(MAX_CLIENT_ID_BYTES + 1), requestSeq: 1 },
          { clientId: 'c1', requestSeq: -1 },
          { clientId: 'c1', requestSeq: 1.5 },
          { clientId: 7 as unknown as string, requestSeq: 1 },
        ];
        for (const t of bad) {
          const ops = [
            apply(P2, [tag(put(1, 1, 'x', 'y'), 'c9', 1)]),
            apply(P1, [tag(put(2, 1, 'b', '2'), 'c1', 2), { ...put(3, 1, 'c', '3'), tag: t }]),
          ];
          await assert.rejects(backend.writeBatch(ops), InvariantViolation, JSON.stringify(t).slice(0, 40));
          assert.deepStrictEqual(await dump(backend, [P1, P2]), before);
        }
      });

      it(
        'a batch that fails leaves every dedup table as ' + 'it was; its neighbours still record theirs',
        async (_h, backend) => {
          await backend.writeBatch([
            append(P1, puts(1, 2, 1)),
            apply(P1, [tag(put(1, 1, 'k', '1'), 'c1', 1), put(2, 1, 'j', '2')]),
          ]);
          const before = await dump(backend, [P1, P2, P3]);
          await assert.rejects(
            backend.writeBatch([
              apply(P1, [tag(put(3, 1, 'k', '3'), 'c1', 2), tag(del(4, 1, 'j'), 'c2', 1)]),
              apply(P2, [tag(put(1, 1, 'x', 'y'), 'c3', 1)]),
              { kind: 'dropPartition', partition: P1 },
              apply(P3, [tag(put(1, 1, 'x', 'y'), 'c4', 1)]),
              apply(P2, [put(9, 1, 'x', 'y')]), // a gap: the whole batch fails
            ]),
            InvariantViolation,
          );
          assert.deepStrictEqual(await dump(backend, [P1, P2, P3]), before);
          const results = await Promise.allSettled([
            backend.writeBatch([apply(P1, [tag(put(3, 1, 'k', '3'), 'c1', 2)])]),
            backend.writeBatch([
              apply(P1, [tag(del(4, 1, 'j'), 'c2', 1)]),
              apply(P2, [tag(put(5, 1, 'x', 'y'), 'c3', 1)]),
            ]),
            backend.writeBatch([apply(P1, [tag(del(4, 1, 'j'), 'c2', 2)])]),
          ]);
          assert.deepStrictEqual(
            results.map((r) => r.status),
            ['fulfilled', 'rejected', 'fulfilled'],
          );
          assert.deepStrictEqual(await backend.dedupTable(P1), [rec('c1', 2, 3), rec('c2', 2, 4, true)]);
          assert.deepStrictEqual(await backend.dedupTable(P2), []);
        },
      );

      it(
        "a snapshot's dedup table is the one at its applied " + 'position; later writes do not show in it',
        async (_h, backend) => {
          await backend.writeBatch([apply(P1, [tag(put(1, 1, 'a', '1'), 'c1', 1), tag(del(2, 1, 'zz'), 'c2', 1)])]);
          const snap = await backend.snapshot(P1);
          try {
            await backend.writeBatch([
              apply(P1, [tag(put(3, 1, 'a', '3'), 'c1', 2), tag(put(4, 1, 'b', '4'), 'c3', 1)]),
            ]);
            assert.deepStrictEqual(snap.applied, pos(2, 1));
            assert.deepStrictEqual(snap.dedup, [rec('c1', 1, 1), rec('c2', 1, 2, false)]);
            const items: SnapshotItem[] = [];
            for await (const page of snap.items(10)) items.push(...page);
            assert.deepStrictEqual(
              items.map((i) => i.version),
              [1],
            );
            await backend.writeBatch([{ kind: 'dropPartition', partition: P1 }]);
            assert.deepStrictEqual(snap.dedup, [rec('c1', 1, 1), rec('c2', 1, 2, false)]);
          } finally {
            await snap.close();
          }
          await backend.writeBatch([apply(P2, [tag(put(1, 1, 'a', '1'), 'c1', 1)])]);
          const later = await snapshotItems(backend, P2, 10);
          assert.deepStrictEqual([later.applied, later.dedup], [pos(1, 1), [rec('c1', 1, 1)]]);
          assert.deepStrictEqual((await snapshotItems(backend, P1, 10)).dedup, []);
        },
      );

      it(
        'installSnapshot replaces the dedup table with the ' + 'given one, or empties it; apply goes on from there',
        async (_h, backend) => {
          await backend.writeBatch([
            append(P1, puts(1, 4, 1)),
            apply(P1, [tag(put(1, 1, 'a', '1'), 'old', 1), tag(put(2, 1, 'b', '2'), 'c1', 1)]),
            apply(P2, [tag(put(1, 1, 'p', '2'), 'p2-client', 4)]),
          ]);
          const p2Before = await dump(backend, [P2]);
          const dedup = [rec('c2', 1, 9, true), rec('c1', 5, 8), rec('c0', 0, 10, false)];
          const items: SnapshotItem[] = [{ key: b('s'), value: b('v'), version: seq(8) }];
          await backend.installSnapshot(P1, pos(10, 2), pagesOf(items, 1), dedup);
          const installed = [rec('c0', 0, 10, false), rec('c1', 5, 8), rec('c2', 1, 9, true)];
          assert.deepStrictEqual(await backend.dedupTable(P1), installed);
          assert.deepStrictEqual((await snapshotItems(backend, P1, 10)).dedup, installed);
          assert.deepStrictEqual(await dump(backend, [P2]), p2Before, 'other partitions keep their tables');
          await backend.writeBatch([apply(P1, [tag(del(11, 2, 's'), 'c2', 2), tag(put(12, 2, 'n', 'N'), 'c3', 1)])]);
          assert.deepStrictEqual(await backend.dedupTable(P1), [
            rec('c0', 0, 10, false),
            rec('c1', 5, 8),
            rec('c2', 2, 11, true),
            rec('c3', 1, 12),
          ]);
          // Without a table, the partition's table is empty afterwards.
          await backend.installSnapshot(P1, pos(20, 2), pagesOf(items, 1));
          assert.deepStrictEqual(await backend.dedupTable(P1), []);
          await backend.installSnapshot(P3, pos(5, 1), pagesOf([], 1), [rec('new', 3, 5)]);
          assert.deepStrictEqual(await backend.dedupTable(P3), [rec('new', 3, 5)]);
        },
      );

      it(
        'a dedup table of many clients ships through ' + 'snapshot → installSnapshot, as learning does',
        async (_h, backend) => {
          const clients = 4500; // more than one lmdb staging chunk
          const entries: LogEntry[] = [];
          for (let i = 1; i <= clients; i++) {
            const entry =
              i % 6 === 0 ? del(i, 1, 'absent') : i % 3 === 0 ? del(i, 1, `k${i - 1}`) : put(i, 1, `k${i}`, 'v');
            entries.push(tag(entry, `client-${i}`, i * 2));
          }
          await backend.writeBatch([apply(P1, entries)]);
          const snap = await backend.snapshot(P1);
          try {
            assert.equal(snap.dedup.length, clients);
            await backend.installSnapshot(P2, snap.applied, snap.items(1000), snap.dedup);
          } finally {
            await snap.close();
          }
          const source = await backend.dedupTable(P1);
          assert.deepStrictEqual(await backend.dedupTable(P2), source);
          assert.deepStrictEqual(
            source.find((r) => r.clientId === 'client-3'),
            rec('client-3', 6, 3, true),
          );
          assert.deepStrictEqual(
            source.find((r) => r.clientId === 'client-6'),
            rec('client-6', 12, 6, false),
          );
        },
      );

      it(
        'a failed installSnapshot leaves the dedup table as it was; ' +
          'a malformed table is refused before anything changes',
        async (_h, backend) => {
          await backend.writeBatch([
            append(P1, puts(1, 3, 1)),
            apply(P1, [tag(put(1, 1, 'a', '1'), 'c1', 1), tag(del(2, 1, 'a'), 'c2', 1)]),
          ]);
          const before = await dump(backend, [P1]);
          const many: SnapshotItem[] = [];
          for (let i = 0; i < 5000; i++)
            many.push({ key: b(`m${String(i).padStart(5, '0')}`), value: b('v'), version: seq(1) });
          async function* failing(): AsyncIterable<readonly SnapshotItem[]> {
            yield* pagesOf(many, 1000);
            throw new Error('the source went away');
          }
          await assert.rejects(
            backend.installSnapshot(P1, pos(9, 2), failing(), [rec('new', 1, 9)]),
            /the source went away/,
          );
          assert.deepStrictEqual(await dump(backend, [P1]), before);
          const bad: DedupRecord[][] = [
            [rec('dup', 1, 3), rec('dup', 2, 4)], // two records for one client
            [rec('c', 1, 10)], // newer than the snapshot
            [rec('c', 1, 0)], // seq 0 is no entry
            [rec('', 1, 3)],
            [rec('c', -1, 3)],
            [{ ...rec('c', 1, 3), existed: 'yes' as unknown as boolean }],
          ];
          for (const dedup of bad) {
            await assert.rejects(
              backend.installSnapshot(P1, pos(9, 2), pagesOf(many, 1000), dedup),
              InvariantViolation,
              JSON.stringify(dedup),
            );
            assert.deepStrictEqual(await dump(backend, [P1]), before);
          }
          await backend.installSnapshot(P1, pos(9, 2), pagesOf(many, 1000), [rec('c', 1, 9)]);
          assert.deepStrictEqual(await backend.dedupTable(P1), [rec('c', 1, 9)]);
        },
      );

      it("dropPartition removes the partition's dedup table and only its", async (_h, backend) => {
        await backend.writeBatch([
          apply(P1, [tag(put(1, 1, 'a', '1'), 'c1', 1)]),
          apply(P2, [tag(put(1, 1, 'a', '1'), 'c1', 2)]),
        ]);
        await backend.writeBatch([{ kind: 'dropPartition', partition: P1 }]);
        assert.deepStrictEqual(await backend.dedupTable(P1), []);
        assert.deepStrictEqual(await backend.dedupTable(P2), [rec('c1', 2, 1)]);
        // A recreated partition starts with an empty table, also when dropped and recreated in one batch.
        await backend.writeBatch([apply(P1, [put(1, 1, 'a', '1')])]);
        assert.deepStrictEqual(await backend.dedupTable(P1), []);
        await backend.writeBatch([apply(P1, [tag(put(2, 1, 'b', '2'), 'c2', 1)])]);
        await backend.writeBatch([
          { kind: 'dropPartition', partition: P1 },
          apply(P1, [tag(put(1, 2, 'c', '3'), 'c3', 1)]),
        ]);
        assert.deepStrictEqual(await backend.dedupTable(P1), [rec('c3', 1, 1)]);
        // An installed table is dropped too.
        await backend.installSnapshot(P3, pos(4, 1), pagesOf([], 1), [rec('c4', 1, 4)]);
        await backend.writeBatch([{ kind: 'dropPartition', partition: P3 }]);
        assert.deepStrictEqual(await backend.dedupTable(P3), []);
        assert.deepStrictEqual((await snapshotItems(backend, P3, 1)).dedup, []);
      });
    });

    describe('keys and values', () => {
      it('binary keys (0x00, 0xff) and UTF-8 keys round-trip and sort by bytes', async (_h, backend) => {
        const keys = [
          new Uint8Array([0x00]),
          new Uint8Array([0x00, 0x00]),
          new Uint8Array([0x00, 0xff, 0x00]),
          new Uint8Array([0xff]),
          new Uint8Array([0xff, 0xff, 0xff, 0xff]),
          new Uint8Array([0x7f, 0x80]),
          b('ключ'),
          b('键'),
          b('🔑 key'),
          b('plain'),
          new Uint8Array(1024).fill(0xab),
        ];
        const entries = keys.map((k, i) => put(i + 1, 1, k, k));
        await backend.writeBatch([append(P1, entries), apply(P1, entries)]);
        for (const [i, k] of keys.entries()) {
          const got = await backend.get(P1, k);
          assert.ok(got, `key ${hex(k)}`);
          assert.equal(hex(got.value), hex(k));
          assert.equal(got.version, i + 1);
        }
        assert.equal(await backend.get(P1, new Uint8Array([0x00, 0x01])), undefined);
        const sorted = [...keys].sort(Buffer.compare);
        assert.deepStrictEqual((await scanAll(backend, P1, 3)).map(hex), sorted.map(hex));
        // Keys longer than any stored key are valid to look up and to scan after.
        const long = new Uint8Array(3000);
        assert.equal(await backend.get(P1, long), undefined);
        const afterLong = await backend.scan(P1, { afterKey: long, limit: 100 });
        assert.deepStrictEqual(afterLong.keys.map(hex), sorted.filter((k) => Buffer.compare(k, long) > 0).map(hex));
        await assert.rejects(
          backend.writeBatch([apply(P1, [put(keys.length + 1, 1, new Uint8Array(), 'v')])]),
          InvariantViolation,
          'an empty key',
        );
        assert.deepStrictEqual(normAll(await readAll(backend, P1)), normAll(entries));
      });

      it('a 1 MiB value and an empty value', async (_h, backend) => {
        const big = new Uint8Array(MiB);
        for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
        const entries = [put(1, 1, 'big', big), put(2, 1, 'empty', new Uint8Array())];
        await backend.writeBatch([append(P1, entries), apply(P1, entries)]);
        const gotBig = await backend.get(P1, b('big'));
        assert.ok(gotBig);
        assert.equal(gotBig.value.length, MiB);
        assert.equal(Buffer.compare(gotBig.value, big), 0);
        const gotEmpty = await backend.get(P1, b('empty'));
        assert.ok(gotEmpty);
        assert.equal(gotEmpty.value.length, 0);
        assert.equal(gotEmpty.version, 2);
        const [logged] = await readAll(backend, P1);
        assert.ok(logged?.op.kind === 'put');
        assert.equal(Buffer.compare(logged.op.value, big), 0);
        const snap = await snapshotItems(backend, P1, 1);
        assert.deepStrictEqual(
          snap.pages.map((p) => p[0]!.value.length),
          [MiB, 0],
        );
      });
    });

    it('state survives close and reopen (durable backends)', async (h) => {
      if (!h.reopen) return; // the memory backend keeps nothing (S4)
      let backend = h.backend;
      const tagged: LogEntry = {
        ...put(2, 1, new Uint8Array([0, 0xff]), 'tagged'),
        tag: { clientId: 'client-1', requestSeq: 42 },
      };
      const p1Log = [
        put(1, 1, 'a', 'A'),
        tagged,
        tag(del(3, 2, 'a'), 'client-2', 1),
        start(4, 3),
        tag(put(5, 3, 'b', 'B'), 'client-1', 43),
      ];
      await backend.writeBatch([
        append(P1, p1Log),
        apply(P1, p1Log.slice(0, 4)),
        { kind: 'setMeta', partition: P1, meta: meta(3) },
        append(P2, puts(1, 10, 1)),
        apply(P2, puts(1, 8, 1)),
        { kind: 'setMeta', partition: P3, meta: { epoch: epoch(9), config: null } },
      ]);
      await backend.writeBatch([
        { kind: 'truncateLogTo', partition: P2, base: pos(6, 1) },
        { kind: 'truncateLogFrom', partition: P2, fromSeq: seq(10) },
      ]);
      const items: SnapshotItem[] = [{ key: b('snap'), value: b('shot'), version: seq(3) }];
      await backend.installSnapshot(P3, pos(30, 9), pagesOf(items, 1), [
        rec('learnt', 8, 29, false),
        rec('client-1', 1, 3),
      ]);
      await backend.writeBatch([apply(partitionId(4), [tag(put(1, 1, 'x', 'y'), 'gone', 1)])]);
      await backend.writeBatch([{ kind: 'dropPartition', partition: partitionId(4) }]);
      const all = [P1, P2, P3, partitionId(4)];
      const before = await dump(backend, all);
      assert.deepStrictEqual(await backend.dedupTable(P1), [rec('client-1', 42, 2), rec('client-2', 1, 3, true)]);
      backend = await h.reopen();
      assert.deepStrictEqual(await dump(backend, all), before);
      assert.deepStrictEqual(await backend.dedupTable(P3), [rec('client-1', 1, 3), rec('learnt', 8, 29, false)]);
      assert.deepStrictEqual(await backend.dedupTable(partitionId(4)), []);
      // And it keeps working where it stopped.
      await backend.writeBatch([
        append(P2, [put(10, 2, 'z', 'Z')]),
        apply(P1, [p1Log[4]!]),
        append(P3, [put(31, 9, 'q', 'Q')]),
      ]);
      assert.deepStrictEqual((await stateOf(backend, P1))?.applied, pos(5, 3));
      assert.deepStrictEqual(await backend.dedupTable(P1), [rec('client-1', 43, 5), rec('client-2', 1, 3, true)]);
      assert.deepStrictEqual((await stateOf(backend, P2))?.logLast, pos(10, 2));
      assert.deepStrictEqual((await stateOf(backend, P3))?.logLast, pos(31, 9));
      const afterWrite = await dump(backend, all);
      backend = await h.reopen();
      assert.deepStrictEqual(await dump(backend, all), afterWrite);
    });

    it(
      'S13: a stored value with a flipped byte is never returned: ' + 'get, scan and snapshots report it corrupt',
      async (h) => {
        if (!h.corruptValue) return; // no checksums (memory): nothing to verify
        let backend = h.backend;
        const secret = `secret-${'x'.repeat(40)}`;
        const log = [put(1, 1, 'a', 'A'), put(2, 1, 'bad', secret), put(3, 1, 'c', 'C')];
        await backend.writeBatch([append(P1, log), apply(P1, log)]);
        // Only the stored value holds the bytes from now on.
        await backend.writeBatch([{ kind: 'truncateLogTo', partition: P1, base: pos(3, 1) }]);
        backend = await h.corruptValue(b(secret));
        const corrupt = (err: unknown): boolean => {
          assert.ok(isCorruptRecord(err), `not a corrupt-record error: ${String(err)}`);
          assert.match((err as Error).message, /S13/);
          return true;
        };
        await assert.rejects(backend.get(P1, b('bad')), corrupt);
        assert.deepStrictEqual(await backend.get(P1, b('a')), { value: b('A'), version: seq(1) });
        assert.deepStrictEqual(await backend.get(P1, b('c')), { value: b('C'), version: seq(3) });
        await assert.rejects(backend.scan(P1, { limit: 10 }), corrupt);
        const snapshot = await backend.snapshot(P1);
        try {
          await assert.rejects(
            (async () => {
              for await (const page of snapshot.items(10))
                assert.ok(!page.some((i) => hex(i.value) === hex(b(secret))));
            })(),
            corrupt,
          );
        } finally {
          await snapshot.close();
        }
        // Relearning starts by dropping the partition: nothing corrupt is left.
        await backend.writeBatch([{ kind: 'dropPartition', partition: P1 }]);
        assert.equal(await backend.get(P1, b('bad')), undefined);
        assert.deepStrictEqual((await backend.scan(P1, { limit: 10 })).keys, []);
      },
    );
  });
}

/** For backend-specific tests. */
export const fixtures = {
  P1,
  P2,
  P3,
  b,
  hex,
  pos,
  put,
  del,
  puts,
  tag,
  rec,
  append,
  apply,
  meta,
  dump,
  scanAll,
  readAll,
  pagesOf,
};

/**
 * Multi-key transactions on a real cluster (issue 14, docs/transactions.md): `dstore up
 * --no-shell` (3 lmdb storage servers, R=3, 8 partitions, free ports, a temp data dir).
 *
 * Proves:
 * - a transaction's writes to keys of several partitions all take effect, with reads of its own
 *   writes inside it;
 * - a bank: concurrent transfers between accounts in transactions and read-only transactions
 *   of every account: every read-only transaction sees the total, and the total never changes;
 * - conflicting increments of one counter by concurrent transactions lose none;
 * - what a coordinator that died leaves: a pending record's intent holds its key until the
 *   record's timeout, then a writer drops it and goes on (the value never changed); a committed
 *   record's unresolved intent is resolved forward by the first reader;
 * - limits (keys, bytes) are clear errors, with nothing written; reserved keys are refused.
 * Every wait is bounded; the cluster is stopped and the temp dir removed even when a test fails.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort } from '../../src/cli/options.js';
import { connect, type Db, InvalidArgumentError } from '../../src/client/index.js';
import { encodeIntent, type TxnIO } from '../../src/client/transaction.js';
import { partitionOf } from '../../src/core/partitioning.js';
import { intentKey, recordKey } from '../../src/core/txn-keys.js';
import { runDstoreText, startUp, type UpCluster } from '../shared/dstore.js';

const text = (b: Uint8Array | undefined) => (b === undefined ? undefined : Buffer.from(b).toString());
/** The client's transaction calls, to play a coordinator that dies part way. */
const ioOf = (db: Db): TxnIO => (db as unknown as { txnIO: TxnIO }).txnIO;

describe('transactions on a real cluster', { timeout: 300_000 }, () => {
  let dataDir = '';
  let up: UpCluster | undefined;
  let db: Db | undefined;

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'dstore-txn-'));
    const port = await freePort();
    up = await startUp(['--data-dir', dataDir, '--port', String(port), '--storage-port', '0', '--partitions', '8']);
    db = await connect(up.nameserver, { timeoutMs: 20_000 });
  });

  after(async () => {
    await db?.close();
    await up?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('writes to keys of several partitions take effect together; reads see the transaction’s own writes', async () => {
    const keys = ['t-a', 't-b', 't-c', 't-d'];
    assert.ok(new Set(keys.map((k) => partitionOf(Buffer.from(k), 8))).size > 1, 'the keys span partitions');
    await db!.put('t-d', 'old');
    const seen = await db!.transaction(async (tx) => {
      tx.put('t-a', '1');
      tx.put('t-b', '2');
      tx.put('t-c', '3');
      tx.delete('t-d');
      return text((await tx.get('t-a'))?.value);
    });
    assert.equal(seen, '1');
    assert.deepEqual(await Promise.all(keys.map(async (k) => text((await db!.get(k))?.value))), [
      '1',
      '2',
      '3',
      undefined,
    ]);
  });

  test('a bank: transfers and read-only audits in transactions; the total never changes', async () => {
    const accounts = ['acct-0', 'acct-1', 'acct-2', 'acct-3', 'acct-4'];
    for (const a of accounts) await db!.put(a, '100');
    const clients = await Promise.all([1, 2, 3].map(() => connect(up!.nameserver, { timeoutMs: 20_000 })));
    let transfers = 0;
    const audits: number[] = [];
    const stopAt = Date.now() + 8000;
    try {
      const transfer = async (c: Db, seed: number) => {
        for (let i = 0; i < 400 && Date.now() < stopAt; i++) {
          const from = accounts[(seed + i) % accounts.length]!;
          const to = accounts[(seed + 2 * i + 1) % accounts.length]!;
          if (from === to) continue;
          await c.transaction(async (tx) => {
            const a = Number(text((await tx.get(from))?.value));
            const b = Number(text((await tx.get(to))?.value));
            tx.put(from, String(a - 1));
            tx.put(to, String(b + 1));
          });
          transfers++;
        }
      };
      const audit = async (c: Db) => {
        for (let i = 0; i < 400 && Date.now() < stopAt; i++) {
          audits.push(
            await c.transaction(async (tx) => {
              let sum = 0;
              for (const a of accounts) sum += Number(text((await tx.get(a))?.value));
              return sum;
            }),
          );
        }
      };
      await Promise.all([transfer(clients[0]!, 0), transfer(clients[1]!, 3), audit(clients[2]!)]);
    } finally {
      for (const c of clients) await c.close();
    }
    assert.ok(transfers > 20, `${transfers} transfers committed`);
    assert.ok(audits.length > 5, `${audits.length} audits`);
    assert.deepEqual([...new Set(audits)], [500], 'every audit saw the total');
    let total = 0;
    for (const a of accounts) total += Number(text((await db!.get(a))?.value));
    assert.equal(total, 500);
    console.log(`# bank: ${transfers} transfers and ${audits.length} audits in 8 s, total kept`);
  });

  test('concurrent increments of one counter in transactions lose none', async () => {
    await db!.put('counter', '0');
    const clients = await Promise.all([1, 2, 3].map(() => connect(up!.nameserver, { timeoutMs: 20_000 })));
    try {
      await Promise.all(
        clients.map(async (c) => {
          for (let i = 0; i < 15; i++)
            await c.transaction(
              async (tx) => {
                const n = Number(text((await tx.get('counter'))?.value));
                tx.put('counter', String(n + 1));
                tx.put(`counter-log-${n + 1}`, 'x'); // another partition, most likely
              },
              { maxAttempts: 100 },
            );
        }),
      );
    } finally {
      for (const c of clients) await c.close();
    }
    assert.equal(text((await db!.get('counter'))?.value), '45');
  });

  test('a dead coordinator: its pending intent holds the key until the record times out, then goes', async () => {
    const io = ioOf(db!);
    await db!.put('held', 'before');
    const record = recordKey('00000000000000aa', Buffer.from('held'));
    await io.sysPut(record, Uint8Array.of(0x70), { ifVersion: 0, ttlMs: 1500 }); // 'p', expires in 1.5 s
    const placedAt = Date.now();
    await io.sysPut(
      intentKey(Buffer.from('held')),
      encodeIntent(record, { kind: 'put', value: Buffer.from('ghost') }),
      {
        ifVersion: 0,
      },
    );
    // A reader sees the value before the undecided transaction.
    assert.equal(text((await db!.get('held'))?.value), 'before');
    // A writer waits for the record's timeout, then aborts the transaction and writes.
    await db!.put('held', 'after');
    const waited = Date.now() - placedAt;
    assert.ok(waited >= 1000, `the write waited ${waited} ms for the transaction's timeout`);
    assert.equal(text((await db!.get('held'))?.value), 'after');
    // The abort is recorded: the dead coordinator's commit cannot succeed any more.
    const r = await io.readRaw(record);
    assert.equal(text(r.value), 'a');
  });

  test('a committed transaction’s unresolved intent is resolved forward by the first reader', async () => {
    const io = ioOf(db!);
    await db!.put('fwd', 'before');
    const record = recordKey('00000000000000bb', Buffer.from('fwd'));
    const v = await io.sysPut(record, Uint8Array.of(0x70), { ifVersion: 0, ttlMs: 60_000 });
    await io.sysPut(intentKey(Buffer.from('fwd')), encodeIntent(record, { kind: 'put', value: Buffer.from('new') }), {
      ifVersion: 0,
    });
    await io.sysPut(record, Uint8Array.of(0x63), { ifVersion: v }); // committed; the coordinator dies here
    assert.equal(text((await db!.get('fwd'))?.value), 'new');
    assert.equal((await io.readRaw(intentKey(Buffer.from('fwd')))).found, false, 'the intent is gone');
  });

  test('dstore txn: ops in order, reads see the writes, limits as flags, bad ops a usage error', async () => {
    const cli = (args: string[]) => runDstoreText([...args, '--nameserver', up!.nameserver]);
    const ok = await cli(['txn', 'put', 'cli-a', '1', 'put', 'cli-b', '2', 'get', 'cli-a', 'del', 'cli-c', '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout), { committed: true, reads: [{ key: 'cli-a', value: '1' }] });
    assert.equal(text((await db!.get('cli-b'))?.value), '2');
    const over = await cli(['txn', 'put', 'x1', '1', 'put', 'x2', '2', '--max-keys', '1']);
    assert.equal(over.code, 2, over.stdout + over.stderr);
    assert.match(over.stderr, /key limit.*maxKeys 1/);
    assert.equal(await db!.get('x1'), undefined);
    const bad = await cli(['txn', 'put', 'only-key']);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /ops are get KEY, put KEY VALUE, del KEY/);
  });

  test('limits and reserved keys are clear errors; nothing is written', async () => {
    await assert.rejects(
      db!.transaction(
        async (tx) => {
          for (let i = 0; i < 5; i++) tx.put(`lim-${i}`, 'v');
        },
        { maxKeys: 4 },
      ),
      (e: unknown) => e instanceof InvalidArgumentError && /key limit.*maxKeys 4/.test(e.message),
    );
    await assert.rejects(
      db!.transaction(async (tx) => tx.put('lim-big', 'x'.repeat(2000)), { maxBytes: 1000 }),
      /size limit/,
    );
    assert.equal(await db!.get('lim-0'), undefined);
    assert.equal(await db!.get('lim-big'), undefined);
    await assert.rejects(db!.put('\u0000dstore\u0000x', 'v'), /reserved/);
  });
});

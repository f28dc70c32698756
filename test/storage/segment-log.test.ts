/**
 * The segment log (src/storage/segment-log.ts) on a real directory: records survive a reopen
 * in order, segments roll over and are dropped whole, a torn tail (an append a crash cut
 * short, bytes of it zeroed or missing) is cut off and reported, and a bad record anywhere
 * else is corruption (S13) that leaves the files untouched.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { isCorruptRecord } from '../../src/storage/log-record.js';
import { SegmentLog } from '../../src/storage/segment-log.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dstore-seglog-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const payload = (i: number, bytes = 40): Buffer => Buffer.alloc(bytes, i % 251);

async function segments(): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f.endsWith('.seg')).sort();
}

async function writeLog(appends: number, perAppend: number, segmentBytes?: number): Promise<void> {
  const { log } = await SegmentLog.open(dir, segmentBytes === undefined ? {} : { segmentBytes });
  let i = 0;
  for (let a = 0; a < appends; a++) {
    const batch = [];
    for (let r = 0; r < perAppend; r++) batch.push(payload(i++));
    await log.append(batch);
  }
  await log.close();
}

describe('segment log', () => {
  test('records come back in order after a reopen, numbered from 1, and appends continue', async () => {
    await writeLog(5, 3);
    const { log, records, tornTail } = await SegmentLog.open(dir);
    assert.equal(tornTail, undefined);
    assert.deepEqual(
      records.map((r) => r.n),
      Array.from({ length: 15 }, (_, i) => i + 1),
    );
    for (const r of records) assert.deepEqual(r.payload, payload(r.n - 1));
    assert.equal(await log.append([payload(99)]), 16);
    await log.close();
    const again = await SegmentLog.open(dir);
    assert.equal(again.records.length, 16);
    await again.log.close();
  });

  test('segments roll over at segmentBytes and dropBefore deletes only whole segments below n', async () => {
    // 56 bytes per record (16 header + 40): a 200-byte segment closes after 4 records.
    await writeLog(10, 2, 200);
    assert.equal((await segments()).length, 5);
    const { log, records } = await SegmentLog.open(dir, { segmentBytes: 200 });
    assert.equal(records.length, 20);
    assert.equal(await log.dropBefore(9), 2); // records 1–4 and 5–8
    assert.equal(await log.dropBefore(10), 0); // 9–12 still holds 9
    assert.equal(log.segmentCount, 3);
    await log.close();
    const again = await SegmentLog.open(dir, { segmentBytes: 200 });
    assert.deepEqual(
      again.records.map((r) => r.n),
      Array.from({ length: 12 }, (_, i) => i + 9),
    );
    await again.log.close();
  });

  test('a torn tail (the last append cut short) is cut off, reported, and appends go on after it', async () => {
    await writeLog(4, 2);
    const [name] = await segments();
    const path = join(dir, name as string);
    const full = (await stat(path)).size;
    await truncate(path, full - 30); // the last record loses 30 of its 56 bytes
    const { log, records, tornTail } = await SegmentLog.open(dir);
    assert.equal(records.length, 7);
    assert.deepEqual(tornTail, { file: path, offset: 7 * 56, bytes: 26 });
    assert.equal((await stat(path)).size, 7 * 56);
    assert.equal(await log.append([payload(7)]), 8);
    await log.close();
    assert.equal((await SegmentLog.open(dir)).records.length, 8);
  });

  test('a torn tail whose pages never reached the disk (zeros) is cut off too', async () => {
    await writeLog(3, 2);
    const [name] = await segments();
    const path = join(dir, name as string);
    const bytes = await readFile(path);
    bytes.fill(0, 4 * 56 + 10); // records 5 and 6 (one append): header of 5 partly zeros, 6 all zeros
    await writeFile(path, bytes);
    const { log, records, tornTail } = await SegmentLog.open(dir);
    assert.equal(records.length, 4);
    assert.equal(tornTail?.offset, 4 * 56);
    await log.close();
  });

  test('a flipped byte in a record with valid records after it is corruption, and nothing is changed', async () => {
    await writeLog(3, 2);
    const [name] = await segments();
    const path = join(dir, name as string);
    const bytes = await readFile(path);
    bytes[2 * 56 + 20] = (bytes[2 * 56 + 20] as number) ^ 0x01; // record 3's payload
    await writeFile(path, bytes);
    await assert.rejects(SegmentLog.open(dir), (err: unknown) => {
      assert.ok(isCorruptRecord(err), String(err));
      assert.match((err as Error).message, /record 3 at offset 112: checksum mismatch/);
      return true;
    });
    assert.deepEqual(await readFile(path), bytes);
  });

  test('a flipped byte in the last record, whole and synced, is corruption, not a torn tail (S13)', async () => {
    await writeLog(3, 2);
    const [name] = await segments();
    const path = join(dir, name as string);
    const bytes = await readFile(path);
    bytes[5 * 56 + 20] = (bytes[5 * 56 + 20] as number) ^ 0x01; // record 6, the last one
    await writeFile(path, bytes);
    await assert.rejects(SegmentLog.open(dir), (err: unknown) => {
      assert.ok(isCorruptRecord(err), String(err));
      assert.match((err as Error).message, /record 6 at offset 280: checksum mismatch/);
      return true;
    });
    assert.deepEqual(await readFile(path), bytes, 'nothing is cut off');
  });

  test('a bad record in a segment that is not the last is corruption, even at its end', async () => {
    await writeLog(6, 2, 200);
    const names = await segments();
    const first = join(dir, names[0] as string);
    const size = (await stat(first)).size;
    await truncate(first, size - 5);
    await assert.rejects(SegmentLog.open(dir, { segmentBytes: 200 }), (err: unknown) => isCorruptRecord(err));
  });

  test('read(n) returns any kept record, from closed and open segments, and checks it (S13)', async () => {
    await writeLog(5, 2, 200); // records 1–10 over three segments
    const { log } = await SegmentLog.open(dir, { segmentBytes: 200 });
    await log.append([payload(10, 300)]); // record 11 in the open segment
    for (let n = 1; n <= 10; n++) assert.deepEqual(await log.read(n), payload(n - 1), `record ${n}`);
    assert.deepEqual(await log.read(11), payload(10, 300));
    assert.equal(await log.read(12), undefined);
    await log.dropBefore(5);
    assert.equal(await log.read(1), undefined, 'dropped with its segment');
    assert.deepEqual(await log.read(5), payload(4));
    // A byte flipped behind the log's back is found by the read, not returned.
    const names = await segments();
    const last = join(dir, names.at(-1) as string);
    const bytes = await readFile(last);
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0x80;
    await writeFile(last, bytes);
    await assert.rejects(log.read(11), (err: unknown) => isCorruptRecord(err));
    await log.close();
  });

  test('a missing segment in the middle is corruption', async () => {
    await writeLog(6, 2, 200);
    const names = await segments();
    await rm(join(dir, names[1] as string));
    await assert.rejects(SegmentLog.open(dir, { segmentBytes: 200 }), /a segment is missing/);
  });
});

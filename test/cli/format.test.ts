/**
 * The CLI's pure helpers: the latency histogram's percentiles stay within its stated
 * precision (exact below 256 µs, < 1 % above) with bounded memory; ages and durations read
 * as the shell shows them ("0.4s ago", "5m 2s"); values print as quoted UTF-8 or hex;
 * colours only on a TTY without NO_COLOR; option parsers accept what --help says and
 * reject the rest; `up` picks up storage servers an earlier `spawn` left in the data dir.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { formatReport, keyName, makeValue, randomBenchPrefix } from '../../src/cli/bench.js';
import { colourWanted, formatAgo, formatDuration, formatKey, formatValue, table } from '../../src/cli/format.js';
import { Histogram } from '../../src/cli/histogram.js';
import {
  checkListenAllowed,
  freePort,
  intParser,
  isLoopbackHost,
  isPortFree,
  parseHostPort,
  parseRatio,
  UsageError,
} from '../../src/cli/options.js';
import { storageIdsFor } from '../../src/cli/up.js';

describe('histogram', () => {
  test('empty histogram reports zeros', () => {
    const h = new Histogram();
    assert.equal(h.count, 0);
    assert.equal(h.percentileMs(50), 0);
    assert.equal(h.maxMs, 0);
  });

  test('exact below 256 µs', () => {
    const h = new Histogram();
    for (let us = 1; us <= 100; us++) h.recordUs(us);
    assert.equal(h.percentileMs(50), 0.05);
    assert.equal(h.percentileMs(99), 0.099);
    assert.equal(h.percentileMs(100), 0.1);
    assert.equal(h.maxMs, 0.1);
  });

  test('within 1 % above, for values up to an hour', () => {
    const h = new Histogram();
    const values: number[] = [];
    let x = 12345;
    for (let i = 0; i < 20_000; i++) {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      const us = 256 + (x % 3_600_000_000);
      values.push(us);
      h.recordUs(us);
    }
    values.sort((a, b) => a - b);
    for (const p of [50, 90, 99, 99.9]) {
      const exact = (values[Math.ceil((p / 100) * values.length) - 1] ?? 0) / 1000;
      const got = h.percentileMs(p);
      assert.ok(Math.abs(got - exact) / exact < 0.01, `p${p}: ${got} vs ${exact}`);
    }
    assert.equal(h.maxMs, (values[values.length - 1] ?? 0) / 1000);
  });

  test('add merges counts, max and mean', () => {
    const a = new Histogram();
    const b = new Histogram();
    a.recordMs(1);
    b.recordMs(3);
    a.add(b);
    assert.equal(a.count, 2);
    assert.equal(a.maxMs, 3);
    assert.equal(a.meanMs, 2);
  });

  test('values beyond the range are clamped, not lost', () => {
    const h = new Histogram();
    h.recordUs(-5);
    h.recordUs(2 ** 40);
    assert.equal(h.count, 2);
    assert.ok(h.maxMs > 4_000_000);
  });
});

describe('format', () => {
  test('ages and durations', () => {
    assert.equal(formatAgo(400), '0.4s ago');
    assert.equal(formatAgo(12_400), '12s ago');
    assert.equal(formatAgo(5 * 60_000), '5m ago');
    assert.equal(formatAgo(-20), '0.0s ago');
    assert.equal(formatDuration(850), '850ms');
    assert.equal(formatDuration(42_000), '42s');
    assert.equal(formatDuration(302_000), '5m 2s');
    assert.equal(formatDuration(2 * 3_600_000 + 180_000), '2h 3m');
    assert.equal(formatDuration(26 * 3_600_000), '1d 2h');
  });

  test('values: quoted UTF-8, else hex with a note', () => {
    assert.equal(formatValue(Buffer.from('hello world')), '"hello world"');
    assert.equal(formatValue(Buffer.from('')), '""');
    assert.equal(formatValue(Buffer.from('a\nb')), '"a\\nb"');
    assert.equal(formatValue(Uint8Array.of(0xc3)), '0xc3 (not valid UTF-8: shown as hex, 1 bytes)');
    assert.equal(formatKey(Buffer.from('plain')), 'plain');
    assert.equal(formatKey(Buffer.from('two words')), '"two words"');
    assert.equal(formatKey(Uint8Array.of(0xff)), '0xff (hex)');
  });

  test('colours only on a TTY without NO_COLOR', () => {
    assert.equal(colourWanted(true, {}), true);
    assert.equal(colourWanted(false, {}), false);
    assert.equal(colourWanted(true, { NO_COLOR: '1' }), false);
  });

  test('tables align columns, right-aligning the ones asked for', () => {
    assert.equal(
      table(
        [
          ['a', 'bb', '1'],
          ['ccc', 'd', '22'],
        ],
        new Set([2]),
      ),
      'a    bb   1\nccc  d   22',
    );
  });

  test('bench report names every figure', () => {
    const s = { ops: 1000, opsPerSec: 100, p50Ms: 1.234, p99Ms: 12.5, maxMs: 40, meanMs: 2 };
    const text = formatReport({
      config: {
        nameserver: '127.0.0.1:7000',
        concurrency: 64,
        durationS: 10,
        valueSize: 100,
        keys: 10000,
        ratio: '1:1',
      },
      elapsedS: 10,
      reads: s,
      writes: s,
      total: { ...s, ops: 2000, opsPerSec: 200 },
      errors: { TIMEOUT: 3 },
    });
    assert.match(text, /64 callers for 10\.0 s, 100-byte values, 10,000 keys, reads:writes 1:1/);
    assert.match(text, /ops +ops\/s +p50 ms +p99 ms +max ms/);
    assert.match(text, /reads +1,000 +100 +1\.23 +12\.5 +40\.0/);
    assert.match(text, /total +2,000 +200/);
    assert.match(text, /errors: 3 \(TIMEOUT 3;/);
    assert.equal(keyName('bench-1a2b3c4d-', 42), 'bench-1a2b3c4d-00000042');
    assert.match(randomBenchPrefix(), /^bench-[0-9a-f]{8}-$/);
    assert.notEqual(randomBenchPrefix(), randomBenchPrefix(), 'a new prefix each run');
    assert.equal(makeValue(100).length, 100);
  });
});

describe('options', () => {
  test('integers: whole numbers in range only', () => {
    const p = intParser('an integer', 1, 10);
    assert.equal(p('7'), 7);
    for (const bad of ['0', '11', '1.5', '1e1', '', ' 7', 'x'])
      assert.throws(() => p(bad), /Expected an integer from 1 to 10/, bad);
  });

  test('HOST:PORT', () => {
    assert.equal(parseHostPort('127.0.0.1:7000'), '127.0.0.1:7000');
    assert.equal(parseHostPort('[::1]:7000'), '[::1]:7000');
    for (const bad of ['127.0.0.1', ':7000', 'host:0', 'host:70000', 'a b:1'])
      assert.throws(() => parseHostPort(bad), /HOST:PORT/, bad);
  });

  test('ratio READS:WRITES', () => {
    assert.deepEqual(parseRatio('9:1'), { reads: 9, writes: 1 });
    assert.deepEqual(parseRatio('0:1'), { reads: 0, writes: 1 });
    for (const bad of ['0:0', '1', '1:x', '-1:1']) assert.throws(() => parseRatio(bad), /READS:WRITES/, bad);
  });

  test('nothing listens off loopback without a cluster token (DESIGN §12)', () => {
    assert.ok(
      isLoopbackHost('127.0.0.1') && isLoopbackHost('localhost') && isLoopbackHost('::1') && !isLoopbackHost('0.0.0.0'),
    );
    assert.throws(() => checkListenAllowed('0.0.0.0', undefined), UsageError);
    checkListenAllowed('0.0.0.0', 'secret');
    checkListenAllowed('127.0.0.1', undefined);
  });

  test('free ports are free, taken ones are not', async () => {
    const port = await freePort();
    assert.equal(await isPortFree('127.0.0.1', port), true);
  });
});

describe('up', () => {
  test('starts s1..sN plus storage servers spawned earlier in the same data dir', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstore-cli-test-'));
    try {
      assert.deepEqual(storageIdsFor(join(dir, 'missing'), 3), ['s1', 's2', 's3']);
      for (const d of ['s1', 's2', 's5', 's4', 'nameserver', 'sx']) mkdirSync(join(dir, d));
      writeFileSync(join(dir, 's9'), 'a file, not a node');
      assert.deepEqual(storageIdsFor(dir, 3), ['s1', 's2', 's3', 's4', 's5']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

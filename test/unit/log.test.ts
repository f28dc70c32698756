/**
 * Node logs (src/process/log.ts): node.log is rotated by size (node.log → .1 → .2 …, the
 * oldest dropped), every line lands whole in exactly one file, nothing past `keep`; and a
 * JSON line reads as `HH:MM:SS.mmm LEVEL node: message key=value` on a terminal.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { prettyLine, RotatingFile } from '../../src/process/log.js';

async function waitFor(condition: () => boolean, explain: () => string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${explain()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('RotatingFile', () => {
  test('rotates at maxBytes, keeps `keep` old files, and loses or splits no line that fits', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dstore-log-'));
    try {
      const path = join(dir, 'node.log');
      const file = new RotatingFile(path, 1000, 2);
      const lines = Array.from(
        { length: 60 },
        (_, i) => `{"n":${String(i).padStart(3, '0')},"pad":"${'x'.repeat(40)}"}\n`,
      );
      for (const l of lines) file.write(l);
      file.flushSync();
      const files = [path, `${path}.1`, `${path}.2`];
      await waitFor(
        () => files.every(existsSync),
        () => 'rotated files missing',
      );
      assert.equal(existsSync(`${path}.3`), false, 'no more than keep=2 rotated files');
      // The newest 3 files hold the last lines, in order, each whole (writes are
      // asynchronous: wait, bounded, until they are all on disk).
      const keptLines = (): string[] =>
        [`${path}.2`, `${path}.1`, path]
          .map((f) => readFileSync(f, 'utf8'))
          .join('')
          .split('\n')
          .filter((l) => l !== '');
      const numbers = (): number[] => keptLines().map((l) => Number(/"n":(\d+)/.exec(l)?.[1]));
      const contiguousToEnd = (ns: number[]): boolean => ns.length > 0 && ns.every((n, i) => n === 60 - ns.length + i);
      await waitFor(
        () => contiguousToEnd(numbers()),
        () => `kept lines: ${numbers().join(',')}`,
      );
      for (const l of keptLines()) assert.match(l, /^\{"n":\d{3},"pad":"x{40}"\}$/, 'whole lines only');
      assert.ok(
        numbers().length >= 2 * Math.floor(1000 / (lines[0] as string).length),
        `the rotated files are full: ${numbers().length} lines kept`,
      );
      for (const f of files)
        assert.ok(readFileSync(f).length <= 1000 + (lines[0] as string).length, `${f} stays near maxBytes`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('prettyLine', () => {
  test('a pino JSON line as a readable line, fields after the message', () => {
    const line = JSON.stringify({
      level: 40,
      time: Date.UTC(2024, 0, 1, 12, 0, 1, 234),
      pid: 1,
      hostname: 'h',
      node: 's1',
      name: 's1',
      msg: 'heartbeat failed',
      err: 'connect ECONNREFUSED',
      attempt: 3,
    });
    assert.equal(
      prettyLine(line, false),
      '12:00:01.234 WARN  s1: heartbeat failed err="connect ECONNREFUSED" attempt=3\n',
    );
    assert.match(prettyLine(line, true), /\x1b\[33mWARN \x1b\[0m/);
  });

  test('text that is not JSON passes as it is', () => {
    assert.equal(prettyLine('not json', false), 'not json\n');
  });
});

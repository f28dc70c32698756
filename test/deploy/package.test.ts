/**
 * The package a user installs (docs/deploy.md: `npm pack`, unpacked to /opt/dstore) holds the
 * compiled program, the docs the units and README point to, and no compiled tests; it is
 * private (the name `dstore` on the public registry is another project's), and its engines
 * field names the oldest Node that runs it (zlib.crc32: 20.15), which the CLI checks too.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { packedFiles } from './packed.js';

const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as {
  private?: boolean;
  engines?: { node?: string };
  bin?: Record<string, string>;
  main?: string;
};

describe('the package', () => {
  test('ships the program, its docs and deploy files, and no tests', () => {
    const files = packedFiles();
    for (const f of [
      'dist/src/cli/main.js',
      'dist/src/client/index.js',
      'dist/src/client/index.d.ts',
      'README.md',
      'docs/deploy.md',
      'docs/design.md',
      'docs/errors.md',
      'deploy/dstore-nameserver.service',
      'deploy/dstore-storage@.service',
      'web/index.html',
      'web/app.js',
      'web/style.css',
    ]) {
      assert.ok(files.includes(f), `${f} is in the package`);
    }
    assert.deepEqual(
      files.filter((f) => f.startsWith('dist/test/') || f.startsWith('src/') || f.startsWith('test/')),
      [],
      'no sources or compiled tests',
    );
    assert.ok(files.includes(pkg.bin!.dstore!.replace(/^\.\//, '')), 'the bin is in the package');
    assert.ok(files.includes(pkg.main!.replace(/^\.\//, '')), 'the main entry is in the package');
  });

  test('is private and names Node 20.15 as the oldest it runs on', () => {
    assert.equal(pkg.private, true, 'never published by mistake under a name that is taken');
    assert.equal(pkg.engines?.node, '>=20.15');
  });

  test('the CLI on a Node older than 20.15 says so in one line and exits 2', () => {
    // Pretend to be Node 20.14 before main.js runs (a preloaded CommonJS file).
    const dir = mkdtempSync(join(tmpdir(), 'dstore-oldnode-'));
    try {
      const preload = join(dir, 'old-node.cjs');
      writeFileSync(
        preload,
        [
          "Object.defineProperty(process, 'versions', { value: { ...process.versions, node: '20.14.0' } });",
          "Object.defineProperty(process, 'version', { value: 'v20.14.0' });",
        ].join('\n'),
      );
      const r = spawnSync(process.execPath, ['--require', preload, 'dist/src/cli/main.js', '--help'], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      assert.equal(r.status, 2, r.stderr);
      assert.equal(r.stderr, 'error: dstore needs Node.js 20.15 or newer; this is v20.14.0\n');
      assert.equal(r.stdout, '');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * Settings from flags, environment variables and a config file (`--config FILE`, JSON or
 * YAML), with one name per setting (--max-value-bytes ↔ DSTORE_MAX_VALUE_BYTES ↔
 * maxValueBytes) and the precedence flag > env > file > default. The resolved settings are
 * read by replacing a command's action in the real program (buildProgram); the error cases
 * run the real `dstore` process and check exit code 2 and one line on stderr.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { Command } from 'commander';
import { buildProgram } from '../../src/cli/program.js';
import { listenOf } from '../../src/cli/config.js';
import { runDstoreSync } from '../shared/dstore.js';

const dir = mkdtempSync(join(tmpdir(), 'dstore-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/**
 * Parses `args` with the real program, with `env` as the only DSTORE_* variables; returns the options the action got.
 */
async function resolved(
  command: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ o: Record<string, unknown>; cmd: Command }> {
  const saved = { ...process.env };
  for (const k of Object.keys(process.env)) if (k.startsWith('DSTORE_')) delete process.env[k];
  Object.assign(process.env, env);
  try {
    const program = buildProgram();
    const cmd = program.commands.find((c) => c.name() === command);
    assert.ok(cmd, command);
    let got: Record<string, unknown> | undefined;
    cmd.action((o: Record<string, unknown>) => {
      got = o;
    });
    await program.parseAsync(['node', 'dstore', command, ...args]);
    assert.ok(got, 'the action ran');
    return { o: got, cmd };
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

const dstore = (args: string[], env: NodeJS.ProcessEnv = {}) => runDstoreSync(args, env);

describe('precedence: flag > env > file > default', () => {
  const yaml = file('storage.yaml', 'maxValueBytes: 2000\nheartbeatMs: 250\nbackend: memory\nnodeId: s7\n');

  test('the default when nothing sets it', async () => {
    const { o } = await resolved('storage', []);
    assert.equal(o.maxValueBytes, 1024 * 1024);
  });
  test('the file over the default', async () => {
    const { o, cmd } = await resolved('storage', ['--config', yaml]);
    assert.deepEqual([o.maxValueBytes, o.heartbeatMs, o.backend, o.nodeId], [2000, 250, 'memory', 's7']);
    assert.equal(cmd.getOptionValueSource('maxValueBytes'), 'config');
  });
  test('the environment over the file', async () => {
    const { o } = await resolved('storage', ['--config', yaml], { DSTORE_MAX_VALUE_BYTES: '3000' });
    assert.deepEqual([o.maxValueBytes, o.heartbeatMs], [3000, 250]);
  });
  test('the flag over the environment and the file', async () => {
    const { o } = await resolved('storage', ['--config', yaml, '--max-value-bytes', '4000'], {
      DSTORE_MAX_VALUE_BYTES: '3000',
    });
    assert.deepEqual([o.maxValueBytes, o.heartbeatMs], [4000, 250]);
  });
  test('the file named by DSTORE_CONFIG', async () => {
    const { o } = await resolved('storage', [], { DSTORE_CONFIG: yaml });
    assert.equal(o.maxValueBytes, 2000);
  });
  test('JSON files, numbers given as strings, booleans and --no-x flags as x: false', async () => {
    const json = file(
      'up.json',
      JSON.stringify({ nodes: '4', port: 7300, shell: false, clusterToken: 'sekrit', listen: '0.0.0.0' }),
    );
    const { o, cmd } = await resolved('up', ['--config', json]);
    assert.deepEqual([o.nodes, o.port, o.shell, o.clusterToken, listenOf(cmd)], [4, 7300, false, 'sekrit', '0.0.0.0']);
    const dump = await resolved('dump', [
      '--config',
      file('dump.yml', 'json: true\nall: true\nnameserver: "10.0.0.1:7000"\n'),
    ]);
    assert.deepEqual([dump.o.json, dump.o.all, dump.o.nameserver], [true, true, '10.0.0.1:7000']);
  });
  test('YAML values are read as the text after the flag would be: no number conversion', async () => {
    const { o } = await resolved('storage', [
      '--config',
      file('text.yaml', 'clusterToken: 0123\nnodeId: 1e3\nport: 7101\n'),
    ]);
    assert.deepEqual([o.clusterToken, o.nodeId, o.port], ['0123', '1e3', 7101]);
    const long = await resolved('client', [
      '--config',
      file('long.yaml', 'clusterToken: 123456789012345678901234567890\n'),
    ]);
    assert.equal(long.o.clusterToken, '123456789012345678901234567890');
  });
  test('an empty file (or only comments) sets nothing', async () => {
    const { o } = await resolved('nameserver', ['--config', file('empty.yaml', '# nothing yet\n')]);
    assert.equal(o.port, 7000);
  });
  test('--listen from the file; --host (its old name) still works as a flag', async () => {
    const withListen = await resolved('nameserver', [
      '--config',
      file('ns.yaml', 'listen: 10.77.0.1\nadvertise: ns.example:7000\n'),
    ]);
    assert.equal(listenOf(withListen.cmd), '10.77.0.1');
    assert.equal(withListen.o.advertise, 'ns.example:7000');
    const withHost = await resolved('nameserver', ['--host', '127.0.0.2']);
    assert.equal(listenOf(withHost.cmd), '127.0.0.2');
    const fromEnv = await resolved('nameserver', [], { DSTORE_HOST: '127.0.0.3' });
    assert.equal(listenOf(fromEnv.cmd), '127.0.0.3');
  });
});

describe('--help names the file key of every setting', () => {
  test('dstore storage --help', () => {
    const r = dstore(['storage', '--help']);
    assert.equal(r.code, 0, r.stderr);
    const flat = r.stdout.replace(/\s+/g, ' ');
    assert.ok(flat.includes('env: DSTORE_MAX_VALUE_BYTES, config: maxValueBytes'), flat);
    assert.ok(flat.includes('env: DSTORE_LISTEN, config: listen'), flat);
    assert.match(flat, /--max-value-bytes ↔ DSTORE_MAX_VALUE_BYTES ↔ maxValueBytes/);
    assert.match(flat, /flag wins over its environment variable, which wins over the --config file/);
  });
});

describe('a bad config file exits 2 with one line', () => {
  const cases: [string, string, string[], RegExp][] = [
    ['a missing file', join(dir, 'nope.yaml'), [], /cannot read config file .*nope\.yaml: no such file/],
    ['a directory', dir, [], /cannot read config file .*: it is a directory/],
    ['invalid YAML', file('bad.yaml', 'port: [7000\n'), [], /config file .*bad\.yaml is not valid YAML/],
    ['invalid JSON', file('bad.json', '{"port": 7000,}'), [], /config file .*bad\.json is not valid JSON/],
    ['duplicate keys', file('dup.yaml', 'port: 1\nport: 2\n'), [], /is not valid YAML: .*[Mm]ap keys must be unique/],
    ['a list, not a mapping', file('list.yaml', '- port\n'), [], /must be a mapping of settings/],
    [
      'an unknown key',
      file('unknown.yaml', 'bogus: 1\n'),
      [],
      /unknown key "bogus"; the keys of dstore nameserver are: .*port/,
    ],
    [
      'a kebab-case key',
      file('kebab.yaml', 'dead-after-ms: 100\n'),
      [],
      /unknown key "dead-after-ms" \(did you mean deadAfterMs\?/,
    ],
    [
      'a key of another role',
      file('other.yaml', 'backend: lmdb\n'),
      [],
      /unknown key "backend" \(a setting of dstore up, storage, node, bench, chaos, not of dstore nameserver/,
    ],
    [
      'a wrong type',
      file('type.yaml', 'port: [1, 2]\n'),
      [],
      /config file .*type\.yaml: port: expected a string or a number, got a list/,
    ],
    [
      'a boolean for a value',
      file('bool.yaml', 'partitions: true\n'),
      [],
      /partitions: "true" is invalid\. Expected an integer/,
    ],
    [
      'a boolean for a value (JSON)',
      file('bool.json', '{"partitions": true}'),
      [],
      /partitions: expected a string or a number, got boolean true/,
    ],
    [
      'a mapping for a value',
      file('map.yaml', 'port:\n  a: 1\n'),
      [],
      /port: expected a string or a number, got a mapping/,
    ],
    [
      'a value out of range',
      file('range.yaml', 'port: 70000\n'),
      [],
      /port: "70000" is invalid\. Expected a port number from 0 to 65535/,
    ],
    ['a bad choice', file('choice.yaml', 'logLevel: loud\n'), [], /logLevel: "loud" is invalid\. Allowed choices are/],
    [
      'a bad value even when a flag overrides it',
      file('over.yaml', 'port: -1\n'),
      ['--port', '0'],
      /port: "-1" is invalid/,
    ],
    [
      'the old key host',
      file('host.yaml', 'host: 0.0.0.0\n'),
      [],
      /unknown key "host" \(--host is now --listen: use the key listen\)/,
    ],
    ['the config key in the file', file('self.yaml', 'config: other.yaml\n'), [], /unknown key "config"/],
  ];
  for (const [what, path, extra, expected] of cases) {
    test(what, () => {
      const r = dstore(['nameserver', '--config', path, ...extra]);
      assert.equal(r.code, 2, `exit code: stderr ${r.stderr}`);
      assert.match(r.stderr, /^error: /);
      assert.match(r.stderr, expected);
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    });
  }

  test('a boolean setting given a string', () => {
    const r = dstore(['dump', '--config', file('str.yaml', 'json: "yes"\n')]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^error: config file .*: json: expected true or false, got string "yes"\n$/);
    const quoted = dstore(['dump', '--config', file('quoted.yaml', 'all: "maybe"\n')]);
    assert.equal(quoted.code, 2, quoted.stderr);
    assert.match(quoted.stderr, /all: expected true or false, got string "maybe"/);
  });
});

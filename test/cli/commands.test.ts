/**
 * The `dstore` command line without a cluster: `--help` on the program and on every
 * subcommand exits 0 and names each flag's environment variable; bad input (unknown flag or
 * command, bad port, unknown backend, missing or extra arguments, a bad value from an
 * environment variable, a boolean environment variable that is not 0/false/no/off or
 * 1/true/yes/on, bad --key-hex, a value given twice) exits 2 with exactly one line on stderr
 * and no stack trace; nothing listens off loopback without a cluster token; an argument that
 * came in as invalid UTF-8 is refused (exit 2) naming its bytes, a real U+FFFD is not.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { findInvalidUtf8Arg } from '../../src/cli/argv.js';
import { parseEnvBoolean } from '../../src/cli/config.js';
import { cleanEnv, MAIN, runDstoreSync } from '../shared/dstore.js';

const dstore = (args: string[], env: NodeJS.ProcessEnv = {}) => runDstoreSync(args, env);

/** Each subcommand with the environment variables its --help must show. */
const HELP: Record<string, string[]> = {
  up: [
    'DSTORE_NODES',
    'DSTORE_PARTITIONS',
    'DSTORE_REPLICAS',
    'DSTORE_MIN_WRITE_REPLICAS',
    'DSTORE_BACKEND',
    'DSTORE_DATA_DIR',
    'DSTORE_PORT',
    'DSTORE_STORAGE_PORT',
    'DSTORE_NO_SHELL',
    'DSTORE_LOG_LEVEL',
  ],
  nameserver: [
    'DSTORE_LISTEN',
    'DSTORE_ADVERTISE',
    'DSTORE_CONFIG',
    'DSTORE_PORT',
    'DSTORE_DATA_DIR',
    'DSTORE_PARTITIONS',
    'DSTORE_REPLICAS',
    'DSTORE_MIN_WRITE_REPLICAS',
    'DSTORE_HEARTBEAT_MS',
    'DSTORE_DEAD_AFTER_MS',
    'DSTORE_LOG_LEVEL',
  ],
  storage: [
    'DSTORE_NAMESERVER',
    'DSTORE_LISTEN',
    'DSTORE_CONFIG',
    'DSTORE_PORT',
    'DSTORE_ADVERTISE',
    'DSTORE_NODE_ID',
    'DSTORE_BACKEND',
    'DSTORE_DATA_DIR',
    'DSTORE_SYNC',
    'DSTORE_MAX_VALUE_BYTES',
    'DSTORE_LOG_LEVEL',
  ],
  client: ['DSTORE_NAMESERVER', 'DSTORE_TIMEOUT_MS', 'DSTORE_CLUSTER_TOKEN'],
  put: ['DSTORE_NAMESERVER', 'DSTORE_JSON', 'DSTORE_PUT_FILE', 'DSTORE_KEY_HEX'],
  get: ['DSTORE_NAMESERVER', 'DSTORE_JSON', 'DSTORE_RAW', 'DSTORE_KEY_HEX'],
  del: ['DSTORE_NAMESERVER', 'DSTORE_KEY_HEX'],
  dump: ['DSTORE_NAMESERVER', 'DSTORE_JSON', 'DSTORE_DUMP_ALL'],
  scan: [
    'DSTORE_NAMESERVER',
    'DSTORE_JSON',
    'DSTORE_SCAN_PREFIX',
    'DSTORE_SCAN_START_AFTER',
    'DSTORE_SCAN_LIMIT',
    'DSTORE_SCAN_VALUES',
    'DSTORE_KEY_HEX',
  ],
  nodes: ['DSTORE_NAMESERVER', 'DSTORE_JSON'],
  bench: [
    'DSTORE_NAMESERVER',
    'DSTORE_BENCH_CONCURRENCY',
    'DSTORE_BENCH_DURATION',
    'DSTORE_BENCH_VALUE_SIZE',
    'DSTORE_BENCH_KEYS',
    'DSTORE_BENCH_RATIO',
    'DSTORE_BENCH_SPAWN',
  ],
};

describe('dstore --help', () => {
  test('the program lists every subcommand', () => {
    const r = dstore(['--help']);
    assert.equal(r.code, 0, r.stderr);
    for (const name of Object.keys(HELP)) assert.match(r.stdout, new RegExp(`^ +${name}\\b`, 'm'), name);
  });

  for (const [name, envs] of Object.entries(HELP)) {
    test(`dstore ${name} --help exits 0 and shows the environment variables`, () => {
      const r = dstore([name, '--help']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^Usage: dstore ${name}`));
      const flat = r.stdout.replace(/\s+/g, ' '); // help text wraps at the terminal width
      for (const env of envs) assert.ok(flat.includes(`env: ${env}`), `${name} --help should mention ${env}`);
      // Every option line (except --help) carries an env name.
      const options = r.stdout.split('\nOptions:\n')[1] ?? '';
      const flags = [...options.matchAll(/^ {2}(?:-\w, )?(--[a-z-]+)/gm)]
        .map((m) => m[1])
        .filter((f) => f !== '--help');
      const envCount = (options.replace(/\s+/g, ' ').match(/env: DSTORE_/g) ?? []).length;
      assert.equal(envCount, flags.length, `every flag of ${name} has an env variable: ${flags.join(' ')}`);
    });
  }
});

describe('bad input exits 2 with one line', () => {
  const cases: [string, string[], NodeJS.ProcessEnv, RegExp][] = [
    ['unknown flag', ['up', '--bogus'], {}, /unknown option '--bogus'/],
    ['unknown command', ['frobnicate'], {}, /unknown command 'frobnicate'/],
    ['bad port', ['nameserver', '--port', '70000'], {}, /--port.*Expected a port number from 0 to 65535/],
    ['bad port from the environment', ['nameserver'], { DSTORE_PORT: 'seven' }, /from env 'DSTORE_PORT' is invalid/],
    ['unknown backend', ['storage', '--backend', 'redis2'], {}, /Allowed choices are lmdb, memory/],
    ['missing argument', ['get'], {}, /missing required argument 'key'/],
    ['too many arguments', ['put', 'a', 'b', 'c'], {}, /too many arguments/],
    ['bad nameserver address', ['get', 'k', '--nameserver', 'nohost'], {}, /Expected HOST:PORT/],
    ['bad ratio', ['bench', '--ratio', '0:0'], {}, /READS:WRITES/],
    [
      'min write replicas above R',
      ['up', '--replicas', '2', '--min-write-replicas', '3', '--port', '0'],
      {},
      /cannot exceed --replicas/,
    ],
    [
      'fewer nodes than replicas',
      ['up', '--nodes', '2', '--port', '0'],
      {},
      /--nodes \(2\) must be at least --replicas \(3\)/,
    ],
    [
      'listening off loopback without a token',
      ['nameserver', '--host', '0.0.0.0', '--port', '0'],
      {},
      /refusing to listen on 0\.0\.0\.0 without a cluster token/,
    ],
    [
      'a nameserver on a non-loopback --listen without a token',
      ['nameserver', '--listen', '10.77.0.1', '--port', '0'],
      {},
      /refusing to listen on 10\.77\.0\.1 without a cluster token/,
    ],
    [
      'a storage server on a non-loopback --listen without a token',
      ['storage', '--listen', '0.0.0.0', '--port', '0'],
      {},
      /refusing to listen on 0\.0\.0\.0 without a cluster token/,
    ],
    [
      'a non-loopback listen from the environment without a token',
      ['storage', '--port', '0'],
      { DSTORE_LISTEN: '::' },
      /refusing to listen on :: without a cluster token/,
    ],
    [
      'an empty cluster token',
      ['up', '--listen', '0.0.0.0', '--port', '0'],
      { DSTORE_CLUSTER_TOKEN: '' },
      /refusing to listen on 0\.0\.0\.0 without a cluster token/,
    ],
    [
      'a boolean environment variable that is not a boolean',
      ['get', 'k'],
      { DSTORE_JSON: 'maybe' },
      /DSTORE_JSON="maybe" is not a boolean: use 1, true, yes or on, or 0, false, no or off/,
    ],
    [
      'an empty boolean environment variable',
      ['up', '--port', '0'],
      { DSTORE_NO_SHELL: '' },
      /DSTORE_NO_SHELL="" is not a boolean/,
    ],
    [
      '--key-hex with an odd number of digits',
      ['get', '--key-hex', 'abc'],
      {},
      /--key-hex: expected the key as an even number of hex digits/,
    ],
    ['--key-hex with a non-hex digit', ['del', '--key-hex', 'zz'], {}, /--key-hex: expected/],
    [
      'put with a value and --file',
      ['put', 'k', 'v', '--file', '/etc/hostname'],
      {},
      /either as an argument or with --file, not both/,
    ],
    [
      'put --file of a missing file',
      ['put', 'k', '--file', '/nonexistent/dstore-value'],
      {},
      /--file \/nonexistent\/dstore-value: no such file/,
    ],
    [
      '--listen and its old name --host disagreeing',
      ['nameserver', '--listen', '127.0.0.1', '--host', '127.0.0.2', '--port', '0'],
      {},
      /--host is the old name of --listen/,
    ],
  ];
  for (const [what, args, env, expected] of cases) {
    test(what, () => {
      const r = dstore(args, env);
      assert.equal(r.code, 2, `exit code of dstore ${args.join(' ')}: stderr ${r.stderr}`);
      assert.match(r.stderr, expected);
      assert.match(r.stderr, /^error: /);
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      assert.equal(r.stdout, '');
    });
  }
});

describe('arguments that are not valid UTF-8', () => {
  // Node turns invalid UTF-8 in argv into U+FFFD; before, `put $'\xff\xfe' v` stored the
  // key U+FFFD U+FFFD. bash passes the raw bytes, as a user's shell does.
  function viaBash(args: string): { code: number | null; stdout: string; stderr: string } {
    const r = spawnSync('bash', ['-c', `exec "$0" "$1" ${args}`, process.execPath, MAIN], {
      env: cleanEnv(),
      encoding: 'utf8',
      timeout: 30_000,
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  test('a key of raw bytes ff fe is refused with exit 2, naming the bytes and --key-hex', () => {
    const r = viaBash(`put $'\\xff\\xfe' v --nameserver 127.0.0.1:1`);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^error: argument 2 is not valid UTF-8 \(bytes fffe\).*--key-hex fffe.*\\xHH/);
    assert.equal(r.stderr.trimEnd().split('\n').length, 1);
  });

  test('a value of invalid UTF-8 is refused too, pointing at --file and stdin', () => {
    const r = viaBash(`put k $'a\\xc3' --nameserver 127.0.0.1:1`);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /argument 3 is not valid UTF-8 \(bytes 61c3\).*--file PATH or on stdin/);
  });

  test('a real U+FFFD typed as UTF-8 is not refused (it fails later, at the unreachable nameserver)', () => {
    const r = viaBash(`get $'ok\\xef\\xbf\\xbd' --nameserver 127.0.0.1:1 --timeout-ms 200`);
    assert.equal(r.code, 1, r.stderr);
    assert.doesNotMatch(r.stderr, /UTF-8/);
  });
});

describe('findInvalidUtf8Arg without the raw command line (no /proc)', () => {
  test('any U+FFFD is refused, since it cannot be told apart', () => {
    assert.deepEqual(findInvalidUtf8Arg(['put', 'k\uFFFD', 'v'], undefined), { index: 1, text: 'k\uFFFD' });
    assert.equal(findInvalidUtf8Arg(['put', 'k', 'v'], undefined), undefined);
  });

  test('raw arguments that do not line up with argv are not trusted', () => {
    const raw = [Buffer.from('node'), Buffer.from('main.js'), Buffer.from('other'), Buffer.from([0xef, 0xbf, 0xbd])];
    assert.deepEqual(findInvalidUtf8Arg(['put', '\uFFFD'], raw), { index: 1, text: '\uFFFD' });
    assert.equal(findInvalidUtf8Arg(['other', '\uFFFD'], raw), undefined, 'lined up: a real U+FFFD');
  });
});

describe('parseEnvBoolean', () => {
  test('0/false/no/off are false, 1/true/yes/on true, in any case; anything else is an error', () => {
    for (const t of ['0', 'false', 'no', 'off', 'FALSE', 'Off']) assert.equal(parseEnvBoolean('X', t), false, t);
    for (const t of ['1', 'true', 'yes', 'on', 'TRUE', 'Yes']) assert.equal(parseEnvBoolean('X', t), true, t);
    for (const t of ['', '2', 'y', 'maybe']) assert.throws(() => parseEnvBoolean('X', t), /X=.* is not a boolean/, t);
  });
});

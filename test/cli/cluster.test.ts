/**
 * The CLI against a real local cluster: `dstore up --no-shell` (memory backend, free
 * loopback ports, a temp data dir) starts a nameserver and 3 storage servers as child
 * processes and prints its banner once the cluster formed; the shell (`dstore client`,
 * stdin piped) inserts, gets, keeps quoted values and UTF-8, hints at an unknown command and
 * a wrong argument count, says "not found", quits with status 0; the one-shot commands
 * put / get (exit 1 when absent) / del / dump --json / nodes --json work for scripts; put
 * takes a 1 MiB value from --file or stdin byte for byte, --key-hex a binary key, and an empty
 * key exits 2 (bad input); bench against the cluster writes under its own prefix and
 * deletes its keys (unless --keep), leaving a key named like the old bench keys alone; a
 * second `up` on a taken port says so; an unreachable nameserver is `error: … (CODE)`, exit
 * 1; SIGTERM to `up` stops every child (no orphans). Every wait polls a condition with a
 * deadline; the cluster is stopped and the temp dir removed even when a test fails.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort } from '../../src/cli/options.js';
import {
  alive,
  runDstore,
  runDstoreText,
  startUp,
  type TextResult,
  type UpCluster,
  waitFor,
} from '../shared/dstore.js';

const START_TIMEOUT_MS = 60_000;
const COMMAND_TIMEOUT_MS = 30_000;

/** Runs `dstore args…` with `input` on stdin; stopped after COMMAND_TIMEOUT_MS. */
const dstore = (args: string[], input = ''): Promise<TextResult> =>
  runDstoreText(args, { input, timeoutMs: COMMAND_TIMEOUT_MS });

describe('dstore against a local cluster (up --no-shell)', { timeout: 240_000 }, () => {
  let dataDir = '';
  let up: UpCluster | undefined;
  let nameserver = '';

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'dstore-cli-it-'));
    const port = await freePort();
    nameserver = `127.0.0.1:${port}`;
    up = await startUp(
      ['--data-dir', dataDir, '--port', String(port), '--storage-port', '0', '--backend', 'memory'],
      START_TIMEOUT_MS,
    );
    assert.equal(up.pids.length, 4, `a nameserver and 3 storage servers in the banner: ${up.stdout()}`);
    assert.equal(up.nameserver, nameserver, up.stdout());
    assert.ok(up.stdout().includes(`npx dstore client --nameserver ${nameserver}`), up.stdout());
  });

  after(async () => {
    // Whatever happened: stop up (it stops its children), then make sure nothing is left.
    await up?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  test('the shell, piped: insert, get, quoted values, UTF-8, hints, not found, quit', async () => {
    const script = [
      'insert greeting "hello world"',
      'get greeting',
      "put ключ '値 🎉'",
      'get ключ',
      'frobnicate',
      'insert onlykey',
      'get missing-key',
      'delete greeting',
      'get greeting',
      'quit',
      'insert never run',
    ].join('\n');
    const r = await dstore(['client', '--nameserver', nameserver], `${script}\n`);
    assert.equal(r.code, 0, `exit code; stderr: ${r.stderr}`);
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^OK \(version \d+\)$/);
    assert.match(lines[1] ?? '', /^"hello world" \(version \d+\)$/);
    assert.match(lines[2] ?? '', /^OK \(version \d+\)$/);
    assert.match(lines[3] ?? '', /^"値 🎉" \(version \d+\)$/);
    assert.match(lines[4] ?? '', /^unknown command frobnicate/);
    assert.match(lines[5] ?? '', /^usage: insert <key> <value>/);
    assert.equal(lines[6], '(not found) no key missing-key');
    assert.equal(lines[7], 'OK deleted greeting');
    assert.equal(lines[8], '(not found) no key greeting');
    assert.equal(lines.length, 9, r.stdout);
    assert.doesNotMatch(r.stdout, /dstore>/);
  });

  test('the shell ends at EOF with status 0 and shows nodes and dump', async () => {
    const r = await dstore(['client', '--nameserver', nameserver], 'insert dumped yes\nnodes\ndump\n');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^NODE +ROLE +ADDRESS/m);
    assert.equal((r.stdout.match(/^s\d+ +storage +127\.0\.0\.1:\d+ +alive/gm) ?? []).length, 3, r.stdout);
    const holders = (text: string) => (text.match(/^ {2}dumped$/gm) ?? []).length;
    // The key's primary lists it at once (a listing waits for the server's lazy applies); a
    // secondary applies it when the commit point reaches it: with the next prepare, or on the
    // primary's next tick (50 ms) when none comes (issue 11).
    assert.ok(holders(r.stdout) >= 1, `the key's primary lists it right after the insert\n${r.stdout}`);
    let listing = r.stdout;
    for (let i = 0; i < 50 && holders(listing) < 3; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      listing = (await dstore(['dump', '--nameserver', nameserver])).stdout;
    }
    assert.equal(holders(listing), 3, `R=3 on 3 nodes: every server holds the key within 5 s\n${listing}`);
  });

  test('one-shot put, get (exit 1 when absent), del', async () => {
    const put = await dstore(['put', 'script-key', 'a value', '--nameserver', nameserver]);
    assert.equal(put.code, 0, put.stderr);
    assert.match(put.stdout, /^OK \(version \d+\)\n$/);

    const get = await dstore(['get', 'script-key', '--nameserver', nameserver]);
    assert.equal(get.code, 0, get.stderr);
    assert.equal(get.stdout, 'a value\n');

    const json = await dstore(['get', 'script-key', '--json', '--nameserver', nameserver]);
    assert.equal(json.code, 0, json.stderr);
    const parsed = JSON.parse(json.stdout) as { value: string; version: number };
    assert.equal(parsed.value, 'a value');
    assert.ok(parsed.version >= 1);

    const del = await dstore(['del', 'script-key', '--nameserver', nameserver]);
    assert.equal(del.code, 0, del.stderr);
    assert.equal(del.stdout, 'OK deleted script-key\n');

    const absent = await dstore(['get', 'script-key', '--nameserver', nameserver]);
    assert.equal(absent.code, 1);
    assert.equal(absent.stdout, '');
    assert.match(absent.stderr, /not found/);
  });

  test('put of a 1 MiB value from a file and from stdin; --key-hex; KEY_EMPTY exits 2', async () => {
    // A 1 MiB value does not fit on a command line (E2BIG): --file and stdin carry it.
    const value = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < value.length; i++) value[i] = (i * 7919) & 0xff; // not UTF-8
    const file = join(dataDir, 'big-value.bin');
    writeFileSync(file, value);
    const fromFile = await dstore(['put', 'big-file', '--file', file, '--nameserver', nameserver]);
    assert.equal(fromFile.code, 0, fromFile.stderr);
    const fromStdin = await runDstore(['put', 'big-stdin', '-', '--nameserver', nameserver], { input: value });
    assert.equal(fromStdin.code, 0, fromStdin.stderr.toString());
    for (const key of ['big-file', 'big-stdin']) {
      const got = await runDstore(['get', key, '--raw', '--nameserver', nameserver]);
      assert.equal(got.code, 0, got.stderr.toString());
      assert.ok(got.stdout.equals(value), `${key}: the stored value is the file's bytes (${got.stdout.length} bytes)`);
    }

    const hexPut = await dstore(['put', '--key-hex', 'fffe', 'binary key', '--nameserver', nameserver]);
    assert.equal(hexPut.code, 0, hexPut.stderr);
    const hexGet = await dstore(['get', '--key-hex', 'FFFE', '--nameserver', nameserver]);
    assert.equal(hexGet.stdout, 'binary key\n');
    const replacement = await dstore(['get', '\uFFFD\uFFFD', '--nameserver', nameserver]);
    assert.equal(replacement.code, 1, 'the key is the bytes ff fe, not U+FFFD U+FFFD');
    const hexDel = await dstore(['del', '--key-hex', 'fffe', '--nameserver', nameserver]);
    assert.equal(hexDel.stdout, 'OK deleted fffe (hex)\n');

    const empty = await dstore(['put', '', 'v', '--nameserver', nameserver]);
    assert.equal(empty.code, 2, `bad input exits 2, as README says: ${empty.stderr}`);
    assert.match(empty.stderr, /\(KEY_EMPTY\)/);
  });

  test('dump --json and nodes --json', async () => {
    for (let i = 0; i < 5; i++)
      assert.equal((await dstore(['put', `dump-${i}`, 'v', '--nameserver', nameserver])).code, 0);
    const dump = await dstore(['dump', '--json', '--nameserver', nameserver]);
    assert.equal(dump.code, 0, dump.stderr);
    const servers = JSON.parse(dump.stdout) as { nodeId: string; keyCount: number; keys: unknown[] }[];
    assert.equal(servers.length, 3);
    for (const s of servers)
      for (let i = 0; i < 5; i++) assert.ok(s.keys.includes(`dump-${i}`), `${s.nodeId} holds dump-${i}`);

    const nodes = await dstore(['nodes', '--json', '--nameserver', nameserver]);
    assert.equal(nodes.code, 0, nodes.stderr);
    const info = JSON.parse(nodes.stdout) as { formed: boolean; nodes: { id: string; role: string; state: string }[] };
    assert.equal(info.formed, true);
    assert.deepEqual(
      info.nodes.filter((n) => n.role === 'storage').map((n) => [n.id, n.state]),
      [
        ['s1', 'alive'],
        ['s2', 'alive'],
        ['s3', 'alive'],
      ],
    );
    assert.ok(info.nodes.some((n) => n.role === 'nameserver'));
  });

  test('bench writes only under a prefix of its own, says so, and deletes what it wrote unless --keep', async () => {
    // Before: it wrote bench-00000000… over whatever had those names, and left them.
    const mine = await dstore(['put', 'bench-00000000', 'mine', '--nameserver', nameserver]);
    assert.equal(mine.code, 0, mine.stderr);
    const bench = await dstore([
      'bench',
      '--duration',
      '1',
      '--keys',
      '50',
      '--concurrency',
      '4',
      '--nameserver',
      nameserver,
    ]);
    assert.equal(bench.code, 0, bench.stderr);
    const prefix = /prefix "(bench-[0-9a-f]{8}-)"/.exec(bench.stderr)?.[1];
    assert.ok(prefix, `the prefix is named when it starts: ${bench.stderr}`);
    assert.match(bench.stderr, /they are deleted at the end \(--keep keeps them\)/);
    assert.match(bench.stderr, /^deleted \d+ keys/m);
    assert.equal(
      (await dstore(['get', 'bench-00000000', '--nameserver', nameserver])).stdout,
      'mine\n',
      'a key the bench did not create is untouched',
    );
    const keysOf = async (): Promise<string[]> => {
      const dump = await dstore(['dump', '--all', '--json', '--nameserver', nameserver]);
      assert.equal(dump.code, 0, dump.stderr);
      return (JSON.parse(dump.stdout) as { keys: unknown[] }[]).flatMap((d) =>
        d.keys.filter((k): k is string => typeof k === 'string'),
      );
    };
    assert.deepEqual(
      (await keysOf()).filter((k) => k.startsWith(prefix)),
      [],
      'nothing left under the prefix',
    );

    const kept = await dstore([
      'bench',
      '--duration',
      '1',
      '--keys',
      '5',
      '--concurrency',
      '2',
      '--prefix',
      'kept-bench-',
      '--keep',
      '--nameserver',
      nameserver,
    ]);
    assert.equal(kept.code, 0, kept.stderr);
    assert.match(kept.stderr, /prefix "kept-bench-"\); kept at the end/);
    assert.equal(
      new Set((await keysOf()).filter((k) => k.startsWith('kept-bench-'))).size,
      5,
      '--keep leaves the preloaded keys',
    );
  });

  test('each node logs to its own node.log only: the stderr file beside it holds no log line', () => {
    // Before: <node>.stderr.log and <node>/node.log held every line twice.
    for (const node of ['nameserver', 's1']) {
      const log = readFileSync(join(dataDir, node, 'node.log'), 'utf8');
      assert.match(log, /^\{"level":30,/m, `${node}/node.log holds the JSON log`);
      const stderrLog = readFileSync(join(dataDir, `${node}.stderr.log`), 'utf8');
      assert.doesNotMatch(
        stderrLog,
        /"level":\d+/,
        `${node}.stderr.log repeats no log line: ${stderrLog.slice(0, 500)}`,
      );
    }
    assert.match(up!.stdout(), /node\.log \(rotated at 10 MiB, 3 kept\); crash output in .*<node>\.stderr\.log/);
  });

  test('a second up on the same port says the port is in use', async () => {
    const port = nameserver.split(':')[1] ?? '';
    const dir = mkdtempSync(join(tmpdir(), 'dstore-cli-it2-'));
    try {
      const r = await dstore([
        'up',
        '--no-shell',
        '--data-dir',
        dir,
        '--port',
        port,
        '--storage-port',
        '0',
        '--backend',
        'memory',
      ]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`port ${port} on 127\\.0\\.0\\.1 \\(for nameserver\\) is already in use`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('an unreachable nameserver is a one-line typed error, exit 1', async () => {
    const port = await freePort();
    const r = await dstore(['get', 'k', '--nameserver', `127.0.0.1:${port}`, '--timeout-ms', '500']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^error: .+ \([A-Z_]+\)\n$/);
  });

  test('SIGTERM stops up and every child it started', async () => {
    assert.ok(up && up.exit() === undefined, 'up is running');
    const { child, pids } = up;
    for (const pid of pids) assert.ok(alive(pid), `child ${pid} runs before SIGTERM`);
    child.kill('SIGTERM');
    await waitFor(
      () => up!.exit() !== undefined,
      20_000,
      () => `up did not exit after SIGTERM; stderr: ${up!.stderr()}`,
    );
    await waitFor(
      () => pids.every((pid) => !alive(pid)),
      10_000,
      () => `children left running: ${pids.filter(alive).join(', ')}`,
    );
    assert.match(up.stderr(), /stopped/);
  });
});

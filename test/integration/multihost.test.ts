/**
 * dstore on separate hosts (issue 4), emulated with Linux network namespaces: the test
 * creates a namespace per host — nameserver, s1, s2, s3, client — each with one veth
 * interface on 10.77.0.0/24, joined by a bridge in a sixth namespace, so every process has
 * its own address and no route to anything else (nothing touches the caller's namespace).
 * The nameserver listens on its address, the storage servers on 0.0.0.0 advertising theirs
 * (as in a container), all with a cluster token given by DSTORE_CLUSTER_TOKEN. From the
 * client namespace, a small script (multihost-client.ts) checks that a client without the
 * token is refused, then writes 1,000 keys and reads every one back.
 *
 * Needs root and `ip` (iproute2); otherwise it is skipped with the reason. Namespaces get
 * unique names (dstest-<pid>-<random>-<host>); they and the processes are removed in a
 * finally block, and a later run also removes those left by a run that was killed.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'node:test';
import { deleteNamespaces, ip, netnsUnavailableReason, removeStaleNamespaces } from '../../src/process/netns.js';
import { MAIN } from './cluster.js';
import { cleanEnv, Processes } from './spawned.js';

const CLIENT_SCRIPT = resolve('dist/test/integration/multihost-client.js');
const SUBNET_PREFIX = '10.77.0';
const NAMESERVER_PORT = 7000;
const KEYS = 1000;
/** Bound on the client script: forming, 1,000 writes and 1,000 reads. */
const CLIENT_TIMEOUT_MS = 120_000;

const reason = netnsUnavailableReason("the multi-host test's 5 hosts");

test(`a nameserver, 3 storage servers and a client on 5 network namespaces (${SUBNET_PREFIX}.0/24)`, {
  skip: reason ?? false,
  timeout: 240_000,
}, async () => {
  removeStaleNamespaces('dstest');
  const prefix = `dstest-${process.pid}-${randomBytes(3).toString('hex')}`;
  const hosts = [
    { host: 'ns', address: `${SUBNET_PREFIX}.10` },
    { host: 's1', address: `${SUBNET_PREFIX}.11` },
    { host: 's2', address: `${SUBNET_PREFIX}.12` },
    { host: 's3', address: `${SUBNET_PREFIX}.13` },
    { host: 'cl', address: `${SUBNET_PREFIX}.20` },
  ];
  const bridgeNs = `${prefix}-br`;
  const created: string[] = [];
  const procs = new Processes();
  const dir = mkdtempSync(join(tmpdir(), 'dstore-multihost-'));
  const token = randomBytes(16).toString('hex');
  const env = cleanEnv({ DSTORE_CLUSTER_TOKEN: token });
  try {
    // The network: a bridge in its own namespace, and one veth pair per host.
    ip(['netns', 'add', bridgeNs]);
    created.push(bridgeNs);
    ip(['-n', bridgeNs, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', bridgeNs, 'link', 'set', 'br0', 'up']);
    hosts.forEach(({ host, address }, i) => {
      const ns = `${prefix}-${host}`;
      ip(['netns', 'add', ns]);
      created.push(ns);
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      ip(['-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `p${i}`, 'netns', bridgeNs]);
      ip(['-n', bridgeNs, 'link', 'set', `p${i}`, 'master', 'br0']);
      ip(['-n', bridgeNs, 'link', 'set', `p${i}`, 'up']);
      ip(['-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
      ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
    });
    const [nsHost, ...rest] = hosts;
    const storageHosts = rest.slice(0, 3);
    const clientHost = rest[3]!;
    const nameserver = `${nsHost!.address}:${NAMESERVER_PORT}`;
    const inNs = (host: string, args: string[]) => ['netns', 'exec', `${prefix}-${host}`, process.execPath, ...args];

    procs.start(
      'nameserver',
      'ip',
      inNs('ns', [
        MAIN,
        'nameserver',
        '--listen',
        nsHost!.address,
        '--port',
        String(NAMESERVER_PORT),
        '--advertise',
        nameserver,
        '--data-dir',
        join(dir, 'nameserver'),
        '--partitions',
        '8',
        '--replicas',
        '3',
        '--heartbeat-ms',
        '250',
        '--log-level',
        'warn',
      ]),
      env,
    );
    for (const { host, address } of storageHosts) {
      procs.start(
        host,
        'ip',
        inNs(host, [
          MAIN,
          'storage',
          '--nameserver',
          nameserver,
          '--listen',
          '0.0.0.0',
          '--port',
          '7101',
          '--advertise',
          `${address}:7101`,
          '--node-id',
          host,
          '--data-dir',
          join(dir, host),
          '--heartbeat-ms',
          '250',
          '--log-level',
          'warn',
        ]),
        env,
      );
    }
    procs.start('client', 'ip', inNs(clientHost.host, [CLIENT_SCRIPT, nameserver, token, String(KEYS)]), cleanEnv());
    const exit = await procs.waitExit('client', CLIENT_TIMEOUT_MS);
    const client = procs.all.get('client')!;
    const context = `client stdout: ${client.stdout}\nclient stderr: ${client.stderr}\n${procs.describe()}`;
    assert.ok(exit, `the client did not finish within ${CLIENT_TIMEOUT_MS} ms\n${context}`);
    const result = JSON.parse(client.stdout.trim().split('\n').at(-1) ?? '{}') as {
      ok: boolean;
      written: number;
      read: number;
      refusedWithoutToken: boolean;
      nodes: { id: string; address: string; state: string }[];
      error?: string;
    };
    assert.equal(result.error, undefined, context);
    assert.equal(result.refusedWithoutToken, true, 'a client without the token is refused');
    assert.equal(result.written, KEYS, context);
    assert.equal(result.read, KEYS, context);
    assert.equal(exit.code, 0, context);
    // Each node is known by the address it advertised, on its own host.
    const addresses = Object.fromEntries(result.nodes.map((n) => [n.id, n.address]));
    assert.deepEqual(addresses, {
      nameserver,
      s1: `${SUBNET_PREFIX}.11:7101`,
      s2: `${SUBNET_PREFIX}.12:7101`,
      s3: `${SUBNET_PREFIX}.13:7101`,
    });
    for (const name of ['nameserver', 's1', 's2', 's3'])
      assert.equal(procs.all.get(name)!.child.exitCode, null, `${name} is still running\n${context}`);
  } finally {
    await procs.stopAll();
    rmSync(dir, { recursive: true, force: true });
    deleteNamespaces(created.reverse());
  }
});

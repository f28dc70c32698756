/**
 * The systemd units and example settings under deploy/ agree with the CLI: each unit runs
 * `dist/src/cli/main.js nameserver|storage` as a non-root user, keeps its data in its
 * StateDirectory (which is DSTORE_DATA_DIR), reads the example EnvironmentFiles, and does
 * not restart on bad settings (exit code 2). The example env files use only variables of
 * the roles that read them, and the real parser resolves them to the documented three-VM
 * layout; the YAML example resolves to the same storage settings as the env files. When
 * systemd-analyze exists, `systemd-analyze verify` accepts both units. The units find node on
 * the PATH (`/usr/bin/env node`) and point Documentation= at a file the package ships.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, test } from 'node:test';
import { help, resolvedSettings } from './cli-settings.js';
import { packedFiles } from './packed.js';

const DEPLOY = resolve('deploy');

/** `Key=value` lines of a unit file (repeated keys keep every value, in order). */
function unit(name: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of readFileSync(join(DEPLOY, name), 'utf8').split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
  }
  return out;
}

/** KEY=value lines of an env file. */
function envFile(name: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(join(DEPLOY, name), 'utf8').split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/** `Environment=K=V` lines of a unit, with the instance name for %i. */
function unitEnv(u: Map<string, string[]>, instance: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of u.get('Environment') ?? []) {
    const i = kv.indexOf('=');
    out[kv.slice(0, i)] = kv.slice(i + 1).replaceAll('%i', instance);
  }
  return out;
}

const ROLES = [
  {
    file: 'dstore-nameserver.service',
    role: 'nameserver',
    instance: '',
    envFiles: ['cluster.env', 'nameserver.env'],
    stateDir: 'dstore/nameserver',
  },
  {
    file: 'dstore-storage@.service',
    role: 'storage',
    instance: 's1',
    envFiles: ['cluster.env', 'storage-%i.env'],
    stateDir: 'dstore/%i',
  },
] as const;

describe('systemd units', () => {
  for (const r of ROLES) {
    test(`${r.file} runs dstore ${r.role} as a non-root user with its data in its StateDirectory`, () => {
      const u = unit(r.file);
      const exec = u.get('ExecStart')?.[0] ?? '';
      assert.match(
        exec,
        new RegExp(`^/usr/bin/env node /opt/dstore/dist/src/cli/main\\.js ${r.role}$`),
        'node from the PATH, not a hard-coded /usr/bin/node',
      );
      const docs = u.get('Documentation')?.[0] ?? '';
      assert.equal(docs, 'file:///opt/dstore/docs/deploy.md');
      assert.ok(
        packedFiles().includes('docs/deploy.md'),
        'the package installed at /opt/dstore ships the Documentation= file',
      );
      const user = u.get('User')?.[0];
      assert.ok(user && user !== 'root' && user !== '0', `User=${user}`);
      assert.deepEqual(u.get('StateDirectory'), [r.stateDir]);
      assert.equal(unitEnv(u, '%i').DSTORE_DATA_DIR, `/var/lib/${r.stateDir}`, 'the data dir is the state directory');
      assert.deepEqual(
        u.get('EnvironmentFile'),
        r.envFiles.map((f) => `/etc/dstore/${f}`),
      );
      assert.deepEqual(u.get('RestartPreventExitStatus'), ['2'], 'bad settings are not retried');
      assert.deepEqual(u.get('ReadWritePaths'), [`/var/lib/${r.stateDir}`]);
      for (const k of Object.keys(unitEnv(u, 's1')))
        assert.ok(help(r.role).envs.has(k), `${k} is a setting of dstore ${r.role}`);
    });
  }

  test('systemd-analyze verify accepts both units', (t) => {
    const which = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
    if (which.status !== 0) return t.skip('systemd-analyze is not installed');
    const dir = mkdtempSync(join(tmpdir(), 'dstore-units-'));
    try {
      copyFileSync(join(DEPLOY, 'dstore-nameserver.service'), join(dir, 'dstore-nameserver.service'));
      copyFileSync(join(DEPLOY, 'dstore-storage@.service'), join(dir, 'dstore-storage@s1.service'));
      const v = spawnSync(
        'systemd-analyze',
        ['verify', '--man=no', join(dir, 'dstore-nameserver.service'), join(dir, 'dstore-storage@s1.service')],
        { encoding: 'utf8', timeout: 30_000 },
      );
      assert.equal(v.status, 0, v.stderr);
      assert.equal(
        v.stderr
          .split('\n')
          .filter((l) => /dstore/.test(l))
          .join('\n'),
        '',
        'no complaints about the units',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('example settings', () => {
  const cluster = envFile('cluster.env.example');
  const nameserverEnv = envFile('nameserver.env.example');
  const storageEnv = envFile('storage.env.example');
  const nsUnit = unitEnv(unit('dstore-nameserver.service'), '');
  const storageUnit = unitEnv(unit('dstore-storage@.service'), 's1');

  test('every variable is a setting of a role that reads it', () => {
    for (const k of Object.keys(cluster))
      assert.ok(
        help('storage').envs.has(k) && help('client').envs.has(k),
        `${k} (cluster.env) is a storage and client setting`,
      );
    for (const k of Object.keys(nameserverEnv))
      assert.ok(help('nameserver').envs.has(k), `${k} is a nameserver setting`);
    for (const k of Object.keys(storageEnv)) assert.ok(help('storage').envs.has(k), `${k} is a storage setting`);
  });

  test(
    'they resolve to the documented layout: a token, servers off loopback, ' + 'storage pointing at the nameserver',
    async () => {
      const ns = await resolvedSettings('nameserver', [], { ...nsUnit, ...cluster, ...nameserverEnv });
      assert.equal(ns.listen, '10.0.0.11');
      assert.equal(ns.advertise, `10.0.0.11:${ns.port}`);
      assert.equal(ns.dataDir, '/var/lib/dstore/nameserver');
      assert.ok(typeof ns.clusterToken === 'string' && ns.clusterToken.length >= 32);
      const s1 = await resolvedSettings('storage', [], { ...storageUnit, ...cluster, ...storageEnv });
      assert.equal(s1.nameserver, ns.advertise, 'the storage server finds the nameserver where it advertises itself');
      assert.deepEqual(
        [s1.nodeId, s1.dataDir, s1.listen, s1.advertise, s1.port],
        ['s1', '/var/lib/dstore/s1', '10.0.0.11', '10.0.0.11:7101', 7101],
      );
      assert.equal(s1.clusterToken, ns.clusterToken);
    },
  );

  test('the YAML example gives the same storage settings as the env files', async () => {
    const fromEnv = await resolvedSettings('storage', [], { ...storageUnit, ...cluster, ...storageEnv });
    const fromFile = await resolvedSettings('storage', ['--config', join(DEPLOY, 'storage.yaml.example')], {
      DSTORE_CLUSTER_TOKEN: cluster.DSTORE_CLUSTER_TOKEN!,
    });
    for (const k of [
      'nameserver',
      'listen',
      'port',
      'advertise',
      'nodeId',
      'dataDir',
      'backend',
      'sync',
      'clusterToken',
    ])
      assert.deepEqual(fromFile[k], fromEnv[k], k);
  });
});

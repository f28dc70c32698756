/**
 * docker-compose.ha.yml (issue 12) agrees with the CLI, checked without a Docker engine: the
 * file is parsed with `yaml`, and
 * - three etcd members form one cluster: each names itself in --initial-cluster, which lists
 *   all three at their service names, advertises its service name, keeps its data in its own
 *   volume, and has etcd's own health probe;
 * - three `dstore node` services use only flags and DSTORE_* variables of `dstore node --help`,
 *   and the real parser (buildProgram) accepts them; every node lists every etcd member and every
 *   node's candidate (at its service name and nameserver port), listens on 0.0.0.0, advertises
 *   its own service name and storage port, exposes both ports, has its own node id and data
 *   volume, the one cluster token from the environment, and waits for every etcd member to be
 *   healthy; at most the nameserver port is published, on the host's loopback only;
 * - the client knows every node's candidate.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, test } from 'node:test';
import { parse } from 'yaml';
import { help, resolvedSettings } from './cli-settings.js';
import { healthProbe } from './healthcheck.js';

interface Service {
  readonly image?: string;
  readonly build?: unknown;
  readonly command?: string[];
  readonly environment?: Record<string, string>;
  readonly expose?: string[];
  readonly ports?: string[];
  readonly volumes?: string[];
  readonly depends_on?: Record<string, { condition?: string }>;
  readonly healthcheck?: { test?: string[] };
}

const compose = parse(readFileSync(resolve('docker-compose.ha.yml'), 'utf8')) as {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
};
const TOKEN = '0123456789abcdef0123456789abcdef';
/** `${DSTORE_CLUSTER_TOKEN:?…}` as if the caller exported it (compose refuses to start without it). */
const env = (s: Service): Record<string, string> =>
  Object.fromEntries(
    Object.entries(s.environment ?? {}).map(([k, v]) => [
      k,
      String(v).replace(/^\$\{DSTORE_CLUSTER_TOKEN:\?.*\}$/, TOKEN),
    ]),
  );
const services = Object.entries(compose.services);
const etcds = services.filter(([, s]) => s.image?.includes('etcd'));
const nodes = services.filter(([, s]) => s.command?.[0] === 'node');
const flagValue = (s: Service, flag: string): string | undefined =>
  s.command?.find((a) => a.startsWith(`${flag}=`))?.slice(flag.length + 1);

describe('docker-compose.ha.yml', () => {
  test('three etcd members form one cluster, each with its own volume and a health probe', () => {
    assert.equal(etcds.length, 3);
    const initial = etcds.map(([name]) => `${name}=http://${name}:2380`).join(',');
    for (const [name, s] of etcds) {
      assert.equal(flagValue(s, '--name'), name);
      assert.equal(flagValue(s, '--initial-cluster'), initial, `${name} lists every member`);
      assert.equal(flagValue(s, '--advertise-client-urls'), `http://${name}:2379`);
      assert.equal(flagValue(s, '--initial-advertise-peer-urls'), `http://${name}:2380`);
      assert.equal(flagValue(s, '--initial-cluster-state'), 'new');
      const dataDir = flagValue(s, '--data-dir');
      assert.ok(s.volumes?.includes(`${name}-data:${dataDir}`), `${name} keeps ${dataDir} in its own volume`);
      assert.ok(compose.volumes && `${name}-data` in compose.volumes);
      assert.ok(
        s.healthcheck?.test?.some((a) => a.endsWith('etcdctl')),
        `${name} has etcd's health probe`,
      );
      assert.deepEqual(s.ports ?? [], [], 'etcd is not published');
    }
  });

  test('three identical dstore nodes with settings `dstore node` accepts', async () => {
    assert.equal(nodes.length, 3);
    const h = help('node');
    const etcdUrls = etcds.map(([name]) => `http://${name}:2379`);
    const ids = new Set<string>();
    const seeds: string[] = [];
    for (const [name, s] of nodes) {
      for (const k of Object.keys(env(s))) {
        assert.ok(k.startsWith('DSTORE_'), `${name}: ${k}`);
        assert.ok(h.envs.has(k), `${name}: ${k} is a variable of dstore node`);
      }
      const o = await resolvedSettings('node', s.command!.slice(1), env(s));
      assert.deepEqual(o.etcd, etcdUrls, `${name} lists every etcd member`);
      assert.equal(o.listen, '0.0.0.0');
      assert.equal(o.advertise, `${name}:${o.port}`);
      assert.equal(o.clusterToken, TOKEN, `${name} has the token from the environment`);
      assert.ok(typeof o.nodeId === 'string' && !ids.has(o.nodeId), `${name} has its own node id`);
      ids.add(o.nodeId as string);
      const nsPort = o.nameserverPort as number;
      assert.notEqual(nsPort, o.port);
      seeds.push(`${name}:${nsPort}`);
      for (const port of [o.port, nsPort]) assert.ok(s.expose?.includes(String(port)), `${name} exposes ${port}`);
      for (const p of s.ports ?? []) assert.equal(p, `127.0.0.1:${nsPort}:${nsPort}`, `${name} publishes ${p}`);
      assert.ok(s.volumes?.includes(`${name}-data:${o.dataDir}`), `${name} keeps its data in its own volume`);
      for (const [e] of etcds) assert.equal(s.depends_on?.[e]?.condition, 'service_healthy', `${name} waits for ${e}`);
      // Issue 15: the node's HTTP port (both parts' /ready), probed by its health check.
      assert.equal(typeof o.httpPort, 'number', `${name} has an HTTP port`);
      const probe = healthProbe(s.healthcheck?.test, name);
      assert.equal(probe.port, o.httpPort, `${name} probes its own HTTP port`);
      assert.equal(probe.path, 'ready');
      assert.ok(s.expose?.includes(String(o.httpPort)), `${name} exposes its HTTP port`);
    }
    for (const [name, s] of nodes) {
      const o = await resolvedSettings('node', s.command!.slice(1), env(s));
      assert.equal(o.nameserver, seeds.join(','), `${name} has every node's candidate as a seed`);
    }
    const client = compose.services.client;
    assert.ok(client);
    assert.equal(env(client).DSTORE_NAMESERVER, seeds.join(','), 'the client knows every node');
  });
});

/**
 * The Docker deployment agrees with the CLI, checked without a Docker engine: both compose
 * files (docker-compose.yml: three storage servers each with its own Redis;
 * docker-compose.lmdb.yml: lmdb on named volumes) are parsed with `yaml`, and
 * - every flag and DSTORE_* variable a service uses appears in its command's `--help`, and
 *   the real argument parser (buildProgram) accepts the service's command and environment;
 * - every --nameserver / DSTORE_NAMESERVER is the nameserver service at its port; every
 *   server listens on 0.0.0.0, advertises its own service name and port, exposes that port,
 *   and has the one cluster token, from the environment;
 * - each storage server has its own node id, data volume and (Redis file) its own durable
 *   `redis:7-alpine` (appendonly, appendfsync always), which it depends on; the client
 *   service is attachable (stdin_open, tty) and depends on the servers;
 * - the Dockerfile is multi-stage, runs as a non-root user with production dependencies
 *   only, and its entrypoint is `dstore`.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, test } from 'node:test';
import { Script } from 'node:vm';
import { parse } from 'yaml';
import { ProcessHttp } from '../../src/http/process-http.js';
import { createLogger } from '../../src/process/log.js';
import { help, resolvedSettings } from './cli-settings.js';
import { healthProbe, runHealthScript } from './healthcheck.js';

const ROOT = resolve('.');

interface Service {
  readonly image?: string;
  readonly build?: unknown;
  readonly command?: string | string[];
  readonly environment?: Record<string, string | number | boolean | null> | string[];
  readonly expose?: (string | number)[];
  readonly ports?: (string | number)[];
  readonly volumes?: string[];
  readonly depends_on?: string[] | Record<string, { condition?: string }>;
  readonly stdin_open?: boolean;
  readonly tty?: boolean;
  readonly healthcheck?: { test?: string[] };
}

interface Compose {
  readonly services: Record<string, Service>;
  readonly volumes?: Record<string, unknown>;
}

const load = (file: string): Compose => parse(readFileSync(resolve(ROOT, file), 'utf8')) as Compose;

/**
 * The value a required variable (`${NAME:?message}`) gets in this test, as if the caller had
 * exported it; compose refuses to start without it.
 */
const CALLER_ENV: Record<string, string> = { DSTORE_CLUSTER_TOKEN: '0123456789abcdef0123456789abcdef' };

/**
 * Compose's `${NAME:-default}` / `${NAME}` with the defaults and `${NAME:?message}` with
 * CALLER_ENV (the test does not depend on the caller's environment).
 */
function interpolate(value: string): string {
  return value.replace(
    /\$\{([A-Z0-9_]+)(?:(:?-|:?\?)([^}]*))?\}/g,
    (_, name: string, op: string | undefined, arg: string | undefined) => {
      if (op?.endsWith('?')) {
        const v = CALLER_ENV[name];
        assert.ok(v !== undefined, `${name} is required by the compose file but the test gives it no value`);
        return v;
      }
      return arg ?? '';
    },
  );
}

function commandOf(s: Service): string[] {
  if (s.command === undefined) return [];
  return Array.isArray(s.command) ? s.command : s.command.trim().split(/\s+/);
}

function envOf(s: Service): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(s.environment)) {
    for (const kv of s.environment) {
      const i = kv.indexOf('=');
      out[i < 0 ? kv : kv.slice(0, i)] = i < 0 ? '' : interpolate(kv.slice(i + 1));
    }
  } else {
    for (const [k, v] of Object.entries(s.environment ?? {})) out[k] = v === null ? '' : interpolate(String(v));
  }
  return out;
}

function dependsOn(s: Service): string[] {
  if (!s.depends_on) return [];
  return Array.isArray(s.depends_on) ? s.depends_on : Object.keys(s.depends_on);
}

const isDstore = (s: Service): boolean => (s.image ?? '').startsWith('dstore') || s.build !== undefined;

/** The volume name mounted at `path` (named volumes only), or undefined. */
function volumeAt(s: Service, path: string): string | undefined {
  for (const v of s.volumes ?? []) {
    const [src, dst] = v.split(':');
    if (dst === path && src !== undefined && !src.startsWith('.') && !src.startsWith('/')) return src;
  }
  return undefined;
}

for (const [file, backend] of [
  ['docker-compose.yml', 'redis'],
  ['docker-compose.lmdb.yml', 'lmdb'],
] as const) {
  describe(file, () => {
    const compose = load(file);
    const services = Object.entries(compose.services);
    const dstoreServices = services.filter(([, s]) => isDstore(s));
    const role = (r: string) => dstoreServices.filter(([, s]) => commandOf(s)[0] === r);
    const [nsName, ns] = role('nameserver')[0] ?? [];
    const storage = role('storage');
    const settings = new Map<string, Record<string, unknown>>();

    test('every dstore service runs a dstore role with flags and variables its --help lists', async () => {
      assert.ok(dstoreServices.length >= 5, 'nameserver, 3 storage servers, client');
      for (const [name, s] of dstoreServices) {
        const [sub, ...args] = commandOf(s);
        assert.ok(sub, `${name} has a command`);
        const h = help(sub);
        for (const a of args.filter((x) => x.startsWith('--')))
          assert.ok(h.flags.has(a.split('=')[0]!), `${name}: ${a} is a flag of dstore ${sub}`);
        for (const [k, v] of Object.entries(envOf(s))) {
          if (!k.startsWith('DSTORE_')) continue;
          assert.ok(h.envs.has(k), `${name}: ${k} is a variable of dstore ${sub}`);
          assert.notEqual(v, '', `${name}: ${k} is set`);
        }
        // The real parser accepts the service's settings. A Redis backend URL is checked
        // only once the CLI lists Redis (src/storage/redis.ts, the Redis half of issue 4).
        const env = envOf(s);
        if (env.DSTORE_BACKEND?.startsWith('redis://') && !/redis/i.test(h.text)) env.DSTORE_BACKEND = 'memory';
        settings.set(name, await resolvedSettings(sub, args, env));
      }
    });

    test('one nameserver, listening on 0.0.0.0, advertising its service name, port exposed', () => {
      assert.equal(role('nameserver').length, 1);
      assert.ok(nsName && ns);
      const o = settings.get(nsName)!;
      assert.equal(o.listen, '0.0.0.0');
      assert.equal(o.advertise, `${nsName}:${o.port}`);
      assert.ok((ns.expose ?? []).map(String).includes(String(o.port)), 'expose lists the nameserver port');
      for (const p of (ns.ports ?? []).map(String)) {
        const parts = p.split(':');
        assert.ok(
          [String(o.port), String(o.httpPort)].includes(parts.at(-1)!),
          `published ${p} targets the nameserver port or its HTTP port (the dashboard)`,
        );
        assert.equal(parts.length, 3, `published ${p} names the host address`);
        assert.equal(parts[0], '127.0.0.1', `published ${p} only on the host's loopback`);
      }
    });

    test('every --nameserver / DSTORE_NAMESERVER is the nameserver service and its port', () => {
      const nsPort = settings.get(nsName!)!.port;
      for (const [name] of dstoreServices) {
        if (name === nsName) continue;
        assert.equal(settings.get(name)!.nameserver, `${nsName}:${nsPort}`, name);
        const s = compose.services[name]!;
        const explicit = commandOf(s).includes('--nameserver') || envOf(s).DSTORE_NAMESERVER !== undefined;
        assert.ok(explicit, `${name} names the nameserver (the default, 127.0.0.1:7000, is its own container)`);
      }
    });

    test('one cluster token everywhere, from the environment (flags show in ps)', () => {
      const tokens = new Set(
        dstoreServices.map(([name, s]) => {
          assert.ok(!commandOf(s).includes('--cluster-token'), `${name}: token not on the command line`);
          const token = settings.get(name)!.clusterToken;
          assert.equal(typeof token, 'string', `${name} has a token`);
          assert.ok((token as string).length >= 16, `${name}: a token of at least 16 characters`);
          return token;
        }),
      );
      assert.equal(tokens.size, 1, 'the same token');
      for (const [name, s] of dstoreServices) {
        const raw = JSON.stringify(s.environment);
        assert.match(
          raw,
          /\$\{DSTORE_CLUSTER_TOKEN:\?[^}]+\}/,
          `${name}: the token is required from the caller’s environment or .env (no published default)`,
        );
      }
    });

    test('three storage servers: own id, port, advertised address and data volume', () => {
      assert.equal(storage.length, 3);
      const ids = new Set<string>();
      const volumes = new Set<string>();
      for (const [name, s] of storage) {
        const o = settings.get(name)!;
        assert.equal(o.listen, '0.0.0.0', `${name} listens on every interface of its container`);
        assert.equal(typeof o.port, 'number', `${name} has a fixed port`);
        assert.equal(o.advertise, `${name}:${o.port}`, `${name} advertises its service name`);
        assert.ok((s.expose ?? []).map(String).includes(String(o.port)), `${name} exposes ${o.port}`);
        assert.equal(typeof o.nodeId, 'string');
        ids.add(o.nodeId as string);
        const dataDir = o.dataDir as string;
        const volume = volumeAt(s, dataDir);
        assert.ok(volume, `${name}: a named volume at its data dir ${dataDir}`);
        assert.ok(compose.volumes && volume in compose.volumes, `volume ${volume} is declared`);
        volumes.add(volume);
        assert.ok(dependsOn(s).includes(nsName!), `${name} depends on the nameserver`);
      }
      assert.equal(ids.size, 3, 'distinct node ids');
      assert.equal(volumes.size, 3, 'distinct data volumes');
      const nsVolume = volumeAt(ns!, settings.get(nsName!)!.dataDir as string);
      assert.ok(
        nsVolume && compose.volumes && nsVolume in compose.volumes,
        'the nameserver keeps its map in a declared volume',
      );
    });

    if (backend === 'redis') {
      test('each storage server has its own durable redis:7-alpine and depends on it', () => {
        const used = new Set<string>();
        for (const [name, s] of storage) {
          const url = envOf(s).DSTORE_BACKEND ?? commandOf(s)[commandOf(s).indexOf('--backend') + 1] ?? '';
          const m = /^redis:\/\/([a-z0-9-]+):(\d+)(\/\d+)?$/.exec(url);
          assert.ok(m, `${name}: backend ${url} is redis://SERVICE:PORT`);
          const [, redisName, port] = m;
          const redis = compose.services[redisName!];
          assert.ok(redis, `${name}: ${redisName} is a service`);
          assert.equal(port, '6379');
          assert.equal(redis.image, 'redis:7-alpine');
          const cmd = commandOf(redis).join(' ');
          assert.match(cmd, /--appendonly yes/);
          assert.match(cmd, /--appendfsync always/);
          assert.ok(volumeAt(redis, '/data'), `${redisName} keeps its data in a named volume`);
          assert.ok(!used.has(redisName!), `${redisName} serves one storage server only`);
          used.add(redisName!);
          assert.ok(dependsOn(s).includes(redisName!), `${name} depends on ${redisName}`);
          const dep = (s.depends_on as Record<string, { condition?: string }>)[redisName!];
          assert.equal(dep?.condition, 'service_healthy', `${name} waits for ${redisName} to answer`);
          assert.ok(redis.healthcheck?.test?.join(' ').includes('redis-cli ping'), `${redisName} has a health check`);
        }
        assert.equal(used.size, 3);
      });
    } else {
      test('every storage server uses lmdb; no Redis', () => {
        for (const [name] of storage) assert.equal(settings.get(name)!.backend, 'lmdb', name);
        assert.ok(!services.some(([, s]) => (s.image ?? '').startsWith('redis')), 'no redis service');
      });
    }

    test('an attachable client service running the shell', () => {
      const clients = role('client');
      assert.equal(clients.length, 1);
      const [name, s] = clients[0]!;
      assert.equal(s.stdin_open, true, `${name}: stdin_open`);
      assert.equal(s.tty, true, `${name}: tty`);
      const deps = dependsOn(s);
      assert.ok(deps.includes(nsName!), 'the client depends on the nameserver');
      for (const [st] of storage) assert.ok(deps.includes(st), `the client depends on ${st}`);
    });

    test('every server has an HTTP port with a health check on it (node -e fetch: the image has no curl)', () => {
      const nsProbe = healthProbe(ns!.healthcheck?.test, nsName!);
      const nsHttp = settings.get(nsName!)!.httpPort;
      assert.equal(nsProbe.port, nsHttp, 'the nameserver probes its own HTTP port');
      assert.equal(nsProbe.path, 'health', 'the nameserver: /health (it is ready only once the servers registered)');
      assert.ok((ns!.expose ?? []).map(String).includes(String(nsHttp)), 'the nameserver exposes its HTTP port');
      for (const [name, s] of storage) {
        const o = settings.get(name)!;
        assert.equal(typeof o.httpPort, 'number', `${name} has an HTTP port`);
        const probe = healthProbe(s.healthcheck?.test, name);
        assert.equal(probe.port, o.httpPort, `${name} probes its own HTTP port`);
        assert.equal(probe.path, 'ready', `${name}: /ready`);
        assert.ok((s.expose ?? []).map(String).includes(String(o.httpPort)), `${name} exposes its HTTP port`);
        const dep = (s.depends_on as Record<string, { condition?: string }>)[nsName!];
        assert.equal(dep?.condition, 'service_healthy', `${name} waits for the nameserver to answer`);
      }
      const client = role('client')[0]![1];
      for (const [st] of storage) {
        const dep = (client.depends_on as Record<string, { condition?: string }>)[st];
        assert.equal(dep?.condition, 'service_healthy', `the client waits for ${st} to be ready`);
      }
    });

    test('every dependency and named volume exists', () => {
      for (const [name, s] of services) {
        for (const d of dependsOn(s)) assert.ok(compose.services[d], `${name} depends on ${d}, a service`);
        for (const v of s.volumes ?? []) {
          const src = v.split(':')[0]!;
          if (!src.startsWith('.') && !src.startsWith('/'))
            assert.ok(compose.volumes && src in compose.volumes, `${name}: volume ${src} is declared`);
        }
      }
    });
  });
}

describe('the health-check command, run against a real HTTP port', () => {
  test('exit 0 on 200, 1 on 503 and when nothing answers', async () => {
    const compose = load('docker-compose.yml');
    const probe = healthProbe(compose.services.nameserver?.healthcheck?.test, 'nameserver');
    const log = createLogger({ name: 'compose-test', level: 'fatal', stderr: false });
    const http = new ProcessHttp({ host: '127.0.0.1', port: 0, log });
    const port = await http.listen();
    try {
      assert.equal(await runHealthScript(probe, port), 1, 'starting (no role yet): 503');
      let healthy = false;
      http.addRole({
        name: 'nameserver',
        registry: http.processRegistry,
        health: async () => (healthy ? { ok: true, reasons: [] } : { ok: false, reasons: ['not yet'] }),
        ready: async () => ({ ok: true, reasons: [] }),
      });
      assert.equal(await runHealthScript(probe, port), 1, 'unhealthy: 503');
      healthy = true;
      assert.equal(await runHealthScript(probe, port), 0, 'healthy: 200');
    } finally {
      await http.close();
    }
    assert.equal(await runHealthScript(probe, port), 1, 'nothing listens');
  });
});

describe('Dockerfile', () => {
  const text = readFileSync(resolve(ROOT, 'Dockerfile'), 'utf8');
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const froms = lines.map((l, i) => ({ l, i })).filter(({ l }) => /^FROM\s/i.test(l));
  const lastStage = lines.slice(froms.at(-1)?.i ?? 0);

  test('multi-stage: a build stage and a small run stage', () => {
    assert.ok(froms.length >= 2, 'at least two FROM');
    assert.match(froms[0]!.l, /^FROM node:20[\w.-]* AS (\w+)$/i);
    assert.match(froms.at(-1)!.l, /^FROM node:20-(slim|alpine)\b/i, 'a small base');
    const buildStage = /AS (\w+)$/i.exec(froms[0]!.l)![1]!;
    assert.ok(
      lastStage.some((l) => new RegExp(`^COPY --from=${buildStage} .*dist`).test(l)),
      'the compiled code comes from the build stage',
    );
    assert.ok(!lastStage.some((l) => /^COPY --from=.*node_modules/.test(l)), 'no dev dependencies copied');
    assert.ok(
      lastStage.some((l) => /npm ci\b.*--omit=dev/.test(l)),
      'production dependencies only',
    );
    assert.ok(
      lines.slice(0, froms[1]!.i).some((l) => /tsc/.test(l)),
      'the build stage compiles',
    );
  });

  test('a health check on the role’s HTTP port, with node (no curl in the image)', () => {
    const joined = text.replace(/\\\n\s*/g, '');
    const line = joined.split('\n').find((l) => /^HEALTHCHECK\s/.test(l));
    assert.ok(line, 'a HEALTHCHECK');
    const cmd = JSON.parse(line.slice(line.indexOf('CMD') + 3).trim()) as string[];
    assert.deepEqual(cmd.slice(0, 2), ['node', '-e']);
    assert.doesNotThrow(() => new Script(cmd[2]!), 'the script compiles');
    for (const v of ['DSTORE_HTTP_PORT', 'DSTORE_STORAGE_HTTP_PORT', '/health'])
      assert.ok(cmd[2]!.includes(v), `the check reads ${v}`);
  });

  test('runs as a non-root user, with dstore as the entrypoint', () => {
    const users = lastStage.filter((l) => /^USER\s/i.test(l)).map((l) => l.split(/\s+/)[1]!);
    assert.ok(users.length > 0, 'USER in the run stage');
    const user = users.at(-1)!;
    assert.ok(!['root', '0', '0:0'].includes(user), `USER ${user} is not root`);
    assert.match(lastStage.find((l) => /^ENTRYPOINT/i.test(l)) ?? '', /dstore/);
  });

  test('its DSTORE_* defaults are settings of the servers', () => {
    const envs = [...text.matchAll(/\b(DSTORE_[A-Z0-9_]+)=/g)].map((m) => m[1]!);
    assert.ok(envs.includes('DSTORE_LISTEN'));
    for (const e of envs)
      assert.ok(
        help('nameserver').envs.has(e) && help('storage').envs.has(e),
        `${e} is a nameserver and storage setting`,
      );
  });

  test('.dockerignore keeps node_modules, dist and data out of the build context', () => {
    const ignore = readFileSync(resolve(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim());
    for (const p of ['node_modules', 'dist', 'dstore-data']) assert.ok(ignore.includes(p), p);
  });
});

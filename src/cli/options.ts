/**
 * Argument parsers and validations of the `dstore` command line. Each parser either returns
 * a typed value or throws commander's InvalidArgumentError, which commander turns into a
 * one-line "error: option '--port <port>' argument 'x' is invalid. …" and main.ts into exit
 * code 2. Checks that relate several options throw UsageError (also exit code 2).
 */
import { InvalidArgumentError as CommanderArgumentError, Option } from 'commander';
import { createServer } from 'node:net';
import { REDIS_URL_FORM, isRedisUrl, parseRedisUrl } from '../storage/redis-url.js';

import { CliFailure, UsageError } from '../process/errors.js';
import { freePort } from '../process/ports.js';
import { MAX_NAMESERVER_SEEDS } from '../rpc/seeds.js';

export { CliFailure, UsageError, freePort };

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export const BACKENDS = ['lmdb', 'memory'] as const;
export type BackendName = (typeof BACKENDS)[number];
/** `dstore up --backend`: also redis, one redis-server per storage server (redis-fleet.ts). */
export const UP_BACKENDS = [...BACKENDS, 'redis'] as const;
export type UpBackendName = (typeof UP_BACKENDS)[number];
/** `dstore storage --backend`: lmdb, memory, or the URL of the server's own Redis (DESIGN §8). */
export type StorageBackend = BackendName | `redis://${string}`;

export function parseStorageBackend(value: string): StorageBackend {
  if ((BACKENDS as readonly string[]).includes(value)) return value as BackendName;
  if (value === 'redis')
    throw new CommanderArgumentError(`The redis backend needs the URL of this server's own Redis: ${REDIS_URL_FORM}.`);
  if (!isRedisUrl(value))
    throw new CommanderArgumentError(
      `Allowed choices are lmdb, memory, or ${REDIS_URL_FORM} for the server's own Redis.`,
    );
  try {
    parseRedisUrl(value);
  } catch (err) {
    throw new CommanderArgumentError(`${err instanceof Error ? err.message : String(err)}.`);
  }
  return value as StorageBackend;
}
export const SYNC_MODES = ['batch', 'none'] as const;
export type SyncMode = (typeof SYNC_MODES)[number];

export const DEFAULT_NAMESERVER = '127.0.0.1:7000';
export const DEFAULT_NAMESERVER_PORT = 7000;
/** Storage servers of `dstore up` listen on nameserver port + 101, + 102, … (DESIGN §14). */
export const STORAGE_PORT_OFFSET = 101;
/** `dstore storage` without --port takes the first free port of this range. */
export const STORAGE_AUTO_PORT_FIRST = 7101;
export const STORAGE_AUTO_PORT_LAST = 7199;
/** Most storage servers `dstore up` starts at once. */
export const MAX_UP_NODES = 64;

/** An integer in [min, max]; rejects "1.5", "1e3", "", " 7". `what` names it: "an integer". */
export function intParser(what: string, min: number, max: number): (value: string) => number {
  return (value: string): number => {
    const trimmed = value.trim();
    const message = `Expected ${what} from ${min} to ${max}.`;
    if (!/^-?\d+$/.test(trimmed) || trimmed !== value) throw new CommanderArgumentError(message);
    const n = Number(trimmed);
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new CommanderArgumentError(message);
    return n;
  };
}

/** A decimal number in (0, max]. */
export function positiveNumberParser(what: string, max: number): (value: string) => number {
  return (value: string): number => {
    const message = `Expected ${what} above 0 and up to ${max}.`;
    if (!/^\d+(\.\d+)?$/.test(value)) throw new CommanderArgumentError(message);
    const n = Number(value);
    if (!(n > 0) || n > max) throw new CommanderArgumentError(message);
    return n;
  };
}

export const parsePort = intParser('a port number', 0, 65535);

/** `--http-port` (issue 15): a port (0: chosen by the OS), or `off`. */
export type HttpPortOption = number | 'off';
/** The nameserver's HTTP port: /health, /ready, /metrics and the dashboard (DESIGN §14). */
export const DEFAULT_HTTP_PORT = 7080;
/** `dstore up`'s HTTP port is --port + 80 unless --http-port says otherwise. */
export const HTTP_PORT_OFFSET = 80;

export function parseHttpPort(value: string): HttpPortOption {
  if (value === 'off') return 'off';
  try {
    return parsePort(value);
  } catch {
    throw new CommanderArgumentError('Expected a port number from 0 to 65535, or off.');
  }
}

/** `--http-port <port|off>` from the flag or `env`, with its default. */
export function httpPortOption(description: string, env: string, defaultValue?: HttpPortOption): Option {
  const o = envOption('--http-port <port|off>', description, env).argParser(parseHttpPort);
  return defaultValue === undefined ? o : o.default(defaultValue);
}

/** HOST:PORT with a non-empty host and a port in 1..65535; IPv6 hosts in brackets. */
function isHostPort(value: string): boolean {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^\s:[\],]+):(\d{1,5})$/.exec(value);
  const port = m?.[2] === undefined ? NaN : Number(m[2]);
  return m !== null && port >= 1 && port <= 65535;
}

export function parseHostPort(value: string): string {
  if (!isHostPort(value)) throw new CommanderArgumentError('Expected HOST:PORT, e.g. 127.0.0.1:7000.');
  return value;
}

/** `--nameserver`: `host:port[,host:port…]`, the seeds of the nameservers (issue 12); the text as given. */
export function parseNameserverSeeds(value: string): string {
  const parts = value.split(',');
  if (parts.length > MAX_NAMESERVER_SEEDS)
    throw new CommanderArgumentError(`Expected at most ${MAX_NAMESERVER_SEEDS} HOST:PORT addresses.`);
  for (const part of parts) {
    if (!isHostPort(part))
      throw new CommanderArgumentError(
        `Expected HOST:PORT or a comma-separated list of them, e.g. 127.0.0.1:7000,127.0.0.2:7000; ` +
          `got ${JSON.stringify(part.slice(0, 300))}.`,
      );
  }
  return value;
}

export function parseHost(value: string): string {
  if (!/^(\[?[0-9a-fA-F:.]+\]?|[A-Za-z0-9.-]+)$/.test(value))
    throw new CommanderArgumentError('Expected a host name or an IP address.');
  return value.replace(/^\[(.*)\]$/, '$1');
}

export function parseNodeId(value: string): string {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(value))
    throw new CommanderArgumentError('A node id is 1..64 letters, digits, ".", "_" or "-".');
  if (value === 'nameserver') throw new CommanderArgumentError('"nameserver" is reserved for the nameserver.');
  return value;
}

/** `reads:writes`, e.g. 1:1, 9:1, 0:1 (writes only); at least one side positive. */
export function parseRatio(value: string): { reads: number; writes: number } {
  const m = /^(\d{1,6}):(\d{1,6})$/.exec(value);
  const reads = Number(m?.[1]);
  const writes = Number(m?.[2]);
  if (!m || reads + writes === 0)
    throw new CommanderArgumentError(
      'Expected READS:WRITES with non-negative integers, not both 0 (e.g. 1:1, 9:1, 0:1).',
    );
  return { reads, writes };
}

/** An option whose value also comes from an environment variable, shown in --help. */
export function envOption(flags: string, description: string, env: string): Option {
  return new Option(flags, description).env(env);
}

export const logLevelOption = (): Option =>
  envOption('--log-level <level>', 'log level of the JSON logs', 'DSTORE_LOG_LEVEL')
    .choices(LOG_LEVELS)
    .default('info');

export const clusterTokenOption = (): Option =>
  envOption(
    '--cluster-token <token>',
    'shared secret of the cluster (required off loopback; prefer the environment variable, flags show in ps)',
    'DSTORE_CLUSTER_TOKEN',
  );

export const nameserverOption = (): Option =>
  envOption(
    '--nameserver <host:port[,host:port…]>',
    'address of the nameserver, or of several (seeds: requests go to the elected leader among them)',
    'DSTORE_NAMESERVER',
  )
    .argParser(parseNameserverSeeds)
    .default(DEFAULT_NAMESERVER);

export const timeoutOption = (): Option =>
  envOption('--timeout-ms <ms>', 'deadline of each request including retries', 'DSTORE_TIMEOUT_MS')
    .argParser(intParser('an integer', 1, 3_600_000))
    .default(10_000);

export const attemptTimeoutOption = (): Option =>
  envOption(
    '--attempt-timeout-ms <ms>',
    'bound on one attempt of a request; an unanswered attempt is retried (a write with the same ' +
      'request id) until --timeout-ms',
    'DSTORE_ATTEMPT_TIMEOUT_MS',
  )
    .argParser(intParser('an integer', 1, 3_600_000))
    .default(2000);

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** DESIGN §12: like Redis' protected mode, nothing listens off loopback without a token. */
export function checkListenAllowed(host: string, clusterToken: string | undefined): void {
  if (!isLoopbackHost(host) && (clusterToken === undefined || clusterToken === '')) {
    throw new UsageError(
      `refusing to listen on ${host} without a cluster token: set DSTORE_CLUSTER_TOKEN (or --cluster-token), or keep ` +
        `--listen on loopback (127.0.0.1, the default)`,
    );
  }
}

/** True when `port` can be bound on `host` now (it may be taken again right after). */
export function isPortFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE' || err.code === 'EACCES') resolve(false);
      else reject(err);
    });
    server.listen({ host, port, exclusive: true }, () => {
      server.close(() => resolve(true));
    });
  });
}

/** The first port of [first, last] that is free on `host`. */
export async function firstFreePort(host: string, first: number, last: number): Promise<number> {
  for (let port = first; port <= last; port++) {
    if (await isPortFree(host, port)) return port;
  }
  throw new CliFailure(`no free port from ${first} to ${last} on ${host}; choose one with --port (0 lets the OS pick)`);
}

/** Follows `cause` links (bounded) looking for a Node error code such as EADDRINUSE. */
export function errnoCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 8 && e instanceof Error; depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code;
    if (/\bEADDRINUSE\b/.test(e.message)) return 'EADDRINUSE';
    e = e.cause;
  }
  return undefined;
}

const DURATION_UNITS_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * A TTL (§16) as the CLI and the shell take it: a whole number with a unit, `500ms`, `30s`,
 * `5m`, `2h`, `7d` (a bare number is seconds); undefined when it is not one or is out of
 * 1 ms .. `maxMs`.
 */
export function parseDurationMs(text: string, maxMs: number): number | undefined {
  const m = /^(\d{1,15})(ms|s|m|h|d)?$/.exec(text);
  if (!m) return undefined;
  const ms = Number(m[1]) * DURATION_UNITS_MS[m[2] ?? 's']!;
  return Number.isSafeInteger(ms) && ms >= 1 && ms <= maxMs ? ms : undefined;
}

/** `parseDurationMs` as a commander argument parser. */
export function durationParser(maxMs: number): (value: string) => number {
  return (value: string): number => {
    const ms = parseDurationMs(value, maxMs);
    if (ms === undefined)
      throw new CommanderArgumentError(
        'Expected a duration such as 500ms, 30s, 5m, 2h or 7d (a bare number: seconds).',
      );
    return ms;
  };
}

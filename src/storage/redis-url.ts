/**
 * `--backend redis://HOST:PORT[/DB]` (DESIGN §8): where a storage server's own Redis is.
 * Parsed here, without loading the Redis client, so the command line can validate the flag
 * cheaply. A password may be given as `redis://:PASSWORD@HOST:PORT/DB` (or with a user
 * name, for Redis 6 ACLs); it is never printed back.
 */
import { InvalidArgumentError } from '../core/errors.js';

export interface RedisUrl {
  readonly host: string;
  readonly port: number;
  /** The Redis database index (SELECT); 0 unless the URL names one. */
  readonly db: number;
  readonly username?: string;
  readonly password?: string;
}

export const REDIS_URL_FORM = 'redis://HOST:PORT[/DB]';
export const DEFAULT_REDIS_PORT = 6379;
/** Redis' own bound on `databases` is INT_MAX; anything above is a typo. */
const MAX_DB = 2_147_483_647;

export function isRedisUrl(spec: string): boolean {
  return spec.startsWith('redis://');
}

/** redis://[user[:password]@]host[:port][/db], host an IPv6 address in brackets or a name. */
const REDIS_URL_PATTERN = new RegExp(
  '^redis://(?:([^:@/]*)(?::([^@/]*))?@)?' + // user, password
    '(\\[[0-9a-fA-F:.]+\\]|[^:@/?#[\\]]*)' + // host
    '(?::([^/?#]*))?(\\/[^?#]*)?([?#].*)?$', // port, db, what is not supported
);

/** Parses `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`; anything else is an InvalidArgumentError. */
export function parseRedisUrl(spec: string): RedisUrl {
  const bad = (why: string): never => {
    throw new InvalidArgumentError(
      `invalid Redis URL '${redact(spec)}': ${why}; expected ${REDIS_URL_FORM}, e.g. redis://127.0.0.1:6379/0`,
    );
  };
  if (!isRedisUrl(spec)) bad('it must start with redis://');
  const m = REDIS_URL_PATTERN.exec(spec);
  if (!m) return bad('unexpected characters');
  const [, user, pass, rawHost, rawPort, path, rest] = m;
  if (rest !== undefined) bad('query strings and fragments are not supported');
  const host = (rawHost ?? '').replace(/^\[(.*)\]$/, '$1');
  if (host === '') bad('the host is missing');
  const port =
    rawPort === undefined || rawPort === '' ? DEFAULT_REDIS_PORT : /^\d{1,5}$/.test(rawPort) ? Number(rawPort) : NaN;
  if (!(port >= 1 && port <= 65535)) bad('the port must be 1..65535');
  let db = 0;
  if (path !== undefined && path !== '' && path !== '/') {
    const d = /^\/(\d{1,10})$/.exec(path);
    if (!d || Number(d[1]) > MAX_DB) bad('the database must be a number, e.g. /0');
    db = Number(d![1]);
  }
  const decode = (part: string): string => {
    try {
      return decodeURIComponent(part);
    } catch {
      return bad('bad %-escape in the user or password');
    }
  };
  const out: { -readonly [K in keyof RedisUrl]: RedisUrl[K] } = { host, port, db };
  if (user !== undefined && user !== '') out.username = decode(user);
  if (pass !== undefined && pass !== '') out.password = decode(pass);
  return out;
}

/** The URL as it may be shown (logs, errors): without the password. */
export function describeRedisUrl(u: RedisUrl): string {
  const host = u.host.includes(':') ? `[${u.host}]` : u.host;
  return `redis://${host}:${u.port}/${u.db}`;
}

/** `spec` with any password replaced, for error messages about a URL that did not parse. */
function redact(spec: string): string {
  return spec.replace(/^(redis:\/\/[^:@/]*:)[^@/]*@/, '$1***@');
}

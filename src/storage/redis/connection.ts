/** The redis backend's connection: the client, connecting, and the checks of the server's setup. */
import { Redis } from 'ioredis';
import { StorageFailureError } from '../../core/errors.js';
import type { RedisUrl } from '../redis-url.js';
import { SCRIPTS, type Client } from './lua.js';
import { RECONNECT_FIRST_MS, RECONNECT_MAX_MS, type Durability } from './layout.js';
import { messageOf } from './backend.js';

/** Redis is set up so that dstore cannot keep its promises on it; the message says how to fix it. */
export class RedisSetupError extends StorageFailureError {}

/** S14: with --sync batch, Redis must fsync each write before it answers (or offer WAITAOF). */
export class RedisNotDurableError extends RedisSetupError {}
/** Per client, the last error it reported; ioredis also wants an 'error' listener at all times. */
export const lastErrors = new WeakMap<Redis, Error>();

export function noteError(redis: Redis, err: unknown): void {
  lastErrors.set(redis, err instanceof Error ? err : new Error(String(err)));
}

export function createClient(url: RedisUrl, owner: string, commandTimeoutMs: number): Client {
  const redis = new Redis({
    host: url.host,
    port: url.port,
    db: url.db,
    ...(url.username === undefined ? {} : { username: url.username }),
    ...(url.password === undefined ? {} : { password: url.password }),
    protocol: 2,
    lazyConnect: true,
    connectionName: `dstore-${owner}`,
    // Never queue a command while Redis is away, never re-send one: a write must either be
    // confirmed or fail (and then break the backend), so nothing acknowledged depends on a
    // write Redis did not confirm.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    commandTimeout: commandTimeoutMs,
    connectTimeout: Math.min(commandTimeoutMs, 10_000),
    retryStrategy: (times: number) =>
      Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** Math.min(times - 1, 6)) + Math.floor(Math.random() * 50),
    reconnectOnError: null,
    disableClientInfo: true,
  }) as Client;
  for (const [name, lua] of Object.entries(SCRIPTS)) redis.defineCommand(name, { numberOfKeys: 0, lua });
  redis.on('error', (err: unknown) => noteError(redis, err));
  return redis;
}

/** Waits for the connection, which ioredis retries with backoff, up to `ms`. */
export async function connectWithin(redis: Client, ms: number, where: string): Promise<void> {
  let lastError: unknown;
  const onError = (err: unknown): void => {
    lastError = err;
  };
  redis.on('error', onError);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        const why = lastError === undefined ? '' : `: ${messageOf(lastError)}`;
        reject(new StorageFailureError(`cannot reach Redis at ${where} within ${ms} ms${why}`, { cause: lastError }));
      }, ms);
      const onReady = (): void => {
        cleanup();
        resolve();
      };
      const cleanup = (): void => {
        clearTimeout(timer);
        redis.off('ready', onReady);
      };
      redis.once('ready', onReady);
      redis.connect().catch(onError); // a failed first attempt: ioredis keeps retrying
    });
  } finally {
    redis.off('error', onError);
  }
}

/** CONFIG GET one parameter; undefined when CONFIG is not allowed (managed Redis, ACLs). */
export async function configValue(redis: Client, name: string): Promise<string | undefined> {
  try {
    const reply = (await redis.config('GET', name)) as unknown;
    return Array.isArray(reply) && typeof reply[1] === 'string' ? reply[1] : undefined;
  } catch {
    // CONFIG is disallowed here: the setting is unknown, and the caller decides what that means.
    return undefined;
  }
}

/**
 * S14. Eviction would silently drop dstore's data in any sync mode. With sync 'batch',
 * Redis must fsync before it answers (appendfsync always) or offer WAITAOF (7.2+, AOF on).
 */
export async function checkConfig(redis: Client, sync: 'batch' | 'none', where: string): Promise<Durability> {
  const policy = await configValue(redis, 'maxmemory-policy');
  if (policy?.startsWith('allkeys-')) {
    throw new RedisSetupError(
      `Redis at ${where} runs maxmemory-policy ${policy}, so it may evict dstore's data when full; ` +
        `set maxmemory-policy noeviction (redis.conf, or CONFIG SET maxmemory-policy ` +
        `noeviction): a full Redis then fails writes instead`,
    );
  }
  if (sync === 'none') return 'none';
  const appendonly = await configValue(redis, 'appendonly');
  const appendfsync = await configValue(redis, 'appendfsync');
  if (appendonly === 'yes' && appendfsync === 'always') return 'fsync-always';
  if (appendonly !== 'no' && (await waitaofWorks(redis))) return 'waitaof';
  throw new RedisNotDurableError(
    `Redis at ${where} answers before its writes are on disk (appendonly ${appendonly ?? 'unknown'}, ` +
      `appendfsync ${appendfsync ?? 'unknown'}), ` +
      `but --sync batch acknowledges a write only once it is durable ` +
      `(DESIGN S14). Start redis-server with --appendonly yes --appendfsync always ` +
      `(redis.conf: appendonly yes, appendfsync always; or on the running server: ` +
      `CONFIG SET appendonly yes, then CONFIG SET appendfsync always), ` +
      `or use Redis 7.2 or newer with appendonly yes (dstore then waits for each ` +
      `write with WAITAOF), or run with --sync none to rely on the other replicas`,
  );
}

/** WAITAOF 1 0: Redis 7.2+ with the AOF on confirms a local fsync. */
export async function waitaofWorks(redis: Client): Promise<boolean> {
  try {
    const reply = (await redis.call('WAITAOF', '1', '0', '1000')) as unknown;
    return Array.isArray(reply) && Number(reply[0]) >= 1;
  } catch {
    // An unknown command (Redis before 7.2) or the AOF is off: WAITAOF cannot help.
    return false;
  }
}

/**
 * Each storage server needs its own database: refuse one another dstore process is
 * connected to (best effort: CLIENT LIST may be disallowed). The `ds:owner` fence stops a
 * second writer anyway; this turns the mistake into a clear error at start.
 */
export async function checkNoOtherOwner(redis: Client, owner: string, url: RedisUrl, where: string): Promise<void> {
  let list: string;
  try {
    list = String(await redis.client('LIST'));
  } catch {
    return; // CLIENT LIST is disallowed here: the owner fence still protects the data
  }
  for (const line of list.split('\n')) {
    const fields = new Map(
      line
        .trim()
        .split(' ')
        .map((f) => [f.slice(0, f.indexOf('=')), f.slice(f.indexOf('=') + 1)] as const),
    );
    const name = fields.get('name') ?? '';
    if (name.startsWith('dstore-') && name !== `dstore-${owner}` && fields.get('db') === String(url.db)) {
      throw new RedisSetupError(
        `another dstore process (connection from ${fields.get('addr') ?? '?'}) is using Redis ${where}; ` +
          `every storage server needs its own Redis database: give this ` +
          `one another database (redis://HOST:PORT/N) or another Redis`,
      );
    }
  }
}

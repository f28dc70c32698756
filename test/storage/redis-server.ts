/**
 * Test helpers for the redis backend: throwaway `redis-server` processes on free loopback
 * ports, each in its own temp dir (AOF on, fsync always, no RDB), stopped and deleted by
 * `destroy()` — call it in `finally`/`after`, or use `await using`. The launcher also
 * SIGKILLs any server still running when the test process exits, so a failing or crashing
 * test leaves none behind. When redis-server is not installed the redis tests skip with
 * `REDIS_SKIP` (one line).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import {
  REDIS_INSTALL_HINT,
  RedisServer,
  type RedisServerOptions,
  findRedisServer,
} from '../../src/process/redis-server.js';

export { RedisServer };

/** False when redis-server is missing; the tests then skip with REDIS_SKIP. */
export const redisInstalled = findRedisServer() !== undefined;
export const REDIS_SKIP = `redis-server is not installed: ${REDIS_INSTALL_HINT}`;

/** A redis-server in a fresh temp dir; `destroy()` stops it and removes the dir. */
export function startRedis(options: Omit<RedisServerOptions, 'dir'> = {}): Promise<RedisServer> {
  return RedisServer.start({ ...options, dir: mkdtempSync(join(tmpdir(), 'dstore-redis-')) });
}

/** A plain client for poking at a server from a test; `quit()` it when done. */
export function rawClient(url: string): Redis {
  return new Redis(url, {
    protocol: 2,
    lazyConnect: false,
    maxRetriesPerRequest: 1,
    disableClientInfo: true,
    retryStrategy: () => null,
  });
}

/** Runs `body` with a raw client, closed afterwards. */
export async function withRaw<T>(url: string, body: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = rawClient(url);
  try {
    return await body(redis);
  } finally {
    redis.disconnect();
  }
}

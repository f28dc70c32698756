/**
 * Opens a storage backend by kind (`--backend`, DESIGN §8). A new backend is one more
 * entry in `openers`; `BackendKind` follows from it.
 *
 * `--backend` takes a kind (`memory`, `lmdb`) or, for the redis backend, the URL of the
 * storage server's own Redis: `redis://HOST:PORT[/DB]` (a `BackendSpec`). The redis
 * module (and ioredis) loads only when a Redis URL is opened.
 */
import { InvalidArgumentError } from '../core/errors.js';
import type { Backend, BackendOptions } from './backend.js';
import { LmdbBackend } from './lmdb.js';
import { MemoryBackend } from './memory.js';
import { REDIS_URL_FORM, isRedisUrl, parseRedisUrl } from './redis-url.js';

const openers = {
  memory: async (): Promise<Backend> => new MemoryBackend(),
  lmdb: (options: BackendOptions): Promise<Backend> => LmdbBackend.open(options),
  redis: async (options: BackendOptions, url?: string): Promise<Backend> => {
    if (url === undefined)
      throw new InvalidArgumentError(`the redis backend needs the URL of its Redis: --backend ${REDIS_URL_FORM}`);
    const { RedisBackend } = await import('./redis.js');
    return RedisBackend.open({ ...options, url });
  },
} satisfies Record<string, (options: BackendOptions, url?: string) => Promise<Backend>>;

export type BackendKind = keyof typeof openers;

/** What `--backend` accepts: a kind, or a Redis URL for the redis backend. */
export type BackendSpec = Exclude<BackendKind, 'redis'> | `redis://${string}`;

export const backendKinds: readonly BackendKind[] = Object.keys(openers) as BackendKind[];

export function isBackendKind(kind: string): kind is BackendKind {
  return Object.hasOwn(openers, kind);
}

const expected = `expected one of: memory, lmdb, ${REDIS_URL_FORM}`;

/**
 * Checks a `--backend` value: a known kind other than 'redis' (which needs its URL), or a
 * valid Redis URL. Throws an InvalidArgumentError saying what is accepted.
 */
export function parseBackendSpec(spec: string): BackendSpec {
  if (isRedisUrl(spec)) {
    parseRedisUrl(spec);
    return spec as BackendSpec;
  }
  if (spec === 'redis')
    throw new InvalidArgumentError(`the redis backend needs the URL of its Redis: --backend ${REDIS_URL_FORM}`);
  if (!isBackendKind(spec)) throw new InvalidArgumentError(`unknown backend '${spec}'; ${expected}`);
  return spec as BackendSpec;
}

/**
 * Opens the backend `spec` names (a kind, or a Redis URL); an unknown kind is an
 * `InvalidArgumentError` naming the known ones.
 */
export async function openBackend(spec: BackendKind | BackendSpec, options: BackendOptions): Promise<Backend> {
  // `spec` may come from untyped input (a flag, an environment variable): check it.
  const name: string = spec;
  if (isRedisUrl(name)) return openers.redis(options, name);
  if (!isBackendKind(name)) throw new InvalidArgumentError(`unknown backend '${name}'; ${expected}`);
  return openers[name](options);
}

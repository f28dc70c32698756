/**
 * `dstore up --backend redis`: one redis-server per storage server, as the original's
 * compose file gave each storage server its own Redis. Each listens on loopback on a free
 * port, keeps its files in `<data-dir>/<node>/redis` (AOF with fsync always, no RDB: what
 * --sync batch needs, S14), is started before its storage server (also on `restart` and
 * `spawn`) and stopped after every dstore process when `up` stops. Without redis-server
 * installed, `up` stops before starting anything and says how to install it.
 */
import { join } from 'node:path';
import { REDIS_INSTALL_HINT, RedisServer, findRedisServer } from './redis-server.js';
import { CliFailure } from './errors.js';

/** Bound on one redis-server's clean shutdown before SIGKILL, in ms. */
const STOP_TIMEOUT_MS = 10_000;

export class RedisFleet {
  private readonly servers = new Map<string, RedisServer>();

  private constructor(
    private readonly dataDir: string,
    private readonly binary: string,
  ) {}

  /** A CliFailure saying how to install redis-server when it is missing. */
  static create(dataDir: string, find: () => string | undefined = findRedisServer): RedisFleet {
    const binary = find();
    if (binary === undefined) {
      throw new CliFailure(
        `--backend redis starts one redis-server per storage server, but redis-server ` +
          `is not installed: ${REDIS_INSTALL_HINT}; or use --backend lmdb`,
      );
    }
    return new RedisFleet(dataDir, binary);
  }

  /** Starts the Redis of storage server `id` unless it runs (it keeps its port once started). */
  async ensure(id: string): Promise<void> {
    const existing = this.servers.get(id);
    if (existing?.running) return;
    try {
      if (existing) await existing.restart();
      else
        this.servers.set(
          id,
          await RedisServer.start({ dir: join(this.dataDir, id, 'redis'), binary: this.binary, detached: true }),
        );
    } catch (err) {
      throw new CliFailure(
        `could not start the redis-server of ${id}: ${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      );
    }
  }

  /** `--backend` of storage server `id`: the URL of its Redis (started by `ensure`). */
  backendOf(id: string): string {
    const server = this.servers.get(id);
    if (!server) throw new CliFailure(`the redis-server of ${id} was never started`);
    return `${server.url}/0`;
  }

  /** Stops every redis-server (SIGTERM: Redis flushes its AOF; SIGKILL after a bound). */
  async close(): Promise<void> {
    await Promise.all([...this.servers.values()].map((s) => s.stop(STOP_TIMEOUT_MS)));
  }
}

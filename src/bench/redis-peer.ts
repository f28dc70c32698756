/**
 * Redis as a peer of `bench:compare`: a primary and two replicas (`--replicaof`), three
 * `redis-server` processes on loopback, free ports, a throwaway dir each, no persistence
 * (`--appendonly no --save ''`). A write is `SET k v` then `WAIT 2 0` on the same connection,
 * sent together (one round trip; WAIT answers once both replicas acknowledged the SET); a
 * read is `GET` on the primary. Every caller has its own connection, so one caller's
 * blocking WAIT holds up no other caller.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { RedisServer } from '../process/redis-server.js';
import type { Caller, Peer, PeerStartOptions } from './closed-loop.js';

const REPLICAS = 2;
const LINK_TIMEOUT_MS = 20_000;

function connection(url: string): Redis {
  return new Redis(url, {
    protocol: 2,
    maxRetriesPerRequest: 1,
    disableClientInfo: true,
    enableOfflineQueue: true,
    retryStrategy: () => null,
  });
}

/** Online replicas of the primary, from `INFO replication`. */
export function onlineReplicas(info: string): number {
  return info.split('\n').filter((line) => /^slave\d+:.*state=online/.test(line.trim())).length;
}

export class RedisPeer implements Peer {
  readonly name = 'redis+wait';
  readonly description =
    'Redis: primary + 2 replicas, no AOF/RDB; write = SET + WAIT 2 0 (pipelined), read = GET on the primary';
  private readonly callers: Caller[] = [];

  private constructor(
    private readonly servers: RedisServer[],
    connections: Redis[],
  ) {
    for (const conn of connections) {
      this.callers.push({
        write: async (key, value) => {
          const [, acked] = await Promise.all([conn.set(key, value), conn.call('WAIT', REPLICAS, 0)]);
          if (acked !== REPLICAS) throw new Error(`WAIT ${REPLICAS} 0 answered ${String(acked)}`);
        },
        read: async (key) => (await conn.getBuffer(key)) !== null,
      });
    }
  }

  /**
   * Starts the three servers, waits until both replicas are online, opens one connection per
   * caller. `onStarted` gets, before anything starts, the function that stops it all.
   */
  static async start(o: PeerStartOptions, onStarted: (stop: () => Promise<void>) => void): Promise<RedisPeer> {
    const dir = mkdtempSync(join(tmpdir(), 'dstore-compare-redis-'));
    const servers: RedisServer[] = [];
    const connections: Redis[] = [];
    const stopAll = async (): Promise<void> => {
      for (const c of connections) c.disconnect();
      await Promise.allSettled(servers.map((s) => s.stop()));
      rmSync(dir, { recursive: true, force: true });
    };
    onStarted(stopAll); // from here the caller can stop whatever has started
    const common = { appendonly: false, detached: true } as const;
    servers.push(await RedisServer.start({ ...common, dir: join(dir, 'primary') }));
    const primary = servers[0] as RedisServer;
    for (let i = 1; i <= REPLICAS; i++) {
      servers.push(
        await RedisServer.start({
          ...common,
          dir: join(dir, `replica${i}`),
          extraArgs: ['--replicaof', primary.host, String(primary.port)],
        }),
      );
    }
    const admin = connection(primary.url);
    try {
      const deadline = Date.now() + LINK_TIMEOUT_MS;
      let info = '';
      while (onlineReplicas(info) < REPLICAS) {
        if (Date.now() > deadline) {
          throw new Error(`the Redis replicas did not link within ${LINK_TIMEOUT_MS} ms:\n${info}`);
        }
        await sleep(50);
        info = await admin.info('replication');
      }
    } finally {
      admin.disconnect();
    }
    for (let i = 0; i < o.maxConcurrency; i++) connections.push(connection(primary.url));
    await Promise.all(connections.map((c) => c.ping()));
    return new RedisPeer(servers, connections);
  }

  serverPids(): number[] {
    return this.servers.flatMap((s) => (s.pid === undefined ? [] : [s.pid]));
  }

  caller(index: number): Caller {
    const caller = this.callers[index];
    if (caller === undefined) throw new Error(`caller ${index} of ${this.callers.length}`);
    return caller;
  }
}

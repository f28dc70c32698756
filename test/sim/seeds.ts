/**
 * Election mode: how a simulated storage server or client reaches the nameserver through the
 * seed list of candidates, making the decisions of src/rpc/seeds.ts (NameserverSeeds) over the
 * simulated network: the call goes to the last candidate that answered; NOT_LEADER naming a
 * leader goes there at once; NOT_LEADER without one, a refused connection, or — for a request
 * that is safe to repeat (map, nodes, leader) — a timeout or a closed connection moves to the
 * next seed; a request that is not safe to repeat and may have run fails as it is (S9), and the
 * next call starts at the next seed. After a round in which every seed failed: the call ends
 * when all were unreachable, else a backoff (50 ms doubling to 500 ms) and another round.
 * Bounded by the call's deadline and 3 hops per seed.
 */
import type { CallResult, World } from './world.js';

const MAX_HOPS_PER_SEED = 3;
const ROUND_BACKOFF_FIRST_MS = 50;
const ROUND_BACKOFF_MAX_MS = 500;
const SAFE_TO_REPEAT: ReadonlySet<unknown> = new Set(['map', 'nodes', 'leader']);

export class SimSeeds {
  private target: string;
  private cursor: number;
  readonly stats = { redirects: 0, nextSeed: 0 };

  constructor(
    private readonly world: World,
    private readonly from: string,
    readonly seeds: readonly string[],
  ) {
    this.target = seeds[0] as string;
    this.cursor = 1 % seeds.length;
  }

  private advance(): string {
    const s = this.seeds[this.cursor] as string;
    this.cursor = (this.cursor + 1) % this.seeds.length;
    this.target = s;
    this.stats.nextSeed++;
    return s;
  }

  call(body: unknown, timeoutMs: number, describe: () => string, cb: (r: CallResult) => void): void {
    const w = this.world;
    const deadline = w.now + timeoutMs;
    const safe = SAFE_TO_REPEAT.has((body as { t?: unknown }).t);
    let hops = 0;
    let failedInRound = 0;
    let someAnswered = false;
    let backoff = ROUND_BACKOFF_FIRST_MS;
    let last: CallResult | undefined;
    const end = (r: CallResult): void => cb(r);
    const hop = (to: string): void => {
      const left = deadline - w.now;
      if (left <= 0 || ++hops > MAX_HOPS_PER_SEED * this.seeds.length) {
        return end(
          last ?? {
            ok: false,
            error: { code: 'TIMEOUT', message: `no nameserver answered within ${timeoutMs} ms`, retryable: true },
          },
        );
      }
      // A request safe to repeat gives each hop part of the deadline, so a paused target is left behind.
      const bound = safe ? Math.min(left, Math.max(100, Math.ceil(timeoutMs / 2))) : left;
      w.call(
        this.from,
        to,
        body,
        bound,
        () => `${describe()} (to ${to})`,
        (r) => {
          if (r.ok) {
            this.target = to;
            return end(r);
          }
          const code = r.error.code;
          if (code !== 'NOT_LEADER' && code !== 'CONNECTION_CLOSED' && code !== 'TIMEOUT') {
            this.target = to;
            return end(r);
          }
          last = r;
          const leader = (r.error as { leader?: unknown }).leader;
          if (code === 'NOT_LEADER' && typeof leader === 'string' && leader !== to && this.seeds.includes(leader)) {
            this.stats.redirects++;
            this.target = leader;
            return hop(leader);
          }
          const refused = code === 'CONNECTION_CLOSED' && r.error.message.includes('refused');
          if (!safe && code !== 'NOT_LEADER' && !refused) {
            this.advance(); // S9: it may have run; the caller decides, the next call starts elsewhere
            return end(r);
          }
          if (!refused) someAnswered = true;
          const next = this.advance();
          if (++failedInRound < this.seeds.length) return hop(next);
          failedInRound = 0;
          if (!someAnswered) return end(r);
          someAnswered = false;
          const ms = backoff;
          backoff = Math.min(backoff * 2, ROUND_BACKOFF_MAX_MS);
          w.schedule(ms, this.from, () => hop(next));
        },
      );
    };
    hop(this.target);
  }
}

/** The router for World.nsRouter: one SimSeeds per caller. */
export function seedRouter(world: World, seeds: readonly string[]): NonNullable<World['nsRouter']> {
  const by = new Map<string, SimSeeds>();
  return (from, body, timeoutMs, describe, cb) => {
    let s = by.get(from);
    if (!s) by.set(from, (s = new SimSeeds(world, from, seeds)));
    s.call(body, timeoutMs, describe, cb);
  };
}

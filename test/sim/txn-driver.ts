/**
 * The callback driver of the transaction protocol's coroutines (src/client/transaction.ts) in
 * the simulator (issue 14): the very code the real client drives with promises, here driven
 * with the simulated client's calls (SimClient.request: its routing, retries, tags), clock,
 * timers and random numbers, so a seed replays byte for byte.
 *
 * - `read` → a linearizable get to the key's primary; `put`/`delete` → a `sys` write with the
 *   call's conditions and TTL; `sleep` → a scheduled event; `now` → the world's clock;
 *   `random` and `txnId` → the world's Rng; `all` → every sub-coroutine at once, resumed once
 *   all settled.
 * - A run may be **abandoned** at its n-th call (a coordinator that dies mid-commit): the
 *   call is not made and the coroutine never resumes; calls already in flight land, and their
 *   coroutines stop there. What it left (a pending record, intents, a committed record with
 *   unresolved intents) is for the others to resolve.
 */
import type { Call, Proc, RawRead, Settled } from '../../src/client/transaction.js';
import { InvalidArgumentError } from '../../src/core/errors.js';
import { assertNever } from '../../src/core/types.js';
import type { SimClient, SysOutcome, SysRequest } from './client.js';
import { text } from './disk.js';
import { bytes } from './storage-node.js';
import type { World } from './world.js';

export interface DriveOptions {
  /** Stop at this call (1: the first), as a coordinator that crashed there. */
  readonly abandonAt?: number;
  /** Runs once if the run is abandoned. */
  readonly onAbandon?: (call: Call, n: number) => void;
  /** Runs before each call is made (n: 1 for the first), sub-coroutines' included (scripted tests). */
  readonly onCall?: (call: Call, n: number) => void;
}

/**
 * `txn-reads-ignore-intents`: a deliberate bug (mutation testing of the bank checks): the
 * driver drops the intent that comes with a read, so nobody resolves what a transaction left
 * and reads see half of a committed transaction.
 */
export type TxnMutation = 'txn-reads-ignore-intents';

interface RunState {
  calls: number;
  abandoned: boolean;
  readonly options: DriveOptions;
}

export class SimTxnDriver {
  constructor(
    private readonly world: World,
    private readonly client: SimClient,
    private readonly mutation?: TxnMutation,
  ) {}

  /** Runs `proc` to its end; `done` once with its outcome (never, if abandoned). */
  run<T>(proc: Proc<T>, done: (r: Settled<T>) => void, options: DriveOptions = {}): void {
    this.drive(proc, { calls: 0, abandoned: false, options }, done);
  }

  private drive<T>(proc: Proc<T>, run: RunState, done: (r: Settled<T>) => void): void {
    const step = (input: Settled<unknown>): void => {
      if (run.abandoned) return;
      let next: IteratorResult<Call, T>;
      try {
        next = input.ok ? proc.next(input.value) : proc.throw(input.error);
      } catch (error) {
        return done({ ok: false, error });
      }
      if (next.done) return done({ ok: true, value: next.value });
      run.calls++;
      if (run.options.abandonAt !== undefined && run.calls >= run.options.abandonAt) {
        run.abandoned = true;
        run.options.onAbandon?.(next.value, run.calls);
        return;
      }
      run.options.onCall?.(next.value, run.calls);
      this.perform(next.value, run, step);
    };
    step({ ok: true, value: undefined });
  }

  private perform(call: Call, run: RunState, resume: (r: Settled<unknown>) => void): void {
    const w = this.world;
    switch (call.kind) {
      case 'read':
        return this.client.request({ t: 'get', key: text(call.key) }, (o) => resume(this.rawRead(o)));
      case 'put': {
        const o = call.options;
        const req: SysRequest = {
          t: 'put',
          key: text(call.key),
          value: text(call.value),
          ...(o.ifVersion === undefined ? {} : { ifv: o.ifVersion }),
          ...(o.ifk === undefined || o.ifk.length === 0
            ? {}
            : { ifk: o.ifk.map((k) => ({ key: text(k.key), v: k.v })) }),
          ...(o.ttlMs === undefined ? {} : { ttl: o.ttlMs }),
        };
        return this.client.request(req, (r) =>
          resume(r.ok ? { ok: true, value: (r.value as { version: number }).version } : r),
        );
      }
      case 'delete': {
        const o = call.options;
        const req: SysRequest = {
          t: 'del',
          key: text(call.key),
          ...(o.ifVersion === undefined ? {} : { ifv: o.ifVersion }),
          ...(o.ifk === undefined || o.ifk.length === 0
            ? {}
            : { ifk: o.ifk.map((k) => ({ key: text(k.key), v: k.v })) }),
        };
        return this.client.request(req, (r) =>
          resume(r.ok ? { ok: true, value: (r.value as { existed?: boolean }).existed ?? false } : r),
        );
      }
      case 'sleep':
        return w.schedule(call.ms, this.client.id, () => resume({ ok: true, value: undefined }));
      case 'now':
        return resume({ ok: true, value: w.now });
      case 'random':
        return resume({ ok: true, value: w.rng.float() });
      case 'txnId': {
        let id = '';
        for (let i = 0; i < 2; i++) id += w.rng.u32().toString(16).padStart(8, '0');
        return resume({ ok: true, value: id });
      }
      case 'all': {
        const n = call.tasks.length;
        if (n === 0) return resume({ ok: true, value: [] });
        const out = new Array<Settled<unknown>>(n);
        let left = n;
        call.tasks.forEach((t, i) =>
          this.drive(t, run, (r) => {
            out[i] = r;
            if (--left === 0) resume({ ok: true, value: out });
          }),
        );
        return;
      }
      case 'user':
        return resume({ ok: false, error: new InvalidArgumentError('the simulator runs no user functions') });
      default:
        return assertNever(call);
    }
  }

  /** A get's reply as the real client's `readRaw` returns it. */
  private rawRead(o: SysOutcome): Settled<RawRead> {
    if (!o.ok) return o;
    const r = o.value as {
      found: boolean;
      value?: string;
      version?: number;
      ttl?: number;
      intent?: { value: string; version: number };
    };
    const intent =
      r.intent === undefined || this.mutation === 'txn-reads-ignore-intents'
        ? {}
        : { intent: { value: bytes(r.intent.value), version: r.intent.version } };
    if (!r.found) return { ok: true, value: { found: false, ...intent } };
    const ttl = r.ttl === undefined ? {} : { ttlMs: r.ttl };
    return { ok: true, value: { found: true, value: bytes(r.value!), version: r.version!, ...ttl, ...intent } };
  }
}

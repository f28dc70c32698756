/**
 * A simulated client: the retry logic of the real client (src/client/retry.ts: the call's
 * deadline, attempts bounded by `attemptTimeoutMs`, the map of each attempt, backoff, and
 * the outcome, S9) driven over simulated calls and clock. It routes each request to the
 * primary of the key's partition in its cached (possibly stale) cluster map. A write keeps
 * its (clientId, requestSeq) tag across retries (S10) and, once any attempt may have reached
 * a primary, ends as `unknown`, never `fail` (S9).
 *
 * One operation at a time, like a Jepsen process; each is recorded in the history with
 * invoke and complete times. Values are unique (`c2-17`), so a read says which write it saw.
 */
import type { HistoryOp } from '../../src/check/linearizability.js';
import { UnavailableError, errorFromWire, errorToWire, type WireError } from '../../src/core/errors.js';
import { partitionOf } from '../../src/core/partitioning.js';
import type { Config, PartitionId, Seq } from '../../src/core/types.js';
import {
  type AfterFailure as Next,
  type AttemptPlan,
  type CallEnd,
  CallRetry,
  cachedMapForRetry,
  primaryOf,
  type RoutingMap,
} from '../../src/client/retry.js';
import type { Observer } from './observer.js';
import { bytes } from './storage-node.js';
import type { CallResult, Endpoint, SimEvent, World } from './world.js';

export interface ClientKnobs {
  /** Deadline of one operation including retries (the real client's timeoutMs). */
  readonly timeoutMs: number;
  /** Bound on one attempt (the real client's attemptTimeoutMs). */
  readonly attemptTimeoutMs: number;
  readonly thinkMinMs: number;
  readonly thinkMaxMs: number;
  /** `cas` (issue 14): a put with `ifVersion` the last version this client saw of the key; 0 unless --cas. */
  readonly weights: { readonly put: number; readonly get: number; readonly delete: number; readonly cas?: number };
}

interface MapInfo extends RoutingMap {
  readonly partitions: number;
  readonly configs: readonly Config[];
}

type Kind = 'put' | 'get' | 'delete' | 'cas';

/**
 * One call of a transaction (issue 14, txn-driver.ts): a linearizable get, or a `sys` put or
 * delete with its conditions (`ifv`, `ifk`) and TTL, as the real client's `TxnIO` sends them.
 */
export type SysRequest =
  | { readonly t: 'get'; readonly key: string }
  | {
      readonly t: 'put';
      readonly key: string;
      readonly value: string;
      readonly ifv?: number;
      readonly ifk?: ReadonlyArray<{ readonly key: string; readonly v: number }>;
      readonly ttl?: number;
    }
  | {
      readonly t: 'del';
      readonly key: string;
      readonly ifv?: number;
      readonly ifk?: ReadonlyArray<{ readonly key: string; readonly v: number }>;
    };

/** How a `SysRequest` ended: the reply's value, or the typed error the real client would throw. */
export type SysOutcome =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly error: unknown };

interface SysCall {
  readonly req: SysRequest;
  readonly retry: CallRetry;
  readonly tag?: { cid: string; rs: number };
  readonly done: (o: SysOutcome) => void;
}

interface OpState {
  readonly kind: Kind;
  readonly key: string;
  readonly value?: string;
  /** cas: the version required (0: absent) and the value that version holds (null: absent). */
  readonly expect?: { readonly version: number; readonly value: string | null };
  readonly invoke: number;
  readonly retry: CallRetry;
  readonly tag?: { cid: string; rs: number };
}

export class SimClient implements Endpoint {
  up = true;
  paused = false;
  inc = 1;
  held: SimEvent[] = [];
  busy = false;
  /** Whether to start new operations. */
  active = true;
  private map: MapInfo | undefined;
  private requestSeq = 0;
  /**
   * S10: like the real client's slots, a client id whose last write ended `unknown` is
   * retired: an attempt of it may still arrive after the next request and replace that one
   * in the dedup table (seed 30782 found it).
   */
  private session = 1;
  private written = 0;
  /** The last value and version this client saw of each key (cas expects it; absent: 0). */
  private readonly seen = new Map<string, { version: number; value: string | null }>();
  readonly stats = { ok: 0, fail: 0, unknown: 0, attempts: 0, internalErrors: 0 };
  /** S10: the (client id, request seq) slots of concurrent `sys` writes, as the real client's `tagged`. */
  private readonly freeSlots: Array<{ id: string; seq: number }> = [];
  private slotCount = 0;

  constructor(
    readonly id: string,
    private readonly world: World,
    private readonly knobs: ClientKnobs,
    private readonly keys: readonly string[],
    private readonly history: HistoryOp[],
    private readonly observer: Observer,
  ) {}

  onMessage(): void {}

  onCall(_from: string, _body: unknown, respond: (r: CallResult) => void): void {
    respond({ ok: false, error: { code: 'INVALID_ARGUMENT', message: 'clients serve nothing' } });
  }

  /** Starts the operation loop: one operation after another, with think time, while active. */
  startLoop(delayMs: number): void {
    this.busy = true;
    this.world.schedule(delayMs, this.id, () => this.next());
  }

  private next(): void {
    if (!this.active) {
      this.busy = false;
      return;
    }
    const rng = this.world.rng;
    const w = this.knobs.weights;
    // cas last, weight 0 unless --cas: every other seed draws as before.
    const kind = rng.weighted<Kind>([
      [w.put, 'put'],
      [w.get, 'get'],
      [w.delete, 'delete'],
      [w.cas ?? 0, 'cas'],
    ]);
    this.begin(kind, rng.pick(this.keys), () =>
      this.world.schedule(rng.int(this.knobs.thinkMinMs, this.knobs.thinkMaxMs), this.id, () => this.next()),
    );
  }

  /** One operation, then `done` with its history record (for scripted scenarios). */
  perform(kind: 'put' | 'get' | 'delete', key: string, done: (h: HistoryOp) => void): void {
    this.busy = true;
    this.begin(kind, key, () => {
      this.busy = false;
      done(this.history[this.history.length - 1]!);
    });
  }

  /** Reads every key once, one after another (the final reads after convergence). */
  readAll(done: () => void): void {
    this.busy = true;
    const keys = [...this.keys];
    const step = () => {
      const key = keys.shift();
      if (key === undefined) {
        this.busy = false;
        return done();
      }
      this.begin('get', key, step);
    };
    step();
  }

  private begin(kind: Kind, key: string, then: () => void): void {
    const op: OpState = {
      kind,
      key,
      ...(kind === 'put' || kind === 'cas' ? { value: `${this.id}-${++this.written}` } : {}),
      ...(kind === 'cas' ? { expect: this.seen.get(key) ?? { version: 0, value: null } } : {}),
      ...(kind === 'get' ? {} : { tag: { cid: `${this.id}.${this.session}`, rs: ++this.requestSeq } }),
      invoke: this.world.stamp(),
      // The partition is named in the final error only; the simulator records the status.
      retry: new CallRetry(this.knobs, 0, kind !== 'get', this.world.now),
    };
    this.current = { op, then };
    this.world.trace(
      `${this.id} invokes ${kind} ${key}${op.value ? `=${op.value}` : ''}` +
        `${op.expect ? ` if v${op.expect.version}` : ''}` +
        `${op.tag ? ` (${op.tag.cid}#${op.tag.rs})` : ''}`,
    );
    this.attempt(op);
  }

  private current: { op: OpState; then: () => void } | undefined;

  private attempt(op: OpState): void {
    const plan = op.retry.begin(this.world.now);
    if (plan.kind === 'end') return this.ended(op, plan.end);
    this.withMap(
      plan,
      op.retry,
      () => this.route(op, plan),
      (next, error) => this.afterFailure(op, next, error),
    );
  }

  /**
   * An attempt's map step: the cached map when it may and it is formed, else a fetched one (a
   * retry goes on with the cached map when the nameserver does not answer); then `route`, or
   * `failed` with what the call's retry logic says.
   */
  private withMap(
    plan: Extract<AttemptPlan, { kind: 'attempt' }>,
    retry: CallRetry,
    route: () => void,
    failed: (next: Next, error: WireError) => void,
  ): void {
    if (plan.map === 'cached' && this.map?.formed) return route();
    this.world.nsCall(
      this.id,
      { t: 'map' },
      plan.attemptMs,
      () => 'map',
      (r) => {
        if (r.ok) this.map = r.value as MapInfo;
        else {
          const err = errorFromWire(r.error);
          if (plan.map === 'cached' || cachedMapForRetry(err, this.map) === undefined)
            return failed(retry.mapFailed(err, this.world.now), r.error);
        }
        route();
      },
    );
  }

  private route(op: OpState, plan: Extract<AttemptPlan, { kind: 'attempt' }>): void {
    const map = this.map!;
    const p = partitionOf(bytes(op.key), map.partitions);
    let target: { node: string; address: string };
    try {
      target = primaryOf(map, p);
    } catch (err) {
      return this.afterFailure(op, op.retry.mapFailed(err, this.world.now), errorToWire(err));
    }
    if (!op.retry.maySend(this.world.now)) return this.ended(op, op.retry.expired());
    const tag = op.tag;
    const tagged = tag === undefined ? {} : { cid: tag.cid, rs: tag.rs };
    const body =
      op.kind === 'get'
        ? { t: 'get', p, key: op.key }
        : op.kind === 'put'
          ? { t: 'put', p, key: op.key, value: op.value, ...tagged }
          : op.kind === 'cas'
            ? { t: 'put', p, key: op.key, value: op.value, ...tagged, ifv: op.expect!.version }
            : { t: 'del', p, key: op.key, ...tagged };
    this.stats.attempts++;
    const epoch = map.configs[p]!.epoch;
    const describe = () => `${op.kind} ${op.key}${tag ? ` (${tag.cid}#${tag.rs})` : ''} to ${target.node} (e${epoch})`;
    const timeoutMs = op.retry.sendTimeoutMs(plan.attemptMs, this.world.now);
    this.world.call(this.id, target.address, body, timeoutMs, describe, (r) => {
      if (r.ok) return this.succeeded(op, p, r.value);
      this.afterFailure(op, op.retry.sendFailed(errorFromWire(r.error), this.world.now), r.error);
    });
  }

  /** After a failed attempt: the next one after the backoff, or the end. */
  private afterFailure(op: OpState, next: Next, error: WireError): void {
    if (error.code === 'INTERNAL') this.stats.internalErrors++;
    if (next.kind === 'end') return this.ended(op, next.end);
    this.world.schedule(next.delayMs, this.id, () => this.attempt(op));
  }

  /** The call got no answer: `unknown` when a write may have been applied (S9), else `fail`. */
  private ended(op: OpState, end: CallEnd): void {
    const cause = end.kind === 'deadline' ? end.lastError : end.error;
    const error = cause === undefined ? undefined : errorToWire(cause);
    this.finish(op, end.kind === 'unknown' ? 'unknown' : 'fail', undefined, error);
  }

  private succeeded(op: OpState, p: PartitionId, value: unknown): void {
    if (op.kind === 'get') {
      const r = value as { found: boolean; value?: string; version?: number };
      if (r.found) this.observer.onReadVersion(p, op.key, r.value!, r.version! as Seq);
      this.seen.set(op.key, r.found ? { version: r.version!, value: r.value! } : { version: 0, value: null });
      return this.finish(op, 'ok', { value: r.found ? r.value! : null });
    }
    const r = value as { version: number; existed?: boolean };
    this.seen.set(
      op.key,
      op.kind === 'delete' ? { version: 0, value: null } : { version: r.version, value: op.value! },
    );
    this.observer.onAck({
      client: this.id,
      partition: p,
      seq: r.version as Seq,
      clientId: op.tag!.cid,
      requestSeq: op.tag!.rs,
      op: op.kind === 'cas' ? 'put' : op.kind,
      key: op.key,
      ...(op.value === undefined ? {} : { value: op.value }),
    });
    this.finish(
      op,
      'ok',
      op.kind === 'delete' ? { existed: r.existed ?? false, version: r.version } : { version: r.version },
    );
  }

  // ---- transactions' calls (issue 14): concurrent, each with the client's routing and retries ----

  /**
   * One call of a transaction, concurrent with this client's others: routed to the primary of
   * the key's partition with the retry logic of the real client (S9: a write that may have
   * been applied ends as OutcomeUnknownError); a write is a `sys` write tagged from a slot of
   * its own, kept across retries and retired when the write fails (S10, client.ts `tagged`).
   * `done` runs exactly once, with the typed error the real client would throw.
   */
  request(req: SysRequest, done: (o: SysOutcome) => void): void {
    const isWrite = req.t !== 'get';
    const slot = isWrite ? (this.freeSlots.pop() ?? { id: `${this.id}.t${this.slotCount++}`, seq: 0 }) : undefined;
    if (slot) slot.seq++;
    const call: SysCall = {
      req,
      retry: new CallRetry(this.knobs, 0, isWrite, this.world.now),
      ...(slot ? { tag: { cid: slot.id, rs: slot.seq } } : {}),
      done: (o) => {
        // A slot whose write failed is retired: an attempt of it may still arrive.
        if (slot && o.ok) this.freeSlots.push(slot);
        done(o);
      },
    };
    this.sysAttempt(call);
  }

  private sysAttempt(c: SysCall): void {
    const plan = c.retry.begin(this.world.now);
    if (plan.kind === 'end') return this.sysEnded(c, plan.end);
    this.withMap(
      plan,
      c.retry,
      () => this.sysRoute(c, plan),
      (next) => this.sysAfterFailure(c, next),
    );
  }

  private sysRoute(c: SysCall, plan: Extract<AttemptPlan, { kind: 'attempt' }>): void {
    const map = this.map!;
    const p = partitionOf(bytes(c.req.key), map.partitions);
    let target: { node: string; address: string };
    try {
      target = primaryOf(map, p);
    } catch (err) {
      return this.sysAfterFailure(c, c.retry.mapFailed(err, this.world.now));
    }
    if (!c.retry.maySend(this.world.now)) return this.sysEnded(c, c.retry.expired());
    const body = c.req.t === 'get' ? { ...c.req, p } : { ...c.req, p, sys: true, ...c.tag };
    this.stats.attempts++;
    const epoch = map.configs[p]!.epoch;
    const tag = c.tag;
    const describe = () =>
      `sys ${c.req.t} ${printable(c.req.key)}${tag ? ` (${tag.cid}#${tag.rs})` : ''} to ${target.node} (e${epoch})`;
    const timeoutMs = c.retry.sendTimeoutMs(plan.attemptMs, this.world.now);
    this.world.call(this.id, target.address, body, timeoutMs, describe, (r) => {
      if (r.ok) return this.sysSucceeded(c, p, r.value);
      this.sysAfterFailure(c, c.retry.sendFailed(errorFromWire(r.error), this.world.now));
    });
  }

  private sysAfterFailure(c: SysCall, next: Next): void {
    if (next.kind === 'end') return this.sysEnded(c, next.end);
    this.world.schedule(next.delayMs, this.id, () => this.sysAttempt(c));
  }

  private sysEnded(c: SysCall, end: CallEnd): void {
    const error =
      end.kind === 'deadline'
        ? (end.lastError ?? new UnavailableError(`${this.id}: no attempt of ${c.req.t} got an answer in time`))
        : end.error;
    if (this.world.tracing)
      this.world.trace(`${this.id} sys ${c.req.t} ${printable(c.req.key)} ends: ${(error as Error).message}`);
    c.done({ ok: false, error });
  }

  private sysSucceeded(c: SysCall, p: PartitionId, value: unknown): void {
    const req = c.req;
    if (req.t === 'get') {
      const r = value as { found: boolean; value?: string; version?: number };
      if (r.found) this.observer.onReadVersion(p, req.key, r.value!, r.version! as Seq);
    } else {
      const r = value as { version: number };
      this.observer.onAck({
        client: this.id,
        partition: p,
        seq: r.version as Seq,
        clientId: c.tag!.cid,
        requestSeq: c.tag!.rs,
        op: req.t === 'put' ? 'put' : 'delete',
        key: req.key,
        ...(req.t === 'put' ? { value: req.value } : {}),
      });
    }
    c.done({ ok: true, value });
  }

  private finish(
    op: OpState,
    status: 'ok' | 'fail' | 'unknown',
    result?: { value?: string | null; existed?: boolean; version?: number },
    error?: WireError,
  ): void {
    if (this.current?.op !== op) return;
    const then = this.current.then;
    this.current = undefined;
    this.stats[status]++;
    const complete = this.world.stamp();
    const base = { client: this.id, key: op.key, invoke: op.invoke, complete, status };
    let h: HistoryOp;
    if (op.kind === 'put') h = { ...base, op: 'put', value: op.value! };
    else if (op.kind === 'cas') h = { ...base, op: 'cas', value: op.value!, expect: op.expect!.value };
    else if (op.kind === 'get')
      h = status === 'ok' ? { ...base, op: 'get', value: result!.value ?? null } : { ...base, op: 'get' };
    else h = status === 'ok' ? { ...base, op: 'delete', existed: result!.existed! } : { ...base, op: 'delete' };
    this.history.push(h);
    if (status === 'unknown' && op.tag) {
      this.session++;
      this.requestSeq = 0;
    }
    if (this.world.tracing) {
      const what =
        status === 'ok'
          ? op.kind === 'get'
            ? `→ ${result!.value ?? 'absent'}`
            : `version ${result!.version}${op.kind === 'delete' ? ` existed ${result!.existed}` : ''}`
          : `${error?.code ?? ''} ${error?.message ?? ''}`;
      this.world.trace(`${this.id} completes ${op.kind} ${op.key}${op.value ? `=${op.value}` : ''}: ${status} ${what}`);
    }
    then();
  }
}

/** A key for a trace line: reserved keys' bytes below 0x20 shown as `\xNN`. */
export function printable(key: string): string {
  return key.replace(/[\x00-\x1f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/**
 * The simulated world: simulated time, one event queue, one Rng, the endpoints (storage
 * servers, the nameserver, clients) and the network between them.
 *
 * Events belong to an endpoint. A crashed endpoint's events are dropped; a paused
 * endpoint's events are held and run, in order, when it resumes (SIGSTOP/SIGCONT: its
 * timers, disk completions and incoming messages all wait). An event tied to an
 * incarnation (a timer, an fsync) is dropped once the endpoint restarted.
 *
 * The network drops, delays, duplicates and reorders messages and honours cut links
 * (checked at send and at delivery). Calls (request/reply) time out; a call to an endpoint
 * that crashes fails with CONNECTION_CLOSED shortly after, as a reset TCP connection does.
 * Messages are deep-copied on delivery: nothing is shared between endpoints, as over a wire.
 */
import type { WireError } from '../../src/core/errors.js';
import { Rng } from '../../src/core/rng.js';

export interface SimEvent {
  readonly at: number;
  readonly seq: number;
  readonly owner: string;
  /** The owner's incarnation the event belongs to; null: whichever is up (messages). */
  readonly inc: number | null;
  readonly fn: () => void;
}

/** A binary min-heap of events by (time, insertion order). */
class EventQueue {
  private heap: SimEvent[] = [];
  get size(): number {
    return this.heap.length;
  }
  push(e: SimEvent): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(h[i]!, h[parent]!)) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }
  peek(): SimEvent | undefined {
    return this.heap[0];
  }
  pop(): SimEvent | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l]!, h[m]!)) m = l;
        if (r < h.length && before(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

const before = (a: SimEvent, b: SimEvent) => a.at < b.at || (a.at === b.at && a.seq < b.seq);

export type CallResult =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly error: WireError };

export interface Endpoint {
  readonly id: string;
  up: boolean;
  paused: boolean;
  inc: number;
  held: SimEvent[];
  onCall(from: string, body: unknown, respond: (r: CallResult) => void): void;
  onMessage(from: string, body: unknown): void;
}

export interface NetworkKnobs {
  /** Probability a message is lost. */
  readonly dropP: number;
  /** Probability a message is delivered twice. */
  readonly dupP: number;
  /** Probability a message takes the slow path (reordered behind later ones). */
  readonly slowP: number;
  readonly minDelayMs: number;
  readonly maxDelayMs: number;
  readonly slowMaxDelayMs: number;
}

export const RELIABLE: NetworkKnobs = { dropP: 0, dupP: 0, slowP: 0, minDelayMs: 1, maxDelayMs: 5, slowMaxDelayMs: 5 };

interface PendingCall {
  readonly from: string;
  readonly fromInc: number;
  readonly to: string;
  readonly cb: (r: CallResult) => void;
}

export type NsRouter = (
  from: string,
  body: unknown,
  timeoutMs: number,
  describe: () => string,
  cb: (r: CallResult) => void,
) => void;

export class SimulationFailure extends Error {}

export class World {
  now = 0;
  readonly rng: Rng;
  readonly endpoints = new Map<string, Endpoint>();
  net: NetworkKnobs = RELIABLE;
  /** Cut links, as "a|b" with a < b. */
  readonly cuts = new Set<string>();
  events = 0;
  messagesSent = 0;
  messagesDropped = 0;
  private readonly queue = new EventQueue();
  private nextSeq = 0;
  private microtasks: Array<() => void> = [];
  private nextCallId = 1;
  private readonly pending = new Map<number, PendingCall>();
  private stampMs = -1;
  private stampN = 0;
  /**
   * How storage servers and clients reach the nameserver: unset, a call to endpoint `ns`;
   * in election mode, a seed list of candidates that follows NOT_LEADER (seeds.ts).
   */
  nsRouter: NsRouter | undefined;
  /** Trace lines go here when set (replay of one seed). */
  traceSink: ((line: string) => void) | undefined;

  constructor(seed: number) {
    this.rng = new Rng(seed);
  }

  get tracing(): boolean {
    return this.traceSink !== undefined;
  }

  trace(line: string): void {
    if (this.traceSink) this.traceSink(`${String(this.now).padStart(7)}  ${line}`);
  }

  add(e: Endpoint): void {
    this.endpoints.set(e.id, e);
  }

  endpoint(id: string): Endpoint {
    const e = this.endpoints.get(id);
    if (!e) throw new Error(`no endpoint ${id}`);
    return e;
  }

  /** A unique, increasing history timestamp in ms (sub-ms fractions break ties). */
  stamp(): number {
    if (this.now !== this.stampMs) {
      this.stampMs = this.now;
      this.stampN = 0;
    }
    this.stampN = Math.min(this.stampN + 1, 999);
    return this.now + this.stampN / 1000;
  }

  /** Runs `fn` at now + delayMs as `owner` (tied to its current incarnation unless `anyInc`). */
  schedule(delayMs: number, owner: string, fn: () => void, anyInc = false): void {
    const ep = this.endpoints.get(owner);
    const inc = anyInc || !ep ? null : ep.inc;
    this.queue.push({ at: this.now + Math.max(0, Math.round(delayMs)), seq: this.nextSeq++, owner, inc, fn });
  }

  /** Runs after the current event, before the next one (Node's queueMicrotask). */
  microtask(fn: () => void): void {
    this.microtasks.push(fn);
  }

  /** Runs events until `untilMs` (inclusive) or until `stop()` says so; bounded by `maxEvents`. */
  run(untilMs: number, maxEvents: number, stop?: () => boolean): void {
    for (;;) {
      const next = this.queue.peek();
      if (!next || next.at > untilMs) break;
      if (stop?.()) return;
      this.queue.pop();
      if (++this.events > maxEvents)
        throw new SimulationFailure(`more than ${maxEvents} events: the simulation does not quiesce (a livelock?)`);
      this.now = next.at;
      this.dispatch(next);
    }
    if (this.now < untilMs) this.now = untilMs;
  }

  private dispatch(e: SimEvent): void {
    if (e.owner !== 'world') {
      const ep = this.endpoints.get(e.owner);
      if (!ep?.up) return;
      if (e.inc !== null && e.inc !== ep.inc) return;
      if (ep.paused) {
        ep.held.push(e);
        return;
      }
    }
    e.fn();
    this.drainMicrotasks();
  }

  private drainMicrotasks(): void {
    for (let i = 0; i < 100_000 && this.microtasks.length > 0; i++) {
      const batch = this.microtasks;
      this.microtasks = [];
      for (const fn of batch) fn();
    }
    if (this.microtasks.length > 0) throw new SimulationFailure('microtasks do not drain');
  }

  // ---- faults on endpoints ----

  pause(id: string): void {
    const ep = this.endpoint(id);
    if (!ep.up || ep.paused) return;
    ep.paused = true;
  }

  resume(id: string): void {
    const ep = this.endpoint(id);
    if (!ep.paused) return;
    ep.paused = false;
    const held = ep.held;
    ep.held = [];
    for (const e of held) this.queue.push({ ...e, at: this.now, seq: this.nextSeq++ });
  }

  /** The endpoint stops: its events and calls are gone; callers of it see the connection close. */
  crashed(id: string): void {
    const ep = this.endpoint(id);
    ep.up = false;
    ep.paused = false;
    ep.held = [];
    for (const [callId, p] of this.pending) {
      if (p.from === id) this.pending.delete(callId);
      else if (p.to === id) {
        this.schedule(this.rng.int(1, 5), p.from, () =>
          this.settle(callId, {
            ok: false,
            error: { code: 'CONNECTION_CLOSED', message: `connection to ${id} closed`, retryable: true },
          }),
        );
      }
    }
  }

  started(id: string): void {
    const ep = this.endpoint(id);
    ep.up = true;
    ep.paused = false;
    ep.inc++;
  }

  // ---- the network ----

  private linkKey(a: string, b: string): string {
    return a < b ? `${a}|${b}` : `${b}|${a}`;
  }

  isCut(a: string, b: string): boolean {
    return this.cuts.size > 0 && this.cuts.has(this.linkKey(a, b));
  }

  cut(a: string, b: string): void {
    if (a !== b) this.cuts.add(this.linkKey(a, b));
  }

  heal(a?: string, b?: string): void {
    if (a === undefined || b === undefined) this.cuts.clear();
    else this.cuts.delete(this.linkKey(a, b));
  }

  /**
   * Sends `body` from `from` to `to`; `deliver` runs at the receiver with a copy. A call's
   * request and reply are never duplicated (`once`): they travel on one TCP connection, and
   * the RPC layer never re-sends a request; a retry is a new call the client makes.
   */
  private transmit(from: string, to: string, what: () => string, deliver: () => void, once = false): void {
    this.messagesSent++;
    const net = this.net;
    if (this.isCut(from, to) || this.rng.chance(net.dropP)) {
      this.messagesDropped++;
      if (this.tracing) this.trace(`${from} ✗ ${to} dropped: ${what()}`);
      return;
    }
    const copies = this.rng.chance(net.dupP) && !once ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const delay = this.rng.chance(net.slowP)
        ? this.rng.int(net.maxDelayMs, net.slowMaxDelayMs)
        : this.rng.int(net.minDelayMs, net.maxDelayMs);
      this.schedule(
        delay,
        to,
        () => {
          if (this.isCut(from, to)) {
            this.messagesDropped++;
            if (this.tracing) this.trace(`${from} ✗ ${to} cut in flight: ${what()}`);
            return;
          }
          deliver();
        },
        true,
      );
    }
  }

  /** A one-way message. */
  send(from: string, to: string, body: unknown, describe: () => string): void {
    this.transmit(from, to, describe, () => this.endpoint(to).onMessage(from, structuredClone(body)));
  }

  /**
   * A call: `cb` runs exactly once at the caller (reply, error, timeout or closed
   * connection), unless the caller crashed.
   */
  call(
    from: string,
    to: string,
    body: unknown,
    timeoutMs: number,
    describe: () => string,
    cb: (r: CallResult) => void,
  ): void {
    const id = this.nextCallId++;
    const caller = this.endpoint(from);
    this.pending.set(id, { from, fromInc: caller.inc, to, cb });
    const target = this.endpoints.get(to);
    if (!target?.up) {
      // Nothing listens: the connection is refused at once.
      this.schedule(this.rng.int(1, 3), from, () =>
        this.settle(id, {
          ok: false,
          error: { code: 'CONNECTION_CLOSED', message: `connection to ${to} refused`, retryable: true },
        }),
      );
    } else {
      this.transmit(
        from,
        to,
        describe,
        () => {
          let answered = false;
          this.endpoint(to).onCall(from, structuredClone(body), (r) => {
            if (answered) return;
            answered = true;
            this.transmit(
              to,
              from,
              () => `reply to ${describe()}`,
              () => this.settle(id, structuredClone(r)),
              true,
            );
          });
        },
        true,
      );
    }
    this.schedule(timeoutMs, from, () =>
      this.settle(id, {
        ok: false,
        error: { code: 'TIMEOUT', message: `${to} did not answer within ${timeoutMs} ms`, retryable: true },
      }),
    );
  }

  /** A call to the nameserver (see `nsRouter`). */
  nsCall(from: string, body: unknown, timeoutMs: number, describe: () => string, cb: (r: CallResult) => void): void {
    if (this.nsRouter) this.nsRouter(from, body, timeoutMs, describe, cb);
    else this.call(from, 'ns', body, timeoutMs, describe, cb);
  }

  private settle(id: number, r: CallResult): void {
    const p = this.pending.get(id);
    if (!p) return;
    const caller = this.endpoints.get(p.from);
    if (!caller || caller.inc !== p.fromInc || !caller.up) return;
    this.pending.delete(id);
    p.cb(r);
  }
}

/**
 * One leadership term of an elected nameserver (issue 12), as a pure state machine around
 * the nameserver host: what src/control/elected-nameserver.ts does while it leads, with no
 * I/O, so the simulator can run the same decisions over a simulated election service.
 *
 * - The host's `persist` effects become `save` effects, issued ONE at a time in order (the
 *   driver writes each through the fence and answers `saved(id)`).
 * - S3 (persisted before announced): EVERY reply waits until every save issued before or
 *   by its request has succeeded.
 * - `confirmEpoch`'s "yes" (a primary without secondaries serves a read on it, §7) also waits
 *   for a fenced leadership check (`check` → `checked`): a deposed leader that has not
 *   noticed yet must not confirm an epoch from its old map.
 * - A failed save or check, or the driver's `lose` (the lease is gone), ends the term: every
 *   waiting call is answered NOT_LEADER, and an `over` effect tells the driver to resign and
 *   campaign again. Nothing is issued after that.
 */
import { NotLeaderError } from '../core/errors.js';
import type { PersistedMap } from '../core/nameserver/nameserver.js';
import { assertNever } from '../core/types.js';
import type { NameserverRequest } from '../rpc/messages.js';
import { type NameserverEffect, type NameserverHostOptions, type NameserverReply, NameserverHost } from './host.js';

export type TermEffect =
  | {
      readonly kind: 'log';
      readonly level: 'info' | 'warn' | 'error';
      readonly fields: Record<string, unknown>;
      readonly msg: string;
    }
  /** Write `map` through the fence; answer `saved(id)` or `saved(id, error)`. One at a time. */
  | { readonly kind: 'save'; readonly id: number; readonly map: PersistedMap }
  /** Check through the fence that this term still leads; answer `checked(call[, error])`. */
  | { readonly kind: 'check'; readonly call: number }
  | { readonly kind: 'reply'; readonly call: number; readonly reply: NameserverReply }
  /** The term ended (the waiting calls were answered): resign and campaign again. */
  | { readonly kind: 'over'; readonly reason: string };

interface Waiting {
  readonly call: number;
  /** The last save issued by or before its request (0: none). */
  readonly afterSave: number;
  readonly reply: NameserverReply;
  /** confirmEpoch: answered only after a fenced check. */
  checkAsked: boolean;
  checked: boolean;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class LeaderTerm {
  readonly host: NameserverHost;
  private effects: TermEffect[] = [];
  /** Maps to save, in order, not issued yet. */
  private readonly queue: Array<{ id: number; map: PersistedMap }> = [];
  private inFlight: number | undefined;
  private lastIssued = 0;
  private lastSaved = 0;
  private readonly waiting: Waiting[] = [];
  private ended: string | undefined;

  /** `map`: loaded from the election service after winning; `fresh` when there was none. */
  constructor(map: PersistedMap, fresh: boolean, opts: NameserverHostOptions, nowMs: number, address: string) {
    this.host = new NameserverHost(map, fresh, opts, nowMs);
    this.host.address = address;
    this.run(this.host.takeEffects());
  }

  /** Why the term ended, once it has. */
  get over(): string | undefined {
    return this.ended;
  }

  takeEffects(): TermEffect[] {
    const out = this.effects;
    this.effects = [];
    return out;
  }

  request(call: number, req: NameserverRequest, nowMs: number): void {
    if (this.ended !== undefined) {
      this.effects.push({ kind: 'reply', call, reply: { ok: false, error: this.notLeader(this.ended) } });
      return;
    }
    const { effects, reply } = this.host.onRequest(req, nowMs);
    this.run(effects);
    const confirm = req.t === 'confirmEpoch' && reply.ok;
    this.waiting.push({ call, afterSave: this.lastIssuedOrQueued(), reply, checkAsked: false, checked: !confirm });
    this.release();
  }

  tick(nowMs: number): void {
    if (this.ended === undefined) this.run(this.host.onTick(nowMs));
  }

  saved(id: number, error?: unknown): void {
    if (id > this.lastIssued) return; // not a save of this term
    if (error !== undefined) {
      // Logged even after the term ended (a lost lease): the refused transaction is the proof
      // that a deposed leader wrote nothing.
      const refused = error instanceof NotLeaderError;
      this.log(
        'error',
        { mapVersion: this.host.core.map.version, err: message(error) },
        refused
          ? 'etcd refused the map transaction (fenced: this nameserver no longer leads); nothing was written'
          : 'the map transaction to etcd failed; stepping down (a new leader reloads the map from etcd)',
      );
    }
    if (this.ended !== undefined || id !== this.inFlight) return;
    this.inFlight = undefined;
    if (error !== undefined) {
      this.end(`map transaction failed: ${message(error)}`);
      return;
    }
    this.lastSaved = id;
    this.issueNext();
    this.release();
  }

  checked(call: number, error?: unknown): void {
    if (this.ended !== undefined) return;
    if (error !== undefined) {
      this.log(
        'warn',
        { err: message(error) },
        'the leadership check before a confirmEpoch answer failed; stepping down',
      );
      this.end(`leadership check failed: ${message(error)}`);
      return;
    }
    const w = this.waiting.find((x) => x.call === call);
    if (w) w.checked = true;
    this.release();
  }

  /** The driver learned the leadership is gone (lease lost, resigned). */
  lose(reason: string): void {
    if (this.ended === undefined) this.end(reason);
  }

  private lastIssuedOrQueued(): number {
    return this.queue.at(-1)?.id ?? this.lastIssued;
  }

  private run(effects: readonly NameserverEffect[]): void {
    for (const e of effects) {
      switch (e.kind) {
        case 'persist':
          this.queue.push({ id: this.lastIssuedOrQueued() + 1, map: e.map });
          this.issueNext();
          break;
        case 'log':
          this.effects.push(e);
          break;
        default:
          assertNever(e);
      }
    }
  }

  private issueNext(): void {
    if (this.inFlight !== undefined) return;
    const next = this.queue.shift();
    if (!next) return;
    this.inFlight = next.id;
    this.lastIssued = next.id;
    this.effects.push({ kind: 'save', id: next.id, map: next.map });
  }

  /** Answers every waiting call whose saves succeeded (and, for confirmEpoch, whose check did). */
  private release(): void {
    for (let i = 0; i < this.waiting.length; ) {
      const w = this.waiting[i] as Waiting;
      if (w.afterSave > this.lastSaved) return; // so are the ones after it
      if (!w.checked) {
        if (!w.checkAsked) {
          w.checkAsked = true;
          this.effects.push({ kind: 'check', call: w.call });
        }
        i++;
        continue;
      }
      this.waiting.splice(i, 1);
      this.effects.push({ kind: 'reply', call: w.call, reply: w.reply });
    }
  }

  private end(reason: string): void {
    this.ended = reason;
    this.queue.length = 0;
    this.inFlight = undefined;
    for (const w of this.waiting.splice(0)) {
      this.effects.push({ kind: 'reply', call: w.call, reply: { ok: false, error: this.notLeader(reason) } });
    }
    this.log(
      'warn',
      { reason, mapVersion: this.host.core.map.version },
      'stepping down: no longer the leader of the nameservers; following',
    );
    this.effects.push({ kind: 'over', reason });
  }

  private notLeader(reason: string): NotLeaderError {
    return new NotLeaderError(`this nameserver does not lead (it stepped down: ${reason})`);
  }

  private log(level: 'info' | 'warn' | 'error', fields: Record<string, unknown>, msg: string): void {
    this.effects.push({ kind: 'log', level, fields, msg });
  }
}

/**
 * TTL (DESIGN §16): which keys of each partition expire when, so that a primary can log their
 * deletes. Pure; the host keeps one and feeds it what it applies (every replica does, so a
 * new primary knows its keys at once) and what a scan of the stored data finds after a load
 * or a snapshot install.
 *
 * The index is only a hint of what to look at: the host re-reads a due key and logs its
 * delete only if the stored value still has that version and is past its expiry, and the
 * delete is conditional on that version (a write in between wins). So a stale entry (a scan
 * that raced with a later write) costs one read, never a wrong delete.
 */
import type { LogEntry, PartitionId } from '../core/types.js';

/** A due key: its delete is to be logged if it is still at `version`. */
export interface DueKey {
  readonly key: Uint8Array;
  readonly version: number;
  readonly expiresAt: number;
}

interface Expiring {
  readonly key: Uint8Array;
  readonly version: number;
  readonly expiresAt: number;
}

/** A heap element: look at `name` (if still at `version`) from `atMs` on. */
interface Due {
  readonly atMs: number;
  readonly name: string;
  readonly version: number;
}

/** A due key whose delete did not take (not primary, the delete lost) is looked at again after this. */
export const EXPIRY_RETRY_MS = 1000;

/** A key's bytes as a string (one char per byte): a map key. Pure (no Buffer): the host runs in the simulator too. */
function nameOf(key: Uint8Array): string {
  let s = '';
  for (let i = 0; i < key.length; i++) s += String.fromCharCode(key[i]!);
  return s;
}

class PartitionExpiry {
  readonly keys = new Map<string, Expiring>();
  /** A binary min-heap by `atMs`; elements whose key moved on are dropped when met. */
  private heap: Due[] = [];

  set(key: Uint8Array, version: number, expiresAt: number): void {
    const name = nameOf(key);
    this.keys.set(name, { key, version, expiresAt });
    this.push({ atMs: expiresAt, name, version });
  }

  delete(key: Uint8Array): void {
    this.keys.delete(nameOf(key));
  }

  /** Up to `limit` keys due at `nowMs`; each is looked at again after EXPIRY_RETRY_MS unless it goes. */
  due(nowMs: number, limit: number, out: DueKey[]): void {
    let taken = 0;
    // Bounded: each round pops one element; at most `limit` are put back.
    while (taken < limit && this.heap.length > 0 && this.heap[0]!.atMs <= nowMs) {
      const d = this.pop();
      const e = this.keys.get(d.name);
      if (e === undefined || e.version !== d.version) continue; // moved on since
      out.push(e);
      taken++;
      this.push({ atMs: nowMs + EXPIRY_RETRY_MS, name: d.name, version: d.version });
    }
    if (this.heap.length > 2 * this.keys.size + 1024) this.rebuild();
  }

  private rebuild(): void {
    this.heap = [];
    for (const [name, e] of this.keys) this.push({ atMs: e.expiresAt, name, version: e.version });
  }

  private push(d: Due): void {
    const h = this.heap;
    h.push(d);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (h[parent]!.atMs <= d.atMs) break;
      h[i] = h[parent]!;
      i = parent;
    }
    h[i] = d;
  }

  private pop(): Due {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const c = r < h.length && h[r]!.atMs < h[l]!.atMs ? r : l;
      if (h[c]!.atMs >= last.atMs) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = last;
    return top;
  }
}

export class ExpiryIndex {
  private readonly parts = new Map<PartitionId, PartitionExpiry>();

  private part(p: PartitionId): PartitionExpiry {
    let x = this.parts.get(p);
    if (!x) this.parts.set(p, (x = new PartitionExpiry()));
    return x;
  }

  /** Entries applied to `p`, in order: a put with an expiry is indexed, any other write of a key unindexes it. */
  applied(p: PartitionId, entries: readonly LogEntry[]): void {
    let x = this.parts.get(p);
    for (const e of entries) {
      const op = e.op;
      if (op.kind === 'put' && op.expiresAt !== undefined) (x ??= this.part(p)).set(op.key, e.seq, op.expiresAt);
      else if ((op.kind === 'put' || op.kind === 'delete') && x !== undefined) x.delete(op.key);
    }
  }

  /** What a scan of `p`'s stored data found: values with an expiry. */
  found(p: PartitionId, items: readonly DueKey[]): void {
    const x = this.part(p);
    for (const i of items) {
      const known = x.keys.get(nameOf(i.key));
      if (known === undefined || known.version < i.version) x.set(i.key, i.version, i.expiresAt);
    }
  }

  /** `p`'s key `key` is not at `version` with an expiry any more (a re-read said so). */
  forget(p: PartitionId, key: Uint8Array, version: number): void {
    const x = this.parts.get(p);
    if (x?.keys.get(nameOf(key))?.version === version) x.delete(key);
  }

  drop(p: PartitionId): void {
    this.parts.delete(p);
  }

  clear(): void {
    this.parts.clear();
  }

  /** Up to `limit` keys of `p` due at `nowMs`. */
  due(p: PartitionId, nowMs: number, limit: number): DueKey[] {
    const out: DueKey[] = [];
    this.parts.get(p)?.due(nowMs, limit, out);
    return out;
  }

  /** Keys with an expiry in `p` (for stats and tests). */
  size(p: PartitionId): number {
    return this.parts.get(p)?.keys.size ?? 0;
  }
}

/**
 * Comparing a partition's replicas (DESIGN §9, S16; issue 13), for `dstore check` and the
 * background anti-entropy task of each primary.
 *
 * 1. The primary logs a digest entry; every member computes the digest of its applied state
 *    as it applies that entry, so all of them at the same seq (no moving target).
 * 2. The members' digests are compared. Learners are not compared: they are still catching up.
 * 3. Where they differ, the *odd* replicas are those outside a strict majority of the members
 *    that agree with each other; with no such majority (two members, or three that all
 *    differ) nobody is odd: it is reported, nothing is repaired (S16).
 * 4. A second digest entry lists the entries of the buckets whose digests differ, and the
 *    keys that differ are named (the first `maxKeys`).
 * 5. With `repair`, each odd replica is told to relearn the partition (S13's path: it steps
 *    out, the nameserver removes it and adds it back as a learner, which copies the partition
 *    from the primary, S11). It is never patched in place.
 *
 * The calls go through a `CheckTransport`: the client's (src/client) for `dstore check`, the
 * storage server's own for the background task.
 */
/** A member's digest at a seq (DigestAtReply on the wire; DigestOutcome on the server itself). */
export type DigestAtReply =
  | {
      readonly ok: true;
      readonly seq: number;
      readonly digest: string;
      readonly keys: number;
      readonly buckets: readonly string[];
      readonly detail?: ReadonlyArray<{
        readonly bucket: number;
        readonly entries: ReadonlyArray<{ readonly key: Uint8Array; readonly version: number; readonly hash: string }>;
      }>;
      readonly detailTruncated?: boolean;
    }
  | { readonly ok: false; readonly seq: number; readonly error: string };

export interface CheckTransport {
  /** Has the primary of `p` log a digest entry listing `buckets`; its seq once committed. */
  propose(p: number, buckets: readonly number[]): Promise<number>;
  /** `node`'s digest of `p` at the digest entry `seq`. */
  digestAt(node: string, p: number, seq: number): Promise<DigestAtReply>;
  /** Tells `node` its copy of `p` (digest `digest` at `seq`) is odd: it relearns it. */
  relearn(node: string, p: number, seq: number, digest: string, reason: string): Promise<void>;
}

export interface MemberDigest {
  readonly node: string;
  readonly role: 'primary' | 'secondary';
  readonly digest?: string;
  readonly keys?: number;
  readonly error?: string;
}

export interface DifferingKey {
  readonly key: Uint8Array;
  /** Per member: its version and entry hash of the key, or null when it does not hold it. */
  readonly replicas: Readonly<Record<string, { readonly version: number; readonly hash: string } | null>>;
}

export interface PartitionCheck {
  readonly partition: number;
  readonly epoch: number;
  /** The digest entry compared at (absent when none could be logged). */
  readonly seq?: number;
  readonly members: readonly MemberDigest[];
  /** true: every member answered and all agree; false: some differ; undefined: not known (errors). */
  readonly agree: boolean | undefined;
  /** Members outside the agreeing majority (S16). */
  readonly odd: readonly string[];
  /** The keys that differ (at most `maxKeys`), found at a second digest entry. */
  readonly differing: readonly DifferingKey[];
  /** More keys differ than are listed, or the listing was cut short. */
  readonly differingTruncated: boolean;
  /** Members told to relearn the partition. */
  readonly repaired: readonly string[];
  /** Why the partition could not be checked (entirely or in part). */
  readonly error?: string;
}

export interface PartitionConfigView {
  readonly partition: number;
  readonly epoch: number;
  readonly primary: string;
  readonly secondaries: readonly string[];
}

export interface CheckOptions {
  readonly repair: boolean;
  /** How many differing keys to name (default 20). */
  readonly maxKeys?: number;
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** Checks one partition (file comment). Never throws: a failure is in the result's `error`. */
export async function checkPartition(
  t: CheckTransport,
  config: PartitionConfigView,
  options: CheckOptions,
): Promise<PartitionCheck> {
  const { partition: p, epoch } = config;
  const roles = new Map<string, 'primary' | 'secondary'>([[config.primary, 'primary']]);
  for (const s of config.secondaries) roles.set(s, 'secondary');
  const base = { partition: p, epoch, odd: [], differing: [], differingTruncated: false, repaired: [] };
  let seq: number;
  try {
    seq = await t.propose(p, []);
  } catch (err) {
    return { ...base, members: [], agree: undefined, error: `no digest entry could be logged: ${message(err)}` };
  }
  const replies = await collect(t, [...roles.keys()], p, seq);
  const members: MemberDigest[] = [...roles].map(([node, role]) => {
    const r = replies.get(node)!;
    if (!r.ok) return { node, role, error: r.error };
    return { node, role, digest: r.digest, keys: r.keys };
  });
  const answered = members.filter((m) => m.digest !== undefined);
  const distinct = new Set(answered.map((m) => m.digest));
  const failed = members.filter((m) => m.error !== undefined);
  const error =
    failed.length > 0 ? `no digest from ${failed.map((m) => `${m.node} (${m.error})`).join(', ')}` : undefined;
  if (distinct.size <= 1) {
    const agree = failed.length === 0 ? true : undefined;
    return { ...base, seq, members, agree, ...(error ? { error } : {}) };
  }
  // They differ. The odd ones: outside a strict majority of the members (S16).
  const { odd, topCount } = oddMembers(
    members.length,
    answered.map((m) => ({ node: m.node, digest: m.digest! })),
  );
  const found = await differingKeys(t, p, replies, answered, options.maxKeys ?? 20);
  const repaired: string[] = [];
  const errors = error ? [error] : [];
  if (found.error) errors.push(found.error);
  if (options.repair) {
    for (const node of odd) {
      const digest = replies.get(node) as Extract<DigestAtReply, { ok: true }>;
      const reason = `its digest at seq ${seq} differs from ${topCount} of ${members.length} members'`;
      try {
        await t.relearn(node, p, seq, digest.digest, reason);
        repaired.push(node);
      } catch (err) {
        errors.push(`${node} was not told to relearn: ${message(err)}`);
      }
    }
  }
  return {
    ...base,
    seq,
    members,
    agree: false,
    odd,
    differing: found.keys,
    differingTruncated: found.truncated,
    repaired,
    ...(errors.length > 0 ? { error: errors.join('; ') } : {}),
  };
}

/**
 * S16's decision rule: given the digests of the members that answered (of `memberCount`
 * members in all), the odd ones are those outside a strict majority of all the members that
 * agree with each other; with no such majority, none. (Also what the simulator's anti-entropy
 * applies, test/sim/anti-entropy.ts.)
 */
export function oddMembers(
  memberCount: number,
  answered: ReadonlyArray<{ readonly node: string; readonly digest: string }>,
): { odd: string[]; majority: string | undefined; topCount: number } {
  const counts = new Map<string, number>();
  for (const m of answered) counts.set(m.digest, (counts.get(m.digest) ?? 0) + 1);
  const top = [...counts].sort((a, b) => b[1] - a[1])[0];
  if (top === undefined) return { odd: [], majority: undefined, topCount: 0 };
  const majority = top[1] * 2 > memberCount ? top[0] : undefined;
  const odd = majority === undefined ? [] : answered.filter((m) => m.digest !== majority).map((m) => m.node);
  return { odd, majority, topCount: top[1] };
}

async function collect(
  t: CheckTransport,
  nodes: readonly string[],
  p: number,
  seq: number,
): Promise<Map<string, DigestAtReply>> {
  const out = new Map<string, DigestAtReply>();
  await Promise.all(
    nodes.map(async (node) => {
      try {
        out.set(node, await t.digestAt(node, p, seq));
      } catch (err) {
        out.set(node, { ok: false, seq, error: message(err) });
      }
    }),
  );
  return out;
}

/** Names the keys that differ, from a second digest entry listing the buckets that differ. */
async function differingKeys(
  t: CheckTransport,
  p: number,
  first: ReadonlyMap<string, DigestAtReply>,
  answered: readonly MemberDigest[],
  maxKeys: number,
): Promise<{ keys: DifferingKey[]; truncated: boolean; error?: string }> {
  const ok = answered.map((m) => first.get(m.node) as Extract<DigestAtReply, { ok: true }>);
  const buckets = new Set<number>();
  for (let b = 0; b < ok[0]!.buckets.length; b++) {
    if (ok.some((r) => r.buckets[b] !== ok[0]!.buckets[b])) buckets.add(b);
  }
  if (buckets.size === 0) return { keys: [], truncated: false }; // only the dedup tables differ
  let seq: number;
  try {
    seq = await t.propose(
      p,
      [...buckets].sort((a, b) => a - b),
    );
  } catch (err) {
    return { keys: [], truncated: false, error: `the differing keys could not be listed: ${message(err)}` };
  }
  const second = await collect(
    t,
    answered.map((m) => m.node),
    p,
    seq,
  );
  // key (hex) → per node {version, hash}
  const table = new Map<string, { key: Uint8Array; per: Map<string, { version: number; hash: string }> }>();
  let truncated = false;
  const nodes: string[] = [];
  for (const [node, r] of second) {
    if (!r.ok) continue;
    nodes.push(node);
    if (r.detailTruncated) truncated = true;
    for (const b of r.detail ?? []) {
      for (const e of b.entries) {
        const k = Buffer.from(e.key).toString('hex');
        const row = table.get(k) ?? { key: e.key, per: new Map() };
        row.per.set(node, { version: e.version, hash: e.hash });
        table.set(k, row);
      }
    }
  }
  const keys: DifferingKey[] = [];
  for (const [, row] of [...table].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    const hashes = new Set(nodes.map((n) => row.per.get(n)?.hash ?? null));
    if (hashes.size <= 1) continue;
    if (keys.length >= maxKeys) {
      truncated = true;
      break;
    }
    keys.push({ key: row.key, replicas: Object.fromEntries(nodes.map((n) => [n, row.per.get(n) ?? null])) });
  }
  return { keys, truncated };
}

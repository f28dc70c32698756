/**
 * One leadership term (src/nameserver/term.ts), pure: saves go out one at a time in order;
 * a reply waits for every save issued before or by its request (S3); a confirmEpoch "yes"
 * also waits for a fenced leadership check; a failed save or check, or a lost lease, ends the
 * term — waiting calls are refused with NOT_LEADER and nothing is issued after.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { NotLeaderError } from '../../src/core/errors.js';
import { Nameserver } from '../../src/core/nameserver/nameserver.js';
import { type TermEffect, LeaderTerm } from '../../src/nameserver/term.js';
import type { NameserverRequest } from '../../src/rpc/messages.js';

const settings = { partitions: 2, replicas: 1, minWriteReplicas: 1, initialNodes: 1 };
const opts = { settings, deadAfterMs: 5000, rereplicateAfterMs: 30_000 };

const register = (nodeId: string): NameserverRequest => ({
  t: 'register',
  nodeId,
  address: `127.0.0.1:${nodeId === 's1' ? 7101 : 7102}`,
  backend: 'memory',
  incarnation: `${nodeId}-1`,
  durable: true,
});

const kinds = (effects: readonly TermEffect[]): string[] =>
  effects.filter((e) => e.kind !== 'log').map((e) => (e.kind === 'reply' ? `reply ${e.call}` : e.kind));
const saveOf = (effects: readonly TermEffect[]) =>
  effects.find((e): e is Extract<TermEffect, { kind: 'save' }> => e.kind === 'save');

/** A new term on a new cluster, its first save (the new map) acknowledged. */
function newTerm(): LeaderTerm {
  const term = new LeaderTerm(Nameserver.newMap('c1', settings), true, opts, 1_000, '127.0.0.1:7000');
  const first = saveOf(term.takeEffects());
  assert.ok(first, 'the new map is saved first, through the fence');
  term.saved(first.id);
  assert.deepEqual(kinds(term.takeEffects()), []);
  return term;
}

/** Acknowledges every save until none is outstanding. */
function settle(term: LeaderTerm): void {
  for (let round = 0; round < 10; round++) {
    const save = saveOf(term.takeEffects());
    if (!save) return;
    term.saved(save.id);
  }
  assert.fail('saves did not settle');
}

describe('a leadership term', () => {
  test('a reply that depends on a save waits for it; saves go one at a time, in order', () => {
    const term = newTerm();
    term.request(1, register('s1'), 2_000); // forms the cluster: maps to save
    term.request(2, { t: 'map' }, 2_001); // announces the map: waits for the same saves
    let effects = term.takeEffects();
    const replies: string[] = [];
    const versions: number[] = [];
    for (let round = 0; round < 10; round++) {
      const saves = effects.filter((e) => e.kind === 'save');
      replies.push(...kinds(effects).filter((k) => k.startsWith('reply')));
      assert.ok(saves.length <= 1, 'one save at a time');
      const save = saveOf(effects);
      if (!save) break;
      assert.deepEqual(replies, [], `no reply while save ${save.id} is outstanding`);
      versions.push(save.map.version);
      term.saved(save.id);
      effects = term.takeEffects();
    }
    assert.ok(versions.length >= 1, 'the registration saved the map');
    assert.deepEqual(
      versions,
      [...versions].sort((a, b) => a - b),
      'saves in map-version order',
    );
    assert.deepEqual(replies.sort(), ['reply 1', 'reply 2'], 'both answered once every save succeeded');
  });

  test('a refused save ends the term: waiting calls get NOT_LEADER, nothing more is saved', () => {
    const term = newTerm();
    term.request(1, register('s1'), 2_000);
    const save = saveOf(term.takeEffects());
    assert.ok(save);
    term.request(2, { t: 'nodes' }, 2_001);
    term.saved(save.id, new NotLeaderError('etcd refused the map transaction'));
    const effects = term.takeEffects();
    assert.deepEqual(kinds(effects), ['reply 1', 'reply 2', 'over']);
    for (const e of effects) if (e.kind === 'reply') assert.ok(!e.reply.ok && e.reply.error instanceof NotLeaderError);
    assert.ok(
      effects.some((e) => e.kind === 'log' && /etcd refused the map transaction/.test(e.msg)),
      'the refusal is logged',
    );
    assert.match(term.over ?? '', /map transaction failed/);
    term.request(3, register('s2'), 2_002);
    term.tick(3_000);
    const after = term.takeEffects();
    assert.deepEqual(kinds(after), ['reply 3'], 'refused at once, no save, no tick work');
  });

  test('confirmEpoch is answered only after a fenced leadership check; a failed one ends the term', () => {
    const term = newTerm();
    term.request(1, register('s1'), 2_000);
    settle(term);
    const confirm: NameserverRequest = { t: 'confirmEpoch', p: 0, epoch: 1 } as unknown as NameserverRequest;
    term.request(2, confirm, 2_100);
    const e = term.takeEffects();
    const answered = e.find((x) => x.kind === 'reply' && x.call === 2);
    if (answered && answered.kind === 'reply' && !answered.reply.ok) return; // refused by the host: nothing to confirm
    assert.deepEqual(kinds(e), ['check'], 'a check before the answer');
    term.checked(2);
    assert.deepEqual(kinds(term.takeEffects()), ['reply 2']);
    term.request(3, confirm, 2_200);
    assert.deepEqual(kinds(term.takeEffects()), ['check']);
    term.checked(3, new NotLeaderError('etcd refused the leadership check'));
    const end = term.takeEffects();
    assert.deepEqual(kinds(end), ['reply 3', 'over']);
    const r = end.find((x) => x.kind === 'reply');
    assert.ok(r?.kind === 'reply' && !r.reply.ok && r.reply.error instanceof NotLeaderError);
  });

  test('a lost lease ends the term once', () => {
    const term = newTerm();
    term.request(1, register('s1'), 2_000);
    term.takeEffects();
    term.lose('lease lost');
    assert.deepEqual(kinds(term.takeEffects()), ['reply 1', 'over']);
    term.lose('again');
    assert.deepEqual(kinds(term.takeEffects()), []);
  });
});

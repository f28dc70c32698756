/**
 * Election mode of the simulator (issue 12): the simulated etcd (leases on the simulated clock,
 * the fence), a sweep of seeds with nameserver candidates elected through it, the planted
 * `unfenced-save` bug caught, and the seeds outside election mode replaying as before.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Nameserver } from '../../src/core/nameserver/nameserver.js';
import { type RunResult, electionChosen, runSeed } from './run.js';
import { type EtcdReply, type EtcdRequest, SimEtcd } from './sim-etcd.js';
import { type CallResult, type Endpoint, type SimEvent, World } from './world.js';

class Caller implements Endpoint {
  up = true;
  paused = false;
  inc = 1;
  held: SimEvent[] = [];
  constructor(readonly id: string) {}
  onCall(): void {}
  onMessage(): void {}
}

function setup(unfenced = false) {
  const world = new World(7);
  const stored: Array<{ by: string; rev: number; current: number | undefined; version: number }> = [];
  const etcd = new SimEtcd(
    world,
    { onMapStored: (by, rev, current, version) => stored.push({ by, rev, current, version }) },
    unfenced,
  );
  world.add(etcd);
  world.add(new Caller('a'));
  world.add(new Caller('b'));
  /** One call to etcd, run to its answer. */
  const call = (from: string, req: EtcdRequest): CallResult => {
    let out: CallResult | undefined;
    world.call(
      from,
      'etcd',
      req,
      1000,
      () => req.t,
      (r) => {
        out = r;
      },
    );
    world.run(world.now + 2000, 10_000, () => out !== undefined);
    assert.ok(out, `no answer to ${req.t}`);
    return out;
  };
  const campaign = (from: string) => {
    const r = call(from, { t: 'campaign', info: { nodeId: from, address: from, sinceMs: world.now }, ttlMs: 500 });
    assert.ok(r.ok);
    return r.value as EtcdReply & { t: 'campaign' };
  };
  const map = (version: number) => ({
    ...Nameserver.newMap('t', { partitions: 1, replicas: 1, minWriteReplicas: 1, initialNodes: 1 }),
    version,
  });
  return { world, etcd, stored, call, campaign, map };
}

describe('the simulated etcd', () => {
  test('one campaign wins; the leader key expires with its lease unless kept alive', () => {
    const { world, etcd, campaign, call } = setup();
    const a = campaign('a');
    assert.equal(a.won, true);
    assert.equal(campaign('b').won, false, 'the key is held');
    // Kept alive past its TTL.
    for (let i = 0; i < 5; i++) {
      world.run(world.now + 200, 10_000);
      assert.ok(a.won);
      const k = call('a', { t: 'keepalive', lease: a.lease });
      assert.deepEqual(k.ok && k.value, { t: 'keepalive', alive: true });
    }
    assert.equal(campaign('b').won, false, 'still held after 1000 ms of keepalives');
    // No keepalive for a TTL: the lease and the key are gone.
    world.run(world.now + 600, 10_000);
    const b = campaign('b');
    assert.equal(b.won, true, 'the key expired with its lease');
    assert.ok(a.won && b.won && b.rev > a.rev, 'a new leadership has a higher create revision');
    const k = call('a', { t: 'keepalive', lease: a.lease });
    assert.deepEqual(k.ok && k.value, { t: 'keepalive', alive: false });
    assert.equal(etcd.stats.leasesExpired, 1);
  });

  test('a save or check under a leadership that is not current is refused with NOT_LEADER naming the leader', () => {
    const { world, etcd, stored, call, campaign, map } = setup();
    const a = campaign('a');
    assert.ok(a.won);
    assert.ok(call('a', { t: 'save', rev: a.rev, map: map(1), by: 'a' }).ok);
    world.run(world.now + 600, 10_000); // a's lease expires
    const b = campaign('b');
    assert.ok(b.won);
    const late = call('a', { t: 'save', rev: a.rev, map: map(0), by: 'a' });
    assert.equal(late.ok, false);
    assert.ok(!late.ok && late.error.code === 'NOT_LEADER' && late.error.leader === 'b', JSON.stringify(late));
    const check = call('a', { t: 'check', rev: a.rev, by: 'a' });
    assert.ok(!check.ok && check.error.code === 'NOT_LEADER');
    assert.ok(call('b', { t: 'check', rev: b.rev, by: 'b' }).ok);
    assert.equal(etcd.storedMap?.version, 1, 'the refused save wrote nothing');
    assert.deepEqual(
      stored.map((s) => s.by),
      ['a'],
    );
  });

  test('without quorum nothing answers; the heal grants every lease its TTL again', () => {
    const { world, etcd, call, campaign } = setup();
    const a = campaign('a');
    assert.ok(a.won);
    etcd.setAvailable(false);
    const r = call('b', { t: 'leader' });
    assert.ok(!r.ok && r.error.code === 'TIMEOUT', 'an etcd without quorum does not answer');
    world.run(world.now + 2000, 10_000);
    etcd.setAvailable(true);
    assert.equal(campaign('b').won, false, "a's lease lives one more TTL after the heal");
    world.run(world.now + 600, 10_000);
    assert.equal(campaign('b').won, true);
  });

  test('the planted unfenced-save stores a deposed leader’s map', () => {
    const { world, stored, call, campaign, map } = setup(true);
    const a = campaign('a');
    world.run(world.now + 600, 10_000);
    const b = campaign('b');
    assert.ok(a.won && b.won);
    assert.ok(call('a', { t: 'save', rev: a.rev, map: map(3), by: 'a' }).ok);
    assert.deepEqual(stored.at(-1), { by: 'a', rev: a.rev, current: b.rev, version: 3 });
  });
});

function explain(r: RunResult): string {
  return r.violations
    .map(
      (v) =>
        `seed ${r.seed}: ${v.kind} at ${v.atMs} ms — replay: npm run sim -- --seed ${r.seed} --election on\n${v.message}`,
    )
    .join('\n\n');
}

describe('election mode', () => {
  test('100 seeds with elected nameservers: no violation, and leader changes during reconfigurations', () => {
    let during = 0;
    let elections = 0;
    for (let seed = 1; seed <= 100; seed++) {
      const r = runSeed(seed, { election: 'on', checkBudgetMs: 5000 });
      if (r.violations.length > 0) assert.fail(explain(r));
      assert.notEqual(
        r.linearizability?.verdict,
        'unknown',
        `seed ${seed}: the linearizability check ran out of budget`,
      );
      assert.ok(r.knobs.election, `seed ${seed} ran in election mode`);
      elections += r.stats.elections ?? 0;
      if ((r.stats.leaderChangesDuringReconfiguration ?? 0) > 0) during++;
    }
    assert.ok(elections > 200, `${elections} elections in 100 seeds`);
    assert.ok(during >= 20, `only ${during} of 100 seeds changed leader during a reconfiguration`);
  });

  test('the planted unfenced-save (a deposed leader’s save accepted) is caught', () => {
    const kinds = ['unfenced-save', 'two-savers', 'map-version-regressed', 'epoch-regressed'];
    let caught: number | undefined;
    for (let seed = 1; seed <= 100 && caught === undefined; seed++) {
      const r = runSeed(seed, { election: 'on', mutation: 'unfenced-save' });
      if (r.violations.some((v) => kinds.includes(v.kind))) caught = seed;
    }
    assert.notEqual(caught, undefined, 'no seed in 1..100 caught unfenced-save');
  });

  test('mixed mode: one seed in three; the others run exactly as with election off (the default)', () => {
    const chosen = Array.from({ length: 300 }, (_, i) => electionChosen(i + 1)).filter(Boolean).length;
    assert.ok(chosen > 70 && chosen < 130, `${chosen} of 300 seeds in election mode`);
    let compared = 0;
    for (let seed = 1; compared < 3; seed++) {
      if (electionChosen(seed)) continue;
      const off: string[] = [];
      const mixed: string[] = [];
      runSeed(seed, { election: 'off', trace: (l) => off.push(l) });
      const r = runSeed(seed, { election: 'mixed', trace: (l) => mixed.push(l) });
      assert.equal(r.knobs.election, undefined);
      assert.deepEqual(mixed, off, `seed ${seed}`);
      compared++;
    }
  });
});

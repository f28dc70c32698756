/**
 * `npm run sim -- [options]`: deterministic simulation of the dstore core (issue 5).
 *
 *   --runs N         run seeds start .. start+N-1 (default 100) and print a summary
 *   --start S        first seed of --runs (default 1)
 *   --seed S         replay one seed exactly, with a readable trace of every event
 *   --no-trace       with --seed: only the knobs, the violations and the summary
 *   --history FILE   with --seed: write the client history as JSON lines
 *   --jobs J         with --runs: J worker threads (default 1)
 *   --budget-ms MS   per-key time budget of the linearizability check (default 10000)
 *   --set PATH=VALUE override a knob after the seed chose it (repeatable), e.g.
 *                    --set settings.minWriteReplicas=1 --set net.dropP=0.3 --set faultMs=60000
 *   --strict         also fail when a linearizability check was inconclusive
 *   --mutate NAME    plant a deliberate bug (ack-before-durable, lying-fsync,
 *                    unconfirmed-reads, server-delete-replies, ack-failed-batch,
 *                    forget-unapplied, unfenced-save, repair-disabled, txn-reads-ignore-intents)
 *                    to see the simulator catch it
 *   --corrupt        the silent corruption fault (a replica's stored state changes without a
 *                    log entry) and anti-entropy (issue 13): shorthand for
 *                    --set faultWeights.corrupt=2 --set antiEntropyEveryMs=1000
 *   --cas            clients also compare-and-set (issue 14): a put with ifVersion the last
 *                    version the client saw of the key; shorthand for --set client.weights.cas=3
 *   --bank           the bank workload (issue 14, bank.ts): the clients run transactions —
 *                    transfers between 5 accounts and audits of all of them — abandoning some
 *                    mid-commit; shorthand for --set bankAccounts=5
 *   --rebalance      rebalancing under faults (issue 15): 2 spare storage servers join mid-run,
 *                    graceful stops (leave), drains and undrains through the nameserver among the
 *                    faults; after the heal the spread and the drains are checked; shorthand for
 *                    --set spareNodes=2 --set faultWeights.join=2 --set faultWeights.leave=2
 *                    --set faultWeights.drain=1 --set faultWeights.undrain=1
 *                    --set rebalanceChecks=true --set convergeLimitMs=120000
 *   --election MODE  on: every seed runs nameserver candidates elected through a simulated
 *                    etcd (issue 12); off: every seed runs the one nameserver; mixed: one seed
 *                    in three, chosen from the seed (the others run exactly as with off).
 *                    Default: mixed with --runs, off with --seed (a failing election-mode seed's
 *                    replay line says --election on)
 *
 * Exit code 1 when any run found a violation (or a check was inconclusive with --strict).
 */
import { writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { formatHistoryLine } from '../../src/check/linearizability.js';
import { describeKnobs, type ElectionMode, REBALANCE_SET, type RunResult, runSeed } from './run.js';
import { MUTATIONS, type Mutation } from './storage-node.js';

/** `--corrupt`: the silent corruption fault's weight, and how often anti-entropy checks every partition. */
export const CORRUPT_WEIGHT = 2;
export const ANTI_ENTROPY_EVERY_MS = 1000;
/** `--cas`: the weight of compare-and-set puts in the clients' mix (put and get weigh 4). */
export const CAS_WEIGHT = 3;
/** `--bank`: how many accounts the bank workload's transactions move money between. */
export const BANK_ACCOUNTS = 5;

interface Args {
  runs: number;
  start: number;
  seed?: number;
  trace: boolean;
  history?: string;
  jobs: number;
  budgetMs: number;
  strict: boolean;
  set: string[];
  mutation?: Mutation;
  election: ElectionMode | undefined;
}

function parseArgs(argv: readonly string[]): Args {
  const a: Args = {
    runs: 100,
    start: 1,
    trace: true,
    jobs: 1,
    budgetMs: 10_000,
    strict: false,
    set: [],
    election: undefined,
  };
  const num = (i: number, name: string): number => {
    const v = Number(argv[i + 1]);
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${name} needs a non-negative integer, got ${argv[i + 1]}`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    switch (argv[i]) {
      case '--runs':
        a.runs = num(i++, '--runs');
        break;
      case '--start':
        a.start = num(i++, '--start');
        break;
      case '--seed':
        a.seed = num(i++, '--seed');
        break;
      case '--no-trace':
        a.trace = false;
        break;
      case '--history':
        a.history = argv[++i];
        break;
      case '--jobs':
        a.jobs = Math.max(1, Math.min(num(i++, '--jobs'), availableParallelism()));
        break;
      case '--budget-ms':
        a.budgetMs = num(i++, '--budget-ms');
        break;
      case '--set':
        a.set.push(argv[++i] ?? '');
        break;
      case '--mutate': {
        const m = argv[++i] as Mutation;
        if (!MUTATIONS.includes(m)) throw new Error(`--mutate: one of ${MUTATIONS.join(', ')}`);
        a.mutation = m;
        break;
      }
      case '--corrupt':
        // Shorthand for the knobs (so a failing seed's replay line carries them as --set).
        a.set.push(`faultWeights.corrupt=${CORRUPT_WEIGHT}`, `antiEntropyEveryMs=${ANTI_ENTROPY_EVERY_MS}`);
        break;
      case '--bank':
        a.set.push(`bankAccounts=${BANK_ACCOUNTS}`);
        break;
      case '--rebalance':
        a.set.push(...REBALANCE_SET);
        break;
      case '--cas':
        a.set.push(`client.weights.cas=${CAS_WEIGHT}`);
        break;
      case '--strict':
        a.strict = true;
        break;
      case '--election': {
        const m = argv[++i];
        if (m !== 'on' && m !== 'off' && m !== 'mixed') throw new Error('--election: one of on, off, mixed');
        a.election = m;
        break;
      }
      case '--help':
      case '-h':
        console.log(HELP);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${argv[i]} (try --help)`);
    }
  }
  return a;
}

const HELP = `usage: npm run sim -- [--runs N] [--start S] [--jobs J] | --seed S [--no-trace] [--history FILE]
       common: [--set PATH=VALUE]... [--budget-ms MS] [--strict] [--mutate NAME] [--election on|off|mixed]`;

/** What a worker sends back per seed: small, no history. */
interface Summary {
  readonly seed: number;
  readonly violations: ReadonlyArray<{ kind: string; atMs: number; message: string }>;
  readonly verdict: string;
  readonly stats: Record<string, number>;
  readonly simulatedMs: number;
  readonly wallMs: number;
}

function summarize(r: RunResult): Summary {
  return {
    seed: r.seed,
    violations: r.violations,
    verdict: r.linearizability?.verdict ?? 'not checked',
    stats: r.stats,
    simulatedMs: r.simulatedMs,
    wallMs: r.wallMs,
  };
}

function replay(a: Args): number {
  const seed = a.seed!;
  const r = runSeed(seed, {
    trace: a.trace ? (l) => console.log(l) : undefined,
    checkBudgetMs: a.budgetMs,
    set: a.set,
    mutation: a.mutation,
    election: a.election ?? 'off',
  });
  console.log('');
  console.log(describeKnobs(seed, r.knobs));
  console.log('');
  if (a.history) {
    writeFileSync(a.history, `${r.history.map(formatHistoryLine).join('\n')}\n`);
    console.log(`history: ${r.history.length} operations written to ${a.history}`);
  }
  printRun(summarize(r));
  for (const v of r.violations) {
    console.log(`\nVIOLATION ${v.kind} at ${v.atMs} ms:\n${v.message}`);
  }
  return r.violations.length > 0 || (a.strict && r.linearizability?.verdict === 'unknown') ? 1 : 0;
}

function printRun(s: Summary): void {
  const st = s.stats;
  console.log(
    `seed ${s.seed}: ` +
      `${s.violations.length === 0 ? 'ok' : `VIOLATION (${s.violations.map((v) => v.kind).join(', ')})`}; ` +
      `linearizability ${s.verdict}; ` +
      `ops ok ${st['ops.ok'] ?? 0} / unknown ${st['ops.unknown'] ?? 0} / fail ${st['ops.fail'] ?? 0}; crashes ` +
      `${st.crashes ?? 0}; reconfigurations ${st.reconfigurations ?? 0}; ` +
      `converged in ${st.convergeMs ?? '?'} ms; ${s.simulatedMs} ms simulated in ${s.wallMs} ms (${st.events} events)` +
      (st['bank.transfer.ok'] === undefined && st['bank.audit.ok'] === undefined
        ? ''
        : `; bank: ${st['bank.transfer.ok'] ?? 0} transfers committed, ${st['bank.transfer.abandoned'] ?? 0} ` +
          `abandoned, ${st['bank.audit.ok'] ?? 0} audits`),
  );
}

async function soak(a: Args): Promise<number> {
  const started = Date.now();
  const election = a.election ?? 'mixed';
  console.log(
    `dstore simulation: seeds ${a.start}..${a.start + a.runs - 1}, ${a.jobs} ` +
      `job(s)${a.set.length ? `, --set ${a.set.join(' ')}` : ''}${a.mutation ? `, MUTATION ${a.mutation}` : ''}` +
      `, election ${election}`,
  );
  const results: Summary[] = [];
  const onResult = (s: Summary) => {
    results.push(s);
    if (s.violations.length > 0) {
      const replayArgs =
        `--seed ${s.seed}${a.set.map((x) => ` --set ${x}`).join('')}` +
        `${a.mutation ? ` --mutate ${a.mutation}` : ''}${s.stats.elections !== undefined ? ' --election on' : ''}`;
      console.log(
        `seed ${s.seed}: VIOLATION ${s.violations.map((v) => v.kind).join(', ')} — ` +
          `replay: npm run sim -- ${replayArgs}`,
      );
      // Known liveness bugs (docs/consistency.md) get one line; anything else in full.
      for (const v of s.violations)
        if (!v.kind.startsWith('liveness:'))
          console.log(`  ${v.kind}: ${v.message.split('\n').slice(0, 40).join('\n    ')}`);
    }
    if (s.verdict === 'unknown')
      console.log(
        `seed ${s.seed}: linearizability check inconclusive (over its budget) — replay: ` +
          `npm run sim -- --seed ${s.seed}`,
      );
    if (results.length % 100 === 0)
      console.log(
        `… ${results.length}/${a.runs} runs, ${results.filter((r) => r.violations.length > 0).length} failing, ` +
          `${Math.round((Date.now() - started) / 1000)} s`,
      );
  };
  if (a.jobs <= 1) {
    for (let i = 0; i < a.runs; i++)
      onResult(
        summarize(runSeed(a.start + i, { checkBudgetMs: a.budgetMs, set: a.set, mutation: a.mutation, election })),
      );
  } else {
    await new Promise<void>((resolve, reject) => {
      let next = 0;
      let running = 0;
      const spawn = () => {
        if (next >= a.runs) {
          if (running === 0) resolve();
          return;
        }
        const seeds: number[] = [];
        const chunk = Math.min(20, a.runs - next);
        for (let i = 0; i < chunk; i++) seeds.push(a.start + next++);
        running++;
        const w = new Worker(new URL(import.meta.url), {
          workerData: { seeds, budgetMs: a.budgetMs, set: a.set, mutation: a.mutation, election },
        });
        w.on('message', (s: Summary) => onResult(s));
        w.on('error', reject);
        w.on('exit', () => {
          running--;
          spawn();
        });
      };
      for (let j = 0; j < a.jobs; j++) spawn();
    });
  }
  const failing = results.filter((r) => r.violations.length > 0).sort((x, y) => x.seed - y.seed);
  const unknown = results.filter((r) => r.verdict === 'unknown');
  const byKind = new Map<string, number>();
  for (const r of failing) for (const v of r.violations) byKind.set(v.kind, (byKind.get(v.kind) ?? 0) + 1);
  const sum = (k: string) => results.reduce((n, r) => n + (r.stats[k] ?? 0), 0);
  const simulatedS = results.reduce((n, r) => n + r.simulatedMs, 0) / 1000;
  console.log('');
  console.log(
    `runs: ${results.length} in ${((Date.now() - started) / 1000).toFixed(1)} s wall, ` +
      `${(simulatedS / 3600).toFixed(2)} h simulated`,
  );
  console.log(
    `operations: ${sum('ops.ok')} ok, ${sum('ops.unknown')} unknown, ${sum('ops.fail')} failed; ${sum('crashes')} ` +
      `crashes, ${sum('reconfigurations')} reconfigurations, ${sum('fault.pause')} pauses, ` +
      `${sum('fault.isolate') + sum('fault.split')} network partitions, ${sum('fault.nsCrash')} nameserver crashes`,
  );
  const electionRuns = results.filter((r) => r.stats.elections !== undefined).length;
  if (electionRuns > 0)
    console.log(
      `election mode: ${electionRuns} runs, ${sum('elections')} elections, ${sum('fault.nsCrash')} candidate ` +
        `crashes, ${sum('fault.nsPause')} candidate pauses, ${sum('fault.etcdDown')} etcd outages, ` +
        `${sum('fencedRefusals')} fenced transactions refused, ${sum('leasesExpired')} leases expired, ` +
        `${sum('leaderChangesDuringReconfiguration')} leader changes during a reconfiguration`,
    );
  if (sum('fault.join') + sum('fault.leave') + sum('fault.drain') > 0)
    console.log(
      `rebalancing: ${sum('fault.join')} joins, ${sum('fault.leave')} graceful stops (${sum('leave.handedOff')} ` +
        `handed off, ${sum('leave.waitTimedOut')} wait timed out, ${sum('leave.unanswered')} unanswered, ` +
        `${sum('leave.noRequest')} unhealthy), ${sum('fault.drain')} drains (${sum('fault.drainRefused')} refused), ` +
        `${sum('fault.undrain')} undrains, ${sum('undrainAtHeal')} cancelled at the heal; moves while no server ` +
        `was down: ${sum('balance.learner')} learners added, ${sum('balance.shrink')} spare members removed, ` +
        `${sum('balance.handOver')} primaries handed over`,
    );
  if (sum('fault.corrupt') > 0 || sum('antiEntropy.checks') > 0)
    console.log(
      `anti-entropy: ${sum('fault.corrupt')} silent corruptions, ${sum('antiEntropy.checks')} checks, ` +
        `${sum('antiEntropy.differ')} found replicas differing, ${sum('antiEntropy.relearns')} relearns, ` +
        `${sum('unrepairable')} partitions left differing with no majority (S16)`,
    );
  if (sum('bank.transfer.ok') + sum('bank.audit.ok') > 0)
    console.log(
      `bank: transfers ${sum('bank.transfer.ok')} committed, ${sum('bank.transfer.aborted')} aborted, ` +
        `${sum('bank.transfer.unknown')} unknown, ${sum('bank.transfer.fail')} failed, ` +
        `${sum('bank.transfer.abandoned')} abandoned mid-way; audits ${sum('bank.audit.ok')} ok, ` +
        `${sum('bank.audit.aborted')} aborted, ${sum('bank.audit.fail')} failed; final check skipped ` +
        `${sum('bank.finalSkippedBusy') + sum('bank.neverInitialised')}`,
    );
  console.log(
    `linearizability: ${results.length - unknown.length - failing.filter((f) => f.verdict === 'violation').length} ` +
      `ok, ${failing.filter((f) => f.verdict === 'violation').length} violation, ${unknown.length} unknown (budget)`,
  );
  if (failing.length === 0) console.log('violations: none');
  else {
    const other = failing.filter((f) => f.violations.some((v) => !v.kind.startsWith('liveness:')));
    console.log(`violations: ${failing.length} failing seeds (${[...byKind].map(([k, n]) => `${k} ${n}`).join(', ')})`);
    console.log(
      `  of which only known liveness bugs: ${failing.length - other.length}; anything else: ` +
        `${other.length}${other.length ? ` — seeds ${other.map((f) => f.seed).join(' ')}` : ''}`,
    );
    if (failing.length <= 200) console.log(`failing seeds: ${failing.map((f) => f.seed).join(' ')}`);
  }
  return failing.length > 0 || (a.strict && unknown.length > 0) ? 1 : 0;
}

if (isMainThread) {
  let a: Args;
  try {
    a = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error((e as Error).message);
    process.exit(2);
  }
  const code = a.seed !== undefined ? replay(a) : await soak(a);
  process.exitCode = code;
} else {
  const { seeds, budgetMs, set, mutation, election } = workerData as {
    seeds: number[];
    budgetMs: number;
    set: string[];
    mutation?: Mutation;
    election: ElectionMode;
  };
  for (const seed of seeds)
    parentPort!.postMessage(summarize(runSeed(seed, { checkBudgetMs: budgetMs, set, mutation, election })));
}

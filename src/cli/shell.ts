/**
 * The interactive shell of `dstore client` and `dstore up` (the original client's commands,
 * kept): help, insert/put/set, get, delete/del, dump, scan, mget (issue 14), nodes/status,
 * quit/exit/q/x/Ctrl-D/Ctrl-C at an empty prompt.
 *
 * It runs over any input/output streams: on a terminal with a prompt, line editing, history
 * and (unless NO_COLOR) colours; piped, it reads commands line by line, prints only results
 * and ends at EOF. No command's failure ends it: every command runs under a catch that
 * prints `error: …` and goes on. `up` adds its node-control commands through `extraCommands`.
 */
import { createInterface, type Interface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import type { Db, WriteOptions } from '../client/api.js';
import { DstoreError, InvalidArgumentError } from '../core/errors.js';
import {
  colourWanted,
  formatDump,
  formatKey,
  formatNodes,
  formatScan,
  formatValue,
  makeStyle,
  type Style,
} from './format.js';
import { nodesWithFreshKeys } from './nodes-view.js';
import { parseDurationMs } from './options.js';
import { quoteArg, tokenize, type Token } from './tokenize.js';
import { MAX_TTL_MS } from '../core/limits.js';

export interface ShellContext {
  readonly db: Db;
  readonly style: Style;
  /** Prints one or more lines (a newline is added). */
  print(text: string): void;
}

export interface ShellCommand {
  readonly name: string;
  readonly aliases?: readonly string[];
  /** Usage of the arguments, e.g. `<key> <value>`. */
  readonly usage: string;
  readonly minArgs: number;
  readonly maxArgs: number;
  /** One line for `help`. */
  readonly summary: string;
  /** More lines for `help <command>`. */
  readonly details?: string;
  /** Heading `help` lists the command under. */
  readonly group?: string;
  /** Returning 'quit' ends the shell. */
  run(args: readonly Token[], ctx: ShellContext): Promise<void | 'quit'> | void | 'quit';
}

export interface ShellOptions {
  readonly db: Db;
  readonly input: Readable;
  readonly output: Writable;
  /** Prompt, line editing, history and colours; false for piped input. */
  readonly isTTY: boolean;
  readonly extraCommands?: readonly ShellCommand[];
  /** Shown once at the start on a terminal. */
  readonly greeting?: string;
  /** Extra PROCESS column of `nodes` (up: pid, paused, killed…), keyed by node id. */
  readonly processStates?: () => ReadonlyMap<string, string>;
  readonly env?: NodeJS.ProcessEnv;
  /** Lines of history kept for the arrow keys. */
  readonly historySize?: number;
}

export type ShellEnd = 'quit' | 'eof';

/** Keys per storage server `dump` lists unless `--all`. */
export const DUMP_DEFAULT_LIMIT = 100;
/** Keys the shell's `scan` lists unless told. */
export const SCAN_DEFAULT_LIMIT = 100;
/** `dump --all`: the most keys per storage server the dump request accepts. */
export const DUMP_ALL_LIMIT = 100_000_000;

/** The node-control commands of `dstore up`'s shell (up.ts): named as such in any other shell. */
const NODE_CONTROL_COMMANDS: readonly string[] = [
  'kill',
  'stop',
  'pause',
  'resume',
  'restart',
  'start',
  'spawn',
  'procs',
  'ps',
];

const IF_VERSION_HELP =
  '--if-version <n>: compare-and-set, only if the key is at version n (0: only if absent); else CONDITION_FAILED ' +
  'with the current version, and nothing written.';

const TTL_HELP =
  '--ttl <duration>: the key expires that long after the write (500ms, 30s, 5m, 2h, 7d); get then finds ' +
  'nothing, and ttl <key> shows what is left.';

const QUOTE_HINT = 'quote arguments with spaces: insert greeting "hello world"';

export const builtinCommands: readonly ShellCommand[] = [
  {
    name: 'help',
    usage: '[command]',
    minArgs: 0,
    maxArgs: 1,
    summary: 'list the commands, or explain one',
    run: () => undefined, // handled by the shell, which knows every command
  },
  {
    name: 'insert',
    aliases: ['put', 'set'],
    usage: '<key> <value> [--if-version <n>] [--ttl <duration>]',
    minArgs: 2,
    maxArgs: 6,
    summary: 'store value under key; prints the new version',
    details:
      `Keys are 1..1024 bytes, values up to 1 MiB (the storage servers' --max-value-bytes).\nThe write is ` +
      `acknowledged once every replica of the key's partition has it.\n${QUOTE_HINT}; inside double quotes \\n \\t ` +
      `\\" \\\\ \\xHH \\u{1F600} work.\n${IF_VERSION_HELP}\n${TTL_HELP}`,
    async run(args, ctx) {
      const options = writeFlags('insert', args.slice(2));
      const version = await ctx.db.put(arg(args, 0).bytes, arg(args, 1).bytes, options);
      ctx.print(`${ctx.style.green('OK')} (version ${version})`);
    },
  },
  {
    name: 'cas',
    usage: '<key> <version> <value>',
    minArgs: 3,
    maxArgs: 3,
    summary: 'store value under key only if key is at version (0: only if absent)',
    details:
      "Compare-and-set, the same as insert <key> <value> --if-version <version>. The primary of the key's " +
      'partition decides when it orders the write; on a mismatch nothing is written and CONDITION_FAILED ' +
      'names the current version.',
    async run(args, ctx) {
      const options = writeFlags('cas', [{ text: '--if-version', bytes: new Uint8Array() }, arg(args, 1)]);
      const version = await ctx.db.put(arg(args, 0).bytes, arg(args, 2).bytes, options);
      ctx.print(`${ctx.style.green('OK')} (version ${version})`);
    },
  },
  {
    name: 'get',
    usage: '<key>',
    minArgs: 1,
    maxArgs: 1,
    summary: 'print the value and version of key',
    details:
      'Reads are linearizable: the primary confirms it is still primary before answering.\nValues print quoted when ' +
      'they are UTF-8, else as hex.',
    async run(args, ctx) {
      const key = arg(args, 0);
      const got = await ctx.db.get(key.bytes);
      if (got === undefined) ctx.print(ctx.style.yellow(`(not found) no key ${quoteArg(key.text)}`));
      else {
        const ttl = got.ttlMs === undefined ? '' : `, expires in ${formatTtl(got.ttlMs)}`;
        ctx.print(`${formatValue(got.value)} ${ctx.style.dim(`(version ${got.version}${ttl})`)}`);
      }
    },
  },
  {
    name: 'ttl',
    usage: '<key>',
    minArgs: 1,
    maxArgs: 1,
    summary: 'print how long key has left before it expires',
    details: TTL_HELP,
    async run(args, ctx) {
      const key = arg(args, 0);
      const got = await ctx.db.get(key.bytes);
      if (got === undefined) ctx.print(ctx.style.yellow(`(not found) no key ${quoteArg(key.text)}`));
      else if (got.ttlMs === undefined) ctx.print(`${quoteArg(key.text)} does not expire`);
      else ctx.print(`${quoteArg(key.text)} expires in ${formatTtl(got.ttlMs)} (${got.ttlMs} ms)`);
    },
  },
  {
    name: 'delete',
    aliases: ['del'],
    usage: '<key> [--if-version <n>]',
    minArgs: 1,
    maxArgs: 3,
    summary: 'delete key',
    details: IF_VERSION_HELP,
    async run(args, ctx) {
      const key = arg(args, 0);
      const existed = await ctx.db.delete(key.bytes, writeFlags('delete', args.slice(1)));
      ctx.print(
        existed
          ? `${ctx.style.green('OK')} deleted ${quoteArg(key.text)}`
          : ctx.style.yellow(`(not found) no key ${quoteArg(key.text)}; nothing deleted`),
      );
    },
  },
  {
    name: 'dump',
    usage: '[--all]',
    minArgs: 0,
    maxArgs: 1,
    summary: `per storage server: its key count and keys (first ${DUMP_DEFAULT_LIMIT}; --all for every key)`,
    details: 'With R replicas every key shows on R storage servers.',
    async run(args, ctx) {
      const flag = args[0]?.text;
      if (flag !== undefined && flag !== '--all') {
        ctx.print(hint(ctx.style, `unknown option ${quoteArg(flag)}; usage: dump [--all]`));
        return;
      }
      const all = flag === '--all';
      const dumps = await ctx.db.dump({ limit: all ? DUMP_ALL_LIMIT : DUMP_DEFAULT_LIMIT });
      ctx.print(formatDump(dumps, ctx.style, all));
    },
  },
  {
    name: 'scan',
    usage: '[prefix] [limit]',
    minArgs: 0,
    maxArgs: 2,
    summary: `keys in byte order across every partition (those starting with prefix; first ${SCAN_DEFAULT_LIMIT})`,
    details:
      'Each partition is read from its primary. "" as prefix lists every key: scan "" 500.\n' +
      'When more keys remain it says after which key; dstore scan --start-after lists the rest.',
    async run(args, ctx) {
      const prefix = args[0]?.bytes;
      const limitText = args[1]?.text;
      const limit = limitText === undefined ? SCAN_DEFAULT_LIMIT : Number(limitText);
      if (!/^[0-9]+$/.test(limitText ?? '0') || !Number.isSafeInteger(limit) || limit < 1 || limit > 100_000) {
        ctx.print(hint(ctx.style, `limit must be an integer from 1 to 100000, got ${quoteArg(limitText ?? '')}`));
        return;
      }
      const result = await ctx.db.scan({ ...(prefix === undefined ? {} : { prefix }), limit });
      ctx.print(formatScan(result, ctx.style, (next) => `the next key is after ${formatKey(next)}`));
    },
  },
  {
    name: 'mget',
    usage: '<key> [key…]',
    minArgs: 1,
    maxArgs: 1000,
    summary: 'print the value and version of each key (one call per partition, getMany)',
    details: 'Not atomic across partitions: each key is read as get reads it.',
    async run(args, ctx) {
      const got = await ctx.db.getMany(args.map((a) => a.bytes));
      const lines = args.map((a, i) => {
        const g = got[i];
        return g === undefined
          ? `${quoteArg(a.text)}: ${ctx.style.yellow('(not found)')}`
          : `${quoteArg(a.text)}: ${formatValue(g.value)} ${ctx.style.dim(`(version ${g.version})`)}`;
      });
      ctx.print(lines.join('\n'));
    },
  },
  {
    name: 'drain',
    usage: '<node> [--cancel]',
    minArgs: 1,
    maxArgs: 2,
    summary: 'move every replica and primary off a storage server, so it can be stopped (--cancel: stop draining)',
    details:
      'Returns at once; nodes shows what the node still holds. dstore drain waits until it holds nothing.\n' +
      'A drained node gets nothing until drain <node> --cancel.',
    async run(args, ctx) {
      const node = args[0]!.text;
      const flag = args[1]?.text;
      if (flag !== undefined && flag !== '--cancel') {
        ctx.print(hint(ctx.style, `unknown option ${quoteArg(flag)}; usage: drain <node> [--cancel]`));
        return;
      }
      const r = await ctx.db.drain(node, { cancel: flag === '--cancel' });
      ctx.print(
        flag === '--cancel'
          ? `${ctx.style.green('OK')} drain of ${node} cancelled`
          : `${ctx.style.green('OK')} draining ${node}: it holds ${r.held} partition(s) and leads ${r.led}; ` +
              'nodes shows the rest',
      );
    },
  },
  {
    name: 'nodes',
    aliases: ['status'],
    usage: '',
    minArgs: 0,
    maxArgs: 0,
    summary: 'every service: role, address, state, last heartbeat, partitions held/led, keys, backend, uptime',
    run: () => undefined, // handled by the shell (it may add the PROCESS column)
  },
  {
    name: 'quit',
    aliases: ['exit', 'q', 'x'],
    usage: '',
    minArgs: 0,
    maxArgs: 0,
    summary: 'leave the shell (also Ctrl-D, or Ctrl-C at an empty prompt)',
    run: () => 'quit',
  },
];

function arg(args: readonly Token[], i: number): Token {
  const t = args[i];
  if (t === undefined) throw new Error(`argument ${i + 1} is missing`); // arity is checked before run
  return t;
}

/** The flags after a write's positional arguments (§16): `--if-version <n>`, and for insert `--ttl <duration>`. */
function writeFlags(command: string, flags: readonly Token[]): WriteOptions {
  const allowed = command === 'insert' ? '--if-version <n> and --ttl <duration>' : '--if-version <n>';
  const out: { ifVersion?: number; ttlMs?: number } = {};
  for (let i = 0; i < flags.length; i += 2) {
    const flag = flags[i]!.text;
    const value = flags[i + 1];
    const known = flag === '--if-version' || (flag === '--ttl' && command === 'insert');
    if (!known || value === undefined || (flag === '--if-version' ? out.ifVersion : out.ttlMs) !== undefined)
      throw new InvalidArgumentError(
        `${command}: unexpected ${flags
          .slice(i)
          .map((f) => quoteArg(f.text))
          .join(' ')}; the options are ${allowed}`,
      );
    if (flag === '--ttl') {
      const ms = parseDurationMs(value.text, MAX_TTL_MS);
      if (ms === undefined)
        throw new InvalidArgumentError(
          `${command}: --ttl takes a duration such as 500ms, 30s, 5m, 2h or 7d, got ${quoteArg(value.text)}`,
        );
      out.ttlMs = ms;
    } else {
      if (!/^\d{1,16}$/.test(value.text) || !Number.isSafeInteger(Number(value.text)))
        throw new InvalidArgumentError(
          `${command}: --if-version takes a version (an integer >= 0), got ${quoteArg(value.text)}`,
        );
      out.ifVersion = Number(value.text);
    }
  }
  return out;
}

/** A TTL left, for people: `950ms`, `29.8s`, `4m 10s`, `2h 5m`, `3d 4h`. */
export function formatTtl(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86_400)}d ${Math.floor((s % 86_400) / 3600)}h`;
}

function hint(style: Style, text: string): string {
  return style.yellow(text);
}

/** Levenshtein distance, for "did you mean". Both strings are short command names. */
function distance(a: string, b: string): number {
  if (a.length > 32 || b.length > 32) return Math.abs(a.length - b.length) + 32;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost);
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

export function describeError(err: unknown): string {
  if (err instanceof DstoreError) return `${err.message} (${err.code})`;
  if (err instanceof Error) return err.message;
  return String(err);
}

/** The shell: commands, a prompt on terminals, and one catch per command. */
export class Shell {
  private readonly commands: ShellCommand[];
  private readonly byName = new Map<string, ShellCommand>();
  readonly style: Style;
  private rl: Interface | undefined;
  private busy = false;

  constructor(private readonly options: ShellOptions) {
    this.commands = [...builtinCommands, ...(options.extraCommands ?? [])];
    for (const c of this.commands) {
      for (const name of [c.name, ...(c.aliases ?? [])]) {
        if (this.byName.has(name)) throw new Error(`shell command ${name} is defined twice`);
        this.byName.set(name, c);
      }
    }
    this.style = makeStyle(colourWanted(options.isTTY, options.env));
  }

  private get prompt(): string {
    return this.style.enabled ? `${this.style.cyan('dstore')}> ` : 'dstore> ';
  }

  /** Prints lines; on a terminal while waiting for input, redraws the prompt after them. */
  print(text: string): void {
    const { output, isTTY } = this.options;
    if (isTTY && this.rl && !this.busy) {
      output.write(`\r\x1b[K${text}\n`);
      this.rl.prompt(true);
    } else {
      output.write(`${text}\n`);
    }
  }

  /** Runs until quit, Ctrl-D or the end of the input. */
  async run(): Promise<ShellEnd> {
    const { input, output, isTTY } = this.options;
    const rl = createInterface({
      input,
      // Piped: readline must not echo or draw anything; results go to `output` directly.
      output: isTTY ? output : undefined,
      terminal: isTTY,
      historySize: this.options.historySize ?? 1000,
      removeHistoryDuplicates: true,
      prompt: this.prompt,
      completer: (line: string): [string[], string] => this.complete(line),
      crlfDelay: Infinity,
    });
    this.rl = rl;
    // Ctrl-C with typed input clears the line (as in bash); at an empty prompt it leaves the
    // shell, like Ctrl-D (so in `dstore up` it stops the cluster, as the README says).
    rl.on('SIGINT', () => {
      if (rl.line === '') {
        output.write('^C\n');
        rl.close();
        return;
      }
      // Clear what was typed: go to the end of the line, then delete back to its start.
      rl.write(null, { ctrl: true, name: 'e' });
      rl.write(null, { ctrl: true, name: 'u' });
      output.write('^C\n');
      rl.prompt();
    });
    if (isTTY) {
      if (this.options.greeting) output.write(`${this.options.greeting}\n`);
      rl.prompt();
    }
    try {
      for await (const line of rl) {
        this.busy = true;
        let outcome: void | 'quit';
        try {
          outcome = await this.execute(line);
        } finally {
          this.busy = false;
        }
        if (outcome === 'quit') return 'quit';
        if (isTTY) rl.prompt();
      }
      if (isTTY) output.write('\n');
      return 'eof';
    } finally {
      this.rl = undefined;
      rl.close();
    }
  }

  /** Runs one line; never throws. */
  async execute(line: string): Promise<void | 'quit'> {
    const ctx: ShellContext = {
      db: this.options.db,
      style: this.style,
      print: (t) => this.options.output.write(`${t}\n`),
    };
    try {
      const parsed = tokenize(line);
      if (!parsed.ok) {
        ctx.print(hint(this.style, parsed.error)); // the error says what is wrong; no unrelated hint
        return;
      }
      const [first, ...args] = parsed.tokens;
      if (first === undefined) return;
      const name = first.text;
      const command = this.byName.get(name) ?? this.byName.get(name.toLowerCase());
      if (!command) {
        ctx.print(hint(this.style, this.unknownCommand(name)));
        return;
      }
      if (args.length < command.minArgs || args.length > command.maxArgs) {
        const got = `${args.length} ${args.length === 1 ? 'argument' : 'arguments'}`;
        const extra = args.length > command.maxArgs && command.maxArgs >= 1 ? `; ${QUOTE_HINT}` : '';
        ctx.print(hint(this.style, `usage: ${usageLine(command)} (got ${got}${extra})`));
        return;
      }
      if (command.name === 'help') {
        ctx.print(this.help(args[0]?.text));
        return;
      }
      if (command.name === 'nodes') {
        const info = await nodesWithFreshKeys(ctx.db);
        ctx.print(formatNodes(info, this.style, Date.now(), this.options.processStates?.()));
        return;
      }
      return await command.run(args, ctx);
    } catch (err) {
      ctx.print(this.style.red(`error: ${describeError(err)}`));
      return;
    }
  }

  private unknownCommand(name: string): string {
    let best: string | undefined;
    let bestDistance = 3;
    for (const candidate of this.byName.keys()) {
      const d = distance(name.toLowerCase(), candidate);
      if (d < bestDistance) {
        bestDistance = d;
        best = candidate;
      }
    }
    const printable = quoteArg(name);
    if (NODE_CONTROL_COMMANDS.includes(name.toLowerCase())) {
      return (
        `${printable} controls the nodes of a local cluster: only the shell of \`dstore up\` has it (this shell ` +
        `is connected to a cluster it did not start; stop or start its servers where they run)`
      );
    }
    return `unknown command ${printable}${best ? `; did you mean ${best}?` : ''} (type help for the list of commands)`;
  }

  help(topic?: string): string {
    const s = this.style;
    if (topic !== undefined) {
      const c = this.byName.get(topic) ?? this.byName.get(topic.toLowerCase());
      if (!c) return hint(s, this.unknownCommand(topic));
      const lines = [`${s.bold('usage:')} ${usageLine(c)}`, c.summary];
      if (c.aliases?.length) lines.push(`aliases: ${c.aliases.join(', ')}`);
      if (c.details) lines.push(c.details);
      return lines.join('\n');
    }
    const groups = new Map<string, ShellCommand[]>();
    for (const c of this.commands) {
      const g = c.group ?? 'Commands';
      groups.set(g, [...(groups.get(g) ?? []), c]);
    }
    const out: string[] = [];
    for (const [group, commands] of groups) {
      out.push(s.bold(`${group}:`));
      const rows = commands.map((c): [string, string] => [
        `  ${usageLine(c)}`,
        c.summary + (c.aliases?.length ? s.dim(` (aliases: ${c.aliases.join(', ')})`) : ''),
      ]);
      out.push(alignTwo(rows));
    }
    out.push(s.dim(`Arguments: ${QUOTE_HINT}; any UTF-8; \\xHH for raw bytes. help <command> for more.`));
    return out.join('\n');
  }

  private complete(line: string): [string[], string] {
    if (/\s/.test(line)) return [[], line];
    const names = [...this.byName.keys()].filter((n) => n.startsWith(line)).sort();
    return [names, line];
  }
}

function usageLine(c: ShellCommand): string {
  return c.usage ? `${c.name} ${c.usage}` : c.name;
}

function alignTwo(rows: readonly (readonly [string, string])[]): string {
  const w = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([a, b]) => `${a.padEnd(w)}   ${b}`).join('\n');
}

/** Runs a shell over `db` until quit or end of input. */
export function runShell(options: ShellOptions): Promise<ShellEnd> {
  return new Shell(options).run();
}

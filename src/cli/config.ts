/**
 * Where a command's settings come from (issue 4): flags, environment variables and an
 * optional config file (`--config FILE` / DSTORE_CONFIG, JSON or YAML), with one name per
 * setting everywhere:
 *
 *   flag --max-value-bytes  ↔  env DSTORE_MAX_VALUE_BYTES  ↔  file key maxValueBytes
 *
 * A file key is commander's attribute name of the flag: the long flag in camelCase, and for
 * a `--no-x` flag the key `x` set to false (`shell: false` for `--no-shell`). Precedence:
 * flag > environment variable > file > default. Commander applies flags and environment
 * variables; `applyConfigFile` then fills in, from the file, every setting still at its
 * default (source 'config'), running the same parser as the flag on the value's text, so
 * a file value is read and checked exactly as the flag would be (`port: 7000` is "7000").
 * Any problem with the file — unreadable, not JSON or YAML, not a mapping, an unknown key,
 * a value of the wrong type or out of range — is a UsageError: one line, exit code 2.
 *
 * Also the listen address: `--listen` (DSTORE_LISTEN), with `--host` (DSTORE_HOST) kept as
 * its hidden old name.
 */
import { readFileSync } from 'node:fs';
import { type Command, Help, InvalidArgumentError, type Option } from 'commander';
import { parse as parseYaml } from 'yaml';
import { envOption, parseHost, UsageError } from './options.js';

/** Largest config file read, in bytes (a config file is a few lines; anything bigger is a mistake). */
export const MAX_CONFIG_FILE_BYTES = 1024 * 1024;

/** Options that never come from a file. */
const NOT_IN_FILE = new Set(['config', 'help', 'version']);

export const configOption = (): Option =>
  envOption(
    '--config <file>',
    'settings file, JSON or YAML; a key is its flag in camelCase (see below)',
    'DSTORE_CONFIG',
  );

export const listenOption = (): Option =>
  envOption('--listen <host>', 'address to listen on; anything but loopback needs a cluster token', 'DSTORE_LISTEN')
    .argParser(parseHost)
    .default('127.0.0.1');

/** The old name of --listen; hidden from --help, still accepted. */
export const legacyHostOption = (): Option =>
  envOption('--host <host>', 'old name of --listen', 'DSTORE_HOST').argParser(parseHost).hideHelp();

/** The help text every command ends with. */
export const SETTINGS_HELP = `
Settings: a flag wins over its environment variable, which wins over the --config file,
which wins over the default. A file key is the flag's name in camelCase, e.g.
--max-value-bytes ↔ DSTORE_MAX_VALUE_BYTES ↔ maxValueBytes; a --no-x flag is "x: false".`;

/** The key of `option` in a config file, or undefined when it cannot be set from a file. */
export function fileKeyOf(option: Option): string | undefined {
  if (option.hidden || option.long === undefined) return undefined;
  const key = option.attributeName();
  return NOT_IN_FILE.has(key) ? undefined : key;
}

/** Commander's option help with the file key added: `(default: 5000, env: DSTORE_X, config: x)`. */
export function optionDescriptionWithKey(this: Help, option: Option): string {
  const base = Help.prototype.optionDescription.call(this, option);
  const key = fileKeyOf(option);
  if (key === undefined) return base;
  return base.endsWith(')') ? `${base.slice(0, -1)}, config: ${key})` : `${base} (config: ${key})`;
}

function oneLineOf(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return (message.split('\n').find((l) => l.trim() !== '') ?? message).trim();
}

/** Reads and parses a config file: a mapping of keys to values. Throws UsageError. */
export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    const buf = readFileSync(path);
    if (buf.length > MAX_CONFIG_FILE_BYTES) throw new Error(`it is ${buf.length} bytes, over ${MAX_CONFIG_FILE_BYTES}`);
    text = buf.toString('utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EACCES'
          ? 'permission denied'
          : code === 'EISDIR'
            ? 'it is a directory'
            : oneLineOf(err);
    throw new UsageError(`cannot read config file ${path}: ${why}`);
  }
  let parsed: unknown;
  if (/\.json$/i.test(path)) {
    try {
      parsed = JSON.parse(text) as unknown;
    } catch (err) {
      throw new UsageError(`config file ${path} is not valid JSON: ${oneLineOf(err)}`);
    }
  } else {
    try {
      // The failsafe schema keeps every scalar as its text, exactly what the flag would get:
      // `clusterToken: 0123` stays "0123" (the core schema would make it the number 123) and
      // a long all-digit token is not rounded to a float. Duplicate keys are an error.
      parsed = parseYaml(text, { schema: 'failsafe', uniqueKeys: true, prettyErrors: false });
    } catch (err) {
      throw new UsageError(`config file ${path} is not valid YAML: ${oneLineOf(err)}`);
    }
  }
  if (parsed === null || parsed === undefined) return {}; // empty, or only comments
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new UsageError(
      `config file ${path} must be a mapping of settings (key: value), not ` +
        `${Array.isArray(parsed) ? 'a list' : typeof parsed}`,
    );
  }
  return parsed as Record<string, unknown>;
}

/** Why `key` is not a setting of `cmd`, with the likely intended key. */
function unknownKey(path: string, cmd: Command, key: string, keys: ReadonlyMap<string, Option>): UsageError {
  const camel = key.replace(/^--?/, '').replace(/[-_]([a-z0-9])/gi, (_, c: string) => c.toUpperCase());
  const lower = camel.charAt(0).toLowerCase() + camel.slice(1);
  let hint = '';
  if (key === 'host' && keys.has('listen')) hint = ' (--host is now --listen: use the key listen)';
  else if (lower !== key && keys.has(lower)) hint = ` (did you mean ${lower}? keys are flags in camelCase)`;
  else {
    const elsewhere = (cmd.parent?.commands ?? [])
      .filter((c) => c !== cmd && c.options.some((o) => fileKeyOf(o) === key))
      .map((c) => c.name());
    if (elsewhere.length > 0)
      hint = ` (a setting of dstore ${elsewhere.join(', ')}, not of dstore ${cmd.name()}: use one file per role)`;
    else hint = `; the keys of dstore ${cmd.name()} are: ${[...keys.keys()].join(', ')}`;
  }
  return new UsageError(`config file ${path}: unknown key ${JSON.stringify(key)}${hint}`);
}

/** The value `raw` from the file as the option's parser makes it, or a UsageError. */
function fileValue(path: string, key: string, option: Option, raw: unknown): unknown {
  const where = `config file ${path}: ${key}`;
  if (option.required || option.optional) {
    if (typeof raw !== 'string' && !(typeof raw === 'number' && Number.isFinite(raw))) {
      throw new UsageError(`${where}: expected a string or a number, got ${describeType(raw)}`);
    }
    const text = String(raw);
    if (!option.parseArg) return text;
    try {
      return option.parseArg(text, undefined as unknown as string);
    } catch (err) {
      if (err instanceof InvalidArgumentError)
        throw new UsageError(`${where}: ${JSON.stringify(text)} is invalid. ${err.message}`);
      throw err;
    }
  }
  if (typeof raw === 'boolean') return raw;
  if (raw === 'true' || raw === 'false') return raw === 'true'; // YAML text (failsafe schema)
  throw new UsageError(`${where}: expected true or false, got ${describeType(raw)}`);
}

function describeType(raw: unknown): string {
  if (raw === null) return 'null';
  if (Array.isArray(raw)) return 'a list';
  if (typeof raw === 'object') return 'a mapping';
  return `${typeof raw} ${JSON.stringify(raw)}`;
}

/**
 * Fills in `cmd`'s settings from its --config file (when one is given): each key must be a
 * setting of `cmd`; a setting a flag or environment variable already gave keeps that value.
 */
export function applyConfigFile(cmd: Command): void {
  const path = cmd.getOptionValue('config') as string | undefined;
  if (path === undefined || path === '') return;
  const keys = new Map<string, Option>();
  for (const option of cmd.options) {
    const key = fileKeyOf(option);
    if (key !== undefined) keys.set(key, option);
  }
  const settings = readConfigFile(path);
  for (const [key, raw] of Object.entries(settings)) {
    const option = keys.get(key);
    if (!option) throw unknownKey(path, cmd, key, keys);
    const value = fileValue(path, key, option, raw); // checked even when a flag overrides it
    const source = cmd.getOptionValueSource(key);
    if (source === 'cli' || source === 'env') continue;
    cmd.setOptionValueWithSource(key, value, 'config');
  }
}

const ENV_TRUE = new Set(['1', 'true', 'yes', 'on']);
const ENV_FALSE = new Set(['0', 'false', 'no', 'off']);

/** An environment variable's text as a boolean: 1/true/yes/on, 0/false/no/off (any case); else a UsageError. */
export function parseEnvBoolean(name: string, text: string): boolean {
  const t = text.trim().toLowerCase();
  if (ENV_TRUE.has(t)) return true;
  if (ENV_FALSE.has(t)) return false;
  throw new UsageError(
    `environment variable ${name}=${JSON.stringify(text)} is not a boolean: use 1, true, yes ` +
      `or on, or 0, false, no or off`,
  );
}

/**
 * Commander sets a boolean flag whenever its environment variable exists, whatever its value,
 * so DSTORE_NO_SHELL=0 turned the shell off. Here every boolean flag that came from the
 * environment is set from the variable's value instead: a false value means the flag is not
 * given (`--no-x` keeps x true, `--json` stays off). Runs before the config file is applied.
 */
export function applyBooleanEnv(cmd: Command): void {
  for (const option of cmd.options) {
    if (option.required || option.optional || option.envVar === undefined) continue;
    const key = option.attributeName();
    if (cmd.getOptionValueSource(key) !== 'env') continue;
    const text = process.env[option.envVar];
    if (text === undefined) continue;
    const given = parseEnvBoolean(option.envVar, text);
    const value = option.negate ? !given : given;
    cmd.setOptionValueWithSource(key, value, 'env');
  }
}

/** True when the setting came from the user (flag, environment or file), not the default. */
export function isExplicit(cmd: Command, key: string): boolean {
  const source = cmd.getOptionValueSource(key);
  return source === 'cli' || source === 'env' || source === 'config';
}

/**
 * The address to listen on: --listen, else its old name --host, else the default. Both
 * given with different values is an error.
 */
export function listenOf(cmd: Command): string {
  const listen = cmd.getOptionValue('listen') as string;
  const host = cmd.getOptionValue('host') as string | undefined;
  if (host === undefined) return listen;
  if (isExplicit(cmd, 'listen') && host !== listen) {
    throw new UsageError(
      `--host is the old name of --listen; give one of them (got --listen ${listen} and --host ${host})`,
    );
  }
  return host;
}

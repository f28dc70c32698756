/**
 * The `dstore` command line (commander): every subcommand with --help, every flag with an
 * environment variable (shown in --help). Exit codes: 0 success; 1 a failure at run time
 * (`error: <message> (<CODE>)` for the library's typed errors, `get` of an absent key);
 * 2 invalid input (unknown command or flag, bad value, missing argument, an argument that is
 * not UTF-8, a key or value the cluster refuses: KEY_EMPTY, KEY_TOO_LARGE, VALUE_TOO_LARGE,
 * INVALID_ARGUMENT) with one line on stderr. Heavy modules (servers, client) load lazily, so --help works on its own.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError as CommanderInvalidArgument, Option } from 'commander';
import { DstoreError } from '../core/errors.js';
import { BACKUP_EXIT_HELP, RESTORE_EXIT_HELP } from '../backup/help.js';
import { CHAOS_WORKLOADS, type ChaosWorkload } from '../chaos/protocol.js';
import { TXN_DEFAULTS } from '../client/txn-defaults.js';
import { MAX_TTL_MS } from '../core/limits.js';
import { checkArgsUtf8 } from './argv.js';
import { ClusterStartError } from './cluster.js';
import {
  applyBooleanEnv,
  applyConfigFile,
  configOption,
  isExplicit,
  legacyHostOption,
  listenOf,
  listenOption,
  optionDescriptionWithKey,
  SETTINGS_HELP,
} from './config.js';
import { CliExit, type ClientCliOptions } from './commands.js';
import {
  attemptTimeoutOption,
  BACKENDS,
  checkListenAllowed,
  CliFailure,
  clusterTokenOption,
  DEFAULT_NAMESERVER_PORT,
  envOption,
  durationParser,
  intParser,
  logLevelOption,
  MAX_UP_NODES,
  nameserverOption,
  parseHostPort,
  parseNameserverSeeds,
  parseNodeId,
  parsePort,
  parseRatio,
  positiveNumberParser,
  STORAGE_AUTO_PORT_FIRST,
  SYNC_MODES,
  timeoutOption,
  UsageError,
  type BackendName,
  parseStorageBackend,
  type StorageBackend,
  UP_BACKENDS,
  type UpBackendName,
  type SyncMode,
} from './options.js';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** Typed errors that mean the input was bad (exit code 2), not that the cluster failed. */
const BAD_INPUT_CODES: ReadonlySet<string> = new Set([
  'KEY_EMPTY',
  'KEY_TOO_LARGE',
  'VALUE_TOO_LARGE',
  'INVALID_ARGUMENT',
]);

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
      version?: unknown;
    };
    return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  } catch (err) {
    return `unknown (${err instanceof Error ? err.message : String(err)})`;
  }
}

const oneLine = (s: string): string => s.trim().replace(/\s*\n\s*/g, ' ');

/** Errors of commander (bad flags, missing arguments) on one line, with where to look. */
function configure(cmd: Command, helpHint: string): Command {
  return cmd
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(`${oneLine(str)} (see ${helpHint})\n`) })
    .configureHelp({ optionDescription: optionDescriptionWithKey })
    .showSuggestionAfterError(true);
}

const partitionsOption = () =>
  envOption('--partitions <n>', 'partitions of a new cluster (fixed at creation)', 'DSTORE_PARTITIONS')
    .argParser(intParser('an integer', 1, 4096))
    .default(16);
const replicasOption = () =>
  envOption('--replicas <n>', 'replication factor R of a new cluster', 'DSTORE_REPLICAS')
    .argParser(intParser('an integer', 1, 16))
    .default(3);
const minWriteOption = () =>
  envOption(
    '--min-write-replicas <n>',
    'fewest replicas a write must reach; fewer members refuse writes (never more than R)',
    'DSTORE_MIN_WRITE_REPLICAS',
  )
    .argParser(intParser('an integer', 1, 16))
    .default(2);
const initialNodesOption = () =>
  envOption(
    '--initial-nodes <n>',
    'storage servers that must register before the cluster map is created (default: --replicas)',
    'DSTORE_INITIAL_NODES',
  ).argParser(intParser('an integer', 1, 4096));
const heartbeatOption = () =>
  envOption('--heartbeat-ms <ms>', 'heartbeat interval of storage servers', 'DSTORE_HEARTBEAT_MS')
    .argParser(intParser('an integer', 10, 600_000))
    .default(1000);
const deadAfterOption = () =>
  envOption('--dead-after-ms <ms>', 'a storage server silent this long is dead', 'DSTORE_DEAD_AFTER_MS')
    .argParser(intParser('an integer', 50, 3_600_000))
    .default(5000);
const rereplicateAfterOption = () =>
  envOption(
    '--rereplicate-after-ms <ms>',
    'a partition short of R replicas this long gets a learner on another live storage server',
    'DSTORE_REREPLICATE_AFTER_MS',
  )
    .argParser(intParser('an integer', 0, 86_400_000))
    .default(30_000);
const logRetainOption = () =>
  envOption(
    '--log-retain-entries <n>',
    'log entries each partition keeps past the point every replica applied (older ones are truncated)',
    'DSTORE_LOG_RETAIN_ENTRIES',
  )
    .argParser(intParser('an integer', 0, 100_000_000))
    .default(1000);
const antiEntropyOption = () =>
  envOption(
    '--anti-entropy-ms <ms>',
    "every this many ms, check each partition this server leads against its replicas' digests (S16; 0: never)",
    'DSTORE_ANTI_ENTROPY_MS',
  )
    .argParser(intParser('an integer', 0, 7 * 24 * 3_600_000))
    .default(300_000);
const repairOption = () =>
  envOption(
    '--repair <mode>',
    'on: a replica the anti-entropy check finds odd relearns the partition; off: only report it',
    'DSTORE_REPAIR',
  )
    .choices(['on', 'off'])
    .default('on');
const etcdPrefixOption = () =>
  envOption('--etcd-prefix <prefix>', 'key prefix of this cluster in etcd', 'DSTORE_ETCD_PREFIX').default(
    '/dstore/default/',
  );
const leaseTtlOption = () =>
  envOption(
    '--lease-ttl-ms <ms>',
    "the leader's etcd lease TTL (rounded up to whole seconds, etcd's unit)",
    'DSTORE_LEASE_TTL_MS',
  )
    .argParser(intParser('milliseconds', 1, 3_600_000))
    .default(3000);
const upBackendOption = () =>
  envOption(
    '--backend <backend>',
    'storage engine; redis starts one redis-server per storage server (redis-server must be installed)',
    'DSTORE_BACKEND',
  )
    .choices(UP_BACKENDS)
    .default('lmdb');
const storageBackendOption = () =>
  envOption(
    '--backend <backend>',
    "storage engine: lmdb, memory, or this server's own Redis as redis://HOST:PORT[/DB]",
    'DSTORE_BACKEND',
  )
    .argParser(parseStorageBackend)
    .default('lmdb');
const syncOption = () =>
  envOption(
    '--sync <mode>',
    'batch: fsync each batch of log appends before acking; none: rely on the other replicas',
    'DSTORE_SYNC',
  )
    .choices(SYNC_MODES)
    .default('batch');
const maxValueOption = () =>
  envOption('--max-value-bytes <bytes>', 'largest value accepted', 'DSTORE_MAX_VALUE_BYTES')
    .argParser(intParser('an integer', 0, 64 * 1024 * 1024))
    .default(1024 * 1024);
const advertiseOption = (what: string) =>
  envOption(
    '--advertise <host:port>',
    `address ${what} (default: the --listen address and port; the host name for 0.0.0.0)`,
    'DSTORE_ADVERTISE',
  ).argParser(parseHostPort);
/** A bench key prefix: 1..64 printable ASCII characters, no blanks (keys stay readable in `dump`). */
function parseBenchPrefix(value: string): string {
  if (!/^[!-~]{1,64}$/.test(value))
    throw new CommanderInvalidArgument('Expected 1 to 64 printable ASCII characters without blanks, e.g. mybench-.');
  return value;
}
const FAULT_KINDS_DEFAULT = 'kill,stop,pause,restart-nameserver,isolate,split,disk-full';
const FAULT_KINDS_HELP = FAULT_KINDS_DEFAULT.split(',').join(', ');
const jsonOption = () => envOption('--json', 'print JSON', 'DSTORE_JSON');
const ifVersionOption = () =>
  envOption(
    '--if-version <version>',
    'compare-and-set: only if KEY is at this version (0: only if absent); else exit 1 with CONDITION_FAILED and ' +
      'the current version',
    'DSTORE_IF_VERSION',
  ).argParser(intParser('a version', 0, Number.MAX_SAFE_INTEGER));

const keyHexOption = () =>
  envOption('--key-hex', 'KEY is hex digits (e.g. fffe): for keys that are not UTF-8', 'DSTORE_KEY_HEX');

function clientOptions(cmd: Command): Command {
  return cmd
    .addOption(nameserverOption())
    .addOption(timeoutOption())
    .addOption(attemptTimeoutOption())
    .addOption(clusterTokenOption());
}

interface ClientOpts extends ClientCliOptions {
  readonly json?: boolean;
}

/** Set-up checks where the value's origin matters (an explicit value that conflicts is an error). */
function explicit(cmd: Command, name: string): boolean {
  return isExplicit(cmd, name); // flag, environment or config file
}

export function buildProgram(): Command {
  const program = configure(new Command('dstore'), 'dstore --help');
  program
    .description('dstore: a distributed, replicated, partitioned key-value store')
    .version(packageVersion(), '-V, --version', 'print the version')
    .addHelpText(
      'after',
      `
Start a local cluster and its shell:   dstore up
Connect from another terminal:         dstore client --nameserver 127.0.0.1:7000
Every flag can also be set by the environment variable or the --config file key shown in
its command's --help (flag > environment > file > default). Off this machine: docs/deploy.md.`,
    );

  // After flags and environment variables, before any action: the --config file (config.ts).
  // Boolean environment variables by their value (0/false/no/off is false), then the file.
  program.hook('preAction', (_program, actionCommand) => {
    applyBooleanEnv(actionCommand);
    applyConfigFile(actionCommand);
  });

  const sub = (name: string, description: string): Command => {
    const cmd = configure(new Command(name), `dstore ${name} --help`)
      .description(description)
      .addOption(configOption())
      .addHelpText('after', SETTINGS_HELP);
    program.addCommand(cmd);
    return cmd;
  };

  sub(
    'up',
    'start a local cluster (a nameserver and N storage servers, or with --ha an etcd and N identical nodes, as ' +
      'child processes) and open the shell',
  )
    .addOption(
      envOption('--nodes <n>', 'storage servers to start', 'DSTORE_NODES')
        .argParser(intParser('an integer', 1, MAX_UP_NODES))
        .default(3),
    )
    .addOption(partitionsOption())
    .addOption(replicasOption())
    .addOption(minWriteOption())
    .addOption(upBackendOption())
    .addOption(
      envOption('--data-dir <dir>', 'data of every node: <dir>/nameserver, <dir>/s1, …', 'DSTORE_DATA_DIR').default(
        './dstore-data',
      ),
    )
    .addOption(listenOption())
    .addOption(legacyHostOption())
    .addOption(
      envOption('--port <port>', 'nameserver port (0: chosen by the OS)', 'DSTORE_PORT')
        .argParser(parsePort)
        .default(DEFAULT_NAMESERVER_PORT),
    )
    .addOption(
      envOption(
        '--storage-port <port>',
        'port of s1; s2 gets the next, … (default: --port + 101, i.e. 7101, 7102, …; 0: chosen by the OS)',
        'DSTORE_STORAGE_PORT',
      ).argParser(parsePort),
    )
    .addOption(syncOption())
    .addOption(heartbeatOption())
    .addOption(deadAfterOption())
    .addOption(rereplicateAfterOption())
    .addOption(logRetainOption())
    .addOption(antiEntropyOption())
    .addOption(repairOption())
    .addOption(maxValueOption())
    .addOption(
      envOption('--start-timeout-ms <ms>', 'bound on the cluster forming', 'DSTORE_START_TIMEOUT_MS')
        .argParser(intParser('an integer', 100, 600_000))
        .default(30_000),
    )
    .addOption(new Option('--no-shell', 'no shell: run until SIGINT (Ctrl-C) or SIGTERM').env('DSTORE_NO_SHELL'))
    .addOption(
      new Option(
        '--ha',
        'identical nodes: a local 3-member etcd and --nodes `dstore node` processes (n1, n2, …; each a storage ' +
          'server and a nameserver candidate, nameservers on --port, --port + 1, …); needs etcd installed',
      ).env('DSTORE_HA'),
    )
    .addOption(leaseTtlOption())
    .addOption(logLevelOption())
    .addOption(clusterTokenOption())
    .action(
      async (
        o: {
          nodes: number;
          partitions: number;
          replicas: number;
          minWriteReplicas: number;
          backend: UpBackendName;
          dataDir: string;
          listen: string;
          host?: string;
          port: number;
          storagePort?: number;
          sync: SyncMode;
          heartbeatMs: number;
          deadAfterMs: number;
          rereplicateAfterMs: number;
          logRetainEntries: number;
          antiEntropyMs: number;
          repair: 'on' | 'off';
          maxValueBytes: number;
          startTimeoutMs: number;
          shell: boolean;
          ha?: boolean;
          leaseTtlMs: number;
          logLevel: string;
          clusterToken?: string;
        },
        cmd: Command,
      ) => {
        const host = listenOf(cmd);
        checkListenAllowed(host, o.clusterToken);
        const { runUp } = await import('./up.js');
        const minWriteReplicas = explicit(cmd, 'minWriteReplicas')
          ? o.minWriteReplicas
          : Math.min(o.minWriteReplicas, o.replicas);
        const given = {
          partitions: explicit(cmd, 'partitions'),
          replicas: explicit(cmd, 'replicas'),
          minWriteReplicas: explicit(cmd, 'minWriteReplicas'),
        };
        await runUp({ ...o, host, minWriteReplicas, given });
      },
    );

  sub('nameserver', 'run a nameserver: membership, failure detection and the cluster map')
    .addOption(listenOption())
    .addOption(legacyHostOption())
    .addOption(
      envOption('--port <port>', 'port to listen on (0: chosen by the OS)', 'DSTORE_PORT')
        .argParser(parsePort)
        .default(DEFAULT_NAMESERVER_PORT),
    )
    .addOption(advertiseOption('of the nameserver as `nodes` shows it'))
    .addOption(
      envOption('--data-dir <dir>', 'where the cluster map and logs are kept', 'DSTORE_DATA_DIR').default(
        './dstore-data/nameserver',
      ),
    )
    .addOption(partitionsOption())
    .addOption(replicasOption())
    .addOption(minWriteOption())
    .addOption(initialNodesOption())
    .addOption(heartbeatOption())
    .addOption(deadAfterOption())
    .addOption(rereplicateAfterOption())
    .addOption(logLevelOption())
    .addOption(clusterTokenOption())
    .addOption(
      envOption(
        '--etcd <urls>',
        'elect the nameserver through etcd (client URLs, comma-separated) and keep the cluster map there ' +
          '(default: no etcd; one nameserver, the map in --data-dir)',
        'DSTORE_ETCD',
      ).argParser(parseEtcdUrls),
    )
    .addOption(etcdPrefixOption())
    .addOption(leaseTtlOption())
    .addOption(
      envOption(
        '--node-id <id>',
        'name of this nameserver among the candidates in etcd (default: <hostname>:<port>)',
        'DSTORE_NODE_ID',
      ).argParser(parseNodeId),
    )
    .action(
      async (
        o: {
          listen: string;
          host?: string;
          port: number;
          dataDir: string;
          etcd?: string[];
          etcdPrefix: string;
          leaseTtlMs: number;
          nodeId?: string;
          partitions: number;
          replicas: number;
          minWriteReplicas: number;
          initialNodes?: number;
          heartbeatMs: number;
          deadAfterMs: number;
          rereplicateAfterMs: number;
          logLevel: string;
          clusterToken?: string;
          advertise?: string;
        },
        cmd: Command,
      ) => {
        if (o.initialNodes !== undefined && o.initialNodes < o.replicas)
          throw new UsageError(`--initial-nodes (${o.initialNodes}) cannot be below --replicas (${o.replicas})`);
        const minWriteReplicas = explicit(cmd, 'minWriteReplicas')
          ? o.minWriteReplicas
          : Math.min(o.minWriteReplicas, o.replicas);
        const { etcd, etcdPrefix, leaseTtlMs, nodeId, ...rest } = o;
        // Given on the command line without --etcd: a mistake. From the environment (DSTORE_NODE_ID is
        // also the storage servers') or a shared config file: ignored.
        const onCli = (name: string): boolean => cmd.getOptionValueSource(name) === 'cli';
        if (etcd === undefined && (onCli('etcdPrefix') || onCli('leaseTtlMs') || onCli('nodeId')))
          throw new UsageError('--etcd-prefix, --lease-ttl-ms and --node-id need --etcd');
        const elected =
          etcd === undefined
            ? {}
            : {
                etcd: { endpoints: etcd, prefix: etcdPrefix, leaseTtlMs, ...(nodeId === undefined ? {} : { nodeId }) },
              };
        const { runNameserverCommand } = await import('./serve.js');
        await runNameserverCommand({ ...rest, host: listenOf(cmd), minWriteReplicas, ...elected });
      },
    );

  sub('storage', 'run a storage server: hosts replicas of partitions and serves reads and writes')
    .addOption(nameserverOption())
    .addOption(listenOption())
    .addOption(legacyHostOption())
    .addOption(
      envOption(
        '--port <port>',
        'port to listen on (default: the first free port from 7101; 0: chosen by the OS)',
        'DSTORE_PORT',
      ).argParser(parsePort),
    )
    .addOption(advertiseOption('the nameserver, clients and other storage servers reach this server at'))
    .addOption(
      envOption(
        '--node-id <id>',
        'stable node id (default: generated once and kept in the data dir)',
        'DSTORE_NODE_ID',
      ).argParser(parseNodeId),
    )
    .addOption(storageBackendOption())
    .addOption(
      envOption(
        '--data-dir <dir>',
        'where its data, log and logs are kept (default: ./dstore-data/<node-id>, or ./dstore-data/storage-<port>)',
        'DSTORE_DATA_DIR',
      ),
    )
    .addOption(syncOption())
    .addOption(heartbeatOption())
    .addOption(maxValueOption())
    .addOption(logRetainOption())
    .addOption(antiEntropyOption())
    .addOption(repairOption())
    .addOption(logLevelOption())
    .addOption(clusterTokenOption())
    .action(
      async (
        o: {
          nameserver: string;
          listen: string;
          host?: string;
          port?: number;
          advertise?: string;
          nodeId?: string;
          backend: StorageBackend;
          dataDir?: string;
          sync: SyncMode;
          heartbeatMs: number;
          maxValueBytes: number;
          logRetainEntries: number;
          antiEntropyMs: number;
          repair: 'on' | 'off';
          logLevel: string;
          clusterToken?: string;
        },
        cmd: Command,
      ) => {
        const { runStorageCommand } = await import('./serve.js');
        await runStorageCommand({ ...o, host: listenOf(cmd) });
      },
    );

  sub(
    'node',
    'run one identical node: a storage server and a nameserver candidate elected through etcd, in one process',
  )
    .addOption(
      envOption(
        '--etcd <urls>',
        'etcd client URLs, comma-separated (required): the candidates campaign there and the cluster map lives there',
        'DSTORE_ETCD',
      ).argParser(parseEtcdUrls),
    )
    .addOption(
      envOption(
        '--nameserver <host:port[,host:port…]>',
        "every node's nameserver address (the seeds of this node's storage server; its own is always added)",
        'DSTORE_NAMESERVER',
      ).argParser(parseNameserverSeeds),
    )
    .addOption(listenOption())
    .addOption(
      envOption('--port <port>', "the storage server's port (0: chosen by the OS)", 'DSTORE_PORT')
        .argParser(parsePort)
        .default(STORAGE_AUTO_PORT_FIRST),
    )
    .addOption(
      envOption(
        '--nameserver-port <port>',
        "the nameserver candidate's port (default: --port − 101, i.e. 7000 for 7101; 0 with --port 0)",
        'DSTORE_NAMESERVER_PORT',
      ).argParser(parsePort),
    )
    .addOption(
      advertiseOption('the storage server is reached at; the candidate is announced at the same host, its own port'),
    )
    .addOption(
      envOption(
        '--node-id <id>',
        'stable node id of the storage server and the candidate (default: generated once and kept in the data dir)',
        'DSTORE_NODE_ID',
      ).argParser(parseNodeId),
    )
    .addOption(
      envOption(
        '--data-dir <dir>',
        'holds <dir>/storage and <dir>/nameserver (default: ./dstore-data/<node-id>, or ./dstore-data/node)',
        'DSTORE_DATA_DIR',
      ),
    )
    .addOption(storageBackendOption())
    .addOption(syncOption())
    .addOption(partitionsOption())
    .addOption(replicasOption())
    .addOption(minWriteOption())
    .addOption(initialNodesOption())
    .addOption(heartbeatOption())
    .addOption(deadAfterOption())
    .addOption(rereplicateAfterOption())
    .addOption(maxValueOption())
    .addOption(logRetainOption())
    .addOption(antiEntropyOption())
    .addOption(repairOption())
    .addOption(etcdPrefixOption())
    .addOption(leaseTtlOption())
    .addOption(logLevelOption())
    .addOption(clusterTokenOption())
    .addHelpText(
      'after',
      `
Every node is identical; any of them can lead. Three machines, each with an etcd member:
  dstore node --node-id n1 --listen 0.0.0.0 --advertise h1:7101 \\
    --etcd http://h1:2379,http://h2:2379,http://h3:2379 --nameserver h1:7000,h2:7000,h3:7000
(n2 on h2 and n3 on h3 alike). Clients: dstore client --nameserver h1:7000,h2:7000,h3:7000.
One machine: dstore up --ha. More in docs/deploy.md.`,
    )
    .action(
      async (
        o: {
          etcd?: string[];
          nameserver?: string;
          listen: string;
          host?: string;
          port: number;
          nameserverPort?: number;
          advertise?: string;
          nodeId?: string;
          dataDir?: string;
          backend: StorageBackend;
          sync: SyncMode;
          partitions: number;
          replicas: number;
          minWriteReplicas: number;
          initialNodes?: number;
          heartbeatMs: number;
          deadAfterMs: number;
          rereplicateAfterMs: number;
          maxValueBytes: number;
          logRetainEntries: number;
          antiEntropyMs: number;
          repair: 'on' | 'off';
          etcdPrefix: string;
          leaseTtlMs: number;
          logLevel: string;
          clusterToken?: string;
        },
        cmd: Command,
      ) => {
        const minWriteReplicas = explicit(cmd, 'minWriteReplicas')
          ? o.minWriteReplicas
          : Math.min(o.minWriteReplicas, o.replicas);
        const { etcd, etcdPrefix, leaseTtlMs, listen: _listen, host: _host, ...rest } = o;
        if (etcd === undefined)
          throw new UsageError(
            'dstore node needs --etcd URL[,URL…] (or DSTORE_ETCD): its nameserver candidate is elected through etcd; ' +
              'without etcd run `dstore nameserver` and `dstore storage`',
          );
        const { runNodeCommand } = await import('./serve.js');
        await runNodeCommand({
          ...rest,
          host: listenOf(cmd),
          minWriteReplicas,
          etcd: { endpoints: etcd, prefix: etcdPrefix, leaseTtlMs },
        });
      },
    );

  clientOptions(sub('client', 'open the interactive shell against a running cluster')).action(async (o: ClientOpts) => {
    const { clientCommand } = await import('./commands.js');
    await clientCommand(o);
  });

  clientOptions(sub('put', 'store VALUE under KEY; prints the new version'))
    .argument('<key>', 'the key (1..1024 bytes of UTF-8; hex with --key-hex)')
    .argument(
      '[value]',
      'the value (UTF-8); "-" or none: read it from stdin, byte for byte, e.g. dstore put k - < file',
    )
    .addOption(
      envOption(
        '--file <path>',
        'read the value from this file, byte for byte (for values too long for the command line)',
        'DSTORE_PUT_FILE',
      ),
    )
    .addOption(ifVersionOption())
    .addOption(
      envOption(
        '--ttl <duration>',
        'the key expires that long after the write: 500ms, 30s, 5m, 2h, 7d (a bare number: seconds); get then ' +
          'finds nothing',
        'DSTORE_TTL',
      ).argParser(durationParser(MAX_TTL_MS)),
    )
    .addOption(keyHexOption())
    .addOption(jsonOption())
    .action(
      async (
        key: string,
        value: string | undefined,
        o: ClientOpts & { file?: string; keyHex?: boolean; ifVersion?: number; ttl?: number },
      ) => {
        const { putCommand } = await import('./commands.js');
        await putCommand(o, key, value);
      },
    );

  clientOptions(sub('get', 'print the value of KEY; exit code 1 when it is absent'))
    .argument('<key>', 'the key (hex with --key-hex)')
    .addOption(keyHexOption())
    .addOption(jsonOption())
    .addOption(envOption('--raw', 'write the value’s exact bytes, without a newline', 'DSTORE_RAW').conflicts('json'))
    .action(async (key: string, o: ClientOpts & { raw?: boolean; keyHex?: boolean }) => {
      const { getCommand } = await import('./commands.js');
      await getCommand(o, key);
    });

  clientOptions(
    sub('txn', 'run one transaction: OPS are get KEY, put KEY VALUE and del KEY, in order; prints what each get read'),
  )
    .argument('<ops...>', 'e.g. get a put a 1 put b 2 del c (reads see the transaction’s own writes)')
    .addOption(
      envOption('--txn-timeout-ms <ms>', 'the transaction aborts if not committed by then', 'DSTORE_TXN_TIMEOUT_MS')
        .argParser(intParser('ms', 100, 3_600_000))
        .default(TXN_DEFAULTS.timeoutMs),
    )
    .addOption(
      envOption('--max-keys <n>', 'most keys read and written together', 'DSTORE_TXN_MAX_KEYS')
        .argParser(intParser('a key count', 1, 10_000))
        .default(TXN_DEFAULTS.maxKeys),
    )
    .addOption(
      envOption('--max-bytes <n>', 'most bytes of keys and values written', 'DSTORE_TXN_MAX_BYTES')
        .argParser(intParser('a byte count', 1, 64 * 1024 * 1024))
        .default(TXN_DEFAULTS.maxBytes),
    )
    .addOption(
      envOption('--max-attempts <n>', 'runs after conflicts before giving up', 'DSTORE_TXN_MAX_ATTEMPTS')
        .argParser(intParser('a count', 1, 1000))
        .default(TXN_DEFAULTS.maxAttempts),
    )
    .addOption(jsonOption())
    .action(
      async (
        ops: string[],
        o: ClientOpts & { txnTimeoutMs: number; maxKeys: number; maxBytes: number; maxAttempts: number },
      ) => {
        const { txnCommand } = await import('./commands.js');
        await txnCommand(o, ops);
      },
    );

  clientOptions(sub('ttl', 'print how long KEY has left before it expires; exit code 1 when it is absent'))
    .argument('<key>', 'the key (hex with --key-hex)')
    .addOption(keyHexOption())
    .addOption(jsonOption())
    .action(async (key: string, o: ClientOpts & { keyHex?: boolean }) => {
      const { ttlCommand } = await import('./commands.js');
      await ttlCommand(o, key);
    });

  clientOptions(sub('del', 'delete KEY'))
    .alias('delete')
    .argument('<key>', 'the key (hex with --key-hex)')
    .addOption(ifVersionOption())
    .addOption(keyHexOption())
    .addOption(jsonOption())
    .action(async (key: string, o: ClientOpts & { keyHex?: boolean; ifVersion?: number }) => {
      const { delCommand } = await import('./commands.js');
      await delCommand(o, key);
    });

  clientOptions(sub('dump', 'per storage server: its key count and keys'))
    .addOption(jsonOption())
    .addOption(envOption('--all', 'every key, not only the first 100 per server', 'DSTORE_DUMP_ALL'))
    .addOption(
      envOption('--limit <n>', 'keys per storage server', 'DSTORE_DUMP_LIMIT')
        .argParser(intParser('an integer', 0, 100_000_000))
        .default(100)
        .conflicts('all'),
    )
    .action(async (o: ClientOpts & { all?: boolean; limit?: number }) => {
      const { dumpCommand } = await import('./commands.js');
      await dumpCommand(o);
    });

  clientOptions(
    sub(
      'scan',
      'list keys in byte order across every partition (from each primary), a page of --limit at a time; ' +
        'prints the cursor to resume with (--start-after) when more remain',
    ),
  )
    .addOption(envOption('--prefix <p>', 'only keys that start with P (hex with --key-hex)', 'DSTORE_SCAN_PREFIX'))
    .addOption(
      envOption(
        '--start-after <key>',
        'only keys after KEY (exclusive): the cursor a previous scan printed (hex with --key-hex)',
        'DSTORE_SCAN_START_AFTER',
      ),
    )
    .addOption(
      envOption('--limit <n>', 'at most N keys (1..100000)', 'DSTORE_SCAN_LIMIT')
        .argParser(intParser('an integer', 1, 100_000))
        .default(1000),
    )
    .addOption(envOption('--values', 'print each value and its version too', 'DSTORE_SCAN_VALUES'))
    .addOption(
      envOption(
        '--key-hex',
        '--prefix and --start-after are hex digits (for keys that are not UTF-8)',
        'DSTORE_KEY_HEX',
      ),
    )
    .addOption(jsonOption())
    .action(
      async (
        o: ClientOpts & { prefix?: string; startAfter?: string; limit?: number; values?: boolean; keyHex?: boolean },
      ) => {
        const { scanCommand } = await import('./commands.js');
        await scanCommand(o);
      },
    );

  clientOptions(
    sub(
      'check',
      "compare every partition's replicas at one digest entry each (S16), name the keys that differ; " +
        'exit code 1 when replicas differ, 2 when some partition could not be checked',
    ),
  )
    .addOption(
      envOption('--partition <n>', 'check only this partition', 'DSTORE_CHECK_PARTITION').argParser(
        intParser('an integer', 0, 65535),
      ),
    )
    .addOption(
      envOption(
        '--repair',
        'have each odd replica (outside the majority that agrees) relearn the partition from the primary',
        'DSTORE_CHECK_REPAIR',
      ),
    )
    .addOption(jsonOption())
    .action(async (o: ClientOpts & { partition?: number; repair?: boolean; json?: boolean }) => {
      const { checkCommand } = await import('./check.js');
      await checkCommand(o);
    });

  clientOptions(sub('nodes', 'every service with role, address, state, heartbeat, partitions, keys, backend, uptime'))
    .alias('status')
    .addOption(jsonOption())
    .action(async (o: ClientOpts) => {
      const { nodesCommand } = await import('./commands.js');
      await nodesCommand(o);
    });

  clientOptions(sub('drain', 'move every replica and primary off a storage server, so it can be stopped and removed'))
    .argument('<node>', 'the storage server, e.g. s3 (see dstore nodes)')
    .option('--cancel', 'stop draining NODE: it receives replicas and primaries again')
    .option('--no-wait', 'return once the drain started (default: wait until NODE holds nothing)')
    .addOption(
      new Option('--timeout <duration>', 'give up waiting after this long (e.g. 90s, 10m); the drain goes on')
        .argParser(durationParser(24 * 3600_000))
        .default(600_000, '10m'),
    )
    .addOption(jsonOption())
    .action(async (node: string, o: ClientOpts & { cancel?: boolean; wait: boolean; timeout: number }) => {
      const { drainCommand } = await import('./commands.js');
      await drainCommand({ ...o, timeoutMs: o.timeout }, node);
    });

  clientOptions(
    sub(
      'backup',
      'write a point-in-time snapshot of every partition (writes go on) and a manifest into DIR (new or empty)',
    ),
  )
    .argument('<dir>', 'directory for the backup: partition-<n>.dsb files and manifest.json (written last)')
    .addOption(
      envOption('--partition <n>', 'back up only this partition', 'DSTORE_BACKUP_PARTITION').argParser(
        intParser('an integer', 0, 65_535),
      ),
    )
    .addOption(jsonOption())
    .addHelpText('after', BACKUP_EXIT_HELP)
    .action(async (dir: string, o: ClientOpts & { partition?: number }) => {
      const { backupCommand } = await import('./backup.js');
      await backupCommand(o, dir);
    });

  clientOptions(sub('restore', 'verify the backup in DIR, load it into an empty cluster and verify the cluster'))
    .argument('<dir>', 'directory of a backup written by dstore backup')
    .addOption(jsonOption())
    .addHelpText('after', RESTORE_EXIT_HELP)
    .action(async (dir: string, o: ClientOpts) => {
      const { restoreCommand } = await import('./backup.js');
      await restoreCommand(o, dir);
    });

  clientOptions(sub('bench', 'closed-loop load generator: ops/s and p50/p99/max latency'))
    .addOption(
      envOption('--concurrency <n>', 'concurrent callers', 'DSTORE_BENCH_CONCURRENCY')
        .argParser(intParser('an integer', 1, 100_000))
        .default(64),
    )
    .addOption(
      envOption('--duration <seconds>', 'how long to measure', 'DSTORE_BENCH_DURATION')
        .argParser(positiveNumberParser('a number', 86_400))
        .default(10),
    )
    .addOption(
      envOption('--value-size <bytes>', 'bytes per value', 'DSTORE_BENCH_VALUE_SIZE')
        .argParser(intParser('an integer', 0, 64 * 1024 * 1024))
        .default(100),
    )
    .addOption(
      envOption('--keys <n>', 'distinct keys, chosen uniformly', 'DSTORE_BENCH_KEYS')
        .argParser(intParser('an integer', 1, 100_000_000))
        .default(10_000),
    )
    .addOption(
      envOption('--ratio <reads:writes>', 'mix of gets and puts, e.g. 1:1, 9:1, 0:1', 'DSTORE_BENCH_RATIO')
        .argParser(parseRatio)
        .default({ reads: 1, writes: 1 }, '1:1'),
    )
    .addOption(
      envOption(
        '--spawn',
        'start a temporary local cluster (3 storage servers, R=3) and benchmark it',
        'DSTORE_BENCH_SPAWN',
      ),
    )
    .addOption(
      envOption(
        '--prefix <prefix>',
        'prefix of every key the bench writes (default: bench-<8 random hex digits>-, new each run, so ' +
          'no existing key is overwritten)',
        'DSTORE_BENCH_PREFIX',
      ).argParser(parseBenchPrefix),
    )
    .addOption(
      envOption('--keep', 'keep the keys the bench wrote (default: delete them at the end)', 'DSTORE_BENCH_KEEP'),
    )
    .addOption(
      envOption(
        '--txn <keys>',
        'each write is a transaction (two-phase commit) putting this many random keys; 0: plain puts',
        'DSTORE_BENCH_TXN',
      )
        .argParser(intParser('a key count', 0, 64))
        .default(0),
    )
    .addOption(
      new Option('--no-preload', 'do not write every key once before measuring').env('DSTORE_BENCH_NO_PRELOAD'),
    )
    .addOption(
      envOption('--backend <backend>', 'storage engine of the --spawn cluster', 'DSTORE_BACKEND')
        .choices(BACKENDS)
        .default('lmdb'),
    )
    .addOption(
      envOption('--sync <mode>', 'durability of the --spawn cluster', 'DSTORE_SYNC')
        .choices(SYNC_MODES)
        .default('batch'),
    )
    .addOption(jsonOption())
    .addOption(logLevelOption())
    .action(
      async (
        o: ClientOpts & {
          concurrency: number;
          duration: number;
          valueSize: number;
          keys: number;
          ratio: { reads: number; writes: number };
          spawn?: boolean;
          preload: boolean;
          backend: BackendName;
          sync: SyncMode;
          logLevel: string;
          prefix?: string;
          keep?: boolean;
          txn: number;
        },
      ) => {
        const { runBench, randomBenchPrefix } = await import('./bench.js');
        await runBench({
          nameserver: o.nameserver,
          prefix: o.prefix ?? randomBenchPrefix(),
          keep: Boolean(o.keep),
          txnKeys: o.txn,
          concurrency: o.concurrency,
          durationS: o.duration,
          valueSize: o.valueSize,
          keys: o.keys,
          ratio: o.ratio,
          spawn: Boolean(o.spawn),
          json: Boolean(o.json),
          preload: o.preload,
          backend: o.backend,
          sync: o.sync,
          timeoutMs: o.timeoutMs,
          ...(o.attemptTimeoutMs === undefined ? {} : { attemptTimeoutMs: o.attemptTimeoutMs }),
          logLevel: o.logLevel,
          ...(o.clusterToken === undefined ? {} : { clusterToken: o.clusterToken }),
        });
      },
    );

  const CHAOS_LEADER_FAULTS = 'kill-leader,pause-leader,kill-etcd,isolate-leader';
  const CHAOS_HA_FAULTS_DEFAULT = `kill,pause,${CHAOS_LEADER_FAULTS}`;
  sub(
    'chaos',
    'chaos test: a local cluster under a seeded nemesis (kills, pauses, restarts, network ' +
      'partitions), checked for linearizability',
  )
    .addOption(
      envOption('--duration <seconds>', 'how long the load and the faults run', 'DSTORE_CHAOS_DURATION')
        .argParser(positiveNumberParser('a number', 86_400))
        .default(60),
    )
    .addOption(
      envOption(
        '--seed <n>',
        "seed of the nemesis schedule and of the clients' choices (default: random, printed)",
        'DSTORE_CHAOS_SEED',
      ).argParser(intParser('an integer', 0, 4_294_967_295)),
    )
    .addOption(
      envOption(
        '--history <file>',
        "write the history, one JSON line per operation (the checker's format)",
        'DSTORE_CHAOS_HISTORY',
      ),
    )
    .addOption(
      envOption('--clients <n>', 'concurrent clients, each one operation at a time', 'DSTORE_CHAOS_CLIENTS')
        .argParser(intParser('an integer', 1, 1000))
        .default(5),
    )
    .addOption(
      envOption('--keys <n>', 'keys k0..k<n-1> the clients share', 'DSTORE_CHAOS_KEYS')
        .argParser(intParser('an integer', 1, 10_000))
        .default(10),
    )
    .addOption(
      envOption('--rate <ops/s>', 'operations per second over all clients', 'DSTORE_CHAOS_RATE')
        .argParser(positiveNumberParser('a number', 1_000_000))
        .default(100),
    )
    .addOption(
      envOption('--nodes <n>', 'storage servers', 'DSTORE_CHAOS_NODES')
        .argParser(intParser('an integer', 1, 60))
        .default(3),
    )
    .addOption(
      envOption(
        '--partition-count <n>',
        'partitions of the cluster (key space; not network partitions)',
        'DSTORE_CHAOS_PARTITION_COUNT',
      )
        .argParser(intParser('an integer', 1, 4096))
        .default(8),
    )
    .addOption(
      envOption('--replicas <n>', 'replication factor R (at most --nodes)', 'DSTORE_CHAOS_REPLICAS')
        .argParser(intParser('an integer', 1, 16))
        .default(3),
    )
    .addOption(
      envOption(
        '--backend <backend>',
        'storage engine of every storage server (redis: one redis-server each, on loopback)',
        'DSTORE_BACKEND',
      )
        .choices(UP_BACKENDS)
        .default('lmdb'),
    )
    .addOption(
      new Option('--no-partitions', 'no network partitions (isolate, split) even as root').env(
        'DSTORE_CHAOS_NO_PARTITIONS',
      ),
    )
    .addOption(
      envOption(
        '--faults <kinds>',
        `fault kinds the nemesis cycles through, comma-separated: ${FAULT_KINDS_HELP}; with --ha also ` +
          `${CHAOS_LEADER_FAULTS.split(',').join(', ')} (which imply --ha)`,
        'DSTORE_CHAOS_FAULTS',
      ),
    )
    .addOption(
      envOption(
        '--ha',
        `identical nodes electing their nameserver through a local 3-member etcd (issue 12); faults default to ` +
          CHAOS_HA_FAULTS_DEFAULT,
        'DSTORE_CHAOS_HA',
      ),
    )
    .addOption(
      envOption('--lease-ttl-ms <ms>', "with --ha: the leader's etcd lease TTL", 'DSTORE_CHAOS_LEASE_TTL_MS')
        .argParser(intParser('an integer', 500, 600_000))
        .default(2000),
    )
    .addOption(
      envOption(
        '--anti-entropy-ms <ms>',
        "every storage server's background anti-entropy interval (S16; 0: off); nothing tampers with the data, so " +
          'replicas found differing make the verdict a violation',
        'DSTORE_CHAOS_ANTI_ENTROPY_MS',
      )
        .argParser(intParser('an integer', 0, 3_600_000))
        .default(2000),
    )
    .addOption(
      envOption('--timeout-ms <ms>', 'deadline of each client call, retries included', 'DSTORE_TIMEOUT_MS')
        .argParser(intParser('an integer', 1, 3_600_000))
        .default(5000),
    )
    .addOption(
      envOption('--attempt-timeout-ms <ms>', 'bound on one attempt of a client call', 'DSTORE_ATTEMPT_TIMEOUT_MS')
        .argParser(intParser('an integer', 1, 3_600_000))
        .default(1000),
    )
    .addOption(
      envOption('--heartbeat-ms <ms>', 'heartbeat interval of the storage servers', 'DSTORE_HEARTBEAT_MS')
        .argParser(intParser('an integer', 10, 600_000))
        .default(250),
    )
    .addOption(
      envOption('--dead-after-ms <ms>', 'a storage server silent this long is dead (failover)', 'DSTORE_DEAD_AFTER_MS')
        .argParser(intParser('an integer', 50, 3_600_000))
        .default(2000),
    )
    .addOption(
      envOption(
        '--settle-timeout-ms <ms>',
        'after healing, how long the cluster may take to have every node alive, R members per partition and no learner',
        'DSTORE_CHAOS_SETTLE_TIMEOUT_MS',
      )
        .argParser(intParser('an integer', 0, 3_600_000))
        .default(60_000),
    )
    .addOption(
      envOption(
        '--check-budget-ms <ms>',
        'time budget of the linearizability check per key; over it the key is "unknown"',
        'DSTORE_CHAOS_CHECK_BUDGET_MS',
      )
        .argParser(intParser('an integer', 1, 86_400_000))
        .default(10_000),
    )
    .addOption(
      envOption(
        '--workload <name>',
        'kv: puts, gets and deletes of unique values; cas: every key a counter that clients increment by ' +
          'compare-and-set (the final counts must equal the acknowledged increments); bank: every key an account, ' +
          'transfers and audits in transactions (every audit and the final reads must see the total)',
        'DSTORE_CHAOS_WORKLOAD',
      )
        .choices(CHAOS_WORKLOADS)
        .default('kv'),
    )
    .addOption(
      new Option(
        '--no-delete-existed',
        'do not record whether each delete found its key (the checker then holds deletes only to their effect)',
      ).env('DSTORE_CHAOS_NO_DELETE_EXISTED'),
    )
    .addOption(
      envOption(
        '--data-dir <dir>',
        'node data and logs (kept); default a temporary dir, removed unless the run found a problem',
        'DSTORE_DATA_DIR',
      ),
    )
    .addOption(envOption('--keep', 'keep the temporary dir with node data and logs', 'DSTORE_CHAOS_KEEP'))
    .addOption(logLevelOption())
    .addHelpText(
      'after',
      `
What it does: starts a nameserver and --nodes storage servers as child processes (each in
its own network namespace on 10.213.0.0/24 when run as root, else on loopback), and a
client worker whose --clients clients do put (45 %), get (45 %) and delete (10 %) on
--keys keys, every written value unique. A nemesis, on a schedule drawn from --seed, applies
one fault at a time (1-6 s each, 1-4 s apart, none in the first and last 2 s):
  kill                SIGKILL a storage server, start it again at the end of the fault
  pause               SIGSTOP a storage server or the nameserver, SIGCONT at the end
  restart-nameserver  SIGTERM the nameserver, start it again at the end
  isolate             cut a storage server off from every other host (root only)
  split               split the nameserver and storage servers in two sides; the clients
                      still reach both (root only)
  disk-full           fill a storage server's data dir (a 64 MiB tmpfs of its own) until
                      writes fail with ENOSPC, remove the filler at the end (root only)
With --ha (issue 12) the cluster is a 3-member etcd and --nodes \`dstore node\` processes
(storage server + nameserver candidate each) on loopback; kill and pause act on nodes, and:
  kill-leader         SIGKILL the node that leads, start it again at the end
  pause-leader        SIGSTOP the node that leads past the lease TTL, SIGCONT at the end
  kill-etcd           SIGKILL one etcd member (never two at once), start it again at the end
  isolate-leader      cut the node that leads off from etcd only (its relays drop every byte)
restart-nameserver, isolate and split are left out with --ha.
Without root, partitions and disk-full faults are skipped with a message. With --backend
redis each storage server gets its own redis-server (redis-server must be installed) on
loopback; partitions are then skipped (the nodes' namespaces cannot reach it).
After --duration everything is healed, the load stops, the cluster settles and every key
is read once more; the history is checked for linearizability (src/check/linearizability.ts).

Report: faults with their times, operations by kind and outcome (unknown = timeout,
lost connection or OUTCOME_UNKNOWN: the write may or may not have happened), unavailability
windows (1 s or more without a successful operation, overall and per partition), whether
the cluster settled, and the verdict.

Exit codes: 0 linearizable and recovered; 1 a linearizability violation; 3 inconclusive
(the checker ran out of --check-budget-ms on a key, no violation found); 4 linearizable but
the cluster did not recover (did not settle, a final read failed, or a node exited on its
own); 2 bad input; 130 interrupted. On any non-zero verdict the node data and logs are kept.

Examples:
  npm run chaos -- --duration 300 --seed 7 --history chaos-7.jsonl
  npx dstore chaos --duration 30 --no-partitions --faults kill,pause`,
    )
    .action(
      async (o: {
        duration: number;
        seed?: number;
        history?: string;
        clients: number;
        keys: number;
        rate: number;
        nodes: number;
        partitionCount: number;
        replicas: number;
        backend: UpBackendName;
        partitions: boolean;
        faults?: string;
        ha?: boolean;
        leaseTtlMs: number;
        antiEntropyMs: number;
        timeoutMs: number;
        attemptTimeoutMs: number;
        heartbeatMs: number;
        deadAfterMs: number;
        settleTimeoutMs: number;
        checkBudgetMs: number;
        deleteExisted?: boolean;
        workload: ChaosWorkload;
        dataDir?: string;
        keep?: boolean;
        logLevel: string;
      }) => {
        const { LEADER_FAULT_KINDS, parseFaultKinds } = await import('../chaos/schedule.js');
        let faults: ReturnType<typeof parseFaultKinds>;
        try {
          faults = parseFaultKinds(o.faults ?? (o.ha ? CHAOS_HA_FAULTS_DEFAULT : FAULT_KINDS_DEFAULT));
        } catch (err) {
          throw new UsageError(`--faults: ${(err as Error).message}`);
        }
        const ha = Boolean(o.ha) || faults.some((k) => (LEADER_FAULT_KINDS as readonly string[]).includes(k));
        if (o.replicas > o.nodes)
          throw new UsageError(`--replicas (${o.replicas}) cannot be above --nodes (${o.nodes})`);
        const { runChaosCommand } = await import('./chaos.js');
        await runChaosCommand({
          durationS: o.duration,
          seed: o.seed ?? Math.floor(Math.random() * 1_000_000),
          seedGiven: o.seed !== undefined,
          ...(o.history === undefined ? {} : { historyPath: o.history }),
          clients: o.clients,
          keys: o.keys,
          nodes: o.nodes,
          partitions: o.partitionCount,
          replicas: o.replicas,
          backend: o.backend,
          networkFaults: o.partitions,
          faults,
          ratePerSec: o.rate,
          timeoutMs: o.timeoutMs,
          attemptTimeoutMs: o.attemptTimeoutMs,
          heartbeatMs: o.heartbeatMs,
          deadAfterMs: o.deadAfterMs,
          settleTimeoutMs: o.settleTimeoutMs,
          checkBudgetMs: o.checkBudgetMs,
          deleteExisted: Boolean(o.deleteExisted),
          workload: o.workload,
          ...(o.dataDir === undefined ? {} : { dataDir: o.dataDir }),
          keep: Boolean(o.keep),
          logLevel: o.logLevel,
          ha,
          leaseTtlMs: o.leaseTtlMs,
          antiEntropyMs: o.antiEntropyMs,
        });
      },
    );

  return program;
}

/** Parses `argv` (as process.argv), runs the command, and returns the exit code. */
export async function runCli(argv: readonly string[], rawArgv?: readonly Uint8Array[]): Promise<number> {
  const stderr = (line: string): void => {
    process.stderr.write(`${line}\n`);
  };
  try {
    checkArgsUtf8(argv.slice(2), rawArgv);
    await buildProgram().parseAsync([...argv]);
    return EXIT_OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end with code 0; everything else commander reports is bad input.
      return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    if (err instanceof CliExit) return err.exitCode;
    if (err instanceof UsageError) {
      stderr(`error: ${oneLine(err.message)}`);
      return EXIT_USAGE;
    }
    if (err instanceof DstoreError) {
      stderr(`error: ${err.message} (${err.code})`);
      // A key or value the cluster refuses as such is bad input, as README says (exit 2).
      return BAD_INPUT_CODES.has(err.code) ? EXIT_USAGE : EXIT_FAILURE;
    }
    if (err instanceof ClusterStartError || err instanceof CliFailure) {
      stderr(`error: ${err.message}`);
      return EXIT_FAILURE;
    }
    stderr(`error: ${err instanceof Error ? err.message : String(err)}`);
    return EXIT_FAILURE;
  }
}

/** `--etcd`: comma-separated etcd client URLs (`http://host:port`; a bare host:port gets http://). */
function parseEtcdUrls(value: string): string[] {
  const urls = value
    .split(',')
    .map((u) => u.trim())
    .filter((u) => u !== '');
  if (urls.length === 0) throw new CommanderInvalidArgument('expected etcd client URLs, e.g. http://127.0.0.1:2379');
  return urls.map((u) => {
    const url = /^[a-z]+:\/\//i.test(u) ? u : `http://${u}`;
    if (!URL.canParse(url) || !/^https?:$/.test(new URL(url).protocol))
      throw new CommanderInvalidArgument(`not an etcd client URL: ${u} (expected http://host:port)`);
    return url;
  });
}

/** Failures a command reports in one line, without a stack trace (the CLI maps them to exit codes). */
/** A failure at run time that needs no stack trace, e.g. a port in use (exit code 1, `error: …`). */
export class CliFailure extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'CliFailure';
  }
}

/** Invalid command-line input found after parsing (exit code 2, one line on stderr). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { cliEnv, Output } from './cli-process.js';

/** Quotes one word for sh. */
function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** Whether util-linux `script` (which runs a command on a pseudo-terminal) is installed. */
export function hasScript(): boolean {
  try {
    execFileSync('script', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export interface PtyProcess {
  /** The `script` process; the command runs below it on the pseudo-terminal. */
  child: ChildProcess;
  output: Output;
  /** Types on the terminal (`\r` for Enter, `\x03` for Ctrl-C). */
  type(text: string): void;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Runs `argv` on a pseudo-terminal with util-linux `script -qfec` (`-e`: exit with the
 * command's status): the command sees TTYs on stdin and stdout, and what is written to
 * `script`'s stdin is typed on that terminal.
 */
export function spawnOnPty(
  argv: string[],
  options: { cwd: string; env?: Record<string, string> },
): PtyProcess {
  // `exec`: the program itself is the terminal's foreground process. Without it a shell
  // that does not exec its last command (dash) sits in between and dies of the Ctrl-C
  // that the program handles, and `script` reports the shell's 130 instead.
  const command = `exec ${argv.map(shellQuote).join(' ')}`;
  const child = spawn('script', ['-qfec', command, '/dev/null'], {
    cwd: options.cwd,
    // A known terminal type, and a wide one so that prompts are not wrapped.
    // SHELL pinned: `script -c` runs the command with $SHELL, which differs between machines.
    env: cliEnv({ SHELL: '/bin/sh', TERM: 'xterm', COLUMNS: '200', ...options.env }),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const output = new Output(child.stdout, child.stderr);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    output,
    type: (text) => child.stdin.write(text),
    exited,
  };
}

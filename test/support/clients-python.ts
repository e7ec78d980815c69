import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * Debian's Python, where `python3-tuspy` installs `tusclient` (not a pyenv/venv python3 that
 * may come first on PATH).
 */
export const SYSTEM_PYTHON = '/usr/bin/python3';

/** The scripts beside this file. */
export const supportFile = (name: string): string =>
  fileURLToPath(new URL(`./${name}`, import.meta.url));

/** Why tuspy cannot run here (a sentence naming the package to install), or undefined. */
export async function tuspyMissing(): Promise<string | undefined> {
  try {
    await run(['-c', 'import tusclient']);
    return undefined;
  } catch (e) {
    return (
      `tuspy is not importable by ${SYSTEM_PYTHON} (Debian package python3-tuspy: ` +
      `apt-get install -y python3-tuspy): ${e instanceof Error ? e.message : String(e)}`
    );
  }
}

function run(args: string[], timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      SYSTEM_PYTHON,
      args,
      {
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1', PYTHONUNBUFFERED: '1' },
        maxBuffer: 1 << 20,
      },
      (error, stdout, stderr) => {
        if (error) {
          reject(new Error(`${SYSTEM_PYTHON} ${args.join(' ')}: ${error.message}\n${stderr}`));
        } else {
          resolve(stdout);
        }
      },
    );
  });
}

/**
 * Runs a Python script of test/support with Debian's python3 (asynchronously: the server under
 * test lives in this process) and parses the JSON line it prints last.
 */
export async function runPythonScript<T>(script: string, args: string[]): Promise<T> {
  const stdout = await run([supportFile(script), ...args]);
  const last = stdout.trim().split('\n').at(-1) ?? '';
  try {
    return JSON.parse(last) as T;
  } catch {
    throw new Error(`${script} printed no JSON result: ${stdout}`);
  }
}

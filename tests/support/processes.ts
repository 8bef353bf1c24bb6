/**
 * Every child process and temp dir the harness creates, and the means to end them.
 *
 * No process started by a test may outlive the test run, even when a test throws or the
 * runner is interrupted:
 * - each child is registered here and killed with SIGKILL on `exit`, SIGINT and SIGTERM;
 * - on Linux, each child is started under `setpriv --pdeathsig KILL`, so the kernel kills
 *   it even when the runner itself dies by SIGKILL and no handler gets to run.
 * Temp dirs made with {@link makeTempDir} are removed on exit as well.
 *
 * `bun test` emits no `exit` event, so under the test runner the kernel's parent-death
 * signal is what ends forgotten children, and temp dirs left by a run that ended early are
 * swept when the harness is next loaded (each dir names its owner's pid).
 */
import type { Subprocess } from "bun";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { waitFor } from "./wait";

/** A child process started with {@link spawnTracked}. */
export type TrackedProcess = Subprocess<"ignore", number, number>;

/** What the registry knows about a running child. */
export interface TrackedProcessInfo {
  pid: number;
  label: string;
}

/** Options for {@link spawnTracked}. */
export interface SpawnTrackedOptions {
  /** Shown in errors and in {@link trackedProcesses}. */
  label: string;
  cwd: string;
  env: Record<string, string | undefined>;
  /** Stdout and stderr are appended to this file. */
  logPath: string;
}

const running = new Map<number, { proc: Subprocess; label: string }>();
const tempDirs = new Set<string>();
const tempDirPrefix = "chroma-lb-test-";
/** Names the pid of the run that made a temp dir, so a later run can tell it is stale. */
const ownerFile = "owner.pid";

/** How long {@link killProcess} waits for an exit after its signal before it gives up. */
const exitWaitMsMax = 10_000;

/**
 * `setpriv` asks the kernel to SIGKILL the child when the process that spawned it dies.
 * Bun spawns from its JS thread, which lives as long as the runner, so the signal
 * fires exactly when the runner is gone.
 */
const orphanGuard: string[] = (() => {
  if (process.platform !== "linux") return [];
  const setpriv = Bun.which("setpriv");
  return setpriv ? [setpriv, "--pdeathsig", "KILL", "--"] : [];
})();

/**
 * Starts `cmd` with stdout and stderr appended to `opts.logPath`, and registers it so it
 * is killed when the test run ends. The entry is dropped once the process exits.
 */
export function spawnTracked(cmd: string[], opts: SpawnTrackedOptions): TrackedProcess {
  fs.mkdirSync(path.dirname(opts.logPath), { recursive: true });
  fs.appendFileSync(
    opts.logPath,
    `--- ${new Date().toISOString()} starting ${opts.label}: ${cmd.join(" ").slice(0, 200)}\n`,
  );
  const logFd = fs.openSync(opts.logPath, "a");
  let proc: TrackedProcess;
  try {
    proc = Bun.spawn([...orphanGuard, ...cmd], {
      cwd: opts.cwd,
      env: opts.env,
      stdin: "ignore",
      stdout: logFd,
      stderr: logFd,
    });
  } finally {
    fs.closeSync(logFd);
  }
  const pid = proc.pid;
  running.set(pid, { proc, label: opts.label });
  proc.exited.finally(() => running.delete(pid));
  return proc;
}

/** The children that are still running, oldest first. */
export function trackedProcesses(): TrackedProcessInfo[] {
  return [...running].map(([pid, { label }]) => ({ pid, label }));
}

/** Whether `proc` has not exited yet. */
export function isRunning(proc: Subprocess): boolean {
  return running.has(proc.pid) && proc.exitCode === null && proc.signalCode === null;
}

/**
 * Sends `signal` to `proc` and waits until it has exited.
 * Throws when it is still running after 10 s (for example after SIGSTOP).
 */
export async function killProcess(
  proc: Subprocess,
  signal: NodeJS.Signals = "SIGKILL",
): Promise<void> {
  if (!isRunning(proc)) {
    await proc.exited;
    return;
  }
  try {
    proc.kill(signal);
  } catch {
    // It exited between the check and the signal.
  }
  const exited = await exitedWithin(proc, exitWaitMsMax);
  if (!exited) {
    throw new Error(`process ${proc.pid} still running ${exitWaitMsMax} ms after ${signal}`);
  }
}

/** Asks `proc` to stop with SIGTERM; SIGKILL follows when it is still running after `graceMs`. */
export async function stopProcess(proc: Subprocess, graceMs: number): Promise<void> {
  if (!isRunning(proc)) {
    await proc.exited;
    return;
  }
  try {
    proc.kill("SIGTERM");
  } catch {
    // It exited between the check and the signal.
  }
  if (await exitedWithin(proc, graceMs)) return;
  await killProcess(proc, "SIGKILL");
}

/**
 * Sends `signal` (SIGKILL unless told) to every running child right away, then waits
 * until they have all exited.
 */
export async function killAll(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
  const procs = [...running.values()].map(({ proc }) => proc);
  await Promise.all(procs.map((proc) => killProcess(proc, signal)));
}

/** Makes a fresh temp dir that is removed when the test run ends, if not before. */
export function makeTempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), tempDirPrefix));
  fs.writeFileSync(path.join(dir, ownerFile), String(process.pid));
  tempDirs.add(dir);
  return dir;
}

/** Removes a dir made by {@link makeTempDir}. */
export function removeTempDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/** The last `lines` lines of a log file, without terminal colour codes. */
export function logTail(logPath: string, lines = 40): string {
  let text: string;
  try {
    text = fs.readFileSync(logPath, "utf8");
  } catch (error) {
    return `(no log at ${logPath}: ${(error as Error).message})`;
  }
  const plain = text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
  return plain.trimEnd().split("\n").slice(-lines).join("\n");
}

/** Options for {@link waitUntilAnswering}. */
export interface WaitUntilAnsweringOptions {
  /** URL polled until it answers. */
  probeUrl: string;
  /** Whether an answer with this status means ready. */
  accept: (status: number) => boolean;
  /** Names the server in errors, e.g. "chroma". */
  label: string;
  logPath: string;
  timeoutMs: number;
}

/** Bounds one probe, so a hung server is retried instead of stalling the wait. */
const probeTimeoutMs = 1_000;

/**
 * Resolves once `probeUrl` gives an accepted answer. Fails fast when the process exits
 * first; on any failure the process is killed and the error carries the end of its log.
 */
export async function waitUntilAnswering(
  proc: TrackedProcess,
  opts: WaitUntilAnsweringOptions,
): Promise<void> {
  let outcome: "ready" | "exited";
  try {
    outcome = await waitFor(
      async () => {
        if (!isRunning(proc)) return "exited";
        const res = await fetch(opts.probeUrl, { signal: AbortSignal.timeout(probeTimeoutMs) });
        await res.arrayBuffer();
        return opts.accept(res.status) ? "ready" : undefined;
      },
      { timeoutMs: opts.timeoutMs, message: `${opts.label} answering ${opts.probeUrl}` },
    );
  } catch (error) {
    await killProcess(proc, "SIGKILL");
    throw new Error(
      `${(error as Error).message}\n--- ${opts.label} log (${opts.logPath}) ---\n${logTail(opts.logPath)}`,
    );
  }
  if (outcome === "exited") {
    await proc.exited;
    throw new Error(
      `${opts.label} exited (code ${proc.exitCode}, signal ${proc.signalCode}) before ${opts.probeUrl} answered\n` +
        `--- ${opts.label} log (${opts.logPath}) ---\n${logTail(opts.logPath)}`,
    );
  }
}

/** Current size of a log file in bytes (0 when it does not exist yet). */
export function logSize(logPath: string): number {
  try {
    return fs.statSync(logPath).size;
  } catch {
    return 0;
  }
}

/** What a log file received after `offset` bytes, e.g. since the last start. */
export function logSince(logPath: string, offset: number): string {
  try {
    return fs.readFileSync(logPath).subarray(offset).toString("utf8");
  } catch {
    return "";
  }
}

async function exitedWithin(proc: Subprocess, waitMs: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), waitMs);
  });
  try {
    return await Promise.race([proc.exited.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs inside `exit` handlers, which cannot wait: signals only, no awaiting. */
function killAllNow(): void {
  for (const pid of running.keys()) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  running.clear();
}

function removeTempDirsNow(): void {
  for (const dir of tempDirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // Best effort: the run is ending anyway.
    }
  }
  tempDirs.clear();
}

/** Removes temp dirs whose owning run is gone (it was killed, or `bun test` skipped `exit`). */
function sweepStaleTempDirs(): void {
  let names: string[];
  try {
    names = fs.readdirSync(os.tmpdir()).filter((name) => name.startsWith(tempDirPrefix));
  } catch {
    return;
  }
  for (const name of names) {
    const dir = path.join(os.tmpdir(), name);
    let ownerPid: number;
    try {
      ownerPid = Number(fs.readFileSync(path.join(dir, ownerFile), "utf8"));
    } catch {
      continue; // Not ours, or still being created.
    }
    if (!Number.isInteger(ownerPid) || ownerPid <= 0 || pidExists(ownerPid)) continue;
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // Another run may be sweeping the same dir.
    }
  }
}

function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

sweepStaleTempDirs();

process.on("exit", () => {
  killAllNow();
  removeTempDirsNow();
});

// A listener replaces the default action of these signals, so each one exits itself
// with the conventional status 128 + signal number.
for (const [signal, status] of [
  ["SIGINT", 130],
  ["SIGTERM", 143],
] as const) {
  process.on(signal, () => {
    killAllNow();
    removeTempDirsNow();
    process.exit(status);
  });
}

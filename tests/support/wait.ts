/** Options for {@link waitFor}. */
export interface WaitForOptions {
  /** How long to keep polling before giving up. Default 15 000 ms. */
  timeoutMs?: number;
  /** Pause between two attempts. Default 25 ms. */
  intervalMs?: number;
  /** What was awaited, for the timeout error. Default "condition". */
  message?: string;
}

/** What a condition returns once it holds: its value without the falsy cases. */
export type Truthy<T> = Exclude<T, null | undefined | false | 0 | "">;

const timeoutMsDefault = 15_000;
const intervalMsDefault = 25;

/**
 * Polls `condition` until it returns a truthy value and returns that value.
 *
 * An attempt that throws counts as falsy; the last error is kept and reported when the
 * time runs out. An attempt that hangs does not stall the wait: it is abandoned at the
 * deadline, so a test waiting on a dead server fails on time instead of at the test timeout.
 */
export async function waitFor<T>(
  condition: () => T | Promise<T>,
  opts: WaitForOptions = {},
): Promise<Truthy<T>> {
  const timeoutMs = opts.timeoutMs ?? timeoutMsDefault;
  const intervalMs = opts.intervalMs ?? intervalMsDefault;
  const message = opts.message ?? "condition";
  const deadline = performance.now() + timeoutMs;
  let lastError: unknown;
  let attempts = 0;

  while (true) {
    attempts += 1;
    const remainingMs = deadline - performance.now();
    try {
      const value = await withDeadline(condition, remainingMs);
      if (value) return value as Truthy<T>;
    } catch (error) {
      if (error !== deadlineReached) lastError = error;
    }
    if (performance.now() + intervalMs > deadline) break;
    await Bun.sleep(intervalMs);
  }

  let text = `waitFor: ${message} not met within ${timeoutMs} ms (${attempts} attempts)`;
  if (lastError !== undefined) text += `; last error: ${describe(lastError)}`;
  throw new Error(text, { cause: lastError });
}

/** Options for {@link waitWhileProgressing}. */
export interface ProgressOptions {
  /** How long `progress` may hold the same value before the wait gives up. Default 15 000 ms. */
  stallMs?: number;
  /** Pause between two attempts. Default 25 ms. */
  intervalMs?: number;
  /** What was awaited, for the error. Default "condition". */
  message?: string;
}

/**
 * Polls `condition` until it returns a truthy value, for as long as `progress` keeps changing:
 * the wait gives up only once `progress` has answered the same value for `stallMs`. For work
 * whose pace is the machine's (replaying a backlog while other processes run), where a fixed
 * timeout would measure the load rather than the product, and a stop is what must fail.
 */
export async function waitWhileProgressing<T>(
  condition: () => T | Promise<T>,
  progress: () => unknown,
  opts: ProgressOptions = {},
): Promise<Truthy<T>> {
  const stallMs = opts.stallMs ?? 15_000;
  const intervalMs = opts.intervalMs ?? intervalMsDefault;
  const message = opts.message ?? "condition";
  let last: string | undefined;
  let changedMs = performance.now();
  let attempts = 0;
  let lastError: unknown;
  while (true) {
    attempts += 1;
    try {
      const value = await withDeadline(condition, stallMs);
      if (value) return value as Truthy<T>;
    } catch (error) {
      if (error !== deadlineReached) lastError = error;
    }
    const now = JSON.stringify(await withDeadline(progress, stallMs).catch(() => last));
    if (now !== last) {
      last = now;
      changedMs = performance.now();
    } else if (performance.now() - changedMs > stallMs) {
      let text = `waitWhileProgressing: ${message} not met, and no progress for ${stallMs} ms (${attempts} attempts; progress stayed at ${now})`;
      if (lastError !== undefined) text += `; last error: ${describe(lastError)}`;
      throw new Error(text, { cause: lastError });
    }
    await Bun.sleep(intervalMs);
  }
}

const deadlineReached = Symbol("deadlineReached");

async function withDeadline<T>(
  condition: () => T | Promise<T>,
  remainingMs: number,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expiry = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(deadlineReached), Math.max(0, remainingMs));
  });
  try {
    return await Promise.race([Promise.resolve().then(condition), expiry]);
  } finally {
    clearTimeout(timer);
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

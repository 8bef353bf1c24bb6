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

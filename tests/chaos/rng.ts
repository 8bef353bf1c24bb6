/**
 * Seeded randomness for the chaos run. Every choice (operations, values, fault kinds,
 * moments and durations) comes from a generator derived from the run's seed, so a failing
 * run replays its choices from the seed it printed (TigerBeetle's VOPR habit). The
 * interleaving of real processes is not replayed; the choices are.
 */
import { seededRandom } from "../support/random";

/** A seeded generator: the harness's mulberry32 with the picks a run needs. */
export interface Rng {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform integer in [0, n). */
  int(n: number): number;
  /** Uniform integer in [min, max]. */
  between(min: number, max: number): number;
  pick<T>(items: readonly T[]): T;
  chance(p: number): boolean;
  /** `k` distinct items of `items` (all of them when k >= length), in random order. */
  sample<T>(items: readonly T[], k: number): T[];
  shuffle<T>(items: readonly T[]): T[];
  weighted<K extends string>(weights: Record<K, number>): K;
}

export function rng(seed: number): Rng {
  const next = seededRandom(seed);
  const int = (n: number) => Math.floor(next() * n);
  const shuffle = <T>(items: readonly T[]): T[] => {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = int(i + 1);
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  };
  return {
    next,
    int,
    between: (min, max) => min + int(max - min + 1),
    pick: (items) => items[int(items.length)]!,
    chance: (p) => next() < p,
    sample: (items, k) => shuffle(items).slice(0, k),
    shuffle,
    weighted(weights) {
      const entries = Object.entries(weights) as Array<[keyof typeof weights, number]>;
      let r = next() * entries.reduce((s, [, w]) => s + w, 0);
      for (const [key, w] of entries) {
        r -= w;
        if (r < 0) return key;
      }
      return entries[entries.length - 1]![0];
    },
  };
}

/** A generator for one part of the run (a client, a fault lane), independent of the others. */
export function derive(seed: number, label: string): Rng {
  return rng((seed ^ Number(BigInt(Bun.hash.wyhash(label)) & 0x7fffffffn)) | 0);
}

/** The seed from `SEED` when set, else a random one. */
export function seedFromEnv(env: Record<string, string | undefined> = process.env): number {
  if (env.SEED !== undefined && env.SEED !== "") {
    const seed = Number(env.SEED);
    if (!Number.isSafeInteger(seed)) throw new Error(`SEED must be an integer, got ${JSON.stringify(env.SEED)}`);
    return seed;
  }
  return Math.floor(Math.random() * 2 ** 31);
}

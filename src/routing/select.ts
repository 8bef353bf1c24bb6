/**
 * Pure choices of which instance serves a request. They see only a snapshot of each
 * instance, so they are tested without servers.
 */

export interface InstanceView {
  name: string;
  /** 0 is the preferred write target. */
  priority: number;
  /** Healthy and not in maintenance. */
  serving: boolean;
  /** Entries this instance still owes from the log. */
  pendingEntries: number;
  /** Back from an outage and not yet caught up. */
  catchingUp: boolean;
}

/**
 * Write targets in the order they are tried: serving instances that are caught up first
 * (the primary before the others), then those still catching up, fewest owed entries
 * first. So a returning primary takes writes again only once it has caught up.
 */
export function writeCandidates(instances: InstanceView[]): InstanceView[] {
  return instances
    .filter((i) => i.serving)
    .sort((a, b) => {
      const aBehind = a.catchingUp ? 1 : 0;
      const bBehind = b.catchingUp ? 1 : 0;
      if (aBehind !== bBehind) return aBehind - bBehind;
      if (aBehind) return a.pendingEntries - b.pendingEntries || a.priority - b.priority;
      return a.priority - b.priority;
    });
}

/**
 * Read targets in the order they are tried. Instances that have applied what the caller
 * needs (`fresh`) come first; among them a non-primary instance leads with probability
 * `replicaRatio`. Lagging instances follow: the caller brings one up to date before use.
 */
export function readCandidates(
  instances: InstanceView[],
  isFresh: (name: string) => boolean,
  replicaRatio: number,
  random: () => number = Math.random,
): Array<InstanceView & { fresh: boolean }> {
  // An instance back from an outage serves reads only once it has caught up on everything.
  const serving = instances.filter((i) => i.serving).map((i) => ({ ...i, fresh: !i.catchingUp && isFresh(i.name) }));
  const fresh = serving.filter((i) => i.fresh);
  const lagging = serving.filter((i) => !i.fresh).sort((a, b) => a.pendingEntries - b.pendingEntries);
  const primaryFirst = [...fresh].sort((a, b) => a.priority - b.priority);
  let ordered = primaryFirst;
  if (primaryFirst.length > 1) {
    const [primary, ...others] = primaryFirst;
    // Rotate among the non-primary instances so that more than two share the load.
    const offset = others.length > 1 ? Math.floor(random() * others.length) : 0;
    const rotated = [...others.slice(offset), ...others.slice(0, offset)];
    ordered = random() < replicaRatio ? [...rotated, primary!] : [primary!, ...rotated];
  }
  return [...ordered, ...lagging];
}

/**
 * Maintenance and simulated outages, held for the whole cluster.
 *
 * On one node these switches live in the instance registry's memory. With several nodes, a
 * switch moved through one node must hold on all: it is written to `chroma_lb_switches`
 * first (the admin call fails when Postgres does not take it), applied locally at once, and
 * every other node applies the table as it is on its next `syncOnce()`: at the wake-up hint
 * the writer sends (NOTIFY), or at the latest on the next poll (each second).
 *
 * A switch changes what chroma-lb does, never what it reports: a simulated outage only takes
 * an instance out of routing (the registry's rule), and ending it hands the instance back to
 * what each node's own probes see. Nothing here can make an instance look healthy.
 * A simulation's end is stored as a time by Postgres's clock; each node turns the time left
 * (also by Postgres's clock) into its own timer, so nodes' clocks need not agree.
 */
import type postgres from "postgres";
import type { InstanceRegistry } from "../instances/registry";
import type { Logger } from "../observability/log";
import { bounded } from "./bounded";
import { clusterTables } from "./schema";
import { publishHint } from "./wakeups";

interface SwitchRow {
  instance: string;
  kind: "maintenance" | "simulation";
  /** Postgres's set_at in ms: tells one simulation from the next. */
  set_at_ms: number;
  /** Time left of a simulation by Postgres's clock, null when it holds until ended. */
  left_ms: number | null;
}

export interface ClusterSwitchesOptions {
  nodeId: string;
  /** Bound on one statement. */
  statementTimeoutMs: number;
  /** Told when this node's maintenance of an instance ends (the replayer is kicked). */
  onMaintenanceEnded?: (instance: string) => void;
}

/** The switches of every instance, in Postgres, applied to this node's registry. */
export class ClusterSwitches {
  /** The simulation applied per instance (its set_at), so a poll re-applies nothing. */
  private readonly appliedSimulations = new Map<string, number>();
  /** Polls that applied a change, for tests and /status. */
  changesApplied = 0;

  constructor(
    private readonly sql: postgres.Sql,
    private readonly registry: InstanceRegistry,
    private readonly log: Logger,
    private readonly options: ClusterSwitchesOptions,
  ) {}

  /** Stores maintenance of `instance` on or off for the cluster, then applies the table here. */
  async setMaintenance(instance: string, enabled: boolean): Promise<void> {
    const t = this.sql(clusterTables.switches);
    if (enabled) {
      await bounded(
        "maintenance switch",
        this.sql`insert into ${t} (instance, kind, until, set_by, set_at) values (${instance}, 'maintenance', null, ${this.options.nodeId}, clock_timestamp())
                 on conflict (instance, kind) do nothing`,
        this.options.statementTimeoutMs,
      );
    } else {
      await bounded("maintenance switch", this.sql`delete from ${t} where instance = ${instance} and kind = 'maintenance'`, this.options.statementTimeoutMs);
    }
    await this.hint("maintenance", instance);
    await this.syncOnce();
  }

  /** Stores a simulated outage of `instance` for `durationMs` (null: until ended), then applies it here. */
  async simulate(instance: string, durationMs: number | null): Promise<void> {
    await bounded(
      "simulation switch",
      this.sql`insert into ${this.sql(clusterTables.switches)} (instance, kind, until, set_by, set_at)
               values (${instance}, 'simulation', ${durationMs === null ? null : this.sql`clock_timestamp() + make_interval(secs => ${durationMs / 1000})`}, ${this.options.nodeId}, clock_timestamp())
               on conflict (instance, kind) do update set until = excluded.until, set_by = excluded.set_by, set_at = excluded.set_at`,
      this.options.statementTimeoutMs,
    );
    await this.hint("simulation", instance);
    await this.syncOnce();
  }

  /** Ends any simulated outage of `instance` in the cluster, then applies that here. */
  async endSimulation(instance: string): Promise<void> {
    await bounded(
      "simulation switch",
      this.sql`delete from ${this.sql(clusterTables.switches)} where instance = ${instance} and kind = 'simulation'`,
      this.options.statementTimeoutMs,
    );
    await this.hint("simulation", instance);
    await this.syncOnce();
  }

  /** Wakes the other nodes; best effort, as their poll applies the switch anyway. */
  private async hint(what: "maintenance" | "simulation", instance: string) {
    await bounded("switch hint", publishHint(this.sql, this.options.nodeId, { kind: "switch", what, instance }), this.options.statementTimeoutMs).catch(() => {});
  }

  /**
   * One bounded step: reads the switches that hold now (one statement) and makes this
   * node's registry agree. Returns how many instances changed. Throws when Postgres does not
   * answer; the switches then stay as they were until the next poll.
   */
  async syncOnce(): Promise<number> {
    const t = this.sql(clusterTables.switches);
    const rows = await bounded(
      "switches",
      this.sql<SwitchRow[]>`
        select instance, kind,
               (extract(epoch from set_at) * 1000)::float8 as set_at_ms,
               case when until is null then null else greatest(0, extract(epoch from (until - clock_timestamp())) * 1000)::float8 end as left_ms
        from ${t}
        where until is null or until > clock_timestamp()`,
      this.options.statementTimeoutMs,
    );
    let changed = 0;
    for (const instance of this.registry.all) {
      const maintenance = rows.some((r) => r.instance === instance.name && r.kind === "maintenance");
      if (instance.maintenance !== maintenance) {
        instance.maintenance = maintenance;
        changed += 1;
        this.log.warn(maintenance ? "instance in maintenance (cluster switch)" : "instance back from maintenance (cluster switch)", { instance: instance.name });
        if (!maintenance) this.options.onMaintenanceEnded?.(instance.name);
      }
      const simulation = rows.find((r) => r.instance === instance.name && r.kind === "simulation");
      if (simulation) {
        if (this.appliedSimulations.get(instance.name) !== simulation.set_at_ms) {
          this.appliedSimulations.set(instance.name, simulation.set_at_ms);
          this.registry.simulateOutage(instance, simulation.left_ms === null ? null : Math.max(1, Math.round(simulation.left_ms)));
          changed += 1;
        }
      } else {
        this.appliedSimulations.delete(instance.name);
        if (instance.simulated) {
          this.registry.clearSimulation(instance);
          changed += 1;
        }
      }
    }
    if (changed) this.changesApplied += 1;
    return changed;
  }
}

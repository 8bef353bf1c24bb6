/**
 * Protected collections (PROTECTED_COLLECTIONS) are the collections the instances hold
 * under those names, not the names chroma-lb's mappings give them. A mapping is only a name
 * for per-instance UUIDs, and an operator may set one (POST /admin/create_mapping): a
 * mapping under another name that points at a protected collection's UUIDs would let a
 * rename or a delete reach it. So protection follows the UUIDs:
 * - no mapping may point at a protected collection's UUID under another name, nor replace
 *   the UUIDs of a protected collection's own mapping;
 * - before a rename or a delete, what the target is on each instance is checked: its UUIDs
 *   against every protected mapping, and, on each instance that answers, the name that
 *   instance gives the UUID (a rename goes by UUID) and the UUID it gives the name (a delete
 *   goes by name).
 */
import type { Config } from "../config";
import { databasePath } from "../chroma/paths";
import { forbidden } from "../errors";
import type { Instance, InstanceRegistry } from "../instances/registry";
import type { CollectionRecord, CollectionStore } from "./store";

export interface ProtectionDeps {
  config: Pick<Config, "protectedCollections" | "requestTimeoutMs">;
  collections: CollectionStore;
  registry: InstanceRegistry;
}

/** Collections listed per page when an instance is asked what a UUID is. */
const listPageSize = 100;
/** Pages read at most per question: a bound on the work one admin request may cause. */
const listPagesMax = 1_000;

export class Protection {
  constructor(private readonly deps: ProtectionDeps) {}

  isProtectedName(name: string): boolean {
    return this.deps.config.protectedCollections.includes(name);
  }

  /** The active protected mapping that holds `uuid` on `instance`, if any. */
  protectedOwnerOf(instance: string, uuid: string): CollectionRecord | undefined {
    return this.deps.collections
      .list()
      .find((c) => this.isProtectedName(c.name) && c.instanceUuids.get(instance) === uuid);
  }

  /**
   * Refuses (403) a mapping of `name` to `uuids` (instance name -> UUID) that would point at
   * a protected collection under another name, or replace a protected mapping's UUIDs.
   * Checks chroma-lb's mappings, then each instance that answers.
   */
  async refuseMapping(tenant: string, database: string, name: string, uuids: Map<string, string>): Promise<void> {
    const existing = this.deps.collections.byName(tenant, database, name);
    for (const [instanceName, uuid] of uuids) {
      if (existing && this.isProtectedName(existing.name)) {
        const held = existing.instanceUuids.get(instanceName);
        if (held !== undefined && held !== uuid) {
          throw forbidden(`The mapping of ${name} is protected (PROTECTED_COLLECTIONS): its UUID on ${instanceName} (${held}) cannot be replaced`);
        }
      }
      const owner = this.protectedOwnerOf(instanceName, uuid);
      if (owner && !(owner.tenant === tenant && owner.database === database && owner.name === name)) {
        throw forbidden(`${uuid} on ${instanceName} is protected collection ${owner.name} (PROTECTED_COLLECTIONS); no other mapping may point at it`);
      }
      const instance = this.deps.registry.get(instanceName);
      const onInstance = instance ? await this.nameOnInstance(instance, tenant, database, uuid) : null;
      if (onInstance !== null && onInstance !== name && this.isProtectedName(onInstance)) {
        throw forbidden(`${uuid} on ${instanceName} is protected collection ${onInstance} (PROTECTED_COLLECTIONS); no other mapping may point at it`);
      }
    }
  }

  /**
   * Refuses (403) renaming or deleting `record` when it is, on any instance, a protected
   * collection: by its name, by its UUIDs in the mappings, or by what an instance answers.
   */
  async refuseChange(record: CollectionRecord, action: "renamed" | "deleted"): Promise<void> {
    const suffix = action === "renamed" ? "cannot be renamed" : "cannot be deleted through chroma-lb";
    if (this.isProtectedName(record.name)) throw forbidden(`Collection [${record.name}] is protected (PROTECTED_COLLECTIONS) and ${suffix}`);
    const refuse = (protectedName: string, instanceName: string) =>
      forbidden(`Collection [${record.name}] is protected collection ${protectedName} on instance ${instanceName} (PROTECTED_COLLECTIONS) and ${suffix}`);
    for (const [instanceName, uuid] of record.instanceUuids) {
      const owner = this.protectedOwnerOf(instanceName, uuid);
      if (owner && owner.id !== record.id) throw refuse(owner.name, instanceName);
    }
    for (const instance of this.deps.registry.all) {
      if (!instance.serving) continue;
      // A rename reaches the instance by UUID: what does the instance call that UUID?
      const uuid = record.instanceUuids.get(instance.name);
      const named = uuid ? await this.nameOnInstance(instance, record.tenant, record.database, uuid) : null;
      if (named !== null && this.isProtectedName(named)) throw refuse(named, instance.name);
      // A delete reaches the instance by name: which collection does the instance give that name?
      if (action === "deleted") {
        const held = await this.uuidOnInstance(instance, record.tenant, record.database, record.name);
        const owner = held ? this.protectedOwnerOf(instance.name, held) : undefined;
        if (owner && owner.id !== record.id) throw refuse(owner.name, instance.name);
      }
    }
  }

  /** The name `instance` gives `uuid` in the database, or null (not there, or no answer). */
  private async nameOnInstance(instance: Instance, tenant: string, database: string, uuid: string): Promise<string | null> {
    const path = `${databasePath(tenant, database)}/collections`;
    for (let page = 0; page < listPagesMax; page++) {
      const result = await instance.client.json<Array<{ id?: string; name?: string }>>(
        "GET",
        `${path}?limit=${listPageSize}&offset=${page * listPageSize}`,
        undefined,
        this.deps.config.requestTimeoutMs,
      );
      const list = result.json;
      if (!result.ok || result.status !== 200 || !Array.isArray(list)) return null;
      const found = list.find((c) => c.id === uuid);
      if (found) return typeof found.name === "string" ? found.name : null;
      if (list.length < listPageSize) return null;
    }
    return null;
  }

  /** The UUID `instance` holds under `name` in the database, or null. */
  private async uuidOnInstance(instance: Instance, tenant: string, database: string, name: string): Promise<string | null> {
    const result = await instance.client.json<{ id?: string }>(
      "GET",
      `${databasePath(tenant, database)}/collections/${encodeURIComponent(name)}`,
      undefined,
      this.deps.config.requestTimeoutMs,
    );
    return result.ok && result.status === 200 && typeof result.json?.id === "string" ? result.json.id : null;
  }
}

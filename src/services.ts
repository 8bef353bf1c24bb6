/**
 * Every long-lived service of one chroma-lb process, built once by `buildServices`
 * (server.ts) and handed to the app, the schedules and the admin endpoints. Modules that
 * need only a few take a `Pick<Services, ...>`.
 */
import type { Adoption } from "./collections/adoption";
import type { Mirror } from "./collections/mirror";
import type { CollectionStore } from "./collections/store";
import type { Config } from "./config";
import type { InstanceRegistry } from "./instances/registry";
import type { Logger } from "./observability/log";
import type { Replayer } from "./replay/replayer";
import type { BatchSizer } from "./replay/sizing";
import type { KeyedMutex } from "./util/mutex";
import type { WriteAheadLog } from "./wal/log";
import type { WritePath } from "./writes/pipeline";

export interface Services {
  config: Config;
  log: Logger;
  wal: WriteAheadLog;
  collections: CollectionStore;
  registry: InstanceRegistry;
  replayer: Replayer;
  sizer: BatchSizer;
  adoption: Adoption;
  mirror: Mirror | null;
  /** One lock per collection (and `meta`): writes, and copies made by adoption, take it. */
  writeLocks: KeyedMutex;
  writes: WritePath;
  startedAtMs: number;
  close(): Promise<void>;
}

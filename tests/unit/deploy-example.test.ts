/**
 * The Kubernetes example stays loadable: its manifests parse, and the environment it gives
 * chroma-lb passes loadConfig (secrets and field references filled with sample values).
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { loadConfig } from "../../src/config";

const dir = join(import.meta.dir, "..", "..", "deploy", "kubernetes");
const parse = async (file: string) => [Bun.YAML.parse(await Bun.file(join(dir, file)).text())].flat() as Array<Record<string, any>>;

test("the example holds a Deployment of 2 nodes, a Service, a PodDisruptionBudget and the Secret they name", async () => {
  const docs = await parse("chroma-lb.yaml");
  expect(docs.map((d) => d.kind)).toEqual(["Deployment", "Service", "PodDisruptionBudget"]);
  const [deployment] = docs;
  expect(deployment!.spec.replicas).toBe(2);
  const container = deployment!.spec.template.spec.containers[0];
  expect(container.readinessProbe.httpGet.path).toBe("/health");
  expect(container.livenessProbe).toBeDefined();
  expect(container.resources.limits.memory).toBeDefined();
  expect(deployment!.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThan(5);
  const secretNames = container.env.filter((e: any) => e.valueFrom?.secretKeyRef).map((e: any) => e.valueFrom.secretKeyRef.name);
  const [secret] = await parse("secret.example.yaml");
  expect(new Set(secretNames)).toEqual(new Set([secret!.metadata.name]));
  expect(Object.keys(secret!.stringData).sort()).toEqual(["ADMIN_TOKEN", "DATABASE_URL"]);
});

test("the environment the example gives chroma-lb is a valid configuration", async () => {
  const [deployment] = await parse("chroma-lb.yaml");
  const [secret] = await parse("secret.example.yaml");
  const env: Record<string, string> = {};
  for (const e of deployment!.spec.template.spec.containers[0].env) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom.secretKeyRef) env[e.name] = secret!.stringData[e.valueFrom.secretKeyRef.key];
    else if (e.valueFrom.fieldRef?.fieldPath === "metadata.name") env[e.name] = "chroma-lb-7d9f8c6b5-x2x4k";
    else if (e.valueFrom.fieldRef?.fieldPath === "status.podIP") env[e.name] = "10.0.0.7";
  }
  // Kubernetes expands $(NAME) of variables defined earlier in the list.
  for (const [name, value] of Object.entries(env)) env[name] = value.replace(/\$\((\w+)\)/g, (_, v: string) => env[v] ?? `$(${v})`);
  expect(env.LOG_STORE).toBe("postgres");
  const config = loadConfig(env);
  expect(config.nodeId).toBe("chroma-lb-7d9f8c6b5-x2x4k");
  expect(config.nodeAddress).toBe("http://10.0.0.7:8000");
  expect(config.databaseUrl).toStartWith("postgres://");
  expect(config.instances.map((i) => i.name)).toEqual(["primary", "replica"]);
});

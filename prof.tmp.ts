import { startLbInProcess } from "./tests/support";
const T = "/api/v2/tenants/default_tenant/databases/default_database";
const uuid = "0f6c6a43-5a3e-4a8e-9d39-6c1b7f2a9e11";
const getAnswer = JSON.stringify({ ids: ["a"], documents: ["x"], metadatas: [{ n: 1 }], embeddings: null, uris: null, include: ["documents", "metadatas"] });
function fake() {
  const s = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch(req) {
    const p = new URL(req.url).pathname;
    if (p === "/api/v2/heartbeat") return Response.json({ "nanosecond heartbeat": 1 });
    if (p === "/api/v2/pre-flight-checks") return Response.json({ max_batch_size: 100, supports_base64_encoding: true });
    if (p === "/api/v2/tenants/default_tenant/databases") return Response.json([{ id: "d", name: "default_database", tenant: "default_tenant" }]);
    if (p === `${T}/collections`) return Response.json([{ id: uuid, name: "docs", configuration_json: {}, metadata: null, dimension: 2, tenant: "default_tenant", database: "default_database", log_position: 0, version: 0 }]);
    if (p.endsWith("/get")) return new Response(getAnswer, { headers: { "content-type": "application/json" } });
    if (p.endsWith("/add")) return new Response("{}", { status: 201, headers: { "content-type": "application/json" } });
    return new Response(null, { status: 404 });
  }});
  return `http://127.0.0.1:${s.port}`;
}
const a = fake(), b = fake();
const lb = await startLbInProcess({ CHROMA_PRIMARY_URL: a, CHROMA_REPLICA_URL: b, LOG_LEVEL: "error" });
const body = JSON.stringify({ ids: ["a"], include: ["documents", "metadatas"] });
async function run(base: string, path: string, n: number) {
  const t: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    const r = await fetch(base + path, { method: "POST", headers: { "content-type": "application/json" }, body });
    await r.arrayBuffer();
    t.push(performance.now() - s);
  }
  t.sort((x, y) => x - y);
  return t[Math.floor(n / 2)]!.toFixed(3);
}
for (let k = 0; k < 0; k++) {
  console.log("direct", await run(a, `${T}/collections/${uuid}/get`, 2000), "lb", await run(lb.url, `${T}/collections/docs/get`, 2000));
}
const addBody = JSON.stringify({ ids: ["z"], embeddings: [[1, 2]] });
const t: number[] = [];
for (let i = 0; i < 3000; i++) { const s = performance.now(); const r = await fetch(`${lb.url}${T}/collections/docs/add`, { method: "POST", headers: { "content-type": "application/json" }, body: addBody.replace("z", "z" + i) }); await r.arrayBuffer(); t.push(performance.now() - s); }
t.sort((x, y) => x - y); console.log("add p50", t[1500]!.toFixed(3));
await lb.stop(); process.exit(0);

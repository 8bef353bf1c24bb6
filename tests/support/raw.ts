/**
 * Comparing Chroma answers as text. A `get` answer is put in one canonical form (records in
 * id order, metadata keys sorted, since Chroma fixes neither) with every value's text left
 * exactly as the server wrote it, so `1` and `1.0` still differ.
 */
import { readRecordPage, recordFields, sortedObjectText } from "../../src/repair/records";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The canonical text of a `get` answer (see above). */
export function canonicalGet(answer: Uint8Array | string): string {
  const bytes = typeof answer === "string" ? encoder.encode(answer) : answer;
  const page = readRecordPage(bytes);
  if (!page) throw new Error(`not a get answer: ${decoder.decode(bytes).slice(0, 200)}`);
  const order = page.ids.map((_, i) => i).sort((a, b) => (page.ids[a]! < page.ids[b]! ? -1 : page.ids[a]! > page.ids[b]! ? 1 : 0));
  const parts = [`"ids":[${order.map((i) => JSON.stringify(page.ids[i])).join(",")}]`];
  for (const field of recordFields) {
    const items = page.fields[field];
    if (!items) continue;
    const rendered = order.map((i) => (field === "metadatas" ? sortedObjectText(items[i]!) : decoder.decode(items[i]!)));
    parts.push(`${JSON.stringify(field)}:[${rendered.join(",")}]`);
  }
  return `{${parts.join(",")}}`;
}

/** POSTs raw bytes as JSON and answers the raw answer text. */
export async function postRaw(url: string, body: string): Promise<{ status: number; text: string; headers: Headers }> {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body });
  return { status: res.status, text: await res.text(), headers: res.headers };
}

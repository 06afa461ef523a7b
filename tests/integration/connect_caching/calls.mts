// Makes GetJWKS calls with the TypeScript SDK, one after another on one client, and prints one
// JSON line per call: the key ids answered, or the error. Driven by
// tests/integration/test_connect_caching.py, run from sdk/typescript with tsx.
//
// Usage: node --import tsx calls.mts BASE_URL COUNT
import { Client } from "../../../sdk/typescript/src/index.js";

const [baseUrl, countText] = process.argv.slice(2);
const count = Number(countText);
if (baseUrl === undefined || !Number.isInteger(count) || count < 1) {
  console.error("usage: calls.mts BASE_URL COUNT");
  process.exit(2);
}
const client = new Client({ baseUrl, apiKey: "sk-cache-test" });
for (let call = 0; call < count; call++) {
  try {
    const answer = await client.auth.getJWKS({});
    console.log(JSON.stringify({ kids: answer.keys.map((key) => key.kid) }));
  } catch (err) {
    console.log(JSON.stringify({ kids: [], error: String(err) }));
  }
}

// The page the browser test loads from another origin than the server's: it bundles the SDK as a
// web application would (esbuild, from the built package), calls GetJWKS with an API key (so the
// browser sends a CORS preflight first), and lists the kids in the page.
//
// Query parameters: `server`, the server's base URL; `peer`, the error-forcing peer's base URL.

import { Client, Code, ConnectError } from "@tetrate/agentrouter-sdk";

const API_KEY = "browser-api-key";

interface Outcome {
  kids?: string[];
  serverError?: string;
  peerKids?: string[];
  peerError?: { code: string; message: string } | string;
}

function element(id: string): HTMLElement {
  const found = document.getElementById(id);
  if (found === null) {
    throw new Error(`the page has no #${id}`);
  }
  return found;
}

async function run(params: URLSearchParams): Promise<Outcome> {
  const outcome: Outcome = {};
  try {
    const client = new Client({ baseUrl: params.get("server") ?? undefined, apiKey: API_KEY });
    const answer = await client.auth.getJWKS({});
    outcome.kids = answer.keys.map((key) => key.kid);
  } catch (err) {
    outcome.serverError = String(err);
  }
  const peer = params.get("peer");
  if (peer !== null) {
    const ok = new Client({ baseUrl: `${peer}/browser/`, apiKey: API_KEY });
    outcome.peerKids = (await ok.auth.getJWKS({})).keys.map((key) => key.kid);
    try {
      await new Client({ baseUrl: `${peer}/browser/fail/not_found`, apiKey: API_KEY }).auth.getJWKS({});
    } catch (err) {
      outcome.peerError =
        err instanceof ConnectError ? { code: Code[err.code], message: err.rawMessage } : String(err);
    }
  }
  return outcome;
}

const result = element("result");
try {
  const outcome = await run(new URLSearchParams(location.search));
  const list = element("kids");
  for (const kid of outcome.kids ?? []) {
    const item = document.createElement("li");
    item.textContent = kid;
    list.append(item);
  }
  result.textContent = JSON.stringify(outcome);
} catch (err) {
  result.textContent = JSON.stringify({ pageError: String(err) });
}
result.dataset["done"] = "true";

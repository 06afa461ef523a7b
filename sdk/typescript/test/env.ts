// What the tests run against, from the environment that `pytest tests/interop/test_sdk_typescript.py`
// sets: the real server, the error-forcing peer (tests/interop/peer.py) and the server's kids.

import { randomUUID } from "node:crypto";

/** The method's path under any base URL. */
export const METHOD_PATH = "/agentrouter.auth.v1.AuthService/GetJWKS";

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: run these tests through \`pytest tests/interop/test_sdk_typescript.py\`, ` +
        "which starts the server and the peer they call",
    );
  }
  return value;
}

/** The real server's base URL. */
export function serverUrl(): string {
  return required("AGENTROUTER_TEST_SERVER_URL");
}

/** The peer's base URL. */
export function peerUrl(): string {
  return required("AGENTROUTER_TEST_PEER_URL");
}

/** The base URL of the peer's HTTPS listener (its CA is in NODE_EXTRA_CA_CERTS). */
export function peerTlsUrl(): string {
  return required("AGENTROUTER_TEST_PEER_TLS_URL");
}

/** The kids the real server serves, in its order. */
export function servedKids(): string[] {
  return required("AGENTROUTER_TEST_KIDS").split(",");
}

/** A path prefix no other test uses, so a test finds its own requests among the peer's. */
export function uniquePrefix(): string {
  return `/t-${randomUUID()}`;
}

/** One request as the peer recorded it (header names lower-cased). */
export interface Recorded {
  method: string;
  path: string;
  query: string;
  headers: Record<string, string>;
  /** The origin the request was sent to: the listener's scheme and the Host header. */
  origin: string;
}

/** The requests the peer received under `prefix`, oldest first. */
export async function sentUnder(prefix: string): Promise<Recorded[]> {
  const response = await fetch(`${peerUrl()}/_requests`);
  if (!response.ok) {
    throw new Error(`the peer's /_requests answered ${response.status}`);
  }
  const all = (await response.json()) as Recorded[];
  return all.filter((request) => request.path.startsWith(`${prefix}/`));
}

/** The one request the peer received under `prefix`. */
export async function onlySentUnder(prefix: string): Promise<Recorded> {
  const requests = await sentUnder(prefix);
  const [only] = requests;
  if (only === undefined || requests.length !== 1) {
    throw new Error(`expected one request under ${prefix}, the peer got ${requests.length}`);
  }
  return only;
}

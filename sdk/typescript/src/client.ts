// The SDK client: one object per AgentRouter endpoint, one property per service.

import type { MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Client as ConnectClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";

import { boundedFetch } from "./bounded-fetch.js";
import * as tars_auth_v1_auth_pb from "./gen/tars/auth/v1/auth_pb.js";
import type {
  GetJWKSResponse,
  GetOpenIDConfigurationResponse,
} from "./gen/tars/auth/v1/auth_pb.js";
import { VERSION } from "./version.js";

/** How long a call may take when neither the client nor the call says otherwise. */
export const DEFAULT_TIMEOUT_MS = 10_000;

/** What a response may hold, received and decompressed, unless the client says otherwise. */
export const DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

/** Names the SDK and its version to the server, on every call. */
export const USER_AGENT = `agentrouter-sdk-typescript/${VERSION}`;

/** What `new Client(...)` takes. */
export interface ClientOptions {
  /**
   * The AgentRouter endpoint: an absolute `http://` or `https://` URL, optionally with a path
   * prefix (with or without a trailing slash), without query or fragment.
   * Typed to accept `process.env.AGENTROUTER_BASE_URL` as is; a missing value is refused when
   * the client is made.
   */
  baseUrl: string | undefined;
  /** Sent as `Authorization: Bearer <apiKey>` on every call; no header when empty or absent. */
  apiKey?: string | undefined;
  /**
   * The deadline of each call in milliseconds (default 10 000), sent as `connect-timeout-ms`.
   * It covers reading the answer: a call past it rejects with `Code.DeadlineExceeded`. At most
   * 2^31 - 1 (about 24.8 days, the longest timer): a longer one is cut to it.
   */
  timeoutMs?: number | undefined;
  /**
   * The most a response may hold, in bytes, received and decompressed (default 4 MiB). A call
   * whose response is larger rejects with `Code.ResourceExhausted` without reading the rest.
   */
  maxResponseBytes?: number | undefined;
  /** A fetch implementation to use instead of `globalThis.fetch`. */
  fetch?: typeof globalThis.fetch | undefined;
}

/** What one call may take besides its request. */
export interface CallOptions {
  /** The deadline of this call in milliseconds, instead of the client's. */
  timeoutMs?: number | undefined;
  /** Cancels the call when aborted: it then rejects with `Code.Canceled`. */
  signal?: AbortSignal | undefined;
}

/** AuthService: the public key set that verifies AgentRouter's tokens. */
export class AuthClient {
  readonly #client: ConnectClient<typeof tars_auth_v1_auth_pb.AuthService>;

  /** @internal Made by `Client`. */
  constructor(client: ConnectClient<typeof tars_auth_v1_auth_pb.AuthService>) {
    this.#client = client;
  }

  /**
   * The JSON Web Key Set. Sent as a Connect GET, so HTTP caches can serve it.
   * Rejects with a `ConnectError` carrying the Connect code and message.
   */
  async getJWKS(
    req: MessageInitShape<typeof tars_auth_v1_auth_pb.GetJWKSRequestSchema>,
    options?: CallOptions,
  ): Promise<GetJWKSResponse> {
    return await this.#client.getJWKS(req, callOptions(options));
  }

  /**
   * The issuer's OpenID Connect Discovery document: its `issuer`, its `jwks_uri` and the
   * algorithms its keys sign with. Sent as a Connect GET, as `getJWKS` is.
   * Rejects with a `ConnectError` carrying the Connect code and message.
   */
  async getOpenIDConfiguration(
    req: MessageInitShape<typeof tars_auth_v1_auth_pb.GetOpenIDConfigurationRequestSchema> = {},
    options?: CallOptions,
  ): Promise<GetOpenIDConfigurationResponse> {
    return await this.#client.getOpenIDConfiguration(req, callOptions(options));
  }
}

function callOptions(options: CallOptions | undefined): {
  timeoutMs?: number;
  signal?: AbortSignal;
} {
  const timeoutMs = options?.timeoutMs;
  return {
    ...(timeoutMs === undefined ? {} : { timeoutMs: checkTimeout(timeoutMs) }),
    ...(options?.signal === undefined ? {} : { signal: options.signal }),
  };
}

/** @internal What a client was made with, for the key set cache's plain GETs. */
export interface ClientSettings {
  /** The base URL as checked, ending with a slash. */
  readonly baseUrl: string;
  readonly apiKey: string | undefined;
  readonly timeoutMs: number;
  readonly fetch: () => typeof globalThis.fetch;
}

const settingsOf = new WeakMap<Client, ClientSettings>();

/** @internal The settings `client` was made with (not part of the package's exports). */
export function clientSettings(client: Client): ClientSettings {
  const settings = settingsOf.get(client);
  if (settings === undefined) {
    throw new Error("not a Client made by new Client(...)");
  }
  return settings;
}

/**
 * An AgentRouter endpoint. The API key is sent as a bearer token on every call, and never
 * follows a redirect: fetch is told to refuse them (connect-web's `redirect: "error"`).
 */
export class Client {
  /** AuthService: the public key set that verifies AgentRouter's tokens. */
  readonly auth: AuthClient;

  /** Throws an `Error` saying why when the base URL or the timeout is not usable. */
  constructor(options: ClientOptions) {
    const baseUrl = checkBaseUrl(options.baseUrl);
    const timeoutMs = checkTimeout(options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    const maxBytes = checkMaxResponseBytes(options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES);
    const fetchImpl = options.fetch;
    const transport = createConnectTransport({
      baseUrl,
      // Binary protobuf, and GET for side-effect-free methods: a GET that is not compressed
      // has a stable URL, so HTTP caches can serve it.
      useBinaryFormat: true,
      useHttpGet: true,
      defaultTimeoutMs: timeoutMs,
      interceptors: [headers(requestHeaders(options.apiKey))],
      // globalThis.fetch is looked up on each call, as connect-web itself does.
      fetch: boundedFetch(() => fetchImpl ?? globalThis.fetch, maxBytes),
    });
    this.auth = new AuthClient(createClient(tars_auth_v1_auth_pb.AuthService, transport));
    settingsOf.set(this, {
      baseUrl: baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`,
      apiKey: options.apiKey,
      timeoutMs,
      fetch: () => fetchImpl ?? globalThis.fetch,
    });
  }
}

/** The base URL as the transport takes it, or an Error saying what is wrong with it. */
function checkBaseUrl(baseUrl: string | undefined): string {
  const expected = "an absolute http:// or https:// URL with a host, without query or fragment";
  if (baseUrl === undefined || baseUrl.trim() === "") {
    throw new Error(`baseUrl is required: ${expected}, such as https://api.example.com`);
  }
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    throw new Error(`baseUrl must be ${expected}, got ${JSON.stringify(baseUrl)}`);
  }
  if (
    // As written, not as URL repairs it: "http:///x" would become "http://x/".
    !/^https?:\/\/[^/\\?#]/i.test(baseUrl) ||
    (url.protocol !== "http:" && url.protocol !== "https:") ||
    url.hostname === "" ||
    baseUrl.includes("?") ||
    baseUrl.includes("#")
  ) {
    throw new Error(`baseUrl must be ${expected}, got ${JSON.stringify(baseUrl)}`);
  }
  if (url.username !== "" || url.password !== "") {
    // fetch refuses such URLs on every call; say so once, here.
    throw new Error(
      `baseUrl must not carry credentials (pass apiKey instead), got ${JSON.stringify(baseUrl)}`,
    );
  }
  // The transport appends "/<service>/<method>" after removing one trailing slash.
  return url.href;
}

/** The longest timer setTimeout keeps (2^31 - 1 ms, about 24.8 days): a longer one fires
 * after 1 ms, so every call would end at once. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** A timeout in whole milliseconds, at most MAX_TIMEOUT_MS, or an Error: Connect's header
 * takes a positive integer. */
function checkTimeout(timeoutMs: number): number {
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new Error(`timeoutMs must be a positive number of milliseconds, got ${timeoutMs}`);
  }
  return Math.min(Math.ceil(timeoutMs), MAX_TIMEOUT_MS);
}

/** A response limit in bytes, or an Error: a positive whole number. */
function checkMaxResponseBytes(maxBytes: number): number {
  if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) {
    throw new Error(`maxResponseBytes must be a positive whole number of bytes, got ${maxBytes}`);
  }
  return maxBytes;
}

/** The headers every call carries. */
function requestHeaders(apiKey: string | undefined): [string, string][] {
  const result: [string, string][] = [["x-user-agent", USER_AGENT]];
  if (isNode()) {
    // Browsers own User-Agent; Connect's convention there is X-User-Agent (sent everywhere).
    result.push(["user-agent", USER_AGENT]);
  }
  if (apiKey) {
    result.push(["authorization", `Bearer ${apiKey}`]);
  }
  return result;
}

function headers(fixed: [string, string][]): Interceptor {
  return (next) => (req) => {
    for (const [name, value] of fixed) {
      req.header.set(name, value);
    }
    return next(req);
  };
}

/** True in Node.js (and runtimes compatible with it), where fetch lets a caller set User-Agent. */
export function isNode(): boolean {
  const runtime = globalThis as { process?: { versions?: { node?: unknown } } };
  return typeof runtime.process?.versions?.node === "string";
}

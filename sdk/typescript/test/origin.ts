// What the key cache's and the verifier's tests run against without the real server: a local
// HTTP origin (node:http) that serves a key set as told and counts what it receives, signing
// keys made here (node:crypto), and a clock the test moves.

import { createHash, generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after } from "node:test";

import { Client, KeySetCache, TokenVerifier, type KeySetCacheOptions } from "../src/index.js";

/** A clock the test moves; it starts at the real time (tokens from `token sign` carry it). */
export class FakeClock {
  #ms = Date.now();
  readonly now = (): number => this.#ms;
  advance(ms: number): void {
    this.#ms += ms;
  }
  /** The cache options that put both its clocks (wall and monotonic) on this one. */
  get clocks(): { now: () => number; monotonicNow: () => number } {
    return { now: this.now, monotonicNow: this.now };
  }
}

/** Swallows the cache's reports, and counts them. */
export class Logs {
  readonly warnings: string[] = [];
  readonly infos: string[] = [];
  warn(message: string): void {
    this.warnings.push(message);
  }
  info(message: string): void {
    this.infos.push(message);
  }
}

export type Alg = "ES256" | "RS256" | "EdDSA";

let kids = 0;

/** A key pair whose public half goes in a set, and which signs tokens. */
export class SigningKey {
  readonly kid: string;
  readonly alg: Alg;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;

  constructor(alg: Alg) {
    this.alg = alg;
    this.kid = `${alg.toLowerCase()}-${++kids}-${process.pid}`;
    const pair =
      alg === "ES256"
        ? generateKeyPairSync("ec", { namedCurve: "P-256" })
        : alg === "RS256"
          ? generateKeyPairSync("rsa", { modulusLength: 2048 })
          : generateKeyPairSync("ed25519");
    this.privateKey = pair.privateKey;
    this.publicKey = pair.publicKey;
  }

  /** The public JWK as the server publishes it. */
  jwk(): Record<string, unknown> {
    return { ...this.publicKey.export({ format: "jwk" }), kid: this.kid, alg: this.alg, use: "sig" };
  }

  /** A token with this key's kid and alg and the given claims (header members may be added). */
  sign(claims: Record<string, unknown>, header: Record<string, unknown> = {}): string {
    const head = Buffer.from(JSON.stringify({ alg: this.alg, kid: this.kid, typ: "JWT", ...header }));
    return this.signBytes(head, Buffer.from(JSON.stringify(claims)));
  }

  /** A token whose header and payload parts are these bytes, validly signed. */
  signBytes(header: Uint8Array, payload: Uint8Array): string {
    const input = `${Buffer.from(header).toString("base64url")}.${Buffer.from(payload).toString("base64url")}`;
    const data = Buffer.from(input);
    const signature =
      this.alg === "EdDSA"
        ? sign(null, data, this.privateKey)
        : sign("sha256", data, { key: this.privateKey, dsaEncoding: "ieee-p1363" });
    return `${input}.${signature.toString("base64url")}`;
  }
}

/** base64url of a JSON value. */
export function b64(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

/** A token of the given header and claims, with any signature bytes. */
export function rawToken(header: unknown, claims: unknown, signature: Uint8Array): string {
  return `${b64(header)}.${b64(claims)}.${Buffer.from(signature).toString("base64url")}`;
}

export const ISSUER = "https://auth.example.test";

/** Claims that verify at `now` (ms) for ISSUER and audience "api". */
export function claimsFor(now: number): Record<string, unknown> {
  const seconds = Math.floor(now / 1000);
  return { iss: ISSUER, aud: "api", sub: "svc", iat: seconds, nbf: seconds, exp: seconds + 300 };
}

/** The local origin: serves `body` with the headers it is told, counting requests. */
export class Origin {
  url = "";
  requests = 0;
  /** Requests that carried If-None-Match, and those answered 304. */
  conditional = 0;
  notModified = 0;
  /** The Authorization header of each request ("" when absent). */
  readonly auth: string[] = [];
  status = 200;
  body: Buffer = Buffer.alloc(0);
  etag = "";
  cacheControl = "max-age=10, stale-while-revalidate=20, stale-if-error=100";
  /** When set, answers wait for it. */
  hold: Promise<void> | undefined;
  readonly #server = createServer((req, res) => void this.#answer(req, res));

  /** Serves a set of these keys. */
  publish(...keys: SigningKey[]): void {
    this.setBody(Buffer.from(JSON.stringify({ keys: keys.map((key) => key.jwk()) })));
  }

  /** Serves these bytes, with an ETag of their hash. */
  setBody(body: Buffer): void {
    this.body = body;
    this.etag = `"${createHash("sha256").update(body).digest("hex").slice(0, 16)}"`;
  }

  async #answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.requests++;
    this.auth.push(req.headers.authorization ?? "");
    const condition = req.headers["if-none-match"];
    if (condition !== undefined) this.conditional++;
    if (this.hold !== undefined) await this.hold;
    const headers: Record<string, string> = {};
    if (this.cacheControl !== "") headers["cache-control"] = this.cacheControl;
    if (this.status === 200 && this.etag !== "") headers["etag"] = this.etag;
    if (this.status === 200 && condition === this.etag) {
      this.notModified++;
      res.writeHead(304, headers).end();
      return;
    }
    res.writeHead(this.status, { ...headers, "content-type": "application/json" }).end(this.body);
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
    after(() => {
      this.#server.closeAllConnections();
      this.#server.close();
    });
    return this;
  }

  /** A client of this origin. */
  client(apiKey?: string): Client {
    return new Client({ baseUrl: this.url, apiKey, timeoutMs: 5000 });
  }

  /** A cache over this origin's GetJWKS, on `clock`, reporting to `logs`. */
  cache(clock: FakeClock, options: KeySetCacheOptions = {}, logs = new Logs()): KeySetCache {
    return new KeySetCache(this.client(), { ...clock.clocks, logger: logs, ...options });
  }
}

/** A started origin serving `keys`. */
export async function origin(...keys: SigningKey[]): Promise<Origin> {
  const started = await new Origin().start();
  started.publish(...keys);
  return started;
}

/** A verifier for ISSUER and audience "api" over `cache`. */
export function verifierOver(cache: KeySetCache): TokenVerifier {
  return new TokenVerifier(cache, { issuer: ISSUER, audience: "api" });
}

/** Polls `check` until it holds, for at most 10 s. */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// The key set that verifies tokens, cached as the server's HTTP caching says.

import { importJWK, type JWK as JoseJWK } from "jose";

import { boundedFetch } from "./bounded-fetch.js";
import { USER_AGENT, clientSettings, isNode, type Client } from "./client.js";
import { InvalidTokenError, KeysUnavailableError } from "./errors.js";

/** The most a key set's answer may hold, decompressed, unless `maxJwksBytes` says otherwise. */
export const DEFAULT_JWKS_MAX_BYTES = 1024 * 1024;

/** The most keys a set may hold: a larger one is refused whole. */
export const MAX_JWKS_KEYS = 256;

/** The least time between two refreshes caused by a token whose kid the cached set lacks,
 * unless `unknownKidCooldownMs` says otherwise. */
export const DEFAULT_UNKNOWN_KID_COOLDOWN_MS = 30_000;

/** The freshness of an answer whose max-age is missing or unreadable. */
const DEFAULT_MAX_AGE_MS = 300_000;
/** The most freshness an answer may claim. */
const MAX_MAX_AGE_MS = 24 * 3600_000;
/** The wait before retrying after a failed refresh: 1 s, doubling, at most 60 s. */
const FIRST_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 60_000;

/** GetJWKS as a Connect GET answered in JSON: the RFC 7517 document itself. */
const CONNECT_GET_JWKS =
  "agentrouter.auth.v1.AuthService/GetJWKS?connect=v1&encoding=json&message=%7B%7D";

/** The algorithms a key may declare, each with its key type and curve. */
const ALLOWED_KEYS: Readonly<Record<string, { kty: string; crv: string | undefined }>> = {
  ES256: { kty: "EC", crv: "P-256" },
  RS256: { kty: "RSA", crv: undefined },
  EdDSA: { kty: "OKP", crv: "Ed25519" },
};

/** @internal The algorithms of the allow-list. */
export function isAllowedAlg(alg: unknown): alg is string {
  return typeof alg === "string" && Object.hasOwn(ALLOWED_KEYS, alg);
}

/** The JWK members of a private or symmetric key (RFC 7518 §6). */
const PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/** RSA keys below 2048 bits are skipped (RFC 7518 §3.3). */
const MIN_RSA_BITS = 2048;
/** RSA keys over 4096 bits are skipped, as the Go SDK's go-jose does (MaxRSAModulusBits): no
 * issuer uses more, and the modulus's prime test costs about 8 times more at every doubling of
 * the size (a 16384-bit n takes seconds). */
const MAX_RSA_BITS = 4096;

/** A usable key of the set: its kid, the algorithm it declares, and the key itself. */
export interface PublicKey {
  readonly kid: string;
  readonly alg: string;
  readonly key: CryptoKey | Uint8Array;
}

/** Where a failed refresh is reported, once per streak of failures, and its end. */
export interface KeySetLogger {
  warn(message: string): void;
  info(message: string): void;
}

/** What `new KeySetCache(client, ...)` takes. */
export interface KeySetCacheOptions {
  /**
   * Fetch the key set from this absolute http(s) URL (an issuer's `jwks_uri`) instead of the
   * client's GetJWKS. The API key is sent only when it has the client's origin.
   */
  jwksUri?: string | undefined;
  /**
   * The least time between two refreshes caused by a token whose kid the set lacks, in
   * milliseconds (default 30 000); 0 allows one per token. Within it, such a token is invalid
   * at once, without a request.
   */
  unknownKidCooldownMs?: number | undefined;
  /** The most the key set's answer may hold, decompressed, in bytes (default 1 MiB). */
  maxJwksBytes?: number | undefined;
  /** The wall clock, in milliseconds since the epoch (default `Date.now`): the verifier checks
   * exp, nbf and iat on it. */
  now?: (() => number) | undefined;
  /**
   * A clock that never steps, in milliseconds from any origin (default `performance.now`): the
   * set's age, the retry backoff and the unknown-kid cooldown are measured on it, so a step of
   * the wall clock (NTP, a resumed VM) neither keeps a set fresh longer nor delays a retry. A
   * test's fake clock is given as both `now` and `monotonicNow`.
   */
  monotonicNow?: (() => number) | undefined;
  /** Where failed refreshes are reported (default `console`). */
  logger?: KeySetLogger | undefined;
}

/** How long an answer's set may be used, in milliseconds. */
interface Freshness {
  maxAge: number;
  staleWhileRevalidate: number;
  staleIfError: number;
}

/** What one request brought: a new set, or a 304. */
interface Answer {
  notModified: boolean;
  keys: Map<string, PublicKey> | undefined;
  etag: string | undefined;
  fresh: Freshness;
  cacheControl: boolean;
}

/** A failed fetch, with a reason that never quotes the server. */
class FetchError extends Error {}

/**
 * Holds the key set that verifies tokens, and follows the server's HTTP caching: fresh for the
 * answer's max-age (at most 24 h; 300 s when missing; 0 with no-cache or no-store), then
 * revalidated with If-None-Match (a 304 keeps the set and restarts its age; a 304 with another
 * ETag is a failed refresh). Within stale-while-revalidate after max-age it answers from the
 * cached set and refreshes once in the background; beyond that, callers wait for one shared
 * refresh. Once a refresh has failed, only stale-if-error after max-age bounds the set's use:
 * within it, callers are answered from the set at once (logged once per streak; retried in the
 * background after 1 s, doubling up to 60 s); beyond it, a `KeysUnavailableError`. No redirect
 * is followed.
 */
export class KeySetCache {
  readonly #url: string;
  /** The URL without its query and fragment: what log lines name. */
  readonly #logUrl: string;
  readonly #apiKey: string | undefined;
  readonly #timeoutMs: number;
  readonly #maxBytes: number;
  readonly #cooldownMs: number;
  readonly #fetch: typeof globalThis.fetch;
  readonly #logger: KeySetLogger;
  /** @internal The wall clock (the verifier reads it for exp, nbf and iat). */
  readonly now: () => number;
  /** The clock ages, backoff and cooldown are measured on. */
  readonly #elapsed: () => number;

  #keys: Map<string, PublicKey> | undefined;
  #etag: string | undefined;
  /** When the set's age started: its answer, or the last 304. */
  #fetchedAt = 0;
  #fresh: Freshness = { maxAge: 0, staleWhileRevalidate: 0, staleIfError: 0 };
  #failing = false;
  #backoffMs = 0;
  #retryAt = 0;
  #lastError = "";
  #flight: Promise<string | undefined> | undefined;
  #unknownAt: number | undefined;

  /** Makes no network call: the first lookup fetches the set. Throws an `Error` for an
   * unusable option. */
  constructor(client: Client, options: KeySetCacheOptions = {}) {
    const settings = clientSettings(client);
    const cooldown = options.unknownKidCooldownMs ?? DEFAULT_UNKNOWN_KID_COOLDOWN_MS;
    if (!Number.isFinite(cooldown) || cooldown < 0) {
      throw new Error(`unknownKidCooldownMs must not be negative, got ${cooldown}`);
    }
    const maxBytes = options.maxJwksBytes ?? DEFAULT_JWKS_MAX_BYTES;
    if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) {
      throw new Error(`maxJwksBytes must be a positive whole number of bytes, got ${maxBytes}`);
    }
    let url = settings.baseUrl + CONNECT_GET_JWKS;
    let apiKey = settings.apiKey;
    if (options.jwksUri !== undefined) {
      let parsed: URL | undefined;
      try {
        parsed = new URL(options.jwksUri);
      } catch {
        parsed = undefined;
      }
      if (
        // As written, not as URL repairs it: WHATWG URL drops leading and trailing spaces, tabs
        // and newlines, reads "\\" as "/", and makes "http:h/x" and "http:///x" "http://h/x".
        !/^https?:\/\/[^/?#]/i.test(options.jwksUri) ||
        /[\u0000-\u0020\u007f-\u00a0\\\s]/.test(options.jwksUri) ||
        parsed === undefined ||
        (parsed.protocol !== "http:" && parsed.protocol !== "https:") ||
        parsed.hostname === "" ||
        parsed.username !== "" ||
        parsed.password !== ""
      ) {
        throw new Error(
          "jwksUri must be an absolute http:// or https:// URL with a host, without credentials, whitespace, control characters or backslashes",
        );
      }
      if (parsed.origin !== new URL(settings.baseUrl).origin) {
        apiKey = undefined;
      }
      url = parsed.href;
    }
    this.#url = url;
    const shown = new URL(url);
    this.#logUrl = shown.origin + shown.pathname;
    this.#apiKey = apiKey;
    this.#timeoutMs = settings.timeoutMs;
    this.#maxBytes = maxBytes;
    this.#cooldownMs = cooldown;
    this.#fetch = boundedFetch(settings.fetch, maxBytes);
    this.#logger = options.logger ?? console;
    this.now = options.now ?? (() => Date.now());
    this.#elapsed = options.monotonicNow ?? (() => performance.now());
  }

  /**
   * The key whose kid is `kid`. A kid the cached set lacks causes one refresh (shared with
   * every concurrent caller, at most one per cooldown); a kid still unknown rejects with an
   * `InvalidTokenError`, as does an RSA key whose modulus is prime (tested here, the first time
   * a token names the key, not when the set is read). When no usable set can be had, a
   * `KeysUnavailableError`.
   */
  async key(kid: string): Promise<PublicKey> {
    const [keys, refreshed] = await this.#current();
    const found = keys.get(kid);
    if (found !== undefined) return vetted(found);
    if (refreshed) throw unknownKid();
    if (this.#failing) {
      // The last refresh failed: the kid may be a new key this cache cannot fetch now. Retry
      // later (503), at once: never held by a retry in flight, which a hung server keeps going
      // for the whole client timeout. Past the backoff, a retry starts in the background.
      if (this.#mayRetry(this.#elapsed())) void this.#start();
      throw new KeysUnavailableError(
        `the token's kid is not in the cached set, and the set could not be refreshed: ${this.#lastError}`,
      );
    }
    let wait = this.#flight;
    if (wait === undefined) {
      const now = this.#elapsed();
      if (
        (this.#unknownAt !== undefined && now - this.#unknownAt < this.#cooldownMs) ||
        !this.#mayRetry(now)
      ) {
        throw unknownKid();
      }
      this.#unknownAt = now;
      wait = this.#start();
    }
    const error = await wait;
    const after = this.#keys?.get(kid);
    if (after !== undefined) return vetted(after);
    if (error !== undefined) {
      throw new KeysUnavailableError(
        `the token's kid is not in the cached set, and the set could not be refreshed: ${error}`,
      );
    }
    throw unknownKid();
  }

  /** @internal Resolves once no refresh is in flight (a background one included). */
  async settled(): Promise<void> {
    while (this.#flight !== undefined) await this.#flight;
  }

  /** The set to use now, after a refresh if it needs one (true: this call waited for a
   * refresh that succeeded). */
  async #current(): Promise<[Map<string, PublicKey>, boolean]> {
    const now = this.#elapsed();
    const keys = this.#keys;
    if (keys === undefined) {
      if (!this.#mayRetry(now)) {
        throw new KeysUnavailableError(this.#lastError);
      }
    } else {
      const age = now - this.#fetchedAt;
      if (age < this.#fresh.maxAge) {
        return [keys, false];
      }
      // Once a refresh has failed, only stale-if-error bounds the set's use; until then,
      // stale-while-revalidate. Within it, the caller is answered from the set at once.
      const usable = this.#failing
        ? this.#fresh.staleIfError
        : this.#fresh.staleWhileRevalidate;
      if (age < this.#fresh.maxAge + usable) {
        if (this.#mayRetry(now)) {
          void this.#start(); // in the background: this caller does not wait
        }
        return [keys, false];
      }
      if (!this.#mayRetry(now)) {
        return [this.#stale(now), false];
      }
    }
    const error = await this.#start();
    if (error === undefined && this.#keys !== undefined) {
      return [this.#keys, true];
    }
    return [this.#stale(this.#elapsed()), false];
  }

  /** The cached set if it may still be used after a failure (within stale-if-error after
   * max-age), or a KeysUnavailableError. */
  #stale(now: number): Map<string, PublicKey> {
    const keys = this.#keys;
    if (keys === undefined) {
      throw new KeysUnavailableError(this.#lastError);
    }
    if (now - this.#fetchedAt < this.#fresh.maxAge + this.#fresh.staleIfError) {
      return keys;
    }
    throw new KeysUnavailableError(
      `the cached set is past its stale-if-error and could not be refreshed: ${this.#lastError}`,
    );
  }

  /** Whether a refresh may be sent now: none failed, or the backoff is over. */
  #mayRetry(now: number): boolean {
    return !this.#failing || now >= this.#retryAt;
  }

  /** Starts a refresh, or returns the one in flight; it resolves to why it failed, if it did. */
  #start(): Promise<string | undefined> {
    if (this.#flight === undefined) {
      this.#flight = this.#run(this.#etag).finally(() => {
        this.#flight = undefined;
      });
    }
    return this.#flight;
  }

  /** Makes one refresh and records what it brought; never rejects. */
  async #run(etag: string | undefined): Promise<string | undefined> {
    let error: string | undefined;
    let answer: Answer | undefined;
    try {
      answer = await this.#fetchSet(etag);
    } catch (err) {
      error = err instanceof FetchError ? err.message : "the answer could not be read";
    }
    const now = this.#elapsed();
    if (answer !== undefined) {
      if (answer.notModified && this.#keys === undefined) {
        error = "the server answered 304 Not Modified, but no set is cached";
      } else if (answer.notModified && etag === undefined) {
        error = "the server answered 304 Not Modified to a request without If-None-Match";
      } else if (
        answer.notModified &&
        answer.etag !== undefined &&
        !weakMatch(answer.etag, etag)
      ) {
        // Not the validator sent: adopting it would pin the cached set to another version, and
        // sending ours again would be answered the same way for ever. Dropped: the retry is an
        // unconditional GET, whose 200 replaces the set.
        error = "the server answered 304 Not Modified with another ETag than the cached set's";
        this.#etag = undefined;
      } else if (answer.notModified) {
        this.#fetchedAt = now;
        if (answer.cacheControl) this.#fresh = answer.fresh;
        if (answer.etag !== undefined) this.#etag = answer.etag;
      } else {
        this.#keys = answer.keys;
        this.#etag = answer.etag;
        this.#fetchedAt = now;
        this.#fresh = answer.fresh;
      }
    }
    if (error === undefined) {
      if (this.#failing) {
        this.#logger.info(`agentrouter: the key set was refreshed again (${this.#logUrl})`);
      }
      this.#failing = false;
      this.#lastError = "";
    } else {
      if (!this.#failing) {
        this.#failing = true;
        this.#backoffMs = FIRST_BACKOFF_MS;
        const what =
          this.#keys === undefined
            ? "the key set could not be fetched; no set is cached"
            : "the key set could not be refreshed; the cached set is used within its stale-if-error";
        this.#logger.warn(`agentrouter: ${what} (${this.#logUrl}): ${error}`);
      } else {
        this.#backoffMs = Math.min(2 * this.#backoffMs, MAX_BACKOFF_MS);
      }
      this.#retryAt = now + this.#backoffMs;
      this.#lastError = error;
    }
    return error;
  }

  /** Sends one GET for the set (conditional when the ETag is known) and reads its answer. Its
   * errors never carry the server's bytes: only the status, sizes and what was wrong. */
  async #fetchSet(etag: string | undefined): Promise<Answer> {
    const headers = new Headers({ accept: "application/json" });
    if (isNode()) headers.set("user-agent", USER_AGENT);
    if (this.#apiKey) headers.set("authorization", `Bearer ${this.#apiKey}`);
    if (etag !== undefined) headers.set("if-none-match", etag);
    const signal = AbortSignal.timeout(this.#timeoutMs);
    let response: Response;
    try {
      // The API key never follows a redirect: every redirect is refused, as the client's are.
      response = await this.#fetch(this.#url, { headers, signal, redirect: "error" });
    } catch (err) {
      if (signal.aborted) throw new FetchError(`no answer within ${this.#timeoutMs} ms`);
      throw new FetchError(`the request failed${networkReason(err)}`);
    }
    const fresh = parseCacheControl(response.headers.get("cache-control"));
    const got: Answer = {
      notModified: false,
      keys: undefined,
      etag: response.headers.get("etag") ?? undefined,
      fresh,
      cacheControl: response.headers.has("cache-control"),
    };
    if (response.status === 304) {
      return { ...got, notModified: true };
    }
    if (response.status !== 200) {
      void response.body?.cancel().catch(() => {});
      throw new FetchError(`the server answered HTTP ${response.status}`);
    }
    const length = Number(response.headers.get("content-length") ?? "0");
    if (length > this.#maxBytes && response.headers.get("content-encoding") === null) {
      void response.body?.cancel().catch(() => {});
      throw new FetchError(this.#tooLarge());
    }
    let body: ArrayBuffer;
    try {
      body = await response.arrayBuffer();
    } catch (err) {
      if (signal.aborted) throw new FetchError(`the answer was not read within ${this.#timeoutMs} ms`);
      if (err instanceof Error && err.message.includes("(maxResponseBytes)")) {
        throw new FetchError(this.#tooLarge());
      }
      throw new FetchError("reading the answer failed");
    }
    if (body.byteLength > this.#maxBytes) throw new FetchError(this.#tooLarge());
    return { ...got, keys: await parseKeySet(body) };
  }

  #tooLarge(): string {
    return `the answer is larger than the limit of ${this.#maxBytes} bytes (maxJwksBytes)`;
  }
}

function unknownKid(): InvalidTokenError {
  return new InvalidTokenError("no key of the set has the token's kid");
}

/** Why a fetch failed, from its error's code only (ECONNREFUSED, ...): never its text. */
function networkReason(err: unknown): string {
  const cause = (err as { cause?: { code?: unknown } } | undefined)?.cause;
  const code = cause?.code;
  return typeof code === "string" && /^[A-Z0-9_]{1,40}$/.test(code) ? ` (${code})` : "";
}

/**
 * @internal Reads the directives this cache follows from a Cache-Control header, in
 * milliseconds, by the grammar the three SDKs share (README, Client SDKs). The header is either
 * its field lines, each parsed alone and their directives taken in order, or one string: what
 * fetch's `Headers.get` returns, the field lines joined with ", " (the Fetch standard's
 * "combine"), which is read as one line. The two differ only when a line ends inside an
 * unterminated quoted string: joined, it runs on over the lines after it.
 *
 * The first well-formed occurrence of each directive wins. max-age is capped at 24 h and is
 * 300 s when missing or not delta-seconds; stale-while-revalidate and stale-if-error are capped
 * at a year and are 0 when missing or not delta-seconds. no-cache and no-store make max-age 0;
 * they, must-revalidate and proxy-revalidate forbid stale use (RFC 9111 §4.2.4, §5.2.2.2): both
 * stale directives count as 0.
 */
export function parseCacheControl(header: string | readonly string[] | null): Freshness {
  const lines = header === null ? [] : typeof header === "string" ? [header] : header;
  const first = new Map<string, string>();
  for (const line of lines) {
    for (const [name, value] of cacheDirectives(line)) {
      const lower = name.toLowerCase();
      if (!first.has(lower)) first.set(lower, value);
    }
  }
  const seconds = (name: string): number | undefined => {
    const value = first.get(name);
    return value === undefined ? undefined : parseSeconds(value);
  };
  const noCache = first.has("no-cache") || first.has("no-store");
  const noStale = noCache || first.has("must-revalidate") || first.has("proxy-revalidate");
  const age = noCache ? 0 : (seconds("max-age") ?? DEFAULT_MAX_AGE_MS);
  return {
    maxAge: Math.min(age, MAX_MAX_AGE_MS),
    staleWhileRevalidate: noStale ? 0 : (seconds("stale-while-revalidate") ?? 0),
    staleIfError: noStale ? 0 : (seconds("stale-if-error") ?? 0),
  };
}

/** RFC 9110 §5.6.2 token characters. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Only spaces and tabs are whitespace here (RFC 9110 §5.6.3 OWS, BWS). */
const BLANKS = /^[ \t]*$/;

/** The text without its leading and trailing spaces and tabs (in linear time: no regex). */
function trimBlanks(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && (text[start] === " " || text[start] === "\t")) start++;
  while (end > start && (text[end - 1] === " " || text[end - 1] === "\t")) end--;
  return text.slice(start, end);
}

/**
 * The well-formed directives of one Cache-Control field line, in order (RFC 9110 §5.6.1 list,
 * §5.6.4 quoted-string). The line splits into elements at commas outside quoted strings; a
 * quoted string opens only when `"` is the first non-blank after an element's first "=", its
 * backslash escapes the next character, and unterminated it runs to the end of the line. An
 * element, trimmed of spaces and tabs, is a directive only as `name`, `name BWS "=" BWS token`
 * or `name BWS "=" BWS quoted-string` (then only blanks after the closing quote): any other
 * element (`max-age=`, `no-cache="`, `max-age="60"x`, `a"b`) is skipped, as if absent.
 */
function cacheDirectives(line: string): [string, string][] {
  const directives: [string, string][] = [];
  let i = 0;
  while (i <= line.length) {
    const start = i;
    let eq = -1; // where the element's first "=" is
    let quoted: string | undefined; // a quoted value's content, escapes resolved
    let closed = false;
    let afterQuote = -1; // where the element's text after a closed quoted string starts
    while (i < line.length && line[i] !== ",") {
      if (eq < 0 && line[i] === "=") {
        eq = i++;
        while (i < line.length && (line[i] === " " || line[i] === "\t")) i++;
        if (line[i] !== '"') continue;
        i++; // past the opening quote
        quoted = "";
        while (i < line.length) {
          const q = line.charAt(i++);
          if (q === '"') {
            closed = true;
            break;
          }
          quoted += q === "\\" && i < line.length ? line.charAt(i++) : q;
        }
        afterQuote = i;
        continue;
      }
      i++;
    }
    const end = i;
    i++; // past the comma
    const element = line.slice(start, end);
    if (BLANKS.test(element)) continue; // an empty element
    if (eq < 0) {
      const name = trimBlanks(element);
      if (TOKEN.test(name)) directives.push([name, ""]);
      continue;
    }
    const name = trimBlanks(line.slice(start, eq));
    if (!TOKEN.test(name)) continue;
    if (quoted === undefined) {
      const value = trimBlanks(line.slice(eq + 1, end));
      if (TOKEN.test(value)) directives.push([name, value]);
    } else if (closed && BLANKS.test(line.slice(afterQuote, end))) {
      directives.push([name, quoted]);
    }
  }
  return directives;
}

/** A delta-seconds value (RFC 9111 §1.2.2) in milliseconds: digits only; a huge one is a year. */
function parseSeconds(value: string): number | undefined {
  if (!/^[0-9]+$/.test(value)) return undefined;
  const seconds = Number(value);
  return Math.min(seconds, 365 * 24 * 3600) * 1000;
}

/**
 * @internal Reads an RFC 7517 JWK Set: an error when it is not one (not JSON, no "keys" array),
 * holds more than MAX_JWKS_KEYS keys, or has no usable key. Unusable keys are skipped. The
 * error never quotes the body. No RSA modulus is tested for primality here (see `vetted`).
 */
export async function parseKeySet(body: ArrayBuffer): Promise<Map<string, PublicKey>> {
  let document: unknown;
  try {
    document = parseJson(body);
  } catch {
    throw new FetchError(`the answer (${body.byteLength} bytes) is not a JSON JWK Set`);
  }
  const keys = isObject(document) ? document["keys"] : undefined;
  if (!Array.isArray(keys)) {
    throw new FetchError('the answer is JSON without a "keys" array');
  }
  if (keys.length > MAX_JWKS_KEYS) {
    throw new FetchError(`the set holds ${keys.length} keys, more than ${MAX_JWKS_KEYS}`);
  }
  const usable = new Map<string, PublicKey>();
  for (const member of keys) {
    const key = await parseKey(member);
    if (key !== undefined && !usable.has(key.kid)) {
      usable.set(key.kid, key);
    }
  }
  if (usable.size === 0) {
    throw new FetchError(
      `none of the set's ${keys.length} keys is usable (a kid, use sig, ES256, RS256 or EdDSA, public)`,
    );
  }
  return usable;
}

/** A key of the set if it is usable: a kid, no private member, an algorithm of the allow-list
 * with its key type and curve, use "sig" or none, a valid public key. */
async function parseKey(member: unknown): Promise<PublicKey | undefined> {
  // Any error reading one key skips that key only: one malformed member never costs the set.
  try {
    if (!isObject(member)) return undefined;
    if (PRIVATE_MEMBERS.some((name) => Object.hasOwn(member, name))) return undefined;
    const { kid, kty, crv, alg, use } = member;
    if (typeof kid !== "string" || kid === "" || !isAllowedAlg(alg)) return undefined;
    if (use !== undefined && use !== "sig") return undefined; // null included
    const want = ALLOWED_KEYS[alg];
    if (want === undefined || kty !== want.kty || crv !== want.crv) return undefined;
    let modulus: Uint8Array | undefined;
    if (alg === "RS256") {
      const n = base64UrlMember(member["n"]);
      const e = base64UrlMember(member["e"]);
      if (n === undefined || e === undefined) return undefined;
      const bits = bitLength(n);
      if (bits < MIN_RSA_BITS || bits > MAX_RSA_BITS || !usableRsaExponent(e)) return undefined;
      modulus = n; // tested for primality when a token names the key (see vetted)
    }
    if (alg === "ES256") {
      // RFC 7518 §6.2.1.2: each coordinate is the full size of the curve's field, 32 bytes.
      if (base64UrlMember(member["x"])?.length !== 32 || base64UrlMember(member["y"])?.length !== 32) {
        return undefined;
      }
    }
    if (alg === "EdDSA" && !usableEd25519(base64UrlMember(member["x"]))) return undefined;
    const key: PublicKey = { kid, alg, key: await importJWK(publicMembers(member) as JoseJWK, alg) };
    if (modulus !== undefined) {
      const known = primeVerdicts.get(encodeBase64Url(modulus));
      if (known !== false) unvetted.set(key, known === true ? PRIME : modulus);
    }
    return key;
  } catch {
    return undefined;
  }
}

/** A JWK member in base64url (RFC 7518 §2: the URL-safe alphabet, no padding), decoded; undefined
 * when it is not a string of that form. */
function base64UrlMember(value: unknown): Uint8Array | undefined {
  if (typeof value !== "string" || !/^[A-Za-z0-9_-]+$/.test(value) || value.length % 4 === 1) {
    return undefined;
  }
  return decodeBase64Url(value);
}

/** The members a public key of its type is made of: nothing the token's key could smuggle. */
function publicMembers(member: Record<string, unknown>): Record<string, unknown> {
  const names = ["kty", "crv", "x", "y", "n", "e"];
  return Object.fromEntries(names.filter((name) => name in member).map((name) => [name, member[name]]));
}

/** The bit length of an unsigned big-endian number. */
function bitLength(bytes: Uint8Array): number {
  let first = 0;
  while (first < bytes.length && bytes[first] === 0) first++;
  if (first === bytes.length) return 0;
  return (bytes.length - first - 1) * 8 + (32 - Math.clz32(bytes[first] ?? 0));
}

/** Whether an RSA exponent is odd and at least 3 (e = 1 makes the signature the message
 * itself: anyone could forge one). */
function usableRsaExponent(e: Uint8Array): boolean {
  const value = toBigInt(e);
  return value >= 3n && value % 2n === 1n;
}

function toBigInt(bytes: Uint8Array): bigint {
  let hex = "";
  for (const byte of bytes) hex += byte.toString(16).padStart(2, "0");
  return hex === "" ? 0n : BigInt(`0x${hex}`);
}

/** What isProbablePrime found for the moduli it was asked about, shared by every cache of the
 * process (a key set is read again at every refresh; a modulus is tested once). Bounded:
 * cleared when full. */
const primeVerdicts = new Map<string, boolean>();
const MAX_PRIME_VERDICTS = 1024;

/** How many moduli isProbablePrime has tested (memoized answers not counted). */
let primalityTestCount = 0;

/** @internal How many RSA moduli have been tested for primality in this process: a test's spy. */
export function primalityTests(): number {
  return primalityTestCount;
}

/** A key whose modulus is known to be prime. */
const PRIME = "prime";

/** The RSA keys of the sets read whose modulus is not known to be composite: its bytes until it
 * is tested, PRIME once it is known prime. A key not here is usable as it is. */
const unvetted = new WeakMap<PublicKey, Uint8Array | typeof PRIME>();

/**
 * The key, once its RSA modulus is known not to be prime: a prime n has phi(n) = n - 1, so
 * anyone computes the private exponent from the published key and forges its tokens. Reading a
 * set tests no modulus (a hostile set of 256 fresh 4096-bit keys cost about 22 s of the event
 * loop at every refresh); the modulus of the key a token names is tested here, once (the
 * verdict is kept on the key and memoized by n), blocking the event loop for one test at most
 * (about 0.1 s at 4096 bits) and holding nothing another caller waits for. A prime modulus is
 * an `InvalidTokenError`, and the key is never used.
 */
function vetted(key: PublicKey): PublicKey {
  const modulus = unvetted.get(key);
  if (modulus === undefined) return key;
  if (modulus === PRIME || isProbablePrime(modulus)) {
    unvetted.set(key, PRIME);
    throw new InvalidTokenError("the key of the token's kid is not usable: its RSA modulus is prime");
  }
  unvetted.delete(key);
  return key;
}

/**
 * Whether an RSA modulus is a probable prime: a strong probable prime to base 2 (one
 * Miller–Rabin round). One round is enough to refuse: a composite that passes it (a strong
 * pseudoprime to base 2) is no modulus RSA key generation makes, so refusing it too costs
 * nothing, while every round is a modular exponentiation the size of n, on the thread that
 * verifies (in pure BigInt, as the SDK runs in browsers too). Memoized by n.
 */
function isProbablePrime(modulus: Uint8Array): boolean {
  const key = encodeBase64Url(modulus);
  const known = primeVerdicts.get(key);
  if (known !== undefined) return known;
  primalityTestCount++;
  const n = toBigInt(modulus);
  let verdict = true;
  if (n < 2n || n % 2n === 0n) {
    verdict = n === 2n;
  } else {
    let d = n - 1n;
    let r = 0;
    while (d % 2n === 0n) {
      d /= 2n;
      r++;
    }
    verdict = strongProbablePrime(n, d, r, 2n);
  }
  if (primeVerdicts.size >= MAX_PRIME_VERDICTS) primeVerdicts.clear();
  primeVerdicts.set(key, verdict);
  return verdict;
}

/** One Miller–Rabin round: n - 1 = d·2^r, d odd. */
function strongProbablePrime(n: bigint, d: bigint, r: number, a: bigint): boolean {
  let x = modPow(a, d, n);
  if (x === 1n || x === n - 1n) return true;
  for (let i = 1; i < r; i++) {
    x = (x * x) % n;
    if (x === n - 1n) return true;
  }
  return false;
}

/** base^exponent mod modulus, by 4-bit windows (a quarter of the multiplications of the
 * bit-by-bit method; the squarings are the same). */
function modPow(base: bigint, exponent: bigint, modulus: bigint): bigint {
  const table = [1n % modulus, base % modulus];
  for (let i = 2; i < 16; i++) table.push(((table[i - 1] ?? 0n) * (table[1] ?? 0n)) % modulus);
  const digits = exponent.toString(16);
  let result = 1n % modulus;
  for (const digit of digits) {
    for (let i = 0; i < 4; i++) result = (result * result) % modulus;
    const factor = table[parseInt(digit, 16)] ?? 1n;
    if (factor !== 1n) result = (result * factor) % modulus;
  }
  return result;
}

/** The field and curve of Ed25519 (RFC 8032 §5.1). */
const ED_P = 2n ** 255n - 19n;
const ED_D = mod(-121665n * inverse(121666n));

function mod(a: bigint): bigint {
  const r = a % ED_P;
  return r < 0n ? r + ED_P : r;
}

function power(base: bigint, exponent: bigint): bigint {
  let result = 1n;
  let b = mod(base);
  for (let e = exponent; e > 0n; e >>= 1n) {
    if (e & 1n) result = (result * b) % ED_P;
    b = (b * b) % ED_P;
  }
  return result;
}

function inverse(a: bigint): bigint {
  return power(a, ED_P - 2n);
}

/**
 * Whether an Ed25519 public key (x in base64url) is a canonically encoded point of the curve
 * whose order is not small: [8]P is not the identity. A small-order key (the identity, and the
 * points of order 2, 4 and 8) verifies forged signatures, such as R = the identity and S = 0,
 * for any message.
 */
function usableEd25519(bytes: Uint8Array | undefined): boolean {
  if (bytes === undefined || bytes.length !== 32) return false;
  let y = 0n;
  for (let i = 31; i >= 0; i--) y = (y << 8n) | BigInt(bytes[i] ?? 0);
  const sign = y >> 255n;
  y &= (1n << 255n) - 1n;
  if (y >= ED_P) return false; // not canonical
  // x² = (y² - 1) / (d y² + 1), its root by RFC 8032 §5.1.3.
  const u = mod(y * y - 1n);
  const v = mod(ED_D * y * y + 1n);
  const x2 = mod(u * inverse(v));
  let px = power(x2, (ED_P + 3n) / 8n);
  if (mod(px * px - x2) !== 0n) px = mod(px * power(2n, (ED_P - 1n) / 4n));
  if (mod(px * px - x2) !== 0n) return false; // not on the curve
  if (px === 0n && sign === 1n) return false;
  if ((px & 1n) !== sign) px = ED_P - px;
  // Three doublings (a = -1): the identity (0, 1) after them means an order dividing 8.
  let [qx, qy] = [px, y];
  for (let i = 0; i < 3; i++) {
    const t = mod(ED_D * qx * qx * qy * qy);
    [qx, qy] = [
      mod(2n * qx * qy * inverse(mod(1n + t))),
      mod((qy * qy + qx * qx) * inverse(mod(1n - t))),
    ];
  }
  return !(qx === 0n && qy === 1n);
}

/** @internal base64url without padding, decoded; the caller checks the alphabet. */
export function decodeBase64Url(text: string): Uint8Array {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** @internal base64url without padding, encoded. */
export function encodeBase64Url(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** @internal One JSON text in strict UTF-8 (RFC 8259 §8.1): invalid bytes and a byte order
 * mark are refused (TextDecoder would drop the BOM; JSON.parse refuses U+FEFF), as is anything
 * after the value. Throws when it is not one. */
export function parseJson(bytes: Uint8Array | ArrayBuffer): unknown {
  return JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes));
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Whether two entity tags match by the weak comparison of RFC 9110 §8.8.3.2 (the one
 * If-None-Match uses): a proxy that compresses an answer may weaken its tag (`W/"x"`) while a
 * 304 passed through it carries the origin's `"x"`. */
function weakMatch(a: string, b: string | undefined): boolean {
  return a.replace(/^W\//, "") === (b ?? "").replace(/^W\//, "");
}

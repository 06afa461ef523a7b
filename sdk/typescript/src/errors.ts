// The errors of verifying a token, so that a caller can tell a token to refuse (401) from keys
// that could not be had (503, retry later).

/** A token that does not verify: malformed, a refused header or algorithm, a kid the key set
 * lacks, a bad signature, or a claim that fails a check. Its message never quotes the token. */
export class InvalidTokenError extends Error {
  override readonly name = "InvalidTokenError";

  constructor(reason: string) {
    super(`invalid token: ${reason}`);
  }
}

/** The keys could not be had: the key set could not be fetched and no cached set may still be
 * used (none yet, or past its stale-if-error). The caller may retry later. Its message never
 * quotes the server's answer. */
export class KeysUnavailableError extends Error {
  override readonly name = "KeysUnavailableError";

  constructor(reason: string) {
    super(`keys unavailable: ${reason}`);
  }
}

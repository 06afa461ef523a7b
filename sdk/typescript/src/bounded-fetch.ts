// The fetch every call goes through: the given one, with a bound on what a response may hold
// and a deadline that covers reading its body.

import { Code, ConnectError } from "@connectrpc/connect";

/** Statuses whose response has no body (a Response with a body cannot be made for them). */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

/**
 * Wraps `fetchImpl` (looked up on each call) so that a response body:
 * - ends in a `ResourceExhausted` ConnectError once more than `maxBytes` were read. fetch has
 *   already decompressed it, so the bound holds for the decompressed size (a gzip bomb) and
 *   for a body without a Content-Length. connect-web has no limit of its own (connect-node's
 *   `readMaxBytes` is not in its transport), and reads bodies whole;
 * - ends in the call's abort reason (`DeadlineExceeded` at its deadline, `Canceled` for the
 *   caller's signal) as soon as the call's signal aborts. fetch implementations do not all
 *   stop a body being read when the request's signal aborts: Node.js's stops it only while the
 *   Response object is alive, and connect-web keeps no reference to it while it reads, so after
 *   a garbage collection a body that drips kept the call going for as long as it dripped.
 */
export function boundedFetch(
  fetchImpl: () => typeof globalThis.fetch,
  maxBytes: number,
): typeof globalThis.fetch {
  return async (input, init) => {
    const response = await fetchImpl()(input, init);
    if (response.body === null || NULL_BODY_STATUSES.has(response.status)) {
      return response;
    }
    return new Response(bounded(response.body, maxBytes, init?.signal ?? undefined), {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  };
}

function bounded(
  body: ReadableStream<Uint8Array>,
  maxBytes: number,
  signal: AbortSignal | undefined,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let read = 0;
  let ended = false;
  let stop: (reason: unknown) => void = () => {};
  const onAbort = (): void => stop(signal?.reason);
  return new ReadableStream<Uint8Array>({
    start(controller) {
      stop = (reason) => {
        if (ended) return;
        ended = true;
        signal?.removeEventListener("abort", onAbort);
        controller.error(reason);
        reader.cancel(reason).catch(() => {});
      };
      if (signal?.aborted) {
        onAbort();
      } else {
        signal?.addEventListener("abort", onAbort);
      }
    },
    async pull(controller) {
      const result = await reader.read();
      if (ended) return;
      if (result.done) {
        ended = true;
        signal?.removeEventListener("abort", onAbort);
        controller.close();
        return;
      }
      read += result.value.byteLength;
      if (read > maxBytes) {
        stop(tooLarge(maxBytes));
        return;
      }
      controller.enqueue(result.value);
    },
    cancel(reason) {
      ended = true;
      signal?.removeEventListener("abort", onAbort);
      return reader.cancel(reason);
    },
  });
}

function tooLarge(maxBytes: number): ConnectError {
  return new ConnectError(
    `the response is larger than the client's limit of ${maxBytes} bytes (maxResponseBytes)`,
    Code.ResourceExhausted,
  );
}

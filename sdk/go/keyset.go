package agentrouter

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode"

	authv1connect "github.com/tetrateio/agentrouter-go/genapi/api/tars/auth/v1/authv1connect"
)

const (
	// DefaultJWKSMaxBytes bounds a key set's answer, unless [WithJWKSMaxBytes] sets another.
	DefaultJWKSMaxBytes = 1 << 20
	// MaxJWKSKeys is the most keys a key set may hold: a larger one is refused whole.
	MaxJWKSKeys = 256
	// DefaultUnknownKidCooldown is the least time between two refreshes caused by a token whose
	// kid the cached set lacks, unless [WithUnknownKidCooldown] sets another.
	DefaultUnknownKidCooldown = 30 * time.Second
	// defaultMaxAge is the freshness of an answer whose max-age is missing or unreadable.
	defaultMaxAge = 300 * time.Second
	// maxMaxAge caps the freshness an answer may claim.
	maxMaxAge = 24 * time.Hour
	// The wait before retrying after a failed refresh: 1 s, doubling, at most 60 s.
	firstBackoff = time.Second
	maxBackoff   = 60 * time.Second
)

// ErrKeysUnavailable is the error of a verification that could not get the keys: the key set
// could not be fetched and no cached set may still be used (none yet, or beyond its
// stale-if-error). Test with errors.Is; the caller may retry later.
var ErrKeysUnavailable = errors.New("agentrouter: keys unavailable")

// connectGetJWKS is GetJWKS as a Connect GET answered in JSON: the RFC 7517 document itself.
const connectGetJWKS = authv1connect.AuthServiceGetJWKSProcedure + "?connect=v1&encoding=json&message=%7B%7D"

// PublicKey is a usable key of the set: its kid, the algorithm it declares (ES256, RS256 or
// EdDSA) and its public key (*ecdsa.PublicKey, *rsa.PublicKey or ed25519.PublicKey).
type PublicKey struct {
	Kid string
	Alg string
	Key crypto.PublicKey
}

// CacheOption configures a [KeySetCache]; pass options to [NewKeySetCache].
type CacheOption func(*cacheConfig)

type cacheConfig struct {
	jwksURI  string
	cooldown time.Duration
	maxBytes int
	now      func() time.Time
	logger   *slog.Logger
}

// WithJWKSURI fetches the key set from this absolute http(s) URL (an issuer's jwks_uri)
// instead of the client's GetJWKS. A URL without a host, or with credentials, whitespace,
// control characters or backslashes, is an error of [NewKeySetCache]. The API key is sent only when the URL has the same origin
// (scheme, host and port) as the client's base URL.
func WithJWKSURI(jwksURI string) CacheOption {
	return func(c *cacheConfig) { c.jwksURI = jwksURI }
}

// WithUnknownKidCooldown sets the least time between two refreshes caused by an unknown kid
// (default [DefaultUnknownKidCooldown]); 0 allows one per token. Within it, a token whose kid
// the set lacks is invalid at once, without a request. While refreshes are failing, such a
// token is [ErrKeysUnavailable] at once, whatever the cooldown.
func WithUnknownKidCooldown(cooldown time.Duration) CacheOption {
	return func(c *cacheConfig) { c.cooldown = cooldown }
}

// WithJWKSMaxBytes bounds the key set's answer, decompressed (default [DefaultJWKSMaxBytes]).
// A larger answer is an error and never replaces the cached set. The client's own
// [WithMaxResponseBytes] bounds it too.
func WithJWKSMaxBytes(maxBytes int) CacheOption {
	return func(c *cacheConfig) { c.maxBytes = maxBytes }
}

// WithClock sets the clock the cache (and a [Verifier] over it) reads; the default is
// time.Now. For tests.
func WithClock(now func() time.Time) CacheOption {
	return func(c *cacheConfig) { c.now = now }
}

// WithLogger sets where a failed refresh is reported, once per streak of failures; the
// default is slog.Default().
func WithLogger(logger *slog.Logger) CacheOption {
	return func(c *cacheConfig) { c.logger = logger }
}

// KeySetCache holds the key set that verifies tokens, and follows the server's HTTP caching:
// fresh for the answer's max-age (at most 24 h; 300 s when missing; 0 with no-cache or
// no-store), then revalidated with If-None-Match (a 304 keeps the set and restarts its age).
// Within stale-while-revalidate after max-age it answers from the cached set and refreshes once
// in the background; beyond that, callers wait for one shared refresh. Once a refresh has
// failed, the cached set is used only within stale-if-error after max-age (from when its answer
// was received; stale-while-revalidate no longer extends it, a success resets): callers are
// answered from it at once while one retry runs in the background (logged once per streak;
// retried after 1 s, doubling up to 60 s; a token whose kid the set lacks is then
// [ErrKeysUnavailable] at once); beyond it, [ErrKeysUnavailable]. A 304 naming another ETag
// (by the weak comparison) is a failed refresh, and the retry is an unconditional GET; a 304 to
// a request without If-None-Match is a failed refresh too. The set is read only from its URL:
// a redirect is a failed fetch. It is safe for concurrent use.
type KeySetCache struct {
	http     *http.Client
	url      string
	logURL   string // url without its query and fragment, for the log
	apiKey   string // empty when the URL is of another origin than the client's
	timeout  time.Duration
	maxBytes int64
	cooldown time.Duration
	now      func() time.Time
	logger   *slog.Logger

	mu          sync.Mutex
	keys        map[string]*setKey // nil until a set was fetched
	etag        string
	fetched     time.Time // when the set's age started: its answer, or the last 304
	fresh       freshness
	failing     bool
	backoff     time.Duration
	retryAt     time.Time
	lastErr     error
	flight      *flight
	unknownAt   time.Time // the last refresh caused by an unknown kid
	unknownUsed bool
}

// flight is one refresh, shared by every caller that waits for it.
type flight struct {
	done chan struct{}
	err  error
}

// NewKeySetCache returns a cache over client's GetJWKS (a Connect GET answered in JSON, sent
// through the client's HTTP client, limits and API key), or over [WithJWKSURI]. It makes no
// network call: the first lookup fetches the set.
func NewKeySetCache(client *Client, opts ...CacheOption) (*KeySetCache, error) {
	if client == nil {
		return nil, errors.New("agentrouter: NewKeySetCache: the client is nil")
	}
	cfg := cacheConfig{cooldown: DefaultUnknownKidCooldown, maxBytes: DefaultJWKSMaxBytes, now: time.Now}
	for _, opt := range opts {
		if opt != nil {
			opt(&cfg)
		}
	}
	if cfg.cooldown < 0 {
		return nil, fmt.Errorf("agentrouter: WithUnknownKidCooldown: the cooldown must not be negative, got %v", cfg.cooldown)
	}
	if cfg.maxBytes <= 0 {
		return nil, fmt.Errorf("agentrouter: WithJWKSMaxBytes: the limit must be positive, got %d", cfg.maxBytes)
	}
	if cfg.now == nil {
		return nil, errors.New("agentrouter: WithClock: the clock is nil")
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	target, apiKey := client.baseURL+connectGetJWKS, client.apiKey
	if cfg.jwksURI != "" {
		parsed, err := url.Parse(cfg.jwksURI)
		if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Hostname() == "" || parsed.User != nil ||
			strings.ContainsFunc(cfg.jwksURI, func(r rune) bool {
				return r <= ' ' || r == 0x7f || r == '\\' || unicode.IsSpace(r) || unicode.IsControl(r)
			}) {
			return nil, errors.New("agentrouter: WithJWKSURI: the key set's URL must be an absolute http:// or https:// URL with a host, without credentials, whitespace, control characters or backslashes")
		}
		base, _ := url.Parse(client.baseURL) // checked by New
		if origin(parsed) != origin(base) {
			apiKey = ""
		}
		target = cfg.jwksURI
	}
	logURL := target // without its query and fragment, which may carry a credential
	if cut := strings.IndexAny(logURL, "?#"); cut >= 0 {
		logURL = logURL[:cut]
	}
	// The key set is read only from the URL asked: a redirect is a failed fetch (an answer of
	// another status than 200 or 304), wherever it points. The client's other calls keep its
	// policy; this copy keeps its transport, and so its response limit.
	noRedirect := *client.http
	noRedirect.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &KeySetCache{
		http: &noRedirect, url: target, logURL: logURL, apiKey: apiKey, timeout: client.timeout,
		maxBytes: int64(cfg.maxBytes), cooldown: cfg.cooldown, now: cfg.now, logger: cfg.logger,
	}, nil
}

// Key returns the key whose kid is kid. A kid the cached set lacks waits for the refresh in
// flight, or causes one (shared with every concurrent caller, at most one per cooldown); a kid
// still unknown is an [ErrInvalidToken]. While refreshes are failing (the last one failed), a
// kid the set lacks is an [ErrKeysUnavailable] at once: it may be a new key, and the caller
// never waits for a retry. When no usable set can be had, the error is an [ErrKeysUnavailable].
// An RSA key's modulus is vetted when a kid first names it (one primality test, remembered by
// modulus for every cache of the process; reading a set runs none): a prime modulus makes the
// key unusable, an [ErrInvalidToken] saying so, and it is never returned.
func (c *KeySetCache) Key(ctx context.Context, kid string) (PublicKey, error) {
	keys, refreshed, err := c.current(ctx)
	if err != nil {
		return PublicKey{}, err
	}
	if key, ok := keys[kid]; ok {
		return key.usable()
	}
	if refreshed {
		return PublicKey{}, errUnknownKid
	}
	c.mu.Lock()
	if c.failing {
		// The last refresh failed: the kid may be a new key the cache cannot fetch now. "Keys
		// unavailable" at once (the caller may retry later); never wait for a retry, which may
		// hang for the client's whole timeout. Past the backoff it starts one in the
		// background: while the set is fresh nothing else would, and the kid may be new.
		if c.flight == nil && c.mayRetryLocked(c.now()) {
			c.startLocked()
		}
		err := c.lastErr
		c.mu.Unlock()
		return PublicKey{}, fmt.Errorf("%w: the token's kid is not in the cached set, and the set could not be refreshed: %w", ErrKeysUnavailable, err)
	}
	wait := c.flight
	if wait == nil {
		now := c.now()
		if c.unknownUsed && now.Sub(c.unknownAt) < c.cooldown || !c.mayRetryLocked(now) {
			c.mu.Unlock()
			return PublicKey{}, errUnknownKid
		}
		c.unknownUsed, c.unknownAt = true, now
		wait = c.startLocked()
	}
	c.mu.Unlock()
	if err := c.await(ctx, wait); err != nil {
		return PublicKey{}, err
	}
	c.mu.Lock()
	key, ok := c.keys[kid]
	c.mu.Unlock()
	if ok {
		return key.usable()
	}
	if wait.err != nil {
		return PublicKey{}, fmt.Errorf("%w: the token's kid is not in the cached set, and the set could not be refreshed: %w", ErrKeysUnavailable, wait.err)
	}
	return PublicKey{}, errUnknownKid
}

// errUnknownKid is the error of a token whose kid the set lacks.
var errUnknownKid = fmt.Errorf("%w: no key of the set has the token's kid", ErrInvalidToken)

// current returns the set to use now, after a refresh if it needs one (refreshed: this call
// waited for a refresh that succeeded).
func (c *KeySetCache) current(ctx context.Context) (map[string]*setKey, bool, error) {
	c.mu.Lock()
	now := c.now()
	if c.keys == nil {
		if !c.mayRetryLocked(now) {
			err := c.lastErr
			c.mu.Unlock()
			return nil, false, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
		}
	} else {
		age := now.Sub(c.fetched)
		switch {
		case age < c.fresh.maxAge:
			keys := c.keys
			c.mu.Unlock()
			return keys, false, nil
		case c.failing && age >= c.fresh.maxAge+c.fresh.staleIfError:
			// After a failed refresh, stale-if-error bounds every stale use: stale-while-revalidate
			// does not extend it. Past it, only a refresh (once the backoff is over) gives a set.
			if !c.mayRetryLocked(now) {
				keys, err := c.staleLocked(now)
				c.mu.Unlock()
				return keys, false, err
			}
		case c.failing || age < c.fresh.maxAge+c.fresh.staleWhileRevalidate:
			// The set may still be used (within stale-while-revalidate, or within stale-if-error
			// after a failed refresh): this caller is answered from it at once, and the refresh
			// (or the retry, once the backoff is over) runs in the background.
			if c.mayRetryLocked(now) {
				c.startLocked()
			}
			keys := c.keys
			c.mu.Unlock()
			return keys, false, nil
		}
	}
	wait := c.startLocked()
	c.mu.Unlock()
	if err := c.await(ctx, wait); err != nil {
		return nil, false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if wait.err == nil {
		return c.keys, true, nil
	}
	keys, err := c.staleLocked(c.now())
	return keys, false, err
}

// staleLocked returns the cached set if it may still be used after a failure (within
// stale-if-error after max-age), or ErrKeysUnavailable.
func (c *KeySetCache) staleLocked(now time.Time) (map[string]*setKey, error) {
	if c.keys != nil && now.Sub(c.fetched) < c.fresh.maxAge+c.fresh.staleIfError {
		return c.keys, nil
	}
	if c.keys == nil {
		return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, c.lastErr)
	}
	return nil, fmt.Errorf("%w: the cached set is past its stale-if-error and could not be refreshed: %w", ErrKeysUnavailable, c.lastErr)
}

// mayRetryLocked says whether a refresh may be sent now: none failed, or the backoff is over.
func (c *KeySetCache) mayRetryLocked(now time.Time) bool {
	return !c.failing || !now.Before(c.retryAt)
}

// startLocked starts a refresh, or returns the one in flight.
func (c *KeySetCache) startLocked() *flight {
	if c.flight != nil {
		return c.flight
	}
	f := &flight{done: make(chan struct{})}
	c.flight = f
	go c.run(f, c.etag)
	return f
}

// await waits for f, or for ctx's end; f goes on for the other callers.
func (c *KeySetCache) await(ctx context.Context, f *flight) error {
	if ctx == nil {
		ctx = context.Background()
	}
	select {
	case <-f.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for the key set: %w", ErrKeysUnavailable, ctx.Err())
	}
}

// run makes one refresh and records what it brought.
func (c *KeySetCache) run(f *flight, etag string) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	answer, err := c.fetch(ctx, etag)
	c.mu.Lock()
	now := c.now()
	switch {
	case err != nil:
	case answer.notModified && c.keys == nil:
		err = errors.New("the server answered 304 Not Modified, but no set is cached")
	case answer.notModified && etag == "":
		// No validator was sent (the set came without an ETag, or a 304 of another tag dropped
		// it): the 304 says nothing of the cached set.
		err = errors.New("the server answered 304 Not Modified to a request without If-None-Match")
	case answer.notModified && answer.etag != "" && !weakMatch(answer.etag, c.etag):
		// Not the validator sent: the cached set is not known to be current. Its tag is
		// dropped, so the retry is an unconditional GET, whose 200 brings the set.
		c.etag = ""
		err = errors.New("the server answered 304 Not Modified with another ETag than the cached set's")
	case answer.notModified:
		c.fetched = now
		if answer.cacheControl {
			c.fresh = answer.fresh
		}
		if answer.etag != "" {
			c.etag = answer.etag
		}
	default:
		c.keys, c.etag, c.fetched, c.fresh = answer.keys, answer.etag, now, answer.fresh
	}
	if err == nil {
		if c.failing {
			c.logger.Info("agentrouter: the key set was refreshed again", "url", c.logURL)
		}
		c.failing, c.lastErr = false, nil
	} else {
		if !c.failing {
			c.failing, c.backoff = true, firstBackoff
			what := "agentrouter: the key set could not be fetched; no set is cached"
			if c.keys != nil {
				what = "agentrouter: the key set could not be refreshed; the cached set is used within its stale-if-error"
			}
			c.logger.Warn(what, "url", c.logURL, "error", err.Error())
		} else {
			c.backoff = min(2*c.backoff, maxBackoff)
		}
		c.retryAt, c.lastErr = now.Add(c.backoff), err
	}
	c.flight, f.err = nil, err
	c.mu.Unlock()
	close(f.done)
}

// answer is what one request brought: a new set, or a 304.
type answer struct {
	notModified  bool
	keys         map[string]*setKey
	etag         string
	fresh        freshness
	cacheControl bool // the answer had a Cache-Control header
}

// fetch sends one GET for the set (conditional when etag is known) and reads its answer. Its
// errors never carry the server's bytes: only the status, sizes and what was wrong.
func (c *KeySetCache) fetch(ctx context.Context, etag string) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return answer{}, fmt.Errorf("the request: %w", err)
	}
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept", "application/json")
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return answer{}, fmt.Errorf("no answer within %v", c.timeout)
		}
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // without the URL, whose query may carry a credential of a jwks_uri
		}
		return answer{}, fmt.Errorf("the request failed: %w", err)
	}
	defer resp.Body.Close()
	fresh, hasCacheControl := parseCacheControl(resp.Header.Values("Cache-Control"))
	got := answer{etag: resp.Header.Get("ETag"), fresh: fresh, cacheControl: hasCacheControl}
	switch resp.StatusCode {
	case http.StatusNotModified:
		got.notModified = true
		return got, nil
	case http.StatusOK:
	default:
		return answer{}, fmt.Errorf("the server answered HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
	if err != nil {
		if ctx.Err() != nil {
			return answer{}, fmt.Errorf("the answer was not read within %v", c.timeout)
		}
		return answer{}, fmt.Errorf("reading the answer failed: %w", err)
	}
	if int64(len(body)) > c.maxBytes {
		return answer{}, fmt.Errorf("the answer is larger than the limit of %d bytes (WithJWKSMaxBytes)", c.maxBytes)
	}
	got.keys, err = parseKeySet(body)
	if err != nil {
		return answer{}, err
	}
	return got, nil
}

// weakMatch tells whether two entity tags match by the weak comparison of RFC 9110 §8.8.3.2,
// the one If-None-Match uses: a proxy that compresses an answer may weaken its tag (`W/"x"`)
// while a 304 passed through it carries the origin's `"x"`.
func weakMatch(a, b string) bool {
	return strings.TrimPrefix(a, "W/") == strings.TrimPrefix(b, "W/")
}

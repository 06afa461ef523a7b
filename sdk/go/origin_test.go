package agentrouter_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	agentrouter "github.com/tetrateio/agentrouter-go"
)

// fakeClock is the cache's and the verifier's clock in tests that need no real waiting.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Now()}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// signingKey is a private key of the tests, with the kid and alg it is published under.
type signingKey struct {
	kid, alg string
	private  crypto.Signer
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

// newSigningKey makes a key of alg (ES256, RS256 or EdDSA; one RSA key per test binary: its
// generation is slow) under a fresh kid.
func newSigningKey(t *testing.T, alg string) signingKey {
	t.Helper()
	var private crypto.Signer
	var err error
	switch alg {
	case "ES256":
		private, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "RS256":
		rsaOnce.Do(func() { rsaKey, err = rsa.GenerateKey(rand.Reader, 2048) })
		private = rsaKey
	case "EdDSA":
		_, private, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil || private == nil {
		t.Fatalf("a %s key: %v", alg, err)
	}
	return signingKey{kid: alg + "-" + randomText(t, 8), alg: alg, private: private}
}

func randomText(t *testing.T, n int) string {
	t.Helper()
	raw := make([]byte, n)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(raw)
}

// jwk is the key's public JWK as the server publishes it (kid, use sig, alg).
func (k signingKey) jwk(t *testing.T) map[string]any {
	t.Helper()
	raw, err := json.Marshal(jose.JSONWebKey{Key: k.private.Public(), KeyID: k.kid, Algorithm: k.alg, Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	var member map[string]any
	if err := json.Unmarshal(raw, &member); err != nil {
		t.Fatal(err)
	}
	return member
}

// sign returns a compact JWS of claims under this key, with extra header members.
func (k signingKey) sign(t *testing.T, claims map[string]any, extra map[string]any) string {
	t.Helper()
	return k.signBytes(t, jsonMarshal(t, claims), extra)
}

// signBytes returns a compact JWS of payload under this key, with extra header members.
func (k signingKey) signBytes(t *testing.T, payload []byte, extra map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithHeader("kid", k.kid).WithType("JWT")
	for name, value := range extra {
		opts = opts.WithHeader(jose.HeaderKey(name), value)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(k.alg), Key: k.private}, opts)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	token, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// rawToken assembles a token from a header and claims of the test's own, and a signature.
func rawToken(t *testing.T, header, claims map[string]any, signature []byte) string {
	t.Helper()
	part := func(v any) string {
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(raw)
	}
	return part(header) + "." + part(claims) + "." + base64.RawURLEncoding.EncodeToString(signature)
}

// origin is a local HTTP server publishing a key set with the headers a test gives it, and
// counting what it is asked: a real peer over loopback, with no clock of its own.
type origin struct {
	server       *httptest.Server
	mu           sync.Mutex
	body         []byte // the set it answers, or anything else
	status       int
	cacheControl string
	etag         string
	hold         chan struct{} // when set, each request waits for it to close
	requests     atomic.Int64
	revalid      atomic.Int64 // requests that carried If-None-Match
	answered     atomic.Int64 // 304s answered
	auth         []string
}

const testCacheControl = "public, max-age=10, stale-while-revalidate=20, stale-if-error=100"

func newOrigin(t *testing.T, keys ...signingKey) *origin {
	t.Helper()
	o := &origin{status: http.StatusOK, cacheControl: testCacheControl}
	o.publish(t, keys...)
	o.server = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.server.Close)
	return o
}

// publish sets the key set the origin answers, under a new ETag.
func (o *origin) publish(t *testing.T, keys ...signingKey) {
	t.Helper()
	members := make([]map[string]any, 0, len(keys))
	for _, key := range keys {
		members = append(members, key.jwk(t))
	}
	raw, err := json.Marshal(map[string]any{"keys": members})
	if err != nil {
		t.Fatal(err)
	}
	o.set(func() { o.body, o.status, o.etag = raw, http.StatusOK, `"`+randomText(t, 12)+`"` })
}

func (o *origin) set(change func()) {
	o.mu.Lock()
	defer o.mu.Unlock()
	change()
}

func (o *origin) serve(w http.ResponseWriter, r *http.Request) {
	o.requests.Add(1)
	o.mu.Lock()
	body, status, cache, etag, hold := o.body, o.status, o.cacheControl, o.etag, o.hold
	o.auth = append(o.auth, r.Header.Get("Authorization"))
	o.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if cache != "" {
		w.Header().Set("Cache-Control", cache)
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		o.revalid.Add(1)
		if inm == etag && status == http.StatusOK {
			w.Header().Set("ETag", etag)
			o.answered.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	if status == http.StatusOK && etag != "" {
		w.Header().Set("ETag", etag)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// baseClient is an SDK client whose base URL is the origin's, so its GetJWKS reaches it.
func (o *origin) client(t *testing.T, opts ...agentrouter.Option) *agentrouter.Client {
	t.Helper()
	client, err := agentrouter.New(context.Background(), append([]agentrouter.Option{agentrouter.WithBaseURL(o.server.URL)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// cache is a KeySetCache over the origin on clock.
func (o *origin) cache(t *testing.T, clock *fakeClock, opts ...agentrouter.CacheOption) *agentrouter.KeySetCache {
	t.Helper()
	cache, err := agentrouter.NewKeySetCache(o.client(t), append([]agentrouter.CacheOption{agentrouter.WithClock(clock.Now), quiet}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return cache
}

// quiet drops the cache's log records: the tests that count them pass a logger of their own.
var quiet = agentrouter.WithLogger(slog.New(slog.DiscardHandler))

// waitFor polls cond until it holds, failing the test after a bounded wait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not the case after 10 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logCount is a slog handler that counts records at Warn and above, and keeps their text.
type logCount struct {
	mu    sync.Mutex
	warns int
	text  strings.Builder
}

func (l *logCount) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCount) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logCount) WithGroup(string) slog.Handler            { return l }
func (l *logCount) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.Level >= slog.LevelWarn {
		l.warns++
	}
	l.text.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&l.text, " %s=%v", a.Key, a.Value)
		return true
	})
	l.text.WriteString("\n")
	return nil
}

func (l *logCount) counts() (int, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.warns, l.text.String()
}

// claimsFor are valid claims at clock's time for the issuer and audience the tests use.
func claimsFor(now time.Time) map[string]any {
	return map[string]any{
		"iss": "https://issuer.test", "aud": "api", "sub": "svc",
		"iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(),
	}
}

// verifierOver is a verifier requiring the tests' issuer and audience.
func verifierOver(t *testing.T, cache *agentrouter.KeySetCache, opts ...agentrouter.VerifierOption) *agentrouter.Verifier {
	t.Helper()
	verifier, err := agentrouter.NewVerifier(cache, append([]agentrouter.VerifierOption{
		agentrouter.WithIssuer("https://issuer.test"), agentrouter.WithAudience("api"),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return verifier
}

func jsonMarshal(t *testing.T, v any) []byte {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func jsonUnmarshal(raw []byte, v any) error {
	return json.Unmarshal(raw, v)
}

// cacheAt is a key cache over the GetJWKS of a client of baseURL (with opts), on clock, logging
// nothing.
func cacheAt(t *testing.T, baseURL string, clock *fakeClock, opts ...agentrouter.Option) *agentrouter.KeySetCache {
	t.Helper()
	client, err := agentrouter.New(context.Background(), append([]agentrouter.Option{agentrouter.WithBaseURL(baseURL)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	cache, err := agentrouter.NewKeySetCache(client, agentrouter.WithClock(clock.Now), quiet)
	if err != nil {
		t.Fatal(err)
	}
	return cache
}

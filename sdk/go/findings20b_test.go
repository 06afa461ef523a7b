package agentrouter_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	agentrouter "github.com/tetrateio/agentrouter-go"
	authv1 "github.com/tetrateio/agentrouter-go/genapi/api/tars/auth/v1"
)

// D. A 304 whose ETag is another than the cached one is a failed refresh that drops the cached
// ETag: the next retry is an unconditional GET, whose 200 replaces the set. The peer answers
// any If-None-Match with 304 and another tag, and an unconditional GET with 200 and the set.
func TestCache304WithAnotherTagRetriesUnconditionally(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	body := jsonMarshal(t, map[string]any{"keys": []map[string]any{key.jwk(t)}})
	var mu sync.Mutex
	var inm []string
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inm = append(inm, r.Header.Get("If-None-Match"))
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=10, stale-if-error=5")
		if r.Header.Get("If-None-Match") != "" {
			w.Header().Set("ETag", `"other"`)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(server.Close)
	clock := newFakeClock()
	cache := cacheAt(t, server.URL, clock)
	mustKey(t, cache, key.kid)
	clock.Advance(11 * time.Second) // stale: the conditional GET gets a 304 of another tag
	mustKey(t, cache, key.kid)      // a failed refresh, within stale-if-error
	waitFor(t, "the refresh ends", cache.Idle)
	clock.Advance(2 * time.Second) // the 1 s backoff is over: the retry
	mustKey(t, cache, key.kid)
	waitFor(t, "the retry ends", cache.Idle)
	clock.Advance(5 * time.Second) // past max-age + stale-if-error of the first answer
	mustKey(t, cache, key.kid)
	mu.Lock()
	defer mu.Unlock()
	if len(inm) != 3 || inm[0] != "" || inm[1] != `"v1"` || inm[2] != "" {
		t.Errorf(`If-None-Match sent %q, want ["" "\"v1\"" ""]: the retry after a 304 of another tag is unconditional`, inm)
	}
}

// E (1 and 2). While refreshes are failing, a token whose kid the set lacks is "keys
// unavailable" at once: within the backoff (no request), and while a retry hangs (the caller
// does not wait for it).
func TestCacheUnknownKidWhileRefreshesFailIsKeysUnavailableAtOnce(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	o := newOrigin(t, key)
	o.set(func() { o.cacheControl = "max-age=10, stale-if-error=100" })
	clock := newFakeClock()
	cache := cacheAt(t, o.server.URL, clock, agentrouter.WithTimeout(time.Hour))
	mustKey(t, cache, key.kid)
	o.set(func() { o.status, o.body = http.StatusServiceUnavailable, []byte("down") })
	clock.Advance(11 * time.Second)
	mustKey(t, cache, key.kid) // the refresh fails: the cached set, within stale-if-error
	waitFor(t, "the refresh ends", cache.Idle)
	before := o.requests.Load()
	if _, err := cache.Key(context.Background(), "new-key"); !errors.Is(err, agentrouter.ErrKeysUnavailable) || errors.Is(err, agentrouter.ErrInvalidToken) {
		t.Errorf("unknown kid within the backoff after a failed refresh: %v, want ErrKeysUnavailable", err)
	}
	if n := o.requests.Load(); n != before {
		t.Errorf("unknown kid within the backoff: %d requests, want none", n-before)
	}
	// The server now accepts and never answers; the retry hangs (client timeout 1 h).
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	o.set(func() { o.hold = hold })
	clock.Advance(2 * time.Second) // the backoff is over: a known kid starts the retry
	mustKey(t, cache, key.kid)
	waitFor(t, "the retry reaches the server", func() bool { return o.requests.Load() == before+1 })
	answered := make(chan error, 1)
	go func() { _, err := cache.Key(context.Background(), "another-new-key"); answered <- err }()
	select {
	case err := <-answered:
		if !errors.Is(err, agentrouter.ErrKeysUnavailable) {
			t.Errorf("unknown kid while a retry hangs: %v, want ErrKeysUnavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("unknown kid while a retry hangs: no answer after 10 s, it waits for the retry")
	}
}

// E. While refreshes fail and the set is still fresh, an unknown kid past the backoff starts a
// retry in the background (it answers keys unavailable at once): without it, a new key would
// stay unknown until the set's max-age ran out.
func TestCacheUnknownKidPastTheBackoffOfAFreshSetStartsARetry(t *testing.T) {
	t.Parallel()
	key, next := newSigningKey(t, "ES256"), newSigningKey(t, "ES256")
	o := newOrigin(t, key)
	o.set(func() { o.cacheControl = "max-age=60" })
	clock := newFakeClock()
	cache := o.cache(t, clock)
	mustKey(t, cache, key.kid)
	o.set(func() { o.status, o.body = http.StatusServiceUnavailable, []byte("down") })
	// The set is fresh: an unknown kid refreshes (the cooldown allows one), which fails.
	if _, err := cache.Key(context.Background(), next.kid); !errors.Is(err, agentrouter.ErrKeysUnavailable) {
		t.Fatalf("unknown kid, refresh failing: %v, want ErrKeysUnavailable", err)
	}
	waitFor(t, "the refresh ends", cache.Idle)
	o.publish(t, key, next)        // the server answers again, with the new key
	clock.Advance(5 * time.Second) // past the backoff, within max-age and the unknown-kid cooldown
	if _, err := cache.Key(context.Background(), next.kid); !errors.Is(err, agentrouter.ErrKeysUnavailable) {
		t.Errorf("unknown kid while failing: %v, want ErrKeysUnavailable at once", err)
	}
	waitFor(t, "a retry in the background", func() bool { return o.requests.Load() == 3 && cache.Idle() })
	mustKey(t, cache, next.kid) // the retry brought the new key
}

// A. One malformed key is skipped, never the whole set: an RSA key with n "A" beside a good one.
func TestCacheMalformedRSAKeyDoesNotSpoilTheSet(t *testing.T) {
	t.Parallel()
	good := newSigningKey(t, "ES256")
	o := newOrigin(t, good)
	o.set(func() {
		o.body = jsonMarshal(t, map[string]any{"keys": []any{
			map[string]any{"kty": "RSA", "n": "A", "e": "AQAB", "kid": "junk", "alg": "RS256"},
			good.jwk(t),
		}})
	})
	clock := newFakeClock()
	verifier := verifierOver(t, o.cache(t, clock))
	if _, err := verifier.Verify(context.Background(), good.sign(t, claimsFor(clock.Now()), nil)); err != nil {
		t.Fatalf("the good key beside an RSA key with n \"A\": %v", err)
	}
}

// I. An RSA key whose modulus is prime is refused when a token names it: with phi(n) = n-1,
// anyone computes d from the published key. Reading the set runs no primality test, so the key
// stays in the set: a token "signed" with d = e^-1 mod (n-1) is invalid with a message that
// says why, and the good key beside it verifies. A set whose only key is that one is a set
// (no refresh for an unknown kid): its tokens are invalid, not "keys unavailable".
func TestCacheRSAKeyWithPrimeModulusIsRefusedWhenATokenNamesIt(t *testing.T) {
	t.Parallel()
	n, err := rand.Prime(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e := big.NewInt(65537)
	d := new(big.Int).ModInverse(e, new(big.Int).Sub(n, big.NewInt(1)))
	if d == nil {
		t.Skip("e is not invertible mod n-1 for this prime") // 1 in 65537
	}
	b64 := base64.RawURLEncoding.EncodeToString
	primeJWK := map[string]any{"kty": "RSA", "n": b64(n.Bytes()), "e": b64(e.Bytes()), "kid": "prime", "alg": "RS256", "use": "sig"}
	good := newSigningKey(t, "ES256")
	clock := newFakeClock()
	// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §9.2), by hand: m^d mod n.
	signingInput := b64(jsonMarshal(t, map[string]any{"alg": "RS256", "kid": "prime", "typ": "JWT"})) + "." +
		b64(jsonMarshal(t, claimsFor(clock.Now())))
	digest := sha256.Sum256([]byte(signingInput))
	prefix := []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}
	size := (n.BitLen() + 7) / 8
	em := append([]byte{0x00, 0x01}, bytes.Repeat([]byte{0xff}, size-3-len(prefix)-len(digest))...)
	em = append(append(append(em, 0x00), prefix...), digest[:]...)
	signature := new(big.Int).Exp(new(big.Int).SetBytes(em), d, n).FillBytes(make([]byte, size))
	forged := signingInput + "." + b64(signature)
	const why = "the key of the token's kid is not usable: its RSA modulus is prime"

	o := newOrigin(t, good)
	o.set(func() { o.body = jsonMarshal(t, map[string]any{"keys": []any{primeJWK, good.jwk(t)}}) })
	verifier := verifierOver(t, o.cache(t, clock, agentrouter.WithUnknownKidCooldown(time.Hour)))
	if _, err := verifier.Verify(context.Background(), good.sign(t, claimsFor(clock.Now()), nil)); err != nil {
		t.Fatalf("the good key: %v", err)
	}
	if got := agentrouter.PrimalityTestsOf(n); got != 0 {
		t.Errorf("reading the set ran %d primality tests of the prime modulus, want 0", got)
	}
	for range 2 { // the second from what the first learnt of the key
		_, err = verifier.Verify(context.Background(), forged)
		if !errors.Is(err, agentrouter.ErrInvalidToken) || !strings.Contains(err.Error(), why) {
			t.Errorf("a token signed with d = e^-1 mod (n-1) of a prime n: %v, want ErrInvalidToken: %s", err, why)
		}
	}

	alone := newOrigin(t)
	alone.set(func() { alone.body = jsonMarshal(t, map[string]any{"keys": []any{primeJWK}}) })
	verifier = verifierOver(t, alone.cache(t, clock, agentrouter.WithUnknownKidCooldown(0)))
	_, err = verifier.Verify(context.Background(), forged)
	if !errors.Is(err, agentrouter.ErrInvalidToken) || !strings.Contains(err.Error(), why) {
		t.Errorf("the forged token of a set whose only key has a prime modulus: %v, want ErrInvalidToken: %s", err, why)
	}
	if got := alone.requests.Load(); got != 1 {
		t.Errorf("%d requests for the set whose only key has a prime modulus, want 1 (the key is in the set)", got)
	}
	if got := agentrouter.PrimalityTestsOf(n); got != 1 {
		t.Errorf("%d primality tests of the prime modulus for three tokens over two caches, want 1 (memoized)", got)
	}
}

// signParts signs a header and a payload of the test's own bytes with an ES256 key.
func signParts(t *testing.T, key signingKey, header, payload []byte) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	input := b64(header) + "." + b64(payload)
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key.private.(*ecdsa.PrivateKey), digest[:])
	if err != nil {
		t.Fatal(err)
	}
	signature := append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	return input + "." + b64(signature)
}

// utf16LE is text in UTF-16LE, for ASCII text.
func utf16LE(text []byte) []byte {
	out := make([]byte, 0, 2*len(text))
	for _, c := range text {
		out = append(out, c, 0)
	}
	return out
}

// C. A token's header and payload are each exactly one JSON object in strict UTF-8, with no
// BOM and nothing after it; a header with b64 is refused. Each form is signed by the
// published key, and the control (the same bytes, well-formed) verifies.
func TestVerifierRefusesOddTokenBytes(t *testing.T) {
	t.Parallel()
	f := newVerifierFixture(t)
	es := f.keys["ES256"]
	header := []byte(`{"alg":"ES256","kid":"` + es.kid + `","typ":"JWT"}`)
	payload := jsonMarshal(t, claimsFor(f.clock.Now()))
	withSub := func(sub string) []byte {
		return append(payload[:len(payload)-1:len(payload)-1], []byte(`,"sub2":"`+sub+`"}`)...)
	}
	bom := []byte{0xef, 0xbb, 0xbf}
	if _, err := f.verifier.Verify(context.Background(), signParts(t, es, header, withSub("u"))); err != nil {
		t.Fatalf("the well-formed control: %v", err)
	}
	headerWith := func(extra string) []byte {
		return append(header[:len(header)-1:len(header)-1], []byte(extra+"}")...)
	}
	for name, token := range map[string]string{
		"payload with a trailing }":     signParts(t, es, header, append(bytes.Clone(payload), '}')),
		"payload with a trailing ]":     signParts(t, es, header, append(bytes.Clone(payload), ']')),
		"payload with a second object":  signParts(t, es, header, append(bytes.Clone(payload), []byte(`{}`)...)),
		"payload with invalid UTF-8":    signParts(t, es, header, withSub("u\xff")),
		"payload with a BOM":            signParts(t, es, header, append(bytes.Clone(bom), payload...)),
		"payload in UTF-16LE":           signParts(t, es, header, utf16LE(payload)),
		"header with a trailing }":      signParts(t, es, append(bytes.Clone(header), '}'), payload),
		"header with invalid UTF-8":     signParts(t, es, headerWith(",\"x\":\"\xff\""), payload),
		"header with a BOM":             signParts(t, es, append(bytes.Clone(bom), header...), payload),
		"header in UTF-16LE":            signParts(t, es, utf16LE(header), payload),
		"header with b64 false":         signParts(t, es, headerWith(`,"b64":false`), payload),
		"header with b64 true":          signParts(t, es, headerWith(`,"b64":true`), payload),
		"header with b64 false in crit": signParts(t, es, headerWith(`,"b64":false,"crit":["b64"]`), payload),
	} {
		if _, err := f.verifier.Verify(context.Background(), token); !errors.Is(err, agentrouter.ErrInvalidToken) {
			t.Errorf("%s: got %v, want ErrInvalidToken", name, err)
		}
	}
}

// H. The log names the jwks_uri without its query and without its fragment.
func TestCacheLogHasNoQueryOrFragmentOfTheJWKSURI(t *testing.T) {
	t.Parallel()
	client, err := agentrouter.New(context.Background(), agentrouter.WithBaseURL("http://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, uri := range []string{
		"http://127.0.0.1:1/jwks#access_token=FRAG123",
		"http://127.0.0.1:1/jwks?api_key=QUERY123",
		"http://127.0.0.1:1/jwks?api_key=QUERY123#access_token=FRAG123",
	} {
		logs := &logCount{}
		cache, err := agentrouter.NewKeySetCache(client, agentrouter.WithClock(newFakeClock().Now), agentrouter.WithLogger(slog.New(logs)),
			agentrouter.WithJWKSURI(uri))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cache.Key(context.Background(), "k"); !errors.Is(err, agentrouter.ErrKeysUnavailable) {
			t.Fatalf("a fetch from port 1: %v, want ErrKeysUnavailable", err)
		}
		warns, text := logs.counts()
		if warns != 1 || !strings.Contains(text, "http://127.0.0.1:1/jwks") {
			t.Fatalf("%d warnings, want 1 naming the URL: %s", warns, text)
		}
		if strings.Contains(text, "QUERY123") || strings.Contains(text, "FRAG123") {
			t.Errorf("the log names the jwks_uri's query or fragment: %s", text)
		}
	}
}

// G. A jwks_uri with whitespace, control characters or backslashes, or without a host, is
// refused at construction.
func TestCacheRefusesMalformedJWKSURIs(t *testing.T) {
	t.Parallel()
	client, err := agentrouter.New(context.Background(), agentrouter.WithBaseURL("http://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agentrouter.NewKeySetCache(client, agentrouter.WithJWKSURI("https://h.example/jwks?x=1")); err != nil {
		t.Fatalf("a good jwks_uri: %v", err)
	}
	for _, uri := range []string{
		" http://h.example/jwks", "http://h.example/jwks ", "http://h.example/jw ks", "http://h.example/jw\nks",
		"http://h.example/jw\tks", "http://h.example/jw\x7fks", "http://h.example/jw\u00a0ks", `http:\\h.example\jwks`,
		`http://h.example\jwks`, "http:h.example/jwks", "http:///jwks", "http://:443/jwks", "https://",
	} {
		if _, err := agentrouter.NewKeySetCache(client, agentrouter.WithJWKSURI(uri)); err == nil {
			t.Errorf("jwks_uri %q: accepted", uri)
		}
	}
}

// discoveryServer answers GetOpenIDConfiguration (a Connect GET in binary Protobuf) with doc,
// and serves body at /jwks.
func discoveryHandler(t *testing.T, doc func() *authv1.GetOpenIDConfigurationResponse, body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/jwks" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
			return
		}
		raw, err := proto.Marshal(doc())
		if err != nil {
			t.Error(err)
			return
		}
		w.Header().Set("Content-Type", "application/proto")
		_, _ = w.Write(raw)
	}
}

// F. The client follows no redirect from https to http (discovery included), and an https
// issuer whose document names an http jwks_uri is refused. The https peer uses httptest's CA.
func TestClientRefusesHTTPSToHTTPAndHTTPKeySetOfHTTPSIssuer(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	body := jsonMarshal(t, map[string]any{"keys": []map[string]any{key.jwk(t)}})
	const issuer = "https://issuer.test"
	var plainURL, tlsURL string
	plain := httptest.NewServer(discoveryHandler(t, func() *authv1.GetOpenIDConfigurationResponse {
		return &authv1.GetOpenIDConfigurationResponse{Issuer: issuer, JwksUri: plainURL + "/jwks"}
	}, body))
	t.Cleanup(plain.Close)
	plainURL = plain.URL
	var mu sync.Mutex
	jwksURI := ""
	secure := httptest.NewTLSServer(discoveryHandler(t, func() *authv1.GetOpenIDConfigurationResponse {
		mu.Lock()
		defer mu.Unlock()
		return &authv1.GetOpenIDConfigurationResponse{Issuer: issuer, JwksUri: jwksURI}
	}, body))
	t.Cleanup(secure.Close)
	tlsURL = secure.URL
	redirector := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plainURL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	newClient := func(base string, server *httptest.Server) *agentrouter.Client {
		client, err := agentrouter.New(context.Background(), agentrouter.WithBaseURL(base), agentrouter.WithHTTPClient(server.Client()))
		if err != nil {
			t.Fatal(err)
		}
		return client
	}
	// The control: an https issuer with an https jwks_uri builds a verifier that verifies.
	mu.Lock()
	jwksURI = tlsURL + "/jwks"
	mu.Unlock()
	v, err := agentrouter.VerifierFromIssuer(context.Background(), newClient(tlsURL, secure), issuer, agentrouter.WithAudience("api"))
	if err != nil {
		t.Fatalf("an https issuer with an https jwks_uri: %v", err)
	}
	if _, err := v.Verify(context.Background(), key.sign(t, claimsFor(time.Now()), nil)); err != nil {
		t.Fatalf("a token of the https issuer: %v", err)
	}
	// Discovery redirected from https to http: refused.
	redirected := newClient(redirector.URL, redirector)
	if _, err := agentrouter.VerifierFromIssuer(context.Background(), redirected, issuer, agentrouter.WithAudience("api")); err == nil {
		t.Error("discovery redirected from https to http: a verifier was built")
	}
	if _, err := redirected.Auth().GetJWKS(context.Background(), nil); err == nil {
		t.Error("GetJWKS redirected from https to http: answered")
	}
	// An https issuer whose document names an http jwks_uri: refused.
	mu.Lock()
	jwksURI = plainURL + "/jwks"
	mu.Unlock()
	if _, err := agentrouter.VerifierFromIssuer(context.Background(), newClient(tlsURL, secure), issuer, agentrouter.WithAudience("api")); err == nil {
		t.Error("an https issuer whose jwks_uri is http://: a verifier was built")
	}
}

// N. VerifierFromIssuer requires the issuer it discovered: WithoutIssuerCheck, or WithIssuer
// naming another issuer, is an error.
func TestVerifierFromIssuerRefusesAnotherIssuerCheck(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	body := jsonMarshal(t, map[string]any{"keys": []map[string]any{key.jwk(t)}})
	const issuer = "http://issuer.test"
	var url string
	server := httptest.NewServer(discoveryHandler(t, func() *authv1.GetOpenIDConfigurationResponse {
		return &authv1.GetOpenIDConfigurationResponse{Issuer: issuer, JwksUri: url + "/jwks"}
	}, body))
	t.Cleanup(server.Close)
	url = server.URL
	client, err := agentrouter.New(context.Background(), agentrouter.WithBaseURL(url))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agentrouter.VerifierFromIssuer(context.Background(), client, issuer, agentrouter.WithAudience("api"), agentrouter.WithIssuer(issuer)); err != nil {
		t.Fatalf("WithIssuer of the same issuer: %v", err)
	}
	for name, opt := range map[string]agentrouter.VerifierOption{
		"WithoutIssuerCheck": agentrouter.WithoutIssuerCheck(),
		"WithIssuer(other)":  agentrouter.WithIssuer("https://other.test"),
	} {
		if _, err := agentrouter.VerifierFromIssuer(context.Background(), client, issuer, agentrouter.WithAudience("api"), opt); err == nil {
			t.Errorf("VerifierFromIssuer with %s: accepted", name)
		}
	}
}

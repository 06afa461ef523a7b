package agentrouter_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	agentrouter "github.com/tetrateio/agentrouter-go"
)

// One malformed key is skipped, never the whole set: an RSA key with n "A" beside a good one.
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

// The log names the jwks_uri without its query and without its fragment.
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

// A jwks_uri with whitespace, control characters or backslashes, or without a host, is
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

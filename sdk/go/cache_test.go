package agentrouter_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	agentrouter "github.com/tetrateio/agentrouter-go"
)

// The behaviour table of the key cache, one test per row, against a local origin whose answers
// say: max-age=10, stale-while-revalidate=20, stale-if-error=100 (testCacheControl).

func mustKey(t *testing.T, cache *agentrouter.KeySetCache, kid string) {
	t.Helper()
	key, err := cache.Key(context.Background(), kid)
	if err != nil {
		t.Fatalf("Key(%s): %v", kid, err)
	}
	if key.Kid != kid || key.Key == nil {
		t.Fatalf("Key(%s): got %+v", kid, key)
	}
}

func TestCacheFreshAnswersWithoutARequest(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	o := newOrigin(t, key)
	clock := newFakeClock()
	cache := o.cache(t, clock)
	verifier := verifierOver(t, cache)
	mustKey(t, cache, key.kid)
	for range 100 {
		clock.Advance(90 * time.Millisecond) // 9 s in all: within max-age=10
		if _, err := verifier.Verify(context.Background(), key.sign(t, claimsFor(clock.Now()), nil)); err != nil {
			t.Fatalf("Verify with a warm cache: %v", err)
		}
	}
	if n := o.requests.Load(); n != 1 {
		t.Errorf("the origin got %d requests, want 1: a fresh set is used without a request", n)
	}
}

func TestCacheRevalidatesWith304AndRestartsTheAge(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	o := newOrigin(t, key)
	o.set(func() { o.cacheControl = "max-age=10" }) // no stale-while-revalidate: the caller waits
	clock := newFakeClock()
	cache := o.cache(t, clock)
	mustKey(t, cache, key.kid)
	clock.Advance(11 * time.Second)
	mustKey(t, cache, key.kid)
	if r, a := o.revalid.Load(), o.answered.Load(); r != 1 || a != 1 {
		t.Fatalf("after max-age: %d conditional requests, %d answered 304; want 1 and 1", r, a)
	}
	clock.Advance(9 * time.Second) // 20 s after the first answer, 9 s after the 304
	mustKey(t, cache, key.kid)
	if n := o.requests.Load(); n != 2 {
		t.Errorf("%d requests, want 2: a 304 restarts the set's age", n)
	}
	// A 304 that carries Cache-Control sets the freshness that follows it.
	o.set(func() { o.cacheControl = "max-age=1" })
	clock.Advance(11 * time.Second)
	mustKey(t, cache, key.kid)
	clock.Advance(2 * time.Second)
	mustKey(t, cache, key.kid)
	if n := o.answered.Load(); n != 3 {
		t.Errorf("%d 304s, want 3: the 304's own max-age=1 applies after it", n)
	}
}

func TestCacheStaleWhileRevalidateAnswersAtOnceAndRefreshesOnceInTheBackground(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	o := newOrigin(t, key)
	clock := newFakeClock()
	cache := o.cache(t, clock)
	mustKey(t, cache, key.kid)
	hold := make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release)
	o.set(func() { o.hold = hold }) // the refresh waits until the test lets it go
	clock.Advance(15 * time.Second) // past max-age=10, within stale-while-revalidate=20
	answered := make(chan error, 20)
	for range 20 {
		go func() { _, err := cache.Key(context.Background(), key.kid); answered <- err }()
	}
	for range 20 { // answered while the refresh hangs
		select {
		case err := <-answered:
			if err != nil {
				t.Fatalf("within stale-while-revalidate: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("within stale-while-revalidate, a caller waited for the refresh")
		}
	}
	waitFor(t, "the background refresh reaches the origin", func() bool { return o.requests.Load() == 2 })
	release()
	waitFor(t, "the background refresh is answered", func() bool { return o.answered.Load() == 1 })
	clock.Advance(5 * time.Second) // 5 s after the 304: fresh again
	mustKey(t, cache, key.kid)
	if n := o.requests.Load(); n != 2 {
		t.Errorf("%d requests, want 2: one background refresh for 20 callers, then fresh", n)
	}
}

func TestCacheStaleIfErrorKeepsTheSetLogsOnceAndBacksOff(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	o := newOrigin(t, key)
	o.set(func() { o.cacheControl = "max-age=10, stale-if-error=100" })
	clock := newFakeClock()
	logs := &logCount{}
	cache := o.cache(t, clock, agentrouter.WithLogger(slog.New(logs)))
	mustKey(t, cache, key.kid)
	o.set(func() { o.status, o.body = http.StatusServiceUnavailable, []byte("\x1b[2Jdown\r\nfor good") })
	clock.Advance(20 * time.Second)
	mustKey(t, cache, key.kid) // refresh fails: the cached set, within stale-if-error
	if n := o.requests.Load(); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
	// Retries back off: 1 s, then 2, 4, 8 s after each failure; calls between reach nobody.
	// Each retry runs in the background: it ends before the clock moves on.
	var at []int
	for second := 1; second <= 20; second++ {
		clock.Advance(time.Second)
		before := o.requests.Load()
		mustKey(t, cache, key.kid)
		waitFor(t, "the retry ends", cache.Idle)
		if o.requests.Load() != before {
			at = append(at, second)
		}
	}
	if want := []int{1, 3, 7, 15}; fmt.Sprint(at) != fmt.Sprint(want) {
		t.Errorf("retries %v seconds after the first failure, want %v (1 s, doubling)", at, want)
	}
	warns, text := logs.counts()
	if warns != 1 {
		t.Errorf("%d warnings for one streak of failures, want 1:\n%s", warns, text)
	}
	if strings.ContainsAny(text, "\x1b\r") || strings.Contains(text, "for good") {
		t.Errorf("the log repeats the server's bytes: %q", text)
	}
	// Beyond stale-if-error (max-age 10 + 100 s after the answer): keys unavailable.
	clock.Advance(71 * time.Second)
	_, err := cache.Key(context.Background(), key.kid)
	if !errors.Is(err, agentrouter.ErrKeysUnavailable) {
		t.Fatalf("past stale-if-error: got %v, want ErrKeysUnavailable", err)
	}
	if errors.Is(err, agentrouter.ErrInvalidToken) {
		t.Errorf("keys unavailable is also an invalid token: %v", err)
	}
	// Back: the set is fetched again, and a new streak would be logged again.
	o.publish(t, key)
	clock.Advance(time.Minute)
	mustKey(t, cache, key.kid)
}

func TestCacheBeyondStaleWhileRevalidateRefreshesOnceBeforeAnswering(t *testing.T) {
	t.Parallel()
	old, next := newSigningKey(t, "ES256"), newSigningKey(t, "EdDSA")
	o := newOrigin(t, old)
	clock := newFakeClock()
	cache := o.cache(t, clock)
	mustKey(t, cache, old.kid)
	o.publish(t, next) // old removed: a new ETag
	clock.Advance(31 * time.Second)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() { mustKey(t, cache, next.kid) }) // all see the new set: they waited
	}
	wg.Wait()
	if n := o.requests.Load(); n != 2 {
		t.Errorf("%d requests for 20 concurrent callers past stale-while-revalidate, want 2", n)
	}
	_, err := cache.Key(context.Background(), old.kid)
	if !errors.Is(err, agentrouter.ErrInvalidToken) {
		t.Errorf("the removed key after the refresh: %v, want ErrInvalidToken", err)
	}
}

func TestCacheNoSetAndFirstFetchFailsIsKeysUnavailable(t *testing.T) {
	t.Parallel()
	o := newOrigin(t)
	o.set(func() { o.status, o.body = http.StatusInternalServerError, []byte("oops") })
	cache := o.cache(t, newFakeClock())
	_, err := cache.Key(context.Background(), "any")
	if !errors.Is(err, agentrouter.ErrKeysUnavailable) || !strings.Contains(err.Error(), "HTTP 500") {
		t.Fatalf("got %v, want ErrKeysUnavailable naming HTTP 500", err)
	}
	// Within the backoff, no request.
	_, err = cache.Key(context.Background(), "any")
	if !errors.Is(err, agentrouter.ErrKeysUnavailable) || o.requests.Load() != 1 {
		t.Errorf("within the backoff: %v after %d requests, want ErrKeysUnavailable after 1", err, o.requests.Load())
	}
}

func TestCacheUnknownKidOneSharedRefreshPerCooldown(t *testing.T) {
	t.Parallel()
	key, added := newSigningKey(t, "ES256"), newSigningKey(t, "EdDSA")
	o := newOrigin(t, key)
	clock := newFakeClock()
	cache := o.cache(t, clock, agentrouter.WithUnknownKidCooldown(5*time.Second))
	mustKey(t, cache, key.kid)
	o.publish(t, key, added)
	hold := make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release)
	o.set(func() { o.hold = hold })
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Go(func() {
			kid := added.kid
			if i%2 == 1 {
				kid = fmt.Sprintf("random-%d", i)
			}
			_, err := cache.Key(context.Background(), kid)
			if kid == added.kid && err != nil {
				errs <- err
			}
		})
	}
	waitFor(t, "the unknown kids' refresh reaches the origin", func() bool { return o.requests.Load() == 2 })
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("the added key, after the shared refresh: %v", err)
	}
	if n := o.requests.Load(); n != 2 {
		t.Fatalf("%d requests for 50 concurrent unknown kids, want 2 (one shared refresh)", n)
	}
	// Within the cooldown an unknown kid is invalid at once, without a request.
	for i := range 1000 {
		clock.Advance(4 * time.Millisecond)
		_, err := cache.Key(context.Background(), fmt.Sprintf("flood-%d", i))
		if !errors.Is(err, agentrouter.ErrInvalidToken) {
			t.Fatalf("unknown kid within the cooldown: %v, want ErrInvalidToken", err)
		}
	}
	if n := o.requests.Load(); n != 2 {
		t.Fatalf("%d requests, want still 2 within the cooldown", n)
	}
	clock.Advance(time.Second) // the cooldown is over
	if _, err := cache.Key(context.Background(), "after-cooldown"); !errors.Is(err, agentrouter.ErrInvalidToken) {
		t.Fatalf("unknown kid after the cooldown: %v, want ErrInvalidToken", err)
	}
	if n := o.requests.Load(); n != 3 {
		t.Errorf("%d requests, want 3: one refresh once the cooldown is over", n)
	}
}

func TestCacheBoundedAnswersAreErrorsThatKeepTheGoodSet(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	many := make([]string, 257)
	for i := range many {
		many[i] = fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","kid":"k%d","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`, i)
	}
	for name, tc := range map[string]struct {
		body []byte
		want string
	}{
		"over the byte limit": {[]byte(`{"keys":[],"pad":"` + strings.Repeat("A", 1<<20) + `"}`), "larger than the limit"},
		"more than 256 keys":  {[]byte(`{"keys":[` + strings.Join(many, ",") + `]}`), "more than 256"},
		"not JSON":            {[]byte("\x00\x01<html>garbage"), "not a JSON"},
		"JSON without keys":   {[]byte(`{"kes":[]}`), `without a "keys" array`},
		"keys not an array":   {[]byte(`{"keys":{"kid":"x"}}`), "not a JSON"},
		"no usable key":       {[]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h","alg":"HS256"}]}`), "usable"},
		"JSON null":           {[]byte(`null`), `without a "keys" array`},
		"truncated JSON":      {[]byte(`{"keys":[{"kty":"EC"`), "not a JSON"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// No set yet: keys unavailable, never a panic.
			o := newOrigin(t)
			o.set(func() { o.body = tc.body })
			_, err := o.cache(t, newFakeClock()).Key(context.Background(), key.kid)
			if !errors.Is(err, agentrouter.ErrKeysUnavailable) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("no set yet: got %v, want ErrKeysUnavailable saying %q", err, tc.want)
			}
			// A good set cached: the bad answer does not replace it.
			o = newOrigin(t, key)
			o.set(func() { o.cacheControl = "max-age=10, stale-if-error=100" })
			clock := newFakeClock()
			cache := o.cache(t, clock)
			mustKey(t, cache, key.kid)
			o.set(func() { o.body, o.etag = tc.body, `"other"` })
			clock.Advance(11 * time.Second)
			mustKey(t, cache, key.kid)
			if n := o.requests.Load(); n != 2 {
				t.Errorf("%d requests, want 2", n)
			}
		})
	}
}

func TestCacheSkipsUnusableKeys(t *testing.T) {
	t.Parallel()
	good := newSigningKey(t, "EdDSA")
	ec := newSigningKey(t, "ES256")
	jwk := func(change func(map[string]any)) map[string]any {
		member := ec.jwk(t)
		change(member)
		return member
	}
	unusable := map[string]map[string]any{
		"no-kid":     jwk(func(m map[string]any) { delete(m, "kid") }),
		"private":    jwk(func(m map[string]any) { m["kid"], m["d"] = "private", "AAAA" }),
		"use-enc":    jwk(func(m map[string]any) { m["kid"], m["use"] = "use-enc", "enc" }),
		"alg-ES384":  jwk(func(m map[string]any) { m["kid"], m["alg"] = "alg-ES384", "ES384" }),
		"no-alg":     jwk(func(m map[string]any) { m["kid"] = "no-alg"; delete(m, "alg") }),
		"alg-RS256":  jwk(func(m map[string]any) { m["kid"], m["alg"] = "alg-RS256", "RS256" }), // not an RSA key
		"oct":        {"kty": "oct", "k": "c2VjcmV0", "kid": "oct", "alg": "HS256"},
		"kid-number": jwk(func(m map[string]any) { m["kid"] = 7 }),
		"off-curve":  jwk(func(m map[string]any) { m["kid"], m["y"] = "off-curve", m["x"] }),
		"not-object": {"kid": []int{1}},
	}
	o := newOrigin(t, good)
	o.set(func() {
		var doc map[string][]any
		_ = jsonUnmarshal(o.body, &doc)
		for _, m := range unusable {
			doc["keys"] = append(doc["keys"], m)
		}
		o.body = jsonMarshal(t, doc)
	})
	cache := o.cache(t, newFakeClock(), agentrouter.WithUnknownKidCooldown(time.Hour))
	mustKey(t, cache, good.kid)
	for kid := range unusable {
		if _, err := cache.Key(context.Background(), kid); !errors.Is(err, agentrouter.ErrInvalidToken) {
			t.Errorf("key %s: got %v, want it skipped (ErrInvalidToken: unknown kid)", kid, err)
		}
	}
}

func TestCacheControlIsRead(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	for _, tc := range []struct {
		header string
		fresh  time.Duration // the set is used without a request for this long, not a second more
	}{
		{"max-age=10", 10 * time.Second},
		{"", 300 * time.Second},
		{"public", 300 * time.Second},
		{"max-age=ten", 300 * time.Second},
		{"max-age=-5", 300 * time.Second},
		{"max-age=604800", 24 * time.Hour},
		{"max-age=10, no-cache", 0},
		{"no-store, max-age=10", 0},
		{`MAX-AGE="20"`, 20 * time.Second},
	} {
		t.Run(tc.header, func(t *testing.T) {
			t.Parallel()
			o := newOrigin(t, key)
			o.set(func() { o.cacheControl = tc.header })
			clock := newFakeClock()
			cache := o.cache(t, clock)
			mustKey(t, cache, key.kid)
			if tc.fresh > 0 {
				clock.Advance(tc.fresh - time.Second)
				mustKey(t, cache, key.kid)
				if n := o.requests.Load(); n != 1 {
					t.Fatalf("%q: a request within the freshness of %v", tc.header, tc.fresh)
				}
				clock.Advance(time.Second)
			}
			mustKey(t, cache, key.kid)
			if n := o.requests.Load(); n != 2 {
				t.Errorf("%q: %d requests, want a revalidation after %v", tc.header, n, tc.fresh)
			}
		})
	}
}

func TestCacheSendsTheAPIKeyOnlyToTheClientsOrigin(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	home, other := newOrigin(t, key), newOrigin(t, key)
	client := home.client(t, agentrouter.WithAPIKey("k-123.secret"))
	for _, tc := range []struct {
		o    *origin
		uri  string
		want string
	}{
		{home, "", "Bearer k-123.secret"},
		{home, home.server.URL + "/.well-known/jwks.json", "Bearer k-123.secret"},
		{other, other.server.URL + "/.well-known/jwks.json", ""},
	} {
		var opts []agentrouter.CacheOption
		if tc.uri != "" {
			opts = append(opts, agentrouter.WithJWKSURI(tc.uri))
		}
		cache, err := agentrouter.NewKeySetCache(client, opts...)
		if err != nil {
			t.Fatal(err)
		}
		mustKey(t, cache, key.kid)
		tc.o.mu.Lock()
		got := tc.o.auth[len(tc.o.auth)-1]
		tc.o.mu.Unlock()
		if got != tc.want {
			t.Errorf("jwks_uri %q: Authorization %q, want %q", tc.uri, got, tc.want)
		}
	}
}

package agentrouter_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	agentrouter "github.com/tetrateio/agentrouter-go"
)

// The key cache follows no redirect: a 3xx is a failed fetch, even to the client's own origin,
// and the keys where it points are never read.
func TestCacheFollowsNoRedirect(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	target := newOrigin(t, key)
	for _, status := range []int{http.StatusFound, http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.server.URL+"/jwks", status)
		}))
		client, err := agentrouter.New(context.Background(), agentrouter.WithBaseURL(front.URL))
		if err != nil {
			t.Fatal(err)
		}
		for name, opts := range map[string][]agentrouter.CacheOption{
			"GetJWKS":  nil,
			"jwks_uri": {agentrouter.WithJWKSURI(front.URL + "/jwks")},
		} {
			cache, err := agentrouter.NewKeySetCache(client, append([]agentrouter.CacheOption{agentrouter.WithClock(newFakeClock().Now), quiet}, opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			_, err = cache.Key(context.Background(), key.kid)
			if !errors.Is(err, agentrouter.ErrKeysUnavailable) {
				t.Errorf("%s answered %d: got %v, want ErrKeysUnavailable", name, status, err)
			}
		}
		front.Close()
	}
	if n := target.requests.Load(); n != 0 {
		t.Errorf("the redirect's target was asked %d times, want 0", n)
	}
}

// Once a refresh has failed, the set is used only until max-age + stale-if-error after its
// answer: stale-while-revalidate does not extend it.
func TestCacheStaleWhileRevalidateDoesNotExtendStaleIfError(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	o := newOrigin(t, key)
	o.set(func() { o.cacheControl = "max-age=10, stale-while-revalidate=86400, stale-if-error=5" })
	clock := newFakeClock()
	cache := o.cache(t, clock)
	mustKey(t, cache, key.kid)
	o.set(func() { o.status, o.body = http.StatusServiceUnavailable, []byte("down") })
	clock.Advance(12 * time.Second)
	mustKey(t, cache, key.kid) // within swr: the set, and a refresh in the background, that fails
	waitFor(t, "the background refresh ends", cache.Idle)
	clock.Advance(2 * time.Second)
	mustKey(t, cache, key.kid) // 14 s: within max-age + stale-if-error
	waitFor(t, "the background refresh ends", cache.Idle)
	clock.Advance(2 * time.Second) // 16 s: beyond it
	if _, err := cache.Key(context.Background(), key.kid); !errors.Is(err, agentrouter.ErrKeysUnavailable) {
		t.Fatalf("past max-age + stale-if-error after a failed refresh: got %v, want ErrKeysUnavailable", err)
	}
	waitFor(t, "the refresh ends", cache.Idle)
	// A success resets: stale-while-revalidate applies again.
	o.publish(t, key)
	clock.Advance(time.Minute)
	mustKey(t, cache, key.kid)
	clock.Advance(time.Hour)
	mustKey(t, cache, key.kid)
}

// After a failed refresh, within stale-if-error, callers are answered from the set at once
// and the retry runs in the background, one at a time: a hung server stalls nobody.
func TestCacheRetriesInTheBackgroundWithinStaleIfError(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	o := newOrigin(t, key)
	clock := newFakeClock()
	cache := cacheAt(t, o.server.URL, clock, agentrouter.WithTimeout(time.Hour))
	mustKey(t, cache, key.kid)
	o.set(func() { o.status, o.body = http.StatusServiceUnavailable, []byte("down") })
	clock.Advance(31 * time.Second) // beyond max-age 10 + stale-while-revalidate 20
	mustKey(t, cache, key.kid)      // waits for the refresh, which fails: the cached set
	waitFor(t, "the refresh ends", cache.Idle)
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	o.set(func() { o.status, o.hold = http.StatusOK, hold })
	clock.Advance(2 * time.Second) // the 1 s backoff is over: a retry is due
	before := o.requests.Load()
	var wg sync.WaitGroup
	done := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := cache.Key(context.Background(), key.kid)
			done <- err
		})
	}
	got := 0
	waitFor(t, "20 callers answered while the server hangs", func() bool {
		for {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("a caller within stale-if-error: %v", err)
				}
				got++
			default:
				return got == 20
			}
		}
	})
	wg.Wait()
	waitFor(t, "the retry reaches the server", func() bool { return o.requests.Load() > before })
	if n := o.requests.Load() - before; n != 1 {
		t.Errorf("%d retries for 20 callers, want 1", n)
	}
}

// A 304 renews the set when its tag matches the cached one by the weak comparison
// If-None-Match uses: a compressing proxy weakens the 200's tag (W/"v1"), and the 304 it
// passes on carries the origin's ("v1"), or the other way round.
func TestCache304MatchesTheCachedTagWeakly(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	body, err := json.Marshal(map[string]any{"keys": []map[string]any{key.jwk(t)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tags := range [][2]string{{`W/"v1"`, `"v1"`}, {`"v1"`, `W/"v1"`}} {
		var mu sync.Mutex
		var inm []string
		server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			inm = append(inm, r.Header.Get("If-None-Match"))
			first := len(inm) == 1
			mu.Unlock()
			w.Header().Set("Cache-Control", "max-age=10")
			if first {
				w.Header().Set("ETag", tags[0])
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(body)
				return
			}
			w.Header().Set("ETag", tags[1])
			w.WriteHeader(http.StatusNotModified)
		}))
		clock := newFakeClock()
		cache := cacheAt(t, server.URL, clock)
		mustKey(t, cache, key.kid)
		clock.Advance(11 * time.Second) // stale, no stale-if-error: only a renewal answers
		mustKey(t, cache, key.kid)
		clock.Advance(5 * time.Second) // fresh again from the 304: no request
		mustKey(t, cache, key.kid)
		mu.Lock()
		if len(inm) != 2 || inm[1] != tags[0] {
			t.Errorf("cached %s, 304 with %s: If-None-Match sent %q, want [\"\" %s]", tags[0], tags[1], inm, tags[0])
		}
		mu.Unlock()
		server.Close()
	}
}

// A 304 whose ETag is another than the cached one is a failed refresh that drops the cached
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

// A 304 to a request sent without If-None-Match revalidates nothing: it is a failed refresh,
// and the set's age goes on from its answer. The peer answers a conditional GET with 304 and
// another tag, and any later unconditional GET with 304 and no tag: after the 304 of another
// tag dropped the cached one, and when the set came without an ETag.
func TestCache304ToARequestWithoutIfNoneMatchIsAFailedRefresh(t *testing.T) {
	t.Parallel()
	for name, tag := range map[string]string{"after a 304 of another tag": `"v1"`, "a set without an ETag": ""} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			key := newSigningKey(t, "ES256")
			body := jsonMarshal(t, map[string]any{"keys": []map[string]any{key.jwk(t)}})
			var mu sync.Mutex
			var inm []string
			server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				inm = append(inm, r.Header.Get("If-None-Match"))
				first := len(inm) == 1
				mu.Unlock()
				w.Header().Set("Cache-Control", "max-age=10, stale-if-error=5")
				switch {
				case first:
					if tag != "" {
						w.Header().Set("ETag", tag)
					}
					w.Header().Set("Content-Type", "application/json")
					_, _ = w.Write(body)
				case r.Header.Get("If-None-Match") != "":
					w.Header().Set("ETag", `"other"`)
					w.WriteHeader(http.StatusNotModified)
				default:
					w.WriteHeader(http.StatusNotModified)
				}
			}))
			t.Cleanup(server.Close)
			clock := newFakeClock()
			cache := cacheAt(t, server.URL, clock)
			mustKey(t, cache, key.kid)
			clock.Advance(11 * time.Second) // stale: a failed refresh, within stale-if-error
			mustKey(t, cache, key.kid)
			waitFor(t, "the refresh ends", cache.Idle)
			clock.Advance(2 * time.Second) // the 1 s backoff is over: the retry, unconditional
			mustKey(t, cache, key.kid)
			waitFor(t, "the retry ends", cache.Idle)
			clock.Advance(3 * time.Second) // past max-age + stale-if-error of the set's answer
			if _, err := cache.Key(context.Background(), key.kid); !errors.Is(err, agentrouter.ErrKeysUnavailable) {
				t.Errorf("past stale-if-error, every refresh answered 304 to a request without If-None-Match: %v, want ErrKeysUnavailable", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(inm) < 3 || inm[len(inm)-1] != "" {
				t.Errorf("If-None-Match sent %q, want the last request unconditional", inm)
			}
		})
	}
}

// While refreshes are failing, a token whose kid the set lacks is "keys
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

// While refreshes fail and the set is still fresh, an unknown kid past the backoff starts a
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

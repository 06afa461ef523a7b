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

package agentrouter_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	agentrouter "github.com/tetrateio/agentrouter-go"
)

// hostileModuli publishes, beside good, count RSA keys (kids "r0", "r1", …) whose moduli are
// fresh random odd numbers of bits bits, e = 65537: what a hostile key-set server serves to
// make each fetch cost a primality test per key (attack20c, finding R).
func hostileModuli(t *testing.T, good signingKey, count, bits int) (*origin, []*big.Int) {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	moduli := make([]*big.Int, count)
	keys := []any{good.jwk(t)}
	for i := range moduli {
		raw := make([]byte, bits/8)
		if _, err := rand.Read(raw); err != nil {
			t.Fatal(err)
		}
		raw[0] |= 0x80
		raw[len(raw)-1] |= 1
		moduli[i] = new(big.Int).SetBytes(raw)
		keys = append(keys, map[string]any{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": fmt.Sprintf("r%d", i), "n": b64(raw), "e": "AQAB"})
	}
	o := newOrigin(t, good)
	o.set(func() { o.body = jsonMarshal(t, map[string]any{"keys": keys}) })
	return o, moduli
}

// primalityTests are the primality tests run so far of each of moduli.
func primalityTests(moduli []*big.Int) []int {
	counts := make([]int, len(moduli))
	for i, n := range moduli {
		counts[i] = agentrouter.PrimalityTestsOf(n)
	}
	return counts
}

// wantTests fails the test unless the primality tests of moduli are exactly want (by index;
// 0 for the others).
func wantTests(t *testing.T, when string, moduli []*big.Int, want map[int]int) {
	t.Helper()
	for i, got := range primalityTests(moduli) {
		if got != want[i] {
			t.Errorf("%s: %d primality tests of r%d's modulus, want %d", when, got, i, want[i])
		}
	}
}

// forgedRS256 is a token naming kid, RS256, with a random signature of size bytes.
func forgedRS256(t *testing.T, kid string, now time.Time, size int) string {
	t.Helper()
	signature := make([]byte, size)
	if _, err := rand.Read(signature); err != nil {
		t.Fatal(err)
	}
	return rawToken(t, map[string]any{"alg": "RS256", "kid": kid, "typ": "JWT"}, claimsFor(now), signature)
}

// Reading a set runs no primality test: 64 fresh random odd 4,096-bit moduli are kept, not
// vetted (the good key beside them verifies without a test of any). A token naming one of them
// runs exactly one, of that key's modulus, and is invalid (its signature is random).
func TestCacheReadingASetRunsNoPrimalityTest(t *testing.T) {
	t.Parallel()
	good := newSigningKey(t, "ES256")
	o, moduli := hostileModuli(t, good, 64, 4096)
	clock := newFakeClock()
	verifier := verifierOver(t, o.cache(t, clock, agentrouter.WithUnknownKidCooldown(time.Hour)))
	if _, err := verifier.Verify(context.Background(), good.sign(t, claimsFor(clock.Now()), nil)); err != nil {
		t.Fatalf("the good key beside 64 random moduli: %v", err)
	}
	wantTests(t, "after reading the set", moduli, nil)
	_, err := verifier.Verify(context.Background(), forgedRS256(t, "r7", clock.Now(), 512))
	if !errors.Is(err, agentrouter.ErrInvalidToken) {
		t.Errorf("a token naming r7 with a random signature: %v, want ErrInvalidToken", err)
	}
	wantTests(t, "after a token naming r7", moduli, map[int]int{7: 1})
	if got := o.requests.Load(); got != 1 {
		t.Errorf("%d requests, want 1: r7 is in the set", got)
	}
}

// The vetting is memoized by modulus: a second lookup of the same key runs none, and neither
// does another cache that reads the same set and is asked for that key.
func TestCachePrimalityTestIsMemoizedAcrossLookupsAndCaches(t *testing.T) {
	t.Parallel()
	good := newSigningKey(t, "EdDSA")
	o, moduli := hostileModuli(t, good, 4, 4096)
	clock := newFakeClock()
	first := o.cache(t, clock, agentrouter.WithUnknownKidCooldown(time.Hour))
	second := o.cache(t, clock, agentrouter.WithUnknownKidCooldown(time.Hour))
	// A random odd modulus is prime once in about 1,400: then the key is refused, as it must.
	lookup := func(cache *agentrouter.KeySetCache) {
		t.Helper()
		if _, err := cache.Key(context.Background(), "r2"); err != nil && !strings.Contains(err.Error(), "its RSA modulus is prime") {
			t.Fatalf("Key(r2): %v", err)
		}
	}
	lookup(first)
	wantTests(t, "after the first lookup of r2", moduli, map[int]int{2: 1})
	lookup(first)
	wantTests(t, "after a second lookup of r2", moduli, map[int]int{2: 1})
	lookup(second)
	wantTests(t, "after another cache's lookup of r2", moduli, map[int]int{2: 1})
	verifier := verifierOver(t, second)
	for range 3 {
		if _, err := verifier.Verify(context.Background(), forgedRS256(t, "r2", clock.Now(), 512)); !errors.Is(err, agentrouter.ErrInvalidToken) {
			t.Errorf("a token naming r2 with a random signature: %v, want ErrInvalidToken", err)
		}
	}
	wantTests(t, "after three tokens naming r2", moduli, map[int]int{2: 1})

	// Concurrent first lookups of one key may each test it, never more than once per caller.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := first.Key(context.Background(), "r3"); err != nil && !strings.Contains(err.Error(), "its RSA modulus is prime") {
				t.Errorf("Key(r3): %v", err)
			}
		})
	}
	wg.Wait()
	if got := agentrouter.PrimalityTestsOf(moduli[3]); got < 1 || got > 8 {
		t.Errorf("8 concurrent first lookups of r3 ran %d primality tests of its modulus, want 1 to 8", got)
	}
}

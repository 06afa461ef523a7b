package agentrouter_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
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
// make each fetch cost a primality test per key.
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

	// Concurrent first lookups of one key run one test: the others wait for its verdict.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := first.Key(context.Background(), "r3"); err != nil && !strings.Contains(err.Error(), "its RSA modulus is prime") {
				t.Errorf("Key(r3): %v", err)
			}
		})
	}
	wg.Wait()
	if got := agentrouter.PrimalityTestsOf(moduli[3]); got != 1 {
		t.Errorf("8 concurrent first lookups of r3 ran %d primality tests of its modulus, want 1", got)
	}
}

// An RSA key whose modulus is prime is refused when a token names it: with phi(n) = n-1,
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

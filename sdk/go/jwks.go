package agentrouter

import (
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
)

// freshness is what an answer's Cache-Control says about how long its set may be used.
type freshness struct {
	maxAge               time.Duration
	staleWhileRevalidate time.Duration
	staleIfError         time.Duration
}

// parseCacheControl reads the directives this cache follows from the Cache-Control header
// lines (present: there was at least one), by the grammar the three SDKs share (README, Client
// SDKs; RFC 9110 §5.6): each line is split into elements (splitList); an element that is not a
// well-formed directive (directive) is skipped as if absent, whatever its name. Of max-age,
// stale-while-revalidate and stale-if-error the first well-formed occurrence counts; one whose
// value is not delta-seconds (`max-age=x`, a bare `max-age`) makes it invalid: max-age is then
// 300 s, a stale window 0. max-age is capped at 24 h, and is 300 s when missing; no-cache and
// no-store (with any value) make it 0. stale-while-revalidate and stale-if-error are 0 when
// missing, capped at a year, and 0 with no-cache, no-store, must-revalidate or
// proxy-revalidate, which forbid serving a stale answer (RFC 9111 §4.2.4, §5.2.2.2).
func parseCacheControl(lines []string) (fresh freshness, present bool) {
	maxAge, swr, sie := time.Duration(-1), time.Duration(-1), time.Duration(-1)
	noCache, noStale := false, false
	seen := map[*time.Duration]bool{} // the first well-formed occurrence counts, valid or not
	for _, line := range lines {
		for _, element := range splitList(line) {
			name, value, ok := directive(element)
			if !ok {
				continue
			}
			first := func(into *time.Duration) {
				if seen[into] {
					return
				}
				seen[into] = true
				if seconds, valid := parseSeconds(value); valid {
					*into = seconds
				}
			}
			switch strings.ToLower(name) {
			case "max-age":
				first(&maxAge)
			case "stale-while-revalidate":
				first(&swr)
			case "stale-if-error":
				first(&sie)
			case "no-cache", "no-store":
				noCache = true
			case "must-revalidate", "proxy-revalidate":
				noStale = true
			}
		}
	}
	switch {
	case noCache:
		maxAge = 0
	case maxAge < 0:
		maxAge = defaultMaxAge
	}
	fresh.maxAge = min(maxAge, maxMaxAge)
	if !noCache && !noStale {
		fresh.staleWhileRevalidate, fresh.staleIfError = max(swr, 0), max(sie, 0)
	}
	return fresh, len(lines) > 0
}

// splitList splits a header line into its elements at the commas outside quoted strings. A
// quoted string (where a backslash escapes the next byte) opens only when '"' is the first byte
// after the element's first '=' that is not a space or tab, and ends at the next unescaped '"';
// an unterminated one runs to the end of the line. The elements are not trimmed.
func splitList(line string) []string {
	const (
		name   = iota // before the element's first '='
		equals        // after it, before anything but spaces and tabs
		value         // in a value that is not a quoted string, or after one
		quoted        // in a quoted string
	)
	var parts []string
	start, state := 0, name
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch state {
		case quoted:
			if c == '\\' {
				i++
			} else if c == '"' {
				state = value
			}
			continue
		case equals:
			if c == '"' {
				state = quoted
				continue
			}
			if c != ' ' && c != '\t' {
				state = value
			}
		case name:
			if c == '=' {
				state = equals
				continue
			}
		}
		if c == ',' {
			parts = append(parts, line[start:i])
			start, state = i+1, name
		}
	}
	return append(parts, line[start:])
}

// directive reads one element of a list: ok only when, trimmed of spaces and tabs, it is
// `name`, `name BWS "=" BWS token` or `name BWS "=" BWS quoted-string` (RFC 9110 §5.6.2,
// §5.6.4; name and token are one or more tchar). value is the token, or the quoted string's
// content with its escapes resolved; "" for a bare name. Anything else (an empty element, an
// empty value, an unterminated quoted string, a byte after the closing quote, any other
// character) is not a directive.
func directive(element string) (name, value string, ok bool) {
	element = strings.Trim(element, " \t")
	n := tcharPrefix(element)
	name, rest := element[:n], element[n:]
	if name == "" {
		return "", "", false
	}
	if rest == "" {
		return name, "", true
	}
	rest = strings.TrimLeft(rest, " \t")
	if rest == "" || rest[0] != '=' {
		return "", "", false
	}
	rest = strings.TrimLeft(rest[1:], " \t")
	if rest == "" {
		return "", "", false
	}
	if rest[0] != '"' {
		if tcharPrefix(rest) != len(rest) {
			return "", "", false
		}
		return name, rest, true
	}
	var b strings.Builder
	for i := 1; i < len(rest); i++ {
		switch rest[i] {
		case '\\':
			if i+1 == len(rest) {
				return "", "", false
			}
			i++
			b.WriteByte(rest[i])
		case '"':
			if i != len(rest)-1 { // only spaces and tabs, trimmed above, may follow
				return "", "", false
			}
			return name, b.String(), true
		default:
			b.WriteByte(rest[i])
		}
	}
	return "", "", false // unterminated
}

// tcharPrefix is the length of s's leading run of tchar (RFC 9110 §5.6.2): ASCII letters,
// digits and !#$%&'*+-.^_`|~.
func tcharPrefix(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return i
		}
	}
	return len(s)
}

// parseSeconds reads a delta-seconds value (RFC 9111 §1.2.2): digits only; a value too large
// for a duration is taken as a year, which every cap is below.
func parseSeconds(value string) (time.Duration, bool) {
	if value == "" || strings.TrimLeft(value, "0123456789") != "" {
		return 0, false
	}
	seconds, err := strconv.ParseInt(value, 10, 64)
	if err != nil || seconds > 365*24*3600 {
		return 365 * 24 * time.Hour, true
	}
	return time.Duration(seconds) * time.Second, true
}

// allowedKeys are the kinds of key a set may hold that this SDK verifies with: each algorithm
// of the allow-list with its key type (and curve).
var allowedKeys = map[string]struct{ kty, crv string }{
	"ES256": {"EC", "P-256"},
	"RS256": {"RSA", ""},
	"EdDSA": {"OKP", "Ed25519"},
}

// privateMembers are the JWK members of a private or symmetric key (RFC 7518 §6).
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// minRSABits refuses RSA keys below 2048 bits (RFC 7518 §3.3).
const minRSABits = 2048

// parseKeySet reads an RFC 7517 JWK Set: an error when it is not one (not JSON, no "keys"
// array) or holds more than MaxJWKSKeys keys, or when no key of it is usable. Unusable keys are
// skipped. It runs no primality test: an RSA key's modulus is vetted when a token first names
// it (setKey.usable). The error never quotes the body.
func parseKeySet(body []byte) (map[string]*setKey, error) {
	// Strict UTF-8 (RFC 8259 §8.1): encoding/json would replace invalid bytes silently; a BOM
	// or UTF-16 is not JSON to it.
	if !utf8.Valid(body) {
		return nil, fmt.Errorf("the answer (%d bytes) is not a JSON JWK Set: not UTF-8", len(body))
	}
	// Member names are matched exactly (encoding/json's struct tags would also take "KEYS").
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil {
		return nil, fmt.Errorf("the answer (%d bytes) is not a JSON JWK Set", len(body))
	}
	var doc struct{ Keys *[]json.RawMessage }
	if raw, ok := members["keys"]; ok && json.Unmarshal(raw, &doc.Keys) != nil {
		return nil, fmt.Errorf("the answer (%d bytes) is not a JSON JWK Set", len(body))
	}
	if doc.Keys == nil {
		return nil, errors.New(`the answer is JSON without a "keys" array`)
	}
	if len(*doc.Keys) > MaxJWKSKeys {
		return nil, fmt.Errorf("the set holds %d keys, more than %d", len(*doc.Keys), MaxJWKSKeys)
	}
	keys := make(map[string]*setKey, len(*doc.Keys))
	for _, raw := range *doc.Keys {
		key, ok := parseKey(raw)
		if _, seen := keys[key.Kid]; ok && !seen {
			keys[key.Kid] = newSetKey(key)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("none of the set's %d keys is usable (a kid, use sig, ES256, RS256 or EdDSA, public)", len(*doc.Keys))
	}
	return keys, nil
}

// certificateMembers are the JWK members of an X.509 certificate or its location (RFC 7517
// §4.6-4.9): not used, so they neither make a key usable nor unusable.
var certificateMembers = []string{"x5u", "x5c", "x5t", "x5t#S256"}

// keyMembers are each key type's base64url members, with the length of their decoded bytes
// (0: any) for the curves of the allow-list (RFC 7518 §6.2.1.2, RFC 8037 §2).
var keyMembers = map[string]map[string]int{
	"EC":  {"x": 32, "y": 32},
	"OKP": {"x": ed25519.PublicKeySize},
	"RSA": {"n": 0, "e": 0},
}

// parseKey returns a key of the set if it is usable: a kid, no private member, an algorithm of
// the allow-list with its key type and curve, use "sig" or none, its base64url members
// canonical (unpadded, URL alphabet) and of the curve's length, a valid public key, not weak.
// A member given twice counts as encoding/json reads it: the last one.
func parseKey(raw json.RawMessage) (PublicKey, bool) {
	var members map[string]json.RawMessage
	if json.Unmarshal(raw, &members) != nil || members == nil {
		return PublicKey{}, false
	}
	for _, name := range privateMembers {
		if _, ok := members[name]; ok {
			return PublicKey{}, false
		}
	}
	text := func(name string) (string, bool) {
		value, ok := members[name]
		if !ok {
			return "", true
		}
		var s *string
		if json.Unmarshal(value, &s) != nil || s == nil {
			return "", false
		}
		return *s, true
	}
	kid, okKid := text("kid")
	kty, okKty := text("kty")
	crv, okCrv := text("crv")
	alg, okAlg := text("alg")
	use, okUse := text("use")
	_, hasUse := members["use"]
	if !okKid || !okKty || !okCrv || !okAlg || !okUse || kid == "" || (hasUse && use != "sig") {
		return PublicKey{}, false
	}
	want, ok := allowedKeys[alg]
	if !ok || kty != want.kty || crv != want.crv {
		return PublicKey{}, false
	}
	for name, size := range keyMembers[kty] {
		value, ok := text(name)
		decoded, err := base64.RawURLEncoding.Strict().DecodeString(value)
		if !ok || err != nil || strings.ContainsAny(value, "\r\n") || len(decoded) == 0 || (size > 0 && len(decoded) != size) {
			return PublicKey{}, false
		}
	}
	for _, name := range certificateMembers {
		delete(members, name)
	}
	clean, err := json.Marshal(members)
	if err != nil {
		return PublicKey{}, false
	}
	var jwk jose.JSONWebKey
	if jwk.UnmarshalJSON(clean) != nil || !jwk.IsPublic() || !jwk.Valid() {
		return PublicKey{}, false
	}
	// An RSA key of fewer than 2048 bits (go-jose refuses more than 4096), or whose e is below
	// 3 or even (no valid RSA key has an even e; e=1 lets anyone forge a signature), is
	// refused. Whether n is prime is not tested here, but when a token names the key.
	if rsaKey, isRSA := jwk.Key.(*rsa.PublicKey); isRSA && (rsaKey.N.BitLen() < minRSABits || rsaKey.E < 3 || rsaKey.E%2 == 0) {
		return PublicKey{}, false
	}
	return PublicKey{Kid: kid, Alg: alg, Key: jwk.Key}, true
}

// What is known of a key's RSA modulus (setKey.modulus).
const (
	modulusNotVetted uint32 = iota // an RSA key whose n was not tested yet
	modulusUsable                  // n is composite, or the key is not an RSA key
	modulusPrime                   // n is prime: the key is never used
)

// setKey is a key of a fetched set, with what is known of its RSA modulus. A set's keys are
// shared by every caller of its cache: modulus is set once the modulus was vetted.
type setKey struct {
	PublicKey
	modulus atomic.Uint32
}

// newSetKey returns key as a key of a set: an RSA key is not vetted yet, unless the memory of
// tested moduli already knows its n.
func newSetKey(key PublicKey) *setKey {
	k := &setKey{PublicKey: key}
	state := modulusUsable
	if rsaKey, isRSA := key.Key.(*rsa.PublicKey); isRSA {
		state = modulusNotVetted
		if prime, known := testedModulus(rsaKey.N); known {
			state = modulusUsable
			if prime {
				state = modulusPrime
			}
		}
	}
	k.modulus.Store(state)
	return k
}

// errPrimeModulus is the error of a token whose kid names an RSA key whose modulus is prime.
var errPrimeModulus = fmt.Errorf("%w: the key of the token's kid is not usable: its RSA modulus is prime", ErrInvalidToken)

// usable returns the key, once its RSA modulus is known to be composite: a prime n (then
// phi(n) = n-1, and anyone computes d from the published key) makes the key unusable, an
// [ErrInvalidToken]. The first lookup of a key not yet vetted tests n (one primality test,
// memoized by n for every cache of the process); it holds no lock but the memory's, which
// is never held during a test. Concurrent first lookups of one n run one test: the others
// wait for its verdict.
func (k *setKey) usable() (PublicKey, error) {
	state := k.modulus.Load()
	if state == modulusNotVetted {
		state = modulusUsable
		if primeModulus(k.Key.(*rsa.PublicKey).N) {
			state = modulusPrime
		}
		k.modulus.Store(state)
	}
	if state == modulusPrime {
		return PublicKey{}, errPrimeModulus
	}
	return k.PublicKey, nil
}

// primes remembers which moduli were tested, so a key named again, in this set or in another
// set of any cache, costs no new test: ProbablyPrime's first Miller-Rabin round, which a real
// modulus fails, is one modular exponentiation (measured 5 ms for 2048 bits, 44 ms for 4096,
// on a loaded machine). A modulus under test has its entry already: who asks for it then
// waits for that test's verdict instead of running another.
var primes = struct {
	sync.Mutex
	tested map[string]*modulusVerdict
}{tested: map[string]*modulusVerdict{}}

// modulusVerdict is what a primality test of a modulus found: prime is set before done is
// closed.
type modulusVerdict struct {
	done  chan struct{}
	prime bool
}

// maxTestedModuli bounds primes: past it, the memory starts again empty (a test under way
// still answers those waiting for it).
const maxTestedModuli = 4 * MaxJWKSKeys

// testedModulus says what the memory of tested moduli knows of n, running no test and
// waiting for none.
func testedModulus(n *big.Int) (prime, known bool) {
	primes.Lock()
	verdict, ok := primes.tested[string(n.Bytes())]
	primes.Unlock()
	if !ok {
		return false, false
	}
	select {
	case <-verdict.done:
		return verdict.prime, true
	default:
		return false, false
	}
}

// onPrimalityTest, when set (by the tests, before any runs), is told of each primality test
// primeModulus runs.
var onPrimalityTest func(n *big.Int)

// primeModulus says whether n is (probably: a composite passes with a probability below
// 4^-20) prime: from the memory, from the test of n under way, or from a test of its own.
func primeModulus(n *big.Int) bool {
	key := string(n.Bytes())
	primes.Lock()
	if verdict, ok := primes.tested[key]; ok {
		primes.Unlock()
		<-verdict.done
		return verdict.prime
	}
	if len(primes.tested) >= maxTestedModuli {
		clear(primes.tested)
	}
	verdict := &modulusVerdict{done: make(chan struct{})}
	primes.tested[key] = verdict
	primes.Unlock()
	defer close(verdict.done)
	if onPrimalityTest != nil {
		onPrimalityTest(n)
	}
	verdict.prime = n.ProbablyPrime(20)
	return verdict.prime
}

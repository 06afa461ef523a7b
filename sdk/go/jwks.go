package agentrouter

import (
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// freshness is what an answer's Cache-Control says about how long its set may be used.
type freshness struct {
	maxAge               time.Duration
	staleWhileRevalidate time.Duration
	staleIfError         time.Duration
}

// parseCacheControl reads the directives this cache follows from the Cache-Control header
// lines (present: there was at least one). max-age is capped at 24 h, and is 300 s when
// missing or unreadable; no-cache and no-store make it 0. A missing or unreadable
// stale-while-revalidate or stale-if-error is 0.
func parseCacheControl(lines []string) (fresh freshness, present bool) {
	fresh.maxAge = -1
	noCache := false
	for _, line := range lines {
		for _, part := range splitList(line) {
			name, value, _ := strings.Cut(strings.TrimSpace(part), "=")
			value = unquote(strings.TrimSpace(value))
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "max-age":
				if seconds, ok := parseSeconds(value); ok && fresh.maxAge < 0 {
					fresh.maxAge = seconds
				}
			case "stale-while-revalidate":
				fresh.staleWhileRevalidate, _ = parseSeconds(value)
			case "stale-if-error":
				fresh.staleIfError, _ = parseSeconds(value)
			case "no-cache", "no-store":
				noCache = true
			}
		}
	}
	switch {
	case noCache:
		fresh.maxAge = 0
	case fresh.maxAge < 0:
		fresh.maxAge = defaultMaxAge
	}
	fresh.maxAge = min(fresh.maxAge, maxMaxAge)
	return fresh, len(lines) > 0
}

// splitList splits a header line by the RFC 9110 §5.6.1 list grammar: at the commas outside
// quoted strings (§5.6.4, where a backslash escapes the next byte). An unterminated quoted
// string runs to the end of the line.
func splitList(line string) []string {
	var parts []string
	start, quoted, escaped := 0, false, false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case escaped:
			escaped = false
		case quoted && c == '\\':
			escaped = true
		case c == '"':
			quoted = !quoted
		case c == ',' && !quoted:
			parts = append(parts, line[start:i])
			start = i + 1
		}
	}
	return append(parts, line[start:])
}

// unquote returns a directive's value without its quotes and escapes when it is a quoted
// string, or as it is.
func unquote(value string) string {
	if len(value) < 2 || value[0] != '"' || value[len(value)-1] != '"' {
		return value
	}
	var b strings.Builder
	inner := value[1 : len(value)-1]
	for i := 0; i < len(inner); i++ {
		if inner[i] == '\\' && i+1 < len(inner) {
			i++
		}
		b.WriteByte(inner[i])
	}
	return b.String()
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
// skipped. The error never quotes the body.
func parseKeySet(body []byte) (map[string]PublicKey, error) {
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
	keys := make(map[string]PublicKey, len(*doc.Keys))
	for _, raw := range *doc.Keys {
		key, ok := parseKey(raw)
		if _, seen := keys[key.Kid]; ok && !seen {
			keys[key.Kid] = key
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("none of the set's %d keys is usable (a kid, use sig, ES256, RS256 or EdDSA, public)", len(*doc.Keys))
	}
	return keys, nil
}

// parseKey returns a key of the set if it is usable: a kid, no private member, an algorithm of
// the allow-list with its key type and curve, use "sig" or none, a valid public key.
func parseKey(raw json.RawMessage) (PublicKey, bool) {
	var members map[string]json.RawMessage
	if json.Unmarshal(raw, &members) != nil {
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
		var s string
		return s, json.Unmarshal(value, &s) == nil
	}
	kid, okKid := text("kid")
	kty, okKty := text("kty")
	crv, okCrv := text("crv")
	alg, okAlg := text("alg")
	use, okUse := text("use")
	if !okKid || !okKty || !okCrv || !okAlg || !okUse || kid == "" || (use != "" && use != "sig") {
		return PublicKey{}, false
	}
	want, ok := allowedKeys[alg]
	if !ok || kty != want.kty || crv != want.crv {
		return PublicKey{}, false
	}
	var jwk jose.JSONWebKey
	if jwk.UnmarshalJSON(raw) != nil || !jwk.IsPublic() || !jwk.Valid() {
		return PublicKey{}, false
	}
	// An RSA key of fewer than 2048 bits, or whose e is below 3 or even (no valid RSA key has
	// an even e; e=1 lets anyone forge a signature), is refused.
	if rsaKey, isRSA := jwk.Key.(*rsa.PublicKey); isRSA && (rsaKey.N.BitLen() < minRSABits || rsaKey.E < 3 || rsaKey.E%2 == 0) {
		return PublicKey{}, false
	}
	return PublicKey{Kid: kid, Alg: alg, Key: jwk.Key}, true
}

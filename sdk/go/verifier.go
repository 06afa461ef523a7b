package agentrouter

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
)

// ErrInvalidToken is the error of a token that does not verify: malformed, refused header,
// algorithm, unknown kid, bad signature, or a claim that fails a check. Test with errors.Is.
var ErrInvalidToken = errors.New("agentrouter: invalid token")

// DefaultLeeway is the clock difference tolerated on exp, nbf and iat, unless [WithLeeway] sets
// another.
const DefaultLeeway = 60 * time.Second

// maxTokenBytes bounds a token: a larger one is invalid without being decoded.
const maxTokenBytes = 64 << 10

// refusedHeaders are the JOSE header members a token must not carry: a key or a key's location
// given by the token itself (never fetched, never trusted), and critical extensions (none is
// understood here). enc marks a JWE.
// b64 (RFC 7797) would change what the signature covers.
var refusedHeaders = []string{"jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64", "enc", "zip"}

// VerifierOption configures a [Verifier]; pass options to [NewVerifier] or
// [VerifierFromIssuer].
type VerifierOption func(*verifierConfig)

type verifierConfig struct {
	issuer, audience         string
	skipIssuer, skipAudience bool
	leeway                   time.Duration
	cacheOptions             []CacheOption
}

// WithIssuer requires the token's iss claim to be exactly issuer. A verifier needs it, or
// [WithoutIssuerCheck].
func WithIssuer(issuer string) VerifierOption {
	return func(c *verifierConfig) { c.issuer = issuer }
}

// WithAudience requires the token's aud claim (a string, or an array of strings) to hold
// audience. A verifier needs it, or [WithoutAudienceCheck].
func WithAudience(audience string) VerifierOption {
	return func(c *verifierConfig) { c.audience = audience }
}

// WithoutIssuerCheck waives the iss check: any issuer (or none) is accepted.
func WithoutIssuerCheck() VerifierOption {
	return func(c *verifierConfig) { c.skipIssuer = true }
}

// WithoutAudienceCheck waives the aud check: any audience (or none) is accepted.
func WithoutAudienceCheck() VerifierOption {
	return func(c *verifierConfig) { c.skipAudience = true }
}

// WithLeeway sets the clock difference tolerated on exp, nbf and iat (default [DefaultLeeway]).
func WithLeeway(leeway time.Duration) VerifierOption {
	return func(c *verifierConfig) { c.leeway = leeway }
}

// WithCacheOptions passes options to the [KeySetCache] that [VerifierFromIssuer] builds.
func WithCacheOptions(opts ...CacheOption) VerifierOption {
	return func(c *verifierConfig) { c.cacheOptions = append(c.cacheOptions, opts...) }
}

// Verifier verifies AgentRouter's tokens (JWS compact, RFC 7515/7519) with the keys of a
// [KeySetCache]. It is safe for concurrent use.
type Verifier struct {
	cache  *KeySetCache
	cfg    verifierConfig
	issuer string
}

// NewVerifier returns a verifier over cache. It needs [WithIssuer] or [WithoutIssuerCheck], and
// [WithAudience] or [WithoutAudienceCheck]. It makes no network call.
func NewVerifier(cache *KeySetCache, opts ...VerifierOption) (*Verifier, error) {
	if cache == nil {
		return nil, errors.New("agentrouter: NewVerifier: the key set cache is nil")
	}
	cfg := verifierConfig{leeway: DefaultLeeway}
	for _, opt := range opts {
		if opt != nil {
			opt(&cfg)
		}
	}
	switch {
	case cfg.issuer == "" && !cfg.skipIssuer:
		return nil, errors.New("agentrouter: NewVerifier: no issuer: pass WithIssuer, or WithoutIssuerCheck to accept any")
	case cfg.audience == "" && !cfg.skipAudience:
		return nil, errors.New("agentrouter: NewVerifier: no audience: pass WithAudience, or WithoutAudienceCheck to accept any")
	case cfg.leeway < 0:
		return nil, fmt.Errorf("agentrouter: WithLeeway: the leeway must not be negative, got %v", cfg.leeway)
	case len(cfg.cacheOptions) > 0:
		return nil, errors.New("agentrouter: NewVerifier: WithCacheOptions is for VerifierFromIssuer; give them to NewKeySetCache")
	}
	return &Verifier{cache: cache, cfg: cfg}, nil
}

// VerifierFromIssuer discovers the issuer through client's GetOpenIDConfiguration, checks that
// the document's issuer is exactly issuer, and returns a verifier over a [KeySetCache] of its
// jwks_uri that requires that issuer ([WithoutIssuerCheck], or [WithIssuer] of another issuer,
// is an error). An https:// issuer's jwks_uri must be https:// too. The discovery call, as
// every call of the client, follows no redirect from https to http. It needs [WithAudience]
// or [WithoutAudienceCheck].
func VerifierFromIssuer(ctx context.Context, client *Client, issuer string, opts ...VerifierOption) (*Verifier, error) {
	if client == nil {
		return nil, errors.New("agentrouter: VerifierFromIssuer: the client is nil")
	}
	if issuer == "" {
		return nil, errors.New("agentrouter: VerifierFromIssuer: the issuer is empty")
	}
	cfg := verifierConfig{}
	for _, opt := range opts {
		if opt != nil {
			opt(&cfg)
		}
	}
	if cfg.skipIssuer || (cfg.issuer != "" && cfg.issuer != issuer) {
		return nil, errors.New("agentrouter: VerifierFromIssuer: the verifier requires the discovered issuer: WithoutIssuerCheck or WithIssuer of another issuer is refused")
	}
	doc, err := client.Auth().GetOpenIDConfiguration(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("agentrouter: VerifierFromIssuer: discovery failed: %w", err)
	}
	if doc.GetIssuer() != issuer {
		return nil, errors.New("agentrouter: VerifierFromIssuer: the discovery document names another issuer")
	}
	if doc.GetJwksUri() == "" {
		// Without this, an empty jwks_uri would silently fall back to the client's GetJWKS.
		return nil, errors.New("agentrouter: VerifierFromIssuer: the discovery document has no jwks_uri")
	}
	if jwksURI, err := url.Parse(doc.GetJwksUri()); err == nil && strings.EqualFold(jwksURI.Scheme, "http") && strings.HasPrefix(strings.ToLower(issuer), "https://") {
		// A plaintext hop would choose the keys of an https issuer.
		return nil, errors.New("agentrouter: VerifierFromIssuer: the issuer is https://, and the document's jwks_uri is http://")
	}
	cache, err := NewKeySetCache(client, append([]CacheOption{WithJWKSURI(doc.GetJwksUri())}, cfg.cacheOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("agentrouter: VerifierFromIssuer: the document's jwks_uri: %w", err)
	}
	rest := append([]VerifierOption{WithIssuer(issuer)}, opts...)
	rest = append(rest, func(c *verifierConfig) { c.cacheOptions = nil })
	return NewVerifier(cache, rest...)
}

// Cache returns the verifier's key set cache.
func (v *Verifier) Cache() *KeySetCache {
	return v.cache
}

// Verify checks token and returns its claims (JSON numbers as float64). The algorithm is the
// one its key declares, from ES256, RS256 and EdDSA, and the header's alg must equal it; a
// header with jwk, jku, x5u, x5c, x5t or crit, a token without kid, anything but a 3-part JWS
// are refused. exp is required; exp, nbf and iat are checked with the leeway (an iat in the
// future is refused). A failure is an [ErrInvalidToken] or, when no keys could be had, an
// [ErrKeysUnavailable]. Errors never quote the token.
func (v *Verifier) Verify(ctx context.Context, token string) (map[string]any, error) {
	header, err := readHeader(token)
	if err != nil {
		return nil, err
	}
	key, err := v.cache.Key(ctx, header.kid)
	if err != nil {
		return nil, err
	}
	if header.alg != key.Alg {
		return nil, invalid("the token's alg is not the algorithm its key declares")
	}
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(key.Alg)})
	if err != nil {
		return nil, invalid("not a JWS this verifier reads")
	}
	payload, err := jws.Verify(key.Key)
	if err != nil {
		return nil, invalid("the signature does not verify")
	}
	claims, ok := jsonObject[any](payload)
	if !ok {
		return nil, invalid("the payload is not one JSON object in UTF-8")
	}
	if err := v.checkClaims(claims); err != nil {
		return nil, err
	}
	return claims, nil
}

func invalid(why string) error {
	return fmt.Errorf("%w: %s", ErrInvalidToken, why)
}

// header is what Verify reads of the JOSE header before it looks for the key.
type header struct{ alg, kid string }

// readHeader checks the token's form and header without a key: 3 parts, a JSON object header
// with a kid, an alg of the allow-list, and none of the refused members.
func readHeader(token string) (header, error) {
	if len(token) > maxTokenBytes {
		return header{}, invalid(fmt.Sprintf("longer than %d bytes", maxTokenBytes))
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return header{}, invalid(fmt.Sprintf("a JWS in compact form has 3 parts, this has %d", len(parts)))
	}
	// Each part is canonical unpadded base64url: only A-Za-z0-9-_ (Go's decoder skips \r and
	// \n), and Strict refuses nonzero unused bits of the last character.
	for _, part := range parts {
		if strings.TrimLeft(part, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			return header{}, invalid("a part is not canonical base64url")
		}
		if _, err := base64.RawURLEncoding.Strict().DecodeString(part); err != nil {
			return header{}, invalid("a part is not canonical base64url")
		}
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(parts[0])
	if err != nil {
		return header{}, invalid("the header is not base64url")
	}
	members, ok := jsonObject[json.RawMessage](raw)
	if !ok {
		return header{}, invalid("the header is not one JSON object in UTF-8")
	}
	for _, name := range refusedHeaders {
		if _, ok := members[name]; ok {
			return header{}, invalid(fmt.Sprintf("the header has %q, which is refused", name))
		}
	}
	var h header
	if json.Unmarshal(members["alg"], &h.alg) != nil {
		return header{}, invalid("the header has no alg")
	}
	if _, ok := allowedKeys[h.alg]; !ok {
		return header{}, invalid("the header's alg is not one of ES256, RS256, EdDSA")
	}
	if json.Unmarshal(members["kid"], &h.kid) != nil || h.kid == "" {
		return header{}, invalid("the header has no kid")
	}
	return h, nil
}

// jsonObject reads raw as exactly one JSON object in strict UTF-8: no BOM, nothing but
// whitespace after it (json.Unmarshal checks the whole input), no invalid byte (which
// encoding/json would replace silently). A member given twice counts as encoding/json reads
// it: the last one (RFC 7515 §4 and RFC 7519 §4 allow that); go-jose, which parses the header
// again, refuses a header that has one.
func jsonObject[V any](raw []byte) (map[string]V, bool) {
	var object map[string]V
	if !utf8.Valid(raw) || json.Unmarshal(raw, &object) != nil || object == nil {
		return nil, false
	}
	return object, true
}

// checkClaims checks exp (required), nbf, iat, iss and aud.
func (v *Verifier) checkClaims(claims map[string]any) error {
	now := v.cache.now()
	leeway := v.cfg.leeway
	exp, ok, err := numericDate(claims, "exp")
	switch {
	case err != nil:
		return err
	case !ok:
		return invalid("no exp claim")
	case !now.Before(exp.Add(leeway)):
		return invalid("the token has expired")
	}
	if nbf, ok, err := numericDate(claims, "nbf"); err != nil {
		return err
	} else if ok && now.Add(leeway).Before(nbf) {
		return invalid("the token is not valid yet (nbf)")
	}
	if iat, ok, err := numericDate(claims, "iat"); err != nil {
		return err
	} else if ok && now.Add(leeway).Before(iat) {
		return invalid("the token was issued in the future (iat)")
	}
	if !v.cfg.skipIssuer {
		if iss, _ := claims["iss"].(string); iss != v.cfg.issuer {
			return invalid("the iss claim is not the expected issuer")
		}
	}
	if !v.cfg.skipAudience && !hasAudience(claims["aud"], v.cfg.audience) {
		return invalid("the aud claim does not hold the expected audience")
	}
	return nil
}

// numericDate reads a NumericDate claim (seconds since the epoch), if present.
func numericDate(claims map[string]any, name string) (time.Time, bool, error) {
	value, present := claims[name]
	if !present {
		return time.Time{}, false, nil
	}
	seconds, ok := value.(float64)
	if !ok || math.IsNaN(seconds) || math.IsInf(seconds, 0) || math.Abs(seconds) > 1e11 {
		return time.Time{}, false, invalid(fmt.Sprintf("the %s claim is not a date", name))
	}
	whole, frac := math.Modf(seconds)
	return time.Unix(int64(whole), int64(frac*1e9)), true, nil
}

// hasAudience says whether aud (a string, or an array of strings) holds audience.
func hasAudience(aud any, audience string) bool {
	switch aud := aud.(type) {
	case string:
		return aud == audience
	case []any:
		for _, one := range aud {
			if s, ok := one.(string); ok && s == audience {
				return true
			}
		}
	}
	return false
}

package agentrouter_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	agentrouter "github.com/tetrateio/agentrouter-go"
)

// verifierFixture is a verifier over a local origin publishing one key of each algorithm.
type verifierFixture struct {
	keys     map[string]signingKey
	origin   *origin
	clock    *fakeClock
	verifier *agentrouter.Verifier
}

func newVerifierFixture(t *testing.T, opts ...agentrouter.VerifierOption) *verifierFixture {
	t.Helper()
	f := &verifierFixture{keys: map[string]signingKey{}, clock: newFakeClock()}
	var all []signingKey
	for _, alg := range []string{"ES256", "RS256", "EdDSA"} {
		f.keys[alg] = newSigningKey(t, alg)
		all = append(all, f.keys[alg])
	}
	f.origin = newOrigin(t, all...)
	cache := f.origin.cache(t, f.clock, agentrouter.WithUnknownKidCooldown(time.Hour))
	f.verifier = verifierOver(t, cache, opts...)
	return f
}

func TestVerifierAcceptsEachAlgorithmOfTheAllowList(t *testing.T) {
	t.Parallel()
	f := newVerifierFixture(t)
	for alg, key := range f.keys {
		claims, err := f.verifier.Verify(context.Background(), key.sign(t, claimsFor(f.clock.Now()), nil))
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if claims["sub"] != "svc" || claims["aud"] != "api" {
			t.Errorf("%s: claims %v", alg, claims)
		}
	}
	if n := f.origin.requests.Load(); n != 1 {
		t.Errorf("%d requests for three tokens, want 1", n)
	}
}

func TestVerifierRefusals(t *testing.T) {
	t.Parallel()
	f := newVerifierFixture(t)
	now := f.clock.Now()
	es, rs, ed := f.keys["ES256"], f.keys["RS256"], f.keys["EdDSA"]
	attacker := newSigningKey(t, "ES256")
	valid := claimsFor(now)
	with := func(change func(map[string]any)) map[string]any {
		claims := claimsFor(now)
		change(claims)
		return claims
	}
	signedWith := func(key signingKey, header map[string]any) string {
		return key.sign(t, valid, header)
	}
	hmacToken := func() string {
		der, err := x509.MarshalPKIXPublicKey(rs.private.Public())
		if err != nil {
			t.Fatal(err)
		}
		secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		unsigned := rawToken(t, map[string]any{"alg": "HS256", "kid": rs.kid, "typ": "JWT"}, valid, nil)
		unsigned = strings.TrimSuffix(unsigned, ".")
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(unsigned))
		return unsigned + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	}
	// A token signed by the attacker's key, under the kid of a published key of the same alg.
	forgedKid := signingKey{kid: es.kid, alg: "ES256", private: attacker.private}
	valid3 := es.sign(t, valid, nil)
	parts := strings.Split(valid3, ".")
	for name, token := range map[string]string{
		"alg none":                         rawToken(t, map[string]any{"alg": "none", "kid": es.kid}, valid, nil),
		"alg None":                         rawToken(t, map[string]any{"alg": "None", "kid": es.kid}, valid, nil),
		"HS256 with the public key":        hmacToken(),
		"alg the key does not declare":     forgedAlg(t, ed, es.kid, valid),
		"jwk header, real signature":       signedWith(es, map[string]any{"jwk": attacker.jwk(t)}),
		"jwk header, attacker's key":       forgedKid.sign(t, valid, map[string]any{"jwk": attacker.jwk(t)}),
		"jku header":                       signedWith(es, map[string]any{"jku": "https://attacker.test/jwks.json"}),
		"x5u header":                       signedWith(es, map[string]any{"x5u": "https://attacker.test/cert.pem"}),
		"x5c header":                       signedWith(es, map[string]any{"x5c": []string{"MIIB"}}),
		"crit header":                      signedWith(es, map[string]any{"crit": []string{"exp"}}),
		"no kid":                           rawToken(t, map[string]any{"alg": "ES256"}, valid, []byte("sig")),
		"empty kid":                        rawToken(t, map[string]any{"alg": "ES256", "kid": ""}, valid, []byte("sig")),
		"2 parts":                          parts[0] + "." + parts[1],
		"4 parts":                          valid3 + ".x",
		"JWE (5 parts)":                    parts[0] + ".a.b.c.d",
		"JWE header in 3 parts":            rawToken(t, map[string]any{"alg": "ES256", "enc": "A256GCM", "kid": es.kid}, valid, []byte("x")),
		"another key's signature":          forgedKid.sign(t, valid, nil),
		"tampered payload":                 parts[0] + "." + strings.Split(es.sign(t, with(func(c map[string]any) { c["sub"] = "admin" }), nil), ".")[1] + "." + parts[2],
		"unknown kid":                      attacker.sign(t, valid, nil),
		"header not base64url":             "%%%." + parts[1] + "." + parts[2],
		"header not JSON":                  base64.RawURLEncoding.EncodeToString([]byte("nope")) + "." + parts[1] + "." + parts[2],
		"payload not an object":            es.signRaw(t, []byte(`[1,2]`)),
		"expired":                          es.sign(t, with(func(c map[string]any) { c["exp"] = now.Add(-61 * time.Second).Unix() }), nil),
		"no exp":                           es.sign(t, with(func(c map[string]any) { delete(c, "exp") }), nil),
		"exp not a number":                 es.sign(t, with(func(c map[string]any) { c["exp"] = "tomorrow" }), nil),
		"nbf in the future":                es.sign(t, with(func(c map[string]any) { c["nbf"] = now.Add(61 * time.Second).Unix() }), nil),
		"iat in the future":                es.sign(t, with(func(c map[string]any) { c["iat"] = now.Add(61 * time.Second).Unix() }), nil),
		"another issuer":                   es.sign(t, with(func(c map[string]any) { c["iss"] = "https://issuer.test/other" }), nil),
		"no issuer":                        es.sign(t, with(func(c map[string]any) { delete(c, "iss") }), nil),
		"another audience":                 es.sign(t, with(func(c map[string]any) { c["aud"] = "apis" }), nil),
		"audience list without ours":       es.sign(t, with(func(c map[string]any) { c["aud"] = []string{"x", "y"} }), nil),
		"no audience":                      es.sign(t, with(func(c map[string]any) { delete(c, "aud") }), nil),
		"RSA token under the EC key's kid": forgedAlg(t, rs, es.kid, valid),
	} {
		_, err := f.verifier.Verify(context.Background(), token)
		if !errors.Is(err, agentrouter.ErrInvalidToken) {
			t.Errorf("%s: got %v, want ErrInvalidToken", name, err)
			continue
		}
		if errors.Is(err, agentrouter.ErrKeysUnavailable) {
			t.Errorf("%s: an invalid token is also keys unavailable: %v", name, err)
		}
		for _, part := range strings.Split(token, ".") {
			if len(part) > 8 && strings.Contains(err.Error(), part) {
				t.Errorf("%s: the error quotes the token: %v", name, err)
			}
		}
	}
}

// forgedAlg is a token signed by key under its own alg, but naming another key's kid.
func forgedAlg(t *testing.T, key signingKey, kid string, claims map[string]any) string {
	t.Helper()
	return signingKey{kid: kid, alg: key.alg, private: key.private}.sign(t, claims, nil)
}

// signRaw signs payload as it is.
func (k signingKey) signRaw(t *testing.T, payload []byte) string {
	t.Helper()
	return k.signBytes(t, payload, nil)
}

func TestVerifierLeeway(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		leeway  []agentrouter.VerifierOption
		skew    time.Duration // exp this long ago, nbf and iat this long ahead
		accepts bool
	}{
		{nil, 59 * time.Second, true},
		{nil, 61 * time.Second, false},
		{[]agentrouter.VerifierOption{agentrouter.WithLeeway(10 * time.Second)}, 9 * time.Second, true},
		{[]agentrouter.VerifierOption{agentrouter.WithLeeway(10 * time.Second)}, 11 * time.Second, false},
	} {
		f := newVerifierFixture(t, tc.leeway...)
		now, key := f.clock.Now(), f.keys["EdDSA"]
		for _, claim := range []string{"exp", "nbf", "iat"} {
			claims := claimsFor(now)
			if claim == "exp" {
				claims["exp"] = now.Add(-tc.skew).Unix()
			} else {
				claims[claim] = now.Add(tc.skew).Unix()
			}
			_, err := f.verifier.Verify(context.Background(), key.sign(t, claims, nil))
			if tc.accepts != (err == nil) {
				t.Errorf("%s off by %v with %d options: got %v, accepted %v", claim, tc.skew, len(tc.leeway), err, tc.accepts)
			}
		}
	}
}

func TestVerifierAudienceListAndWaivers(t *testing.T) {
	t.Parallel()
	f := newVerifierFixture(t)
	key, now := f.keys["ES256"], f.clock.Now()
	claims := claimsFor(now)
	claims["aud"] = []string{"other", "api"}
	if _, err := f.verifier.Verify(context.Background(), key.sign(t, claims, nil)); err != nil {
		t.Errorf("an aud list holding ours: %v", err)
	}
	waived, err := agentrouter.NewVerifier(f.verifier.Cache(), agentrouter.WithoutIssuerCheck(), agentrouter.WithoutAudienceCheck())
	if err != nil {
		t.Fatal(err)
	}
	claims = claimsFor(now)
	claims["iss"], claims["aud"] = "https://anyone.test", "anything"
	if _, err := waived.Verify(context.Background(), key.sign(t, claims, nil)); err != nil {
		t.Errorf("issuer and audience waived: %v", err)
	}
}

func TestNewVerifierRequiresIssuerAndAudienceOrTheirWaiver(t *testing.T) {
	t.Parallel()
	o := newOrigin(t, newSigningKey(t, "ES256"))
	cache := o.cache(t, newFakeClock())
	for name, opts := range map[string][]agentrouter.VerifierOption{
		"nothing":              nil,
		"issuer only":          {agentrouter.WithIssuer("https://issuer.test")},
		"audience only":        {agentrouter.WithAudience("api")},
		"issuer waived only":   {agentrouter.WithoutIssuerCheck()},
		"audience waived only": {agentrouter.WithoutAudienceCheck()},
		"empty issuer":         {agentrouter.WithIssuer(""), agentrouter.WithAudience("api")},
		"negative leeway":      {agentrouter.WithoutIssuerCheck(), agentrouter.WithoutAudienceCheck(), agentrouter.WithLeeway(-time.Second)},
	} {
		if _, err := agentrouter.NewVerifier(cache, opts...); err == nil {
			t.Errorf("%s: NewVerifier accepted it", name)
		}
	}
	if n := o.requests.Load(); n != 0 {
		t.Errorf("constructing made %d requests, want 0", n)
	}
}

func TestVerifierRefusesMalformedTokensWithoutARequest(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	o := newOrigin(t, key)
	now := time.Now()
	valid := key.sign(t, claimsFor(now), nil)
	parts := strings.Split(valid, ".")
	for name, token := range map[string]string{
		"alg none":    rawToken(t, map[string]any{"alg": "none", "kid": key.kid}, claimsFor(now), nil),
		"HS256":       rawToken(t, map[string]any{"alg": "HS256", "kid": key.kid}, claimsFor(now), []byte("mac")),
		"no kid":      rawToken(t, map[string]any{"alg": "ES256"}, claimsFor(now), []byte("sig")),
		"empty kid":   rawToken(t, map[string]any{"alg": "ES256", "kid": ""}, claimsFor(now), []byte("sig")),
		"jku header":  key.sign(t, claimsFor(now), map[string]any{"jku": "https://attacker.test/jwks.json"}),
		"crit header": key.sign(t, claimsFor(now), map[string]any{"crit": []string{"exp"}}),
		"2 parts":     parts[0] + "." + parts[1],
		"4 parts":     valid + "." + parts[2],
		"JWE":         parts[0] + ".a.b.c.d",
		"empty":       "",
	} {
		// A cold cache: a token that reached it would cost a fetch.
		verifier := verifierOver(t, o.cache(t, newFakeClock()))
		if _, err := verifier.Verify(context.Background(), token); !errors.Is(err, agentrouter.ErrInvalidToken) {
			t.Errorf("%s: got %v, want ErrInvalidToken", name, err)
		}
		if n := o.requests.Load(); n != 0 {
			t.Fatalf("%s: refused after %d requests, want none: the header alone refuses it", name, n)
		}
	}
}

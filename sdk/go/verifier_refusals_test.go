package agentrouter_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	agentrouter "github.com/tetrateio/agentrouter-go"
	authv1 "github.com/tetrateio/agentrouter-go/genapi/api/tars/auth/v1"
)

// signParts signs a header and a payload of the test's own bytes with an ES256 key.
func signParts(t *testing.T, key signingKey, header, payload []byte) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	input := b64(header) + "." + b64(payload)
	digest := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key.private.(*ecdsa.PrivateKey), digest[:])
	if err != nil {
		t.Fatal(err)
	}
	signature := append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	return input + "." + b64(signature)
}

// utf16LE is text in UTF-16LE, for ASCII text.
func utf16LE(text []byte) []byte {
	out := make([]byte, 0, 2*len(text))
	for _, c := range text {
		out = append(out, c, 0)
	}
	return out
}

// A token's header and payload are each exactly one JSON object in strict UTF-8, with no
// BOM and nothing after it; a header with b64 is refused. Each form is signed by the
// published key, and the control (the same bytes, well-formed) verifies.
func TestVerifierRefusesOddTokenBytes(t *testing.T) {
	t.Parallel()
	f := newVerifierFixture(t)
	es := f.keys["ES256"]
	header := []byte(`{"alg":"ES256","kid":"` + es.kid + `","typ":"JWT"}`)
	payload := jsonMarshal(t, claimsFor(f.clock.Now()))
	withSub := func(sub string) []byte {
		return append(payload[:len(payload)-1:len(payload)-1], []byte(`,"sub2":"`+sub+`"}`)...)
	}
	bom := []byte{0xef, 0xbb, 0xbf}
	if _, err := f.verifier.Verify(context.Background(), signParts(t, es, header, withSub("u"))); err != nil {
		t.Fatalf("the well-formed control: %v", err)
	}
	headerWith := func(extra string) []byte {
		return append(header[:len(header)-1:len(header)-1], []byte(extra+"}")...)
	}
	for name, token := range map[string]string{
		"payload with a trailing }":     signParts(t, es, header, append(bytes.Clone(payload), '}')),
		"payload with a trailing ]":     signParts(t, es, header, append(bytes.Clone(payload), ']')),
		"payload with a second object":  signParts(t, es, header, append(bytes.Clone(payload), []byte(`{}`)...)),
		"payload with invalid UTF-8":    signParts(t, es, header, withSub("u\xff")),
		"payload with a BOM":            signParts(t, es, header, append(bytes.Clone(bom), payload...)),
		"payload in UTF-16LE":           signParts(t, es, header, utf16LE(payload)),
		"header with a trailing }":      signParts(t, es, append(bytes.Clone(header), '}'), payload),
		"header with invalid UTF-8":     signParts(t, es, headerWith(",\"x\":\"\xff\""), payload),
		"header with a BOM":             signParts(t, es, append(bytes.Clone(bom), header...), payload),
		"header in UTF-16LE":            signParts(t, es, utf16LE(header), payload),
		"header with b64 false":         signParts(t, es, headerWith(`,"b64":false`), payload),
		"header with b64 true":          signParts(t, es, headerWith(`,"b64":true`), payload),
		"header with b64 false in crit": signParts(t, es, headerWith(`,"b64":false,"crit":["b64"]`), payload),
	} {
		if _, err := f.verifier.Verify(context.Background(), token); !errors.Is(err, agentrouter.ErrInvalidToken) {
			t.Errorf("%s: got %v, want ErrInvalidToken", name, err)
		}
	}
}

// discoveryServer answers GetOpenIDConfiguration (a Connect GET in binary Protobuf) with doc,
// and serves body at /jwks.
func discoveryHandler(t *testing.T, doc func() *authv1.GetOpenIDConfigurationResponse, body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/jwks" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
			return
		}
		raw, err := proto.Marshal(doc())
		if err != nil {
			t.Error(err)
			return
		}
		w.Header().Set("Content-Type", "application/proto")
		_, _ = w.Write(raw)
	}
}

// The client follows no redirect from https to http (discovery included), and an https
// issuer whose document names an http jwks_uri is refused. The https peer uses httptest's CA.
func TestClientRefusesHTTPSToHTTPAndHTTPKeySetOfHTTPSIssuer(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	body := jsonMarshal(t, map[string]any{"keys": []map[string]any{key.jwk(t)}})
	const issuer = "https://issuer.test"
	var plainURL, tlsURL string
	plain := httptest.NewServer(discoveryHandler(t, func() *authv1.GetOpenIDConfigurationResponse {
		return &authv1.GetOpenIDConfigurationResponse{Issuer: issuer, JwksUri: plainURL + "/jwks"}
	}, body))
	t.Cleanup(plain.Close)
	plainURL = plain.URL
	var mu sync.Mutex
	jwksURI := ""
	secure := httptest.NewTLSServer(discoveryHandler(t, func() *authv1.GetOpenIDConfigurationResponse {
		mu.Lock()
		defer mu.Unlock()
		return &authv1.GetOpenIDConfigurationResponse{Issuer: issuer, JwksUri: jwksURI}
	}, body))
	t.Cleanup(secure.Close)
	tlsURL = secure.URL
	redirector := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plainURL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	newClient := func(base string, server *httptest.Server) *agentrouter.Client {
		client, err := agentrouter.New(context.Background(), agentrouter.WithBaseURL(base), agentrouter.WithHTTPClient(server.Client()))
		if err != nil {
			t.Fatal(err)
		}
		return client
	}
	// The control: an https issuer with an https jwks_uri builds a verifier that verifies.
	mu.Lock()
	jwksURI = tlsURL + "/jwks"
	mu.Unlock()
	v, err := agentrouter.VerifierFromIssuer(context.Background(), newClient(tlsURL, secure), issuer, agentrouter.WithAudience("api"))
	if err != nil {
		t.Fatalf("an https issuer with an https jwks_uri: %v", err)
	}
	if _, err := v.Verify(context.Background(), key.sign(t, claimsFor(time.Now()), nil)); err != nil {
		t.Fatalf("a token of the https issuer: %v", err)
	}
	// Discovery redirected from https to http: refused.
	redirected := newClient(redirector.URL, redirector)
	if _, err := agentrouter.VerifierFromIssuer(context.Background(), redirected, issuer, agentrouter.WithAudience("api")); err == nil {
		t.Error("discovery redirected from https to http: a verifier was built")
	}
	if _, err := redirected.Auth().GetJWKS(context.Background(), nil); err == nil {
		t.Error("GetJWKS redirected from https to http: answered")
	}
	// An https issuer whose document names an http jwks_uri: refused.
	mu.Lock()
	jwksURI = plainURL + "/jwks"
	mu.Unlock()
	if _, err := agentrouter.VerifierFromIssuer(context.Background(), newClient(tlsURL, secure), issuer, agentrouter.WithAudience("api")); err == nil {
		t.Error("an https issuer whose jwks_uri is http://: a verifier was built")
	}
}

// VerifierFromIssuer requires the issuer it discovered: WithoutIssuerCheck, or WithIssuer
// naming another issuer, is an error.
func TestVerifierFromIssuerRefusesAnotherIssuerCheck(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t, "ES256")
	body := jsonMarshal(t, map[string]any{"keys": []map[string]any{key.jwk(t)}})
	const issuer = "http://issuer.test"
	var url string
	server := httptest.NewServer(discoveryHandler(t, func() *authv1.GetOpenIDConfigurationResponse {
		return &authv1.GetOpenIDConfigurationResponse{Issuer: issuer, JwksUri: url + "/jwks"}
	}, body))
	t.Cleanup(server.Close)
	url = server.URL
	client, err := agentrouter.New(context.Background(), agentrouter.WithBaseURL(url))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agentrouter.VerifierFromIssuer(context.Background(), client, issuer, agentrouter.WithAudience("api"), agentrouter.WithIssuer(issuer)); err != nil {
		t.Fatalf("WithIssuer of the same issuer: %v", err)
	}
	for name, opt := range map[string]agentrouter.VerifierOption{
		"WithoutIssuerCheck": agentrouter.WithoutIssuerCheck(),
		"WithIssuer(other)":  agentrouter.WithIssuer("https://other.test"),
	} {
		if _, err := agentrouter.VerifierFromIssuer(context.Background(), client, issuer, agentrouter.WithAudience("api"), opt); err == nil {
			t.Errorf("VerifierFromIssuer with %s: accepted", name)
		}
	}
}

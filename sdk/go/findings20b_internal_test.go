package agentrouter

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// B. Cache-Control by one grammar, the same table in the three SDKs: header value → max-age,
// stale-while-revalidate, stale-if-error in seconds (ccDefault: the 300 s default). TestCacheControlTable
// and TestCacheControlOfCorpus read it.
// ccDefault in a row's max-age: the 300 s default.
const ccDefault = -1

var cacheControlTable = []struct {
	header           string
	maxAge, swr, sie int64
}{
	{`max-age=60`, 60, 0, 0},
	{`max-age="60"`, 60, 0, 0},
	{`max-age="60"x`, ccDefault, 0, 0},
	{`a"b, max-age=86400, c"d, max-age=5`, 86400, 0, 0},
	{`max-age=60, max-age=5`, 60, 0, 0},
	{`max-age=60, stale-while-revalidate=600, stale-while-revalidate=5`, 60, 600, 0},
	{`max-age=60, stale-if-error=600, stale-if-error=x`, 60, 0, 600},
	{`max-age=60, must-revalidate, stale-if-error=600, stale-while-revalidate=30`, 60, 0, 0},
	{`no-store, stale-while-revalidate=86400`, 0, 0, 0},
	{`no-cache, stale-if-error=86400`, 0, 0, 0},
	{`MAX-AGE=60, Stale-If-Error=10`, 60, 0, 10},
	{`max-age=x, max-age=60`, 300, 0, 0},
	{`max-age = 60`, 60, 0, 0},
	{`max-age=-1`, ccDefault, 0, 0},
	{`max-age=99999999999999999999999`, 86400, 0, 0},
	{`ext="a, max-age=86400", max-age=5`, 5, 0, 0},
	{`max-age=60, stale-if-error=99999999999`, 60, 0, 31536000},
	{"(no header)", ccDefault, 0, 0},
}

// cacheControlTableLines is a row's header as field lines: none for "(no header)".
func cacheControlTableLines(header string) []string {
	if header == "(no header)" {
		return nil
	}
	return []string{header}
}

func TestCacheControlTable(t *testing.T) {
	for _, tc := range cacheControlTable {
		got, _ := parseCacheControl(cacheControlTableLines(tc.header))
		want := freshness{maxAge: time.Duration(tc.maxAge) * time.Second, staleWhileRevalidate: time.Duration(tc.swr) * time.Second, staleIfError: time.Duration(tc.sie) * time.Second}
		if tc.maxAge == ccDefault {
			want.maxAge = defaultMaxAge
		}
		if got != want {
			t.Errorf("%s: got %v, %v, %v; want %v, %v, %v", tc.header, got.maxAge, got.staleWhileRevalidate, got.staleIfError, want.maxAge, want.staleWhileRevalidate, want.staleIfError)
		}
	}
}

// L. A key set's body is strict UTF-8 JSON with no BOM: a BOM, UTF-16 or invalid UTF-8 anywhere
// refuses it whole; deep nesting is an error, never a crash.
func TestKeySetBodyIsStrictUTF8(t *testing.T) {
	good := `{"kty":"OKP","crv":"Ed25519","kid":"k","use":"sig","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`
	body := `{"keys":[` + good + `]}`
	if _, err := parseKeySet([]byte(body)); err != nil {
		t.Fatalf("the control: %v", err)
	}
	utf16 := make([]byte, 0, 2*len(body))
	for _, c := range []byte(body) {
		utf16 = append(utf16, c, 0)
	}
	for name, raw := range map[string][]byte{
		"BOM":                               append([]byte{0xef, 0xbb, 0xbf}, body...),
		"UTF-16LE":                          utf16,
		"UTF-16LE with a BOM":               append([]byte{0xff, 0xfe}, utf16...),
		"invalid UTF-8 in an unused member": []byte("{\"other\":\"\xff\",\"keys\":[" + good + "]}"),
		"invalid UTF-8 in a key's member":   []byte("{\"keys\":[" + good[:len(good)-1] + ",\"note\":\"a\xc3\"}]}"),
	} {
		if keys, err := parseKeySet(raw); err == nil {
			t.Errorf("%s: read as a set of %d keys, want an error", name, len(keys))
		}
	}
	deep := `{"keys":[` + good + `],"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`
	_, _ = parseKeySet([]byte(deep)) // an error or a set, never a crash
}

// O and L. A key whose base64url members are padded, in the standard alphabet or of the wrong
// length is skipped; use other than absent or "sig" (null included) is skipped; x5c and the
// other certificate members neither make a key usable nor unusable.
func TestKeyMembersEncodings(t *testing.T) {
	b64 := base64.RawURLEncoding.EncodeToString
	// An EC key whose x or y holds a '-' or '_', so that the standard alphabet differs.
	var ec *ecdsa.PrivateKey
	for ec == nil || !strings.ContainsAny(b64(ec.X.FillBytes(make([]byte, 32)))+b64(ec.Y.FillBytes(make([]byte, 32))), "-_") {
		var err error
		if ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	var ed ed25519.PublicKey
	for ed == nil || !strings.ContainsAny(b64(ed), "-_") {
		var err error
		if ed, _, err = ed25519.GenerateKey(rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	x, y := ec.X.FillBytes(make([]byte, 32)), ec.Y.FillBytes(make([]byte, 32))
	ecJWK := func(x, y string, extra string) string {
		return fmt.Sprintf(`{"kty":"EC","crv":"P-256","kid":"k","alg":"ES256","x":%q,"y":%q%s}`, x, y, extra)
	}
	edJWK := func(x string, extra string) string {
		return fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","kid":"k","alg":"EdDSA","x":%q%s}`, x, extra)
	}
	std := func(s string) string { return strings.NewReplacer("-", "+", "_", "/").Replace(s) }
	pad := func(s string) string { return s + strings.Repeat("=", (4-len(s)%4)%4) }
	usable := map[string]string{
		"EC":                                    ecJWK(b64(x), b64(y), ""),
		"Ed25519":                               edJWK(b64(ed), ""),
		"EC use sig":                            ecJWK(b64(x), b64(y), `,"use":"sig"`),
		"EC with garbage x5c":                   ecJWK(b64(x), b64(y), `,"x5c":["garbage"],"x5t":"x","x5t#S256":7,"x5u":"not a url"`),
		"Ed25519 with x5c":                      edJWK(b64(ed), `,"x5c":"not even a list"`),
		"EC with a member twice, the last good": ecJWK("AA", b64(y), `,"x":"`+b64(x)+`"`),
	}
	for name, jwk := range usable {
		if _, ok := parseKey(json.RawMessage(jwk)); !ok {
			t.Errorf("%s: skipped, want it usable", name)
		}
	}
	skipped := map[string]string{
		"EC x padded":              ecJWK(pad(b64(x)), b64(y), ""),
		"EC y padded":              ecJWK(b64(x), pad(b64(y)), ""),
		"EC standard alphabet":     ecJWK(std(b64(x)), std(b64(y)), ""),
		"EC x of 33 bytes":         ecJWK(b64(append([]byte{0}, x...)), b64(y), ""),
		"EC x of 31 bytes":         ecJWK(b64(x[1:]), b64(y), ""),
		"Ed25519 x padded":         edJWK(pad(b64(ed)), ""),
		"Ed25519 standard":         edJWK(std(b64(ed)), ""),
		"Ed25519 x of 33 bytes":    edJWK(b64(append([]byte{0}, ed...)), ""),
		"use null":                 ecJWK(b64(x), b64(y), `,"use":null`),
		"use enc":                  ecJWK(b64(x), b64(y), `,"use":"enc"`),
		"use empty":                ecJWK(b64(x), b64(y), `,"use":""`),
		"use a number":             ecJWK(b64(x), b64(y), `,"use":1`),
		"EC x a number":            ecJWK(b64(x), b64(y), `,"x":7`),
		"RSA n padded":             `{"kty":"RSA","kid":"k","alg":"RS256","n":"` + pad(strings.Repeat("A", 341)+"Q") + `","e":"AQAB"}`,
		"RSA e in standard/padded": `{"kty":"RSA","kid":"k","alg":"RS256","n":"` + strings.Repeat("w", 342) + `","e":"AQAB=="}`,
	}
	for name, jwk := range skipped {
		if _, ok := parseKey(json.RawMessage(jwk)); ok {
			t.Errorf("%s: usable, want it skipped", name)
		}
	}
}

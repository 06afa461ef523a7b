package agentrouter

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// A JWK Set's member names are matched exactly: "KEYS" is not "keys" (RFC 7517 §5; JSON
// member names are case-sensitive), so such a document is not a set.
func TestKeySetMemberNamesAreExact(t *testing.T) {
	body := []byte(`{"KEYS":[{"kty":"OKP","crv":"Ed25519","kid":"k","use":"sig","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`)
	if keys, err := parseKeySet(body); err == nil {
		t.Fatalf(`{"KEYS":[...]} read as a set of %d keys, want an error`, len(keys))
	}
}

// Every token part is canonical unpadded base64url: a newline, padding or nonzero unused bits
// in the last character make the token invalid (Go's decoder alone skips \r and \n).
func TestTokenPartsAreCanonicalBase64url(t *testing.T) {
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"ES256","kid":"k","typ":"JWT"}`))
	body := enc.EncodeToString([]byte(`{"sub":"s"}`))
	sig := enc.EncodeToString(make([]byte, 64)) // 86 characters, the last holding 4 unused bits
	if _, err := readHeader(head + "." + body + "." + sig); err != nil {
		t.Fatalf("the canonical token: %v", err)
	}
	for name, token := range map[string]string{
		"newline in header":   head[:4] + "\n" + head[4:] + "." + body + "." + sig,
		"crlf in payload":     head + "." + body[:3] + "\r\n" + body[3:] + "." + sig,
		"trailing newline":    head + "." + body + "." + sig + "\n",
		"padded signature":    head + "." + body + "." + sig + "==",
		"nonzero unused bits": head + "." + body + "." + sig[:len(sig)-1] + "B",
		"non-ASCII payload":   head + "." + body + "é." + sig,
	} {
		if _, err := readHeader(token); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A key set's body is strict UTF-8 JSON with no BOM: a BOM, UTF-16 or invalid UTF-8 anywhere
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

// A key whose base64url members are padded, in the standard alphabet or of the wrong
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
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	n := b64(rsaKey.N.Bytes()) // 256 bytes: 342 characters, two short of a multiple of 4
	rsaJWK := func(n, e string) string {
		return fmt.Sprintf(`{"kty":"RSA","kid":"k","alg":"RS256","n":%q,"e":%q}`, n, e)
	}
	ecJWK := func(x, y string, extra string) string {
		return fmt.Sprintf(`{"kty":"EC","crv":"P-256","kid":"k","alg":"ES256","x":%q,"y":%q%s}`, x, y, extra)
	}
	edJWK := func(x string, extra string) string {
		return fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","kid":"k","alg":"EdDSA","x":%q%s}`, x, extra)
	}
	std := func(s string) string { return strings.NewReplacer("-", "+", "_", "/").Replace(s) }
	pad := func(s string) string { return s + strings.Repeat("=", (4-len(s)%4)%4) }
	usable := map[string]string{
		"RSA":                                   rsaJWK(n, "AQAB"),
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
		"EC x padded":           ecJWK(pad(b64(x)), b64(y), ""),
		"EC y padded":           ecJWK(b64(x), pad(b64(y)), ""),
		"EC standard alphabet":  ecJWK(std(b64(x)), std(b64(y)), ""),
		"EC x of 33 bytes":      ecJWK(b64(append([]byte{0}, x...)), b64(y), ""),
		"EC x of 31 bytes":      ecJWK(b64(x[1:]), b64(y), ""),
		"Ed25519 x padded":      edJWK(pad(b64(ed)), ""),
		"Ed25519 standard":      edJWK(std(b64(ed)), ""),
		"Ed25519 x of 33 bytes": edJWK(b64(append([]byte{0}, ed...)), ""),
		"use null":              ecJWK(b64(x), b64(y), `,"use":null`),
		"use enc":               ecJWK(b64(x), b64(y), `,"use":"enc"`),
		"use empty":             ecJWK(b64(x), b64(y), `,"use":""`),
		"use a number":          ecJWK(b64(x), b64(y), `,"use":1`),
		"EC x a number":         ecJWK(b64(x), b64(y), `,"x":7`),
		"RSA n padded":          rsaJWK(pad(n), "AQAB"),
		"RSA e padded":          rsaJWK(n, "AQAB=="),
	}
	for name, jwk := range skipped {
		if _, ok := parseKey(json.RawMessage(jwk)); ok {
			t.Errorf("%s: usable, want it skipped", name)
		}
	}
}

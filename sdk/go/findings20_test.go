package agentrouter

import (
	"encoding/base64"
	"testing"
	"time"
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

// max-age is delta-seconds of any number of digits, capped at 24 h (a value too large to parse
// is the cap); Cache-Control is split by the RFC 9110 list grammar, so a comma inside a quoted
// string does not start another directive.
func TestCacheControlDigitsAndQuotedCommas(t *testing.T) {
	for line, want := range map[string]freshness{
		"max-age=00000000000000000000000000000060":       {maxAge: 60 * time.Second},
		"max-age=99999999999999999999999999999999999999": {maxAge: maxMaxAge},
		"max-age=86401":                                           {maxAge: maxMaxAge},
		`max-age="30"`:                                            {maxAge: 30 * time.Second},
		`private="a, max-age=5", max-age=60`:                      {maxAge: 60 * time.Second},
		`ext="x, no-store", max-age=60, stale-if-error=7`:         {maxAge: 60 * time.Second, staleIfError: 7 * time.Second},
		`ext="a \", stale-while-revalidate=9", max-age=60`:        {maxAge: 60 * time.Second},
		`max-age=60, ext="unterminated, stale-while-revalidate=9`: {maxAge: 60 * time.Second},
	} {
		got, present := parseCacheControl([]string{line})
		if !present || got != want {
			t.Errorf("%s: got %+v, want %+v", line, got, want)
		}
	}
}

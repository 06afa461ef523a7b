package agentrouter

import (
	"encoding/json"
	"os"
	"testing"
	"time"
)

// ccRead is what parseCacheControl makes of some field lines, as the differential test
// (tests/interop/test_cache_control_agreement.py) compares it: max-age, stale-while-revalidate,
// stale-if-error in whole seconds, and whether there was a Cache-Control at all.
func ccRead(lines []string) []any {
	fresh, present := parseCacheControl(lines)
	return []any{int64(fresh.maxAge / time.Second), int64(fresh.staleWhileRevalidate / time.Second), int64(fresh.staleIfError / time.Second), present}
}

// TestCacheControlOfCorpus is the Go side of the differential test: given
// AGENTROUTER_TEST_CACHE_CONTROL_CORPUS, a JSON array of responses' Cache-Control field lines
// (an array of arrays of strings), it writes to that path + ".go.json" what each reads as:
// [maxAgeSeconds, swrSeconds, sieSeconds, present], in order. Without it, the same reading of
// the shared table's rows is checked against the table.
func TestCacheControlOfCorpus(t *testing.T) {
	path := os.Getenv("AGENTROUTER_TEST_CACHE_CONTROL_CORPUS")
	if path == "" {
		for _, tc := range cacheControlTable {
			lines := cacheControlTableLines(tc.header)
			maxAge := tc.maxAge
			if maxAge == ccDefault {
				maxAge = int64(defaultMaxAge / time.Second)
			}
			want := []any{maxAge, tc.swr, tc.sie, lines != nil}
			got := ccRead(lines)
			if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
				t.Errorf("%s: read as %v, want %v", tc.header, got, want)
			}
		}
		return
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var corpus [][]string
	if err := json.Unmarshal(raw, &corpus); err != nil {
		t.Fatalf("%s: not a JSON array of arrays of strings: %v", path, err)
	}
	read := make([][]any, 0, len(corpus))
	for _, lines := range corpus {
		read = append(read, ccRead(lines))
	}
	out, err := json.Marshal(read)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".go.json", out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// THE GRAMMAR (README, Client SDKs) on malformed values: a malformed element is skipped as if
// absent, whatever its name (no-cache, must-revalidate, max-age), so it neither zeroes anything
// nor hides a later well-formed occurrence; an unterminated quoted string swallows the rest of
// its line only. Rows: field lines → max-age, stale-while-revalidate, stale-if-error (seconds).
func TestCacheControlGrammarOfMalformedElements(t *testing.T) {
	for _, tc := range []struct {
		lines            []string
		maxAge, swr, sie int64
	}{
		// A malformed no-cache / no-store / must-revalidate is skipped.
		{[]string{`no-cache=`}, 300, 0, 0},
		{[]string{`no-store="`}, 300, 0, 0},
		{[]string{`no-cache =`}, 300, 0, 0},
		{[]string{`no-cache=, max-age=60`}, 60, 0, 0},
		{[]string{`no-store=6 0, max-age=60, stale-if-error=5`}, 60, 0, 5},
		{[]string{`must-revalidate =6 0, stale-if-error= 60`}, 300, 0, 60},
		{[]string{`proxy-revalidate="x"y, stale-while-revalidate=9`}, 300, 9, 0},
		// Well-formed, with any value, they count.
		{[]string{`no-cache="set-cookie", stale-if-error=5`}, 0, 0, 0},
		{[]string{`no-cache= "x", max-age=60`}, 0, 0, 0},
		{[]string{`No-Store = x`}, 0, 0, 0},
		{[]string{`max-age=60, proxy-revalidate="x", stale-if-error=5`}, 60, 0, 0},
		// A malformed first occurrence does not hide a later well-formed one.
		{[]string{`max-age =,,max-age=0060`}, 60, 0, 0},
		{[]string{`stale-if-error= ,stale-if-error=5`}, 300, 0, 5},
		{[]string{`stale-if-error =6 0, stale-if-error=7`}, 300, 0, 7},
		{[]string{"max-age=\u0661, max-age=5"}, 5, 0, 0},
		{[]string{`max-age=a=b, max-age=5`}, 5, 0, 0},
		{[]string{`max age=1, max-age=5`}, 5, 0, 0},
		{[]string{`max-age;60, max-age=5`}, 5, 0, 0},
		{[]string{"\u00a0max-age=1, max-age=5"}, 5, 0, 0},
		{[]string{"max-age=1\v, max-age=5"}, 5, 0, 0},
		// A well-formed first occurrence that is not delta-seconds makes it invalid.
		{[]string{`max-age, max-age=60`}, 300, 0, 0},
		{[]string{`max-age="", max-age=60`}, 300, 0, 0},
		{[]string{"max-age=\"\u0661\", max-age=5"}, 300, 0, 0},
		{[]string{`max-age=+5, max-age=60`}, 300, 0, 0},
		{[]string{`max-age=1.5`}, 300, 0, 0},
		{[]string{`stale-while-revalidate, stale-while-revalidate=5`}, 300, 0, 0},
		// Spaces, tabs and quoting.
		{[]string{"\tmax-age\t=\t60\t"}, 60, 0, 0},
		{[]string{`max-age= "60"`}, 60, 0, 0},
		{[]string{`max-age="6\0"`}, 60, 0, 0},
		{[]string{`max-age="60" `}, 60, 0, 0},
		{[]string{`max-age="60" x, max-age=5`}, 5, 0, 0},
		{[]string{`max-age=5"`}, 300, 0, 0},
		{[]string{`,max-age=5,`}, 5, 0, 0},
		// Quoted strings: where one opens, and an unterminated one.
		{[]string{`no-store=", max-age=5`}, 300, 0, 0},
		{[]string{`ext="unterminated, max-age=86400`}, 300, 0, 0},
		{[]string{`private=", ,no-cache`}, 300, 0, 0},
		{[]string{`ext="a`, `max-age=5`}, 5, 0, 0},
		{[]string{`max-age=`, `max-age=5`}, 5, 0, 0},
		{[]string{`ext=x"y, max-age=5`}, 5, 0, 0},
		{[]string{`ext = "a,b", max-age=5`}, 5, 0, 0},
		{[]string{`ext="a"b, max-age=5`}, 5, 0, 0},
		{[]string{`ext="a" "b,c", max-age=5`}, 5, 0, 0},
		{[]string{`a"b="c, max-age=5"`}, 300, 0, 0},
		{[]string{`ext="a\"b, max-age=1", max-age=7`}, 7, 0, 0},
		{[]string{`ext="a\`}, 300, 0, 0},
	} {
		got, present := parseCacheControl(tc.lines)
		want := freshness{maxAge: time.Duration(tc.maxAge) * time.Second, staleWhileRevalidate: time.Duration(tc.swr) * time.Second, staleIfError: time.Duration(tc.sie) * time.Second}
		if !present || got != want {
			t.Errorf("%q: got %v, %v, %v; want %v, %v, %v", tc.lines, got.maxAge, got.staleWhileRevalidate, got.staleIfError, want.maxAge, want.staleWhileRevalidate, want.staleIfError)
		}
	}
}

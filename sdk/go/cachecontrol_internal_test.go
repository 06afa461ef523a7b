package agentrouter

import (
	"testing"
	"time"
)

// ccDefault in a row's max-age: the 300 s default.
const ccDefault = -1

// cacheControlTable is Cache-Control by one grammar, the same table in the three SDKs: header
// value → max-age, stale-while-revalidate, stale-if-error in seconds. TestCacheControlTable and
// TestCacheControlOfCorpus read it.
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

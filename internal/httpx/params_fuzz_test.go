package httpx

import "testing"

func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"0", "1717243200000", "2024-06-01T12:00:00Z", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := ParseTime(s)
		if err == nil && (ms < 0 || ms > maxTimeMS) {
			t.Fatalf("ParseTime(%q) = %d outside [0, %d]", s, ms, maxTimeMS)
		}
	})
}

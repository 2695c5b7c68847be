package httpx

import "testing"

func TestParseTime(t *testing.T) {
	for in, want := range map[string]int64{
		"0":                              0,
		"1717243200000":                  1717243200000,
		"2024-06-01T12:00:00Z":           1717243200000,
		"2024-06-01T14:00:00.5+02:00":    1717243200500,
		"2024-06-01T12:00:00.123456789Z": 1717243200123,
		"9999-12-31T23:59:59.999Z":       maxTimeMS,
	} {
		got, err := ParseTime(in)
		if err != nil || got != want {
			t.Errorf("ParseTime(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1e9", "99999999999999999999", "253402300800000", "2024-06-01",
		"1969-12-31T23:59:59Z", "0x10", " 1", "1 ", "１２"} {
		if got, err := ParseTime(in); err == nil {
			t.Errorf("ParseTime(%q) = %d, want an error", in, got)
		}
	}
}

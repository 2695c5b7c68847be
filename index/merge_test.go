package index

import (
	"math"
	"testing"
	"time"
)

// A caller may ask for all of time; the hours stop at year 9999, whose keys
// still sort after every stored one.
func TestHoursInAllOfTime(t *testing.T) {
	first, last := HoursIn(0, math.MaxInt64/2)
	if first != 0 {
		t.Errorf("first = %d, want 0", first)
	}
	if want := time.Date(9999, 12, 31, 23, 0, 0, 0, time.UTC).UnixMilli(); last != want {
		t.Errorf("last = %d, want %d (9999-12-31T23:00Z)", last, want)
	}
	from := time.Date(2026, 12, 3, 10, 30, 0, 0, time.UTC).UnixMilli()
	first, last = HoursIn(from, from+time.Hour.Milliseconds())
	if last != from+30*time.Minute.Milliseconds() || first > from {
		t.Errorf("HoursIn of an hour from 10:30 = %d, %d", first, last)
	}
}

package bench

import (
	"testing"
	"time"
)

func TestRatioSignificantDigits(t *testing.T) {
	for _, c := range []struct {
		v, base time.Duration
		want    float64
	}{{240 * time.Microsecond, 72 * time.Millisecond, 0.00333}, {14 * time.Millisecond, 500 * time.Microsecond, 28}, {1, 3, 0.333}, {5, 0, 0}, {0, 5, 0}} {
		if got := ratio(c.v, c.base); got != c.want {
			t.Errorf("ratio(%v, %v) = %v, want %v", c.v, c.base, got, c.want)
		}
	}
}

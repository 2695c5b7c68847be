package retention

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/index"
)

var base = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func seg(start time.Time, d time.Duration) index.Segment {
	return index.Segment{Start: start.UnixMilli(), DurationMS: d.Milliseconds(), Size: 100}
}

func TestPolicyAroundTheExpiryInstant(t *testing.T) {
	s := seg(base, 10*time.Second)
	end := base.Add(10 * time.Second)
	const margin = 5 * time.Minute
	for _, days := range []int{1, 7, 30, 365} {
		p := Policy{Days: days, Margin: margin}
		expiry := end.Add(time.Duration(days)*24*time.Hour + margin)
		cases := []struct {
			name string
			now  time.Time
			want bool
		}{
			{"long before", end, false},
			{"a day before", expiry.Add(-24 * time.Hour), false},
			{"1ms before", expiry.Add(-time.Millisecond), false},
			{"at the instant", expiry, true},
			{"1ms after", expiry.Add(time.Millisecond), true},
			{"a year after", expiry.Add(365 * 24 * time.Hour), true},
		}
		for _, c := range cases {
			t.Run(fmt.Sprintf("D%d/%s", days, c.name), func(t *testing.T) {
				require.Equal(t, expiry, p.ExpiresAt(s))
				require.Equal(t, c.want, p.Expired(s, c.now))
				exp, kept := Select(p, []index.Segment{s}, c.now)
				require.Equal(t, c.want, len(exp) == 1)
				require.Equal(t, !c.want, len(kept) == 1)
				if c.want {
					require.Equal(t, ReasonRetention, exp[0].Reason)
					require.Equal(t, expiry, exp[0].ExpiredAt)
					require.True(t, s.End() <= p.Cutoff(c.now))
				} else {
					require.True(t, s.End() > p.Cutoff(c.now))
				}
			})
		}
	}
}

// A plan change applies to what is stored: shorter retention expires older
// video at once, a longer one keeps whatever still exists.
func TestPolicyChangedPlan(t *testing.T) {
	now := base
	segs := []index.Segment{
		seg(now.Add(-40*24*time.Hour), 10*time.Second), // 40 days old
		seg(now.Add(-20*24*time.Hour), 10*time.Second), // 20 days old
		seg(now.Add(-8*24*time.Hour), 10*time.Second),  // 8 days old
		seg(now.Add(-6*24*time.Hour), 10*time.Second),  // 6 days old
		seg(now.Add(-time.Hour), 10*time.Second),
	}
	cases := []struct {
		days int
		gone int
	}{
		{30, 1}, // D30: only the 40-day-old one
		{7, 3},  // D30 → D7: 40, 20 and 8 days old go at the next sweep
		{90, 0}, // D7 → D90: everything still stored stays
		{1, 4},
		{365, 0},
		{0, 0}, // no plan known: never delete
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("D%d", c.days), func(t *testing.T) {
			exp, kept := Select(Policy{Days: c.days, Margin: time.Minute}, segs, now)
			require.Len(t, exp, c.gone)
			require.Len(t, kept, len(segs)-c.gone)
			for _, d := range exp {
				require.False(t, d.ExpiredAt.After(now))
			}
		})
	}
}

// A clock skewed forward by less than the margin never deletes a segment
// early; one skewed back only deletes later.
func TestPolicyClockSkew(t *testing.T) {
	const margin = 10 * time.Minute
	s := seg(base, 6*time.Second)
	for _, days := range []int{1, 7, 30, 365} {
		p := Policy{Days: days, Margin: margin}
		trueExpiry := time.UnixMilli(s.End()).Add(time.Duration(days) * 24 * time.Hour) // without margin
		cases := []struct {
			name string
			skew time.Duration // node clock minus true time
			true time.Time
			want bool
		}{
			{"ahead 9m, 1ms before true expiry", 9 * time.Minute, trueExpiry.Add(-time.Millisecond), false},
			{"ahead 9m59s, at true expiry - 1s", margin - time.Second, trueExpiry.Add(-time.Second), false},
			{"ahead 9m, just after true expiry", 9 * time.Minute, trueExpiry.Add(2 * time.Minute), true},
			{"behind 1h, 30m after true expiry", -time.Hour, trueExpiry.Add(30 * time.Minute), false},
			{"behind 1h, 2h after true expiry", -time.Hour, trueExpiry.Add(2 * time.Hour), true},
			{"exact clock, inside the margin", 0, trueExpiry.Add(margin - time.Millisecond), false},
			{"exact clock, after the margin", 0, trueExpiry.Add(margin), true},
		}
		for _, c := range cases {
			t.Run(fmt.Sprintf("D%d/%s", days, c.name), func(t *testing.T) {
				nodeNow := c.true.Add(c.skew)
				got := p.Expired(s, nodeNow)
				require.Equal(t, c.want, got)
				if got {
					require.False(t, c.true.Before(trueExpiry), "deleted before its true expiry")
				}
			})
		}
	}
}

func TestPolicyHours(t *testing.T) {
	p := Policy{Days: 7, Margin: time.Minute}
	hour := base.UnixMilli()
	keep := 7*24*time.Hour + time.Minute
	// The hour may hold expired video once its start is past the cutoff.
	require.False(t, p.HourMayHoldExpired(hour, base.Add(keep-time.Millisecond)))
	require.True(t, p.HourMayHoldExpired(hour, base.Add(keep)))
	// It is wholly expired once its end plus the longest segment is.
	require.False(t, p.HourExpired(hour, time.Minute, base.Add(keep+time.Hour+time.Minute-time.Millisecond)))
	require.True(t, p.HourExpired(hour, time.Minute, base.Add(keep+time.Hour+time.Minute)))
	require.False(t, Policy{}.HourExpired(hour, 0, base.Add(1000*24*time.Hour)))
	require.False(t, Policy{}.HourMayHoldExpired(hour, base.Add(1000*24*time.Hour)))
}

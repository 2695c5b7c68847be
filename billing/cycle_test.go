package billing

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/meter"
)

func ms(y int, m time.Month, d, hh, mm, ss, milli int) time.Time {
	return time.Date(y, m, d, hh, mm, ss, milli*1e6, time.UTC)
}

func mustMonth(t *testing.T, s string) int {
	t.Helper()
	m, err := ParseMonth(s)
	require.NoError(t, err)
	return m
}

func TestCycleTimeline(t *testing.T) {
	created := ms(2026, 1, 10, 0, 0, 0, 0)
	cases := []struct {
		name      string
		hist      []accounts.CycleChange
		month     string
		cycle     string
		start     string
		monthsTil int
	}{
		{"monthly", []accounts.CycleChange{{At: created, Cycle: accounts.CycleMonthly}}, "2026-05", accounts.CycleMonthly, "2026-05", 0},
		{"annual from creation", []accounts.CycleChange{{At: created, Cycle: accounts.CycleAnnual}}, "2026-01", accounts.CycleAnnual, "2026-01", 12},
		{"annual, last month of the cycle", []accounts.CycleChange{{At: created, Cycle: accounts.CycleAnnual}}, "2026-12", accounts.CycleAnnual, "2026-01", 1},
		{"annual, second cycle", []accounts.CycleChange{{At: created, Cycle: accounts.CycleAnnual}}, "2027-01", accounts.CycleAnnual, "2027-01", 12},
		{"ordered on the 15th 23:59:59.999: next month", []accounts.CycleChange{{At: created, Cycle: accounts.CycleMonthly}, {At: ms(2026, 3, 15, 23, 59, 59, 999), Cycle: accounts.CycleAnnual}}, "2026-04", accounts.CycleAnnual, "2026-04", 12},
		{"ordered on the 15th: not the same month", []accounts.CycleChange{{At: created, Cycle: accounts.CycleMonthly}, {At: ms(2026, 3, 15, 12, 0, 0, 0), Cycle: accounts.CycleAnnual}}, "2026-03", accounts.CycleMonthly, "2026-03", 0},
		{"ordered on the 16th 00:00: the month after next", []accounts.CycleChange{{At: created, Cycle: accounts.CycleMonthly}, {At: ms(2026, 3, 16, 0, 0, 0, 0), Cycle: accounts.CycleAnnual}}, "2026-04", accounts.CycleMonthly, "2026-04", 0},
		{"ordered on the 16th: annual from May", []accounts.CycleChange{{At: created, Cycle: accounts.CycleMonthly}, {At: ms(2026, 3, 16, 0, 0, 0, 0), Cycle: accounts.CycleAnnual}}, "2026-05", accounts.CycleAnnual, "2026-05", 12},
		{"back to monthly waits for the cycle end", []accounts.CycleChange{{At: created, Cycle: accounts.CycleAnnual}, {At: ms(2026, 6, 1, 0, 0, 0, 0), Cycle: accounts.CycleMonthly}}, "2026-12", accounts.CycleAnnual, "2026-01", 1},
		{"back to monthly after the cycle", []accounts.CycleChange{{At: created, Cycle: accounts.CycleAnnual}, {At: ms(2026, 6, 1, 0, 0, 0, 0), Cycle: accounts.CycleMonthly}}, "2027-01", accounts.CycleMonthly, "2027-01", 0},
		{"a pending switch is replaced", []accounts.CycleChange{{At: created, Cycle: accounts.CycleMonthly}, {At: ms(2026, 3, 20, 0, 0, 0, 0), Cycle: accounts.CycleAnnual}, {At: ms(2026, 4, 2, 0, 0, 0, 0), Cycle: accounts.CycleMonthly}}, "2026-05", accounts.CycleMonthly, "2026-05", 0},
		{"an order after the cut-off is ignored", []accounts.CycleChange{{At: created, Cycle: accounts.CycleMonthly}, {At: ms(2026, 5, 1, 0, 0, 0, 1), Cycle: accounts.CycleAnnual}}, "2026-04", accounts.CycleMonthly, "2026-04", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := mustMonth(t, tc.month)
			cycle, start := cycleAt(tc.hist, m, CutOff(m))
			require.Equal(t, tc.cycle, cycle)
			require.Equal(t, tc.start, meter.MonthName(start))
			if cycle == accounts.CycleAnnual {
				require.Equal(t, tc.monthsTil, 12-(m-start))
			}
		})
	}
}

// TestBillingAnnual: increases flagged with the months left, decreases and
// deletions billed as booked until the cycle ends.

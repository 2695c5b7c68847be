// Package billing evaluates billing runs: a pure function of a read-only
// view of the replicated state (accounts and their cycle history, streams
// and their settings history, each stream's usage in the month), rendered
// as JSON and CSV.
package billing

import (
	"cmp"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/meter"
)

// Billing runs (DESIGN.md sections 1 and 3). The evaluation is a pure
// function of the meter's history as of the cut-off: every event carries a
// proposer time on a monotonic meter clock, so anything that happens after
// the cut-off has a later time and is ignored. A run for an ended month is
// therefore the same bytes whenever it is asked for (see sealUsage for usage).
//
// Decisions where DESIGN.md is silent (also in docs/billing.md):
//   - The state "at the cut-off" includes events stamped exactly at the
//     cut-off: a stream deleted at 00:00:00.000 of the next month is not
//     billed; one registered at that instant is.
//   - Annual cycles run over the run months A..A+11 from the month A the
//     cycle took effect; "months left" at run M counts M..A+11 (12 at the
//     cycle's first run, 1 at its last).
//   - An annual sub-account is billed, per stream, the maximum of what was
//     booked in the cycle so far and what is in force now: increases are
//     flagged (with the months left), decreases and deletions keep the booked
//     subscription until the cycle ends (no credit).
//   - A switch to annual ordered on or before the 15th (UTC) takes effect
//     with the next month's run, one ordered later with the run after that.
//     A switch back to monthly takes effect when the running annual cycle
//     ends.
//   - Account and camera names are not in a run: they can change later, and
//     a final run never changes. Ids identify everything.

var monthRE = regexp.MustCompile(`^([0-9]{4})-([0-9]{2})$`)

// ParseMonth parses YYYY-MM (months 01 to 12, years 2000 to 9998) into a
// month index.
func ParseMonth(s string) (int, error) {
	g := monthRE.FindStringSubmatch(s)
	if g == nil {
		return 0, cluster.Invalid("invalid_month", "month %q: want YYYY-MM", s)
	}
	y, _ := strconv.Atoi(g[1])
	mo, _ := strconv.Atoi(g[2])
	if mo < 1 || mo > 12 || y < 2000 || y > 9998 {
		return 0, cluster.Invalid("invalid_month", "month %q: want YYYY-MM with month 01 to 12", s)
	}
	return y*12 + mo - 1, nil
}

// CutOff is the cut-off of month m's run: the first instant of the next
// month, UTC.
func CutOff(m int) time.Time { return meter.MonthStart(m + 1) }

// registeredAt reports whether a stream registered at reg and deleted at
// del (nil: not deleted) is registered at instant t.
func registeredAt(reg time.Time, del *time.Time, t time.Time) bool {
	return !reg.After(t) && (del == nil || del.After(t))
}

// settingsAt returns the settings in force at t: the last history entry
// stamped at or before t.
func settingsAt(h []accounts.SettingsChange, t time.Time) (accounts.StreamSettings, bool) {
	i := sort.Search(len(h), func(i int) bool { return h[i].At.After(t) })
	if i == 0 {
		return accounts.StreamSettings{}, false
	}
	return h[i-1].StreamSettings, true
}

// cycleSegment: from run month From on, the account is billed Cycle; an
// annual cycle's months are counted from Anchor.
type cycleSegment struct {
	From   int
	Cycle  string
	Anchor int
}

// cycleTimeline turns a cycle history (ordered by time) into the cycle in
// force per run month, considering only orders stamped at or before cutoff.
func cycleTimeline(h []accounts.CycleChange, cutoff time.Time) []cycleSegment {
	var segs []cycleSegment
	for i, ch := range h {
		if ch.At.After(cutoff) {
			break
		}
		if i == 0 { // the cycle the account was created with: from its first month
			m := meter.MonthIndex(ch.At)
			segs = append(segs, cycleSegment{From: m, Cycle: ch.Cycle, Anchor: m})
			continue
		}
		e := meter.MonthIndex(ch.At) + 1
		if ch.At.UTC().Day() > 15 {
			e++
		}
		// A later order replaces one that has not taken effect yet.
		for len(segs) > 1 && segs[len(segs)-1].From >= e {
			segs = segs[:len(segs)-1]
		}
		last := segs[len(segs)-1]
		if last.Cycle == ch.Cycle {
			continue
		}
		if ch.Cycle == accounts.CycleAnnual {
			segs = append(segs, cycleSegment{From: e, Cycle: accounts.CycleAnnual, Anchor: e})
			continue
		}
		// Back to monthly once the running annual cycle has ended.
		end := last.Anchor + 12*((e-last.Anchor+11)/12)
		segs = append(segs, cycleSegment{From: end, Cycle: accounts.CycleMonthly, Anchor: end})
	}
	return segs
}

// cycleAt returns the cycle of run month m and, for annual, the first run
// month of the running cycle.
func cycleAt(h []accounts.CycleChange, m int, cutoff time.Time) (cycle string, start int) {
	cycle, start = accounts.CycleMonthly, m
	for _, s := range cycleTimeline(h, cutoff) {
		if s.From > m {
			break
		}
		cycle = s.Cycle
		start = s.Anchor + 12*((m-s.Anchor)/12)
	}
	if cycle == accounts.CycleMonthly {
		start = m
	}
	return cycle, start
}

// mergeSettings is the larger of two subscriptions per billing dimension:
// the resolution with more pixels, the longer retention, every analytic.
func mergeSettings(a, b accounts.StreamSettings) accounts.StreamSettings {
	out := a
	if int64(b.Width)*int64(b.Height) > int64(a.Width)*int64(a.Height) {
		out.Width, out.Height = b.Width, b.Height
	}
	out.RetentionDays = max(a.RetentionDays, b.RetentionDays)
	out.Analytics = slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(a.Analytics), b.Analytics...))))
	if len(out.Analytics) == 0 {
		out.Analytics = nil
	}
	return out
}

// billedEqual compares subscriptions as billed: tier, retention, analytics.
func billedEqual(a, b accounts.StreamSettings) bool {
	return accounts.Tier(a.Width, a.Height) == accounts.Tier(b.Width, b.Height) && a.RetentionDays == b.RetentionDays &&
		slices.Equal(a.Analytics, b.Analytics)
}

// Changes of an annual sub-account's line item against the cycle's booked
// state.
const (
	ChangeBooked    = "booked"    // the cycle's first run: booked for the whole cycle
	ChangeNew       = "new"       // added during the cycle: an increase
	ChangeIncrease  = "increase"  // higher tier, longer retention or more analytics
	ChangeDecrease  = "decrease"  // lower now; billed as booked until the cycle ends
	ChangeDeleted   = "deleted"   // deleted; billed as booked until the cycle ends
	ChangeUnchanged = "unchanged" // as booked
)

// billStream is what the evaluation needs of a stream.
type billStream struct {
	ID, Camera, Bridge, Account string
	RegisteredAt                time.Time
	DeletedAt                   *time.Time
	History                     []accounts.SettingsChange
	Usage                       meter.MonthUsage // in the run's month, up to its cut-off
}

// billAccount is what the evaluation needs of an account.
type billAccount struct {
	ID, Parent string
	Cycles     []accounts.CycleChange
}

// LineItem is one billed stream of a run.
type LineItem struct {
	Reseller        string      `json:"reseller"`
	Account         string      `json:"account"`
	Bridge          string      `json:"bridge"`
	Camera          string      `json:"camera"`
	Stream          string      `json:"stream"`
	SKU             string      `json:"sku"`
	Analytics       []string    `json:"analytics"`
	Width           int         `json:"width"`
	Height          int         `json:"height"`
	RetentionDays   int         `json:"retention_days"`
	RegisteredAt    time.Time   `json:"registered_at"`
	DeletedAt       *time.Time  `json:"deleted_at,omitempty"`
	Cycle           string      `json:"cycle"`
	StorageBytes    int64       `json:"storage_bytes"`
	IngestedBytes   int64       `json:"ingested_bytes"`
	StoredByteHours json.Number `json:"stored_byte_hours"`
	// Annual sub-accounts only.
	Change     string `json:"change,omitempty"`
	BookedSKU  string `json:"booked_sku,omitempty"`
	MonthsLeft int    `json:"months_left,omitempty"`
}

// Summary counts subscriptions: one per billed stream (by SKU) and one per
// enabled analytic.
type Summary struct {
	Streams       int            `json:"streams"`
	Subscriptions int            `json:"subscriptions"`
	SKUs          map[string]int `json:"skus"`
	Analytics     map[string]int `json:"analytics"`
}

func newSummary() Summary { return Summary{SKUs: map[string]int{}, Analytics: map[string]int{}} }

func (s *Summary) add(it *LineItem) {
	s.Streams++
	s.Subscriptions += 1 + len(it.Analytics)
	s.SKUs[it.SKU]++
	for _, a := range it.Analytics {
		s.Analytics[a]++
	}
}

// AccountRun is one account's part of a run.
type AccountRun struct {
	ID         string     `json:"id"`
	Cycle      string     `json:"cycle"`
	CycleStart string     `json:"cycle_start,omitempty"` // annual: the cycle's first run month
	MonthsLeft int        `json:"months_left,omitempty"` // annual
	Summary    Summary    `json:"summary"`
	Items      []LineItem `json:"items,omitempty"`
}

// ResellerRun groups a reseller's accounts (its own, then its sub-accounts).
type ResellerRun struct {
	ID       string       `json:"id"`
	Summary  Summary      `json:"summary"`
	Accounts []AccountRun `json:"accounts"`
}

// BillingRun is the run at the end of a month.
type BillingRun struct {
	Month       string        `json:"month"`
	CutOff      time.Time     `json:"cutoff"`
	Final       bool          `json:"final"`
	GeneratedAt *time.Time    `json:"generated_at,omitempty"` // previews only
	Summary     Summary       `json:"summary"`
	Resellers   []ResellerRun `json:"resellers"`
}

// evaluate computes the run of month m with cut-off c (CutOff(m) for a
// final run, now for a preview). Pure: it depends only on its arguments.
func evaluate(m int, c time.Time, accts map[string]*billAccount, streams []*billStream) BillingRun {
	run := BillingRun{Month: meter.MonthName(m), CutOff: c.UTC(), Summary: newSummary()}
	type acctState struct {
		cycle      string
		start      int
		monthsLeft int
		items      []LineItem
	}
	per := map[string]*acctState{}
	acctOf := func(id string) *acctState {
		if a := per[id]; a != nil {
			return a
		}
		a := &acctState{cycle: accounts.CycleMonthly, start: m}
		if ba := accts[id]; ba != nil {
			a.cycle, a.start = cycleAt(ba.Cycles, m, c)
		}
		if a.cycle == accounts.CycleAnnual {
			a.monthsLeft = 12 - (m - a.start)
		}
		per[id] = a
		return a
	}
	// Streams in line item order (account, bridge, camera, stream,
	// registration): the items come out sorted, and each account's slice is
	// allocated once.
	streams = slices.Clone(streams)
	slices.SortFunc(streams, func(x, y *billStream) int {
		if r := cmp.Compare(x.Account, y.Account); r != 0 {
			return r
		}
		if r := cmp.Compare(x.Bridge, y.Bridge); r != 0 {
			return r
		}
		if r := cmp.Compare(x.Camera, y.Camera); r != 0 {
			return r
		}
		if r := cmp.Compare(x.ID, y.ID); r != 0 {
			return r
		}
		return x.RegisteredAt.Compare(y.RegisteredAt)
	})
	for i, s := range streams {
		if s.RegisteredAt.After(c) {
			continue
		}
		a := acctOf(s.Account)
		if a.items == nil {
			n := 1
			for i+n < len(streams) && streams[i+n].Account == s.Account {
				n++
			}
			a.items = make([]LineItem, 0, n)
		}
		var cur *accounts.StreamSettings
		if registeredAt(s.RegisteredAt, s.DeletedAt, c) {
			if v, ok := settingsAt(s.History, c); ok {
				cur = &v
			}
		}
		it := LineItem{Account: s.Account, Bridge: s.Bridge, Camera: s.Camera, Stream: s.ID,
			RegisteredAt: s.RegisteredAt, Cycle: a.cycle}
		var billed accounts.StreamSettings
		if a.cycle == accounts.CycleAnnual {
			// The booked state: what the cycle's earlier runs billed.
			var booked *accounts.StreamSettings
			for k := a.start; k < m; k++ {
				ck := CutOff(k)
				if !registeredAt(s.RegisteredAt, s.DeletedAt, ck) {
					continue
				}
				v, ok := settingsAt(s.History, ck)
				if !ok {
					continue
				}
				if booked == nil {
					booked = &v
				} else {
					mv := mergeSettings(*booked, v)
					booked = &mv
				}
			}
			switch {
			case booked == nil && cur == nil:
				continue
			case booked == nil && m == a.start:
				billed, it.Change = *cur, ChangeBooked
			case booked == nil:
				billed, it.Change = *cur, ChangeNew
			case cur == nil:
				billed, it.Change = *booked, ChangeDeleted
			default:
				billed = mergeSettings(*booked, *cur)
				switch {
				case !billedEqual(billed, *booked):
					it.Change = ChangeIncrease
				case !billedEqual(*cur, *booked):
					it.Change = ChangeDecrease
				default:
					it.Change = ChangeUnchanged
				}
			}
			if booked != nil {
				it.BookedSKU = accounts.SKU(*booked)
			}
			it.MonthsLeft = a.monthsLeft
		} else {
			if cur == nil {
				continue
			}
			billed = *cur
		}
		if s.DeletedAt != nil && !s.DeletedAt.After(c) {
			t := s.DeletedAt.UTC()
			it.DeletedAt = &t
		}
		it.SKU = accounts.SKU(billed)
		it.Analytics = slices.Clone(billed.Analytics)
		if it.Analytics == nil {
			it.Analytics = []string{}
		}
		it.Width, it.Height, it.RetentionDays = billed.Width, billed.Height, billed.RetentionDays
		it.StorageBytes, it.IngestedBytes, it.StoredByteHours = s.Usage.StoredBytes, s.Usage.IngestedBytes, s.Usage.StoredByteHours
		a.items = append(a.items, it)
	}

	resellers := map[string]*ResellerRun{}
	ids := make([]string, 0, len(per))
	for id := range per {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		a := per[id]
		if len(a.items) == 0 {
			continue
		}
		reseller := id
		if ba := accts[id]; ba != nil && ba.Parent != "" {
			reseller = ba.Parent
		}
		ar := AccountRun{ID: id, Cycle: a.cycle, Summary: newSummary(), Items: a.items}
		if a.cycle == accounts.CycleAnnual {
			ar.CycleStart, ar.MonthsLeft = meter.MonthName(a.start), a.monthsLeft
		}
		r := resellers[reseller]
		if r == nil {
			r = &ResellerRun{ID: reseller, Summary: newSummary()}
			resellers[reseller] = r
		}
		for i := range ar.Items {
			it := &ar.Items[i]
			it.Reseller = reseller
			ar.Summary.add(it)
			r.Summary.add(it)
			run.Summary.add(it)
		}
		r.Accounts = append(r.Accounts, ar)
	}
	rids := make([]string, 0, len(resellers))
	for id := range resellers {
		rids = append(rids, id)
	}
	sort.Strings(rids)
	run.Resellers = make([]ResellerRun, 0, len(rids))
	for _, id := range rids {
		r := resellers[id]
		// The reseller's own account first, then its sub-accounts by id.
		sort.SliceStable(r.Accounts, func(i, j int) bool {
			if (r.Accounts[i].ID == id) != (r.Accounts[j].ID == id) {
				return r.Accounts[i].ID == id
			}
			return r.Accounts[i].ID < r.Accounts[j].ID
		})
		run.Resellers = append(run.Resellers, *r)
	}
	return run
}

// inputs collects the evaluation's inputs from the state, live and retired
// streams alike, with each stream's usage in month m up to cut-off c. Call
// with the state read-locked.
func (b *Billing) inputs(m int, c time.Time) (map[string]*billAccount, []*billStream) {
	accts := map[string]*billAccount{}
	b.accounts.EachAccount(func(a *accounts.Account, cycles []accounts.CycleChange) {
		accts[a.ID] = &billAccount{ID: a.ID, Parent: a.Parent, Cycles: cycles}
	})
	var streams []*billStream
	b.accounts.EachStream(func(s *accounts.Stream, h []accounts.SettingsChange) {
		streams = append(streams, &billStream{ID: s.ID, Camera: s.Camera, Bridge: s.Bridge,
			Account: s.Account, RegisteredAt: s.RegisteredAt, DeletedAt: s.DeletedAt,
			History: h, Usage: b.usage.MonthUsage(s, m, c)})
	})
	return accts, streams
}

// run evaluates month m's run on the state as it is: final with the
// month's cut-off, or a preview with cut-off now.
func (b *Billing) run(m int, final bool, now time.Time) BillingRun {
	c := now
	if final {
		c = CutOff(m)
	}
	b.m.RLock()
	accts, streams := b.inputs(m, c)
	b.m.RUnlock()
	// evaluate reads history slices the state shares, which are only ever
	// appended to, never changed in place; usage figures are copies.
	run := evaluate(m, c, accts, streams)
	run.Final = final
	if !final {
		t := now.UTC()
		run.GeneratedAt = &t
	}
	return run
}

func (r *BillingRun) String() string {
	return fmt.Sprintf("billing run %s (final %v)", r.Month, r.Final)
}

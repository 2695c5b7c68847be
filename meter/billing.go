package meter

import (
	"cmp"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"time"
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

// CycleChange is one entry of an account's billing-cycle history: the
// cycle ordered at At.
type CycleChange struct {
	At    time.Time `json:"at"`
	Cycle string    `json:"cycle"`
}

// DefaultsChange is one entry of an account's defaults history.
type DefaultsChange struct {
	At       time.Time `json:"at"`
	Defaults Defaults  `json:"defaults"`
}

type accountHist struct {
	Cycles   []CycleChange    `json:"cycles"`
	Defaults []DefaultsChange `json:"defaults"`
}

// recordAccount appends to a's cycle and defaults history what changed.
func (st *state) recordAccount(at time.Time, a *Account) {
	if st.AccountHist == nil {
		st.AccountHist = map[string]*accountHist{}
	}
	h := st.AccountHist[a.ID]
	if h == nil {
		h = &accountHist{}
		st.AccountHist[a.ID] = h
	}
	if n := len(h.Cycles); n == 0 || h.Cycles[n-1].Cycle != a.BillingCycle {
		h.Cycles = append(h.Cycles, CycleChange{At: at, Cycle: a.BillingCycle})
	}
	if n := len(h.Defaults); n == 0 || h.Defaults[n-1].Defaults != a.Defaults {
		h.Defaults = append(h.Defaults, DefaultsChange{At: at, Defaults: a.Defaults})
	}
}

var monthRE = regexp.MustCompile(`^([0-9]{4})-([0-9]{2})$`)

// ParseMonth parses YYYY-MM (months 01 to 12, years 2000 to 9998) into a
// month index.
func ParseMonth(s string) (int, error) {
	g := monthRE.FindStringSubmatch(s)
	if g == nil {
		return 0, invalid("invalid_month", "month %q: want YYYY-MM", s)
	}
	y, _ := strconv.Atoi(g[1])
	mo, _ := strconv.Atoi(g[2])
	if mo < 1 || mo > 12 || y < 2000 || y > 9998 {
		return 0, invalid("invalid_month", "month %q: want YYYY-MM with month 01 to 12", s)
	}
	return y*12 + mo - 1, nil
}

// CutOff is the cut-off of month m's run: the first instant of the next
// month, UTC.
func CutOff(m int) time.Time { return monthStart(m + 1) }

// registeredAt reports whether a stream registered at reg and deleted at
// del (nil: not deleted) is registered at instant t.
func registeredAt(reg time.Time, del *time.Time, t time.Time) bool {
	return !reg.After(t) && (del == nil || del.After(t))
}

// settingsAt returns the settings in force at t: the last history entry
// stamped at or before t.
func settingsAt(h []SettingsChange, t time.Time) (StreamSettings, bool) {
	i := sort.Search(len(h), func(i int) bool { return h[i].At.After(t) })
	if i == 0 {
		return StreamSettings{}, false
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
func cycleTimeline(h []CycleChange, cutoff time.Time) []cycleSegment {
	var segs []cycleSegment
	for i, ch := range h {
		if ch.At.After(cutoff) {
			break
		}
		if i == 0 { // the cycle the account was created with: from its first month
			m := monthIndex(ch.At)
			segs = append(segs, cycleSegment{From: m, Cycle: ch.Cycle, Anchor: m})
			continue
		}
		e := monthIndex(ch.At) + 1
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
		if ch.Cycle == CycleAnnual {
			segs = append(segs, cycleSegment{From: e, Cycle: CycleAnnual, Anchor: e})
			continue
		}
		// Back to monthly once the running annual cycle has ended.
		end := last.Anchor + 12*((e-last.Anchor+11)/12)
		segs = append(segs, cycleSegment{From: end, Cycle: CycleMonthly, Anchor: end})
	}
	return segs
}

// cycleAt returns the cycle of run month m and, for annual, the first run
// month of the running cycle.
func cycleAt(h []CycleChange, m int, cutoff time.Time) (cycle string, start int) {
	cycle, start = CycleMonthly, m
	for _, s := range cycleTimeline(h, cutoff) {
		if s.From > m {
			break
		}
		cycle = s.Cycle
		start = s.Anchor + 12*((m-s.Anchor)/12)
	}
	if cycle == CycleMonthly {
		start = m
	}
	return cycle, start
}

// mergeSettings is the larger of two subscriptions per billing dimension:
// the resolution with more pixels, the longer retention, every analytic.
func mergeSettings(a, b StreamSettings) StreamSettings {
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
func billedEqual(a, b StreamSettings) bool {
	return Tier(a.Width, a.Height) == Tier(b.Width, b.Height) && a.RetentionDays == b.RetentionDays &&
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
	History                     []SettingsChange
	Usage                       *usageRec
}

// billAccount is what the evaluation needs of an account.
type billAccount struct {
	ID, Parent string
	Cycles     []CycleChange
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
func evaluate(m int, c time.Time, accounts map[string]*billAccount, streams []*billStream) BillingRun {
	run := BillingRun{Month: monthName(m), CutOff: c.UTC(), Summary: newSummary()}
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
		a := &acctState{cycle: CycleMonthly, start: m}
		if ba := accounts[id]; ba != nil {
			a.cycle, a.start = cycleAt(ba.Cycles, m, c)
		}
		if a.cycle == CycleAnnual {
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
		var cur *StreamSettings
		if registeredAt(s.RegisteredAt, s.DeletedAt, c) {
			if v, ok := settingsAt(s.History, c); ok {
				cur = &v
			}
		}
		it := LineItem{Account: s.Account, Bridge: s.Bridge, Camera: s.Camera, Stream: s.ID,
			RegisteredAt: s.RegisteredAt, Cycle: a.cycle}
		var billed StreamSettings
		if a.cycle == CycleAnnual {
			// The booked state: what the cycle's earlier runs billed.
			var booked *StreamSettings
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
				it.BookedSKU = SKU(*booked)
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
		it.SKU = SKU(billed)
		it.Analytics = slices.Clone(billed.Analytics)
		if it.Analytics == nil {
			it.Analytics = []string{}
		}
		it.Width, it.Height, it.RetentionDays = billed.Width, billed.Height, billed.RetentionDays
		stored, ingested, bms := usageAt(s.Usage, m, c)
		it.StorageBytes, it.IngestedBytes, it.StoredByteHours = stored, ingested, bms.ByteHours()
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
		if ba := accounts[id]; ba != nil && ba.Parent != "" {
			reseller = ba.Parent
		}
		ar := AccountRun{ID: id, Cycle: a.cycle, Summary: newSummary(), Items: a.items}
		if a.cycle == CycleAnnual {
			ar.CycleStart, ar.MonthsLeft = monthName(a.start), a.monthsLeft
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

// billingInputs collects the evaluation's inputs from the state, live and
// retired streams alike. Call with the state read-locked.
func (st *state) billingInputs() (map[string]*billAccount, []*billStream) {
	accounts := make(map[string]*billAccount, len(st.Accounts))
	for id, a := range st.Accounts {
		ba := &billAccount{ID: id, Parent: a.Parent}
		if h := st.AccountHist[id]; h != nil {
			ba.Cycles = h.Cycles
		} else { // an account from before cycle history: its cycle since creation
			ba.Cycles = []CycleChange{{At: a.CreatedAt, Cycle: a.BillingCycle}}
		}
		accounts[id] = ba
	}
	streams := make([]*billStream, 0, len(st.Streams))
	add := func(s *streamRec) {
		streams = append(streams, &billStream{ID: s.Stream.ID, Camera: s.Stream.Camera, Bridge: s.Stream.Bridge,
			Account: s.Stream.Account, RegisteredAt: s.Stream.RegisteredAt, DeletedAt: s.Stream.DeletedAt,
			History: s.History, Usage: st.usageOf(&s.Stream)})
	}
	for _, s := range st.Streams {
		add(s)
	}
	for _, r := range st.Retired {
		for _, s := range r.Streams {
			add(s)
		}
	}
	return accounts, streams
}

// billingRun evaluates month m's run on the state as it is: final with the
// month's cut-off, or a preview with cut-off now.
func (f *fsm) billingRun(m int, final bool, now time.Time) BillingRun {
	f.mu.RLock()
	accounts, streams := f.st.billingInputs()
	c := now
	if final {
		c = CutOff(m)
	}
	// evaluate only reads what billingInputs shares with the state, and the
	// FSM never mutates history entries in place, only appends; but a
	// usage record is updated in place, so evaluate under the read lock.
	run := evaluate(m, c, accounts, streams)
	f.mu.RUnlock()
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

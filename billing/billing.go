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
	Covers                      []cover          // entitlement units of this incarnation (entitlements.go)
}

// billAccount is what the evaluation needs of an account.
type billAccount struct {
	ID, Parent string
	Cycles     []accounts.CycleChange
	// Reseller and Distributor place the account in the tree; an empty
	// Reseller means Parent (or the account itself at the root).
	Reseller, Distributor string
}

// LineItem is one billed stream of a run.
type LineItem struct {
	Reseller        string      `json:"reseller"`
	Distributor     string      `json:"distributor,omitempty"`
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
	// Entitlements: the activation ID covering the SKU (not charged) and
	// until when, and the covered analytics (analytic → activation ID).
	Covered          string            `json:"covered,omitempty"`
	CoveredUntil     *time.Time        `json:"covered_until,omitempty"`
	CoveredAnalytics map[string]string `json:"covered_analytics,omitempty"`
}

// Summary counts subscriptions: one per billed stream (by SKU) and one per
// enabled analytic.
type Summary struct {
	Streams       int            `json:"streams"`
	Subscriptions int            `json:"subscriptions"`
	SKUs          map[string]int `json:"skus"`
	Analytics     map[string]int `json:"analytics"`
	// Covered counts the subscriptions entitlements cover, not charged
	// and not in the counts above.
	Covered int `json:"covered,omitempty"`
}

var skuPrefixRE = regexp.MustCompile(`^[A-Za-z0-9-]{0,16}$`)

// ValidSKUPrefix checks a SKU prefix (--sku-prefix, e.g. "Mx-"):
// [A-Za-z0-9-]{0,16}.
func ValidSKUPrefix(p string) error {
	if !skuPrefixRE.MatchString(p) {
		return fmt.Errorf("SKU prefix %q: want [A-Za-z0-9-]{0,16}", p)
	}
	return nil
}

// SetSKUPrefix sets what goes before every SKU of the runs BillingRun
// returns (DESIGN.md section 1: the prefix is configuration). Call it
// before serving.
func (b *Billing) SetSKUPrefix(p string) error {
	if err := ValidSKUPrefix(p); err != nil {
		return err
	}
	b.skuPrefix = p
	return nil
}

// prefixSKUs puts prefix before every SKU run names: line items, booked
// SKUs and the summaries' counts.
func prefixSKUs(run *BillingRun, prefix string) {
	if prefix == "" {
		return
	}
	prefixCounts := func(s *Summary) {
		m := make(map[string]int, len(s.SKUs))
		for k, v := range s.SKUs {
			m[prefix+k] = v
		}
		s.SKUs = m
	}
	prefixCounts(&run.Summary)
	for i := range run.Resellers {
		rr := &run.Resellers[i]
		prefixCounts(&rr.Summary)
		for j := range rr.Accounts {
			a := &rr.Accounts[j]
			prefixCounts(&a.Summary)
			for k := range a.Items {
				it := &a.Items[k]
				it.SKU = prefix + it.SKU
				if it.BookedSKU != "" {
					it.BookedSKU = prefix + it.BookedSKU
				}
			}
		}
	}
}

func newSummary() Summary { return Summary{SKUs: map[string]int{}, Analytics: map[string]int{}} }

func (s *Summary) add(it *LineItem) {
	if it.Covered != "" {
		s.Covered++
	} else {
		s.Streams++
		s.Subscriptions++
		s.SKUs[it.SKU]++
	}
	for _, a := range it.Analytics {
		if it.CoveredAnalytics[a] != "" {
			s.Covered++
			continue
		}
		s.Subscriptions++
		s.Analytics[a]++
	}
}

// AccountRun is one account's part of a run.
type AccountRun struct {
	ID         string  `json:"id"`
	Cycle      string  `json:"cycle"`
	CycleStart string  `json:"cycle_start,omitempty"` // annual: the cycle's first run month
	MonthsLeft int     `json:"months_left,omitempty"` // annual
	Summary    Summary `json:"summary"`
	// Expiring lists the entitlement units whose term ends in the month
	// after the run's (entitlements.go).
	Expiring []Expiring `json:"expiring,omitempty"`
	Items    []LineItem `json:"items,omitempty"`
}

// ResellerRun groups a reseller's accounts (its own, then its sub-accounts).
type ResellerRun struct {
	ID          string       `json:"id"`
	Distributor string       `json:"distributor,omitempty"` // the account above the reseller, if any
	Summary     Summary      `json:"summary"`
	Accounts    []AccountRun `json:"accounts"`
}

// BillingRun is the run at the end of a month.
type BillingRun struct {
	Month       string     `json:"month"`
	CutOff      time.Time  `json:"cutoff"`
	Final       bool       `json:"final"`
	GeneratedAt *time.Time `json:"generated_at,omitempty"` // previews only
	Summary     Summary    `json:"summary"`
	// Distributors sums the resellers below each distributor (none in
	// two-level setups).
	Distributors []DistributorRun `json:"distributors,omitempty"`
	Resellers    []ResellerRun    `json:"resellers"`
}

// evaluate computes the run of month m with cut-off c (CutOff(m) for a
// final run, now for a preview). Pure: it depends only on its arguments,
// a read-only view of the meter's state.
func evaluate(m int, c time.Time, accounts map[string]*billAccount, streams []*billStream) BillingRun {
	var runs []AccountRun
	for _, group := range byAccount(inItemOrder(streams)) {
		id := group[0].Account
		if ar, ok := accountRun(m, c, id, accounts[id], group); ok {
			runs = append(runs, ar)
		}
	}
	return rollUp(m, c, accounts, runs)
}

// inItemOrder sorts a copy of streams in line item order (account,
// bridge, camera, stream, registration), so that the items come out
// sorted.
func inItemOrder(streams []*billStream) []*billStream {
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
	return streams
}

// byAccount splits streams sorted by account into one group per account.
func byAccount(streams []*billStream) [][]*billStream {
	var groups [][]*billStream
	for len(streams) > 0 {
		n := 1
		for n < len(streams) && streams[n].Account == streams[0].Account {
			n++
		}
		groups = append(groups, streams[:n])
		streams = streams[n:]
	}
	return groups
}

// billedCycle is an account's billing cycle in a run month.
type billedCycle struct {
	Cycle      string
	Start      int // annual: the running cycle's first run month; monthly: the run month
	MonthsLeft int // annual: the cycle's run months from this one on
}

// cycleOf returns account a's cycle in run month m as ordered by cut-off
// c; an account missing from the view is billed monthly.
func cycleOf(a *billAccount, m int, c time.Time) billedCycle {
	bc := billedCycle{Cycle: accounts.CycleMonthly, Start: m}
	if a != nil {
		bc.Cycle, bc.Start = cycleAt(a.Cycles, m, c)
	}
	if bc.Cycle == accounts.CycleAnnual {
		bc.MonthsLeft = 12 - (m - bc.Start)
	}
	return bc
}

// accountRun is account id's part of the run of month m: its cycle and
// the line items of its streams (given in item order), without summary.
// ok is false if the month bills none of its streams.
func accountRun(m int, c time.Time, id string, a *billAccount, streams []*billStream) (AccountRun, bool) {
	bc := cycleOf(a, m, c)
	ar := AccountRun{ID: id, Cycle: bc.Cycle, Summary: newSummary()}
	if bc.Cycle == accounts.CycleAnnual {
		ar.CycleStart, ar.MonthsLeft = meter.MonthName(bc.Start), bc.MonthsLeft
	}
	for _, s := range streams {
		it, ok := lineItem(s, bc, m, c)
		if !ok {
			continue
		}
		if ar.Items == nil { // allocated once per account
			ar.Items = make([]LineItem, 0, len(streams))
		}
		ar.Items = append(ar.Items, it)
	}
	ar.Expiring = expiring(m, c, streams)
	return ar, len(ar.Items) > 0
}

// lineItem is stream s's line item in the run of month m, for an account
// billed bc. ok is false if the month does not bill s: it was registered
// after the cut-off, or, outside an annual cycle's booking, it is not
// registered at the cut-off.
func lineItem(s *billStream, bc billedCycle, m int, c time.Time) (LineItem, bool) {
	if s.RegisteredAt.After(c) {
		return LineItem{}, false
	}
	cur := settingsInForce(s, c)
	it := LineItem{Account: s.Account, Bridge: s.Bridge, Camera: s.Camera, Stream: s.ID,
		RegisteredAt: s.RegisteredAt, Cycle: bc.Cycle}
	var billed accounts.StreamSettings
	if bc.Cycle == accounts.CycleAnnual {
		booked := bookedSettings(s, bc.Start, m)
		var ok bool
		billed, it.Change, ok = annualBilled(booked, cur, m == bc.Start)
		if !ok {
			return LineItem{}, false
		}
		if booked != nil {
			it.BookedSKU = accounts.SKU(*booked)
		}
		it.MonthsLeft = bc.MonthsLeft
	} else {
		if cur == nil {
			return LineItem{}, false
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
	if cur != nil {
		applyCoverage(&it, s, billed, c) // entitlements.go
	}
	return it, true
}

// settingsInForce returns s's settings at instant t, nil if s is not
// registered then or has no settings yet.
func settingsInForce(s *billStream, t time.Time) *accounts.StreamSettings {
	if !registeredAt(s.RegisteredAt, s.DeletedAt, t) {
		return nil
	}
	if v, ok := settingsAt(s.History, t); ok {
		return &v
	}
	return nil
}

// bookedSettings is what the earlier runs of an annual cycle, from run
// month start to m-1, billed for s: the larger of their settings per
// billing dimension; nil if none billed it.
func bookedSettings(s *billStream, start, m int) *accounts.StreamSettings {
	var booked *accounts.StreamSettings
	for k := start; k < m; k++ {
		if skuCoveredAt(s, CutOff(k)) {
			continue // an entitlement paid for that month
		}
		v := settingsInForce(s, CutOff(k))
		switch {
		case v == nil:
		case booked == nil:
			booked = v
		default:
			mv := mergeSettings(*booked, *v)
			booked = &mv
		}
	}
	return booked
}

// annualBilled decides an annual sub-account's subscription for a stream
// from what the cycle booked and what is in force now (either nil if
// none): never less than booked, so no credit before the cycle ends. first
// is the cycle's first run. ok is false if there is nothing to bill.
func annualBilled(booked, cur *accounts.StreamSettings, first bool) (billed accounts.StreamSettings, change string, ok bool) {
	switch {
	case booked == nil && cur == nil:
		return accounts.StreamSettings{}, "", false
	case booked == nil && first:
		return *cur, ChangeBooked, true
	case booked == nil:
		return *cur, ChangeNew, true
	case cur == nil:
		return *booked, ChangeDeleted, true
	}
	billed = mergeSettings(*booked, *cur)
	switch {
	case !billedEqual(billed, *booked):
		change = ChangeIncrease
	case !billedEqual(*cur, *booked):
		change = ChangeDecrease
	default:
		change = ChangeUnchanged
	}
	return billed, change, true
}

// rollUp assembles the run of month m from the account runs (by account
// id): each account goes under its reseller (its parent, or itself), its
// items are stamped with the reseller and counted in the account's, the
// reseller's and the run's summaries. Resellers come by id, each with its
// own account first, then its sub-accounts by id.
func rollUp(m int, c time.Time, accounts map[string]*billAccount, runs []AccountRun) BillingRun {
	run := BillingRun{Month: meter.MonthName(m), CutOff: c.UTC(), Summary: newSummary()}
	resellers := map[string]*ResellerRun{}
	distributors := map[string]*DistributorRun{}
	for _, ar := range runs {
		reseller, distributor := ar.ID, ""
		if ba := accounts[ar.ID]; ba != nil {
			switch {
			case ba.Reseller != "":
				reseller, distributor = ba.Reseller, ba.Distributor
			case ba.Parent != "":
				reseller = ba.Parent
			}
		}
		r := resellers[reseller]
		if r == nil {
			r = &ResellerRun{ID: reseller, Distributor: distributor, Summary: newSummary()}
			resellers[reseller] = r
		}
		var d *DistributorRun
		if distributor != "" {
			if d = distributors[distributor]; d == nil {
				d = &DistributorRun{ID: distributor, Summary: newSummary()}
				distributors[distributor] = d
			}
			if !slices.Contains(d.Resellers, reseller) {
				d.Resellers = append(d.Resellers, reseller)
			}
		}
		for i := range ar.Items {
			it := &ar.Items[i]
			it.Reseller, it.Distributor = reseller, distributor
			ar.Summary.add(it)
			r.Summary.add(it)
			run.Summary.add(it)
			if d != nil {
				d.Summary.add(it)
			}
		}
		r.Accounts = append(r.Accounts, ar)
	}
	dids := make([]string, 0, len(distributors))
	for id := range distributors {
		dids = append(dids, id)
	}
	sort.Strings(dids)
	for _, id := range dids {
		d := distributors[id]
		sort.Strings(d.Resellers)
		run.Distributors = append(run.Distributors, *d)
	}
	rids := make([]string, 0, len(resellers))
	for id := range resellers {
		rids = append(rids, id)
	}
	sort.Strings(rids)
	run.Resellers = make([]ResellerRun, 0, len(rids))
	for _, id := range rids {
		r := resellers[id]
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
		ba := &billAccount{ID: a.ID, Parent: a.Parent, Cycles: cycles}
		ba.Reseller, ba.Distributor = chainOf(b.accounts, a) // entitlements.go
		accts[a.ID] = ba
	})
	covers := b.covers()
	var streams []*billStream
	b.accounts.EachStream(func(s *accounts.Stream, h []accounts.SettingsChange) {
		var cv []cover
		if covers != nil {
			cv = covers[incarnation(s.ID, s.RegisteredAt)]
		}
		streams = append(streams, &billStream{ID: s.ID, Camera: s.Camera, Bridge: s.Bridge,
			Account: s.Account, RegisteredAt: s.RegisteredAt, DeletedAt: s.DeletedAt,
			History: h, Usage: b.usage.MonthUsage(s, m, c), Covers: cv})
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

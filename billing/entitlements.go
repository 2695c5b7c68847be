package billing

import (
	"slices"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/entitlement"
)

// Entitlements in a run (docs/billing.md, "Entitlements"): a stream whose
// subscription is covered by an activated entitlement unit at the cut-off
// is listed with the unit's activation ID and not charged; an analytic
// likewise. A unit covers from its activation until its term ends, so the
// run of the month in which the term ends charges the stream again, and
// the run of the month before lists the unit as expiring.

// Coverage lists the activated entitlement units (*entitlement.State);
// the caller holds the machine's lock.
type Coverage interface {
	EachUnit(f func(u *entitlement.Unit))
}

// SetCoverage makes runs honour entitlement units. Call it before serving.
func (b *Billing) SetCoverage(c Coverage) { b.coverage = c }

// cover is a unit as the evaluation needs it.
type cover struct {
	Activation  string
	Kind        string
	Product     string
	From, Until time.Time
}

// Expiring is a unit whose term ends within the month after the run's:
// the run after this one charges its stream again.
type Expiring struct {
	Activation string    `json:"activation"`
	Stream     string    `json:"stream"`
	Product    string    `json:"product"`
	Until      time.Time `json:"until"`
}

// coversAt returns the unit covering s's subscription (kind, product) at
// t, nil if none.
func coversAt(s *billStream, kind, product string, t time.Time) *cover {
	for i := range s.Covers {
		c := &s.Covers[i]
		if c.Kind == kind && c.Product == product && !t.Before(c.From) && t.Before(c.Until) {
			return c
		}
	}
	return nil
}

// applyCoverage marks what of item it (billed as billed) is covered at
// cut-off c.
func applyCoverage(it *LineItem, s *billStream, billed accounts.StreamSettings, c time.Time) {
	if len(s.Covers) == 0 {
		return
	}
	if u := coversAt(s, entitlement.KindSKU, accounts.SKU(billed), c); u != nil {
		it.Covered = u.Activation
		t := u.Until
		it.CoveredUntil = &t
	}
	for _, a := range billed.Analytics {
		if u := coversAt(s, entitlement.KindAnalytic, a, c); u != nil {
			if it.CoveredAnalytics == nil {
				it.CoveredAnalytics = map[string]string{}
			}
			it.CoveredAnalytics[a] = u.Activation
		}
	}
}

// skuCoveredAt reports whether s's video subscription was covered at t
// (an annual cycle books nothing for such a month).
func skuCoveredAt(s *billStream, t time.Time) bool {
	v := settingsInForce(s, t)
	return v != nil && coversAt(s, entitlement.KindSKU, accounts.SKU(*v), t) != nil
}

// expiring lists the units of the account's streams registered at c whose
// term ends after month m's cut-off and no later than the next one's.
func expiring(m int, c time.Time, streams []*billStream) []Expiring {
	lo, hi := CutOff(m), CutOff(m+1)
	var out []Expiring
	for _, s := range streams {
		if !registeredAt(s.RegisteredAt, s.DeletedAt, c) {
			continue
		}
		for _, u := range s.Covers {
			if !u.From.After(c) && u.Until.After(lo) && !u.Until.After(hi) {
				out = append(out, Expiring{Activation: u.Activation, Stream: s.ID, Product: u.Product, Until: u.Until})
			}
		}
	}
	return out
}

// covers collects the units per stream incarnation ("id\x00registered").
func (b *Billing) covers() map[string][]cover {
	if b.coverage == nil {
		return nil
	}
	out := map[string][]cover{}
	b.coverage.EachUnit(func(u *entitlement.Unit) {
		k := incarnation(u.Stream, u.Registered)
		out[k] = append(out[k], cover{Activation: u.Entitlement, Kind: u.Kind, Product: u.Product, From: u.From, Until: u.Until})
	})
	return out
}

func incarnation(stream string, registered time.Time) string {
	return stream + "\x00" + registered.UTC().Format(time.RFC3339Nano)
}

// chainOf returns the reseller an account is billed under and the
// distributor above that ("" in two-level setups).
func chainOf(st *accounts.State, a *accounts.Account) (reseller, distributor string) {
	chain := st.Chain(a.ID)
	switch st.Level(a.ID) {
	case accounts.LevelDistributor:
		return a.ID, a.ID
	case accounts.LevelReseller:
		if len(chain) > 0 {
			return a.ID, chain[0]
		}
		return a.ID, ""
	}
	// An end customer: its parent is its reseller.
	switch len(chain) {
	case 0:
		return a.ID, ""
	case 1:
		return chain[0], ""
	}
	return chain[len(chain)-1], chain[0]
}

// coveredCSV renders a line item's covered analytics as analytic=activation
// pairs joined by ";", sorted.
func coveredCSV(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ";")
}

// DistributorRun sums the resellers below a distributor.
type DistributorRun struct {
	ID        string   `json:"id"`
	Summary   Summary  `json:"summary"`
	Resellers []string `json:"resellers"`
}

// Package entitlement holds prepaid licences as they travel down the sales
// chain (issue 16, seed 002): the operator creates an entitlement for a
// distributor, each owner splits it to accounts directly below it, and the
// end customer activates its units onto its streams, which billing then
// lists as covered instead of charging them. It is a domain of the
// replicated state machine (package cluster): every decision that must
// hold under concurrency (quantities, one unit per stream) is made in the
// apply function, never by the proposer.
package entitlement

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/storage"
)

// Bounds of a request.
const (
	MaxQuantity   = 1_000_000 // units of one entitlement
	MaxTermMonths = 120
	MaxActivate   = 1000 // streams in one activation request
)

// Kinds of product.
const (
	KindSKU      = "sku"      // a video subscription, e.g. HD1-D30
	KindAnalytic = "analytic" // one analytic of a stream, e.g. people_counting
)

// Actions of an entitlement's history.
const (
	ActCreated   = "created"    // the operator created it
	ActReceived  = "received"   // split to its owner from Parent
	ActSplit     = "split"      // units went to a child
	ActTakenBack = "taken_back" // a child's units came back
	ActReturned  = "returned"   // it (or its parent) was taken back
	ActActivated = "activated"  // a unit went onto a stream
)

// Event is one line of an entitlement's history.
type Event struct {
	At          time.Time `json:"at"`
	Action      string    `json:"action"`
	Actor       string    `json:"actor"`
	Quantity    int       `json:"quantity,omitempty"`
	Account     string    `json:"account,omitempty"`     // split: the receiver
	Entitlement string    `json:"entitlement,omitempty"` // split, taken_back: the child
	Stream      string    `json:"stream,omitempty"`      // activated
}

// Entitlement is one line item of a licence: its id is the activation ID.
type Entitlement struct {
	ID         string     `json:"id"`
	Product    string     `json:"product"`
	Kind       string     `json:"kind"`
	Quantity   int        `json:"quantity"` // units it received
	TermMonths int        `json:"term_months"`
	Owner      string     `json:"owner"`
	Parent     string     `json:"parent,omitempty"` // the entitlement it was split from
	CreatedAt  time.Time  `json:"created_at"`
	ReturnedAt *time.Time `json:"returned_at,omitempty"`
	Split      int        `json:"split"`     // units in children not taken back
	Activated  int        `json:"activated"` // units activated onto streams
	History    []Event    `json:"history"`
}

// Available is what the owner may still split or activate.
func (e *Entitlement) Available() int {
	if e.ReturnedAt != nil {
		return 0
	}
	return e.Quantity - e.Split - e.Activated
}

// Unit is an activated unit: it covers the subscription Product of one
// stream incarnation (Stream registered at Registered) from From until
// Until (exclusive), the end of the term.
type Unit struct {
	Entitlement string    `json:"entitlement"`
	Account     string    `json:"account"`
	Stream      string    `json:"stream"`
	Registered  time.Time `json:"registered_at"`
	Product     string    `json:"product"`
	Kind        string    `json:"kind"`
	From        time.Time `json:"from"`
	Until       time.Time `json:"until"`
	Actor       string    `json:"actor"`
}

// State is the entitlement section of the replicated state. Both fields
// are omitted when empty, so a state from before entitlements keeps its
// digest.
type State struct {
	Entitlements map[string]*Entitlement `json:"entitlements,omitempty"`
	Units        []*Unit                 `json:"entitlement_units,omitempty"` // in activation order

	m        *cluster.Machine
	accounts *accounts.State
	byStream map[string][]*Unit // derived from Units
	byEnt    map[string][]*Unit // derived from Units
}

func (st *State) reset() {
	st.Entitlements, st.Units = nil, nil
	st.byStream, st.byEnt = map[string][]*Unit{}, map[string][]*Unit{}
}

func (st *State) restored() error {
	for _, u := range st.Units {
		if st.Entitlements[u.Entitlement] == nil {
			return fmt.Errorf("unit of unknown entitlement %s", u.Entitlement)
		}
		st.byStream[u.Stream] = append(st.byStream[u.Stream], u)
		st.byEnt[u.Entitlement] = append(st.byEnt[u.Entitlement], u)
	}
	return nil
}

var skuRE = regexp.MustCompile(`^(SD1|HD1|HD2|HD3|HD4|HD5|HD10)-D([1-9][0-9]{0,3})$`)

// ProductKind classifies a product: a SKU (<TIER>-D<days>, days 1 to
// 3650, without the configured SKU prefix) or an analytic's id.
func ProductKind(p string) (string, error) {
	if g := skuRE.FindStringSubmatch(p); g != nil {
		if d, _ := strconv.Atoi(g[2]); d >= accounts.MinRetentionDays && d <= accounts.MaxRetentionDays {
			return KindSKU, nil
		}
		return "", cluster.Invalid("invalid_product", "product %q: retention days are %d to %d", p, accounts.MinRetentionDays, accounts.MaxRetentionDays)
	}
	if strings.HasPrefix(p, "SD") || strings.HasPrefix(p, "HD") {
		if _, after, ok := strings.Cut(p, "-D"); ok && after != "" {
			return "", cluster.Invalid("invalid_product", "product %q is not a SKU <TIER>-D<days> with a tier SD1, HD1 to HD5 or HD10", p)
		}
	}
	if !storage.ValidID(p) {
		return "", cluster.Invalid("invalid_product", "product %q is neither a SKU such as HD1-D30 nor an analytic id [a-zA-Z0-9_-]{1,64}", p)
	}
	return KindAnalytic, nil
}

func validQuantity(q int) error {
	if q < 1 || q > MaxQuantity {
		return cluster.Invalid("invalid_quantity", "quantity is 1 to %d, not %d", MaxQuantity, q)
	}
	return nil
}

// CreateCmd is the payload of cluster.CmdCreateEntitlement; the nonce is
// the new activation ID, made by the proposer.
type CreateCmd struct {
	Account    string `json:"account"`
	Product    string `json:"product"`
	Quantity   int    `json:"quantity"`
	TermMonths int    `json:"term_months"`
	Actor      string `json:"actor"`
}

// validate checks what needs no state.
func (p *CreateCmd) validate() error {
	if !storage.ValidID(p.Account) {
		return cluster.Invalid("invalid_id", "invalid account id %q", p.Account)
	}
	if _, err := ProductKind(p.Product); err != nil {
		return err
	}
	if err := validQuantity(p.Quantity); err != nil {
		return err
	}
	if p.TermMonths < 1 || p.TermMonths > MaxTermMonths {
		return cluster.Invalid("invalid_term", "term_months is 1 to %d, not %d", MaxTermMonths, p.TermMonths)
	}
	return nil
}

// Result is the result of create and split: the new entitlement.
type Result struct {
	Entitlement Entitlement `json:"entitlement"`
}

func (st *State) liveAccount(id string) *accounts.Account {
	if a := st.accounts.Account(id); a != nil && a.DeletedAt == nil {
		return a
	}
	return nil
}

func (st *State) newID(nonce string) (string, error) {
	if !storage.ValidID(nonce) || len(nonce) < 16 {
		return "", cluster.Invalid("malformed_command", "entitlement command without an activation id")
	}
	if st.Entitlements[nonce] != nil {
		return "", cluster.Conflict("conflict", "activation id already in use")
	}
	return nonce, nil
}

func (st *State) put(e *Entitlement) {
	if st.Entitlements == nil {
		st.Entitlements = map[string]*Entitlement{}
	}
	st.Entitlements[e.ID] = e
}

// create records a new entitlement for a root account: a distributor, or a
// reseller that has none above it (two-level setups).
func (st *State) create(at time.Time, p CreateCmd, nonce string) (any, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	a := st.liveAccount(p.Account)
	if a == nil {
		return nil, cluster.NotFound("account %s not found", p.Account)
	}
	if a.Parent != "" {
		return nil, cluster.Invalid("wrong_level", "account %s is not at the top of its chain: the operator creates entitlements for distributors (or resellers without one)", p.Account)
	}
	id, err := st.newID(nonce)
	if err != nil {
		return nil, err
	}
	kind, _ := ProductKind(p.Product)
	e := &Entitlement{ID: id, Product: p.Product, Kind: kind, Quantity: p.Quantity, TermMonths: p.TermMonths,
		Owner: p.Account, CreatedAt: at, History: []Event{{At: at, Action: ActCreated, Actor: p.Actor, Quantity: p.Quantity, Account: p.Account}}}
	st.put(e)
	st.auditEvent(at, e.Owner, p.Actor, "entitlement.received", fmt.Sprintf("entitlement:%s %s x%d", e.ID, e.Product, e.Quantity))
	return Result{Entitlement: cloneEnt(e)}, nil
}

// SplitCmd is the payload of cluster.CmdSplitEntitlement; the nonce is the
// child's activation ID.
type SplitCmd struct {
	ID       string `json:"id"`
	Account  string `json:"account"`
	Quantity int    `json:"quantity"`
	Actor    string `json:"actor"`
}

func (st *State) live(id string) (*Entitlement, error) {
	e := st.Entitlements[id]
	if e == nil {
		return nil, cluster.NotFound("entitlement %s not found", id)
	}
	if e.ReturnedAt != nil {
		return nil, cluster.Conflict("returned", "entitlement %s was taken back by its parent's owner", id)
	}
	return e, nil
}

// split moves quantity units of entitlement p.ID to a new child owned by
// an account directly below its owner. Whether the units are there is
// decided here, in log order: of two concurrent splits that together ask
// for more than is left, the later one is refused.
func (st *State) split(at time.Time, p SplitCmd, nonce string) (any, error) {
	if err := validQuantity(p.Quantity); err != nil {
		return nil, err
	}
	e, err := st.live(p.ID)
	if err != nil {
		return nil, err
	}
	to := st.liveAccount(p.Account)
	if to == nil {
		return nil, cluster.NotFound("account %s not found", p.Account)
	}
	if to.Parent != e.Owner {
		return nil, cluster.Invalid("wrong_level", "account %s is not directly below %s, the entitlement's owner", p.Account, e.Owner)
	}
	if n := e.Available(); p.Quantity > n {
		return nil, cluster.Conflict("insufficient_quantity", "entitlement %s has %d units left, not %d", e.ID, n, p.Quantity)
	}
	id, err := st.newID(nonce)
	if err != nil {
		return nil, err
	}
	c := &Entitlement{ID: id, Product: e.Product, Kind: e.Kind, Quantity: p.Quantity, TermMonths: e.TermMonths,
		Owner: p.Account, Parent: e.ID, CreatedAt: at,
		History: []Event{{At: at, Action: ActReceived, Actor: p.Actor, Quantity: p.Quantity, Account: p.Account, Entitlement: e.ID}}}
	e.Split += p.Quantity
	e.History = append(e.History, Event{At: at, Action: ActSplit, Actor: p.Actor, Quantity: p.Quantity, Account: p.Account, Entitlement: id})
	st.put(c)
	st.auditEvent(at, e.Owner, p.Actor, "entitlement.split", fmt.Sprintf("entitlement:%s x%d to account:%s as entitlement:%s", e.ID, p.Quantity, p.Account, id))
	st.auditEvent(at, c.Owner, p.Actor, "entitlement.received", fmt.Sprintf("entitlement:%s %s x%d from account:%s", id, c.Product, c.Quantity, e.Owner))
	return Result{Entitlement: cloneEnt(c)}, nil
}

// ReturnCmd is the payload of cluster.CmdReturnEntitlement.
type ReturnCmd struct {
	ID    string `json:"id"`
	Actor string `json:"actor"`
}

// subtree returns e and every live entitlement split from it, below it
// too, parents first (ordered by id at each level: deterministic).
func (st *State) subtree(e *Entitlement) []*Entitlement {
	out := []*Entitlement{e}
	for i := 0; i < len(out); i++ {
		var kids []*Entitlement
		for _, h := range out[i].History {
			if h.Action == ActSplit {
				if c := st.Entitlements[h.Entitlement]; c != nil && c.ReturnedAt == nil {
					kids = append(kids, c)
				}
			}
		}
		sort.Slice(kids, func(a, b int) bool { return kids[a].ID < kids[b].ID })
		out = append(out, kids...)
	}
	return out
}

// takeBack returns a split entitlement, and everything split from it, to
// its parent, while none of it is activated.
func (st *State) takeBack(at time.Time, p ReturnCmd) (any, error) {
	e, err := st.live(p.ID)
	if err != nil {
		return nil, err
	}
	if e.Parent == "" {
		return nil, cluster.Invalid("wrong_level", "entitlement %s was created, not split: there is nothing to take it back to", e.ID)
	}
	parent := st.Entitlements[e.Parent]
	if parent == nil || parent.ReturnedAt != nil {
		return nil, cluster.Conflict("returned", "the parent of entitlement %s was taken back", e.ID)
	}
	sub := st.subtree(e)
	for _, x := range sub {
		if x.Activated > 0 {
			return nil, cluster.Conflict("activated", "entitlement %s has %d activated units: a split is taken back only while none of it is activated", x.ID, x.Activated)
		}
	}
	for _, x := range sub {
		t := at
		x.ReturnedAt = &t
		x.History = append(x.History, Event{At: at, Action: ActReturned, Actor: p.Actor, Quantity: x.Quantity})
		st.auditEvent(at, x.Owner, p.Actor, "entitlement.returned", fmt.Sprintf("entitlement:%s x%d", x.ID, x.Quantity))
	}
	parent.Split -= e.Quantity
	parent.History = append(parent.History, Event{At: at, Action: ActTakenBack, Actor: p.Actor, Quantity: e.Quantity, Account: e.Owner, Entitlement: e.ID})
	st.auditEvent(at, parent.Owner, p.Actor, "entitlement.taken_back", fmt.Sprintf("entitlement:%s x%d from account:%s into entitlement:%s", e.ID, e.Quantity, e.Owner, parent.ID))
	return Result{Entitlement: cloneEnt(e)}, nil
}

// ActivateCmd is the payload of cluster.CmdActivateEntitlement.
type ActivateCmd struct {
	ID      string   `json:"id"`
	Streams []string `json:"streams"`
	Actor   string   `json:"actor"`
}

// ActivateResult is the result of an activation.
type ActivateResult struct {
	Entitlement Entitlement `json:"entitlement"`
	Units       []Unit      `json:"units"`
}

// TermEnd is when a unit activated at from stops covering: term months
// later (time.AddDate: a 31st with no such day in the end month runs into
// the next).
func TermEnd(from time.Time, months int) time.Time { return from.UTC().AddDate(0, months, 0) }

// current returns the unit covering subscription product of stream s at
// t, nil if none.
func (st *State) current(s *accounts.Stream, kind, product string, t time.Time) *Unit {
	for _, u := range st.byStream[s.ID] {
		if u.Registered.Equal(s.RegisteredAt) && u.Kind == kind && (kind == KindSKU || u.Product == product) &&
			!t.Before(u.From) && t.Before(u.Until) {
			return u
		}
	}
	return nil
}

// fits checks that entitlement e's unit may go onto stream s now.
func (st *State) fits(e *Entitlement, s *accounts.Stream, at time.Time) error {
	if s == nil || s.DeletedAt != nil {
		return cluster.NotFound("stream not found")
	}
	if s.Account != e.Owner {
		return cluster.Invalid("wrong_account", "stream %s belongs to account %s, not to %s, the entitlement's owner", s.ID, s.Account, e.Owner)
	}
	switch e.Kind {
	case KindSKU:
		if sku := accounts.SKU(s.Settings()); sku != e.Product {
			return cluster.Invalid("product_mismatch", "stream %s is %s, the entitlement is %s", s.ID, sku, e.Product)
		}
	case KindAnalytic:
		if !slices.Contains(s.Analytics, e.Product) {
			return cluster.Invalid("product_mismatch", "stream %s has no analytic %s enabled", s.ID, e.Product)
		}
	}
	if u := st.current(s, e.Kind, e.Product, at); u != nil {
		return cluster.Conflict("already_covered", "stream %s is covered by entitlement %s until %s", s.ID, u.Entitlement, u.Until.Format(time.RFC3339))
	}
	return nil
}

// validStreams checks an activation's stream list, which needs no state
// (the proposer checks it too, so that a hostile list never reaches the log).
func validStreams(streams []string) error {
	switch {
	case len(streams) == 0 || len(streams) > MaxActivate:
		return cluster.Invalid("invalid_streams", "streams lists 1 to %d stream ids", MaxActivate)
	case len(slices.Compact(slices.Sorted(slices.Values(streams)))) != len(streams):
		return cluster.Invalid("duplicate_stream", "a stream is named twice: one unit per stream")
	}
	for _, id := range streams {
		if !storage.ValidID(id) {
			return cluster.Invalid("invalid_id", "invalid stream id %q", id)
		}
	}
	return nil
}

// activate puts one unit of entitlement p.ID onto each stream, all or none.
func (st *State) activate(at time.Time, p ActivateCmd) (any, error) {
	if err := validStreams(p.Streams); err != nil {
		return nil, err
	}
	e, err := st.live(p.ID)
	if err != nil {
		return nil, err
	}
	if st.accounts.Level(e.Owner) != accounts.LevelCustomer {
		return nil, cluster.Invalid("wrong_level", "entitlement %s belongs to %s, which is not an end customer: split it down to the sub-account first", e.ID, e.Owner)
	}
	if n := e.Available(); len(p.Streams) > n {
		return nil, cluster.Conflict("insufficient_quantity", "entitlement %s has %d units left, not %d", e.ID, n, len(p.Streams))
	}
	for _, id := range p.Streams {
		s := st.accounts.StreamState(id)
		if err := st.fits(e, s, at); err != nil {
			if s == nil || s.DeletedAt != nil {
				return nil, cluster.NotFound("stream %s not found", id)
			}
			return nil, err
		}
	}
	res := ActivateResult{Units: make([]Unit, 0, len(p.Streams))}
	for _, id := range p.Streams {
		res.Units = append(res.Units, *st.addUnit(at, e, st.accounts.StreamState(id), p.Actor))
	}
	res.Entitlement = cloneEnt(e)
	return res, nil
}

func (st *State) addUnit(at time.Time, e *Entitlement, s *accounts.Stream, actor string) *Unit {
	u := &Unit{Entitlement: e.ID, Account: e.Owner, Stream: s.ID, Registered: s.RegisteredAt, Product: e.Product, Kind: e.Kind,
		From: at, Until: TermEnd(at, e.TermMonths), Actor: actor}
	st.Units = append(st.Units, u)
	st.byStream[s.ID] = append(st.byStream[s.ID], u)
	st.byEnt[e.ID] = append(st.byEnt[e.ID], u)
	e.Activated++
	e.History = append(e.History, Event{At: at, Action: ActActivated, Actor: actor, Quantity: 1, Stream: s.ID})
	st.auditEvent(at, e.Owner, actor, "entitlement.activated", fmt.Sprintf("entitlement:%s stream:%s until %s", e.ID, s.ID, u.Until.Format(time.RFC3339)))
	return u
}

// ActorAuto is the actor of an automatic activation.
const ActorAuto = "auto"

// onNewStream activates a unit onto a new stream of an account that asks
// for it (auto_activate_entitlements): for its SKU and for each analytic,
// the oldest entitlement of the account with a unit left.
func (st *State) onNewStream(at time.Time, s *accounts.Stream) {
	a := st.accounts.Account(s.Account)
	if a == nil || !a.AutoActivateEntitlements || len(st.Entitlements) == 0 ||
		st.accounts.Level(s.Account) != accounts.LevelCustomer {
		return
	}
	var own []*Entitlement
	for _, e := range st.Entitlements {
		if e.Owner == s.Account && e.Available() > 0 {
			own = append(own, e)
		}
	}
	sort.Slice(own, func(i, j int) bool {
		if !own[i].CreatedAt.Equal(own[j].CreatedAt) {
			return own[i].CreatedAt.Before(own[j].CreatedAt)
		}
		return own[i].ID < own[j].ID
	})
	for _, e := range own {
		if e.Available() > 0 && st.fits(e, s, at) == nil {
			st.addUnit(at, e, s, ActorAuto)
		}
	}
}

func (st *State) auditEvent(at time.Time, account, actor, action, target string) {
	st.accounts.AuditEvent(at, account, actor, action, target)
}

func cloneEnt(e *Entitlement) Entitlement {
	c := *e
	c.History = slices.Clone(e.History)
	if e.ReturnedAt != nil {
		t := *e.ReturnedAt
		c.ReturnedAt = &t
	}
	return c
}

// EachUnit calls f for every activated unit (the caller holds the
// machine's lock and does not modify it): what billing reads.
func (st *State) EachUnit(f func(u *Unit)) {
	for _, u := range st.Units {
		f(u)
	}
}

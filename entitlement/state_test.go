package entitlement_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/access"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/entitlement"
	"github.com/vigilcloud/vigil/internal/machinetest"
)

// tree provisions the four levels: distributor d1 → reseller r1 → end
// customers s1 and s2, and a two-level reseller r0 → c0. s1 has streams
// hd1a, hd1b (HD1-D30, hd1b with people counting) and hd2 (HD2-D30); s2
// has s2a (HD1-D30); c0 has c0a (HD1-D30).
func tree(h *machinetest.Harness) {
	for _, a := range []accounts.NewAccount{
		{ID: "d1", Name: "Distributor", Tier: accounts.TierDistributor},
		{ID: "r1", Name: "Installer", Parent: "d1"},
		{ID: "s1", Name: "Customer 1", Parent: "r1"},
		{ID: "s2", Name: "Customer 2", Parent: "r1"},
		{ID: "r0", Name: "Two-level reseller"},
		{ID: "c0", Name: "Its customer", Parent: "r0"},
	} {
		h.Must(cluster.CmdCreateAccount, "acct-"+a.ID, "", a)
	}
	for _, b := range []string{"s1", "s2", "c0"} {
		h.Must(cluster.CmdCreateBridge, "b-"+b, auth.NewToken(), accounts.CreateBridgeCmd{Account: b, Bridge: accounts.NewBridge{ID: "b-" + b, Name: "B"}})
	}
	hd1 := func(id string, analytics ...string) accounts.NewStream {
		return accounts.NewStream{ID: id, Width: machinetest.IP(1280), Height: machinetest.IP(720), RetentionDays: machinetest.IP(30), Analytics: analytics}
	}
	h.Must(cluster.CmdCreateCamera, "cam-s1", "", accounts.CreateCameraCmd{Bridge: "b-s1", Camera: machinetest.Cam("cam-s1",
		hd1("hd1a"), hd1("hd1b", "people_counting"),
		accounts.NewStream{ID: "hd2", Width: machinetest.IP(1920), Height: machinetest.IP(1080), RetentionDays: machinetest.IP(30)})})
	h.Must(cluster.CmdCreateCamera, "cam-s2", "", accounts.CreateCameraCmd{Bridge: "b-s2", Camera: machinetest.Cam("cam-s2", hd1("s2a"))})
	h.Must(cluster.CmdCreateCamera, "cam-c0", "", accounts.CreateCameraCmd{Bridge: "b-c0", Camera: machinetest.Cam("cam-c0", hd1("c0a"))})
}

// aid is a fixed activation ID for a test (the proposer makes random ones).
func aid(name string) string { return "act-" + name + "-0123456789ab" }

func create(h *machinetest.Harness, name, account, product string, q, term int) (entitlement.Entitlement, error) {
	d, err := h.Apply(cluster.CmdCreateEntitlement, "create-"+name, aid(name),
		entitlement.CreateCmd{Account: account, Product: product, Quantity: q, TermMonths: term, Actor: "operator"})
	var r entitlement.Result
	if err == nil {
		require.NoError(h.T, json.Unmarshal(d, &r))
	}
	return r.Entitlement, err
}

func split(h *machinetest.Harness, name, from, account string, q int) (entitlement.Entitlement, error) {
	d, err := h.Apply(cluster.CmdSplitEntitlement, "split-"+name, aid(name),
		entitlement.SplitCmd{ID: aid(from), Account: account, Quantity: q, Actor: "user:admin"})
	var r entitlement.Result
	if err == nil {
		require.NoError(h.T, json.Unmarshal(d, &r))
	}
	return r.Entitlement, err
}

func activate(h *machinetest.Harness, rid, name string, streams ...string) (entitlement.ActivateResult, error) {
	d, err := h.Apply(cluster.CmdActivateEntitlement, rid, "", entitlement.ActivateCmd{ID: aid(name), Streams: streams, Actor: "user:admin"})
	var r entitlement.ActivateResult
	if err == nil {
		require.NoError(h.T, json.Unmarshal(d, &r))
	}
	return r, err
}

func takeBack(h *machinetest.Harness, rid, name string) error {
	_, err := h.Apply(cluster.CmdReturnEntitlement, rid, "", entitlement.ReturnCmd{ID: aid(name), Actor: "user:admin"})
	return err
}

// code returns the refusal's code ("" for nil).
func code(err error) string {
	var e *cluster.Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err != nil {
		return "not a refusal: " + err.Error()
	}
	return ""
}

func ent(t *testing.T, h *machinetest.Harness, name string) *entitlement.Entitlement {
	t.Helper()
	e := h.M.Entitlements.Entitlements[aid(name)]
	require.NotNil(t, e, name)
	return e
}

// TestSplitDownTheChain: the operator's entitlement for d1 goes to r1, then
// to s1 and s2; each split keeps product and term, records its parent, and
// conserves the quantity; a split can be taken back until a unit of it is
// activated.
func TestSplitDownTheChain(t *testing.T) {
	h := machinetest.New(t)
	tree(h)
	root, err := create(h, "root", "d1", "HD1-D30", 10, 12)
	require.NoError(t, err)
	require.Equal(t, entitlement.KindSKU, root.Kind)

	inst, err := split(h, "inst", "root", "r1", 6)
	require.NoError(t, err)
	require.Equal(t, aid("root"), inst.Parent)
	require.Equal(t, 12, inst.TermMonths)
	require.Equal(t, "HD1-D30", inst.Product)
	c1, err := split(h, "c1", "inst", "s1", 4)
	require.NoError(t, err)
	_, err = split(h, "c2", "inst", "s2", 2)
	require.NoError(t, err)
	require.Equal(t, 4, ent(t, h, "root").Available())
	require.Equal(t, 0, ent(t, h, "inst").Available())
	require.Equal(t, 4, c1.Available())

	// Not enough left, wrong levels, bad quantities, unknown ids.
	for _, tc := range []struct {
		name, from, to string
		q              int
		code           string
	}{
		{"x1", "inst", "s1", 1, "insufficient_quantity"},
		{"x2", "root", "s1", 1, "wrong_level"}, // two levels down
		{"x3", "root", "r0", 1, "wrong_level"}, // another tree
		{"x4", "root", "d1", 1, "wrong_level"}, // itself
		{"x5", "root", "r1", 0, "invalid_quantity"},
		{"x6", "root", "r1", -3, "invalid_quantity"},
		{"x7", "root", "r1", entitlement.MaxQuantity + 1, "invalid_quantity"},
		{"x8", "root", "r1", 5, "insufficient_quantity"},
		{"x9", "nosuch", "r1", 1, "not_found"},
		{"x10", "root", "nosuch", 1, "not_found"},
	} {
		_, err := split(h, tc.name, tc.from, tc.to, tc.q)
		require.Equal(t, tc.code, code(err), tc.name)
	}
	// The operator creates for the top of a chain only, with valid fields.
	for _, tc := range []struct {
		account, product string
		q, term          int
		code             string
	}{
		{"r1", "HD1-D30", 1, 12, "wrong_level"},
		{"s1", "HD1-D30", 1, 12, "wrong_level"},
		{"nosuch", "HD1-D30", 1, 12, "not_found"},
		{"d1", "HD1-D0", 1, 12, "invalid_product"},
		{"d1", "HD7-D30", 1, 12, "invalid_product"},
		{"d1", "HD1-D4000", 1, 12, "invalid_product"},
		{"d1", "people counting", 1, 12, "invalid_product"},
		{"d1", "HD1-D30", 0, 12, "invalid_quantity"},
		{"d1", "HD1-D30", 1, 0, "invalid_term"},
		{"d1", "HD1-D30", 1, 121, "invalid_term"},
	} {
		_, err := create(h, "bad-"+tc.account+tc.product, tc.account, tc.product, tc.q, tc.term)
		require.Equal(t, tc.code, code(err), "%+v", tc)
	}
	// r0 has nobody above it: two-level setups get entitlements too.
	_, err = create(h, "two", "r0", "people_counting", 3, 6)
	require.NoError(t, err)

	// Take back c2 (nothing activated): its units return to inst.
	require.NoError(t, takeBack(h, "tb-c2", "c2"))
	require.Equal(t, 2, ent(t, h, "inst").Available())
	require.NotNil(t, ent(t, h, "c2").ReturnedAt)
	require.Equal(t, "returned", code(takeBack(h, "tb-c2-again", "c2")))
	_, err = split(h, "from-returned", "c2", "s2", 1)
	require.Equal(t, "returned", code(err))
	require.Equal(t, "wrong_level", code(takeBack(h, "tb-root", "root")))

	// Activate one unit of c1: c1 can no longer be taken back, nor inst.
	_, err = activate(h, "act-1", "c1", "hd1a")
	require.NoError(t, err)
	require.Equal(t, "activated", code(takeBack(h, "tb-c1", "c1")))
	require.Equal(t, "activated", code(takeBack(h, "tb-inst", "inst")))

	// Conservation: every entitlement's quantity is its children's, its
	// units and what is left.
	requireConserved(t, h)
	// The receiving accounts' audit logs name every event.
	audit := h.M.Access.Audit
	require.Equal(t, "entitlement.received", audit["d1"][0].Action)
	require.Contains(t, actions(audit["r1"]), "entitlement.split")
	require.Contains(t, actions(audit["s1"]), "entitlement.received")
	require.Contains(t, actions(audit["s1"]), "entitlement.activated")
	require.Contains(t, actions(audit["s2"]), "entitlement.returned")
	require.Contains(t, actions(audit["r1"]), "entitlement.taken_back")
}

func actions(l []access.AuditEntry) []string {
	var out []string
	for _, e := range l {
		out = append(out, e.Action)
	}
	return out
}

func requireConserved(t *testing.T, h *machinetest.Harness) {
	t.Helper()
	conserved(t, h.M.Entitlements)
}

// downToS1 creates "root" (q units of HD1-D30 for term months) for d1,
// splits all of it to r1 ("inst") and c of that to s1 ("c1").
func downToS1(t *testing.T, h *machinetest.Harness, q, term, c int) {
	t.Helper()
	_, err := create(h, "root", "d1", "HD1-D30", q, term)
	require.NoError(t, err)
	_, err = split(h, "inst", "root", "r1", q)
	require.NoError(t, err)
	_, err = split(h, "c1", "inst", "s1", c)
	require.NoError(t, err)
}

// TestActivation: only an end customer activates, onto its own live
// streams whose SKU (or analytic) matches, one unit per stream and
// subscription, all or none; deleting the stream frees nothing.
func TestActivation(t *testing.T) {
	h := machinetest.New(t)
	tree(h)
	downToS1(t, h, 10, 3, 3)
	var err error

	for _, tc := range []struct {
		rid, name string
		streams   []string
		code      string
	}{
		{"a1", "inst", []string{"hd1a"}, "wrong_level"}, // the installer's own
		{"a2", "c1", []string{"hd2"}, "product_mismatch"},
		{"a3", "c1", []string{"s2a"}, "wrong_account"},
		{"a4", "c1", []string{"nosuch"}, "not_found"},
		{"a5", "c1", []string{"hd1a", "hd1a"}, "duplicate_stream"},
		{"a6", "c1", []string{}, "invalid_streams"},
		{"a7", "c1", []string{"bad id"}, "invalid_id"},
		{"a8", "c1", []string{"hd1a", "hd2"}, "product_mismatch"}, // all or none
		{"a9", "nosuch", []string{"hd1a"}, "not_found"},
	} {
		_, err := activate(h, tc.rid, tc.name, tc.streams...)
		require.Equal(t, tc.code, code(err), tc.rid)
	}
	require.Equal(t, 3, ent(t, h, "c1").Available(), "refused activations take nothing")

	at := h.Clock.Add(time.Minute)
	r, err := activate(h, "ok", "c1", "hd1a", "hd1b")
	require.NoError(t, err)
	require.Len(t, r.Units, 2)
	require.Equal(t, at, r.Units[0].From)
	require.Equal(t, at.AddDate(0, 3, 0), r.Units[0].Until)
	// The same request again is its retry: nothing more is taken.
	r2, err := activate(h, "ok", "c1", "hd1a", "hd1b")
	require.NoError(t, err)
	require.Equal(t, r, r2)
	require.Equal(t, 1, ent(t, h, "c1").Available())
	// Another request for a covered stream is refused.
	_, err = activate(h, "again", "c1", "hd1a")
	require.Equal(t, "already_covered", code(err))

	// An analytic's entitlement covers the analytic, next to the SKU's unit.
	_, err = create(h, "pc", "d1", "people_counting", 2, 12)
	require.NoError(t, err)
	_, err = split(h, "pc-r", "pc", "r1", 2)
	require.NoError(t, err)
	_, err = split(h, "pc-s", "pc-r", "s1", 2)
	require.NoError(t, err)
	_, err = activate(h, "pc-a", "pc-s", "hd1a")
	require.Equal(t, "product_mismatch", code(err), "hd1a has no people counting")
	_, err = activate(h, "pc-b", "pc-s", "hd1b")
	require.NoError(t, err)

	// Deleting the stream frees nothing: the unit is consumed.
	h.Must(cluster.CmdDeleteStream, "del-hd1a", "purge-hd1a", accounts.DeleteStreamCmd{ID: "hd1a"})
	require.Equal(t, 1, ent(t, h, "c1").Available())
	require.Equal(t, 2, ent(t, h, "c1").Activated)
	_, err = activate(h, "deleted", "c1", "hd1a")
	require.Equal(t, "not_found", code(err))
	_, err = activate(h, "insufficient", "c1", "hd2", "hd1b")
	require.Contains(t, []string{"insufficient_quantity", "product_mismatch"}, code(err))
	requireConserved(t, h)
}

// TestAutoActivation: an end customer that asks for it has its new streams
// activated from its oldest matching entitlement with a unit left.
func TestAutoActivation(t *testing.T) {
	h := machinetest.New(t)
	tree(h)
	downToS1(t, h, 5, 12, 1)
	on := true
	h.Must(cluster.CmdUpdateAccount, "auto-s1", "", accounts.UpdateAccountCmd{ID: "s1", Patch: accounts.AccountPatch{AutoActivateEntitlements: &on}})

	cam := func(id string, w, ht int) {
		h.Must(cluster.CmdCreateCamera, "cam-"+id, "", accounts.CreateCameraCmd{Bridge: "b-s1", Camera: machinetest.Cam("cam-"+id,
			accounts.NewStream{ID: id, Width: machinetest.IP(w), Height: machinetest.IP(ht), RetentionDays: machinetest.IP(30)})})
	}
	cam("new1", 1280, 720)  // takes c1's only unit
	cam("new2", 1280, 720)  // none left
	cam("new3", 1920, 1080) // HD2: no match
	units := h.M.Entitlements.Units
	require.Len(t, units, 1)
	require.Equal(t, "new1", units[0].Stream)
	require.Equal(t, entitlement.ActorAuto, units[0].Actor)
	require.Equal(t, 0, ent(t, h, "c1").Available())
	// A reseller's own streams are never activated automatically.
	requireConserved(t, h)
}

// TestSnapshotRestore: a replica that restores a snapshot holds exactly
// what one that applied the log holds, and goes on deciding the same.
func TestSnapshotRestore(t *testing.T) {
	h := machinetest.New(t)
	tree(h)
	downToS1(t, h, 5, 12, 2)
	var err error
	_, err = activate(h, "a", "c1", "hd1a")
	require.NoError(t, err)

	m, err := machinetest.Restored(t, machinetest.Persist(t, h.M))
	require.NoError(t, err)
	require.Equal(t, string(h.State()), string(machinetest.StateOf(t, m)))
	h2 := &machinetest.Harness{T: t, M: m, Index: h.Index, Clock: h.Clock}
	_, err = activate(h2, "b", "c1", "hd1a")
	require.Equal(t, "already_covered", code(err), "the restored replica knows the unit")
	_, err = activate(h2, "c", "c1", "hd1b")
	require.NoError(t, err)
	requireConserved(t, h2)
}

// TestTwoLevelUnchanged: without distributors the tree is what it was:
// a sub-account of a sub-account is refused, and a reseller is not
// deleted like a sub-account.
func TestTwoLevelUnchanged(t *testing.T) {
	h := machinetest.New(t)
	tree(h)
	_, err := h.Apply(cluster.CmdCreateAccount, "deep", "", accounts.NewAccount{ID: "deep", Name: "X", Parent: "c0"})
	require.Equal(t, "invalid_parent", code(err))
	_, err = h.Apply(cluster.CmdCreateAccount, "deeper", "", accounts.NewAccount{ID: "deeper", Name: "X", Parent: "s1"})
	require.Equal(t, "invalid_parent", code(err), "below an end customer under a distributor too")
	_, err = h.Apply(cluster.CmdCreateAccount, "dd", "", accounts.NewAccount{ID: "dd", Name: "X", Parent: "d1", Tier: accounts.TierDistributor})
	require.Equal(t, "invalid_tier", code(err))
	_, err = h.Apply(cluster.CmdCreateAccount, "tt", "", accounts.NewAccount{ID: "tt", Name: "X", Tier: "vendor"})
	require.Equal(t, "invalid_tier", code(err))
	_, err = h.Apply(cluster.CmdDeleteAccount, "del-r1", "n1", accounts.DeleteAccountCmd{ID: "r1"})
	require.Equal(t, "not_sub_account", code(err), "a reseller below a distributor is not deleted like a sub-account")
	_, err = h.Apply(cluster.CmdDeleteAccount, "del-c0", "n2", accounts.DeleteAccountCmd{ID: "c0"})
	require.NoError(t, err)

	st := h.M.Accounts
	require.Equal(t, accounts.LevelDistributor, st.Level("d1"))
	require.Equal(t, accounts.LevelReseller, st.Level("r1"))
	require.Equal(t, accounts.LevelCustomer, st.Level("s1"))
	require.Equal(t, accounts.LevelReseller, st.Level("r0"))
	require.Equal(t, accounts.LevelCustomer, st.Level("c0"))
	require.Equal(t, []string{"d1", "r1"}, st.Chain("s1"))
	require.True(t, st.Reaches("d1", "s1"))
	require.True(t, st.Reaches("r1", "s2"))
	require.False(t, st.Reaches("s1", "r1"))
	require.False(t, st.Reaches("r0", "s1"))
}

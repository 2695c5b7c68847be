package entitlement_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/internal/mailpittest"
	"github.com/vigilcloud/vigil/mail"
)

var activationIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{22}$`)

func ids(r res) []string {
	var out []string
	list, _ := r.body["entitlements"].([]any)
	for _, e := range list {
		out = append(out, e.(map[string]any)["id"].(string))
	}
	slices.Sort(out)
	return out
}

// TestHTTP drives the endpoints as every level of the tree: who may create,
// split, take back, activate and read, and the answers to bad input.
func TestHTTP(t *testing.T) {
	nd := startNodes(t, 1, nil)[0]
	nd.provision(2)
	tok := map[string]string{}
	for _, u := range []struct{ name, account, role string }{
		{"d1", "d1", "admin"}, {"r1", "r1", "admin"}, {"r1user", "r1", "user"}, {"r2", "r2", "admin"},
		{"s1", "s1", "admin"}, {"s1user", "s1", "user"}, {"s2", "s2", "admin"},
	} {
		tok[u.name] = nd.user(u.account, u.name+"@example.com", u.role)
	}
	create := map[string]any{"account": "d1", "product": "HD1-D30", "quantity": 10, "term_months": 12}

	// Only the operator creates; the answer is the entitlement with its
	// unguessable activation ID; the same request again is its retry.
	require.Equal(t, 403, nd.call(tok["d1"], "POST", "/v1/entitlements", create).status)
	require.Equal(t, 401, nd.call("", "POST", "/v1/entitlements", create).status)
	r := nd.op(201, "POST", "/v1/entitlements", create)
	root := r.body["id"].(string)
	require.Regexp(t, activationIDRE, root)
	require.Equal(t, float64(10), r.body["available"])
	require.Equal(t, root, nd.op(200, "POST", "/v1/entitlements", create).body["id"], "a retry creates nothing")
	r = nd.call(opToken, "POST", "/v1/entitlements", map[string]any{"account": "d1", "product": "HD1-D30", "quantity": 1, "term_months": 12}, "Idempotency-Key", "k1")
	require.Equal(t, 201, r.status, r.raw)
	small := r.body["id"].(string)
	r = nd.call(opToken, "POST", "/v1/entitlements", map[string]any{"account": "d1", "product": "HD1-D30", "quantity": 2, "term_months": 12}, "Idempotency-Key", "k1")
	require.Equal(t, 409, r.status, r.raw)
	require.Equal(t, "idempotency_key_reused", r.code())

	// Bad input: malformed, truncated, oversized, unknown fields, bad values.
	for _, tc := range []struct {
		body   string
		status int
		code   string
	}{
		{`{`, 400, "malformed_json"},
		{`{"account":"d1","product":"HD1`, 400, "malformed_json"},
		{`{"account":"d1","product":"HD1-D30","quantity":1,"term_months":12,"extra":1}`, 400, "malformed_json"},
		{`{"account":"d1","product":"HD1-D30","quantity":1,"term_months":12} {}`, 400, "malformed_json"},
		{`{"account":"d1","product":"HD1-D30","quantity":"1","term_months":12}`, 400, "malformed_json"},
		{`{"account":"d1","product":"HD1-D30","quantity":0,"term_months":12}`, 400, "invalid_quantity"},
		{`{"account":"d1","product":"HD1-D30","quantity":-5,"term_months":12}`, 400, "invalid_quantity"},
		{`{"account":"d1","product":"HD1-D30","quantity":1000001,"term_months":12}`, 400, "invalid_quantity"},
		{`{"account":"d1","product":"HD1-D30","quantity":99999999999999999999,"term_months":12}`, 400, "malformed_json"},
		{`{"account":"d1","product":"HD1-D30","quantity":1,"term_months":0}`, 400, "invalid_term"},
		{`{"account":"d1","product":"HD9-D30","quantity":1,"term_months":1}`, 400, "invalid_product"},
		{`{"account":"d 1","product":"HD1-D30","quantity":1,"term_months":1}`, 400, "invalid_id"},
		{`{"account":"nosuch","product":"HD1-D30","quantity":1,"term_months":1}`, 404, "not_found"},
		{`{"account":"r1","product":"HD1-D30","quantity":1,"term_months":1}`, 400, "wrong_level"},
		{`{"account":"d1","product":"HD1-D30","quantity":1,"term_months":1,"x":"` + strings.Repeat("a", 2<<20) + `"}`, 413, "body_too_large"},
	} {
		r := nd.call(opToken, "POST", "/v1/entitlements", tc.body)
		require.Equal(t, tc.status, r.status, "%.80s: %s", tc.body, r.raw)
		require.Equal(t, tc.code, r.code(), "%.80s", tc.body)
	}

	// The distributor splits to its installer; the installer on to its
	// customer. Plain users only look.
	split := func(who, id, account string, q int) res {
		return nd.call(tok[who], "POST", "/v1/entitlements/"+id+"/split", map[string]any{"account": account, "quantity": q})
	}
	for _, who := range []string{"r1", "r1user", "s1", "s1user", "r2"} {
		require.Equal(t, 403, split(who, root, "r1", 1).status, who)
	}
	r = split("d1", root, "r1", 6)
	require.Equal(t, 201, r.status, r.raw)
	inst := r.body["id"].(string)
	require.NotEqual(t, root, inst, "a split has its own activation ID")
	require.Equal(t, root, r.body["parent"])
	require.Equal(t, float64(12), r.body["term_months"])
	for _, tc := range []struct {
		who, id, account string
		q, status        int
		code             string
	}{
		{"d1", root, "s1", 1, 400, "wrong_level"},
		{"d1", root, "r1", 0, 400, "invalid_quantity"},
		{"d1", root, "r1", -1, 400, "invalid_quantity"},
		{"d1", root, "r1", 5, 409, "insufficient_quantity"},
		{"d1", root, "nosuch", 1, 404, "not_found"},
		{"d1", root, "bad id!", 1, 400, "invalid_id"},
		{"d1", "nosuchentitlement", "r1", 1, 404, "not_found"},
		{"r1user", inst, "s1", 1, 403, "forbidden"},
		{"s1", inst, "s1", 1, 403, "forbidden"},
		{"r2", inst, "s1", 1, 403, "forbidden"},
	} {
		r := split(tc.who, tc.id, tc.account, tc.q)
		require.Equal(t, tc.status, r.status, "%+v: %s", tc, r.raw)
		require.Equal(t, tc.code, r.code(), "%+v", tc)
	}
	r = nd.call(tok["d1"], "POST", "/v1/entitlements/bad!id/split", `{"account":"r1","quantity":1}`)
	require.Equal(t, 400, r.status)
	r = split("r1", inst, "s1", 3)
	require.Equal(t, 201, r.status, r.raw)
	cust := r.body["id"].(string)
	r = split("d1", inst, "s2", 1) // an account's admins reach everything below it
	require.Equal(t, 201, r.status, r.raw)
	other := r.body["id"].(string)

	// Each account's view: its own and what is below it.
	view := func(who string) []string { return ids(nd.call(tok[who], "GET", "/v1/entitlements", nil)) }
	sorted := func(s ...string) []string { slices.Sort(s); return s }
	require.Equal(t, sorted(root, small, inst, cust, other), view("d1"))
	require.Equal(t, sorted(root, small), ids(nd.op(200, "GET", "/v1/entitlements?account=d1", nil)))
	require.Equal(t, sorted(inst, cust, other), view("r1"))
	require.Equal(t, sorted(inst, cust, other), view("r1user"))
	require.Equal(t, []string{cust}, view("s1"))
	require.Equal(t, []string{cust}, view("s1user"))
	require.Equal(t, []string{other}, view("s2"))
	require.Empty(t, view("r2"))
	require.Equal(t, 200, nd.call(tok["s1user"], "GET", "/v1/entitlements/"+cust, nil).status)
	require.Equal(t, 403, nd.call(tok["s1user"], "GET", "/v1/entitlements/"+inst, nil).status)
	require.Equal(t, 403, nd.call(tok["s2"], "GET", "/v1/entitlements?account=s1", nil).status)
	require.Equal(t, 404, nd.call(tok["s1"], "GET", "/v1/entitlements/nosuchentitlement", nil).status)
	r = nd.call(tok["r1"], "GET", "/v1/entitlements?limit=1", nil)
	require.Len(t, ids(r), 1)
	next := r.body["next_cursor"].(string)
	require.Len(t, ids(nd.call(tok["r1"], "GET", "/v1/entitlements?limit=2&cursor="+next, nil)), 2)
	require.Equal(t, "invalid_limit", nd.call(tok["r1"], "GET", "/v1/entitlements?limit=0", nil).code())
	require.Equal(t, "invalid_cursor", nd.call(tok["r1"], "GET", "/v1/entitlements?cursor=!!", nil).code())
	// The history says where it came from.
	hist := nd.op(200, "GET", "/v1/entitlements/"+inst, nil).body["history"].([]any)
	require.Equal(t, "received", hist[0].(map[string]any)["action"])
	require.Equal(t, "split", hist[1].(map[string]any)["action"])

	// Activation: the customer's admin, or its installer's; not plain
	// users, not a sibling, not before the entitlement is split down.
	act := func(who, id string, streams ...string) res {
		return nd.call(tok[who], "POST", "/v1/entitlements/"+id+"/activate", map[string]any{"streams": streams})
	}
	for _, who := range []string{"s1user", "r1user", "s2", "r2"} {
		require.Equal(t, 403, act(who, cust, "s1-0").status, who)
	}
	for _, tc := range []struct {
		id      string
		streams []string
		status  int
		code    string
	}{
		{cust, []string{"s2-0"}, 400, "wrong_account"},
		{cust, []string{"s1-0", "s1-0"}, 400, "duplicate_stream"},
		{cust, []string{}, 400, "invalid_streams"},
		{cust, []string{"nosuch"}, 404, "not_found"},
	} {
		r := act("s1", tc.id, tc.streams...)
		require.Equal(t, tc.status, r.status, "%+v: %s", tc, r.raw)
		require.Equal(t, tc.code, r.code(), "%+v", tc)
	}
	r = act("r1", inst, "s1-0") // out of order: not split down to the customer yet
	require.Equal(t, 400, r.status, r.raw)
	require.Equal(t, "wrong_level", r.code())
	require.Equal(t, 403, act("s1", inst, "s1-0").status, "the installer's entitlement is outside the customer's scope")
	r = act("s1", cust, "s1-0")
	require.Equal(t, 200, r.status, r.raw)
	require.Equal(t, 200, act("s1", cust, "s1-0").status, "the same request again is its retry")
	r = nd.call(tok["r1"], "POST", "/v1/entitlements/"+cust+"/activate", map[string]any{"streams": []string{"s1-0"}}, "Idempotency-Key", "another")
	require.Equal(t, 409, r.status, r.raw)
	require.Equal(t, "already_covered", r.code())
	require.Equal(t, 200, nd.call(tok["r1"], "POST", "/v1/entitlements/"+cust+"/activate", map[string]any{"streams": []string{"s1-1"}}).status)
	e := nd.op(200, "GET", "/v1/entitlements/"+cust, nil).body
	require.Equal(t, float64(1), e["available"])
	require.Len(t, e["units"], 2)

	// Taking back: by the splitter, while none of it is activated.
	back := func(who, id string) res { return nd.call(tok[who], "POST", "/v1/entitlements/"+id+"/return", nil) }
	require.Equal(t, 403, back("s2", other).status, "the receiver does not take it back")
	require.Equal(t, 403, back("r1user", other).status)
	r = back("r1", cust)
	require.Equal(t, 409, r.status)
	require.Equal(t, "activated", r.code())
	r = back("r1", other)
	require.Equal(t, 200, r.status, r.raw)
	require.NotNil(t, r.body["returned_at"])
	require.Equal(t, float64(3), nd.op(200, "GET", "/v1/entitlements/"+inst, nil).body["available"])
	require.Equal(t, 403, back("d1", root).status, "a created entitlement has nothing to go back to")
	require.Equal(t, "wrong_level", nd.call(opToken, "POST", "/v1/entitlements/"+root+"/return", nil).code())

	// The audit logs hold every event, with who did it.
	audit := func(account string) string { return nd.op(200, "GET", "/v1/accounts/"+account+"/audit", nil).raw }
	require.Contains(t, audit("d1"), "entitlement.received")
	require.Contains(t, audit("d1"), "entitlement.split")
	require.Contains(t, audit("r1"), "entitlement.received")
	require.Contains(t, audit("r1"), "entitlement.taken_back")
	require.Contains(t, audit("s1"), "entitlement.activated")
	require.Contains(t, audit("s2"), "entitlement.returned")
}

// TestNoticesByMail: receiving an entitlement and activating one e-mail
// the receiving account's admins (not its plain users) through the
// invitations' mail path, here to a real SMTP server (mailpit).
func TestNoticesByMail(t *testing.T) {
	mp := mailpittest.Start(t, mailpittest.Options{})
	s, err := mail.New(mail.Config{Host: mp.Host, Port: mp.Port, From: "vigil@example.com", TLS: "none", Timeout: 5 * time.Second})
	require.NoError(t, err)
	nd := startNodes(t, 1, mail.Invitations{Sender: s, BaseURL: "http://vigil.example"})[0]
	nd.provision(1)
	nd.user("d1", "dist-admin@example.com", "admin")
	nd.user("d1", "dist-user@example.com", "user")
	nd.user("r1", "inst-admin@example.com", "admin")
	nd.user("s1", "cust-admin@example.com", "admin")

	root := nd.op(201, "POST", "/v1/entitlements", map[string]any{"account": "d1", "product": "HD1-D30", "quantity": 3, "term_months": 12}).body["id"].(string)
	m := mp.WaitMessage(t, "dist-admin@example.com")
	require.Contains(t, m.Subject, root)
	require.Contains(t, m.Text, "Quantity: 3")
	inst := nd.op(201, "POST", "/v1/entitlements/"+root+"/split", map[string]any{"account": "r1", "quantity": 2}).body["id"].(string)
	m = mp.WaitMessage(t, "inst-admin@example.com")
	require.Contains(t, m.Text, "Activation ID: "+inst)
	require.Contains(t, m.Text, "split to your account from entitlement "+root)
	cust := nd.op(201, "POST", "/v1/entitlements/"+inst+"/split", map[string]any{"account": "s1", "quantity": 1}).body["id"].(string)
	mp.WaitMessage(t, "cust-admin@example.com")
	nd.op(200, "POST", "/v1/entitlements/"+cust+"/activate", map[string]any{"streams": []string{"s1-0"}})
	require.Eventually(t, func() bool {
		for _, msg := range mp.Messages(t) {
			if strings.Contains(msg.Subject, "activated") && msg.To[0].Address == "cust-admin@example.com" {
				return strings.Contains(mp.Message(t, msg.ID).Text, "s1-0")
			}
		}
		return false
	}, 10*time.Second, 50*time.Millisecond)
	for _, msg := range mp.Messages(t) {
		require.NotEqual(t, "dist-user@example.com", msg.To[0].Address, "plain users get no notices")
	}
}

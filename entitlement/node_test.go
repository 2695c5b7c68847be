package entitlement_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/access"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/entitlement"
	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/mail"
	"github.com/vigilcloud/vigil/replica"
)

// A node of the tests: a real raft member (replica.Open) with a real HTTP
// server that serves what a vigil node serves for entitlements: accounts,
// access, entitlements and the cluster's own endpoints (joins, forwarded
// writes), behind the operator/user authentication.

const opToken = "operator-token-for-entitlement-tests-0123456789"

type node struct {
	t   *testing.T
	id  string
	rep *replica.Replica
	srv *httptest.Server
	h   atomic.Value // http.Handler
}

// startNodes starts n voters, the others joining through the first; mailer
// (may be nil) sends the entitlement notices.
func startNodes(t *testing.T, n int, mailer entitlement.Mailer) []*node {
	t.Helper()
	testutil.SkipIfShort(t, "real raft members with HTTP servers")
	var nodes []*node
	for i := 1; i <= n; i++ {
		nd := &node{t: t, id: fmt.Sprintf("n%d", i)}
		nd.h.Store(http.NotFoundHandler())
		nd.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { nd.h.Load().(http.Handler).ServeHTTP(w, r) }))
		t.Cleanup(nd.srv.Close)
		join := ""
		if i > 1 {
			join = strings.TrimPrefix(nodes[0].srv.URL, "http://")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		rep, err := replica.Open(ctx, cluster.PeerConfig{Dir: t.TempDir(), NodeID: nd.id, RaftAddr: testutil.FreePort(t),
			HeartbeatTimeout: 150 * time.Millisecond, Join: join, Suffrage: cluster.SuffrageVoter,
			HTTPAddr: strings.TrimPrefix(nd.srv.URL, "http://"), ClusterToken: opToken})
		cancel()
		require.NoError(t, err)
		t.Cleanup(func() { nd.h.Store(http.NotFoundHandler()); _ = rep.Close() })
		nd.rep = rep
		var m entitlement.Mailer
		if mailer != nil {
			m = mailer
		}
		rep.Entitlements = entitlement.New(rep.Machine.Entitlements, rep.Peer, entitlement.Config{Scope: rep.Accounts, Users: rep.Access, Mail: m,
			Follower: func() bool { return !rep.Node().IsLeader() }})
		mux := http.NewServeMux()
		mount := func(h http.Handler, patterns []string) {
			for _, p := range patterns {
				mux.Handle(p, h)
			}
		}
		mount(rep.ClusterHandler(), cluster.ClusterPatterns())
		mount(rep.Accounts.Handler(), accounts.HandlerPatterns())
		mount(rep.Accounts.ConsoleHandler(), accounts.ConsolePatterns())
		mount(rep.Access.Handler(), access.Patterns())
		mount(rep.Entitlements.Handler(), entitlement.Patterns())
		a := auth.New(opToken, rep.Accounts)
		a.WithUsers(rep.Access)
		nd.h.Store(a.Middleware(mux, access.Anonymous))
		nodes = append(nodes, nd)
	}
	return nodes
}

// invitations is mail.Invitations as entitlement.Mailer (a compile check).
var _ entitlement.Mailer = mail.Invitations{}

// res is an answer: status and JSON body.
type res struct {
	status int
	body   map[string]any
	raw    string
}

func (r res) code() string { s, _ := r.body["code"].(string); return s }

// call sends body (a string, or anything JSON-encoded) with token and
// header pairs.
func (nd *node) call(token, method, path string, body any, hdr ...string) res {
	nd.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		require.NoError(nd.t, err)
		rd = strings.NewReader(string(js))
	}
	req, err := http.NewRequest(method, nd.srv.URL+path, rd)
	require.NoError(nd.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(nd.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(nd.t, err)
	out := res{status: resp.StatusCode, raw: string(b)}
	_ = json.Unmarshal(b, &out.body)
	return out
}

// op calls as the operator and requires status want.
func (nd *node) op(want int, method, path string, body any) res {
	nd.t.Helper()
	r := nd.call(opToken, method, path, body)
	require.Equal(nd.t, want, r.status, "%s %s: %s", method, path, r.raw)
	return r
}

// user creates a user of account with role, accepts the invitation and
// logs in; it returns the session token.
func (nd *node) user(account, email, role string) string {
	nd.t.Helper()
	r := nd.op(201, "POST", "/v1/accounts/"+account+"/users", map[string]any{"email": email, "role": role})
	inv, _ := r.body["invitation"].(map[string]any)
	tok, _ := inv["token"].(string)
	if tok == "" { // mailed: the test reads it from the mail instead
		return ""
	}
	r = nd.call("", "POST", "/v1/invitations/"+tok+"/accept", map[string]any{"password": "a long enough password"})
	require.Equal(nd.t, 200, r.status, r.raw)
	return nd.login(email)
}

func (nd *node) login(email string) string {
	nd.t.Helper()
	var r res
	// Read-your-writes: the acceptance may not be applied on this node yet.
	require.Eventually(nd.t, func() bool {
		r = nd.call("", "POST", "/v1/sessions", map[string]any{"email": email, "password": "a long enough password"})
		return r.status == 201
	}, 20*time.Second, 50*time.Millisecond, "login %s", email)
	return r.body["token"].(string)
}

// provision creates the four-level tree of tree() through the API: d1 →
// r1 → s1, s2 (and r2 → s3 under d1), r0 → c0, with streams streams per
// end customer (HD1-D30), named <account>-<i>.
func (nd *node) provision(streams int) {
	nd.t.Helper()
	for _, a := range []map[string]any{
		{"id": "d1", "name": "D", "tier": "distributor"},
		{"id": "r1", "name": "R1", "parent": "d1"}, {"id": "r2", "name": "R2", "parent": "d1"},
		{"id": "s1", "name": "S1", "parent": "r1"}, {"id": "s2", "name": "S2", "parent": "r1"},
		{"id": "s3", "name": "S3", "parent": "r2"},
		{"id": "r0", "name": "R0"}, {"id": "c0", "name": "C0", "parent": "r0"},
	} {
		nd.op(201, "POST", "/v1/accounts", a)
	}
	for _, acct := range []string{"s1", "s2", "s3", "c0"} {
		nd.op(201, "POST", "/v1/accounts/"+acct+"/bridges", map[string]any{"id": "b-" + acct, "name": "B"})
		var ss []map[string]any
		for i := range streams {
			ss = append(ss, map[string]any{"id": fmt.Sprintf("%s-%d", acct, i), "width": 1280, "height": 720, "retention_days": 30})
		}
		nd.op(201, "POST", "/v1/bridges/b-"+acct+"/cameras", map[string]any{"id": "cam-" + acct, "name": "C", "streams": ss})
	}
}

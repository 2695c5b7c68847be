package accounts_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/access"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/replica"
	"golang.org/x/sync/errgroup"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/testutil"
)

// In-process multi-node clusters: real raft nodes on loopback TCP, each
// with a real HTTP server, so joins and forwards take the production path.

type tnode struct {
	t        *testing.T
	id       string
	dir      string
	raftAddr string
	adv      string // advertised raft address ("" = raftAddr)
	suffrage string
	client   *http.Client
	h        atomic.Value // http.Handler
	srv      *httptest.Server
	m        *replica.Replica
	c        *client
}

func newTNode(t *testing.T, id string) *tnode {
	n := &tnode{t: t, id: id, dir: t.TempDir(), raftAddr: testutil.FreePort(t), suffrage: cluster.SuffrageVoter}
	n.h.Store(down)
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.h.Load().(http.Handler).ServeHTTP(w, r)
	}))
	t.Cleanup(n.srv.Close)
	n.c = &client{t: t, url: n.srv.URL}
	return n
}

// down answers for a node whose meter is not running, as a stopping server
// would.
var down http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	http.Error(w, "node down", http.StatusServiceUnavailable)
})

func (n *tnode) httpAddr() string { return strings.TrimPrefix(n.srv.URL, "http://") }

// open starts (or restarts) the node; join is another node's HTTP address.
func (n *tnode) open(ctx context.Context, join string) error {
	m, err := replica.Open(ctx, cluster.PeerConfig{
		Dir: n.dir, NodeID: n.id, RaftAddr: n.raftAddr, RaftAdvertise: n.adv, HeartbeatTimeout: 150 * time.Millisecond,
		Join: join, Suffrage: n.suffrage, HTTPAddr: n.httpAddr(), ClusterToken: adminToken, Client: n.client,
	})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	for _, p := range accounts.HandlerPatterns() {
		mux.Handle(p, m.Accounts.Handler())
	}
	for _, p := range cluster.ClusterPatterns() {
		mux.Handle(p, m.ClusterHandler())
	}
	n.h.Store(auth.New(adminToken, m.Accounts).Middleware(mux, nil))
	n.m = m
	return nil
}

func (n *tnode) mustOpen(join string) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	require.NoError(n.t, n.open(ctx, join))
}

func (n *tnode) close() {
	if n.m != nil {
		n.h.Store(down)
		require.NoError(n.t, n.m.Close())
		n.m = nil
	}
}

// startCluster starts voters n1..nN, the others joining through n1.
func startCluster(t *testing.T, voters int) []*tnode {
	testutil.SkipIfShort(t, "a multi-node raft cluster")
	var nodes []*tnode
	for i := 1; i <= voters; i++ {
		n := newTNode(t, fmt.Sprintf("n%d", i))
		join := ""
		if i > 1 {
			join = nodes[0].httpAddr()
		}
		n.mustOpen(join)
		t.Cleanup(n.close)
		nodes = append(nodes, n)
	}
	return nodes
}

func leaderOf(t *testing.T, nodes []*tnode) *tnode {
	t.Helper()
	var l *tnode
	require.Eventually(t, func() bool {
		for _, n := range nodes {
			if n.m != nil && n.m.Node().IsLeader() {
				l = n
				return true
			}
		}
		return false
	}, 20*time.Second, 10*time.Millisecond)
	return l
}

// converged waits until every running node has the same state digest and
// returns it.
func converged(t *testing.T, nodes ...*tnode) string {
	t.Helper()
	var d string
	require.Eventually(t, func() bool {
		d = ""
		for _, n := range nodes {
			got, err := n.m.StateDigest()
			require.NoError(t, err)
			if d != "" && got != d {
				return false
			}
			d = got
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "nodes did not converge")
	return d
}

func addCamera(t *testing.T, c *client, id string) {
	t.Helper()
	r := c.op("POST", "/v1/bridges/b1/cameras", fmt.Sprintf(`{"id":%q,"name":"Cam","streams":[{"id":"%s-s"}]}`, id, id))
	require.Contains(t, []int{200, 201}, r.status, r.body)
}

func TestClusterJoinForwardStatusAndIngestReplica(t *testing.T) {
	nodes := startCluster(t, 3)
	ing := newTNode(t, "i1")
	ing.suffrage = cluster.SuffrageNonvoter
	ing.mustOpen(nodes[2].httpAddr()) // join via a follower: forwarded to the leader
	t.Cleanup(ing.close)
	all := append(nodes, ing)

	// Writes through every node, the non-voter included, reach the leader.
	tok := provision(t, ing.c)
	for i, n := range all {
		addCamera(t, n.c, fmt.Sprintf("cam%d", i))
	}
	converged(t, all...)

	// On a loaded machine a follower may briefly know no leader (or an
	// election may move it): look until its view agrees with the cluster's.
	var (
		leader, follower *tnode
		r                resp
	)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		leader = leaderOf(t, nodes)
		for _, n := range nodes {
			if n != leader {
				follower = n
			}
		}
		r = follower.c.op("GET", "/v1/cluster", "")
		if l, _ := r.body["leader"].(map[string]any); l != nil && l["id"] == leader.id || time.Now().After(deadline) {
			break
		}
	}
	require.Equal(t, 200, r.status)
	require.Equal(t, follower.id, r.body["node_id"])
	require.Equal(t, "follower", r.body["role"])
	require.Equal(t, leader.id, r.body["leader"].(map[string]any)["id"])
	require.Equal(t, leader.m.Node().Addr(), r.body["leader"].(map[string]any)["address"])
	require.NotZero(t, r.body["applied_index"])
	members := map[string]string{}
	for _, m := range r.body["members"].([]any) {
		mm := m.(map[string]any)
		members[mm["id"].(string)] = mm["suffrage"].(string)
	}
	require.Equal(t, map[string]string{"n1": "voter", "n2": "voter", "n3": "voter", "i1": "nonvoter"}, members)
	require.Equal(t, 403, ing.c.do("GET", "/v1/cluster", tok, "").status, "a bridge token is not an operator")

	// A deletion through a voter reaches the ingest replica within 2 s.
	r = follower.c.op("DELETE", "/v1/cameras/c1", "")
	require.Equal(t, 202, r.status, r.body)
	require.Eventually(t, func() bool {
		_, err := ing.m.Accounts.Stream(context.Background(), "c1-main")
		return errors.Is(err, accounts.ErrNotFound)
	}, 2*time.Second, 5*time.Millisecond, "deletion did not reach the ingest node within 2 s")

	// The ingest node survives the loss of a meter node, the leader even:
	// reads are local, writes wait for the new leader and get through.
	leader.close()
	id, err := ing.m.Accounts.BridgeByTokenHash(context.Background(), auth.HashToken(tok))
	require.NoError(t, err)
	require.Equal(t, "b1", id)
	addCamera(t, ing.c, "after-leader-loss")
	var rest []*tnode
	for _, n := range all {
		if n.m != nil {
			rest = append(rest, n)
		}
	}
	converged(t, rest...)
	_, err = ing.m.Accounts.Stream(context.Background(), "after-leader-loss-s")
	require.NoError(t, err)
}

// lossyTransport performs requests but loses the first answer of every
// internal apply: the leader committed, the sender saw an error.
type lossyTransport struct {
	base http.RoundTripper
	lost atomic.Int64
}

func (l *lossyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.base.RoundTrip(r)
	if err == nil && r.URL.Path == "/v1/internal/apply" && l.lost.Add(1)%2 == 1 {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, errors.New("connection reset (injected after the leader answered)")
	}
	return resp, err
}

func TestForwardRetryAfterLostAnswerIsAppliedOnce(t *testing.T) {
	// Three voters: the leader keeps its quorum while the follower is
	// reopened, so it stays the leader (with two it stepped down, and the
	// reopened node could win: nothing would be forwarded).
	nodes := startCluster(t, 3)
	leader := leaderOf(t, nodes)
	follower := nodes[0]
	if follower == leader {
		follower = nodes[1]
	}
	// Reopen the follower with a client that loses the leader's answers.
	follower.close()
	lossy := &lossyTransport{base: http.DefaultTransport}
	follower.client = &http.Client{Transport: lossy}
	follower.mustOpen("")

	require.Equal(t, 201, follower.c.op("POST", "/v1/accounts", `{"id":"r1","name":"R"}`).status)
	// create_bridge is not idempotent by content: applied a second time it
	// would answer "exists, no token". Deduplication by request id returns
	// the first attempt's result, which names the hash of the token this
	// proposer generated (a forward retry resends the same bytes), so the
	// client still gets the token.
	r := follower.c.op("POST", "/v1/accounts/r1/bridges", `{"id":"b1","name":"B"}`)
	require.Equal(t, 201, r.status, r.body)
	tok := r.body["token"].(string)
	require.NotEmpty(t, tok)
	require.GreaterOrEqual(t, lossy.lost.Load(), int64(4), "every forward was retried after a lost answer")
	converged(t, nodes...)
	id, err := leader.m.Accounts.BridgeByTokenHash(context.Background(), auth.HashToken(tok))
	require.NoError(t, err)
	require.Equal(t, "b1", id)
	leader.m.Machine.RLock()
	nb := len(leader.m.Machine.Accounts.Bridges)
	leader.m.Machine.RUnlock()
	require.Equal(t, 1, nb)
}

// raftProxy sits in front of a node's raft address; cut drops every
// connection and refuses new ones until heal.
type raftProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
}

func newRaftProxy(t *testing.T, target string) *raftProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &raftProxy{l: l, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { l.Close(); p.setCut(true) })
	go p.serve()
	return p
}

func (p *raftProxy) addr() string { return p.l.Addr().String() }

func (p *raftProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		d, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[d] = true, true
		p.mu.Unlock()
		go func() { io.Copy(d, c); d.Close() }()
		go func() { io.Copy(c, d); c.Close() }()
	}
}

func (p *raftProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]bool{}
	}
}

func TestPartitionedFollowerConverges(t *testing.T) {
	nodes := startCluster(t, 2)
	n3 := newTNode(t, "n3")
	proxy := newRaftProxy(t, n3.raftAddr)
	n3.adv = proxy.addr() // the others reach n3 only through the proxy
	n3.mustOpen(nodes[0].httpAddr())
	t.Cleanup(n3.close)
	all := append(nodes, n3)
	provision(t, nodes[0].c)
	before := converged(t, all...)

	proxy.setCut(true)
	for i := range 20 {
		addCamera(t, nodes[i%2].c, fmt.Sprintf("p%d", i))
	}
	// The majority kept committing; n3 did not see it.
	require.Equal(t, before, mustDigest(t, n3))
	require.NotEqual(t, before, mustDigest(t, leaderOf(t, nodes)))

	proxy.setCut(false)
	converged(t, all...)
	_, err := n3.m.Accounts.Stream(context.Background(), "p19-s")
	require.NoError(t, err)
}

func mustDigest(t *testing.T, n *tnode) string {
	d, err := n.m.StateDigest()
	require.NoError(t, err)
	return d
}

func TestRestartEveryNodeStateIsByteIdentical(t *testing.T) {
	nodes := startCluster(t, 3)
	provision(t, nodes[1].c)
	for i := range 10 {
		addCamera(t, nodes[i%3].c, fmt.Sprintf("r%d", i))
	}
	// One node restores from a snapshot, the others replay the log.
	require.NoError(t, nodes[0].m.Node().Snapshot())
	before := converged(t, nodes...)
	for _, n := range nodes {
		n.close()
	}
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			errs[i] = n.open(ctx, "") // has state: neither bootstraps nor joins
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, before, converged(t, nodes...))
	addCamera(t, nodes[2].c, "after-restart")
	converged(t, nodes...)
}

func TestRemoveWipeAndReAddCatchesUp(t *testing.T) {
	nodes := startCluster(t, 3)
	provision(t, nodes[0].c)
	converged(t, nodes...)
	leader := leaderOf(t, nodes)
	var victim, other *tnode
	for _, n := range nodes {
		if n != leader {
			if victim == nil {
				victim = n
			} else {
				other = n
			}
		}
	}
	// Remove through a member that is not the leader (forwarded).
	r := other.c.op("DELETE", "/v1/cluster/members/"+victim.id, "")
	require.Equal(t, 200, r.status, r.body)
	require.Equal(t, 404, other.c.op("DELETE", "/v1/cluster/members/nosuch", "").status)
	victim.close()
	require.NoError(t, os.RemoveAll(victim.dir))
	for i := range 5 {
		addCamera(t, other.c, fmt.Sprintf("w%d", i))
	}
	require.NoError(t, leader.m.Node().Snapshot()) // the newcomer may get a snapshot
	victim.mustOpen(other.httpAddr())
	converged(t, nodes...)
	_, err := victim.m.Accounts.Stream(context.Background(), "w4-s")
	require.NoError(t, err)
	ms, err := leader.m.Node().Members()
	require.NoError(t, err)
	require.Len(t, ms, 3)

	// Bad join requests.
	require.Equal(t, 400, other.c.op("POST", "/v1/cluster/members", `{"id":"x y","address":"127.0.0.1:1"}`).status)
	require.Equal(t, 400, other.c.op("POST", "/v1/cluster/members", `{"id":"x","address":"127.0.0.1:1","suffrage":"king"}`).status)
	require.Equal(t, 400, other.c.op("POST", "/v1/cluster/members", `{"id":"x"}`).status)
}

// The replicated lease on real nodes (lease.Replicated); here for the
// three-node harness.
// TestLeaseOnThreeNodeCluster: workers on three real raft nodes (followers
// forward to the leader) contend for the same keys; at no time do two of
// them hold one key.
func TestLeaseOnThreeNodeCluster(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		mu      sync.Mutex
		holders = map[string]string{}
		grants  atomic.Int64
		g       errgroup.Group
	)
	keys := []string{"sweep/a", "sweep/b"}
	for i, n := range nodes {
		g.Go(func() error {
			for round := range 15 {
				key := keys[round%len(keys)]
				holder := fmt.Sprintf("n%d-%d", i, round)
				held, err := n.m.Leases.AcquireLease(ctx, key, holder, 30*time.Second, false)
				if err != nil {
					return err
				}
				if !held {
					continue
				}
				grants.Add(1)
				mu.Lock()
				if other := holders[key]; other != "" {
					mu.Unlock()
					return fmt.Errorf("%s granted to %s while %s holds it", key, holder, other)
				}
				holders[key] = holder
				mu.Unlock()
				if held, err := n.m.Leases.AcquireLease(ctx, key, holder, 30*time.Second, true); err != nil || !held {
					return fmt.Errorf("renew %s by %s: %v (held %v)", key, holder, err, held)
				}
				mu.Lock()
				delete(holders, key)
				mu.Unlock()
				if err := n.m.Leases.ReleaseLease(ctx, key, holder); err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	require.Greater(t, grants.Load(), int64(len(keys)), "leases were taken and given back")
}

// TestAccessRevocationOnEveryNode: a token revoked, or a user removed,
// through one node is refused by every node within a second (the access
// domain is replicated state; each node looks tokens up locally).
func TestAccessRevocationOnEveryNode(t *testing.T) {
	nodes := startCluster(t, 3)
	ctx := context.Background()
	op := auth.Principal{Kind: auth.Operator}
	_, err := nodes[0].m.Accounts.CreateAccount(ctx, "", accounts.NewAccount{ID: "r1", Name: "R"})
	require.NoError(t, err)
	u, inv, err := nodes[1].m.Access.CreateUser(ctx, "", op, "r1", "ann@example.com", access.RoleAdmin)
	require.NoError(t, err)
	_, err = nodes[2].m.Access.AcceptInvitation(ctx, inv.Token, "a long enough password")
	require.NoError(t, err)
	// Setup: log in once the acceptance is applied here. The node that took
	// it should have applied it when it answered (read your writes), but a
	// CI run once saw the login refused right after: not yet diagnosed, so
	// the setup waits rather than asserts it.
	var session string
	require.Eventually(t, func() bool {
		session, _, err = nodes[2].m.Access.Login(ctx, "ann@example.com", "a long enough password")
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
	api, tok, err := nodes[1].m.Access.CreateToken(ctx, "", auth.Principal{Kind: auth.User, ID: u.ID}, u.ID, "ci")
	require.NoError(t, err)
	valid := func(token string) func(*tnode) bool {
		return func(n *tnode) bool {
			_, err := n.m.Access.PrincipalByTokenHash(ctx, auth.HashToken(token))
			return err == nil
		}
	}
	everywhere := func(f func(*tnode) bool, want bool) {
		t.Helper()
		require.Eventually(t, func() bool {
			for _, n := range nodes {
				if f(n) != want {
					return false
				}
			}
			return true
		}, time.Second, 10*time.Millisecond)
	}
	everywhere(valid(api), true)
	everywhere(valid(session), true)
	_, err = nodes[2].m.Access.RevokeToken(ctx, "", op, "", tok.ID)
	require.NoError(t, err)
	everywhere(valid(api), false)
	everywhere(valid(session), true)
	_, err = nodes[0].m.Access.RemoveUser(ctx, "", op, u.ID)
	require.NoError(t, err)
	everywhere(valid(session), false)
}

// A write through a follower is readable on that follower once the write
// returns. raft counts an entry applied as soon as it hands it to the state
// machine's goroutine, before the machine has applied it, so waiting on
// raft's applied index is not enough: a login right after an invitation's
// acceptance through the same follower was once refused in CI.
func TestFollowerWriteReadableWhenItReturns(t *testing.T) {
	nodes := startCluster(t, 2)
	l := leaderOf(t, nodes)
	f := nodes[0]
	if f == l {
		f = nodes[1]
	}
	converged(t, nodes...)

	// Hold the follower's state machine back: it cannot apply while a
	// reader holds its lock.
	f.m.Machine.RLock()
	released := false
	defer func() {
		if !released {
			f.m.Machine.RUnlock()
		}
	}()
	done := make(chan error, 1)
	go func() {
		_, err := f.m.Accounts.CreateAccount(context.Background(), "ryw-1", accounts.NewAccount{ID: "late", Name: "Late"})
		done <- err
	}()
	// The leader commits the write, and the follower's raft hands the entry
	// to its (blocked) state machine and counts it applied.
	require.Eventually(t, func() bool {
		_, err := l.m.Accounts.Account(context.Background(), "late")
		return err == nil
	}, 20*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		return f.m.Node().AppliedIndex() >= l.m.Node().AppliedIndex()
	}, 20*time.Second, 5*time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the write through the follower returned (err %v) before the follower applied it", err)
	case <-time.After(300 * time.Millisecond):
	}
	f.m.Machine.RUnlock()
	released = true
	require.NoError(t, <-done)
	_, err := f.m.Accounts.Account(context.Background(), "late")
	require.NoError(t, err, "the follower must show its own write once it returned")
}

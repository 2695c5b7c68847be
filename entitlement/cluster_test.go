package entitlement_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/entitlement"
)

// TestConcurrentChainOnCluster: on a real 3-node cluster, the distributor,
// two installers and three customers split, take back and activate at the
// same time, every request through a follower. Quantities are conserved
// exactly on every node, no stream gets two units, and no entitlement
// gives more than it has.
func TestConcurrentChainOnCluster(t *testing.T) {
	nodes := startNodes(t, 3, nil)
	var leader *node
	require.Eventually(t, func() bool {
		for _, n := range nodes {
			if n.rep.Node().IsLeader() {
				leader = n
				return true
			}
		}
		return false
	}, 30*time.Second, 20*time.Millisecond)
	var followers []*node
	for _, n := range nodes {
		if n != leader {
			followers = append(followers, n)
		}
	}
	f0 := followers[0]
	f0.provision(8)
	tok := map[string]string{}
	for _, a := range []string{"d1", "r1", "r2", "s1", "s2", "s3"} {
		tok[a] = f0.user(a, a+"@example.com", "admin")
	}
	root := f0.op(201, "POST", "/v1/entitlements", map[string]any{"account": "d1", "product": "HD1-D30", "quantity": 40, "term_months": 12}).body["id"].(string)
	// Reads are from the local replica: start once every node knows the
	// users and the root.
	require.Eventually(t, func() bool {
		for _, n := range nodes {
			for _, a := range []string{"d1", "r1", "r2", "s1", "s2", "s3"} {
				if n.call(tok[a], "GET", "/v1/entitlements", nil).status != 200 {
					return false
				}
			}
			if n.call(opToken, "GET", "/v1/entitlements/"+root, nil).status != 200 {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond)

	var keys atomic.Int64
	// post sends through a random follower with a fresh Idempotency-Key and
	// retries a 503 (a write whose fate is unknown) with the same key.
	post := func(who, path string, body any) res {
		key := fmt.Sprintf("k%d", keys.Add(1))
		for {
			r := followers[rand.IntN(len(followers))].call(tok[who], "POST", path, body, "Idempotency-Key", key)
			if r.status != 503 {
				return r
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// owned lists the live entitlements of account with units left.
	owned := func(who, account string) []map[string]any {
		var out []map[string]any
		r := followers[rand.IntN(len(followers))].call(tok[who], "GET", "/v1/entitlements?account="+account, nil)
		list, _ := r.body["entitlements"].([]any)
		for _, e := range list {
			m := e.(map[string]any)
			if m["returned_at"] == nil && m["available"].(float64) > 0 {
				out = append(out, m)
			}
		}
		return out
	}
	pick := func(l []map[string]any) string { return l[rand.IntN(len(l))]["id"].(string) }

	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		statuses   = map[string]int{}
		unexpected []string
	)
	note := func(what string, r res, ok ...int) {
		mu.Lock()
		defer mu.Unlock()
		statuses[fmt.Sprintf("%s %d %s", what, r.status, r.code())]++
		for _, s := range ok {
			if r.status == s {
				return
			}
		}
		unexpected = append(unexpected, fmt.Sprintf("%s: %d %s", what, r.status, r.raw))
	}
	// Each worker acts up to 12 times (f reports whether it acted), idling
	// while there is nothing for it yet, for at most 30 s.
	deadline := time.Now().Add(30 * time.Second)
	worker := func(f func() bool) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 12 && time.Now().Before(deadline); {
				if f() {
					n++
				} else {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	// The distributor splits its root to both installers.
	for range 2 {
		worker(func() bool {
			to := []string{"r1", "r2"}[rand.IntN(2)]
			note("split d1", post("d1", "/v1/entitlements/"+root+"/split", map[string]any{"account": to, "quantity": 1 + rand.IntN(3)}), 201, 409)
			return true
		})
	}
	// Installers split on to their customers and take splits back.
	for _, inst := range []struct {
		who  string
		subs []string
	}{{"r1", []string{"s1", "s2"}}, {"r2", []string{"s3"}}} {
		worker(func() bool {
			l := owned(inst.who, inst.who)
			if len(l) == 0 {
				return false
			}
			to := inst.subs[rand.IntN(len(inst.subs))]
			note("split "+inst.who, post(inst.who, "/v1/entitlements/"+pick(l)+"/split", map[string]any{"account": to, "quantity": 1 + rand.IntN(3)}), 201, 409)
			return true
		})
		worker(func() bool {
			sub := inst.subs[rand.IntN(len(inst.subs))]
			l := owned(inst.who, sub)
			if len(l) == 0 || rand.IntN(3) > 0 { // now and then
				return false
			}
			note("return "+inst.who, post(inst.who, "/v1/entitlements/"+pick(l)+"/return", nil), 200, 409)
			return true
		})
	}
	// Customers activate onto their streams; two at a time may pick the
	// same stream.
	for _, c := range []string{"s1", "s2", "s3"} {
		for range 2 {
			worker(func() bool {
				l := owned(c, c)
				if len(l) == 0 {
					return false
				}
				s := fmt.Sprintf("%s-%d", c, rand.IntN(8))
				note("activate "+c, post(c, "/v1/entitlements/"+pick(l)+"/activate", map[string]any{"streams": []string{s}}), 200, 409)
				return true
			})
		}
	}
	wg.Wait()
	t.Logf("answers: %v", statuses)
	require.Empty(t, unexpected)

	// Every node holds the same state, and in it every quantity adds up.
	require.Eventually(t, func() bool {
		d0, _ := nodes[0].rep.StateDigest()
		for _, n := range nodes[1:] {
			if d, _ := n.rep.StateDigest(); d != d0 {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "nodes did not converge")
	// One request sent four times at once, through both followers (a
	// client retrying on another node): applied once.
	top := f0.op(201, "POST", "/v1/entitlements", map[string]any{"account": "r0", "product": "HD1-D30", "quantity": 3, "term_months": 1}).body["id"].(string)
	c0 := f0.op(201, "POST", "/v1/entitlements/"+top+"/split", map[string]any{"account": "c0", "quantity": 3}).body["id"].(string)
	var same sync.WaitGroup
	answers := make([]res, 4)
	for i := range answers {
		same.Add(1)
		go func() {
			defer same.Done()
			for {
				answers[i] = followers[i%2].call(opToken, "POST", "/v1/entitlements/"+c0+"/activate", `{"streams":["c0-0"]}`, "Idempotency-Key", "once")
				if answers[i].status != 503 {
					return
				}
			}
		}()
	}
	same.Wait()
	for _, a := range answers {
		require.Equal(t, 200, a.status, a.raw)
		require.Equal(t, answers[0].body["units"], a.body["units"])
	}
	converged := func() bool {
		d0, _ := nodes[0].rep.StateDigest()
		for _, n := range nodes[1:] {
			if d, _ := n.rep.StateDigest(); d != d0 {
				return false
			}
		}
		return true
	}
	require.Eventually(t, converged, 30*time.Second, 20*time.Millisecond, "nodes did not converge")
	for _, n := range nodes {
		m := n.rep.Machine
		m.RLock()
		conserved(t, m.Entitlements)
		require.Equal(t, 1, m.Entitlements.Entitlements[c0].Activated)
		m.RUnlock()
	}
	m := leader.rep.Machine
	m.RLock()
	defer m.RUnlock()
	units := len(m.Entitlements.Units)
	require.LessOrEqual(t, units, 40+1)
	for _, what := range []string{"split d1 201 ", "split r1 201 ", "split r2 201 ", "activate s1 200 ", "activate s3 200 "} {
		require.Positive(t, statuses[what], "some of %q", what)
	}
	t.Logf("%d units activated, %d entitlements", units, len(m.Entitlements.Entitlements))
}

// conserved checks every entitlement of st: its quantity is what its live
// children hold, what it activated and what is left; its activated count
// is its units; and no stream subscription has two units.
func conserved(t *testing.T, st *entitlement.State) {
	t.Helper()
	units := map[string]int{}
	perStream := map[string]int{}
	for _, u := range st.Units {
		units[u.Entitlement]++
		perStream[u.Stream+"/"+u.Kind+"/"+u.Product]++
	}
	for k, n := range perStream {
		require.Equal(t, 1, n, "stream subscription %s has %d units", k, n)
	}
	for id, e := range st.Entitlements {
		kids := 0
		for _, c := range st.Entitlements {
			if c.Parent == id && c.ReturnedAt == nil {
				kids += c.Quantity
			}
		}
		require.Equal(t, units[id], e.Activated, "activated of %s", id)
		if e.ReturnedAt == nil { // a returned one keeps its figures as history
			require.Equal(t, kids, e.Split, "split of %s", id)
			require.GreaterOrEqual(t, e.Available(), 0, id)
			require.Equal(t, e.Quantity, e.Split+e.Activated+e.Available(), id)
		} else {
			require.Zero(t, e.Activated, "a returned entitlement had units: %s", id)
		}
	}
}

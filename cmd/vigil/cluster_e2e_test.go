package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/bench"
)

// Multi-node clusters of real vigil processes (fault tests of issue 4).

type clusterStatus struct {
	NodeID string `json:"node_id"`
	Role   string `json:"role"`
	Leader struct {
		ID      string `json:"id"`
		Address string `json:"address"`
	} `json:"leader"`
	Members []struct {
		ID       string `json:"id"`
		Suffrage string `json:"suffrage"`
	} `json:"members"`
	AppliedIndex uint64 `json:"applied_index"`
	StateDigest  string `json:"state_digest"`
}

func (n *vigilNode) status() (clusterStatus, error) {
	var s clusterStatus
	err := n.api.do(context.Background(), "GET", "/v1/cluster?digest=1", nil, &s)
	return s, err
}

// startCluster3 starts three meter+ingest voters, n2 and n3 joining via n1.
func startCluster3(t *testing.T) map[string]*vigilNode {
	n1 := startVigil(t, nil, "--node-id", "n1")
	n2 := startVigil(t, nil, "--node-id", "n2", "--join", n1.Addr)
	n3 := startVigil(t, nil, "--node-id", "n3", "--join", n1.Addr)
	return map[string]*vigilNode{"n1": n1, "n2": n2, "n3": n3}
}

// convergedDigest polls until every node reports the same state digest.
func convergedDigest(t *testing.T, nodes ...*vigilNode) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var d string
		same := true
		for _, n := range nodes {
			s, err := n.status()
			if err != nil || (d != "" && s.StateDigest != d) {
				same = false
				break
			}
			d = s.StateDigest
		}
		if same && d != "" {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatal("nodes did not converge to one state digest")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// quietDigest waits until the nodes agree and the state has not changed for
// three seconds.
func quietDigest(t *testing.T, nodes ...*vigilNode) string {
	t.Helper()
	d := convergedDigest(t, nodes...)
	since := time.Now()
	deadline := time.Now().Add(60 * time.Second)
	// Quiet for longer than a write can wait for a leader (forwardWait,
	// 8 s): a usage batch stuck behind a leader restart would otherwise
	// commit only after the nodes were killed, from their journals.
	for time.Since(since) < 10*time.Second {
		if time.Now().After(deadline) {
			t.Fatal("the state never stopped changing")
		}
		time.Sleep(200 * time.Millisecond)
		if nd := convergedDigest(t, nodes...); nd != d {
			d, since = nd, time.Now()
		}
	}
	return d
}

type streamView struct {
	ID           string    `json:"id"`
	RegisteredAt time.Time `json:"registered_at"`
	History      []any     `json:"history"`
}

func TestClusterLeaderKilled(t *testing.T) {
	nodes := startCluster3(t)
	ctx := context.Background()
	must(t, nodes["n2"].api.do(ctx, "POST", "/v1/accounts", map[string]any{"id": "acct", "name": "A"}, nil))
	must(t, nodes["n3"].api.do(ctx, "POST", "/v1/accounts/acct/bridges", map[string]any{"id": "br", "name": "B"}, nil))
	st, err := nodes["n1"].status()
	must(t, err)
	leader := nodes[st.Leader.ID]
	if leader == nil {
		t.Fatalf("no leader: %+v", st)
	}

	// Usage batches too: a survivor ingests segments before and after the
	// kill; its aggregator's batches must all land exactly once.
	var up *vigilNode
	for _, id := range []string{"n1", "n2", "n3"} {
		if id != st.Leader.ID {
			up = nodes[id]
			break
		}
	}
	must(t, up.api.do(ctx, "POST", "/v1/bridges/br/cameras",
		map[string]any{"id": "ucam", "name": "U", "streams": []map[string]any{{"id": "us"}}}, nil))
	seg := bench.SyntheticFMP4(4096)
	segStart := time.Now().Add(-time.Minute).Truncate(time.Second).UnixMilli()
	const uploads = 40
	uploaded := make(chan struct{})

	// A steady stream of provisioning writes through every node; a write
	// that fails is retried with the same body (so the same request id) on
	// the next node until it is acknowledged.
	var (
		mu    sync.Mutex
		acked = map[int]time.Time{}
		dead  = map[*vigilNode]bool{}
	)
	order := []*vigilNode{nodes["n1"], nodes["n2"], nodes["n3"]}
	const writes = 60
	killAt := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range writes {
			if i == 20 {
				close(killAt)
			}
			body := map[string]any{"id": fmt.Sprintf("c%d", i), "name": "C", "streams": []map[string]any{{"id": fmt.Sprintf("s%d", i)}}}
			deadline := time.Now().Add(30 * time.Second)
			for try := 0; ; try++ {
				n := order[(i+try)%3]
				mu.Lock()
				skip := dead[n]
				mu.Unlock()
				if skip {
					continue
				}
				var res struct {
					Streams []streamView `json:"streams"`
				}
				cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				err := n.api.do(cctx, "POST", "/v1/bridges/br/cameras", body, &res)
				cancel()
				if err == nil {
					mu.Lock()
					acked[i] = res.Streams[0].RegisteredAt
					mu.Unlock()
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("write %d never acknowledged: %v", i, err)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	go func() {
		defer close(uploaded)
		for i := range uploads {
			if i == uploads/2 {
				<-killAt
			}
			for try := 0; ; try++ {
				code, _ := put(t, up.base, e2eToken, "us", segStart+int64(i)*2000, seg, "video/mp4")
				if code == http.StatusCreated || code == http.StatusOK {
					break
				}
				if try > 300 {
					t.Errorf("upload %d: status %d", i, code)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	<-killAt
	mu.Lock()
	dead[leader] = true
	mu.Unlock()
	leader.Kill() // SIGKILL
	<-done
	<-uploaded

	var survivors []*vigilNode
	for _, n := range order {
		if n != leader {
			survivors = append(survivors, n)
		}
	}
	// The new leader serves: a survivor names another leader and takes writes.
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := survivors[0].status()
		if err == nil && s.Leader.ID != "" && s.Leader.ID != st.Leader.ID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new leader: %+v %v", s, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	must(t, survivors[1].api.do(ctx, "POST", "/v1/bridges/br/cameras",
		map[string]any{"id": "after", "name": "C", "streams": []map[string]any{{"id": "s-after"}}}, nil))

	// Usage: every segment counted once on every survivor, none lost to
	// the kill and none doubled by a retried batch.
	for _, n := range survivors {
		deadline := time.Now().Add(30 * time.Second)
		for {
			var u struct {
				StorageBytes int64 `json:"storage_bytes"`
				SegmentCount int64 `json:"segment_count"`
			}
			must(t, n.api.do(ctx, "GET", "/v1/meter/streams/us", nil, &u))
			if u.StorageBytes == uploads*int64(len(seg)) && u.SegmentCount == uploads {
				break
			}
			if u.StorageBytes > uploads*int64(len(seg)) || u.SegmentCount > uploads || time.Now().After(deadline) {
				t.Fatalf("usage on %s: %d bytes in %d segments, want %d in %d", n.base, u.StorageBytes, u.SegmentCount, uploads*len(seg), uploads)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	convergedDigest(t, survivors...)
	if len(acked) != writes {
		t.Fatalf("%d of %d writes acknowledged", len(acked), writes)
	}
	// Every acknowledged write is present on every survivor, applied once:
	// one registration (the acknowledged one) and one history entry.
	for _, n := range survivors {
		for i, at := range acked {
			var v streamView
			must(t, n.api.do(ctx, "GET", fmt.Sprintf("/v1/meter/streams/s%d", i), nil, &v))
			if !v.RegisteredAt.Equal(at) || len(v.History) != 1 {
				t.Errorf("stream s%d on %s: registered %v (acked %v), %d history entries", i, n.base, v.RegisteredAt, at, len(v.History))
			}
		}
	}
}

func TestClusterIngestReplicaAndRestartEveryNode(t *testing.T) {
	nodes := startCluster3(t)
	ing := startVigil(t, nil, "--node-id", "i1", "--roles", "ingest", "--join", nodes["n2"].Addr)
	token := ing.provision("s1", "s2") // camera "cam" with two streams, written through the non-voter
	ctx := context.Background()
	must(t, nodes["n3"].api.do(ctx, "POST", "/v1/bridges/br/cameras",
		map[string]any{"id": "cam2", "name": "C2", "streams": []map[string]any{{"id": "t1"}}}, nil))

	s, err := ing.status()
	must(t, err)
	suff := map[string]string{}
	for _, m := range s.Members {
		suff[m.ID] = m.Suffrage
	}
	if suff["i1"] != "nonvoter" || suff["n1"] != "voter" || suff["n2"] != "voter" || suff["n3"] != "voter" || len(suff) != 4 {
		t.Fatalf("members: %v", suff)
	}
	// The ingest-only node takes segments, checking the bridge token on its
	// local replica.
	seg := bench.SyntheticFMP4(4096)
	start := time.Now().Add(-time.Minute).UnixMilli() / 2000 * 2000
	// cam2 was written through n3; wait until the replica has it.
	for deadline := time.Now().Add(10 * time.Second); ing.api.do(ctx, "GET", "/v1/meter/streams/t1", nil, nil) != nil; {
		if time.Now().After(deadline) {
			t.Fatal("t1 never reached the ingest node's replica")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _ := put(t, ing.base, token, "t1", start, seg, "video/mp4"); code != 201 {
		t.Fatalf("PUT on the ingest node: %d", code)
	}

	// A camera deleted through a voter is refused by the ingest node within 2 s.
	must(t, nodes["n1"].api.do(ctx, "DELETE", "/v1/cameras/cam", nil, nil))
	deadline := time.Now().Add(2 * time.Second)
	for i := 0; ; i++ {
		code, _ := put(t, ing.base, token, "s1", start+int64(i)*2000, seg, "video/mp4")
		if code == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deleted stream still accepted on the ingest node after 2 s: %d", code)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The ingest node keeps serving when a meter node dies (the leader).
	st, err := ing.status()
	must(t, err)
	nodes[st.Leader.ID].Kill()
	if code, _ := put(t, ing.base, token, "t1", start+2000, seg, "video/mp4"); code != 201 {
		t.Fatalf("PUT on the ingest node after losing the leader: %d", code)
	}
	must(t, nodes[st.Leader.ID].Restart())
	nodes[st.Leader.ID].waitReady()

	// Restart every node (SIGKILL, all at once): the state is byte-identical.
	all := []*vigilNode{nodes["n1"], nodes["n2"], nodes["n3"], ing}
	// Background writers (the usage aggregator's once-a-second batches, the
	// purge of the deleted camera) settle first: the state must be quiet.
	before := quietDigest(t, all...)
	for _, n := range all {
		n.Kill()
	}
	for _, n := range all {
		must(t, n.Restart())
	}
	for _, n := range all {
		n.waitReady()
	}
	if after := convergedDigest(t, all...); after != before {
		t.Fatalf("state digest changed across a restart of every node: %s → %s", before, after)
	}
	if code, _ := put(t, ing.base, token, "t1", start+4000, seg, "video/mp4"); code != 201 {
		t.Fatalf("PUT after the restart: %d", code)
	}
}

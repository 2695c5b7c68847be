package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/vigiltest"
)

// TestClusterAdvertisedAddresses: nodes started with --http-advertise and
// --raft-advertise (as in containers, where they listen on 0.0.0.0) publish
// those addresses, not the ones they listen on; the raft address is resolved
// once, the HTTP one is kept as a name. A write through the follower is
// forwarded to the leader at its advertised HTTP address.
func TestClusterAdvertisedAddresses(t *testing.T) {
	n1 := vigiltest.Start(t, vigilBin, vigiltest.Options{Advertise: true, Args: []string{"--node-id", "n1"}})
	n2 := vigiltest.Start(t, vigilBin, vigiltest.Options{Advertise: true, Args: []string{"--node-id", "n2", "--join", n1.HTTPAddr}})
	ctx := context.Background()

	_, p1, _ := net.SplitHostPort(n1.HTTPAddr)
	_, p2, _ := net.SplitHostPort(n2.HTTPAddr)
	wantHTTP := map[string]string{"n1": "localhost:" + p1, "n2": "localhost:" + p2}
	var st struct {
		Leader  struct{ ID, HTTPAddress string } `json:"leader"`
		Members []struct {
			ID          string `json:"id"`
			Address     string `json:"address"`
			HTTPAddress string `json:"http_address"`
		} `json:"members"`
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		n2.Must(n2.API.Do(ctx, "GET", "/v1/cluster", nil, &st))
		ok := len(st.Members) == 2 && st.Leader.ID == "n1"
		for _, m := range st.Members {
			ok = ok && m.HTTPAddress == wantHTTP[m.ID]
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster as n2 sees it: %+v; want n1 leading and HTTP addresses %v", st, wantHTTP)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, m := range st.Members {
		// localhost resolved at start: an IP, as raft's log keeps it.
		host, _, err := net.SplitHostPort(m.Address)
		if err != nil || net.ParseIP(host) == nil || !net.ParseIP(host).IsLoopback() {
			t.Errorf("%s: raft address %q, want the loopback IP localhost resolves to", m.ID, m.Address)
		}
	}

	// n2 follows: this write is forwarded to n1 at localhost:PORT.
	n2.Must(n2.API.Do(ctx, "POST", "/v1/accounts", map[string]any{"id": "adv", "name": "Advertised"}, nil))
	var acct struct{ ID string }
	n1.Must(n1.API.Do(ctx, "GET", "/v1/accounts/adv", nil, &acct))
	if acct.ID != "adv" {
		t.Fatalf("the leader does not have the account written through the follower: %+v", acct)
	}
}

package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/vigilcloud/vigil/internal/servers"
	"github.com/vigilcloud/vigil/internal/vigiltest"
)

// upgradeFixture is the meter directory of a data dir written by release
// 3acc609 and what that node answered before it stopped
// (scripts/make-upgrade-fixture.sh writes it).
const upgradeFixture = "testdata/upgrade-stop9"

// upgradeIgnored are the fields of a recorded read that depend on when or
// how the read is made, not on the replicated state:
//   - meter status applied_index is raft's index, which counts the no-op
//     entry every election appends (this node elects itself at each start);
//   - a billing run of a month not yet ended is a preview cut off at the
//     read's "now" (cutoff, generated_at, stored_byte_hours, which accrue up
//     to the cut-off), and once the month has ended it is final, cut off at
//     the month's end (final, cutoff).
var upgradeIgnored = map[string][]string{
	"/v1/meter/status":  {"applied_index"},
	"/v1/billing/runs/": {"cutoff", "generated_at", "final", "stored_byte_hours"},
}

// TestUpgradeOpensReleaseDataDir opens a data dir written by an earlier
// release with this code (issue 12): its replicated state (snapshot plus the
// log after it) must replay to the same state digest and the same reads, and
// again after a restart on what this code wrote.
func TestUpgradeOpensReleaseDataDir(t *testing.T) {
	bin := vigiltest.RequireBin(t, vigilBin)
	var fx struct {
		NodeID   string `json:"node_id"`
		HTTPAddr string `json:"http_addr"`
		RaftAddr string `json:"raft_addr"`
	}
	readJSONFile(t, filepath.Join(upgradeFixture, "node.json"), &fx)
	wantDigest := readTrimmed(t, filepath.Join(upgradeFixture, "digest.txt"))
	var reads map[string]json.RawMessage
	readJSONFile(t, filepath.Join(upgradeFixture, "reads.json"), &reads)

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	untarGz(t, filepath.Join(upgradeFixture, "datadir.tar.gz"), data)

	// The same addresses and node id as the node that wrote the fixture:
	// its HTTP address is in the replicated state (the node map), and a
	// node on another one publishes it through raft, changing the state.
	requireFree(t, fx.HTTPAddr)
	requireFree(t, fx.RaftAddr)
	p, err := servers.Start(bin, dir, fx.HTTPAddr, []string{"VIGIL_ADMIN_TOKEN=" + vigiltest.Token},
		"serve", "--data", data, "--http-addr", fx.HTTPAddr, "--raft-addr", fx.RaftAddr,
		"--node-id", fx.NodeID, "--rtsp-addr", "", "--log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	n := &vigiltest.Node{Process: p, T: t, Base: "http://" + fx.HTTPAddr, HTTPAddr: fx.HTTPAddr, Data: data,
		API: &vigiltest.Client{Base: "http://" + fx.HTTPAddr, Token: vigiltest.Token}}
	t.Cleanup(func() {
		p.Close()
		if t.Failed() {
			t.Logf("vigil log:\n%s", vigiltest.Tail(p.Logs(), 60))
		}
	})
	n.WaitReady()

	checkDigest := func(when string) {
		t.Helper()
		var st struct {
			StateDigest string `json:"state_digest"`
		}
		n.Must(n.API.Do(context.Background(), "GET", "/v1/cluster?digest=1", nil, &st))
		if st.StateDigest != wantDigest {
			t.Errorf("%s: state digest %s, the release recorded %s", when, st.StateDigest, wantDigest)
		}
	}
	// The billing run goes last: for a month that has ended, reading it
	// seals the month's usage through raft, a write that changes the digest.
	var billing []string
	checkReads := func(when string, paths []string) {
		t.Helper()
		for _, path := range paths {
			var got any
			n.Must(n.API.Do(context.Background(), "GET", path, nil, &got))
			var want any
			if err := json.Unmarshal(reads[path], &want); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			for prefix, keys := range upgradeIgnored {
				if strings.HasPrefix(path, prefix) {
					dropKeys(got, keys)
					dropKeys(want, keys)
				}
			}
			if !reflect.DeepEqual(got, want) {
				g, _ := json.MarshalIndent(got, "", " ")
				w, _ := json.MarshalIndent(want, "", " ")
				t.Errorf("%s %s:\n got %s\nwant %s", when, path, g, w)
			}
		}
	}
	var others []string
	for path := range reads {
		if strings.HasPrefix(path, "/v1/billing/runs/") {
			billing = append(billing, path)
		} else {
			others = append(others, path)
		}
	}
	checkDigest("opened")
	checkReads("opened", others)

	// A clean restart replays what this code wrote on top of the release's
	// log; nothing of it may depend on the wall clock.
	p.Signal(syscall.SIGTERM)
	if err := p.Wait(); err != nil {
		t.Fatalf("vigil did not stop cleanly: %v", err)
	}
	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	n.WaitReady()
	checkDigest("restarted")
	checkReads("restarted", others)
	checkReads("restarted", billing)
}

// dropKeys deletes keys from every object in v, at any depth.
func dropKeys(v any, keys []string) {
	switch v := v.(type) {
	case map[string]any:
		for _, k := range keys {
			delete(v, k)
		}
		for _, x := range v {
			dropKeys(x, keys)
		}
	case []any:
		for _, x := range v {
			dropKeys(x, keys)
		}
	}
}

// requireFree fails when addr cannot be listened on: the fixture's node
// must get its own addresses back.
func requireFree(t *testing.T, addr string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the fixture's address %s is taken (another run of this test?): %v", addr, err)
	}
	l.Close()
}

func readTrimmed(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func readJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// untarGz extracts the directories and regular files of a .tar.gz into dir.
func untarGz(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(name, dir+string(filepath.Separator)) {
			t.Fatalf("%s: entry %q outside the directory", archive, h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(name, 0o755)
		case tar.TypeReg:
			err = writeFileFrom(name, tr, h.FileInfo().Mode().Perm())
		default:
			t.Fatalf("%s: unexpected entry %q (type %c)", archive, h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func writeFileFrom(name string, r io.Reader, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// A fresh start's first election is not a warning; one after a leader was
// known still is.
func TestHCLoggerFirstElectionIsInfo(t *testing.T) {
	var buf bytes.Buffer
	l := newHCLogger(slog.New(slog.NewTextHandler(&buf, nil)), "raft", hclog.Warn)
	// raft passes its own string types.
	l.Warn("heartbeat timeout reached, starting election", "last-leader-addr", raft.ServerAddress(""), "last-leader-id", raft.ServerID(""))
	if got := buf.String(); !strings.Contains(got, "level=INFO") || !strings.Contains(got, "starting election") {
		t.Fatalf("first election logged as %q, want INFO", got)
	}
	buf.Reset()
	l.Warn("heartbeat timeout reached, starting election", "last-leader-addr", raft.ServerAddress("127.0.0.1:1"), "last-leader-id", raft.ServerID("n1"))
	if got := buf.String(); !strings.Contains(got, "level=WARN") {
		t.Fatalf("election after losing leader n1 logged as %q, want WARN", got)
	}
}

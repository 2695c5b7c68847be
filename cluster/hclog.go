package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// newHCLogger returns an hclog.Logger (what raft and raft-wal take) whose
// records at level min and above go to l. raft logs every heartbeat and
// election at debug/info; only warnings and errors are worth an operator's
// attention, so min is normally hclog.Warn.
func newHCLogger(l *slog.Logger, name string, min hclog.Level) hclog.Logger {
	il := hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:   name,
		Output: io.Discard, // everything goes through the sink below
		Level:  hclog.Off,
	})
	il.RegisterSink(&slogSink{l: l, min: min})
	return il
}

type slogSink struct {
	l   *slog.Logger
	min hclog.Level
}

// Accept implements hclog.SinkAdapter.
func (s *slogSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	if level < s.min || level == hclog.Off {
		return
	}
	var lvl slog.Level
	switch {
	case level >= hclog.Error:
		lvl = slog.LevelError
	case level == hclog.Warn && firstElection(msg, args):
		lvl = slog.LevelInfo
	case level == hclog.Warn:
		lvl = slog.LevelWarn
	case level == hclog.Info:
		lvl = slog.LevelInfo
	default:
		lvl = slog.LevelDebug
	}
	attrs := make([]any, 0, len(args)+2)
	attrs = append(attrs, "component", name)
	// hclog args are key/value pairs like slog's; keys are not always strings.
	for i := 0; i+1 < len(args); i += 2 {
		k, ok := args[i].(string)
		if !ok {
			k = "arg"
		}
		attrs = append(attrs, k, args[i+1])
	}
	s.l.Log(context.Background(), lvl, msg, attrs...)
}

// firstElection reports raft's election warning from a node that has never
// seen a leader: every fresh start (a single voter bootstrapping, a new
// cluster) logs it, so it is no cause for an operator's attention. After a
// leader was known it still is a warning.
func firstElection(msg string, args []any) bool {
	if msg != "heartbeat timeout reached, starting election" {
		return false
	}
	for i := 0; i+1 < len(args); i += 2 {
		if args[i] == "last-leader-id" {
			return fmt.Sprint(args[i+1]) == "" // a raft.ServerID
		}
	}
	return false
}

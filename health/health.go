// Package health reports whether an account's bridges, cameras and streams
// are recording, for failure monitoring: GET /v1/accounts/{id}/health and
// the vigil_stream_health metric. It reads only the registry and the
// recording index, never video, so it stays visible under privacy mode.
package health

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/storage"
)

// State is the health of a stream, or the best of its streams' for a
// camera or bridge.
type State string

// The states, best first.
const (
	Recording State = "recording"
	Stalled   State = "stalled"
	Offline   State = "offline"
)

// States lists the states, best first.
var States = []State{Recording, Stalled, Offline}

func (s State) rank() int {
	switch s {
	case Recording:
		return 0
	case Stalled:
		return 1
	}
	return 2
}

// Best returns the better of a and b.
func Best(a, b State) State {
	if b.rank() < a.rank() {
		return b
	}
	return a
}

// StateOf is the rule: a stream whose last segment ended at lastEnd (Unix
// ms) and lasted durMS is recording while now is within twice that
// duration of its end, stalled after that, and offline once offlineAfter
// has passed (or when it never recorded: ok false). A segment ending in the
// future (a Bridge clock ahead of ours) counts as recording.
func StateOf(now, lastEnd, durMS int64, ok bool, offlineAfter time.Duration) State {
	if !ok {
		return Offline
	}
	switch age := now - lastEnd; {
	case age <= 2*durMS:
		return Recording
	case age <= offlineAfter.Milliseconds():
		return Stalled
	}
	return Offline
}

// Registry is what health reads of the accounts registry
// (*accounts.Registry).
type Registry interface {
	Account(ctx context.Context, id string) (accounts.Account, error)
	Streams(ctx context.Context) ([]accounts.Stream, error)
	Camera(ctx context.Context, id string) (accounts.Camera, error)
	Bridge(ctx context.Context, id string) (accounts.Bridge, error)
}

// Index is what health reads of the recording index (index.Index).
type Index interface {
	Latest(ctx context.Context, ref storage.StreamRef) (index.Segment, int64, error)
	Spans(ctx context.Context, ref storage.StreamRef, from, to int64) ([]index.Span, error)
}

// Config configures a Checker.
type Config struct {
	// OfflineAfter is how long after its last segment's end a stream is
	// offline rather than stalled (default 5m).
	OfflineAfter time.Duration
	// GapWindow is how far back gaps are listed by default (default 24h).
	GapWindow time.Duration
	// MaxGaps bounds the gaps listed per stream, newest kept (default 100).
	MaxGaps int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger (default: discard).
	Logger *slog.Logger
}

// Checker computes health from a registry and an index. It is safe for
// concurrent use.
type Checker struct {
	reg Registry
	idx Index
	cfg Config
}

// New returns a Checker.
func New(reg Registry, idx Index, cfg Config) *Checker {
	if cfg.OfflineAfter <= 0 {
		cfg.OfflineAfter = 5 * time.Minute
	}
	if cfg.GapWindow <= 0 {
		cfg.GapWindow = 24 * time.Hour
	}
	if cfg.MaxGaps <= 0 {
		cfg.MaxGaps = 100
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Checker{reg: reg, idx: idx, cfg: cfg}
}

// Report is the health of an account and, for a reseller, its
// sub-accounts. Times are Unix ms.
type Report struct {
	Account      string   `json:"account"`
	Now          int64    `json:"now"`
	Since        int64    `json:"since"` // gaps are listed from here
	OfflineAfter int64    `json:"offline_after_ms"`
	Bridges      []Bridge `json:"bridges"`
}

// Bridge is a bridge's health: the best of its cameras'.
type Bridge struct {
	ID      string   `json:"id"`
	Account string   `json:"account"`
	Name    string   `json:"name"`
	State   State    `json:"state"`
	LastEnd int64    `json:"last_end,omitempty"` // latest end of its streams' last segments
	Cameras []Camera `json:"cameras"`
}

// Camera is a camera's health: the best of its streams'.
type Camera struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	State   State    `json:"state"`
	LastEnd int64    `json:"last_end,omitempty"`
	Streams []Stream `json:"streams"`
}

// Stream is a stream's health.
type Stream struct {
	ID    string `json:"id"`
	State State  `json:"state"`
	// LastSegment is the segment that ends last; nil when none was ever
	// recorded (or retention removed them all).
	LastSegment *index.Segment `json:"last_segment,omitempty"`
	LastEnd     int64          `json:"last_end,omitempty"`
	// ReceivedAt is when the index recorded LastSegment; omitted when
	// unknown (the index was rebuilt from storage since).
	ReceivedAt int64 `json:"received_at,omitempty"`
	// Gaps are the holes in the recording since Report.Since, oldest
	// first: between spans, and from the last segment to now unless
	// recording.
	Gaps          []index.Span `json:"gaps"`
	GapsTruncated bool         `json:"gaps_truncated,omitempty"`
}

// ErrNotFound is returned for an unknown or deleted account.
var ErrNotFound = accounts.ErrNotFound

// Report returns the health of account id and its sub-accounts, with gaps
// since since (Unix ms; 0 for the default window).
func (c *Checker) Report(ctx context.Context, id string, since int64) (Report, error) {
	if _, err := c.reg.Account(ctx, id); err != nil {
		return Report{}, err
	}
	now := c.cfg.Now().UnixMilli()
	if since <= 0 {
		since = now - c.cfg.GapWindow.Milliseconds()
	}
	streams, err := c.scope(ctx, id)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Account: id, Now: now, Since: since, OfflineAfter: c.cfg.OfflineAfter.Milliseconds(), Bridges: []Bridge{}}
	bridges := map[string]int{} // id → index in rep.Bridges
	cameras := map[string]int{} // id → index in its bridge's Cameras
	for _, st := range streams {
		sh, err := c.stream(ctx, st, now, since)
		if err != nil {
			return Report{}, err
		}
		bi, ok := bridges[st.Bridge]
		if !ok {
			b := Bridge{ID: st.Bridge, Account: st.Account, State: Offline, Cameras: []Camera{}}
			if rb, err := c.reg.Bridge(ctx, st.Bridge); err == nil {
				b.Name = rb.Name
			}
			bi = len(rep.Bridges)
			bridges[st.Bridge] = bi
			rep.Bridges = append(rep.Bridges, b)
		}
		b := &rep.Bridges[bi]
		ci, ok := cameras[st.Camera]
		if !ok {
			cam := Camera{ID: st.Camera, State: Offline, Streams: []Stream{}}
			if rc, err := c.reg.Camera(ctx, st.Camera); err == nil {
				cam.Name = rc.Name
			}
			ci = len(b.Cameras)
			cameras[st.Camera] = ci
			b.Cameras = append(b.Cameras, cam)
		}
		cam := &b.Cameras[ci]
		cam.Streams = append(cam.Streams, sh)
		cam.State, b.State = Best(cam.State, sh.State), Best(b.State, sh.State)
		cam.LastEnd, b.LastEnd = max(cam.LastEnd, sh.LastEnd), max(b.LastEnd, sh.LastEnd)
	}
	// Streams come ordered by id; order bridges and cameras likewise.
	slices.SortFunc(rep.Bridges, func(x, y Bridge) int { return strings.Compare(x.ID, y.ID) })
	for _, b := range rep.Bridges {
		slices.SortFunc(b.Cameras, func(x, y Camera) int { return strings.Compare(x.ID, y.ID) })
	}
	return rep, nil
}

// scope returns the live streams of account id and of every account below
// it (a reseller's sub-accounts, a distributor's resellers and theirs),
// ordered by id.
func (c *Checker) scope(ctx context.Context, id string) ([]accounts.Stream, error) {
	all, err := c.reg.Streams(ctx)
	if err != nil {
		return nil, err
	}
	parents := map[string]string{} // account → parent; "" also for deleted ones
	var out []accounts.Stream
	for _, st := range all {
		if st.Account == id {
			out = append(out, st)
			continue
		}
		// Walk up the tree (at most distributor → reseller → customer).
		for acct, depth := st.Account, 0; acct != "" && depth < 3; depth++ {
			p, ok := parents[acct]
			if !ok {
				a, err := c.reg.Account(ctx, acct)
				if err != nil && !errors.Is(err, accounts.ErrNotFound) {
					return nil, err
				}
				p = a.Parent
				parents[acct] = p
			}
			if p == id {
				out = append(out, st)
				break
			}
			acct = p
		}
	}
	return out, nil
}

// stream computes one stream's health.
func (c *Checker) stream(ctx context.Context, st accounts.Stream, now, since int64) (Stream, error) {
	ref := storage.StreamRef{Account: st.Account, Camera: st.Camera, Stream: st.ID}
	out := Stream{ID: st.ID, Gaps: []index.Span{}}
	seg, recv, ok, err := c.latest(ctx, ref)
	if err != nil {
		return Stream{}, err
	}
	out.State = StateOf(now, seg.End(), seg.DurationMS, ok, c.cfg.OfflineAfter)
	if !ok {
		return out, nil
	}
	out.LastSegment, out.LastEnd, out.ReceivedAt = &seg, seg.End(), recv
	spans, err := c.idx.Spans(ctx, ref, since, now)
	if err != nil {
		return Stream{}, fmt.Errorf("health: spans of %s: %w", st.ID, err)
	}
	out.Gaps = Gaps(spans, since, now, out.State != Recording)
	if len(out.Gaps) > c.cfg.MaxGaps {
		out.Gaps, out.GapsTruncated = out.Gaps[len(out.Gaps)-c.cfg.MaxGaps:], true
	}
	return out, nil
}

// latest is Index.Latest with "never recorded" as ok == false.
func (c *Checker) latest(ctx context.Context, ref storage.StreamRef) (index.Segment, int64, bool, error) {
	seg, recv, err := c.idx.Latest(ctx, ref)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return index.Segment{}, 0, false, nil
	case err != nil:
		return index.Segment{}, 0, false, fmt.Errorf("health: latest of %s: %w", ref.Stream, err)
	}
	return seg, recv, true, nil
}

// Gaps returns the holes between spans (sorted, disjoint) within [from,
// to), and with trailing also the hole from the last span's end to to. A
// hole before the first span is not listed: the stream may not have
// existed yet.
func Gaps(spans []index.Span, from, to int64, trailing bool) []index.Span {
	gaps := []index.Span{}
	for i := 1; i < len(spans); i++ {
		g := index.Span{Start: max(spans[i-1].End, from), End: min(spans[i].Start, to)}
		if g.End > g.Start {
			gaps = append(gaps, g)
		}
	}
	if trailing {
		start := from
		if len(spans) > 0 {
			start = max(spans[len(spans)-1].End, from)
		}
		if to > start {
			gaps = append(gaps, index.Span{Start: start, End: to})
		}
	}
	return gaps
}

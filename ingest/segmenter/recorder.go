// Package segmenter records RTSP publishing sessions: it implements
// rtsp.Handler (authorisation, one publisher per stream), depacketises
// H.264/H.265 video and AAC/Opus audio, derives DTS, and cuts the stream
// into self-contained fMP4 segments at the first keyframe after the
// configured duration. A segment is written fragment by fragment to a
// spool file under the data directory (only the open fragment is held in
// memory) and, once closed, stored and indexed through the same Store as
// an HTTP upload, retried with backoff while storage or the index is down.
// Spool files a crash left behind are uploaded on the next start.
//
// Wall-clock time comes from the tracks' RTCP sender reports, else from the
// receive time of the first packet; segments follow on one another in RTP
// time. A later sender report that moves the clock by more than 100 ms
// re-anchors the next segment: forward, after a gap; backward, it cannot
// (the recording never overlaps what is stored), so the segments keep
// following on and stay ahead of the publisher's clock by that step.
//
// RTP timestamps that jump (Config.MaxTimestampJump: an encoder restart, a
// long pause) are taken out of the track's timeline, so no picture spans
// the jump; the segment is cut at the next keyframe, which is placed by
// the re-anchored clock. A segment that can never be stored (too long for
// an upload, refused as malformed, another segment at its start) is moved
// to the spool's .quarantine directory instead of being retried.
package segmenter

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/ingest"
	"github.com/vigilcloud/vigil/ingest/rtsp"
	"github.com/vigilcloud/vigil/lease"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/storage"
)

// Registry finds streams and bridges (the meter).
type Registry interface {
	Stream(ctx context.Context, id string) (accounts.Stream, error)
	BridgeByTokenHash(ctx context.Context, hash string) (string, error)
	BridgeDigestHA1(ctx context.Context, id string) (string, error)
}

// Storer stores a closed segment exactly like an HTTP upload
// (ingest.Handler.Store).
type Storer interface {
	Store(ctx context.Context, st accounts.Stream, seg index.Segment, body io.Reader, opts ...ingest.StoreOption) (index.Segment, bool, error)
}

// Index tells where a stream's recording ends, so that a reconnect never
// overlaps what is recorded.
type Index interface {
	Segments(ctx context.Context, ref storage.StreamRef, from, to int64) ([]index.Segment, error)
}

// Defaults of the Config fields that vigil serve exposes as flags.
const (
	DefaultSegmentDuration  = 6 * time.Second
	DefaultMaxTimestampJump = 10 * time.Second
)

// Config configures a Recorder. Zero values take the defaults.
type Config struct {
	// SpoolDir holds the open and not yet stored segments (required).
	SpoolDir string
	// SegmentDuration: a segment is cut at the first keyframe after it
	// (default 6 s).
	SegmentDuration time.Duration
	// FragmentDuration: a fragment is written to the spool after it
	// (default 1 s).
	FragmentDuration time.Duration
	// MaxSegmentDuration: a segment without a keyframe is cut anyway
	// (not at a keyframe) after this long (default 60 s).
	MaxSegmentDuration time.Duration
	// MaxTimestampJump: a step between two RTP packets of a track larger
	// than this, forward or back, is a jump (an encoder restart, a long
	// pause), not elapsed time: it is taken out, the segment is cut at the
	// next keyframe and the clock re-anchored (default 10 s). It must
	// exceed the longest frame interval of the slowest camera.
	MaxTimestampJump time.Duration
	// MaxBacklog closed segments of one session may wait for storage;
	// beyond it the session ends (default 20). They stay spooled.
	MaxBacklog int
	// Lease keeps a stream to one publisher across nodes (the node's
	// shared lease); nil: per node only.
	Lease lease.Lease
	// LeaseTTL is the publisher lease's time to live, renewed at a third
	// of it (default 15 s).
	LeaseTTL time.Duration
	// DeletedCheck is how often a live session asks the registry whether
	// its stream was deleted; a deleted stream's session ends (default 1 s,
	// so a deletion stops recording within the 2 s the contract allows).
	DeletedCheck time.Duration
	// RetryMin and RetryMax bound the store retry backoff (250 ms, 10 s).
	RetryMin, RetryMax time.Duration
	// Live receives the recording as it is cut, for low-latency HLS (a
	// *live.Buffer); nil: none.
	Live LiveSink
	// Now is the clock (default time.Now).
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

func (c Config) withDefaults() Config {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.SegmentDuration, DefaultSegmentDuration)
	def(&c.FragmentDuration, time.Second)
	def(&c.MaxSegmentDuration, time.Minute)
	def(&c.MaxTimestampJump, DefaultMaxTimestampJump)
	if c.MaxSegmentDuration < 2*c.SegmentDuration {
		c.MaxSegmentDuration = 2 * c.SegmentDuration
	}
	if c.MaxBacklog <= 0 {
		c.MaxBacklog = 20
	}
	def(&c.LeaseTTL, 15*time.Second)
	def(&c.DeletedCheck, time.Second)
	def(&c.RetryMin, 250*time.Millisecond)
	def(&c.RetryMax, 10*time.Second)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Live == nil {
		c.Live = noLive{}
	}
	return c
}

// LiveSink receives each stream's recording as it is cut: a segment opens
// with its init section, gains fragments (pieces reused after the call
// returns), closes, and is stored; End ends the publishing session. Calls
// for one stream come in that order, Stored from another goroutine.
type LiveSink interface {
	Open(stream string, startMS int64, init []byte)
	Part(stream string, startMS int64, pieces [][]byte, d time.Duration, independent bool)
	Close(stream string, startMS, durMS int64)
	Stored(stream string, startMS int64)
	End(stream string)
}

type noLive struct{}

func (noLive) Open(string, int64, []byte)                        {}
func (noLive) Part(string, int64, [][]byte, time.Duration, bool) {}
func (noLive) Close(string, int64, int64)                        {}
func (noLive) Stored(string, int64)                              {}
func (noLive) End(string)                                        {}

// Recorder implements rtsp.Handler. Start it with Run (uploads and crash
// recovery); it is safe for concurrent use.
type Recorder struct {
	cfg   Config
	reg   Registry
	store Storer
	idx   Index
	lease lease.Lease
	log   *slog.Logger
	m     *metrics

	aus     auPool // access-unit buffers, shared by the sessions
	mu      sync.Mutex
	live    map[string]*session // stream id → publishing session on this node
	lastEnd map[string]int64    // stream id → end (Unix ms) of the last segment cut here
	spooled map[string]bool     // spool files a session or an upload of this process owns
	ctx     context.Context     // Run's context: uploads live as long as it
	uploads sync.WaitGroup
}

var _ rtsp.Handler = (*Recorder)(nil)

// New returns a recorder storing through store.
func New(cfg Config, reg Registry, store Storer, idx Index) (*Recorder, error) {
	cfg = cfg.withDefaults()
	if cfg.SpoolDir == "" {
		return nil, errors.New("segmenter: SpoolDir is required")
	}
	if err := os.MkdirAll(cfg.SpoolDir, 0o755); err != nil {
		return nil, fmt.Errorf("segmenter: spool: %w", err)
	}
	l := cfg.Lease
	if l == nil {
		l = lease.NewLocal(cfg.Now)
	}
	return &Recorder{cfg: cfg, reg: reg, store: store, idx: idx, lease: l, log: cfg.Logger,
		m: newMetrics(cfg.Registerer), live: map[string]*session{}, lastEnd: map[string]int64{},
		spooled: map[string]bool{}, ctx: context.Background()}, nil
}

// Run uploads the spool files a previous run left behind, then serves the
// uploads of closed segments until ctx ends; it returns once the uploads in
// flight gave up (what is not stored stays spooled for the next start).
func (r *Recorder) Run(ctx context.Context) error {
	r.mu.Lock()
	r.ctx = ctx
	r.mu.Unlock()
	if err := r.recoverSpool(ctx); err != nil {
		r.log.ErrorContext(ctx, "segmenter: spool recovery", "err", err)
	}
	<-ctx.Done()
	r.uploads.Wait()
	return nil
}

// CheckPassword implements rtsp.Handler: the password must be a token of
// the bridge named by user.
func (r *Recorder) CheckPassword(ctx context.Context, user, password string) error {
	if user == "" || password == "" {
		return rtsp.ErrUnauthorized
	}
	id, err := r.reg.BridgeByTokenHash(ctx, auth.HashToken(password))
	switch {
	case errors.Is(err, auth.ErrUnknownToken) || errors.Is(err, meter.ErrNotFound):
		return rtsp.ErrUnauthorized
	case err != nil:
		return fmt.Errorf("segmenter: bridge lookup: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(id), []byte(user)) != 1 {
		return rtsp.ErrUnauthorized
	}
	return nil
}

// DigestHA1 implements rtsp.Handler.
func (r *Recorder) DigestHA1(ctx context.Context, user, realm string) (string, error) {
	if realm != accounts.DigestRealm {
		return "", rtsp.ErrUnauthorized
	}
	ha1, err := r.reg.BridgeDigestHA1(ctx, user)
	switch {
	case errors.Is(err, meter.ErrNotFound):
		return "", rtsp.ErrUnauthorized
	case err != nil:
		return "", fmt.Errorf("segmenter: bridge digest lookup: %w", err) // user may be a misplaced token
	}
	return ha1, nil
}

// DigestHA1s implements rtsp.DigestHA1Set: a bridge in a token
// rotation's grace answers with either token (accounts.BridgeDigestHA1s).
func (r *Recorder) DigestHA1s(ctx context.Context, user, realm string) ([]string, error) {
	set, ok := r.reg.(interface {
		BridgeDigestHA1s(ctx context.Context, id string) ([]string, error)
	})
	if !ok {
		ha1, err := r.DigestHA1(ctx, user, realm)
		return []string{ha1}, err
	}
	if realm != accounts.DigestRealm {
		return nil, rtsp.ErrUnauthorized
	}
	ha1s, err := set.BridgeDigestHA1s(ctx, user)
	switch {
	case errors.Is(err, meter.ErrNotFound):
		return nil, rtsp.ErrUnauthorized
	case err != nil:
		return nil, fmt.Errorf("segmenter: bridge digest lookup: %w", err)
	}
	return ha1s, nil
}

// Announce implements rtsp.Handler: the stream must be the user's bridge's,
// carry H.264 or H.265 video, and have no other live publisher.
func (r *Recorder) Announce(ctx context.Context, user, path string, medias []rtsp.Media) (rtsp.Sink, error) {
	if !storage.ValidID(path) {
		return nil, fmt.Errorf("%w: %q is not a stream id", rtsp.ErrNotFound, path)
	}
	st, err := accounts.AcceptsData(ctx, r.reg, path)
	switch {
	case errors.Is(err, meter.ErrNotFound):
		return nil, fmt.Errorf("%w: unknown or deleted stream %s", rtsp.ErrNotFound, path)
	case err != nil:
		return nil, fmt.Errorf("segmenter: stream %s: %w", path, err)
	}
	if st.Bridge != user {
		return nil, fmt.Errorf("%w: stream %s is not bridge %s's", rtsp.ErrForbidden, path, user)
	}
	tracks, err := r.plan(ctx, path, medias)
	if err != nil {
		return nil, err
	}

	// A Bridge that reconnects at once may announce before its previous
	// session here has released the stream (that session's connection is
	// still being closed, its lease released through raft or Redis): wait
	// a little for it before answering 455.
	deadline := time.Now().Add(publishGrace)
	var s *session
	for {
		var err error
		s, err = r.reserve(ctx, st, tracks)
		if err == nil || !errors.Is(err, rtsp.ErrBusy) || !time.Now().Before(deadline) {
			if err != nil {
				return nil, err
			}
			break
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(publishRetry):
		}
	}
	r.m.sessions.Inc()
	r.log.InfoContext(ctx, "segmenter: publishing", "stream", path, "bridge", user, "tracks", len(tracks))
	return s, nil
}

// How long Announce waits for a stream's previous publisher to let go.
const (
	publishGrace = 3 * time.Second
	publishRetry = 50 * time.Millisecond
)

// reserve takes the stream for a new session: this node's reservation and
// the cluster-wide publisher lease.
func (r *Recorder) reserve(ctx context.Context, st accounts.Stream, tracks []*track) (*session, error) {
	path := st.ID
	r.mu.Lock()
	if _, busy := r.live[path]; busy {
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: stream %s", rtsp.ErrBusy, path)
	}
	s := newSession(r, st, tracks)
	r.live[path] = s // reserved while the lease is taken
	r.mu.Unlock()

	held, ok, err := r.lease.TryAcquire(ctx, "rtsp-publish/"+path, r.cfg.LeaseTTL)
	if err != nil || !ok {
		r.mu.Lock()
		delete(r.live, path)
		r.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("segmenter: publisher lease of %s: %w", path, err)
		}
		return nil, fmt.Errorf("%w: stream %s is published on another node", rtsp.ErrBusy, path)
	}
	s.start(held)
	return s, nil
}

// plan picks the tracks a session records from the announced media.
func (r *Recorder) plan(ctx context.Context, stream string, medias []rtsp.Media) ([]*track, error) {
	tracks := make([]*track, len(medias))
	video := false
	for i, m := range medias {
		t, err := newTrack(m)
		switch {
		case errors.Is(err, errIgnored):
			r.log.InfoContext(ctx, "segmenter: media not recorded", "stream", stream, "type", m.Type, "codec", m.Codec)
			continue
		case err != nil:
			return nil, fmt.Errorf("%w: %w", rtsp.ErrUnsupported, err)
		}
		if t.video != nil {
			t.video.pool = &r.aus
			if video {
				r.log.InfoContext(ctx, "segmenter: second video media not recorded", "stream", stream, "codec", m.Codec)
				continue
			}
			video = true
		}
		tracks[i] = t
	}
	if !video {
		return nil, fmt.Errorf("%w: no H.264 or H.265 video", rtsp.ErrUnsupported)
	}
	return tracks, nil
}

// release ends s's reservation of its stream.
func (r *Recorder) release(s *session, endMS int64) {
	r.mu.Lock()
	if r.live[s.st.ID] == s {
		delete(r.live, s.st.ID)
	}
	if endMS > r.lastEnd[s.st.ID] {
		r.lastEnd[s.st.ID] = endMS
	}
	r.mu.Unlock()
	r.m.sessions.Dec()
}

// recordedEnd is the end (Unix ms) of what stream st has recorded near
// now: a new segment must not start before it.
func (r *Recorder) recordedEnd(ctx context.Context, st accounts.Stream, now int64) int64 {
	r.mu.Lock()
	end := r.lastEnd[st.ID]
	r.mu.Unlock()
	ref := storage.StreamRef{Account: st.Account, Camera: st.Camera, Stream: st.ID}
	segs, err := r.idx.Segments(ctx, ref, now-int64(index.MaxSegmentDuration/time.Millisecond), now+int64(time.Hour/time.Millisecond))
	if err != nil {
		r.log.WarnContext(ctx, "segmenter: index unavailable; continuity from this node only", "stream", st.ID, "err", err)
	}
	for _, s := range segs {
		end = max(end, s.End())
	}
	return end
}

// spoolPath is where a segment of stream starting at startMS is spooled.
func (r *Recorder) spoolPath(stream string, startMS int64) string {
	return filepath.Join(r.cfg.SpoolDir, stream, fmt.Sprintf("%d.mp4", startMS))
}

// Drain waits (at most 5 s, or until ctx ends) for the uploads in flight,
// e.g. the last segments of sessions a shutdown closed; what is left stays
// spooled for the next start.
func (r *Recorder) Drain(ctx context.Context) {
	done := make(chan struct{})
	go func() { r.uploads.Wait(); close(done) }()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		r.log.WarnContext(ctx, "segmenter: uploads still in flight at shutdown stay spooled")
	case <-ctx.Done():
	}
}

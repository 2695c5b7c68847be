package playback

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/live"
	"github.com/vigilcloud/vigil/media"
	"github.com/vigilcloud/vigil/storage"
)

// Low-latency HLS (LL-HLS, RFC 8216bis) of a stream recorded over RTSP on
// this node. The recorder's fragments (about 1 s each) are the parts:
//
//   - live.m3u8 lists the session's newest segments (package live): closed
//     ones as segments/{start}/media.m4s, the newest closed one and the
//     open one also part by part as parts/{session}/{n}.m4s, and an
//     EXT-X-PRELOAD-HINT names the next part.
//   - Blocking reload: _HLS_msn=M[&_HLS_part=P] holds the request until
//     segment M is complete (part P of M, or a later part, exists), for at
//     most three target durations (then 503 live_timeout). A request more
//     than two segments ahead, or P more than three parts past the open
//     segment's, is 400 bad_hls_param, as is a malformed, duplicated or
//     unknown _HLS_ parameter. One client holds at most
//     Options.LiveBlockedPerClient requests at once, the node
//     Options.LiveMaxBlocked (429 too_many_blocked_requests).
//   - A part is served from memory while held, else as a byte range of
//     the stored segment; a request for the hinted next part waits for it
//     like a blocking reload. The open segment's init section and a closed
//     segment not stored yet come from memory too.
//
// Numbering: a segment's media sequence number is the one the segment
// window (live) gives it on every node: the day's ordinal, with the
// session's first listed segment numbered from the index once per
// session, and the following ones by their place in the session. So a
// player may move between the recording node (parts) and any other node
// (the segment window of the index) without renumbering; only the parts
// and the blocking reload are the recording node's.

// LiveWindow is this node's live window of the streams it records (a
// *live.Buffer).
type LiveWindow interface {
	Snapshot(stream string) (live.Snapshot, bool)
	PartData(stream, session string, n int64) ([]byte, live.Segment, live.Part, bool)
	Init(stream string, startMS int64) ([]byte, bool)
	Media(stream string, startMS int64) ([][]byte, bool)
}

// Limits of the LL-HLS request parameters.
const (
	maxAheadSegments = 2   // _HLS_msn beyond the newest segment listed
	maxAheadParts    = 3   // _HLS_part beyond the open segment's newest part
	maxPartIndex     = 600 // parts in one segment: a minute of 100-ms parts
	maxLiveWait      = 30 * time.Second
	partsListed      = 2 // segments listed part by part: the newest closed and the open one
)

// parsePartRoute parses "{session}/{n}.m4s" after parts/.
func parsePartRoute(s string) (route, error) {
	sess, file, ok := strings.Cut(s, "/")
	num, isM4S := strings.CutSuffix(file, ".m4s")
	if !ok || !isM4S {
		return route{}, nil
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if !live.ValidSession(sess) || err != nil || !httpx.Digits(num) || len(num) > 15 {
		return route{}, fmt.Errorf("invalid part %q: parts/{session}/{n}.m4s", s)
	}
	return route{kind: routeLivePart, session: sess, start: n}, nil
}

// hlsParams is a blocking reload's request: segment msn (-1: none), part
// (-1: none).
type hlsParams struct{ msn, part int64 }

// parseHLSParams reads _HLS_msn and _HLS_part.
func parseHLSParams(r *http.Request) (hlsParams, error) {
	q := hlsParams{msn: -1, part: -1}
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return q, errors.New("malformed query")
	}
	for k, v := range vals {
		if !strings.HasPrefix(k, "_HLS_") {
			continue
		}
		if len(v) != 1 {
			return q, fmt.Errorf("%s given %d times", k, len(v))
		}
		n, err := strconv.ParseInt(v[0], 10, 64)
		if err != nil || !httpx.Digits(v[0]) || len(v[0]) > 18 {
			return q, fmt.Errorf("%s must be a non-negative integer", k)
		}
		switch k {
		case "_HLS_msn":
			q.msn = n
		case "_HLS_part":
			if n > maxPartIndex {
				return q, fmt.Errorf("_HLS_part must be at most %d", maxPartIndex)
			}
			q.part = n
		default:
			return q, fmt.Errorf("%s is not supported (no delta updates)", k)
		}
	}
	if q.part >= 0 && q.msn < 0 {
		return q, errors.New("_HLS_part needs _HLS_msn")
	}
	return q, nil
}

// liveOrLowLatency serves live.m3u8: LL-HLS when this node records the
// stream, else the segment window.
func (h *Handler) liveOrLowLatency(w http.ResponseWriter, r *http.Request, p auth.Principal, st accounts.Stream, ref storage.StreamRef) {
	streamID := st.ID
	q, err := parseHLSParams(r)
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "bad_hls_param", err.Error())
		return
	}
	if h.opts.Live != nil {
		if snap, ok := h.opts.Live.Snapshot(streamID); ok {
			h.lowLatency(w, r, p, st, ref, q, snap)
			return
		}
	}
	// Not recorded here: the segment window, answered at once (it does
	// not advertise blocking reload).
	h.live(w, r, p, streamID, ref)
}

// llWindow is a snapshot numbered for a playlist.
type llWindow struct {
	snap      live.Snapshot
	segs      []live.Segment // listed: from the first with a part
	seq0      int64          // media sequence number of segs[0]
	disco0    int64          // discontinuity sequence at segs[0]
	disco     []bool         // segs[i] starts a new run
	openMSN   int64          // number of the newest segment listed (open or not)
	openParts int            // parts of that segment
}

// satisfied says whether w holds what q waits for.
func (lw llWindow) satisfied(q hlsParams) bool {
	if q.msn < 0 {
		return true
	}
	for i := len(lw.segs) - 1; i >= 0; i-- {
		m, s := lw.seq0+int64(i), lw.segs[i]
		switch {
		case m > q.msn && (len(s.Parts) > 0 || s.Closed):
			return true
		case m == q.msn && q.part < 0:
			return s.Closed
		case m == q.msn:
			return int64(len(s.Parts)) > q.part
		}
	}
	return false
}

// tooFar says whether q asks for more than the server may wait for.
func (lw llWindow) tooFar(q hlsParams) bool {
	switch {
	case q.msn < 0:
		return false
	case q.msn > lw.openMSN+maxAheadSegments:
		return true
	case q.msn == lw.openMSN:
		return q.part > int64(lw.openParts)+maxAheadParts
	case q.msn > lw.openMSN:
		return q.part > maxAheadParts
	}
	return false
}

// lowLatency serves the LL-HLS playlist of a stream recorded here,
// holding a blocking reload until it can answer.
func (h *Handler) lowLatency(w http.ResponseWriter, r *http.Request, p auth.Principal, st accounts.Stream, ref storage.StreamRef, q hlsParams, snap live.Snapshot) {
	ctx, streamID := r.Context(), st.ID
	lw, err := h.number(ctx, ref, snap)
	if err != nil {
		h.log.WarnContext(ctx, "playback: live numbering failed", "stream", streamID, "err", err)
		unavailable(w, "index_unavailable", "index unavailable, retry")
		return
	}
	if lw.tooFar(q) {
		httpx.WriteError(w, http.StatusBadRequest, "bad_hls_param",
			fmt.Sprintf("_HLS_msn=%d&_HLS_part=%d is too far ahead of the newest segment %d (part %d)", q.msn, q.part, lw.openMSN, lw.openParts))
		return
	}
	if !lw.satisfied(q) && !lw.snap.Ended {
		release, ok := h.blocked.take(p.Actor())
		if !ok {
			w.Header().Set("Retry-After", "1")
			httpx.WriteError(w, http.StatusTooManyRequests, "too_many_blocked_requests", "too many live requests waiting at once")
			return
		}
		defer release()
		wait := min(3*targetDuration(lw), maxLiveWait)
		deadline := time.NewTimer(wait)
		defer deadline.Stop()
		for !lw.satisfied(q) && !lw.snap.Ended {
			select {
			case <-ctx.Done():
				return
			case <-deadline.C:
				w.Header().Set("Retry-After", "1")
				httpx.WriteError(w, http.StatusServiceUnavailable, "live_timeout", "the requested part did not appear in time")
				return
			case <-lw.snap.Changed:
			}
			s, found := h.opts.Live.Snapshot(streamID)
			if !found {
				h.live(w, r, p, streamID, ref) // the session went: the segment window
				return
			}
			if lw, err = h.number(ctx, ref, s); err != nil {
				unavailable(w, "index_unavailable", "index unavailable, retry")
				return
			}
		}
		if !h.stillWatches(w, r, p, st) {
			return
		}
	}
	var b bytes.Buffer
	h.writeLowLatency(&b, p, streamID, lw, h.opts.Now().Add(h.opts.URLTTL))
	writeM3U8(w, &b, "no-cache")
}

// targetDuration is the playlist's EXT-X-TARGETDURATION in seconds as a
// duration: the longest segment listed, rounded up, at least 1 s.
func targetDuration(lw llWindow) time.Duration {
	var longest int64 = 1000
	for _, s := range lw.segs {
		d := s.DurationMS
		if !s.Closed {
			d = 0
			for _, p := range s.Parts {
				d += p.Duration.Milliseconds()
			}
		}
		longest = max(longest, d)
	}
	return time.Duration((longest+999)/1000) * time.Second
}

func partTarget(lw llWindow) time.Duration {
	return max(lw.snap.PartTarget, 100*time.Millisecond)
}

// writeLowLatency writes the LL-HLS playlist of lw.
func (h *Handler) writeLowLatency(b *bytes.Buffer, p auth.Principal, streamID string, lw llWindow, exp time.Time) {
	pt := partTarget(lw)
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:9\n")
	fmt.Fprintf(b, "#EXT-X-TARGETDURATION:%d\n", int64(targetDuration(lw)/time.Second))
	fmt.Fprintf(b, "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=%s\n", seconds(3*pt))
	fmt.Fprintf(b, "#EXT-X-PART-INF:PART-TARGET=%s\n", seconds(pt))
	fmt.Fprintf(b, "#EXT-X-MEDIA-SEQUENCE:%d\n#EXT-X-DISCONTINUITY-SEQUENCE:%d\n", lw.seq0, lw.disco0)
	b.WriteString("#EXT-X-INDEPENDENT-SEGMENTS\n")
	uri := func(rel string) string { return h.entryURI(p, streamID, rel, exp) }
	for i, s := range lw.segs {
		if i > 0 && lw.disco[i] {
			b.WriteString("#EXT-X-DISCONTINUITY\n")
		}
		b.WriteString("#EXT-X-PROGRAM-DATE-TIME:")
		b.WriteString(time.UnixMilli(s.Start).UTC().Format("2006-01-02T15:04:05.000Z07:00"))
		b.WriteByte('\n')
		rel := "segments/" + strconv.FormatInt(s.Start, 10)
		if i == 0 || lw.disco[i] {
			fmt.Fprintf(b, "#EXT-X-MAP:URI=\"%s\"\n", uri(rel+"/init.mp4"))
		}
		if i >= len(lw.segs)-partsListed {
			for _, pt := range s.Parts {
				fmt.Fprintf(b, "#EXT-X-PART:DURATION=%s,URI=\"%s\"", seconds(pt.Duration), uri(partRel(lw.snap.Session, pt.N)))
				if pt.Independent {
					b.WriteString(",INDEPENDENT=YES")
				}
				b.WriteByte('\n')
			}
		}
		if s.Closed {
			fmt.Fprintf(b, "#EXTINF:%d.%03d,\n%s\n", s.DurationMS/1000, s.DurationMS%1000, uri(rel+"/media.m4s"))
		}
	}
	if !lw.snap.Ended {
		fmt.Fprintf(b, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"%s\"\n", uri(partRel(lw.snap.Session, lw.snap.NextPart)))
	}
}

func partRel(session string, n int64) string {
	return "parts/" + session + "/" + strconv.FormatInt(n, 10) + ".m4s"
}

// seconds formats d as decimal seconds with milliseconds.
func seconds(d time.Duration) string {
	ms := d.Milliseconds()
	return fmt.Sprintf("%d.%03d", ms/1000, ms%1000)
}

// asIndexSegment is s as the index will hold it, for discontinuous.
func asIndexSegment(s live.Segment) index.Segment {
	return index.Segment{Start: s.Start, DurationMS: s.DurationMS, ContentType: media.ContentTypeMP4, Head: s.Head}
}

// liveBase numbers a session: the media and discontinuity sequence of
// its segment seq.
type liveBase struct {
	seq, msn, disco int64
}

// liveBases remembers each session's numbering (bounded; recomputed
// from the index when forgotten).
type liveBases struct {
	mu sync.Mutex
	m  map[string]liveBase // by session
}

const maxLiveBases = 8192

func (lb *liveBases) get(session string) (liveBase, bool) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	b, ok := lb.m[session]
	return b, ok
}

func (lb *liveBases) put(session string, b liveBase) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if len(lb.m) >= maxLiveBases {
		clear(lb.m) // sessions renumber from the index: the same numbers
	}
	lb.m[session] = b
}

// number lists snap's segments from the first with a part and numbers
// them (see the comment at the top).
func (h *Handler) number(ctx context.Context, ref storage.StreamRef, snap live.Snapshot) (llWindow, error) {
	lw := llWindow{snap: snap}
	for i, s := range snap.Segments {
		if len(s.Parts) > 0 || s.Closed {
			lw.segs = snap.Segments[i:]
			break
		}
	}
	if n := len(lw.segs); n > 0 && !lw.segs[n-1].Closed && len(lw.segs[n-1].Parts) == 0 {
		lw.segs = lw.segs[:n-1] // an open segment without parts yet: only the hint names it
	}
	lw.disco = make([]bool, len(lw.segs))
	for i := 1; i < len(lw.segs); i++ {
		prev, next := lw.segs[i-1], lw.segs[i]
		lw.disco[i] = discontinuous(asIndexSegment(prev), asIndexSegment(next), prev.Head, next.Head)
	}
	if len(lw.segs) == 0 {
		// Nothing listed yet: number what comes next from the index.
		base, err := h.sessionBase(ctx, ref, snap, live.Segment{Start: h.opts.Now().UnixMilli()})
		lw.seq0, lw.disco0 = base.msn, base.disco
		lw.openMSN = lw.seq0
		return lw, err
	}
	first := lw.segs[0]
	base, err := h.sessionBase(ctx, ref, snap, first)
	if err != nil {
		return lw, err
	}
	lw.seq0, lw.disco0 = base.msn+first.Seq-base.seq, base.disco
	// The runs that begin after the remembered segment, up to the first listed.
	for i := 1; i < len(snap.Segments); i++ {
		prev, s := snap.Segments[i-1], snap.Segments[i]
		if s.Seq > base.seq && s.Seq <= first.Seq && discontinuous(asIndexSegment(prev), asIndexSegment(s), prev.Head, s.Head) {
			lw.disco0++
		}
	}
	if first.Seq != base.seq && first.Head.Known() {
		h.bases.put(snap.Session, liveBase{seq: first.Seq, msn: lw.seq0, disco: lw.disco0})
	}
	last := lw.segs[len(lw.segs)-1]
	lw.openMSN = lw.seq0 + int64(len(lw.segs)) - 1
	lw.openParts = len(last.Parts)
	if last.Closed {
		lw.openMSN++
		lw.openParts = 0
	}
	return lw, nil
}

// sessionBase is the remembered numbering of snap's session, or that of
// first computed from the index as the segment window numbers it.
func (h *Handler) sessionBase(ctx context.Context, ref storage.StreamRef, snap live.Snapshot, first live.Segment) (liveBase, error) {
	// The remembered numbering holds while its segment is still in the
	// window (the segments between are there to count runs).
	if b, ok := h.bases.get(snap.Session); ok && len(snap.Segments) > 0 && b.seq >= snap.Segments[0].Seq && b.seq <= first.Seq {
		return b, nil
	}
	head, err := h.liveHead(ctx, ref, asIndexSegment(first), first.Head)
	if err != nil {
		return liveBase{}, err
	}
	b := liveBase{seq: first.Seq, msn: head.mediaSeq, disco: head.discoSeq}
	if first.Head.Known() {
		h.bases.put(snap.Session, b)
	}
	return b, nil
}

// livePart serves part n of a session: from memory while held, else from
// the stored segment. The next part (the preload hint) is waited for.
func (h *Handler) livePart(w http.ResponseWriter, r *http.Request, p auth.Principal, st accounts.Stream, ref storage.StreamRef, session string, n int64) {
	ctx := r.Context()
	if h.opts.Live == nil {
		httpx.WriteError(w, http.StatusNotFound, "part_not_found", "this node records no live parts")
		return
	}
	data, seg, part, ok := h.opts.Live.PartData(ref.Stream, session, n)
	if !ok {
		snap, found := h.opts.Live.Snapshot(ref.Stream)
		if !found || snap.Session != session || snap.Ended || n != snap.NextPart {
			httpx.WriteError(w, http.StatusNotFound, "part_not_found", "no such live part (the session ended, or the part left the window)")
			return
		}
		release, slot := h.blocked.take(p.Actor())
		if !slot {
			w.Header().Set("Retry-After", "1")
			httpx.WriteError(w, http.StatusTooManyRequests, "too_many_blocked_requests", "too many live requests waiting at once")
			return
		}
		defer release()
		deadline := time.NewTimer(min(3*max(snap.PartTarget, time.Second), maxLiveWait))
		defer deadline.Stop()
		for !ok {
			select {
			case <-ctx.Done():
				return
			case <-deadline.C:
				w.Header().Set("Retry-After", "1")
				httpx.WriteError(w, http.StatusServiceUnavailable, "live_timeout", "the part did not appear in time")
				return
			case <-snap.Changed:
			}
			if data, seg, part, ok = h.opts.Live.PartData(ref.Stream, session, n); ok {
				break
			}
			if snap, found = h.opts.Live.Snapshot(ref.Stream); !found || snap.Session != session || snap.Ended {
				httpx.WriteError(w, http.StatusNotFound, "part_not_found", "the live session ended")
				return
			}
		}
		if !h.stillWatches(w, r, p, st) {
			return
		}
	}
	if data == nil {
		h.serveBytes(w, r, ref, seg.Start, byteWindow{offset: seg.InitSize + part.Offset, size: part.Size, contentType: "video/iso.segment"})
		return
	}
	writeHeld(w, r, "video/iso.segment", data)
}

// stillWatches checks scope and privacy mode again after a request
// waited: either may have changed meanwhile. It answers the request
// itself (false) when p may no longer watch st.
func (h *Handler) stillWatches(w http.ResponseWriter, r *http.Request, p auth.Principal, st accounts.Stream) bool {
	if err := h.reg.Allowed(p, st.Account, accounts.Read); err != nil {
		httpx.WriteError(w, http.StatusForbidden, "forbidden", err.Error())
		return false
	}
	return h.mayWatch(w, r, p, st)
}

// serveHeld serves the init section or media of a segment held in the
// live window (being recorded, or closed and not stored yet), and says
// whether it did.
func (h *Handler) serveHeld(w http.ResponseWriter, r *http.Request, stream string, start int64, init bool) bool {
	if h.opts.Live == nil {
		return false
	}
	if init {
		b, ok := h.opts.Live.Init(stream, start)
		if ok {
			writeHeld(w, r, media.ContentTypeMP4, b)
		}
		return ok
	}
	frags, ok := h.opts.Live.Media(stream, start)
	if ok {
		writeHeld(w, r, "video/iso.segment", bytes.Join(frags, nil))
	}
	return ok
}

// writeHeld answers with b whole (Range is not honoured for bytes still
// in memory: they are small, and become a stored object soon).
func writeHeld(w http.ResponseWriter, r *http.Request, ctype string, b []byte) {
	hd := w.Header()
	hd.Set("Content-Type", ctype)
	hd.Set("Content-Length", strconv.Itoa(len(b)))
	hd.Set("Cache-Control", "private, max-age=3600")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

// blocked bounds the live requests held waiting: on the node, and per
// client, so that one client cannot hold every slot.
type blocked struct {
	mu          sync.Mutex
	total       int
	per         map[string]int
	max, perMax int
	held        prometheus.Gauge
	refused     prometheus.Counter
}

func newBlocked(max, perMax int, reg prometheus.Registerer) *blocked {
	b := &blocked{max: max, perMax: perMax, per: map[string]int{},
		held: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_live_blocked_requests",
			Help: "Live playlist and part requests held waiting (LL-HLS blocking reload, preload hints)."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_live_blocked_refused_total",
			Help: "Live requests refused (429) because the node or the client held its share of waiting requests."}),
	}
	if reg != nil {
		reg.MustRegister(b.held, b.refused)
	}
	return b
}

// take holds one slot for client, or says there is none.
func (b *blocked) take(client string) (release func(), ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.total >= b.max || b.per[client] >= b.perMax {
		b.refused.Inc()
		return nil, false
	}
	b.total++
	b.per[client]++
	b.held.Inc()
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.total--
		if b.per[client]--; b.per[client] <= 0 {
			delete(b.per, client)
		}
		b.held.Dec()
	}, true
}

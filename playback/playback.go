// Package playback is the viewer-facing HTTP API: a stream's recordings in
// a time window, the bytes of one segment with Range support, HLS
// playlists and clips.
//
// Who may view (issue 13, DESIGN.md section 1):
//   - The operator reaches every stream. Users reach the streams of the
//     accounts in their scope (accounts.Registry.Allowed with Read): their
//     own account and, for a reseller's users, its sub-accounts. Bridge and
//     billing tokens read nothing (403).
//   - Privacy mode: while a stream's account has it on and not suspended
//     (privacy_suspended_until unset or past), only the account's own users
//     get its video (segments, playlists, live, clips); everyone else in
//     scope, the reseller's users in particular, gets 403 privacy_mode,
//     and the refusal goes to the account's audit log (privacy.refused, at
//     most once a minute per actor and stream on each node). The recordings
//     list stays visible: it is metadata.
//   - The operator is exempt from privacy mode. The operator token is the
//     service's own root credential ("the operator token reaches
//     everything"); privacy mode protects the customer from its reseller,
//     and a reseller never holds it.
//   - Signed segment URLs (sign.go) act as the principal who fetched the
//     playlist, checked again when used.
package playback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/storage"
)

// Pattern is the ServeMux pattern the handler serves (GET matches HEAD too).
// The handler parses the request's escaped path itself.
const Pattern = "GET /v1/streams/{stream}/"

// MaxWindow is the longest recordings window one request may ask for.
const MaxWindow = 31 * 24 * time.Hour

// Registry finds streams and their accounts and answers the scope rule (a
// *accounts.Registry). Unknown and deleted streams and accounts are
// meter.ErrNotFound (DeletedAt set counts as deleted).
type Registry interface {
	Stream(ctx context.Context, id string) (accounts.Stream, error)
	Account(ctx context.Context, id string) (accounts.Account, error)
	Allowed(p auth.Principal, account string, need accounts.Need) error
}

// Index is the part of the recording index playback reads.
type Index interface {
	Lookup(ctx context.Context, ref storage.StreamRef, start int64) (index.Segment, error)
	Segments(ctx context.Context, ref storage.StreamRef, from, to int64) ([]index.Segment, error)
	Spans(ctx context.Context, ref storage.StreamRef, from, to int64) ([]index.Span, error)
}

// Handler serves the viewer endpoints. It is safe for concurrent use.
type Handler struct {
	store   storage.Backend
	idx     Index
	reg     Registry
	log     *slog.Logger
	sign    signer
	opts    Options
	refused refusals
	inits   *initCache // init section keys by segment (hls.go)
	blocked *blocked   // live requests held waiting (lowlatency.go)
	bases   *liveBases // numbering of live sessions (lowlatency.go)
}

// Options tune a Handler; zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// URLKey signs the segment URLs a playlist lists (see DeriveURLKey).
	// Without it the URLs carry no signature and need the bearer token.
	URLKey []byte
	// URLTTL is how long a signed URL stays valid (default 6h; live
	// playlists are refetched, so their URLs are renewed).
	URLTTL time.Duration
	// LiveSegments is how many of the newest segments live.m3u8 lists
	// (default 6), LiveWindow how far back it looks for them (default 10m).
	LiveSegments int
	LiveWindow   time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Audit records refusals by privacy mode (an *access.Registry); nil
	// records none.
	Audit Auditor
	// Signers checks the user who signed a URL when it is used; without
	// it, only URLs the operator signed open.
	Signers Signers
	// Live is this node's live window of the streams it records over
	// RTSP (a *live.Buffer): live.m3u8 of such a stream is low-latency
	// HLS. Nil: every live.m3u8 is the segment window.
	Live LiveWindow
	// LiveMaxBlocked bounds the live requests held waiting at once
	// (blocking playlist reload, preload hints) on this node (default
	// 4096), LiveBlockedPerClient those of one client (default 64).
	LiveMaxBlocked, LiveBlockedPerClient int
	// Registerer takes the live metrics; nil registers none.
	Registerer prometheus.Registerer
}

// New returns the playback handler reading store and idx, with streams
// looked up in reg. log may be nil. Playlist URLs are not signed.
func New(store storage.Backend, idx Index, reg Registry, log *slog.Logger) *Handler {
	return NewWithOptions(store, idx, reg, Options{Logger: log})
}

// NewWithOptions is New with options.
func NewWithOptions(store storage.Backend, idx Index, reg Registry, opts Options) *Handler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.URLTTL <= 0 {
		opts.URLTTL = 6 * time.Hour
	}
	if opts.LiveSegments <= 0 {
		opts.LiveSegments = 6
	}
	if opts.LiveWindow <= 0 {
		opts.LiveWindow = 10 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.LiveMaxBlocked <= 0 {
		opts.LiveMaxBlocked = 4096
	}
	if opts.LiveBlockedPerClient <= 0 {
		opts.LiveBlockedPerClient = 64
	}
	return &Handler{store: store, idx: idx, reg: reg, log: opts.Logger, sign: signer{key: opts.URLKey}, opts: opts, inits: newInitCache(initCacheSize),
		blocked: newBlocked(opts.LiveMaxBlocked, opts.LiveBlockedPerClient, opts.Registerer), bases: &liveBases{m: map[string]liveBase{}}}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		httpx.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
		return
	}
	p := auth.FromContext(r.Context())
	switch p.Kind {
	case auth.Anonymous:
		if !HasURLSignature(r) {
			httpx.WriteError(w, http.StatusUnauthorized, "unauthorized", "missing or unknown bearer token")
			return
		}
	case auth.Operator, auth.User:
	default:
		httpx.WriteError(w, http.StatusForbidden, "forbidden", p.Actor()+" reads no video")
		return
	}
	streamID, rest, err := splitPath(r)
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	rt, err := parseRoute(rest)
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "bad_time", err.Error())
		return
	}
	if rt.kind == routeNone {
		httpx.WriteError(w, http.StatusNotFound, "not_found", "no such endpoint")
		return
	}
	if p.Kind == auth.Anonymous {
		// Signed URLs open the segment routes only.
		if rt.kind != routeSegment && rt.kind != routeInit && rt.kind != routeMedia && rt.kind != routeMediaTS && rt.kind != routeLivePart {
			httpx.WriteError(w, http.StatusUnauthorized, "unauthorized", "missing or unknown bearer token")
			return
		}
		var ok bool
		if p, ok = h.signedPrincipal(w, r); !ok {
			return
		}
	}
	st, err := h.reg.Stream(r.Context(), streamID)
	switch {
	case errors.Is(err, meter.ErrNotFound) || err == nil && st.DeletedAt != nil:
		httpx.WriteError(w, http.StatusNotFound, "stream_not_found", "unknown or deleted stream "+streamID)
		return
	case err != nil:
		h.log.WarnContext(r.Context(), "playback: registry lookup failed", "stream", streamID, "err", err)
		unavailable(w, "meter_unavailable", "stream registry unavailable")
		return
	}
	if err := h.reg.Allowed(p, st.Account, accounts.Read); err != nil {
		httpx.WriteError(w, http.StatusForbidden, "forbidden", err.Error())
		return
	}
	// The recordings list is metadata: privacy mode leaves it visible.
	if rt.kind != routeRecordings && !h.mayWatch(w, r, p, st) {
		return
	}
	ref := storage.StreamRef{Account: st.Account, Camera: st.Camera, Stream: st.ID}
	switch rt.kind {
	case routeRecordings:
		h.recordings(w, r, st.ID, ref)
	case routeSegment:
		h.segment(w, r, ref, rt.start)
	case routeInit, routeMedia:
		h.part(w, r, ref, rt.start, rt.kind == routeInit)
	case routeMediaTS:
		h.transportStream(w, r, ref, rt.start)
	case routePlaylist:
		h.playlist(w, r, p, st.ID, ref)
	case routeLive:
		h.liveOrLowLatency(w, r, p, st, ref)
	case routeLivePart:
		h.livePart(w, r, p, st, ref, rt.session, rt.start)
	case routeClip:
		h.clip(w, r, ref)
	}
}

type routeKind int

const (
	routeNone routeKind = iota
	routeRecordings
	routeSegment
	routeInit
	routeMedia
	routeMediaTS
	routePlaylist
	routeLive
	routeClip
	routeLivePart
)

type route struct {
	kind    routeKind
	start   int64  // segment routes; the part number of routeLivePart
	session string // routeLivePart
}

// parseRoute parses what follows /v1/streams/{stream}/ (escaped). An
// unknown endpoint is routeNone; a bad segment start is an error.
func parseRoute(rest string) (route, error) {
	switch rest {
	case "recordings":
		return route{kind: routeRecordings}, nil
	case "playlist.m3u8":
		return route{kind: routePlaylist}, nil
	case "live.m3u8":
		return route{kind: routeLive}, nil
	case "clip.mp4":
		return route{kind: routeClip}, nil
	}
	if pr, ok := strings.CutPrefix(rest, "parts/"); ok {
		return parsePartRoute(pr)
	}
	seg, ok := strings.CutPrefix(rest, "segments/")
	if !ok {
		return route{}, nil
	}
	kind := routeSegment
	if s, sub, found := strings.Cut(seg, "/"); found {
		switch sub {
		case "init.mp4":
			kind = routeInit
		case "media.m4s":
			kind = routeMedia
		case "media.ts":
			kind = routeMediaTS
		default:
			return route{}, nil
		}
		seg = s
	}
	s, err := url.PathUnescape(seg)
	if err == nil {
		var start int64
		if start, err = httpx.ParseTime(s); err == nil {
			return route{kind: kind, start: start}, nil
		}
	}
	return route{}, fmt.Errorf("invalid segment start %q", seg)
}

// splitPath returns the stream id and what follows it in
// /v1/streams/{stream}/..., from the escaped path so that an encoded slash
// cannot smuggle a different id.
func splitPath(r *http.Request) (stream, rest string, err error) {
	const prefix = "/v1/streams/"
	p := r.URL.EscapedPath()
	if !strings.HasPrefix(p, prefix) {
		return "", "", fmt.Errorf("path %q is not under %s", p, prefix)
	}
	raw, rest, _ := strings.Cut(p[len(prefix):], "/")
	stream, uerr := url.PathUnescape(raw)
	if uerr != nil || !storage.ValidID(stream) {
		return "", "", fmt.Errorf("invalid stream id %q: ids are [a-zA-Z0-9_-]{1,64}", raw)
	}
	return stream, rest, nil
}

type spanJSON struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

type segmentJSON struct {
	Start      int64  `json:"start"`
	DurationMS int64  `json:"duration_ms"`
	Size       int64  `json:"size"`
	URL        string `json:"url"`
}

// Recordings is the body of GET /v1/streams/{stream}/recordings.
//
// Query parameters besides start and end (all optional):
//   - spans=only: the timeline: spans only, answered from the index's span
//     summary without listing segments; the body has spans only.
//   - limit=n (1..MaxPageSize): at most n segments; next_cursor is set when
//     more follow. Spans cover the whole window on every page.
//   - cursor=c: the next_cursor of the previous page (with the same start,
//     end and limit). It is opaque to clients.
//
// Without limit the whole window's segments are listed, as before paging.
type Recordings struct {
	Spans      []spanJSON    `json:"spans"`
	Segments   []segmentJSON `json:"segments"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

// timelineJSON is the body of a spans=only request.
type timelineJSON struct {
	Spans []spanJSON `json:"spans"`
}

// MaxPageSize bounds limit: a day of 6-s segments is 14,400.
const MaxPageSize = 20_000

// recordingsQuery is what a recordings request asks for beyond its window.
type recordingsQuery struct {
	spansOnly bool
	limit     int   // 0: unpaged
	cursor    int64 // start of the page's first segment; <= from for the first page
}

// parseRecordingsQuery reads spans, limit and cursor, answering 400 itself
// (ok false) when they are malformed.
func parseRecordingsQuery(w http.ResponseWriter, r *http.Request, from, to int64) (q recordingsQuery, ok bool) {
	v := r.URL.Query()
	q.cursor = from
	switch sp := v.Get("spans"); sp {
	case "":
	case "only":
		q.spansOnly = true
		if v.Has("limit") || v.Has("cursor") {
			httpx.WriteError(w, http.StatusBadRequest, "bad_request", "spans=only lists no segments to page")
			return q, false
		}
	default:
		httpx.WriteError(w, http.StatusBadRequest, "bad_request", "spans must be \"only\" or absent")
		return q, false
	}
	if v.Has("limit") {
		n, err := strconv.Atoi(v.Get("limit"))
		if err != nil || n < 1 || n > MaxPageSize || !httpx.Digits(v.Get("limit")) {
			httpx.WriteError(w, http.StatusBadRequest, "bad_limit", fmt.Sprintf("limit must be 1..%d", MaxPageSize))
			return q, false
		}
		q.limit = n
	}
	if v.Has("cursor") {
		c, err := strconv.ParseInt(v.Get("cursor"), 10, 64)
		if err != nil || q.limit == 0 || c < from || c >= to || !httpx.Digits(v.Get("cursor")) {
			httpx.WriteError(w, http.StatusBadRequest, "bad_cursor", "cursor must come from next_cursor of this window, with limit")
			return q, false
		}
		q.cursor = c
	}
	return q, true
}

func (h *Handler) recordings(w http.ResponseWriter, r *http.Request, streamID string, ref storage.StreamRef) {
	from, to, ok := parseWindow(w, r, MaxWindow)
	if !ok {
		return
	}
	q, ok := parseRecordingsQuery(w, r, from, to)
	if !ok {
		return
	}
	ctx := r.Context()
	spans, err := h.idx.Spans(ctx, ref, from, to)
	if err != nil {
		h.log.WarnContext(ctx, "playback: spans failed", "stream", streamID, "err", err)
		unavailable(w, "index_unavailable", "index unavailable, retry")
		return
	}
	spansOut := make([]spanJSON, 0, len(spans))
	for _, s := range spans {
		spansOut = append(spansOut, spanJSON{s.Start, s.End})
	}
	if q.spansOnly {
		httpx.WriteJSON(w, http.StatusOK, timelineJSON{Spans: spansOut})
		return
	}
	var segs []index.Segment
	next := int64(-1)
	if q.limit > 0 {
		segs, next, err = index.PageSegments(ctx, h.idx, ref, from, to, q.cursor, q.limit)
	} else {
		segs, err = h.idx.Segments(ctx, ref, from, to)
	}
	if err != nil {
		h.log.WarnContext(ctx, "playback: segments failed", "stream", streamID, "err", err)
		unavailable(w, "index_unavailable", "index unavailable, retry")
		return
	}
	cursor := ""
	if next >= 0 {
		cursor = strconv.FormatInt(next, 10)
	}
	writeRecordings(w, streamID, spansOut, segs, cursor)
}

// lookup finds the segment at start, answering the request itself (and
// returning false) when there is none or the index fails.
func (h *Handler) lookup(w http.ResponseWriter, r *http.Request, ref storage.StreamRef, start int64) (index.Segment, bool) {
	ctx := r.Context()
	seg, err := h.idx.Lookup(ctx, ref, start)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		httpx.WriteError(w, http.StatusNotFound, "segment_not_found", "no segment starts at "+strconv.FormatInt(start, 10))
		return seg, false
	case err != nil:
		h.log.WarnContext(ctx, "playback: lookup failed", "stream", ref.Stream, "start", start, "err", err)
		unavailable(w, "index_unavailable", "index unavailable, retry")
		return seg, false
	}
	return seg, true
}

func (h *Handler) segment(w http.ResponseWriter, r *http.Request, ref storage.StreamRef, start int64) {
	seg, ok := h.lookup(w, r, ref, start)
	if !ok {
		return
	}
	etag := ""
	if seg.SHA256 != "" {
		etag = `"` + seg.SHA256 + `"`
	}
	h.serveBytes(w, r, ref, start, byteWindow{size: seg.Size, etag: etag, contentType: seg.ContentType})
}

// byteWindow is the part of a segment object a response carries.
type byteWindow struct {
	offset, size int64  // within the object
	etag         string // strong ETag, or "" when unknown
	contentType  string // "" takes the object's
}

// serveBytes answers a GET or HEAD with win of the segment object at start,
// honouring Range, If-Range and If-None-Match.
func (h *Handler) serveBytes(w http.ResponseWriter, r *http.Request, ref storage.StreamRef, start int64, win byteWindow) {
	ctx := r.Context()
	etag := win.etag
	if etag != "" {
		w.Header().Set("ETag", etag)
		if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatches(inm, etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	size := win.size
	offset, length, status := int64(0), size, http.StatusOK
	if rh := r.Header.Get("Range"); rh != "" && ifRangeHolds(r.Header.Get("If-Range"), etag) {
		o, l, ok, satisfiable := parseRange(rh, size)
		switch {
		case ok && !satisfiable:
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			httpx.WriteError(w, http.StatusRequestedRangeNotSatisfiable, "range_not_satisfiable", "range outside the segment")
			return
		case ok:
			offset, length, status = o, l, http.StatusPartialContent
		}
	}
	var body io.ReadCloser
	ct := win.contentType
	if r.Method != http.MethodHead {
		rc, info, err := h.store.Get(ctx, ref.SegmentKey(start), win.offset+offset, length)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			httpx.WriteError(w, http.StatusNotFound, "segment_not_found", "segment is gone")
			return
		case err != nil:
			h.log.WarnContext(ctx, "playback: get failed", "stream", ref.Stream, "start", start, "err", err)
			unavailable(w, "storage_unavailable", "storage unavailable, retry")
			return
		}
		defer rc.Close()
		body = rc
		if ct == "" {
			ct = info.ContentType
		}
	}
	if ct == "" {
		ct = "application/octet-stream"
	}
	hd := w.Header()
	hd.Set("Content-Type", ct)
	hd.Set("Accept-Ranges", "bytes")
	hd.Set("Content-Length", strconv.FormatInt(length, 10))
	// Segments never change once stored; retention removes them later.
	hd.Set("Cache-Control", "private, max-age=3600")
	if status == http.StatusPartialContent {
		hd.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", offset, offset+length-1, size))
	}
	w.WriteHeader(status)
	if body == nil {
		return
	}
	if n, err := io.Copy(w, body); err != nil && ctx.Err() == nil {
		h.log.WarnContext(ctx, "playback: segment copy failed", "stream", ref.Stream, "start", start, "sent", n, "err", err)
	}
}

// parseRange parses a single "bytes=" range against size. ok is false when
// the header should be ignored (malformed or several ranges: RFC 9110 lets
// a server answer those with the whole body).
func parseRange(h string, size int64) (offset, length int64, ok, satisfiable bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false, false
	}
	if first == "" { // suffix: the last n bytes
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 || !httpx.Digits(last) {
			return 0, 0, false, false
		}
		if n == 0 || size == 0 {
			return 0, 0, true, false
		}
		n = min(n, size)
		return size - n, n, true, true
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || !httpx.Digits(first) {
		return 0, 0, false, false
	}
	end := size - 1
	if last != "" {
		b, err := strconv.ParseInt(last, 10, 64)
		if err != nil || !httpx.Digits(last) || b < a {
			return 0, 0, false, false
		}
		end = min(b, size-1)
	}
	if a >= size {
		return 0, 0, true, false
	}
	return a, end - a + 1, true, true
}

func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

// ifRangeHolds says whether a Range may be honoured under If-Range: only
// when the validator is our strong ETag (dates are not tracked).
func ifRangeHolds(ifRange, etag string) bool {
	return ifRange == "" || etag != "" && ifRange == etag
}

func unavailable(w http.ResponseWriter, code, msg string) {
	w.Header().Set("Retry-After", "2")
	httpx.WriteError(w, http.StatusServiceUnavailable, code, msg)
}

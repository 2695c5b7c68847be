// Package ingest is the Bridge-facing upload API: PUT of one media segment,
// validated while it streams into storage, then recorded in the index, with
// live segments admitted ahead of backlog.
package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/ingest/picsize"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/media"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/retention"
	"github.com/vigilcloud/vigil/storage"
)

// Registry finds streams. Unknown and deleted streams are meter.ErrNotFound
// (accounts.AcceptsData treats a stream with DeletedAt set the same); any other error means
// the registry is unavailable.
type Registry interface {
	Stream(ctx context.Context, id string) (accounts.Stream, error)
}

// Index is the part of the recording index ingest writes.
type Index interface {
	Add(ctx context.Context, ref storage.StreamRef, seg index.Segment) (existing index.Segment, added bool, err error)
	Lookup(ctx context.Context, ref storage.StreamRef, start int64) (index.Segment, error)
	// DropStream and Rebuild take back an entry Add made for a stream
	// deleted meanwhile (there is no per-segment removal).
	DropStream(ctx context.Context, ref storage.StreamRef) error
	Rebuild(ctx context.Context, ref storage.StreamRef) error
}

// Config tunes the handler. Zero values take the defaults.
type Config struct {
	// MaxBodyBytes is the largest accepted segment (default 64 MiB).
	MaxBodyBytes int64
	// MaxDuration is the longest accepted segment (default 10 min).
	MaxDuration time.Duration
	// MaxFuture is how far in the future a segment may start, for Bridge
	// clock skew (default 1 h).
	MaxFuture time.Duration
	// LiveThreshold: a segment that started longer ago is backlog (default 2 min).
	LiveThreshold time.Duration
	// LiveConcurrency and BacklogConcurrency are the upload slots of each
	// class (defaults 256 and 16).
	LiveConcurrency    int
	BacklogConcurrency int
	// BacklogQueue bounds the backlog uploads waiting for a slot (default 64).
	BacklogQueue int
	// BacklogWait and LiveWait are how long an upload waits for a slot
	// before it is shed (defaults 2 s and 30 s).
	BacklogWait time.Duration
	LiveWait    time.Duration
	// BacklogYield is how much slower than their recent best live uploads
	// (90th percentile over half a second) may get before the backlog pool
	// halves (default 1.1); it grows back by one slot every half second
	// while they are not. Below 0 the pool
	// keeps BacklogConcurrency slots.
	BacklogYield float64
	// BridgeShare is the largest fraction of each class's slots that one
	// bridge may hold (default 0.25, at least one slot); an upload beyond
	// it is shed at once, so that other bridges always find slots. 1 or
	// more turns the share off.
	BridgeShare float64
	// BodyIdleTimeout ends an upload whose body sends nothing for this
	// long (default 10 s); BodyMinRate (bytes/s, default 32 KiB/s) bounds
	// the whole body to BodyIdleTimeout + size/BodyMinRate. Either answers
	// 408 and frees the upload's slot.
	BodyIdleTimeout time.Duration
	BodyMinRate     int64
	// RetryAfter is the Retry-After sent with 503 (default 2 s).
	RetryAfter time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger logs (nil: discard).
	Logger *slog.Logger
	// Registerer registers the handler's metrics (nil: not exported).
	Registerer prometheus.Registerer
	// OnStored, when set, is called after a new segment was stored and
	// indexed (not for retries of a stored one).
	OnStored func(ctx context.Context, st accounts.Stream, seg index.Segment)
	// Usage, when set, meters every object Store creates: exactly once,
	// by the Put that created it, even across a crash (docs/billing.md).
	Usage UsageRecorder
}

// UsageRecorder meters new objects (meter.Aggregator). Begin runs before a
// storage Put and must be durable when it returns; its put id goes into the
// object's metadata (meter.PutIDMetadata), so that after a crash storage
// tells whether that Put created the object. Every Begin ends in Created,
// NotCreated, or Unsure when the outcome is unknown.
type UsageRecorder interface {
	Begin(ctx context.Context, stream, key string, size int64) (putID string, err error)
	Created(putID, stream string, size int64, width, height int)
	NotCreated(putID string)
	Unsure(putID string)
}

// DefaultConfig holds the values zero fields of a Config take; vigil
// serve's flags take their defaults from it.
func DefaultConfig() Config {
	return Config{
		MaxBodyBytes:       64 << 20,
		MaxDuration:        10 * time.Minute,
		MaxFuture:          time.Hour,
		LiveThreshold:      2 * time.Minute,
		LiveConcurrency:    256,
		BacklogConcurrency: 16,
		BacklogQueue:       64,
		BacklogWait:        2 * time.Second,
		LiveWait:           30 * time.Second,
		BacklogYield:       1.1,
		BridgeShare:        0.25,
		BodyIdleTimeout:    10 * time.Second,
		BodyMinRate:        32 << 10,
		RetryAfter:         2 * time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	def(&c.MaxDuration, d.MaxDuration)
	if c.MaxDuration > index.MaxSegmentDuration {
		c.MaxDuration = index.MaxSegmentDuration
	}
	def(&c.MaxFuture, d.MaxFuture)
	def(&c.LiveThreshold, d.LiveThreshold)
	if c.LiveConcurrency <= 0 {
		c.LiveConcurrency = d.LiveConcurrency
	}
	if c.BacklogConcurrency <= 0 {
		c.BacklogConcurrency = d.BacklogConcurrency
	}
	if c.BacklogQueue <= 0 {
		c.BacklogQueue = d.BacklogQueue
	}
	def(&c.BacklogWait, d.BacklogWait)
	def(&c.LiveWait, d.LiveWait)
	if c.BacklogYield == 0 {
		c.BacklogYield = d.BacklogYield
	}
	def(&c.RetryAfter, d.RetryAfter)
	if c.BridgeShare <= 0 {
		c.BridgeShare = d.BridgeShare
	}
	def(&c.BodyIdleTimeout, d.BodyIdleTimeout)
	if c.BodyMinRate <= 0 {
		c.BodyMinRate = d.BodyMinRate
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Handler serves PUT /v1/streams/{stream}/segments/{start}. It is safe for
// concurrent use.
type Handler struct {
	cfg   Config
	store storage.Backend
	idx   Index
	reg   Registry
	log   *slog.Logger
	m     *metrics
	admit *admission
}

// New returns the upload handler writing to store and idx, with streams
// looked up in reg.
func New(cfg Config, store storage.Backend, idx Index, reg Registry) *Handler {
	cfg = cfg.withDefaults()
	m := newMetrics(cfg.Registerer)
	return &Handler{cfg: cfg, store: store, idx: idx, reg: reg, log: cfg.Logger, m: m, admit: newAdmission(cfg, m)}
}

const routePutSegment = "put_segment"

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w}
	h.serve(sw, r)
	if sw.code == 0 {
		sw.code = http.StatusOK
	}
	h.m.requests.WithLabelValues(routePutSegment, strconv.Itoa(sw.code)).Inc()
}

// upload is one parsed request.
type upload struct {
	streamID    string
	start       int64
	durationMS  int64
	width       int
	height      int
	wantSHA     string
	size        int64
	contentType string
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut {
		w.Header().Set("Allow", http.MethodPut)
		httpx.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use PUT to upload a segment")
		return
	}
	p := auth.FromContext(r.Context())
	switch p.Kind {
	case auth.Operator, auth.Bridge:
	case auth.Anonymous:
		httpx.WriteError(w, http.StatusUnauthorized, "unauthorized", "missing or unknown bearer token")
		return
	default: // a user or billing token: known, but bridges upload
		httpx.WriteError(w, http.StatusForbidden, "forbidden", "only a bridge (or the operator) uploads segments")
		return
	}
	up, status, code, err := h.parse(r)
	if err != nil {
		httpx.WriteError(w, status, code, err.Error())
		return
	}
	ctx := r.Context()
	st, err := accounts.AcceptsData(ctx, h.reg, up.streamID)
	switch {
	case errors.Is(err, meter.ErrNotFound):
		httpx.WriteError(w, http.StatusNotFound, "stream_not_found", "unknown or deleted stream "+up.streamID)
		return
	case err != nil:
		h.log.WarnContext(ctx, "ingest: registry lookup failed", "stream", up.streamID, "err", err)
		h.unavailable(w, "meter_unavailable", "stream registry unavailable")
		return
	}
	if p.Kind == auth.Bridge && st.Bridge != p.ID {
		httpx.WriteError(w, http.StatusForbidden, "forbidden", "stream "+up.streamID+" does not belong to this bridge")
		return
	}
	now := h.cfg.Now()
	if (retention.Policy{Days: st.RetentionDays}).Expired(index.Segment{Start: up.start, DurationMS: up.durationMS}, now) {
		httpx.WriteError(w, http.StatusGone, "expired", fmt.Sprintf("segment is older than the stream's %d-day retention", st.RetentionDays))
		return
	}
	if up.start > now.Add(h.cfg.MaxFuture).UnixMilli() {
		httpx.WriteError(w, http.StatusBadRequest, "bad_time", "segment start is too far in the future")
		return
	}
	class := classLive
	if r.Header.Get("X-Vigil-Backlog") == "1" || now.UnixMilli()-up.start > h.cfg.LiveThreshold.Milliseconds() {
		class = classBacklog
	}
	release, err := h.admit.acquire(ctx, class, bridgeOf(p))
	if err != nil {
		if errors.Is(err, errBridgeShare) {
			h.unavailable(w, "bridge_overloaded", "this bridge holds its share of "+class+" upload slots, retry later")
			return
		}
		if errors.Is(err, errShed) {
			h.unavailable(w, "overloaded", class+" uploads are saturated, retry later")
			return
		}
		// The client went away while queued; 499 only labels the metric.
		httpx.WriteError(w, 499, "client_closed", "client closed the request")
		return
	}
	defer release()
	began := time.Now()
	defer func() { h.m.latency.WithLabelValues(class).Observe(time.Since(began).Seconds()) }()
	// The body is read only now, holding a slot: a client that stops
	// sending must give the slot back soon.
	transfer := time.Duration(float64(up.size) / float64(h.cfg.BodyMinRate) * float64(time.Second))
	body := newDeadlineBody(w, r.Body, h.cfg.BodyIdleTimeout, began.Add(h.cfg.BodyIdleTimeout+transfer))
	defer body.clear()
	r.Body = body
	h.upload(w, r, st, up)
}

// bridgeOf is the admission share key: the bridge, or "" for the operator
// (whose uploads are tools and tests, not a tenant's).
func bridgeOf(p auth.Principal) string {
	if p.Kind == auth.Bridge {
		return p.ID
	}
	return ""
}

// parse validates everything the request says about itself.
func (h *Handler) parse(r *http.Request) (up upload, status int, code string, err error) {
	up.streamID, up.start, err = parseSegmentPath(r)
	if errors.Is(err, errNoRoute) {
		return up, http.StatusNotFound, "not_found", err
	}
	if err != nil {
		return up, http.StatusBadRequest, "bad_request", err
	}
	ds := param(r, "duration_ms", "X-Duration-Ms")
	if ds == "" {
		return up, http.StatusBadRequest, "bad_duration", errors.New("duration_ms is required (query or X-Duration-Ms)")
	}
	if up.durationMS, err = parsePositive(ds, h.cfg.MaxDuration.Milliseconds()); err != nil {
		return up, http.StatusBadRequest, "bad_duration", fmt.Errorf("duration_ms: %w", err)
	}
	wd, err := parsePositive(param(r, "width", "X-Width"), 1<<16)
	if err != nil {
		return up, http.StatusBadRequest, "bad_resolution", fmt.Errorf("width: %w", err)
	}
	ht, err := parsePositive(param(r, "height", "X-Height"), 1<<16)
	if err != nil {
		return up, http.StatusBadRequest, "bad_resolution", fmt.Errorf("height: %w", err)
	}
	up.width, up.height = int(wd), int(ht)
	if up.wantSHA, err = parseSHA256(r.Header.Get("X-Content-SHA256")); err != nil {
		return up, http.StatusBadRequest, "bad_sha256", err
	}
	switch {
	case r.ContentLength < 0:
		return up, http.StatusLengthRequired, "length_required", errors.New("Content-Length is required")
	case r.ContentLength > h.cfg.MaxBodyBytes:
		return up, http.StatusRequestEntityTooLarge, "too_large", fmt.Errorf("segment of %d bytes exceeds the %d-byte limit", r.ContentLength, h.cfg.MaxBodyBytes)
	case r.ContentLength == 0:
		return up, http.StatusBadRequest, "malformed", errors.New("empty body")
	}
	up.size = r.ContentLength
	up.contentType = media.NormalizeContentType(r.Header.Get("Content-Type"))
	if up.contentType != media.ContentTypeMP4 && up.contentType != media.ContentTypeTS {
		return up, http.StatusUnsupportedMediaType, "unsupported_media_type", fmt.Errorf("Content-Type must be %s or %s", media.ContentTypeMP4, media.ContentTypeTS)
	}
	return up, 0, "", nil
}

// result is the JSON body of a 2xx.
type result struct {
	Stream     string `json:"stream"`
	Start      int64  `json:"start"`
	DurationMS int64  `json:"duration_ms"`
	Size       int64  `json:"size"`
	SHA256     string `json:"sha256"`
	Created    bool   `json:"created"`
}

func (h *Handler) upload(w http.ResponseWriter, r *http.Request, st accounts.Stream, up upload) {
	seg := index.Segment{
		Start: up.start, DurationMS: up.durationMS, Size: up.size, SHA256: up.wantSHA,
		ContentType: up.contentType, Width: up.width, Height: up.height,
	}
	stored, created, err := h.Store(r.Context(), st, seg, r.Body)
	var be *BodyError
	switch {
	case err == nil && created:
		httpx.WriteJSON(w, http.StatusCreated, result{st.ID, stored.Start, stored.DurationMS, stored.Size, stored.SHA256, true})
	case err == nil:
		httpx.WriteJSON(w, http.StatusOK, result{st.ID, stored.Start, stored.DurationMS, stored.Size, stored.SHA256, false})
	case errors.As(err, &be):
		h.bodyError(w, r, be.Err)
	case errors.Is(err, ErrConflict):
		httpx.WriteError(w, http.StatusConflict, "conflict", "a different segment is already stored at this start")
	case errors.Is(err, ErrStreamDeleted):
		httpx.WriteError(w, http.StatusNotFound, "stream_not_found", "stream "+st.ID+" was deleted during the upload")
	case errors.Is(err, ErrInvalidSegment):
		httpx.WriteError(w, http.StatusBadRequest, "invalid_segment", err.Error())
	case errors.Is(err, ErrIndexUnavailable):
		h.unavailable(w, "index_unavailable", "index unavailable, retry")
	default:
		h.unavailable(w, "storage_unavailable", "storage unavailable, retry")
	}
}

// Errors of Store besides *BodyError.
var (
	// ErrConflict: a different segment is already stored at this start.
	ErrConflict = errors.New("ingest: a different segment is already stored at this start")
	// ErrIndexUnavailable: the index failed; a retry of the same Store
	// completes it (the object may already be stored).
	ErrIndexUnavailable = errors.New("ingest: index unavailable")
	// ErrStorageUnavailable: storage failed, or the object changed
	// concurrently (a purge); retry.
	ErrStorageUnavailable = errors.New("ingest: storage unavailable")
	// ErrStreamDeleted: the stream was deleted (or deleted and created
	// again) while the segment was being stored; what this call wrote was
	// taken back. Stop sending the stream's segments.
	ErrStreamDeleted = errors.New("ingest: stream deleted during the upload")
	// ErrInvalidSegment: the segment's description (duration, start, size)
	// is outside what an upload may be and the index can hold; no retry
	// can store it.
	ErrInvalidSegment = errors.New("ingest: invalid segment")
)

// BodyError is a segment body Store refused: malformed media, a SHA-256
// that does not match, or a reader that failed or was cancelled.
type BodyError struct{ Err error }

func (e *BodyError) Error() string { return "ingest: segment body: " + e.Err.Error() }
func (e *BodyError) Unwrap() error { return e.Err }

// Store is the core of an upload, shared by the HTTP PUT and the RTSP
// recorder: look the start up in the index, store the body unless an object
// is there (conditional Put), index it, report it to OnStored. seg gives
// Start, DurationMS, Size (the exact body length), ContentType, optional
// Width/Height and an optional expected SHA256; the body is validated and
// hashed while it streams. Width/Height are a hint: the picture size in the
// body's SPS (fMP4 init section or first MPEG-TS video PES) replaces them,
// and a claim that disagrees is counted. A retry of stored content returns created=false
// and no error; different content at the same start is ErrConflict. Other
// errors are *BodyError, ErrInvalidSegment (both permanent),
// ErrIndexUnavailable or ErrStorageUnavailable (wrapped; retry). Callers do the authorisation and time checks. SelfRecorded
// (the recorder's own spool files only) skips validating and hashing.
func (h *Handler) Store(ctx context.Context, st accounts.Stream, seg index.Segment, body io.Reader, opts ...StoreOption) (stored index.Segment, created bool, err error) {
	ref := storage.StreamRef{Account: st.Account, Camera: st.Camera, Stream: st.ID}
	key := ref.SegmentKey(seg.Start)
	var o storeOptions
	for _, opt := range opts {
		opt(&o)
	}
	// Checked before anything is stored: the index would refuse the
	// segment after the object was written, and every retry alike.
	if err := index.ValidateSegment(seg); err != nil {
		return index.Segment{}, false, fmt.Errorf("%w: %w", ErrInvalidSegment, err)
	}
	if seg.DurationMS > h.cfg.MaxDuration.Milliseconds() {
		return index.Segment{}, false, fmt.Errorf("%w: duration %d ms exceeds the %s limit", ErrInvalidSegment, seg.DurationMS, h.cfg.MaxDuration)
	}
	var b *bodyReader
	if o.selfRecorded {
		if len(seg.SHA256) != sha256.Size*2 {
			return index.Segment{}, false, &BodyError{errors.New("a self-recorded segment needs its SHA-256")}
		}
		b = &bodyReader{r: body, known: seg.SHA256}
	} else if b, err = newBody(body, seg.ContentType, seg.SHA256, h.m.bytesIn); err != nil {
		return index.Segment{}, false, &BodyError{err}
	}
	// The picture size comes from the media: read the head (init section
	// or first TS packets, bounded) before the metadata is written, and
	// replay it ahead of the rest. What was read is hashed already.
	// The index head (init section and first decode time) comes from the
	// same bytes, so that HLS need not read it back from storage.
	var src io.Reader = b
	if b.known == "" {
		head, info, err := picsize.Read(b, seg.ContentType)
		if err != nil {
			return index.Segment{}, false, &BodyError{err}
		}
		seg = h.observedSize(ctx, key, seg, info.Size)
		seg.Head = info.Head
		src = io.MultiReader(bytes.NewReader(head), b)
	} else if ra, ok := body.(io.ReaderAt); ok {
		// The recorder's spool file: read its head in place, leaving the
		// body untouched for Put. A file that cannot be read here fails
		// Put too; its head is only left unknown.
		if _, info, err := picsize.Read(io.NewSectionReader(ra, 0, seg.Size), seg.ContentType); err == nil {
			seg.Head = info.Head
		}
	}
	// Ask the index first: a retry of an indexed segment needs no write, and
	// an index that loads a stream lazily from storage (the embedded one)
	// loads it before this object exists, so the Add below records the
	// SHA-256 that the object's metadata may lack.
	cur, err := h.idx.Lookup(ctx, ref, seg.Start)
	switch {
	case err == nil && cur.SHA256 != "":
		return h.exists(ctx, st, ref, key, b, seg)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		h.log.WarnContext(ctx, "ingest: index lookup failed", "key", key, "err", err)
		return index.Segment{}, false, fmt.Errorf("%w: lookup %s: %w", ErrIndexUnavailable, key, err)
	}
	// The metadata sha256 is only the client's claim, which the body reader
	// verifies before the object can complete.
	md := index.SegmentMetadata(seg)
	u := h.cfg.Usage
	var putID string
	if u != nil {
		if putID, err = u.Begin(ctx, st.ID, key, seg.Size); err != nil {
			h.log.ErrorContext(ctx, "ingest: usage journal failed", "key", key, "err", err)
			return index.Segment{}, false, fmt.Errorf("%w: usage journal: %w", ErrStorageUnavailable, err)
		}
		if putID != "" {
			md[meter.PutIDMetadata] = putID
		}
	}
	g := &gate{r: src}
	var putBody io.Reader = g
	if b.known != "" {
		// The caller owns the body and nothing reads it after Put: hand it
		// over bare, so that a backend can copy an *os.File in the kernel.
		putBody = body
	}
	_, perr := h.store.Put(ctx, key, putBody, seg.Size, storage.PutOptions{
		IfAbsent: true, ContentType: seg.ContentType, Metadata: md,
	})
	g.detach()
	if b.known != "" && perr == nil {
		// A conforming backend completes a Put only with size bytes read.
		b.done = true
		h.m.bytesIn.Add(float64(seg.Size))
	}

	switch {
	case perr == nil && b.err != nil:
		// A backend must not complete a Put whose reader failed; if one
		// did, take the object back.
		h.log.ErrorContext(ctx, "ingest: storage completed a put whose body failed", "key", key, "err", b.err)
		if derr := h.store.Delete(context.WithoutCancel(ctx), []string{key}); derr != nil {
			h.log.ErrorContext(ctx, "ingest: delete of bad segment failed", "key", key, "err", derr)
			if u != nil {
				u.Unsure(putID)
			}
		} else if u != nil {
			u.NotCreated(putID)
		}
		return index.Segment{}, false, &BodyError{b.err}
	case perr == nil:
		if !b.done {
			// Put returned without reading to the end: impossible for a
			// conforming backend, and the SHA would be wrong.
			h.log.ErrorContext(ctx, "ingest: storage put returned before the body ended", "key", key)
			if u != nil {
				u.Unsure(putID) // stored all the same: storage decides
			}
			return index.Segment{}, false, fmt.Errorf("%w: storage did not consume %s", ErrStorageUnavailable, key)
		}
		seg.SHA256 = b.sum()
		// The registry check before the body may be long past: a deletion
		// whose purge already listed this stream must not find the object
		// surviving it (see deleted). Checked before usage is counted, so a
		// taken-back object is never metered.
		if gone := h.deleted(ctx, st); gone != nil {
			taken := h.undo(ctx, st, ref, key, false, gone)
			if u != nil {
				if taken {
					u.NotCreated(putID)
				} else {
					u.Unsure(putID) // storage decides; the meter refuses a deleted stream's usage
				}
			}
			return index.Segment{}, false, gone
		}
		if u != nil {
			// Counted by the Put that created it, indexed or not yet.
			u.Created(putID, st.ID, seg.Size, seg.Width, seg.Height)
		}
		existing, added, err := h.idx.Add(ctx, ref, seg)
		if errors.Is(err, index.ErrInvalidSegment) {
			return index.Segment{}, false, fmt.Errorf("%w: %w", ErrInvalidSegment, err)
		}
		if err != nil {
			h.log.WarnContext(ctx, "ingest: stored but not indexed; the retry will index it", "key", key, "err", err)
			return index.Segment{}, false, fmt.Errorf("%w: stored %s but not indexed: %w", ErrIndexUnavailable, key, err)
		}
		// Once more after the index entry exists: a deletion applied
		// before this check is undone here, one applied after it finds
		// the object and the entry (the purge lists, then drops the index).
		if gone := h.deleted(ctx, st); gone != nil {
			h.undo(ctx, st, ref, key, added, gone)
			return index.Segment{}, false, gone
		}
		if !added && existing.SHA256 != "" && existing.SHA256 != seg.SHA256 {
			h.log.WarnContext(ctx, "ingest: index held another segment at this start", "key", key, "indexed_sha256", existing.SHA256, "stored_sha256", seg.SHA256)
		}
		// OnStored hears of it from whoever indexes the object first: here,
		// unless a concurrent retry (exists below) indexed this very object.
		if h.cfg.OnStored != nil && (added || existing.SHA256 != seg.SHA256) {
			h.cfg.OnStored(ctx, st, seg)
		}
		h.log.DebugContext(ctx, "ingest: segment stored", "key", key, "size", seg.Size)
		return seg, true, nil
	case errors.Is(perr, storage.ErrExists):
		if u != nil {
			u.NotCreated(putID)
		}
		return h.exists(ctx, st, ref, key, b, seg)
	case b.err != nil:
		if u != nil {
			u.NotCreated(putID) // a Put whose reader failed leaves nothing
		}
		return index.Segment{}, false, &BodyError{b.err}
	}
	if u != nil {
		// Cancelled or failed: whether the object completed is unknown.
		u.Unsure(putID)
	}
	switch {
	case ctx.Err() != nil:
		h.log.InfoContext(ctx, "ingest: client went away during upload", "key", key, "err", perr)
		return index.Segment{}, false, &BodyError{fmt.Errorf("request cancelled: %w", ctx.Err())}
	default:
		h.log.WarnContext(ctx, "ingest: storage put failed", "key", key, "err", perr)
		return index.Segment{}, false, fmt.Errorf("%w: put %s: %w", ErrStorageUnavailable, key, perr)
	}
}

// observedSize gives seg the picture size of its media when there is one:
// the width and height a client sends are only a hint, kept when the
// segment carries no parameter sets. A claim that disagrees is counted.
func (h *Handler) observedSize(ctx context.Context, key string, seg index.Segment, got picsize.Size) index.Segment {
	if !got.Known() {
		return seg
	}
	if (seg.Width != 0 && seg.Width != got.Width) || (seg.Height != 0 && seg.Height != got.Height) {
		h.m.resMismatch.Inc()
		h.log.DebugContext(ctx, "ingest: claimed resolution differs from the media's", "key", key,
			"claimed_width", seg.Width, "claimed_height", seg.Height, "width", got.Width, "height", got.Height)
	}
	seg.Width, seg.Height = got.Width, got.Height
	return seg
}

// exists handles a segment whose start already holds an object: no error
// when it is this very segment (a retry), ErrConflict when it is another.
func (h *Handler) exists(ctx context.Context, st accounts.Stream, ref storage.StreamRef, key string, body *bodyReader, seg index.Segment) (index.Segment, bool, error) {
	// Hash what the backend did not read; this also validates it.
	if body.known == "" {
		if _, err := io.Copy(io.Discard, body); err != nil || body.err != nil {
			return index.Segment{}, false, &BodyError{cmpErr(body.err, err)}
		}
	}
	seg.SHA256 = body.sum()
	stored, indexed, err := h.storedSegment(ctx, ref, key, seg)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Deleted between the Put and now (a purge): let the caller retry.
		return index.Segment{}, false, fmt.Errorf("%w: %s changed concurrently", ErrStorageUnavailable, key)
	case err != nil:
		h.log.WarnContext(ctx, "ingest: reading existing segment failed", "key", key, "err", err)
		if errors.Is(err, index.ErrUnavailable) {
			return index.Segment{}, false, fmt.Errorf("%w: %w", ErrIndexUnavailable, err)
		}
		return index.Segment{}, false, fmt.Errorf("%w: %w", ErrStorageUnavailable, err)
	}
	if stored.SHA256 != seg.SHA256 {
		return stored, false, ErrConflict
	}
	if !indexed {
		_, added, err := h.idx.Add(ctx, ref, stored)
		if err != nil {
			h.log.WarnContext(ctx, "ingest: indexing existing segment failed", "key", key, "err", err)
			return index.Segment{}, false, fmt.Errorf("%w: index %s: %w", ErrIndexUnavailable, key, err)
		}
		// The object is not this call's to delete (it may belong to a
		// stream created again with the same ids), but the entry it just
		// added is.
		if gone := h.deleted(ctx, st); gone != nil {
			if added {
				h.undoIndex(ctx, st, ref, gone)
			}
			return index.Segment{}, false, gone
		}
		// The upload that stored it failed to index it, so OnStored never
		// heard of it: this retry tells it, once. (Usage counted it at the
		// Put that created it.)
		if added && h.cfg.OnStored != nil {
			h.cfg.OnStored(ctx, st, stored)
		}
	}
	// No 2xx for a stream deleted meanwhile, not even for a retry.
	if gone := h.deleted(ctx, st); gone != nil {
		return index.Segment{}, false, gone
	}
	return stored, false, nil
}

// deleted re-checks the registry for st after its segment was written:
// nil when st is still the live stream, ErrStreamDeleted when it was
// deleted or deleted and created again (another incarnation, same ids and
// keys), ErrStorageUnavailable wrapping the error when the registry cannot
// say. The purge of a deletion lists storage only after the deletion is
// applied, so a write that this check finds live is one the purge finds.
func (h *Handler) deleted(ctx context.Context, st accounts.Stream) error {
	err := accounts.StillAcceptsData(ctx, h.reg, st)
	switch {
	case errors.Is(err, meter.ErrNotFound):
		return fmt.Errorf("%w: %w", ErrStreamDeleted, err)
	case err != nil:
		return fmt.Errorf("%w: registry re-check of %s: %w", ErrStorageUnavailable, st.ID, err)
	}
	return nil
}

// undoAttempts bounds the tries of taking a write back.
const undoAttempts = 3

// undo takes back the object this call stored at key (a conditional Put,
// so it is this call's) and, when indexed, its index entry. It runs
// detached from the request: a client that hangs up must not leave video
// of a deleted stream behind.
func (h *Handler) undo(ctx context.Context, st accounts.Stream, ref storage.StreamRef, key string, indexed bool, why error) (taken bool) {
	ctx = context.WithoutCancel(ctx)
	var err error
	for i := 0; i < undoAttempts; i++ {
		if err = h.store.Delete(ctx, []string{key}); err == nil {
			break
		}
		time.Sleep(time.Duration(i+1) * 100 * time.Millisecond)
	}
	if err != nil {
		h.log.ErrorContext(ctx, "ingest: segment of a deleted stream could not be taken back; it stays in storage", "key", key, "err", err)
	} else {
		h.log.InfoContext(ctx, "ingest: segment stored during its stream's deletion taken back", "key", key, "why", why)
	}
	if indexed {
		h.undoIndex(ctx, st, ref, why)
	}
	return err == nil
}

// undoIndex takes back an index entry this call added. The index has no
// per-segment removal: a deleted stream's index is dropped whole (its purge
// drops it anyway), anything else is rebuilt from storage.
func (h *Handler) undoIndex(ctx context.Context, st accounts.Stream, ref storage.StreamRef, why error) {
	ctx = context.WithoutCancel(ctx)
	_, err := accounts.AcceptsData(ctx, h.reg, st.ID)
	recreated := !errors.Is(err, meter.ErrNotFound) // or the registry cannot say
	for i := 0; i < undoAttempts; i++ {
		if recreated {
			err = h.idx.Rebuild(ctx, ref)
		} else {
			err = h.idx.DropStream(ctx, ref)
		}
		if err == nil {
			return
		}
		time.Sleep(time.Duration(i+1) * 100 * time.Millisecond)
	}
	h.log.ErrorContext(ctx, "ingest: index entry of a deleted stream could not be taken back", "stream", st.ID, "why", why, "err", err)
}

// storedSegment describes the object at key: from the index when it holds
// the segment with its SHA-256, else from storage (metadata, or by hashing
// the object). indexed says the index already has it.
func (h *Handler) storedSegment(ctx context.Context, ref storage.StreamRef, key string, req index.Segment) (seg index.Segment, indexed bool, err error) {
	got, err := h.idx.Lookup(ctx, ref, req.Start)
	switch {
	case err == nil && got.SHA256 != "":
		return got, true, nil
	case err == nil:
		indexed = true
	case !errors.Is(err, fs.ErrNotExist):
		return index.Segment{}, false, err
	}
	rc, info, err := h.store.Get(ctx, key, 0, -1)
	if err != nil {
		return index.Segment{}, false, err
	}
	defer rc.Close()
	info.Key = key
	seg, err = index.SegmentFromObject(info)
	if err != nil {
		// Metadata unusable: describe it by this request, which is only
		// accepted when the content matches.
		seg = req
		seg.Size = info.Size
	}
	if seg.SHA256 == "" {
		hh := sha256.New()
		if _, err := io.Copy(hh, rc); err != nil {
			return index.Segment{}, false, fmt.Errorf("ingest: hash %s: %w", key, err)
		}
		seg.SHA256 = hex.EncodeToString(hh.Sum(nil))
	}
	return seg, indexed, nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// bodyError answers a request whose body failed: malformed media or a
// wrong checksum (400), or a client that stopped sending.
func (h *Handler) bodyError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, media.ErrMalformed):
		httpx.WriteError(w, http.StatusBadRequest, "malformed", err.Error())
	case errors.Is(err, errNotFragmented):
		httpx.WriteError(w, http.StatusUnsupportedMediaType, "mp4_not_fragmented", err.Error())
	case errors.Is(err, errSHAMismatch):
		httpx.WriteError(w, http.StatusBadRequest, "sha256_mismatch", err.Error())
	case errors.Is(err, errBodyTimeout):
		h.log.InfoContext(r.Context(), "ingest: upload body too slow", "path", r.URL.Path, "err", err)
		w.Header().Set("Connection", "close")
		httpx.WriteError(w, http.StatusRequestTimeout, "body_timeout", err.Error())
	default:
		h.log.InfoContext(r.Context(), "ingest: upload body incomplete", "path", r.URL.Path, "err", err)
		httpx.WriteError(w, http.StatusBadRequest, "incomplete_body", "request body ended early: "+err.Error())
	}
}

func (h *Handler) unavailable(w http.ResponseWriter, code, msg string) {
	w.Header().Set("Retry-After", strconv.Itoa(int((h.cfg.RetryAfter+time.Second-1)/time.Second)))
	httpx.WriteError(w, http.StatusServiceUnavailable, code, msg)
}

var errSHAMismatch = errors.New("body does not match X-Content-SHA256")

// bodyReader validates and hashes the request body as it streams. A
// checksum mismatch is reported instead of the final bytes, so the storage
// Put fails before the object completes.
type bodyReader struct {
	r     io.Reader
	h     hash.Hash
	want  string
	bytes prometheus.Counter
	done  bool   // the whole body was read
	err   error  // first error returned (not io.EOF)
	known string // SelfRecorded: the SHA-256 the caller computed; r is read by storage directly
}

// StoreOption adjusts Store.
type StoreOption func(*storeOptions)

type storeOptions struct{ selfRecorded bool }

// SelfRecorded is for a body this process wrote itself (the RTSP
// recorder's spooled fMP4) with seg.SHA256 computed as it wrote it and
// seg.Size its exact length: Store then neither validates nor hashes it
// again. Never for a body from a client, which must stay validated.
func SelfRecorded() StoreOption {
	return func(o *storeOptions) { o.selfRecorded = true }
}

func newBody(r io.Reader, contentType, wantSHA string, bytesIn prometheus.Counter) (*bodyReader, error) {
	b := &bodyReader{h: sha256.New(), want: wantSHA, bytes: bytesIn}
	v, err := media.NewValidator(countReader{r: r, c: bytesIn}, contentType)
	if err != nil {
		return nil, err
	}
	b.r = requireFragmented(v, contentType)
	return b, nil
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	b.h.Write(p[:n])
	switch {
	case err == io.EOF:
		if !b.done {
			b.done = true
			if b.want != "" && b.sum() != b.want {
				b.err = fmt.Errorf("%w: body hashes to %s", errSHAMismatch, b.sum())
				return 0, b.err
			}
		}
		return n, io.EOF
	case err != nil:
		b.err = err
		return 0, err
	}
	return n, nil
}

func (b *bodyReader) sum() string {
	if b.known != "" {
		return b.known
	}
	return hex.EncodeToString(b.h.Sum(nil))
}

type countReader struct {
	r io.Reader
	c prometheus.Counter
}

func (c countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.c.Add(float64(n))
	return n, err
}

// gate hands the body to a storage backend and takes it back when Put
// returns: an HTTP client may still read a request body from another
// goroutine after its round trip ended, and the handler reads on.
type gate struct {
	mu     sync.Mutex
	r      io.Reader
	closed bool
}

var errDetached = errors.New("ingest: body no longer available to storage")

func (g *gate) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, errDetached
	}
	return g.r.Read(p)
}

func (g *gate) detach() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

package playback

import (
	"bufio"
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/ingest/picsize"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/media"
	"github.com/vigilcloud/vigil/storage"
	"golang.org/x/sync/errgroup"
)

// HLS. Every stored fMP4 segment is self-contained (its own ftyp+moov, then
// moof+mdat fragments), so a playlist lists each one as two sub-resources
// of the stored object: segments/{start}/init.mp4 (the bytes before the
// first moof) for EXT-X-MAP, and segments/{start}/media.m4s (the rest).
// MPEG-TS segments are listed whole, as segments/{start}/media.ts. Nothing is rewritten or copied:
// both are byte windows of the one object, with Range support.
//
// Runs: consecutive fMP4 segments whose init sections are byte-identical
// share one EXT-X-MAP (the first one's). A different init section (new
// SPS/PPS, codec, encoder), a gap, or a change of container starts a new
// run with EXT-X-DISCONTINUITY, and an fMP4 run opens with its EXT-X-MAP.
// Gaps are not listed as EXT-X-GAP segments: there is no media to name,
// and the discontinuity plus EXT-X-PROGRAM-DATE-TIME already tells the
// player where the timeline resumes. Decode times that do not run on
// from one segment to the next (segments the RTSP recorder stored before
// its decode times ran on across a session each start at zero) are
// discontinuities too, within a run of one init section. Init
// sections are identified by (a prefix of) the SHA-256 of their bytes;
// ingest records that and the first tfdt in the index entry (index.Head).
// Entries without one (written before heads existed) have theirs read
// from the objects' heads and kept in a bounded LRU: stored segments
// never change.

// MaxPlaylistWindow is the longest range one VOD playlist may cover (a day
// of 6-s segments is 14,400 entries, about 3 MB of playlist).
const MaxPlaylistWindow = 24 * time.Hour

// maxInitBytes bounds how far into an object the first moof is looked for.
const maxInitBytes = 16 << 20

const dayMS = int64(24 * time.Hour / time.Millisecond)

var (
	errNoMoof    = errors.New("playback: no moof in the segment's head (not fragmented MP4)")
	errBadBoxHdr = errors.New("playback: malformed box header")
)

// moofOffset returns the offset of the first top-level moof box of the
// object at key (size bytes) by reading box headers from its head; the
// boxes before it (ftyp, moov, ...) are skipped, never held.
func (h *Handler) moofOffset(ctx context.Context, key string, size int64) (int64, error) {
	rc, _, err := h.store.Get(ctx, key, 0, min(size, maxInitBytes+16))
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	off, _, err := findMoof(bufio.NewReaderSize(rc, 4096), size, io.Discard)
	return off, err
}

// findMoof returns the offset of the first top-level moof in r, a stream
// of size bytes (a box of size 0 extends to the end), and its size (0 when
// it is not a plain 32-bit size), and copies the bytes before it (the init
// section) to initW. r is left just after the moof's 8-byte header.
func findMoof(r io.Reader, size int64, initW io.Writer) (off, moofSize int64, err error) {
	var hdr [16]byte
	for off < maxInitBytes {
		if _, err := io.ReadFull(r, hdr[:8]); err != nil {
			if errors.Is(err, io.EOF) {
				return 0, 0, errNoMoof
			}
			return 0, 0, fmt.Errorf("%w at %d: %w", errBadBoxHdr, off, err)
		}
		if string(hdr[4:8]) == "moof" {
			if n := int64(binary.BigEndian.Uint32(hdr[:4])); n >= 8 && n <= size-off {
				moofSize = n
			}
			return off, moofSize, nil
		}
		boxSize, hl := int64(binary.BigEndian.Uint32(hdr[:4])), int64(8)
		switch boxSize {
		case 0: // to the end: no moof follows
			return 0, 0, errNoMoof
		case 1:
			if _, err := io.ReadFull(r, hdr[8:16]); err != nil {
				return 0, 0, fmt.Errorf("%w at %d: %w", errBadBoxHdr, off, err)
			}
			large := binary.BigEndian.Uint64(hdr[8:16])
			if large > math.MaxInt64 {
				return 0, 0, fmt.Errorf("%w at %d: size %d", errBadBoxHdr, off, large)
			}
			boxSize, hl = int64(large), 16
		}
		if boxSize < hl || boxSize > size-off {
			return 0, 0, fmt.Errorf("%w at %d: size %d", errBadBoxHdr, off, boxSize)
		}
		if _, err := initW.Write(hdr[:hl]); err != nil {
			return 0, 0, err
		}
		if _, err := io.CopyN(initW, r, boxSize-hl); err != nil {
			return 0, 0, fmt.Errorf("%w at %d: %w", errBadBoxHdr, off, err)
		}
		off += boxSize
	}
	return 0, 0, errNoMoof
}

func isFMP4(seg index.Segment) bool {
	return media.NormalizeContentType(seg.ContentType) == media.ContentTypeMP4
}

// part serves the init section (the bytes before the first moof) or the
// media part (from it on) of an fMP4 segment.
func (h *Handler) part(w http.ResponseWriter, r *http.Request, ref storage.StreamRef, start int64, init bool) {
	if h.serveHeld(w, r, ref.Stream, start, init) {
		return // a segment being recorded here, not yet stored (lowlatency.go)
	}
	seg, ok := h.lookup(w, r, ref, start)
	if !ok {
		return
	}
	if !isFMP4(seg) {
		httpx.WriteError(w, http.StatusNotFound, "not_fmp4", "segment is "+seg.ContentType+", which has no init section; fetch it whole")
		return
	}
	ctx := r.Context()
	off, err := h.moofOffset(ctx, ref.SegmentKey(start), seg.Size)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		httpx.WriteError(w, http.StatusNotFound, "segment_not_found", "segment is gone")
		return
	case errors.Is(err, errNoMoof) || errors.Is(err, errBadBoxHdr):
		httpx.WriteError(w, http.StatusUnprocessableEntity, "not_fragmented", err.Error())
		return
	case err != nil:
		h.log.WarnContext(ctx, "playback: moof lookup failed", "stream", ref.Stream, "start", start, "err", err)
		unavailable(w, "storage_unavailable", "storage unavailable, retry")
		return
	}
	win := byteWindow{offset: off, size: seg.Size - off, contentType: "video/iso.segment"}
	suffix := "-media"
	if init {
		win = byteWindow{size: off, contentType: media.ContentTypeMP4}
		suffix = "-init"
	}
	if seg.SHA256 != "" {
		win.etag = `"` + seg.SHA256 + suffix + `"`
	}
	h.serveBytes(w, r, ref, start, win)
}

// transportStream serves an MPEG-TS segment whole under a name that ends
// in .ts: players (ffmpeg's allowed_segment_extensions) check it.
func (h *Handler) transportStream(w http.ResponseWriter, r *http.Request, ref storage.StreamRef, start int64) {
	seg, ok := h.lookup(w, r, ref, start)
	if !ok {
		return
	}
	if media.NormalizeContentType(seg.ContentType) != media.ContentTypeTS {
		httpx.WriteError(w, http.StatusNotFound, "not_mpegts", "segment is "+seg.ContentType+"; use init.mp4 and media.m4s")
		return
	}
	etag := ""
	if seg.SHA256 != "" {
		etag = `"` + seg.SHA256 + `"`
	}
	h.serveBytes(w, r, ref, start, byteWindow{size: seg.Size, etag: etag, contentType: media.ContentTypeTS})
}

// parseWindow reads the start and end query parameters, answering 400
// itself (ok false) when they are missing, reversed or span more than max.
func parseWindow(w http.ResponseWriter, r *http.Request, max time.Duration) (from, to int64, ok bool) {
	q := r.URL.Query()
	from, err := httpx.ParseTime(q.Get("start"))
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "bad_time", "start: "+err.Error())
		return 0, 0, false
	}
	to, err = httpx.ParseTime(q.Get("end"))
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "bad_time", "end: "+err.Error())
		return 0, 0, false
	}
	if to <= from {
		httpx.WriteError(w, http.StatusBadRequest, "bad_time", "end must be after start")
		return 0, 0, false
	}
	if to-from > max.Milliseconds() {
		httpx.WriteError(w, http.StatusBadRequest, "window_too_large", "window exceeds "+max.String())
		return 0, 0, false
	}
	return from, to, true
}

// discontinuous says whether a player must reset its decoder between prev
// and next (with heads ph and nh): a gap wider than the index's tolerance,
// a change of container, a different or unknown init section or decode
// times that do not run on between fMP4 segments, or a new picture size
// between MPEG-TS segments (which carry their parameter sets in band).
func discontinuous(prev, next index.Segment, ph, nh index.Head) bool {
	if next.Start > prev.End()+index.DefaultGapTolerance.Milliseconds() {
		return true
	}
	if media.NormalizeContentType(prev.ContentType) != media.NormalizeContentType(next.ContentType) {
		return true
	}
	if isFMP4(next) {
		return !nh.Known() || ph.Init != nh.Init || !continuedBy(ph, prev.DurationMS, nh)
	}
	return prev.Width != 0 && next.Width != 0 && (prev.Width != next.Width || prev.Height != next.Height)
}

// continuedBy says whether next's decode time runs on from h's, a segment
// of durMS, within the index's gap tolerance (at most half the segment, so
// that a segment as short as the tolerance that restarts at zero is not
// taken for one that runs on). Recorders that restart every segment at
// zero fail it: HLS needs a discontinuity there (RFC 8216 section 3), and
// players mis-time or drop the fragment without one.
func continuedBy(h index.Head, durMS int64, next index.Head) bool {
	if h.Scale == 0 || next.Scale != h.Scale || next.Track != h.Track || durMS < 0 {
		return false
	}
	want := h.TFDT + uint64(durMS)*uint64(h.Scale)/1000
	tol := uint64(min(index.DefaultGapTolerance.Milliseconds(), durMS/2)) * uint64(h.Scale) / 1000
	return next.TFDT+tol >= want && next.TFDT <= want+tol
}

// initCacheSize bounds the LRU of segment heads read from storage: a day
// of 6-s segments of four streams, about 10 MB.
const initCacheSize = 1 << 16

// initFetches bounds the heads one playlist reads at a time.
const initFetches = 8

// maxHeadBox bounds the init section and first moof held to read the
// first decode time (vigil's are a few hundred bytes to a few kB); past
// it the time is unknown and a discontinuity follows.
const maxHeadBox = 1 << 20

// initCache is a bounded LRU of segment heads by segment object. Stored
// segments never change, so entries never go stale; the SHA-256 and size
// in the cache key guard against an object rewritten after a purge.
type initCache struct {
	mu  sync.Mutex
	max int
	ll  *list.List // front: most recently used
	m   map[string]*list.Element
}

type initEntry struct {
	name string
	head index.Head
}

func newInitCache(max int) *initCache {
	return &initCache{max: max, ll: list.New(), m: make(map[string]*list.Element)}
}

func (c *initCache) get(name string) (index.Head, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[name]
	if !ok {
		return index.Head{}, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*initEntry).head, true
}

func (c *initCache) put(name string, head index.Head) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[name]; ok {
		e.Value.(*initEntry).head = head
		c.ll.MoveToFront(e)
		return
	}
	c.m[name] = c.ll.PushFront(&initEntry{name: name, head: head})
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.m, old.Value.(*initEntry).name)
	}
}

// segHeads returns the head of each of segs (zero for MPEG-TS and for
// fMP4 segments whose init section cannot be found): the index's, else
// read from storage unless cached. Only a storage failure is an error.
func (h *Handler) segHeads(ctx context.Context, ref storage.StreamRef, segs []index.Segment) ([]index.Head, error) {
	heads := make([]index.Head, len(segs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(initFetches)
	for i, s := range segs {
		if !isFMP4(s) {
			continue
		}
		if s.Head.Known() {
			heads[i] = s.Head
			continue
		}
		name := ref.SegmentKey(s.Start) + "|" + s.SHA256 + "|" + strconv.FormatInt(s.Size, 10)
		if hd, ok := h.inits.get(name); ok {
			heads[i] = hd
			continue
		}
		g.Go(func() error {
			hd, err := h.readSegHead(gctx, ref.SegmentKey(s.Start), s.Size)
			switch {
			case errors.Is(err, fs.ErrNotExist), errors.Is(err, errNoMoof), errors.Is(err, errBadBoxHdr):
				// Not cached: a read cut short looks like a bad box too.
				return nil
			case err != nil:
				return fmt.Errorf("playback: head of segment %d: %w", s.Start, err)
			}
			h.inits.put(name, hd)
			heads[i] = hd
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return heads, nil
}

// readSegHead reads the head of the object at key (size bytes): the
// SHA-256 of its init section (the bytes before the first moof) and the
// first decode time, which is left unknown when it cannot be read. It is
// the head ingest records (picsize.HeadOf), for entries without one.
func (h *Handler) readSegHead(ctx context.Context, key string, size int64) (index.Head, error) {
	rc, _, err := h.store.Get(ctx, key, 0, min(size, maxInitBytes+16+maxHeadBox))
	if err != nil {
		return index.Head{}, err
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 4096)
	sum := sha256.New()
	init := &cappedBuffer{max: maxHeadBox}
	_, moofSize, err := findMoof(br, size, io.MultiWriter(sum, init))
	if err != nil {
		return index.Head{}, err
	}
	initSum := sum.Sum(nil)
	if init.over || moofSize <= 8 || moofSize > maxHeadBox {
		return picsize.HeadOfSum(initSum, nil, nil), nil
	}
	moof := make([]byte, moofSize-8)
	if _, err := io.ReadFull(br, moof); err != nil {
		return picsize.HeadOfSum(initSum, nil, nil), nil // the time stays unknown
	}
	return picsize.HeadOfSum(initSum, init.b, moof), nil
}

// cappedBuffer keeps what is written to it up to max bytes, and notes
// whether more came.
type cappedBuffer struct {
	b    []byte
	max  int
	over bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if len(c.b)+len(p) > c.max {
		c.over = true
	} else {
		c.b = append(c.b, p...)
	}
	return len(p), nil
}

// playlistHead says what precedes a playlist's segments.
type playlistHead struct {
	live               bool
	mediaSeq, discoSeq int64
}

// writePlaylist writes the m3u8 of segs (by start) of streamID, with URLs
// signed for p until exp. heads holds the segments' heads (see segHeads);
// nil makes every fMP4 segment a run of its own.
func (h *Handler) writePlaylist(b *bytes.Buffer, p auth.Principal, streamID string, segs []index.Segment, heads []index.Head, head playlistHead, exp time.Time) {
	target := int64(6)
	if len(segs) > 0 {
		target = 1
		for _, s := range segs {
			target = max(target, (s.DurationMS+999)/1000)
		}
	}
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n")
	fmt.Fprintf(b, "#EXT-X-TARGETDURATION:%d\n#EXT-X-MEDIA-SEQUENCE:%d\n", target, head.mediaSeq)
	if head.live {
		fmt.Fprintf(b, "#EXT-X-DISCONTINUITY-SEQUENCE:%d\n", head.discoSeq)
	} else {
		b.WriteString("#EXT-X-PLAYLIST-TYPE:VOD\n")
	}
	b.WriteString("#EXT-X-INDEPENDENT-SEGMENTS\n")
	uri := func(rel string) string { return h.entryURI(p, streamID, rel, exp) }
	key := func(i int) index.Head {
		if heads == nil {
			return index.Head{}
		}
		return heads[i]
	}
	for i, s := range segs {
		disco := i > 0 && discontinuous(segs[i-1], s, key(i-1), key(i))
		if disco {
			b.WriteString("#EXT-X-DISCONTINUITY\n")
		}
		b.WriteString("#EXT-X-PROGRAM-DATE-TIME:")
		b.WriteString(time.UnixMilli(s.Start).UTC().Format("2006-01-02T15:04:05.000Z07:00"))
		b.WriteByte('\n')
		rel := "segments/" + strconv.FormatInt(s.Start, 10)
		if isFMP4(s) {
			// A run's segments share its first one's init section.
			if i == 0 || disco {
				fmt.Fprintf(b, "#EXT-X-MAP:URI=\"%s\"\n", uri(rel+"/init.mp4"))
			}
			rel += "/media.m4s"
		} else {
			rel += "/media.ts"
		}
		fmt.Fprintf(b, "#EXTINF:%d.%03d,\n%s\n", s.DurationMS/1000, s.DurationMS%1000, uri(rel))
	}
	if !head.live {
		b.WriteString("#EXT-X-ENDLIST\n")
	}
}

// entryURI is the URI a playlist of streamID lists for rel (relative to
// the stream's path), signed for p until exp when URLs are signed.
func (h *Handler) entryURI(p auth.Principal, streamID, rel string, exp time.Time) string {
	if len(h.sign.key) == 0 {
		return rel
	}
	q, ok := h.sign.query("/v1/streams/"+streamID+"/"+rel, p, exp)
	if !ok {
		return rel // the player must send the bearer token
	}
	return rel + "?" + q
}

func writeM3U8(w http.ResponseWriter, b *bytes.Buffer, cache string) {
	hd := w.Header()
	hd.Set("Content-Type", "application/vnd.apple.mpegurl")
	hd.Set("Content-Length", strconv.Itoa(b.Len()))
	hd.Set("Cache-Control", cache)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b.Bytes())
}

// playlist serves the VOD playlist of [start, end).
func (h *Handler) playlist(w http.ResponseWriter, r *http.Request, p auth.Principal, streamID string, ref storage.StreamRef) {
	from, to, ok := parseWindow(w, r, MaxPlaylistWindow)
	if !ok {
		return
	}
	ctx := r.Context()
	segs, err := h.idx.Segments(ctx, ref, from, to)
	if err != nil {
		h.log.WarnContext(ctx, "playback: segments failed", "stream", streamID, "err", err)
		unavailable(w, "index_unavailable", "index unavailable, retry")
		return
	}
	if len(segs) == 0 {
		httpx.WriteError(w, http.StatusNotFound, "no_recordings", "no video recorded in that range")
		return
	}
	heads, err := h.segHeads(ctx, ref, segs)
	if err != nil {
		h.log.WarnContext(ctx, "playback: init sections failed", "stream", streamID, "err", err)
		unavailable(w, "storage_unavailable", "storage unavailable, retry")
		return
	}
	var b bytes.Buffer
	h.writePlaylist(&b, p, streamID, segs, heads, playlistHead{}, h.opts.Now().Add(h.opts.URLTTL))
	// The signed URLs expire, so the playlist is not cached for long.
	writeM3U8(w, &b, "private, max-age=60")
}

// live serves a sliding playlist over the newest segments. Sequence
// numbers must name the same segment on every refresh, on any node, with
// no state: a segment's media sequence number is its ordinal within its
// UTC day plus the day number times 10^6, and the window is numbered from
// its first segment. The numbering jumps forward once a day, when the
// window's first segment crosses midnight (players realign on
// EXT-X-PROGRAM-DATE-TIME), and when a backlog upload lands earlier that
// day.
func (h *Handler) live(w http.ResponseWriter, r *http.Request, p auth.Principal, streamID string, ref storage.StreamRef) {
	ctx := r.Context()
	now := h.opts.Now()
	nowMS := now.UnixMilli()
	segs, err := h.idx.Segments(ctx, ref, nowMS-h.opts.LiveWindow.Milliseconds(), nowMS+time.Hour.Milliseconds())
	var head playlistHead
	var heads []index.Head
	if err == nil && len(segs) > 0 {
		segs = segs[max(0, len(segs)-h.opts.LiveSegments):]
		if heads, err = h.segHeads(ctx, ref, segs); err == nil {
			head, err = h.liveHead(ctx, ref, segs[0], heads[0])
		}
	}
	if err != nil {
		h.log.WarnContext(ctx, "playback: live segments failed", "stream", streamID, "err", err)
		unavailable(w, "index_unavailable", "index unavailable, retry")
		return
	}
	head.live = true
	var b bytes.Buffer
	h.writePlaylist(&b, p, streamID, segs, heads, head, now.Add(h.opts.URLTTL))
	writeM3U8(w, &b, "no-cache")
}

// liveHead numbers a live window that starts with first, whose head is
// firstHead (see live). The discontinuities before it are counted as
// writePlaylist tags them, init sections included.
func (h *Handler) liveHead(ctx context.Context, ref storage.StreamRef, first index.Segment, firstHead index.Head) (playlistHead, error) {
	dayStart := first.Start - ((first.Start%dayMS)+dayMS)%dayMS
	var prior []index.Segment
	if first.Start > dayStart {
		var err error
		if prior, err = h.idx.Segments(ctx, ref, dayStart, first.Start); err != nil {
			return playlistHead{}, err
		}
	}
	kept := prior[:0]
	for _, s := range prior {
		if s.Start >= dayStart && s.Start < first.Start {
			kept = append(kept, s)
		}
	}
	heads, err := h.segHeads(ctx, ref, kept)
	if err != nil {
		return playlistHead{}, err
	}
	var disco int64
	for i := 1; i < len(kept); i++ {
		if discontinuous(kept[i-1], kept[i], heads[i-1], heads[i]) {
			disco++
		}
	}
	n := int64(len(kept))
	// The first segment's own discontinuity tag is dropped from the
	// window, so it counts as already passed.
	if n > 0 && discontinuous(kept[n-1], first, heads[n-1], firstHead) {
		disco++
	}
	day := dayStart / dayMS * 1_000_000
	return playlistHead{live: true, mediaSeq: day + n, discoSeq: day + disco}, nil
}

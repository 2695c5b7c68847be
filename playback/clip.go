package playback

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/bits"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/media/fmp4"
	"github.com/vigilcloud/vigil/storage"
)

// Clip export: GET /v1/streams/{stream}/clip.mp4?start=&end= is one
// fragmented MP4 of the range, streamed segment by segment and fragment by
// fragment (each fragment is written before the next is read), so memory
// stays bounded whatever the clip's length.
//
//   - Cut: the clip starts at the video keyframe at or before start (so the
//     requested instant is in it), and ends with the last sample that
//     starts before end.
//   - Gaps are removed: the recorded parts play back to back, with decode
//     times rebased to run on continuously across segment boundaries and
//     gaps. X-Vigil-Clip-Gaps lists the stretches of the range without
//     fMP4 video ("start-end" in Unix ms, comma-separated; at most 100,
//     X-Vigil-Clip-Gaps-More counts the rest).
//   - A segment whose init section differs from the clip's first (new
//     parameter sets, another resolution or codec) ends the clip there;
//     the trailer X-Vigil-Clip-End carries the wall-clock end of what the
//     clip holds, and X-Vigil-Clip-Truncated says "parameters_changed".
//   - MPEG-TS segments are remuxed into fMP4 as they are read (clip_ts.go),
//     so they join the clip like fMP4 segments of their own init section.
//   - Every duration in the header is the samples': a first pass reads
//     only the segments' init sections and moof boxes (seeking past the
//     media) and runs the same cut, so mvhd/mehd/tkhd (in the first
//     track's timescale) and mdhd (each track's) equal the sum of the
//     samples written, also when the clip stops at a parameter change.
//     A segment that changes between the passes (deleted, rewritten) is
//     the one way they can disagree.

// maxClipGaps bounds the gaps listed in the header.
const maxClipGaps = 100

var errParamsChanged = errors.New("playback: clip: segment parameters differ from the clip's")

// clipTrack is the output state of one track.
type clipTrack struct {
	timeScale uint32
	video     bool
	end       uint64 // output decode time after the last sample written
}

// clipper writes the clip: init, then each segment's fragments rebased.
type clipper struct {
	w        io.Writer
	from, to int64 // wall-clock range, Unix ms
	tracks   []fmp4.Track
	state    map[uint32]*clipTrack
	outEndUS uint64 // output time after everything written, µs
	seq      uint32
	lastWall int64 // wall-clock end of the last sample written, Unix ms
	written  bool  // a fragment went out
	// dry: read fragment headers only and write nothing; what the state
	// ends at is what the real pass writes (see durations).
	dry       bool
	durations map[uint32]uint64 // per track, for the init section
	// rd and br are reused from segment to segment: their buffers (a
	// fragment, 64 KiB) would otherwise be allocated and cleared anew for
	// every segment.
	rd *fmp4.Reader
	br *bufio.Reader
	// runs are, per track of the fragment being written, the track's
	// index in the source fragment and the samples [i, j) kept of it.
	runs [][3]int
	hdr  []byte // the fragment header's buffer, reused
}

func newClipper(w io.Writer, from, to int64) *clipper {
	return &clipper{w: w, from: from, to: to, state: map[uint32]*clipTrack{}}
}

// durations is each track's length as written: its last sample's end.
func (c *clipper) trackDurations() map[uint32]uint64 {
	d := make(map[uint32]uint64, len(c.state))
	for id, st := range c.state {
		d[id] = st.end
	}
	return d
}

// mulDiv returns a*b/c, false when it overflows 64 bits.
func mulDiv(a, b, c uint64) (uint64, bool) {
	hi, lo := bits.Mul64(a, b)
	if c == 0 || hi >= c {
		return 0, false
	}
	q, _ := bits.Div64(hi, lo, c)
	return q, true
}

func sameTracks(a, b []fmp4.Track) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.ID != y.ID || x.Codec != y.Codec || x.TimeScale != y.TimeScale || x.Width != y.Width || x.Height != y.Height ||
			x.SampleRate != y.SampleRate || x.Channels != y.Channels || !bytes.Equal(x.SPS, y.SPS) || !bytes.Equal(x.PPS, y.PPS) ||
			!bytes.Equal(x.VPS, y.VPS) || !bytes.Equal(x.AACConfig, y.AACConfig) {
			return false
		}
	}
	return true
}

func isVideo(c fmp4.Codec) bool { return c == fmp4.H264 || c == fmp4.H265 }

// fragStartUS is the earliest decode time of f in µs.
func fragStartUS(f fmp4.Fragment, ts map[uint32]uint32) (uint64, error) {
	start, found := uint64(math.MaxUint64), false
	for _, tf := range f.Tracks {
		scale, ok := ts[tf.TrackID]
		if !ok || len(tf.Samples) == 0 {
			continue
		}
		us, ok := mulDiv(tf.BaseDecodeTime, 1e6, uint64(scale))
		if !ok {
			return 0, fmt.Errorf("%w: tfdt %d out of range", fmp4.ErrMalformed, tf.BaseDecodeTime)
		}
		start, found = min(start, us), true
	}
	if !found {
		return 0, io.EOF
	}
	return start, nil
}

func timeScales(tracks []fmp4.Track) map[uint32]uint32 {
	m := make(map[uint32]uint32, len(tracks))
	for _, t := range tracks {
		if t.TimeScale > 0 {
			m[t.ID] = t.TimeScale
		}
	}
	return m
}

// keyframeAt reads a segment (init and fragments, one at a time) and
// returns the source time (µs) of the last video keyframe whose wall
// clock time is at or before at; with none, at itself (the clip then
// starts at the first keyframe after it). The segment's first sample is
// at seg.Start on the wall clock.
func keyframeAt(src io.Reader, seg index.Segment, at int64) (uint64, error) {
	rd := fmp4.NewReader(src)
	tracks, _, err := rd.ReadInit()
	if err != nil {
		return 0, err
	}
	ts := timeScales(tracks)
	var video uint32
	for _, t := range tracks {
		if isVideo(t.Codec) && video == 0 && ts[t.ID] > 0 {
			video = t.ID
		}
	}
	var atUS, key uint64
	first, found := true, false
	for {
		f, err := rd.NextFragment()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		s0, err := fragStartUS(f, ts)
		if errors.Is(err, io.EOF) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if first {
			first = false
			atUS = s0 + uint64(max(0, at-seg.Start))*1000
			if video == 0 {
				return atUS, nil // audio only: every sample is a sync sample
			}
		}
		for _, tf := range f.Tracks {
			if tf.TrackID != video {
				continue
			}
			dts := tf.BaseDecodeTime
			for _, s := range tf.Samples {
				us, ok := mulDiv(dts, 1e6, uint64(ts[video]))
				if !ok {
					return 0, fmt.Errorf("%w: decode time out of range", fmp4.ErrMalformed)
				}
				if us > atUS {
					if found {
						return key, nil
					}
					return atUS, nil
				}
				if s.Keyframe {
					key, found = us, true
				}
				dts += uint64(s.Duration)
			}
		}
	}
	switch {
	case first:
		return 0, fmt.Errorf("%w: segment has no samples", fmp4.ErrMalformed)
	case found:
		return key, nil
	}
	return atUS, nil
}

// segment streams one segment into the clip. cutUS, when >= 0, is the
// source time (µs) the clip starts at (the first segment's keyframe);
// otherwise the segment is taken from its first sample. Video samples
// before the segment's first keyframe at or after the cut are dropped.
func (c *clipper) segment(src io.Reader, seg index.Segment, cutUS int64) error {
	if c.rd == nil {
		c.rd = fmp4.NewReader(src)
	} else {
		c.rd.Reset(src)
	}
	rd := c.rd
	next := rd.NextFragment
	if c.dry {
		next = rd.NextFragmentHeader
	}
	tracks, _, err := rd.ReadInit()
	if err != nil {
		return err
	}
	return c.fragments(tracks, next, seg, cutUS)
}

// fragments is segment after the init section: tracks are the segment's,
// next returns its fragments and then io.EOF.
func (c *clipper) fragments(tracks []fmp4.Track, next func() (fmp4.Fragment, error), seg index.Segment, cutUS int64) error {
	if c.tracks == nil {
		c.tracks = tracks
		for _, t := range tracks {
			if t.TimeScale == 0 {
				return fmt.Errorf("%w: track %d has timescale 0", fmp4.ErrMalformed, t.ID)
			}
			c.state[t.ID] = &clipTrack{timeScale: t.TimeScale, video: isVideo(t.Codec)}
		}
		if !c.dry {
			if _, err := fmp4.WriteInit(c.w, tracks, fmp4.InitOptions{Durations: c.durations}); err != nil {
				return fmt.Errorf("playback: clip: write init: %w", err)
			}
		}
	} else if !sameTracks(c.tracks, tracks) {
		return errParamsChanged
	}
	ts := timeScales(tracks)
	var (
		s0, loUS, hiUS uint64
		originTicks    = map[uint32]uint64{}
		segOut         = c.outEndUS
		needKey        = map[uint32]bool{}
		first          = true
	)
	for id, st := range c.state {
		needKey[id] = st.video
	}
	for {
		f, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		fs, err := fragStartUS(f, ts)
		if errors.Is(err, io.EOF) {
			continue
		}
		if err != nil {
			return err
		}
		if first {
			first = false
			s0 = fs
			loUS = s0
			if cutUS >= 0 {
				loUS = uint64(cutUS)
			}
			hiUS = s0 + uint64(max(0, c.to-seg.Start))*1000
			for id, st := range c.state {
				o, ok := mulDiv(loUS, uint64(st.timeScale), 1e6)
				if !ok {
					return fmt.Errorf("%w: decode time out of range", fmp4.ErrMalformed)
				}
				originTicks[id] = o
			}
		}
		out := fmp4.Fragment{SequenceNumber: c.seq + 1}
		c.runs = c.runs[:0]
		done := true
		for t, tf := range f.Tracks {
			st, ok := c.state[tf.TrackID]
			if !ok {
				continue
			}
			origin := originTicks[tf.TrackID]
			hiTicks, _ := mulDiv(hiUS, uint64(st.timeScale), 1e6)
			i, j := 0, 0
			dts, firstDTS := tf.BaseDecodeTime, uint64(0)
			for k, s := range tf.Samples {
				switch {
				case dts >= hiTicks:
				case dts < origin:
					i = k + 1
				case needKey[tf.TrackID] && !s.Keyframe:
					i = k + 1
				default:
					if i == k {
						firstDTS = dts
					}
					needKey[tf.TrackID] = false
					j = k + 1
				}
				if dts >= hiTicks {
					break
				}
				dts += uint64(s.Duration)
			}
			if dts < hiTicks {
				done = false
			}
			if j <= i {
				continue
			}
			segOutTicks, _ := mulDiv(segOut, uint64(st.timeScale), 1e6)
			base := max(firstDTS-origin+segOutTicks, st.end)
			kept := tf.Samples[i:j]
			out.Tracks = append(out.Tracks, fmp4.TrackFragment{TrackID: tf.TrackID, BaseDecodeTime: base, Samples: kept})
			c.runs = append(c.runs, [3]int{t, i, j})
			var d uint64
			for _, s := range kept {
				d += uint64(s.Duration)
			}
			st.end = base + d
			endUS, _ := mulDiv(firstDTS+d, 1e6, uint64(st.timeScale))
			c.lastWall = max(c.lastWall, seg.Start+int64(endUS-s0)/1000)
		}
		if len(out.Tracks) > 0 {
			c.seq++
			if c.dry {
				c.written = true
			} else if err := c.writeFragment(out); err != nil {
				return fmt.Errorf("playback: clip: write fragment: %w", err)
			}
			c.written = true
		}
		if done {
			break
		}
	}
	for _, st := range c.state {
		us, _ := mulDiv(st.end, 1e6, uint64(st.timeScale))
		c.outEndUS = max(c.outEndUS, us)
	}
	return nil
}

// writeFragment writes out, whose tracks hold the runs c.runs of the
// fragment c.rd read last: each run's data in one Write when it is one
// piece of the source mdat, so that most of a fragment's media goes past
// the write buffer to the connection without a copy or a call per sample.
func (c *clipper) writeFragment(out fmp4.Fragment) error {
	hdr, err := fmp4.AppendFragmentHeader(c.hdr[:0], out)
	if err != nil {
		return err
	}
	c.hdr = hdr
	if _, err := c.w.Write(hdr); err != nil {
		return err
	}
	for k, tf := range out.Tracks {
		if run := c.rd.Media(c.runs[k][0], c.runs[k][1], c.runs[k][2]); run != nil {
			if _, err := c.w.Write(run); err != nil {
				return err
			}
			continue
		}
		for _, s := range tf.Samples {
			if _, err := c.w.Write(s.Data); err != nil {
				return err
			}
		}
	}
	return nil
}

// eachSegment calls fn with the segments overlapping [from, to), by start,
// an hour of the index at a time (memory stays bounded for long ranges),
// until fn returns false.
func (h *Handler) eachSegment(ctx context.Context, ref storage.StreamRef, from, to int64, fn func(index.Segment) (bool, error)) error {
	last := int64(math.MinInt64)
	hour := time.Hour.Milliseconds()
	for cur := from; cur < to; cur += hour {
		page, err := h.idx.Segments(ctx, ref, cur, min(cur+hour, to))
		if err != nil {
			return err
		}
		for _, s := range page {
			if s.Start <= last {
				continue
			}
			last = s.Start
			if more, err := fn(s); err != nil || !more {
				return err
			}
		}
	}
	return nil
}

// clipPlan is what the index says about a clip before any video is read.
type clipPlan struct {
	first    index.Segment // the first fMP4 segment
	found    bool
	gaps     []index.Span // stretches without fMP4 video, at most maxClipGaps
	moreGaps int          // gaps beyond those
	cur      int64        // coverage so far
}

// add accounts for the next segment of [from, to); false once a known
// resolution change ends the clip.
func (p *clipPlan) add(s index.Segment, from, to int64) bool {
	if !p.found {
		p.first, p.found, p.cur = s, true, max(from, s.Start)
	} else if p.first.Width != 0 && s.Width != 0 && (s.Width != p.first.Width || s.Height != p.first.Height) {
		return false
	}
	lo, hi := max(s.Start, p.cur), min(s.End(), to)
	if lo > p.cur+index.DefaultGapTolerance.Milliseconds() {
		p.gap(p.cur, lo)
	}
	p.cur = max(p.cur, hi)
	return true
}

func (p *clipPlan) gap(from, to int64) {
	if len(p.gaps) < maxClipGaps {
		p.gaps = append(p.gaps, index.Span{Start: from, End: to})
	} else {
		p.moreGaps++
	}
}

func (h *Handler) clip(w http.ResponseWriter, r *http.Request, ref storage.StreamRef) {
	from, to, ok := parseWindow(w, r, MaxWindow)
	if !ok {
		return
	}
	ctx := r.Context()
	// A pass over the index (an hour at a time) finds the first segment,
	// the gaps and the duration to announce.
	var plan clipPlan
	err := h.eachSegment(ctx, ref, from, to, func(s index.Segment) (bool, error) { return plan.add(s, from, to), nil })
	if err != nil {
		h.log.WarnContext(ctx, "playback: clip segments failed", "stream", ref.Stream, "err", err)
		unavailable(w, "index_unavailable", "index unavailable, retry")
		return
	}
	switch {
	case !plan.found:
		httpx.WriteError(w, http.StatusNotFound, "no_recordings", "no video recorded in that range")
		return
	}
	if plan.cur < to {
		plan.gap(plan.cur, to)
	}
	first := plan.first

	// Where the clip starts: the keyframe at or before start.
	cutUS := int64(-1)
	if from > first.Start {
		key, err := h.withSegment(ctx, ref, first, func(src io.Reader) (uint64, error) { return keyframeAt(src, first, from) })
		if err != nil {
			h.segmentError(w, ref, first, err)
			return
		}
		cutUS = int64(key)
	}
	// A pass over the fragment headers alone (the media is skipped) finds
	// what the clip will hold, so that its init section declares exactly
	// that: the header is written before any sample.
	var durations map[uint32]uint64
	if r.Method != http.MethodHead {
		dry := newClipper(io.Discard, from, to)
		dry.dry = true
		if _, err := h.dryPass(ctx, ref, first, cutUS, to, dry); err != nil {
			if !dry.written {
				h.segmentError(w, ref, first, err)
			} else {
				h.log.WarnContext(ctx, "playback: clip plan failed", "stream", ref.Stream, "err", err)
				unavailable(w, "storage_unavailable", "storage unavailable, retry")
			}
			return
		}
		durations = dry.trackDurations()
	}
	hd := w.Header()
	hd.Set("Content-Type", "video/mp4")
	hd.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-%d.mp4"`, ref.Stream, from))
	hd.Set("Cache-Control", "private, no-store")
	hd.Set("Trailer", "X-Vigil-Clip-End, X-Vigil-Clip-Truncated")
	if len(plan.gaps) > 0 {
		parts := make([]string, 0, len(plan.gaps))
		for _, g := range plan.gaps {
			parts = append(parts, strconv.FormatInt(g.Start, 10)+"-"+strconv.FormatInt(g.End, 10))
		}
		hd.Set("X-Vigil-Clip-Gaps", strings.Join(parts, ","))
		if plan.moreGaps > 0 {
			hd.Set("X-Vigil-Clip-Gaps-More", strconv.Itoa(plan.moreGaps))
		}
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	c := newClipper(bw, from, to)
	c.durations = durations
	truncated, err := h.clipPass(ctx, ref, first, cutUS, to, c)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		if !c.written && c.seq == 0 && c.tracks == nil {
			h.segmentError(w, ref, first, err)
			return
		}
		if ctx.Err() == nil {
			h.log.WarnContext(ctx, "playback: clip aborted", "stream", ref.Stream, "err", err)
		}
		// Cut the connection so that the client sees a broken transfer,
		// not a complete but short file.
		panic(http.ErrAbortHandler)
	}
	hd.Set("X-Vigil-Clip-End", strconv.FormatInt(c.lastWall, 10))
	if truncated != "" {
		hd.Set("X-Vigil-Clip-Truncated", truncated)
	}
}

// clipPass feeds the fMP4 segments from first on through c until to, a
// parameter change (truncated says so) or an error.
func (h *Handler) clipPass(ctx context.Context, ref storage.StreamRef, first index.Segment, cutUS, to int64, c *clipper) (truncated string, err error) {
	err = h.eachSegment(ctx, ref, first.Start, to, func(s index.Segment) (bool, error) {
		err := c.stored(ctx, h.store, ref.SegmentKey(s.Start), func(src io.Reader) error {
			if !isFMP4(s) {
				src = remuxTS(src, s)
			}
			return c.segment(src, s, cutOf(s, first, cutUS))
		})
		return h.segmentDone(ctx, ref, s, c, err, &truncated)
	})
	return truncated, err
}

// cutOf is where segment s starts to count: the clip's cut in its first
// segment, everything (-1) in the others.
func cutOf(s, first index.Segment, cutUS int64) int64 {
	if s.Start == first.Start {
		return cutUS
	}
	return -1
}

// segmentDone says whether a pass goes on after segment s ended with err,
// and sets truncated when a parameter change ends the clip there.
func (h *Handler) segmentDone(ctx context.Context, ref storage.StreamRef, s index.Segment, c *clipper, err error, truncated *string) (bool, error) {
	switch {
	case errors.Is(err, errParamsChanged):
		*truncated = "parameters_changed"
		if !c.dry {
			h.log.InfoContext(ctx, "playback: clip ends at a parameter change", "stream", ref.Stream, "segment", s.Start)
		}
		return false, nil
	case errors.Is(err, fmp4.ErrMalformed) && c.written:
		// What was written of it is whole fragments: go on.
		if !c.dry {
			h.log.WarnContext(ctx, "playback: clip skips the rest of a malformed segment", "stream", ref.Stream, "segment", s.Start, "err", err)
		}
		return true, nil
	}
	return err == nil, err
}

// dryLookahead is how many segments' fragment headers the first pass
// reads ahead of its cut, concurrently: each is a few ranged reads that
// mostly wait on storage.
const dryLookahead = 8

// headers is what the first pass needs of a segment: its init section's
// tracks (or initErr) and its fragments without sample data, then the
// error that ended the reading (nil at the end of the segment).
type headers struct {
	tracks  []fmp4.Track
	initErr error
	frags   []fmp4.Fragment
	err     error
}

// readHeaders reads the headers of segment s stored at key: with ranged
// reads that skip the media for fMP4, through the remux (which must read
// it all) for MPEG-TS.
func readHeaders(ctx context.Context, store storage.Backend, key string, s index.Segment) headers {
	var rd *fmp4.Reader
	if isFMP4(s) {
		src := &rangeReader{ctx: ctx, store: store, key: key, size: s.Size}
		defer src.Close()
		rd = fmp4.NewReader(src)
	} else {
		rc, _, err := store.Get(ctx, key, 0, -1)
		if err != nil {
			return headers{initErr: err}
		}
		defer rc.Close()
		rd = fmp4.NewReader(remuxTS(rc, s))
	}
	var hd headers
	if hd.tracks, _, hd.initErr = rd.ReadInit(); hd.initErr != nil {
		return hd
	}
	for {
		f, err := rd.NextFragmentHeader()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				hd.err = err
			}
			return hd
		}
		hd.frags = append(hd.frags, f)
	}
}

// dryPass is clipPass for the first pass (c.dry): the same cut over the
// fragment headers, which are read up to dryLookahead segments ahead so
// that the clip's first byte does not wait for one storage round trip
// after another.
func (h *Handler) dryPass(ctx context.Context, ref storage.StreamRef, first index.Segment, cutUS, to int64, c *clipper) (truncated string, err error) {
	type pending struct {
		seg  index.Segment
		done chan struct{}
		hd   headers
	}
	ctx, cancel := context.WithCancel(ctx)
	queue := make(chan *pending, dryLookahead-1)
	var listErr error
	go func() {
		defer close(queue)
		listErr = h.eachSegment(ctx, ref, first.Start, to, func(s index.Segment) (bool, error) {
			p := &pending{seg: s, done: make(chan struct{})}
			select {
			case queue <- p:
			case <-ctx.Done():
				return false, nil
			}
			go func() {
				defer close(p.done)
				p.hd = readHeaders(ctx, h.store, ref.SegmentKey(s.Start), s)
			}()
			return true, nil
		})
	}()
	// Whatever ends the pass, the reads under way finish before it returns.
	defer func() {
		cancel()
		for p := range queue {
			<-p.done
		}
	}()
	for p := range queue {
		<-p.done
		s, hd := p.seg, p.hd
		err := hd.initErr
		if err == nil {
			i := 0
			next := func() (fmp4.Fragment, error) {
				if i < len(hd.frags) {
					i++
					return hd.frags[i-1], nil
				}
				if hd.err != nil {
					return fmp4.Fragment{}, hd.err
				}
				return fmp4.Fragment{}, io.EOF
			}
			err = c.fragments(hd.tracks, next, s, cutOf(s, first, cutUS))
		}
		more, err := h.segmentDone(ctx, ref, s, c, err, &truncated)
		if err != nil || !more {
			return truncated, err
		}
	}
	return truncated, listErr
}

// rangeReader reads a stored object from the start; Seek forward (all
// fmp4.Reader.NextFragmentHeader asks) skips the media it passes without
// reading it: in place when storage's reader can seek (fs), else by
// reopening the object further on (S3). Box headers are read through a
// small buffer (rangeBuf), so that a box header and what follows it
// often cost one read; at most that much media is read past a moof.
type rangeReader struct {
	ctx   context.Context
	store storage.Backend
	key   string
	size  int64 // the object's length
	off   int64 // of the next byte to read
	rc    io.ReadCloser
	br    *bufio.Reader
}

// rangeBuf is small: what it reads past a moof is media read for nothing.
const rangeBuf = 512

func (r *rangeReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if r.rc == nil {
		rc, _, err := r.store.Get(r.ctx, r.key, r.off, -1)
		if err != nil {
			return 0, err
		}
		r.rc = rc
		if r.br == nil {
			r.br = bufio.NewReaderSize(rc, rangeBuf)
		} else {
			r.br.Reset(rc)
		}
	}
	n, err := r.br.Read(p)
	r.off += int64(n)
	return n, err
}

func (r *rangeReader) Seek(offset int64, whence int) (int64, error) {
	if whence != io.SeekCurrent || offset < 0 {
		return 0, errors.New("playback: rangeReader seeks forward only")
	}
	if offset == 0 {
		return r.off, nil
	}
	if r.rc != nil {
		if n := r.br.Buffered(); int64(n) >= offset {
			_, _ = r.br.Discard(int(offset))
			r.off += offset
			return r.off, nil
		}
		if sk, ok := r.rc.(io.Seeker); ok {
			if _, err := sk.Seek(offset-int64(r.br.Buffered()), io.SeekCurrent); err == nil {
				r.br.Reset(r.rc)
				r.off += offset
				return r.off, nil
			}
		}
	}
	r.Close()
	r.off += offset
	return r.off, nil
}

func (r *rangeReader) Close() {
	if r.rc != nil {
		r.rc.Close()
		r.rc = nil
	}
}

// stored opens the object at key and runs fn over it through c's buffer.
func (c *clipper) stored(ctx context.Context, store storage.Backend, key string, fn func(io.Reader) error) error {
	rc, _, err := store.Get(ctx, key, 0, -1)
	if err != nil {
		return err
	}
	defer rc.Close()
	if c.br == nil {
		c.br = bufio.NewReaderSize(rc, 64<<10)
	} else {
		c.br.Reset(rc)
	}
	return fn(c.br)
}

// withSegment opens the segment object and runs fn over it as fMP4 (an
// MPEG-TS segment remuxed).
func (h *Handler) withSegment(ctx context.Context, ref storage.StreamRef, s index.Segment, fn func(io.Reader) (uint64, error)) (uint64, error) {
	rc, _, err := h.store.Get(ctx, ref.SegmentKey(s.Start), 0, -1)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	if !isFMP4(s) {
		return fn(remuxTS(rc, s))
	}
	return fn(bufio.NewReaderSize(rc, 64<<10))
}

// segmentError answers a failure to read a clip's segment before anything
// was sent.
func (h *Handler) segmentError(w http.ResponseWriter, ref storage.StreamRef, s index.Segment, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		httpx.WriteError(w, http.StatusNotFound, "segment_not_found", "segment "+strconv.FormatInt(s.Start, 10)+" is gone")
	case errors.Is(err, fmp4.ErrMalformed):
		httpx.WriteError(w, http.StatusUnprocessableEntity, "malformed_segment", "segment "+strconv.FormatInt(s.Start, 10)+": "+err.Error())
	default:
		h.log.WarnContext(context.Background(), "playback: clip read failed", "stream", ref.Stream, "segment", s.Start, "err", err)
		unavailable(w, "storage_unavailable", "storage unavailable, retry")
	}
}

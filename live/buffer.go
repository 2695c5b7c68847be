// Package live holds, on the node recording a stream over RTSP, the newest
// part of that recording in memory, for low-latency HLS (LL-HLS): the
// segments of the publishing session as the recorder cuts them, each with
// its init section and its fragments (one LL-HLS part each, about a
// second), before the segment is closed and stored.
//
// Bytes are held only until the segment is stored: from then on a part is
// a byte range of the stored object (Part.Offset past the init section),
// and only its metadata stays. What one stream and the whole node hold is
// bounded (Config); beyond it the oldest held bytes go first, and a part
// that still does not fit is listed without bytes (served once stored).
//
// The recorder writes (Open, Part, Close, Stored, End); viewers read
// copies (Snapshot, Data) and wait for the next change on a channel.
// A Buffer is safe for concurrent use.
package live

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/ingest/picsize"
)

// Config bounds a Buffer. Zero values take the defaults.
type Config struct {
	// Segments is how many segments of a session are listed (default 6,
	// as many as the segment window of live.m3u8 lists).
	Segments int
	// StreamBytes bounds the bytes one stream holds (default 32 MiB, a
	// 6-s segment at 40 Mbit/s).
	StreamBytes int64
	// MaxBytes bounds the bytes the node holds (default 512 MiB).
	MaxBytes int64
	// Linger is how long an ended session stays listed, so that players
	// fetch its last parts (default 30 s).
	Linger     time.Duration
	Now        func() time.Time
	Registerer prometheus.Registerer
}

// Part is one fragment (moof+mdat) of a segment.
type Part struct {
	N           int64 // number within the session: the part's URL
	Duration    time.Duration
	Independent bool  // starts with a keyframe
	Offset      int64 // in the segment object, past the init section
	Size        int64
	Held        bool // its bytes are in memory
}

// Segment is one segment of a session, open or closed.
type Segment struct {
	Start      int64 // Unix ms
	Seq        int64 // ordinal within the session, from 0
	DurationMS int64 // set when closed
	Closed     bool
	Stored     bool
	InitSize   int64
	Head       index.Head // as the index will record it (known from the first part on)
	Parts      []Part
}

// Snapshot is a copy of a stream's session as viewers see it.
type Snapshot struct {
	Session    string // random per session: part URLs name it
	Segments   []Segment
	Ended      bool
	PartTarget time.Duration // the longest part of the session so far
	NextPart   int64         // the number the next part will have
	// Changed is closed at the stream's next change.
	Changed <-chan struct{}
}

// Buffer is the node's live window of every stream it records.
type Buffer struct {
	cfg Config
	m   *metrics

	mu        sync.Mutex
	streams   map[string]*stream
	bytes     int64 // held on the node
	lastSweep time.Time
}

type stream struct {
	session  string
	segs     []*segment // oldest first
	nextSeq  int64
	nextPart int64
	bytes    int64
	ended    time.Time // zero while publishing
	target   time.Duration
	changed  chan struct{}
}

type segment struct {
	Segment
	init []byte   // nil once stored or dropped
	data [][]byte // by part; nil entries are not held
}

// New returns an empty Buffer.
func New(cfg Config) *Buffer {
	if cfg.Segments <= 0 {
		cfg.Segments = 6
	}
	if cfg.StreamBytes <= 0 {
		cfg.StreamBytes = 32 << 20
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 512 << 20
	}
	if cfg.Linger <= 0 {
		cfg.Linger = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Buffer{cfg: cfg, m: newMetrics(cfg.Registerer), streams: map[string]*stream{}}
}

func newSessionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ValidSession says whether s has the form of a session id.
func ValidSession(s string) bool {
	if len(s) != 16 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// changedLocked wakes the stream's waiters.
func (st *stream) changedLocked() {
	close(st.changed)
	st.changed = make(chan struct{})
}

// Open starts a segment of stream at startMS with its init section. The
// first Open after End (or ever) starts a new session.
func (b *Buffer) Open(stream string, startMS int64, init []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweepLocked()
	st := b.streams[stream]
	if st == nil || !st.ended.IsZero() {
		if st != nil {
			b.dropStreamLocked(st)
		} else {
			b.m.streams.Inc()
		}
		st = newStream()
		b.streams[stream] = st
	}
	b.endOpenLocked(st)
	seg := &segment{Segment: Segment{Start: startMS, Seq: st.nextSeq, InitSize: int64(len(init))}, init: append([]byte(nil), init...)}
	st.nextSeq++
	b.addBytesLocked(st, int64(len(init)))
	st.segs = append(st.segs, seg)
	for len(st.segs) > b.cfg.Segments {
		b.releaseLocked(st, st.segs[0])
		st.segs = st.segs[1:]
	}
	b.fitLocked(st)
	st.changedLocked()
}

func newStream() *stream {
	return &stream{session: newSessionID(), changed: make(chan struct{})}
}

// Part adds the next fragment of stream's open segment at startMS: its
// bytes are the concatenation of data (copied), d its duration.
func (b *Buffer) Part(stream string, startMS int64, data [][]byte, d time.Duration, independent bool) {
	var size int
	for _, p := range data {
		size += len(p)
	}
	buf := make([]byte, 0, size)
	for _, p := range data {
		buf = append(buf, p...)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	st, seg := b.openLocked(stream, startMS)
	if seg == nil {
		return
	}
	off := int64(0)
	if n := len(seg.Parts); n > 0 {
		off = seg.Parts[n-1].Offset + seg.Parts[n-1].Size
	}
	if len(seg.Parts) == 0 && seg.init != nil {
		seg.Head = headOf(seg.init, buf)
	}
	p := Part{N: st.nextPart, Duration: d, Independent: independent, Offset: off, Size: int64(len(buf)), Held: true}
	st.nextPart++
	st.target = max(st.target, d)
	seg.Parts = append(seg.Parts, p)
	seg.data = append(seg.data, buf)
	b.addBytesLocked(st, p.Size)
	b.m.parts.Inc()
	if !b.fitLocked(st) {
		b.m.unheld.Inc()
	}
	st.changedLocked()
}

// headOf is the index.Head of a segment with init section init whose
// first fragment is part: what ingest records for it once stored.
func headOf(init, part []byte) index.Head {
	sum := sha256.Sum256(init)
	var moof []byte
	if len(part) >= 8 && string(part[4:8]) == "moof" {
		if n := binary.BigEndian.Uint32(part[:4]); n >= 8 && int(n) <= len(part) {
			moof = part[8:n]
		}
	}
	return picsize.HeadOfSum(sum[:], init, moof)
}

// openLocked finds stream's open segment at startMS.
func (b *Buffer) openLocked(stream string, startMS int64) (*stream, *segment) {
	st := b.streams[stream]
	if st == nil || !st.ended.IsZero() || len(st.segs) == 0 {
		return nil, nil
	}
	seg := st.segs[len(st.segs)-1]
	if seg.Start != startMS || seg.Closed {
		return nil, nil
	}
	return st, seg
}

// Close ends stream's open segment at startMS, durMS long.
func (b *Buffer) Close(stream string, startMS, durMS int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, seg := b.openLocked(stream, startMS)
	if seg == nil {
		return
	}
	b.closeLocked(seg, durMS)
	st.changedLocked()
}

// endOpenLocked ends an open segment left without Close (the recorder
// dropped it, or its session failed): without parts it goes, else it
// closes with the parts it has.
func (b *Buffer) endOpenLocked(st *stream) {
	n := len(st.segs)
	if n == 0 || st.segs[n-1].Closed {
		return
	}
	if seg := st.segs[n-1]; len(seg.Parts) == 0 {
		b.releaseLocked(st, seg)
		st.segs = st.segs[:n-1]
		return
	}
	b.closeLocked(st.segs[n-1], 0)
}

// closeLocked closes seg; durMS 0 takes the sum of its parts.
func (b *Buffer) closeLocked(seg *segment, durMS int64) {
	if durMS <= 0 {
		var d time.Duration
		for _, p := range seg.Parts {
			d += p.Duration
		}
		durMS = d.Milliseconds()
	}
	seg.Closed, seg.DurationMS = true, durMS
}

// Stored notes that stream's segment at startMS is in storage and the
// index: its bytes are no longer held.
func (b *Buffer) Stored(stream string, startMS int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.streams[stream]
	if st == nil {
		return
	}
	for _, seg := range st.segs {
		if seg.Start == startMS && seg.Closed {
			seg.Stored = true
			b.releaseLocked(st, seg)
			st.changedLocked()
			return
		}
	}
}

// End ends stream's session: its open segment is closed (Close may follow
// with the exact duration), and the session stays listed for Linger.
func (b *Buffer) End(stream string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.streams[stream]
	if st == nil || !st.ended.IsZero() {
		return
	}
	b.endOpenLocked(st)
	st.ended = b.cfg.Now()
	st.changedLocked()
}

// sweepLocked forgets sessions that ended more than Linger ago, looking
// at most once a second (it walks every stream).
func (b *Buffer) sweepLocked() {
	now := b.cfg.Now()
	if now.Sub(b.lastSweep) < time.Second && !now.Before(b.lastSweep) {
		return
	}
	b.lastSweep = now
	for id, st := range b.streams {
		if !st.ended.IsZero() && now.Sub(st.ended) > b.cfg.Linger {
			b.dropStreamLocked(st)
			delete(b.streams, id)
			b.m.streams.Dec()
		}
	}
}

func (b *Buffer) dropStreamLocked(st *stream) {
	for _, seg := range st.segs {
		b.releaseLocked(st, seg)
	}
	st.segs = nil
	st.changedLocked()
}

// releaseLocked lets go of seg's bytes.
func (b *Buffer) releaseLocked(st *stream, seg *segment) {
	n := int64(len(seg.init))
	seg.init = nil
	for i, d := range seg.data {
		n += int64(len(d))
		seg.data[i] = nil
		seg.Parts[i].Held = false
	}
	b.addBytesLocked(st, -n)
}

func (b *Buffer) addBytesLocked(st *stream, n int64) {
	st.bytes += n
	b.bytes += n
	b.m.bytes.Add(float64(n))
}

// fitLocked brings st, and the node, within their bounds: the bytes of
// st's closed segments go first, oldest first, then the newest part's. It
// reports whether the newest part is still held.
func (b *Buffer) fitLocked(st *stream) bool {
	over := func() bool { return st.bytes > b.cfg.StreamBytes || b.bytes > b.cfg.MaxBytes }
	for _, seg := range st.segs {
		if !over() {
			return true
		}
		if seg.Closed {
			b.releaseLocked(st, seg)
		}
	}
	if !over() {
		return true
	}
	seg := st.segs[len(st.segs)-1]
	n := len(seg.data) - 1
	if n < 0 || seg.data[n] == nil {
		return true
	}
	b.addBytesLocked(st, -int64(len(seg.data[n])))
	seg.data[n] = nil
	seg.Parts[n].Held = false
	return false
}

// Snapshot returns a copy of stream's session, false when this node does
// not record it (or its session ended more than Linger ago).
func (b *Buffer) Snapshot(stream string) (Snapshot, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweepLocked()
	st := b.streams[stream]
	if st == nil || len(st.segs) == 0 || !st.ended.IsZero() && b.cfg.Now().Sub(st.ended) > b.cfg.Linger {
		return Snapshot{}, false
	}
	s := Snapshot{Session: st.session, Ended: !st.ended.IsZero(), PartTarget: st.target, NextPart: st.nextPart, Changed: st.changed,
		Segments: make([]Segment, len(st.segs))}
	for i, seg := range st.segs {
		s.Segments[i] = seg.Segment
		s.Segments[i].Parts = append([]Part(nil), seg.Parts...)
	}
	return s, true
}

// PartData returns the bytes of part n of stream's session, if held, and
// the segment it belongs to (ok false: no such part).
func (b *Buffer) PartData(stream, session string, n int64) (data []byte, seg Segment, part Part, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.streams[stream]
	if st == nil || st.session != session {
		return nil, Segment{}, Part{}, false
	}
	for _, s := range st.segs {
		if len(s.Parts) == 0 || n < s.Parts[0].N || n > s.Parts[len(s.Parts)-1].N {
			continue
		}
		i := int(n - s.Parts[0].N)
		return s.data[i], s.Segment, s.Parts[i], true
	}
	return nil, Segment{}, Part{}, false
}

// Init returns the init section of stream's segment at startMS, while held.
func (b *Buffer) Init(stream string, startMS int64) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if seg := b.segLocked(stream, startMS); seg != nil && seg.init != nil {
		return seg.init, true
	}
	return nil, false
}

// Media returns the fragments of stream's closed segment at startMS (the
// object past its init section) while all of them are held.
func (b *Buffer) Media(stream string, startMS int64) ([][]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	seg := b.segLocked(stream, startMS)
	if seg == nil || !seg.Closed || len(seg.data) == 0 {
		return nil, false
	}
	for _, d := range seg.data {
		if d == nil {
			return nil, false
		}
	}
	return append([][]byte(nil), seg.data...), true
}

func (b *Buffer) segLocked(stream string, startMS int64) *segment {
	st := b.streams[stream]
	if st == nil {
		return nil
	}
	for _, seg := range st.segs {
		if seg.Start == startMS {
			return seg
		}
	}
	return nil
}

type metrics struct {
	streams prometheus.Gauge
	bytes   prometheus.Gauge
	parts   prometheus.Counter
	unheld  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_live_streams",
			Help: "Streams whose live window (LL-HLS parts) this node holds."}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_live_buffer_bytes",
			Help: "Bytes of live parts and init sections held in memory, not yet stored."}),
		parts: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_live_parts_total",
			Help: "LL-HLS parts (recorded fragments) added to the live window."}),
		unheld: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_live_parts_unheld_total",
			Help: "Parts not held in memory because the stream or node bound was reached; they are served once stored."}),
	}
	if reg != nil {
		reg.MustRegister(m.streams, m.bytes, m.parts, m.unheld)
	}
	return m
}

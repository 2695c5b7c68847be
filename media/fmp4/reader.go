package fmp4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Size caps: the Reader refuses bigger boxes instead of buffering them.
const (
	maxInitBox = 4 << 20  // moov
	maxMoof    = 8 << 20  // moof
	maxMdat    = 64 << 20 // mdat
	// maxSamples bounds one fragment's sample table (about 64 bytes each
	// while parsing); real fragments hold a few hundred.
	maxSamples = 1 << 16
	// readChunk is how much a box body grows per read, so a header that
	// claims a huge box costs memory only as its data actually arrives.
	readChunk = 1 << 20
)

// Reader reads one fMP4 stream: an init section, then fragments. It
// validates box sizes and nesting and returns errors wrapping ErrMalformed
// for bad input; it never buffers more than the box it reads, and caps
// those (4 MiB moov, 8 MiB moof, 64 MiB mdat).
type Reader struct {
	r      io.Reader
	off    int64 // bytes consumed from r
	tracks map[uint32]*trackState
	order  []uint32
	init   bool
	moof   []byte // reused buffers
	mdat   []byte
	// Of the last fragment NextFragment returned: where each sample's
	// data is in the stream (refs), from which index of refs each track's
	// samples begin (trackRefs), and the stream offset of mdat[0].
	refs      []sampleRef
	trackRefs []int
	mdatBase  int64
}

// trackState is what fragments need from the init section.
type trackState struct {
	supported                      bool
	timeScale                      uint32
	defDuration, defSize, defFlags uint32
	nextDTS                        uint64
}

// NewReader returns a Reader over r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Reset makes r read a new stream from src, as NewReader(src) would, and
// keeps its buffers: reading many segments one after another then
// allocates nothing per segment.
func (r *Reader) Reset(src io.Reader) {
	*r = Reader{r: src, moof: r.moof[:0], mdat: r.mdat[:0], trackRefs: r.trackRefs[:0]}
}

// Offset is how many bytes of the stream have been read: after ReadInit
// or NextFragment returned without an error, where the init or that
// fragment ends.
func (r *Reader) Offset() int64 { return r.off }

type header struct {
	typ   string
	start int64 // offset of the box in the stream
	hdr   int64 // header length
	size  int64 // total size, -1 when the box runs to the end of the stream
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// readFull reads len(p) bytes; a short read is malformed input.
func (r *Reader) readFull(p []byte) error {
	n, err := io.ReadFull(r.r, p)
	r.off += int64(n)
	if err == io.ErrUnexpectedEOF || (err == io.EOF && len(p) > 0) {
		return fmt.Errorf("fmp4: %w: truncated at byte %d: %w", ErrMalformed, r.off, io.ErrUnexpectedEOF)
	}
	return err
}

// readHeader reads the next top-level box header; io.EOF at a clean end.
func (r *Reader) readHeader() (header, error) {
	h := header{start: r.off, hdr: 8}
	var b [16]byte
	n, err := io.ReadFull(r.r, b[:8])
	r.off += int64(n)
	if err == io.EOF {
		return h, io.EOF
	}
	if err == io.ErrUnexpectedEOF {
		return h, malformed("truncated box header at byte %d", h.start)
	}
	if err != nil {
		return h, fmt.Errorf("fmp4: read box header: %w", err)
	}
	h.typ = string(b[4:8])
	size := int64(binary.BigEndian.Uint32(b[:4]))
	switch size {
	case 0:
		h.size = -1
	case 1:
		if err := r.readFull(b[8:16]); err != nil {
			return h, err
		}
		h.hdr = 16
		large := binary.BigEndian.Uint64(b[8:16])
		if large > math.MaxInt64 {
			return h, malformed("box %q of %d bytes", h.typ, large)
		}
		h.size = int64(large)
	default:
		h.size = size
	}
	if h.size != -1 && h.size < h.hdr {
		return h, malformed("box %q at byte %d: size %d below its header", h.typ, h.start, h.size)
	}
	return h, nil
}

// readBody reads h's body into buf (reused), refusing bodies over limit.
func (r *Reader) readBody(h header, limit int64, buf []byte) ([]byte, error) {
	buf = buf[:0]
	if h.size == -1 {
		// Runs to the end: read until EOF, one byte over the limit at most.
		for {
			if int64(len(buf)) > limit {
				return nil, malformed("box %q over %d bytes", h.typ, limit)
			}
			if cap(buf)-len(buf) < 4<<10 {
				grow := min(readChunk, int(limit+1)-len(buf)+1, max(len(buf), 32<<10))
				buf = append(buf, make([]byte, grow)...)[:len(buf)]
			}
			n, err := r.r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			r.off += int64(n)
			if err == io.EOF {
				return buf, nil
			}
			if err != nil {
				return nil, fmt.Errorf("fmp4: read %q: %w", h.typ, err)
			}
		}
	}
	n := h.size - h.hdr
	if n > limit {
		return nil, malformed("box %q of %d bytes over the %d-byte cap", h.typ, n, limit)
	}
	for int64(len(buf)) < n {
		// Grow geometrically from 64 KiB: a lying header costs little.
		step := int(min(n-int64(len(buf)), readChunk, int64(max(len(buf), 64<<10))))
		l := len(buf)
		if cap(buf)-l < step {
			buf = append(buf[:cap(buf)], make([]byte, step-(cap(buf)-l))...)
		}
		buf = buf[:l+step]
		if err := r.readFull(buf[l:]); err != nil {
			return nil, fmt.Errorf("fmp4: read %q: %w", h.typ, err)
		}
	}
	return buf, nil
}

// seekPast skips the mdat h without reading it and returns its body length.
func (r *Reader) seekPast(h header) (int64, error) {
	n := h.size - h.hdr
	s, ok := r.r.(io.Seeker)
	if !ok || h.size == -1 {
		before := r.off
		err := r.skip(h)
		return r.off - before, err
	}
	if n > maxMdat {
		return 0, malformed("box %q of %d bytes over the %d-byte cap", h.typ, n, int64(maxMdat))
	}
	if _, err := s.Seek(n, io.SeekCurrent); err != nil {
		return 0, fmt.Errorf("fmp4: skip %q: %w", h.typ, err)
	}
	r.off += n
	return n, nil
}

// skip discards h's body.
func (r *Reader) skip(h header) error {
	if h.size == -1 {
		n, err := io.Copy(io.Discard, r.r)
		r.off += n
		if err != nil {
			return fmt.Errorf("fmp4: skip %q: %w", h.typ, err)
		}
		return nil
	}
	n, err := io.CopyN(io.Discard, r.r, h.size-h.hdr)
	r.off += n
	if err == io.EOF {
		return malformed("box %q at byte %d truncated", h.typ, h.start)
	}
	if err != nil {
		return fmt.Errorf("fmp4: skip %q: %w", h.typ, err)
	}
	return nil
}

// ReadInit reads ftyp/moov (skipping free/styp/sidx and other boxes) and
// returns the tracks of supported codecs and the number of bytes consumed.
func (r *Reader) ReadInit() (tracks []Track, initSize int64, err error) {
	if r.init {
		return nil, 0, errors.New("fmp4: ReadInit called twice")
	}
	for {
		h, err := r.readHeader()
		if err == io.EOF {
			return nil, r.off, malformed("no moov box")
		}
		if err != nil {
			return nil, r.off, err
		}
		switch h.typ {
		case "moov":
			body, err := r.readBody(h, maxInitBox, nil)
			if err != nil {
				return nil, r.off, err
			}
			tracks, err := r.parseMoov(body)
			if err != nil {
				return nil, r.off, err
			}
			r.init = true
			return tracks, r.off, nil
		case "moof", "mdat":
			return nil, r.off, malformed("%q before moov", h.typ)
		default:
			if err := r.skip(h); err != nil {
				return nil, r.off, err
			}
		}
	}
}

// NextFragment returns the next moof + mdat, or io.EOF after the last one.
// Sample.Data slices are valid until the next call.
func (r *Reader) NextFragment() (Fragment, error) {
	if !r.init {
		return Fragment{}, errors.New("fmp4: NextFragment before ReadInit")
	}
	for {
		h, err := r.readHeader()
		if err != nil {
			return Fragment{}, err
		}
		switch h.typ {
		case "moof":
			return r.fragment(h)
		case "moov", "ftyp":
			return Fragment{}, malformed("second %q at byte %d", h.typ, h.start)
		default:
			// A stray mdat (no moof) or styp/sidx/free: nothing to return.
			if err := r.skip(h); err != nil {
				return Fragment{}, err
			}
		}
	}
}

// pendingTrun is one trun's samples with their data still as stream offsets.
type sampleRef struct {
	pos  int64
	size uint32
}

// NextFragmentHeader is NextFragment without the sample data: Sample.Data
// is nil and the mdat is skipped, by seeking when the underlying reader is
// an io.Seeker (so a stored object's media need not be transferred). The
// samples are checked against the mdat's size as NextFragment checks them.
func (r *Reader) NextFragmentHeader() (Fragment, error) {
	if !r.init {
		return Fragment{}, errors.New("fmp4: NextFragmentHeader before ReadInit")
	}
	for {
		h, err := r.readHeader()
		if err != nil {
			return Fragment{}, err
		}
		switch h.typ {
		case "moof":
			return r.fragmentOf(h, false)
		case "moov", "ftyp":
			return Fragment{}, malformed("second %q at byte %d", h.typ, h.start)
		default:
			if err := r.skip(h); err != nil {
				return Fragment{}, err
			}
		}
	}
}

func (r *Reader) fragment(moofH header) (Fragment, error) { return r.fragmentOf(moofH, true) }

func (r *Reader) fragmentOf(moofH header, withData bool) (Fragment, error) {
	body, err := r.readBody(moofH, maxMoof, r.moof)
	if err != nil {
		return Fragment{}, err
	}
	r.moof = body
	f, refs, err := r.parseMoof(moofH.start, body)
	if err != nil {
		return Fragment{}, err
	}
	var h header
	for {
		h, err = r.readHeader()
		if err == io.EOF {
			return Fragment{}, malformed("moof at byte %d without mdat", moofH.start)
		}
		if err != nil {
			return Fragment{}, err
		}
		if h.typ == "mdat" {
			break
		}
		if h.typ != "free" && h.typ != "skip" {
			return Fragment{}, malformed("moof at byte %d followed by %q, not mdat", moofH.start, h.typ)
		}
		if err := r.skip(h); err != nil {
			return Fragment{}, err
		}
	}
	var data []byte
	var size int64
	if withData {
		if data, err = r.readBody(h, maxMdat, r.mdat); err != nil {
			return Fragment{}, err
		}
		r.mdat, size = data, int64(len(data))
	} else if size, err = r.seekPast(h); err != nil {
		return Fragment{}, err
	}
	base := h.start + h.hdr
	k := 0
	for i := range f.Tracks {
		for j := range f.Tracks[i].Samples {
			ref := refs[k]
			k++
			start := ref.pos - base
			end := start + int64(ref.size)
			if start < 0 || end > size {
				return Fragment{}, malformed("track %d sample %d at bytes %d..%d outside the mdat (%d..%d)",
					f.Tracks[i].TrackID, j, ref.pos, ref.pos+int64(ref.size), base, base+size)
			}
			if withData {
				f.Tracks[i].Samples[j].Data = data[start:end:end]
			}
		}
	}
	r.refs, r.mdatBase, r.trackRefs = nil, base, r.trackRefs[:0]
	if withData {
		r.refs = refs
		k = 0
		for _, tf := range f.Tracks {
			r.trackRefs = append(r.trackRefs, k)
			k += len(tf.Samples)
		}
	}
	return f, nil
}

// Media returns the data of samples [i, j) of the t-th track of the
// fragment NextFragment returned last as one slice of its mdat, when they
// are stored back to back there (as muxers store a run); otherwise, or
// after NextFragmentHeader, nil. Writing a run with one Write saves a
// write (and often a copy) per sample. Valid until the next call.
func (r *Reader) Media(t, i, j int) []byte {
	if r.refs == nil || t < 0 || t >= len(r.trackRefs) || i < 0 || j <= i {
		return nil
	}
	n := len(r.refs) - r.trackRefs[t]
	if t+1 < len(r.trackRefs) {
		n = r.trackRefs[t+1] - r.trackRefs[t]
	}
	if j > n {
		return nil
	}
	run := r.refs[r.trackRefs[t]+i : r.trackRefs[t]+j]
	end := run[0].pos
	for _, ref := range run {
		if ref.pos != end {
			return nil
		}
		end += int64(ref.size)
	}
	return r.mdat[run[0].pos-r.mdatBase : end-r.mdatBase]
}

package ingest

import (
	"encoding/binary"
	"errors"
	"io"
	"math"

	"github.com/vigilcloud/vigil/media"
)

// errNotFragmented: a video/mp4 body whose moov has no mvex is a plain
// MP4. Its samples live in the moov's tables, which HLS and clips do not
// read, so it is refused (415 mp4_not_fragmented) instead of stored
// unplayable. Bridges send fMP4 or MPEG-TS.
var errNotFragmented = errors.New("video/mp4 body is not fragmented (moov without mvex): send fragmented MP4 or MPEG-TS")

// requireFragmented wraps the validated body of a video/mp4 upload so that
// a plain MP4 fails before its last byte reaches storage. Other content
// types pass as they are.
func requireFragmented(r io.Reader, contentType string) io.Reader {
	if media.NormalizeContentType(contentType) != media.ContentTypeMP4 {
		return r
	}
	return &fragmentedCheck{r: r}
}

// fragmentedCheck walks the top-level boxes and the first moov's children
// as they stream by, holding nothing but a box header.
type fragmentedCheck struct {
	r        io.Reader
	hdr      [16]byte
	hdrLen   int
	hdrNeed  int
	skip     int64 // body bytes of the current box (top level or moov child) still to pass
	inMoov   bool
	moovLeft int64 // bytes of the moov body still to come; math.MaxInt64 when it runs to the end
	done     bool  // the first moov was judged
	err      error
}

func (c *fragmentedCheck) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.r.Read(p)
	if !c.done {
		c.feed(p[:n])
		if err == io.EOF && c.inMoov && !c.done {
			c.err = errNotFragmented // a moov that runs to the end without mvex
		}
		if c.err != nil {
			return 0, c.err // the verdict comes instead of these bytes
		}
	}
	return n, err
}

func (c *fragmentedCheck) feed(p []byte) {
	for len(p) > 0 && !c.done {
		if c.skip > 0 {
			n := min(c.skip, int64(len(p)))
			c.skip -= n
			p = p[n:]
			c.consumed(n)
			c.moovEnd()
			continue
		}
		if c.hdrNeed == 0 {
			c.hdrNeed = 8
		}
		n := copy(c.hdr[c.hdrLen:c.hdrNeed], p)
		c.hdrLen += n
		p = p[n:]
		c.consumed(int64(n))
		if c.hdrLen < c.hdrNeed {
			continue
		}
		size := int64(binary.BigEndian.Uint32(c.hdr[:4]))
		if size == 1 && c.hdrNeed == 8 {
			c.hdrNeed = 16 // a 64-bit largesize follows
			continue
		}
		if size == 1 {
			size = int64(min(binary.BigEndian.Uint64(c.hdr[8:16]), math.MaxInt64))
		}
		body := size - int64(c.hdrNeed)
		if size == 0 {
			body = math.MaxInt64 // runs to the end
		}
		typ := string(c.hdr[4:8])
		c.hdrLen, c.hdrNeed = 0, 0
		switch {
		case c.inMoov && typ == "mvex":
			c.done = true
		case c.inMoov:
			c.skip = max(0, min(body, c.moovLeft))
		case typ == "moov":
			c.inMoov, c.moovLeft = true, max(0, body)
		default:
			c.skip = max(0, body)
		}
		c.moovEnd()
	}
}

// consumed accounts n bytes read inside the moov.
func (c *fragmentedCheck) consumed(n int64) {
	if c.inMoov && c.moovLeft != math.MaxInt64 {
		c.moovLeft -= n
	}
}

// moovEnd judges a moov whose last child has passed without an mvex.
func (c *fragmentedCheck) moovEnd() {
	if c.inMoov && !c.done && c.moovLeft <= 0 && c.skip == 0 && c.hdrLen == 0 {
		c.err, c.done = errNotFragmented, true
	}
}

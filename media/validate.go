// Package media holds vigil's own media-format code: for now the streaming
// validator that ingest runs every uploaded segment through.
package media

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
)

// Content types vigil accepts for segments.
const (
	ContentTypeMP4 = "video/mp4"
	ContentTypeTS  = "video/mp2t"
)

// ErrMalformed is wrapped by the read errors of a validator whose stream is
// not well-formed.
var ErrMalformed = errors.New("media: malformed segment")

// ErrUnsupportedType is returned by NewValidator for a content type vigil
// does not store (answer 415).
var ErrUnsupportedType = errors.New("media: unsupported content type")

// NormalizeContentType returns the media type of a Content-Type header value
// (lower case, parameters dropped), or "" when it cannot be parsed.
func NormalizeContentType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ""
	}
	return strings.ToLower(mt)
}

// NewValidator returns a reader that passes r through unchanged while
// checking its structure: the top-level ISO-BMFF box layout for video/mp4
// (fragmented MP4) and the 188-byte packet framing for video/mp2t.
//
// When the stream is malformed, Read returns an error wrapping ErrMalformed
// instead of the offending bytes. The last byte of the stream is held back
// and returned together with io.EOF only once the end has been checked, so
// a consumer that stops after exactly the stream's length (io.CopyN) still
// sees the verdict before it has all the bytes. Memory stays bounded (one
// 32 KiB buffer).
func NewValidator(r io.Reader, contentType string) (io.Reader, error) {
	var c checker
	switch NormalizeContentType(contentType) {
	case ContentTypeMP4:
		c = &mp4Checker{}
	case ContentTypeTS:
		c = &tsChecker{}
	default:
		return nil, fmt.Errorf("%w: %q (want %s or %s)", ErrUnsupportedType, contentType, ContentTypeMP4, ContentTypeTS)
	}
	return &validator{r: r, c: c, buf: make([]byte, 32<<10)}, nil
}

// checker validates a stream incrementally.
type checker interface {
	// feed checks the next bytes of the stream.
	feed(p []byte) error
	// finish checks that the stream may end here.
	finish() error
}

type validator struct {
	r        io.Reader
	c        checker
	buf      []byte
	off, end int // buf[off:end] is checked and not yet delivered
	eof      bool
	err      error
}

func (v *validator) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if v.err != nil {
			return 0, v.err
		}
		avail := v.end - v.off
		if !v.eof {
			avail-- // hold back the last byte until the end is checked
		}
		if avail > 0 {
			n := copy(p, v.buf[v.off:v.off+avail])
			v.off += n
			if v.eof && v.off == v.end {
				return n, io.EOF
			}
			return n, nil
		}
		if v.eof {
			return 0, io.EOF
		}
		// Keep the held-back byte (if any) at the front and refill.
		if v.off > 0 {
			v.end = copy(v.buf, v.buf[v.off:v.end])
			v.off = 0
		}
		n, err := v.r.Read(v.buf[v.end:])
		if n > 0 {
			if cerr := v.c.feed(v.buf[v.end : v.end+n]); cerr != nil {
				v.err = cerr
				return 0, v.err
			}
			v.end += n
		}
		switch {
		case err == io.EOF:
			v.eof = true
			if cerr := v.c.finish(); cerr != nil {
				v.err = cerr
			}
		case err != nil:
			v.err = err
		}
	}
}

// tsChecker checks MPEG-TS framing: a 0x47 sync byte at every 188-byte
// packet start and a whole number of packets.
type tsChecker struct {
	pos int64
}

const tsPacketSize = 188

func (c *tsChecker) feed(p []byte) error {
	for i := 0; i < len(p); {
		rem := c.pos % tsPacketSize
		if rem == 0 {
			if p[i] != 0x47 {
				return fmt.Errorf("%w: mpeg-ts: no sync byte at offset %d (got 0x%02x)", ErrMalformed, c.pos, p[i])
			}
			i++
			c.pos++
			continue
		}
		skip := min(int64(len(p)-i), tsPacketSize-rem)
		i += int(skip)
		c.pos += skip
	}
	return nil
}

func (c *tsChecker) finish() error {
	if c.pos == 0 {
		return fmt.Errorf("%w: mpeg-ts: empty body", ErrMalformed)
	}
	if c.pos%tsPacketSize != 0 {
		return fmt.Errorf("%w: mpeg-ts: length %d is not a multiple of %d", ErrMalformed, c.pos, tsPacketSize)
	}
	return nil
}

// mp4Checker checks the top-level ISO-BMFF box structure of a (fragmented)
// MP4 stream.
type mp4Checker struct {
	pos     int64    // stream offset of the next byte fed
	boxes   int      // top-level boxes whose header was read
	hdr     [16]byte // header bytes of the box being read
	hdrLen  int      // bytes of hdr filled
	hdrNeed int      // header length wanted: 8, or 16 with a largesize
	left    int64    // body bytes of the current box still to come
	toEnd   bool     // the current box has size 0: it runs to the end
}

// firstBoxes are the boxes an MP4 file or a media segment may start with.
var firstBoxes = map[string]bool{
	"ftyp": true, "styp": true, "moof": true, "sidx": true, "emsg": true,
	"prft": true, "free": true, "skip": true, "moov": true,
}

func (c *mp4Checker) feed(p []byte) error {
	for len(p) > 0 {
		if c.toEnd {
			c.pos += int64(len(p))
			return nil
		}
		if c.left > 0 {
			n := min(c.left, int64(len(p)))
			c.left -= n
			c.pos += n
			p = p[n:]
			continue
		}
		// Reading a box header.
		if c.hdrNeed == 0 {
			c.hdrNeed = 8
		}
		n := copy(c.hdr[c.hdrLen:c.hdrNeed], p)
		c.hdrLen += n
		c.pos += int64(n)
		p = p[n:]
		if c.hdrLen < c.hdrNeed {
			continue
		}
		if c.hdrNeed == 8 {
			if err := c.checkType(); err != nil {
				return err
			}
			if binary.BigEndian.Uint32(c.hdr[0:4]) == 1 {
				c.hdrNeed = 16 // a 64-bit largesize follows
				continue
			}
		}
		if err := c.startBody(); err != nil {
			return err
		}
	}
	return nil
}

// boxStart is the stream offset of the box whose header is in hdr.
func (c *mp4Checker) boxStart() int64 { return c.pos - int64(c.hdrLen) }

func (c *mp4Checker) checkType() error {
	typ := c.hdr[4:8]
	for _, b := range typ {
		ok := b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == ' '
		if !ok {
			return fmt.Errorf("%w: mp4: box at offset %d has a non-printable type %q", ErrMalformed, c.boxStart(), typ)
		}
	}
	if c.boxes == 0 && !firstBoxes[string(typ)] {
		return fmt.Errorf("%w: mp4: stream starts with a %q box (want ftyp, styp, moof, sidx or emsg)", ErrMalformed, typ)
	}
	return nil
}

func (c *mp4Checker) startBody() error {
	start := c.boxStart()
	size32 := binary.BigEndian.Uint32(c.hdr[0:4])
	var size int64
	switch size32 {
	case 0:
		c.toEnd = true // the box runs to the end of the stream: must be the last
	case 1:
		large := binary.BigEndian.Uint64(c.hdr[8:16])
		if large < 16 || large > 1<<62 {
			return fmt.Errorf("%w: mp4: box %q at offset %d has largesize %d", ErrMalformed, c.hdr[4:8], start, large)
		}
		size = int64(large)
	default:
		if size32 < 8 {
			return fmt.Errorf("%w: mp4: box %q at offset %d has size %d", ErrMalformed, c.hdr[4:8], start, size32)
		}
		size = int64(size32)
	}
	c.boxes++
	if !c.toEnd {
		c.left = size - int64(c.hdrNeed)
	}
	c.hdrLen, c.hdrNeed = 0, 0
	return nil
}

func (c *mp4Checker) finish() error {
	switch {
	case c.boxes == 0 && c.hdrLen == 0:
		return fmt.Errorf("%w: mp4: empty body", ErrMalformed)
	case c.toEnd:
		return nil
	case c.hdrLen > 0:
		return fmt.Errorf("%w: mp4: body ends inside a box header at offset %d", ErrMalformed, c.boxStart())
	case c.left > 0:
		return fmt.Errorf("%w: mp4: body ends %d bytes before the end of the last box", ErrMalformed, c.left)
	}
	return nil
}

// Package picsize reads the picture size of an uploaded segment from its
// head: the SPS in an fMP4 init section (avcC/hvcC), or in the first video
// PES of an MPEG-TS stream (H.264 stream type 0x1B, H.265 0x24); and an
// fMP4 segment's index head (init section and first decode time). It reads
// only as far as it needs, within fixed bounds, so that the caller can
// replay those bytes and stream the rest.
package picsize

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/media"
	"github.com/vigilcloud/vigil/media/avc"
	"github.com/vigilcloud/vigil/media/fmp4"
	"github.com/vigilcloud/vigil/media/hevc"
)

// Bounds of Read: past them the size is left unknown.
const (
	// MaxMP4Head bounds the boxes up to and including moov (ftyp, styp,
	// free, sidx … then moov); a camera's init section is a few KiB.
	MaxMP4Head = 1 << 20
	// MaxTSPackets bounds the packets scanned for PAT, PMT and the first
	// video PES (94 KiB).
	MaxTSPackets = 512
	// maxPESHead bounds the bytes of that PES searched for the SPS, which
	// encoders put at the start of a keyframe's access unit.
	maxPESHead = 16 << 10
)

// Size is a picture size in pixels; the zero Size is unknown.
type Size struct{ Width, Height int }

// Known reports whether s holds a size.
func (s Size) Known() bool { return s.Width > 0 && s.Height > 0 }

// Info is what Read finds in a segment's head.
type Info struct {
	Size Size
	// Head is an fMP4 segment's init section and first decode time
	// (HeadOf); zero when the init section is not within MaxMP4Head, and
	// without the time when the first moof is not.
	Head index.Head
}

// Read reads the head of a segment of contentType (media.ContentTypeMP4 or
// media.ContentTypeTS) from r and returns the bytes it consumed, which
// the caller must replay before the rest of r, and what it found there
// (zero when there is nothing within the bounds). err is a read error of r
// other than the end of the stream.
func Read(r io.Reader, contentType string) (head []byte, info Info, err error) {
	switch media.NormalizeContentType(contentType) {
	case media.ContentTypeMP4:
		return readMP4(r)
	case media.ContentTypeTS:
		head, s, err := readTS(r)
		return head, Info{Size: s}, err
	}
	return nil, Info{}, nil
}

// readMP4 reads top-level boxes up to the end of moov for the picture
// size, then on to the first moof for the head.
func readMP4(r io.Reader) ([]byte, Info, error) {
	var (
		head []byte
		info Info
		moov bool
		err  error
	)
	for {
		hdr := len(head)
		head, err = readMore(r, head, 8)
		if err != nil {
			return head, info, end(err)
		}
		size := int64(binary.BigEndian.Uint32(head[hdr:]))
		typ := string(head[hdr+4 : hdr+8])
		switch size {
		case 0: // runs to the end of the stream: nothing to bound it by
			return head, info, nil
		case 1:
			if head, err = readMore(r, head, 8); err != nil {
				return head, info, end(err)
			}
			size = int64(binary.BigEndian.Uint64(head[hdr+8:]))
		}
		body := size - int64(len(head)-hdr)
		if body < 0 || int64(len(head))+body > MaxMP4Head {
			if typ == "moof" && moov && body >= 0 {
				info.Head = HeadOf(head[:hdr], nil) // the time stays unknown
			}
			return head, info, nil
		}
		switch {
		case typ == "moof" && moov && len(head)-hdr == 8:
			// As playback reads it: the time only from a 32-bit moof.
			if head, err = readMore(r, head, int(body)); err != nil {
				return head, info, end(err)
			}
			info.Head = HeadOf(head[:hdr], head[hdr+8:])
			return head, info, nil
		case typ == "moof" && moov:
			info.Head = HeadOf(head[:hdr], nil)
			return head, info, nil
		}
		switch typ {
		case "ftyp", "styp", "free", "skip", "sidx", "prft", "emsg", "uuid", "moov":
		default: // moof, mdat …: a media segment without an init section
			return head, info, nil
		}
		if head, err = readMore(r, head, int(body)); err != nil {
			return head, info, end(err)
		}
		if typ == "moov" {
			moov = true
			info.Size = FromMP4(head)
		}
	}
}

// readMore appends n bytes of r to b.
func readMore(r io.Reader, b []byte, n int) ([]byte, error) {
	l := len(b)
	b = append(b, make([]byte, n)...)
	m, err := io.ReadFull(r, b[l:])
	return b[:l+m], err
}

// end drops the errors that only say the stream ended early: the head is
// then all there is, and the caller's reader reports the rest.
func end(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	return err
}

// FromMP4 returns the picture size of the first H.264 or H.265 track of an
// fMP4 init section (ftyp … moov), read from its SPS rather than from the
// sample entry, which the writer fills in as it likes.
func FromMP4(init []byte) Size {
	tracks, _, err := fmp4.NewReader(bytes.NewReader(init)).ReadInit()
	if err != nil {
		return Size{}
	}
	for _, t := range tracks {
		if s := fromSPS(t.Codec, t.SPS); s.Known() {
			return s
		}
	}
	return Size{}
}

func fromSPS(codec fmp4.Codec, nal []byte) Size {
	switch codec {
	case fmp4.H264:
		if sps, err := avc.ParseSPS(nal); err == nil {
			return Size{sps.Width, sps.Height}
		}
	case fmp4.H265:
		if sps, err := hevc.ParseSPS(nal); err == nil {
			return Size{sps.Width, sps.Height}
		}
	}
	return Size{}
}

// readTS reads packets until the scan has an answer.
func readTS(r io.Reader) ([]byte, Size, error) {
	var (
		head []byte
		sc   = newTSScan()
		err  error
	)
	for i := 0; i < MaxTSPackets; i++ {
		l := len(head)
		if head, err = readMore(r, head, tsPacket); err != nil {
			return head, Size{}, end(err)
		}
		if sc.packet(head[l:]) {
			break
		}
	}
	return head, sc.size, nil
}

// FromTS returns the picture size in the first video PES of MPEG-TS
// packets b, scanning at most MaxTSPackets of them.
func FromTS(b []byte) Size {
	sc := newTSScan()
	for i := 0; i < MaxTSPackets && len(b) >= tsPacket; i++ {
		if sc.packet(b[:tsPacket]) {
			break
		}
		b = b[tsPacket:]
	}
	return sc.size
}

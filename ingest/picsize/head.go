package picsize

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/media/fmp4"
)

// HeadOf returns the index head of an fMP4 segment: init is its init
// section (every byte before the first moof), moof that moof's body (after
// its 8-byte header), nil when it was not read; the decode time is then
// left unknown.
func HeadOf(init, moof []byte) index.Head {
	sum := sha256.Sum256(init)
	return HeadOfSum(sum[:], init, moof)
}

// HeadOfSum is HeadOf for a caller that hashed the init section as it
// streamed: sum is its SHA-256, init its bytes (nil when it was too big to
// keep, which leaves the decode time unknown).
func HeadOfSum(sum, init, moof []byte) index.Head {
	var h index.Head
	copy(h.Init[:], sum)
	if init != nil && moof != nil {
		h.Track, h.TFDT, h.Scale = DecodeTime(init, moof)
	}
	if h.Scale == 0 {
		h.Track, h.TFDT = 0, 0
	}
	return h
}

// DecodeTime returns the track, tfdt and timescale of the first traf of a
// moof body, with the timescale from the init section; scale 0 when any is
// missing.
func DecodeTime(init, moof []byte) (track uint32, tfdt uint64, scale uint32) {
	tracks, _, err := fmp4.NewReader(bytes.NewReader(init)).ReadInit()
	if err != nil {
		return 0, 0, 0
	}
	traf, ok := childBox(moof, "traf")
	if !ok {
		return 0, 0, 0
	}
	tfhd, ok := childBox(traf, "tfhd")
	if !ok || len(tfhd) < 8 {
		return 0, 0, 0
	}
	track = binary.BigEndian.Uint32(tfhd[4:8])
	dt, ok := childBox(traf, "tfdt")
	switch {
	case !ok || len(dt) < 8:
		return 0, 0, 0
	case dt[0] == 1 && len(dt) >= 12:
		tfdt = binary.BigEndian.Uint64(dt[4:12])
	case dt[0] == 0:
		tfdt = uint64(binary.BigEndian.Uint32(dt[4:8]))
	default:
		return 0, 0, 0
	}
	for _, t := range tracks {
		if t.ID == track {
			return track, tfdt, t.TimeScale
		}
	}
	return 0, 0, 0
}

// childBox returns the body of the first box of typ among the boxes in b
// (32-bit sizes only, as moof children are).
func childBox(b []byte, typ string) ([]byte, bool) {
	for len(b) >= 8 {
		n := binary.BigEndian.Uint32(b[:4])
		if n < 8 || uint64(n) > uint64(len(b)) {
			return nil, false
		}
		if string(b[4:8]) == typ {
			return b[8:n], true
		}
		b = b[n:]
	}
	return nil, false
}

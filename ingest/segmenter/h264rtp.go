package segmenter

import (
	"encoding/binary"
	"errors"
)

// h264Depacketizer turns RFC 6184 payloads (single NAL unit, STAP-A,
// FU-A; packetization modes 0 and 1) into NAL units.
//
// It replaces pion/rtp's codecs.H264Packet, which rebuilt each payload as
// an Annex-B stream with start codes that the recorder then had to split
// again, allocating on every packet. Like h265Depacketizer, it copies
// fragmentation units as they arrive, as the RTSP server reuses its read
// buffer.
type h264Depacketizer struct{ depacketizer }

// depacketizer is the state both codecs' depacketizers keep.
type depacketizer struct {
	fu  fuAssembler
	out [][]byte // unmarshal's result, reused
}

func (d *depacketizer) reset() { d.fu.reset() }

// aggregate takes the NAL units of an aggregation packet (H.264 STAP-A,
// H.265 AP) after its header: each with a 16-bit size of at least minLen.
func (d *depacketizer) aggregate(b []byte, minLen int, errBad error) error {
	d.fu.reset()
	for len(b) > 0 {
		if len(b) < 2 {
			return errBad
		}
		n := int(binary.BigEndian.Uint16(b))
		if n < minLen || n > len(b)-2 {
			return errBad
		}
		d.out = append(d.out, b[2:2+n])
		b = b[2+n:]
	}
	return nil
}

var (
	errH264Short = errors.New("H.264 RTP payload too short")
	errH264STAP  = errors.New("H.264 STAP-A with a bad NAL unit size")
	errH264Type  = errors.New("H.264 RTP payload of an unsupported type (STAP-B, MTAP, FU-B or 0)")
)

// H.264 RTP payload types (RFC 6184 section 5.4).
const (
	h264TypeSTAPA = 24
	h264TypeFUA   = 28
)

// unmarshal returns the complete NAL units in payload. They may alias
// payload or the depacketizer's buffer: valid until the next call.
func (d *h264Depacketizer) unmarshal(p []byte) ([][]byte, error) {
	d.out = d.out[:0]
	if len(p) == 0 {
		return nil, errH264Short
	}
	switch typ := p[0] & 0x1f; {
	case typ > 0 && typ < h264TypeSTAPA: // a single NAL unit
		d.fu.reset()
		d.out = append(d.out, p)
	case typ == h264TypeSTAPA:
		if err := d.aggregate(p[1:], 1, errH264STAP); err != nil {
			return nil, err
		}
	case typ == h264TypeFUA:
		if len(p) < 3 {
			return nil, errH264Short
		}
		fuh := p[1]
		// The NAL header: F and NRI from the FU indicator, the type from
		// the FU header.
		nalu, err := d.fu.add(fuh&0x80 != 0, fuh&0x40 != 0, [2]byte{p[0]&0xe0 | fuh&0x1f}, 1, p[2:])
		if err != nil {
			return nil, err
		}
		if nalu != nil {
			d.out = append(d.out, nalu)
		}
	default:
		return nil, errH264Type
	}
	return d.out, nil
}

// fuAssembler reassembles a NAL unit from fragmentation units (H.264 FU-A,
// H.265 FU), copying each fragment as it arrives.
type fuAssembler struct {
	buf []byte // the NAL unit being reassembled
	in  bool
}

var (
	errFUStart = errors.New("fragmentation unit without its start")
	errFUBoth  = errors.New("fragmentation unit with both start and end set")
)

func (a *fuAssembler) reset() { a.buf, a.in = a.buf[:0], false }

// add takes one fragment: hdr[:hdrLen] is the NAL unit header (used when
// start is set), data the fragment's bytes. It returns the NAL unit, valid
// until the next call, when end completes it; nil otherwise, also for the
// tail of a unit whose start was lost.
func (a *fuAssembler) add(start, end bool, hdr [2]byte, hdrLen int, data []byte) ([]byte, error) {
	switch {
	case start && end:
		return nil, errFUBoth
	case start:
		a.buf = append(a.buf[:0], hdr[:hdrLen]...)
		a.in = true
	case !a.in && end:
		return nil, nil // nothing to keep
	case !a.in:
		return nil, errFUStart
	}
	a.buf = append(a.buf, data...)
	if end {
		a.in = false
		return a.buf, nil
	}
	return nil, nil
}

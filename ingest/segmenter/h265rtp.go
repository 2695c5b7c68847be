package segmenter

import (
	"errors"
)

// h265Depacketizer turns RFC 7798 payloads (without DONL: the recorder
// refuses sprop-max-don-diff > 0) into NAL units.
//
// It replaces pion/rtp's codecs.H265Depacketizer (v1.10.6), which keeps
// each fragmentation unit as a slice of the caller's payload until the last
// fragment arrives. The RTSP server reuses one read buffer for every packet,
// so each picture larger than one packet (nearly all of them, from ffmpeg)
// was reassembled from bytes already overwritten by later packets: ffprobe
// still accepted the segments, but decoding reported "PPS id out of range"
// and other slice header garbage. Here fragments are copied as they arrive.
type h265Depacketizer struct{ depacketizer }

var (
	errH265Short   = errors.New("H.265 RTP payload too short")
	errH265AP      = errors.New("H.265 aggregation packet with a bad NAL unit size")
	errH265FUStart = errFUStart
	errH265FUBoth  = errFUBoth
)

// H.265 RTP payload types (RFC 7798 section 4.4).
const (
	h265TypeAP   = 48
	h265TypeFU   = 49
	h265TypePACI = 50
)

// unmarshal returns the complete NAL units in payload. They may alias
// payload or the depacketizer's buffer: valid until the next call.
func (d *h265Depacketizer) unmarshal(payload []byte) ([][]byte, error) {
	d.out = d.out[:0]
	if err := d.payload(payload, 0); err != nil {
		return nil, err
	}
	return d.out, nil
}

func (d *h265Depacketizer) payload(p []byte, depth int) error {
	if len(p) < 3 {
		return errH265Short
	}
	switch typ := (p[0] >> 1) & 0x3f; {
	case typ < h265TypeAP: // a single NAL unit
		d.fu.reset()
		d.out = append(d.out, p)
	case typ == h265TypeAP:
		return d.aggregate(p[2:], 2, errH265AP)
	case typ == h265TypeFU:
		fuh := p[2]
		// The NAL header: F, layer and TID from the payload header, the
		// type from the FU header.
		nalu, err := d.fu.add(fuh&0x80 != 0, fuh&0x40 != 0, [2]byte{p[0]&0x81 | (fuh&0x3f)<<1, p[1]}, 2, p[3:])
		if err != nil {
			return err
		}
		if nalu != nil {
			d.out = append(d.out, nalu)
		}
	case typ == h265TypePACI && depth == 0:
		// PayloadHdr, then A, cType, PHSsize, F0-2, Y; then PHES and the
		// payload, whose header is PayloadHdr with F = A and type = cType.
		if len(p) < 4 {
			return errH265Short
		}
		phs := int(p[2]&1)<<4 | int(p[3]>>4) // PHSsize
		rest := p[4:]
		if len(rest) < phs {
			return errH265Short
		}
		inner := make([]byte, 0, 2+len(rest)-phs)
		inner = append(inner, p[2]&0xfe|p[0]&0x01, p[1])
		inner = append(inner, rest[phs:]...)
		return d.payload(inner, depth+1)
	default: // unspecified types (51-63), or PACI in PACI: not video data
	}
	return nil
}

package picsize

import (
	"encoding/binary"

	"github.com/vigilcloud/vigil/media/avc"
	"github.com/vigilcloud/vigil/media/fmp4"
	"github.com/vigilcloud/vigil/media/hevc"
	"github.com/vigilcloud/vigil/media/mpegts"
)

const tsPacket = mpegts.PacketSize

// MPEG-TS stream types (ISO/IEC 13818-1 Table 2-34).
const (
	streamH264 = 0x1b
	streamH265 = 0x24
)

// tsScan finds the SPS of the first video PES, packet by packet. It is not
// a demuxer, and its limits are deliberate: PAT and PMT sections must fit
// in the packet that starts them; only the first program of the PAT and
// the first H.264/H.265 stream of its PMT count; video packets before the
// PMT, and every PES after the first, are ignored; only the first
// maxPESHead bytes of that PES are searched. Anything else leaves the size
// unknown.
type tsScan struct {
	pmtPID, videoPID int // -1 until known (0 is the PAT's PID)
	codec            fmp4.Codec
	inPES            bool
	pes              []byte // elementary stream bytes of the first PES so far
	size             Size
}

func newTSScan() *tsScan { return &tsScan{pmtPID: -1, videoPID: -1} }

// packet scans one 188-byte packet and reports whether the scan is over.
func (s *tsScan) packet(p []byte) (done bool) {
	pk, err := mpegts.ParsePacket(p)
	if err != nil {
		return true
	}
	if pk.Payload == nil {
		return false
	}
	switch {
	case pk.PID == 0 && pk.Start && s.pmtPID < 0:
		s.pat(pk.Payload)
	case pk.PID == s.pmtPID && pk.Start && s.videoPID < 0:
		s.pmt(pk.Payload)
	case pk.PID == s.videoPID && s.videoPID >= 0:
		return s.video(pk.Payload, pk.Start)
	}
	return false
}

// section returns the PSI section of table tableID that starts in payload
// (after its pointer field), without its CRC, or nil.
func section(payload []byte, tableID byte) []byte {
	b, err := mpegts.Section(payload, tableID)
	if err != nil {
		return nil
	}
	return b
}

func (s *tsScan) pat(payload []byte) {
	progs := section(payload, 0x00)
	for ; len(progs) >= 4; progs = progs[4:] {
		if binary.BigEndian.Uint16(progs) != 0 { // 0 is the network PID
			s.pmtPID = int(binary.BigEndian.Uint16(progs[2:]) & 0x1fff)
			return
		}
	}
}

func (s *tsScan) pmt(payload []byte) {
	b := section(payload, 0x02)
	if len(b) < 4 {
		return
	}
	info := int(binary.BigEndian.Uint16(b[2:]) & 0x0fff)
	if 4+info > len(b) {
		return
	}
	for es := b[4+info:]; len(es) >= 5; {
		typ, pid := es[0], int(binary.BigEndian.Uint16(es[1:])&0x1fff)
		n := int(binary.BigEndian.Uint16(es[3:]) & 0x0fff)
		switch typ {
		case streamH264:
			s.videoPID, s.codec = pid, fmp4.H264
			return
		case streamH265:
			s.videoPID, s.codec = pid, fmp4.H265
			return
		}
		if 5+n > len(es) {
			return
		}
		es = es[5+n:]
	}
}

// video collects the first PES of the video stream and looks for its SPS.
func (s *tsScan) video(payload []byte, pusi bool) (done bool) {
	if pusi {
		if s.inPES {
			return s.findSPS(true) // the first PES ended
		}
		// PES header: start code, stream id, length, then (video streams)
		// flags and the header data length.
		if len(payload) < 9 || payload[0] != 0 || payload[1] != 0 || payload[2] != 1 {
			return true
		}
		start := 9 + int(payload[8])
		if start > len(payload) {
			return true
		}
		s.inPES = true
		payload = payload[start:]
	}
	if !s.inPES {
		return false // a PES that began before the PMT
	}
	payload = payload[:min(len(payload), maxPESHead-len(s.pes))]
	s.pes = append(s.pes, payload...)
	return s.findSPS(len(s.pes) >= maxPESHead)
}

// findSPS parses the first SPS NAL unit of the PES bytes so far; the last
// NAL unit may be cut off unless final. It reports whether the scan is over.
func (s *tsScan) findSPS(final bool) bool {
	nalus := avc.SplitAnnexB(s.pes)
	for i, n := range nalus {
		if i == len(nalus)-1 && !final {
			break
		}
		isSPS := s.codec == fmp4.H264 && avc.NALType(n) == avc.NALSPS ||
			s.codec == fmp4.H265 && hevc.NALType(n) == hevc.NALSPS
		if isSPS {
			s.size = fromSPS(s.codec, n)
			return true
		}
	}
	return final
}

// Package avc holds the H.264 (ISO/IEC 14496-10) pieces vigil needs: SPS
// parsing for the picture size, NAL unit types, keyframe detection, the
// AVCC (4-byte length-prefixed) framing used in MP4 and the avcC record.
package avc

import (
	"errors"
	"fmt"

	"github.com/vigilcloud/vigil/media/internal/nalu"
)

// NAL unit types (Table 7-1).
const (
	NALNonIDR = 1
	NALIDR    = 5
	NALSEI    = 6
	NALSPS    = 7
	NALPPS    = 8
	NALAUD    = 9
)

// ErrMalformed is wrapped by every parse error of this package.
var ErrMalformed = errors.New("avc: malformed")

// NALType returns the nal_unit_type of nalu (0 when empty).
func NALType(nalu []byte) uint8 {
	if len(nalu) == 0 {
		return 0
	}
	return nalu[0] & 0x1f
}

// IsKeyframe reports whether the access unit holds an IDR slice.
func IsKeyframe(nalus [][]byte) bool {
	for _, n := range nalus {
		if NALType(n) == NALIDR {
			return true
		}
	}
	return false
}

// AVCC joins NAL units, each prefixed by its 4-byte big-endian length.
func AVCC(nalus [][]byte) []byte { return nalu.JoinLengthPrefixed(nalus) }

// SplitAVCC splits 4-byte length-prefixed NAL units; the results alias b.
func SplitAVCC(b []byte) ([][]byte, error) {
	out, err := nalu.SplitLengthPrefixed(b)
	if err != nil {
		return nil, fmt.Errorf("avc: %w: %w", ErrMalformed, err)
	}
	return out, nil
}

// DecoderConfigurationRecord builds the avcC body (ISO/IEC 14496-15
// 5.3.3.1) for one SPS and one PPS, with 4-byte NAL lengths.
func DecoderConfigurationRecord(sps, pps []byte) ([]byte, error) {
	s, err := ParseSPS(sps)
	if err != nil {
		return nil, err
	}
	if len(pps) == 0 || len(pps) > 0xffff || len(sps) > 0xffff {
		return nil, fmt.Errorf("avc: %w: parameter set sizes sps %d pps %d", ErrMalformed, len(sps), len(pps))
	}
	b := []byte{1, sps[1], sps[2], sps[3], 0xff, 0xe1, byte(len(sps) >> 8), byte(len(sps))}
	b = append(b, sps...)
	b = append(b, 1, byte(len(pps)>>8), byte(len(pps)))
	b = append(b, pps...)
	if hasChromaInfo(s.ProfileIDC) {
		b = append(b, 0xfc|byte(s.ChromaFormatIDC), 0xf8|byte(s.BitDepthLumaMinus8), 0xf8|byte(s.BitDepthChromaMinus8), 0)
	}
	return b, nil
}

// SplitAnnexB returns the NAL units of an Annex B byte stream (what ffmpeg
// writes with -f h264 or -f hevc), start codes and trailing zeros removed.
func SplitAnnexB(b []byte) [][]byte { return nalu.SplitAnnexB(b) }

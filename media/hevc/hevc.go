// Package hevc holds the H.265 (ITU-T H.265) pieces vigil needs: SPS
// parsing for the picture size, NAL unit types, IRAP keyframe detection,
// the 4-byte length-prefixed framing used in MP4 and the hvcC record.
package hevc

import (
	"errors"
	"fmt"

	"github.com/vigilcloud/vigil/media/internal/nalu"
)

// NAL unit types (Table 7-1).
const (
	NALBLAWLP    = 16 // first IRAP type
	NALIDRWRADL  = 19
	NALIDRNLP    = 20
	NALCRA       = 21
	NALVPS       = 32
	NALSPS       = 33
	NALPPS       = 34
	NALAUD       = 35
	NALPrefixSEI = 39
	NALAP        = 48 // RTP aggregation packet (RFC 7798)
	NALFU        = 49 // RTP fragmentation unit (RFC 7798)
)

// ErrMalformed is wrapped by every parse error of this package.
var ErrMalformed = errors.New("hevc: malformed")

// NALType returns the nal_unit_type of nalu (0 when shorter than a header).
func NALType(nalu []byte) uint8 {
	if len(nalu) < 2 {
		return 0
	}
	return (nalu[0] >> 1) & 0x3f
}

// IsKeyframe reports whether the access unit holds an IRAP picture (types 16..23).
func IsKeyframe(nalus [][]byte) bool {
	for _, n := range nalus {
		if t := NALType(n); t >= 16 && t <= 23 {
			return true
		}
	}
	return false
}

// AVCC joins NAL units, each prefixed by its 4-byte big-endian length (the
// same framing hvcC streams use).
func AVCC(nalus [][]byte) []byte { return nalu.JoinLengthPrefixed(nalus) }

// SplitAVCC splits 4-byte length-prefixed NAL units; the results alias b.
func SplitAVCC(b []byte) ([][]byte, error) {
	out, err := nalu.SplitLengthPrefixed(b)
	if err != nil {
		return nil, fmt.Errorf("hevc: %w: %w", ErrMalformed, err)
	}
	return out, nil
}

// DecoderConfigurationRecord builds the hvcC body (ISO/IEC 14496-15
// 8.3.3.1) for one VPS, SPS and PPS, with 4-byte NAL lengths.
func DecoderConfigurationRecord(vps, sps, pps []byte) ([]byte, error) {
	s, err := ParseSPS(sps)
	if err != nil {
		return nil, err
	}
	for _, p := range [][]byte{vps, sps, pps} {
		if len(p) < 2 || len(p) > 0xffff {
			return nil, fmt.Errorf("hevc: %w: parameter set of %d bytes", ErrMalformed, len(p))
		}
	}
	b := make([]byte, 0, 23+3*5+len(vps)+len(sps)+len(pps))
	b = append(b, 1, s.ProfileSpace<<6|s.TierFlag<<5|s.ProfileIDC,
		byte(s.ProfileCompatibility>>24), byte(s.ProfileCompatibility>>16), byte(s.ProfileCompatibility>>8), byte(s.ProfileCompatibility))
	for i := 5; i >= 0; i-- {
		b = append(b, byte(s.ConstraintFlags>>(8*uint(i))))
	}
	nesting := byte(0)
	if s.TemporalIDNesting {
		nesting = 1
	}
	b = append(b, s.LevelIDC,
		0xf0, 0x00, // min_spatial_segmentation_idc 0
		0xfc, // parallelismType 0 (unknown)
		0xfc|byte(s.ChromaFormatIDC),
		0xf8|byte(s.BitDepthLumaMinus8),
		0xf8|byte(s.BitDepthChromaMinus8),
		0, 0, // avgFrameRate unknown
		(s.MaxSubLayersMinus1+1)<<3|nesting<<2|3, // constantFrameRate 0, lengthSizeMinusOne 3
		3)
	for _, a := range []struct {
		typ byte
		p   []byte
	}{{NALVPS, vps}, {NALSPS, sps}, {NALPPS, pps}} {
		b = append(b, 0x80|a.typ, 0, 1, byte(len(a.p)>>8), byte(len(a.p)))
		b = append(b, a.p...)
	}
	return b, nil
}

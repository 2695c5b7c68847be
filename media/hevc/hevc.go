// Package hevc holds the H.265 (ITU-T H.265) pieces vigil needs: SPS
// parsing for the picture size, NAL unit types, IRAP keyframe detection,
// the 4-byte length-prefixed framing used in MP4 and the hvcC record.
package hevc

import "errors"

// SPS holds the fields of a sequence parameter set vigil uses.
type SPS struct {
	Width, Height int // display size, conformance window applied
	ProfileIDC    uint8
	LevelIDC      uint8
}

var errNotImplemented = errors.New("hevc: not implemented")

// ParseSPS parses an SPS NAL unit (with its 2-byte header, without start code).
func ParseSPS(nalu []byte) (SPS, error) { return SPS{}, errNotImplemented }

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

// AVCC joins NAL units, each prefixed by its 4-byte big-endian length.
func AVCC(nalus [][]byte) []byte { return nil }

// SplitAVCC splits 4-byte length-prefixed NAL units.
func SplitAVCC(b []byte) ([][]byte, error) { return nil, errNotImplemented }

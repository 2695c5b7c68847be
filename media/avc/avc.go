// Package avc holds the H.264 (ISO/IEC 14496-10) pieces vigil needs: SPS
// parsing for the picture size, NAL unit types, keyframe detection and the
// AVCC (4-byte length-prefixed) framing used in MP4.
package avc

import (
	"errors"
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

// SPS holds the fields of a sequence parameter set vigil uses.
type SPS struct {
	Width, Height int // display size, cropping applied
	ProfileIDC    uint8
	LevelIDC      uint8
}

var errNotImplemented = errors.New("avc: not implemented")

// ParseSPS parses an SPS NAL unit (with its header, without start code).
func ParseSPS(nalu []byte) (SPS, error) { return SPS{}, errNotImplemented }

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
func AVCC(nalus [][]byte) []byte { return nil }

// SplitAVCC splits 4-byte length-prefixed NAL units.
func SplitAVCC(b []byte) ([][]byte, error) { return nil, errNotImplemented }

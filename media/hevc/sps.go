package hevc

import (
	"fmt"

	"github.com/vigilcloud/vigil/media/internal/bitio"
)

// SPS holds the fields of a sequence parameter set (7.3.2.2) vigil uses:
// the display size, the general profile_tier_level (for hvcC) and what a
// POC reader needs.
type SPS struct {
	Width, Height int // display size, conformance window applied
	ProfileIDC    uint8
	LevelIDC      uint8

	ProfileSpace         uint8
	TierFlag             uint8
	ProfileCompatibility uint32
	ConstraintFlags      uint64 // the 48 general constraint indicator bits
	MaxSubLayersMinus1   uint8
	TemporalIDNesting    bool

	ID                          uint32
	ChromaFormatIDC             uint32
	SeparateColourPlane         bool
	BitDepthLumaMinus8          uint32
	BitDepthChromaMinus8        uint32
	Log2MaxPicOrderCntLsbMinus4 uint32
	MaxNumReorderPics           uint32 // of the highest sub-layer
}

const maxDim = 16384

// ParseSPS parses an SPS NAL unit (with its 2-byte header, without start
// code, emulation prevention bytes still in).
func ParseSPS(nalu []byte) (SPS, error) {
	var s SPS
	if len(nalu) < 3 {
		return s, fmt.Errorf("hevc: %w: SPS of %d bytes", ErrMalformed, len(nalu))
	}
	if NALType(nalu) != NALSPS {
		return s, fmt.Errorf("hevc: %w: NAL type %d is not an SPS", ErrMalformed, NALType(nalu))
	}
	r := bitio.NewReader(bitio.Unescape(nalu[2:]))
	r.Skip(4) // sps_video_parameter_set_id
	s.MaxSubLayersMinus1 = uint8(r.U(3))
	s.TemporalIDNesting = r.Flag()
	if s.MaxSubLayersMinus1 > 6 {
		return s, fmt.Errorf("hevc: %w: sps_max_sub_layers_minus1 %d", ErrMalformed, s.MaxSubLayersMinus1)
	}
	// profile_tier_level(1, sps_max_sub_layers_minus1), 7.3.3.
	s.ProfileSpace = uint8(r.U(2))
	s.TierFlag = uint8(r.U(1))
	s.ProfileIDC = uint8(r.U(5))
	s.ProfileCompatibility = r.U(32)
	s.ConstraintFlags = uint64(r.U(16))<<32 | uint64(r.U(32))
	s.LevelIDC = uint8(r.U(8))
	n := int(s.MaxSubLayersMinus1)
	var profilePresent, levelPresent [8]bool
	for i := 0; i < n; i++ {
		profilePresent[i] = r.Flag()
		levelPresent[i] = r.Flag()
	}
	if n > 0 {
		r.Skip(2 * (8 - n)) // reserved_zero_2bits
	}
	for i := 0; i < n; i++ {
		if profilePresent[i] {
			r.Skip(88)
		}
		if levelPresent[i] {
			r.Skip(8)
		}
	}
	s.ID = r.UE()
	s.ChromaFormatIDC = r.UE()
	if s.ChromaFormatIDC == 3 {
		s.SeparateColourPlane = r.Flag()
	}
	w, h := uint64(r.UE()), uint64(r.UE())
	var winL, winR, winT, winB uint64
	if r.Flag() {
		winL, winR, winT, winB = uint64(r.UE()), uint64(r.UE()), uint64(r.UE()), uint64(r.UE())
	}
	s.BitDepthLumaMinus8 = r.UE()
	s.BitDepthChromaMinus8 = r.UE()
	s.Log2MaxPicOrderCntLsbMinus4 = r.UE()
	first := n
	if r.Flag() { // sps_sub_layer_ordering_info_present_flag
		first = 0
	}
	for i := first; i <= n; i++ {
		r.UE() // sps_max_dec_pic_buffering_minus1
		s.MaxNumReorderPics = r.UE()
		r.UE() // sps_max_latency_increase_plus1
	}
	if err := r.Err(); err != nil {
		return s, fmt.Errorf("hevc: %w: SPS: %w", ErrMalformed, err)
	}
	if s.ChromaFormatIDC > 3 || s.BitDepthLumaMinus8 > 8 || s.BitDepthChromaMinus8 > 8 || s.Log2MaxPicOrderCntLsbMinus4 > 12 {
		return s, fmt.Errorf("hevc: %w: SPS field out of range", ErrMalformed)
	}
	// Table 6-1: the window is in chroma sample units.
	subW, subH := uint64(1), uint64(1)
	if !s.SeparateColourPlane {
		if s.ChromaFormatIDC == 1 || s.ChromaFormatIDC == 2 {
			subW = 2
		}
		if s.ChromaFormatIDC == 1 {
			subH = 2
		}
	}
	cw, ch := subW*(winL+winR), subH*(winT+winB)
	if w == 0 || h == 0 || w > maxDim || h > maxDim || cw >= w || ch >= h {
		return s, fmt.Errorf("hevc: %w: picture %dx%d with conformance window %d,%d", ErrMalformed, w, h, cw, ch)
	}
	s.Width, s.Height = int(w-cw), int(h-ch)
	return s, nil
}

package avc

import (
	"fmt"

	"github.com/vigilcloud/vigil/media/internal/bitio"
)

// SPS holds the fields of a sequence parameter set (7.3.2.1.1) vigil uses:
// the display size and what a slice-header/POC reader needs.
type SPS struct {
	Width, Height int // display size, cropping applied
	ProfileIDC    uint8
	LevelIDC      uint8
	ID            uint32

	ChromaFormatIDC      uint32
	BitDepthLumaMinus8   uint32
	BitDepthChromaMinus8 uint32
	SeparateColourPlane  bool

	Log2MaxFrameNumMinus4       uint32
	PicOrderCntType             uint32
	Log2MaxPicOrderCntLsbMinus4 uint32
	DeltaPicOrderAlwaysZero     bool
	FrameMBSOnly                bool
	MaxNumRefFrames             uint32
	VUIPresent                  bool
}

// maxDim bounds width and height: level 6.2 allows 8192x4320, and anything
// far beyond is a corrupt SPS.
const maxDim = 16384

func hasChromaInfo(profile uint8) bool {
	switch profile {
	case 100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135:
		return true
	}
	return false
}

// ParseSPS parses an SPS NAL unit (with its header, without start code,
// emulation prevention bytes still in).
func ParseSPS(nalu []byte) (SPS, error) {
	var s SPS
	if len(nalu) < 4 {
		return s, fmt.Errorf("avc: %w: SPS of %d bytes", ErrMalformed, len(nalu))
	}
	if NALType(nalu) != NALSPS {
		return s, fmt.Errorf("avc: %w: NAL type %d is not an SPS", ErrMalformed, NALType(nalu))
	}
	r := bitio.NewReader(bitio.Unescape(nalu[1:]))
	s.ProfileIDC = uint8(r.U(8))
	r.Skip(8) // constraint_set flags
	s.LevelIDC = uint8(r.U(8))
	s.ID = r.UE()
	s.ChromaFormatIDC = 1
	if hasChromaInfo(s.ProfileIDC) {
		s.ChromaFormatIDC = r.UE()
		if s.ChromaFormatIDC == 3 {
			s.SeparateColourPlane = r.Flag()
		}
		s.BitDepthLumaMinus8 = r.UE()
		s.BitDepthChromaMinus8 = r.UE()
		r.Skip(1) // qpprime_y_zero_transform_bypass_flag
		if r.Flag() {
			lists := 8
			if s.ChromaFormatIDC == 3 {
				lists = 12
			}
			for i := 0; i < lists; i++ {
				if r.Flag() {
					size := 16
					if i >= 6 {
						size = 64
					}
					skipScalingList(r, size)
				}
			}
		}
	}
	s.Log2MaxFrameNumMinus4 = r.UE()
	s.PicOrderCntType = r.UE()
	switch s.PicOrderCntType {
	case 0:
		s.Log2MaxPicOrderCntLsbMinus4 = r.UE()
	case 1:
		s.DeltaPicOrderAlwaysZero = r.Flag()
		r.SE() // offset_for_non_ref_pic
		r.SE() // offset_for_top_to_bottom_field
		n := r.UE()
		if n > 255 {
			return s, fmt.Errorf("avc: %w: num_ref_frames_in_pic_order_cnt_cycle %d", ErrMalformed, n)
		}
		for i := uint32(0); i < n; i++ {
			r.SE()
		}
	case 2:
	default:
		return s, fmt.Errorf("avc: %w: pic_order_cnt_type %d", ErrMalformed, s.PicOrderCntType)
	}
	s.MaxNumRefFrames = r.UE()
	r.Skip(1) // gaps_in_frame_num_value_allowed_flag
	widthMBs := uint64(r.UE()) + 1
	heightMapUnits := uint64(r.UE()) + 1
	s.FrameMBSOnly = r.Flag()
	if !s.FrameMBSOnly {
		r.Skip(1) // mb_adaptive_frame_field_flag
	}
	r.Skip(1) // direct_8x8_inference_flag
	var cropL, cropR, cropT, cropB uint64
	if r.Flag() {
		cropL, cropR, cropT, cropB = uint64(r.UE()), uint64(r.UE()), uint64(r.UE()), uint64(r.UE())
	}
	s.VUIPresent = r.Flag()
	if err := r.Err(); err != nil {
		return s, fmt.Errorf("avc: %w: SPS: %w", ErrMalformed, err)
	}
	if s.ChromaFormatIDC > 3 || s.BitDepthLumaMinus8 > 6 || s.BitDepthChromaMinus8 > 6 || s.Log2MaxFrameNumMinus4 > 12 || s.Log2MaxPicOrderCntLsbMinus4 > 12 {
		return s, fmt.Errorf("avc: %w: SPS field out of range", ErrMalformed)
	}
	frameMul := uint64(2)
	if s.FrameMBSOnly {
		frameMul = 1
	}
	// Table 6-1 and equations 7-19..7-22.
	cropX, cropY := uint64(1), frameMul
	if !s.SeparateColourPlane && s.ChromaFormatIDC != 0 {
		subW, subH := uint64(1), uint64(1)
		if s.ChromaFormatIDC == 1 || s.ChromaFormatIDC == 2 {
			subW = 2
		}
		if s.ChromaFormatIDC == 1 {
			subH = 2
		}
		cropX, cropY = subW, subH*frameMul
	}
	w := widthMBs * 16
	h := frameMul * heightMapUnits * 16
	cw, ch := cropX*(cropL+cropR), cropY*(cropT+cropB)
	if w > maxDim || h > maxDim || cw >= w || ch >= h {
		return s, fmt.Errorf("avc: %w: picture %dx%d with cropping %d,%d", ErrMalformed, w, h, cw, ch)
	}
	s.Width, s.Height = int(w-cw), int(h-ch)
	return s, nil
}

// skipScalingList reads past a scaling_list() (7.3.2.1.1.1).
func skipScalingList(r *bitio.Reader, size int) {
	last, next := int32(8), int32(8)
	for j := 0; j < size && r.Err() == nil; j++ {
		if next != 0 {
			next = (last + r.SE() + 256) % 256
		}
		if next != 0 {
			last = next
		}
	}
}

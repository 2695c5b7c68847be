// Package fmp4 writes and reads fragmented MP4 (ISO-BMFF, ISO/IEC 14496-12)
// as vigil stores it: an init section (ftyp + moov with mvex) followed by
// fragments (moof + mdat), with H.264, H.265, AAC and Opus tracks.
//
// The writer emits default-base-is-moof fragments with version 1 tfdt and
// trun boxes (per-sample duration, size, flags and signed composition
// offsets). The Reader is streaming: it reads box by box, caps every box it
// buffers, and returns errors wrapping ErrMalformed for bad input.
package fmp4

import "errors"

// Codec names a track's codec.
type Codec string

// Codecs the writer and reader support.
const (
	H264 Codec = "h264"
	H265 Codec = "h265"
	AAC  Codec = "aac"
	Opus Codec = "opus"
)

// Track describes one track of an init section.
type Track struct {
	ID            uint32 // 1-based
	Codec         Codec
	TimeScale     uint32 // 90000 for video; the sample rate for audio
	Width, Height int    // video: display size (from the SPS)
	VPS, SPS, PPS []byte // video parameter sets, NAL units without start code (VPS: H.265 only)
	SampleRate    int    // audio
	Channels      int    // audio
	AACConfig     []byte // AAC AudioSpecificConfig
}

// Sample is one access unit / audio frame.
type Sample struct {
	Duration  uint32 // in the track's timescale
	PTSOffset int32  // composition offset: pts - dts (trun version 1, may be negative)
	Keyframe  bool   // sync sample (IDR / IRAP); audio samples are always sync
	Data      []byte // video: NAL units each prefixed by a 4-byte big-endian length (AVCC/HVCC); audio: one raw frame
}

// TrackFragment is one track's run of samples in a fragment.
type TrackFragment struct {
	TrackID        uint32
	BaseDecodeTime uint64 // tfdt, in the track's timescale
	Samples        []Sample
}

// Fragment is one moof + mdat.
type Fragment struct {
	SequenceNumber uint32
	Tracks         []TrackFragment
}

// InitOptions tunes WriteInit.
type InitOptions struct {
	DurationMS int64 // when > 0 written to mvhd/tkhd/mdhd and mvex/mehd (clips know their length)
	// Durations, when set, gives each track's exact length in its own
	// timescale (a clip's samples summed): mdhd carries it as is, and
	// mvhd/mehd/tkhd use the first track's timescale as the movie's, so
	// that track's length is exact there too (others round up). It
	// overrides DurationMS.
	Durations map[uint32]uint64
}

// ErrMalformed is wrapped by every error the Reader returns for bad input.
var ErrMalformed = errors.New("fmp4: malformed")

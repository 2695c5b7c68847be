package fmp4

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/bits"

	"github.com/vigilcloud/vigil/media/aac"
	"github.com/vigilcloud/vigil/media/avc"
	"github.com/vigilcloud/vigil/media/hevc"
)

// movieTimeScale is the mvhd timescale: milliseconds, so InitOptions.DurationMS
// goes in as is.
const movieTimeScale = 1000

// Sample flags (ISO/IEC 14496-12 8.8.3.1): a sync sample depends on no
// other; any other sample depends on others and is not a sync sample.
const (
	flagsSync    = 0x02000000
	flagsNonSync = 0x01010000
)

// trun flags.
const (
	trunDataOffset = 0x000001
	trunFirstFlags = 0x000004
	trunDuration   = 0x000100
	trunSize       = 0x000200
	trunFlags      = 0x000400
	trunCTO        = 0x000800
)

// tfhd flags.
const (
	tfhdBaseDataOffset    = 0x000001
	tfhdSampleDescription = 0x000002
	tfhdDefaultDuration   = 0x000008
	tfhdDefaultSize       = 0x000010
	tfhdDefaultFlags      = 0x000020
	tfhdDurationIsEmpty   = 0x010000
	tfhdDefaultBaseIsMoof = 0x020000
)

// WriteInit writes ftyp + moov (with mvex/trex) for tracks: avc1+avcC,
// hvc1+hvcC, mp4a+esds, Opus+dOps. It returns the number of bytes written.
func WriteInit(w io.Writer, tracks []Track, opts InitOptions) (int64, error) {
	if len(tracks) == 0 {
		return 0, fmt.Errorf("fmp4: write init: no tracks")
	}
	if opts.DurationMS < 0 {
		return 0, fmt.Errorf("fmp4: write init: negative duration %d", opts.DurationMS)
	}
	var b builder
	ftyp := b.start("ftyp")
	b.str("iso5")
	b.u32(512)
	b.str("iso5iso6mp41")
	b.end(ftyp)

	moov := b.start("moov")
	mts, dur := uint32(movieTimeScale), uint64(opts.DurationMS)
	var trackDur map[uint32]uint64 // in the track's timescale
	if opts.Durations != nil {
		mts, dur, trackDur = tracks[0].TimeScale, 0, opts.Durations
		if mts == 0 {
			return 0, fmt.Errorf("fmp4: write init: zero timescale")
		}
		for _, t := range tracks {
			dur = max(dur, toScale(opts.Durations[t.ID], t.TimeScale, mts))
		}
	}
	long := dur > math.MaxUint32
	var maxID uint32
	for _, t := range tracks {
		maxID = max(maxID, t.ID)
	}
	mvhd := b.fullStart("mvhd", version(long), 0)
	b.times(long)
	b.u32(mts)
	b.dur(long, dur)
	b.u32(0x00010000) // rate 1.0
	b.u16(0x0100)     // volume 1.0
	b.zeros(10)
	b.matrix()
	b.zeros(24)
	b.u32(maxID + 1)
	b.end(mvhd)

	seen := map[uint32]bool{}
	for i, t := range tracks {
		if t.ID == 0 || seen[t.ID] {
			return 0, fmt.Errorf("fmp4: write init: track %d: bad or duplicate id %d", i, t.ID)
		}
		seen[t.ID] = true
		td, md := dur, dur*uint64(t.TimeScale)/uint64(mts)
		if trackDur != nil {
			md = trackDur[t.ID]
			td = toScale(md, t.TimeScale, mts)
		}
		if err := b.trak(t, td, md); err != nil {
			return 0, fmt.Errorf("fmp4: write init: track %d: %w", t.ID, err)
		}
	}

	mvex := b.start("mvex")
	if dur > 0 {
		mehd := b.fullStart("mehd", version(long), 0)
		b.dur(long, dur)
		b.end(mehd)
	}
	for _, t := range tracks {
		trex := b.fullStart("trex", 0, 0)
		b.u32(t.ID)
		b.u32(1) // default_sample_description_index
		b.u32(0)
		b.u32(0)
		b.u32(0)
		b.end(trex)
	}
	b.end(mvex)
	b.end(moov)
	n, err := w.Write(b.b)
	if err != nil {
		return int64(n), fmt.Errorf("fmp4: write init: %w", err)
	}
	return int64(n), nil
}

func version(long bool) uint8 {
	if long {
		return 1
	}
	return 0
}

// times writes zero creation and modification times.
func (w *builder) times(long bool) {
	if long {
		w.u64(0)
		w.u64(0)
	} else {
		w.u32(0)
		w.u32(0)
	}
}

func (w *builder) dur(long bool, d uint64) {
	if long {
		w.u64(d)
	} else {
		w.u32(uint32(d))
	}
}

// toScale converts d ticks of timescale from to timescale to, rounding up
// (a header never claims less than the samples hold).
func toScale(d uint64, from, to uint32) uint64 {
	if from == 0 || from == to {
		return d
	}
	hi, lo := bits.Mul64(d, uint64(to))
	lo, carry := bits.Add64(lo, uint64(from)-1, 0)
	if hi+carry >= uint64(from) {
		return math.MaxUint64 // past 64 bits: "unknown" is all ones
	}
	q, _ := bits.Div64(hi+carry, lo, uint64(from))
	return q
}

// trak writes a track; movieDur is in the movie timescale (tkhd), mediaDur
// in the track's (mdhd).
func (b *builder) trak(t Track, movieDur, mediaDur uint64) error {
	if t.TimeScale == 0 {
		return fmt.Errorf("zero timescale")
	}
	video := t.Codec == H264 || t.Codec == H265
	// Build the sample entry first: it validates the codec data.
	var entry builder
	var err error
	switch t.Codec {
	case H264, H265:
		err = entry.visualEntry(t)
	case AAC, Opus:
		err = entry.audioEntry(t)
	default:
		err = fmt.Errorf("unsupported codec %q", t.Codec)
	}
	if err != nil {
		return err
	}

	long := movieDur > math.MaxUint32 || mediaDur > math.MaxUint32
	trak := b.start("trak")
	tkhd := b.fullStart("tkhd", version(long), 3) // enabled, in movie
	b.times(long)
	b.u32(t.ID)
	b.u32(0)
	b.dur(long, movieDur)
	b.zeros(8)
	b.u16(0) // layer
	b.u16(0) // alternate_group
	if video {
		b.u16(0)
	} else {
		b.u16(0x0100)
	}
	b.u16(0)
	b.matrix()
	if video {
		b.u32(uint32(t.Width) << 16)
		b.u32(uint32(t.Height) << 16)
	} else {
		b.u64(0)
	}
	b.end(tkhd)

	mdia := b.start("mdia")
	mdhd := b.fullStart("mdhd", version(long), 0)
	b.times(long)
	b.u32(t.TimeScale)
	b.dur(long, mediaDur)
	b.u16(0x55c4) // "und"
	b.u16(0)
	b.end(mdhd)
	hdlr := b.fullStart("hdlr", 0, 0)
	b.u32(0)
	if video {
		b.str("vide")
	} else {
		b.str("soun")
	}
	b.zeros(12)
	if video {
		b.str("VideoHandler\x00")
	} else {
		b.str("SoundHandler\x00")
	}
	b.end(hdlr)

	minf := b.start("minf")
	if video {
		vmhd := b.fullStart("vmhd", 0, 1)
		b.zeros(8)
		b.end(vmhd)
	} else {
		smhd := b.fullStart("smhd", 0, 0)
		b.zeros(4)
		b.end(smhd)
	}
	dinf := b.start("dinf")
	dref := b.fullStart("dref", 0, 0)
	b.u32(1)
	url := b.fullStart("url ", 0, 1) // media in the same file
	b.end(url)
	b.end(dref)
	b.end(dinf)

	stbl := b.start("stbl")
	stsd := b.fullStart("stsd", 0, 0)
	b.u32(1)
	b.bytes(entry.b)
	b.end(stsd)
	for _, typ := range []string{"stts", "stsc", "stco"} {
		o := b.fullStart(typ, 0, 0)
		b.u32(0)
		b.end(o)
	}
	stsz := b.fullStart("stsz", 0, 0)
	b.u32(0)
	b.u32(0)
	b.end(stsz)
	b.end(stbl)
	b.end(minf)
	b.end(mdia)
	b.end(trak)
	return nil
}

func (b *builder) visualEntry(t Track) error {
	if t.Width <= 0 || t.Height <= 0 || t.Width > 0xffff || t.Height > 0xffff {
		return fmt.Errorf("bad video size %dx%d", t.Width, t.Height)
	}
	var typ, cfgTyp string
	var cfg []byte
	var err error
	if t.Codec == H264 {
		typ, cfgTyp = "avc1", "avcC"
		cfg, err = avc.DecoderConfigurationRecord(t.SPS, t.PPS)
	} else {
		typ, cfgTyp = "hvc1", "hvcC"
		cfg, err = hevc.DecoderConfigurationRecord(t.VPS, t.SPS, t.PPS)
	}
	if err != nil {
		return err
	}
	e := b.start(typ)
	b.zeros(6)
	b.u16(1) // data_reference_index
	b.zeros(16)
	b.u16(uint16(t.Width))
	b.u16(uint16(t.Height))
	b.u32(0x00480000) // 72 dpi
	b.u32(0x00480000)
	b.u32(0)
	b.u16(1) // frame_count
	b.zeros(32)
	b.u16(0x0018) // depth
	b.u16(0xffff) // pre_defined -1
	c := b.start(cfgTyp)
	b.bytes(cfg)
	b.end(c)
	b.end(e)
	return nil
}

func (b *builder) audioEntry(t Track) error {
	rate, channels := t.SampleRate, t.Channels
	if t.Codec == AAC {
		c, err := aac.ParseConfig(t.AACConfig)
		if err != nil {
			return err
		}
		if rate == 0 {
			rate = c.SampleRate
		}
		if channels == 0 {
			channels = c.Channels
		}
	}
	if rate <= 0 || rate > 0xffff || channels <= 0 || channels > 0xff {
		return fmt.Errorf("bad audio format: %d Hz, %d channels", rate, channels)
	}
	typ := "mp4a"
	if t.Codec == Opus {
		typ = "Opus"
		if channels > 2 {
			return fmt.Errorf("opus: %d channels need a channel mapping table", channels)
		}
	}
	e := b.start(typ)
	b.zeros(6)
	b.u16(1) // data_reference_index
	b.zeros(8)
	b.u16(uint16(channels))
	b.u16(16) // samplesize
	b.u32(0)
	b.u32(uint32(rate) << 16)
	if t.Codec == AAC {
		b.esds(t.ID, t.AACConfig)
	} else {
		d := b.start("dOps")
		b.u8(0) // Version
		b.u8(uint8(channels))
		b.u16(0) // PreSkip: unknown for a stream taken mid-flight
		b.u32(uint32(rate))
		b.u16(0) // OutputGain
		b.u8(0)  // ChannelMappingFamily 0: mono or stereo
		b.end(d)
	}
	b.end(e)
	return nil
}

// esds writes the ES_Descriptor (ISO/IEC 14496-1 7.2.6.5) for AAC.
func (b *builder) esds(id uint32, asc []byte) {
	var dsi, dcd, es bytes.Buffer
	descriptor(&dsi, 0x05, asc)
	cfg := []byte{0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} // AAC, audio stream
	descriptor(&dcd, 0x04, append(cfg, dsi.Bytes()...))
	esBody := []byte{byte(id >> 8), byte(id), 0}
	esBody = append(esBody, dcd.Bytes()...)
	var sl bytes.Buffer
	descriptor(&sl, 0x06, []byte{2})
	esBody = append(esBody, sl.Bytes()...)
	descriptor(&es, 0x03, esBody)
	o := b.fullStart("esds", 0, 0)
	b.bytes(es.Bytes())
	b.end(o)
}

// descriptor writes tag, expandable size and body.
func descriptor(w *bytes.Buffer, tag byte, body []byte) {
	w.WriteByte(tag)
	n := len(body)
	var size []byte
	for {
		size = append([]byte{byte(n & 0x7f)}, size...)
		n >>= 7
		if n == 0 {
			break
		}
	}
	for i := 0; i < len(size)-1; i++ {
		size[i] |= 0x80
	}
	w.Write(size)
	w.Write(body)
}

// WriteFragment writes one moof + mdat (default-base-is-moof, data offsets
// filled in). It returns the number of bytes written. Sample data is written
// straight from the samples, not copied.
func WriteFragment(w io.Writer, f Fragment) (int64, error) {
	hdr, err := AppendFragmentHeader(nil, f)
	if err != nil {
		return 0, err
	}
	written, err := w.Write(hdr)
	n := int64(written)
	if err != nil {
		return n, fmt.Errorf("fmp4: write fragment %d: %w", f.SequenceNumber, err)
	}
	for _, tf := range f.Tracks {
		for _, s := range tf.Samples {
			written, err := w.Write(s.Data)
			n += int64(written)
			if err != nil {
				return n, fmt.Errorf("fmp4: write fragment %d: %w", f.SequenceNumber, err)
			}
		}
	}
	return n, nil
}

// AppendFragmentHeader appends f's moof and mdat box header to dst: the
// fragment is that followed by every sample's Data, track by track, which
// lets a caller write it with one writev instead of copying the samples.
func AppendFragmentHeader(dst []byte, f Fragment) ([]byte, error) {
	if len(f.Tracks) == 0 {
		return dst, fmt.Errorf("fmp4: write fragment %d: no tracks", f.SequenceNumber)
	}
	b := builder{b: dst}
	base := len(dst)
	moof := b.start("moof")
	mfhd := b.fullStart("mfhd", 0, 0)
	b.u32(f.SequenceNumber)
	b.end(mfhd)
	offsetAt := make([]int, len(f.Tracks)) // where each trun's data_offset goes
	dataSize := make([]uint64, len(f.Tracks))
	for i, tf := range f.Tracks {
		if len(tf.Samples) == 0 {
			return dst, fmt.Errorf("fmp4: write fragment %d: track %d has no samples", f.SequenceNumber, tf.TrackID)
		}
		traf := b.start("traf")
		tfhd := b.fullStart("tfhd", 0, tfhdDefaultBaseIsMoof)
		b.u32(tf.TrackID)
		b.end(tfhd)
		tfdt := b.fullStart("tfdt", 1, 0)
		b.u64(tf.BaseDecodeTime)
		b.end(tfdt)
		flags := uint32(trunDataOffset | trunDuration | trunSize | trunFlags)
		for _, s := range tf.Samples {
			if s.PTSOffset != 0 {
				flags |= trunCTO
				break
			}
		}
		trun := b.fullStart("trun", 1, flags)
		b.u32(uint32(len(tf.Samples)))
		offsetAt[i] = len(b.b)
		b.u32(0)
		for _, s := range tf.Samples {
			b.u32(s.Duration)
			b.u32(uint32(len(s.Data)))
			if s.Keyframe {
				b.u32(flagsSync)
			} else {
				b.u32(flagsNonSync)
			}
			if flags&trunCTO != 0 {
				b.u32(uint32(s.PTSOffset))
			}
			dataSize[i] += uint64(len(s.Data))
		}
		b.end(trun)
		b.end(traf)
	}
	b.end(moof)
	off := uint64(len(b.b)-base) + 8
	var total uint64
	for i := range f.Tracks {
		if off > math.MaxInt32 {
			return dst, fmt.Errorf("fmp4: write fragment %d: data offset %d too large", f.SequenceNumber, off)
		}
		binary.BigEndian.PutUint32(b.b[offsetAt[i]:], uint32(off))
		off += dataSize[i]
		total += dataSize[i]
	}
	if total+8 > math.MaxUint32 {
		return dst, fmt.Errorf("fmp4: write fragment %d: mdat of %d bytes too large", f.SequenceNumber, total)
	}
	b.u32(uint32(total + 8))
	b.str("mdat")
	return b.b, nil
}

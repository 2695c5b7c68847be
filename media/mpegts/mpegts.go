// Package mpegts reads an MPEG-TS segment (ISO/IEC 13818-1) as Bridges
// upload them, H.264 or H.265 video and, optionally, AAC audio in ADTS, as
// fragmented MP4 (NewReader), so that what reads fMP4 (clip export) reads
// MPEG-TS segments the same way.
//
// It handles what encoders write into a segment: one program (the first of
// the PAT), PSI sections that fit in the packet that starts them, one
// access unit per video PES, ADTS frames of one raw data block. The first
// video stream and the first AAC stream of the PMT are read; other streams
// are ignored. Anything it cannot place is an error wrapping ErrMalformed,
// never a panic.
package mpegts

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/vigilcloud/vigil/media/avc"
	"github.com/vigilcloud/vigil/media/fmp4"
	"github.com/vigilcloud/vigil/media/hevc"
)

// ErrMalformed is wrapped by every error Demux returns for bad input.
var ErrMalformed = errors.New("mpegts: malformed")

// PacketSize is the length of a transport stream packet.
const PacketSize = 188

// MPEG-TS stream types (ISO/IEC 13818-1 Table 2-34).
const (
	streamAAC  = 0x0f
	streamH264 = 0x1b
	streamH265 = 0x24
)

// Limits on what one segment may hold: a PES beyond maxPES (a keyframe
// of a 4K camera is a few MB) or more than maxSamples pictures and audio
// frames is refused rather than buffered.
const (
	maxPES     = 32 << 20
	maxSamples = 1 << 17
)

// Track IDs of the result: video first, audio second.
const (
	videoID = 1
	audioID = 2
)

// Reader reads a transport stream segment as fragmented MP4: its init
// section, then a fragment per group of pictures (keyframe to keyframe),
// each written once the next keyframe closes it. It holds one group of
// pictures, not the segment; only when the PMT names audio does the init
// section (which needs the audio's configuration) wait for the first
// audio frame. Decode times start at zero for the earliest track.
type Reader struct {
	src         io.Reader
	limit, read int64
	pkt         []byte
	d           demuxer
	out         bytes.Buffer
	init        bool  // the init section is written
	audio       bool  // with an audio track
	t0          int64 // the earliest track's start, 90 kHz
	seq         uint32
	done        bool
	err         error
}

// NewReader reads the transport stream in r, at most limit bytes (a
// longer one is an error).
func NewReader(r io.Reader, limit int64) *Reader {
	return &Reader{src: r, limit: limit, pkt: make([]byte, PacketSize),
		d: demuxer{pmtPID: -1, video: stream{pid: -1}, audio: stream{pid: -1}}}
}

// Read implements io.Reader over the fMP4 bytes.
func (r *Reader) Read(p []byte) (int, error) {
	for r.out.Len() == 0 {
		switch {
		case r.err != nil:
			return 0, r.err
		case r.done:
			return 0, io.EOF
		}
		r.err = r.step()
	}
	return r.out.Read(p)
}

// step reads one packet, or ends the stream, and writes what it completed.
func (r *Reader) step() error {
	_, err := io.ReadFull(r.src, r.pkt)
	switch {
	case errors.Is(err, io.EOF):
		return r.end()
	case errors.Is(err, io.ErrUnexpectedEOF):
		return malformed("truncated packet at byte %d", r.read)
	case err != nil:
		return err
	}
	if r.read += PacketSize; r.read > r.limit {
		return malformed("longer than %d bytes", r.limit)
	}
	if err := r.d.packet(r.pkt); err != nil {
		return fmt.Errorf("%w (packet at byte %d)", err, r.read-PacketSize)
	}
	if !r.init {
		if !r.d.ready() {
			return nil
		}
		if err := r.writeInit(); err != nil {
			return err
		}
	}
	// A keyframe after other pictures closes their group.
	if n := len(r.d.v.samples); n > 1 && r.d.v.samples[n-1].Keyframe {
		return r.writeFragment(n-1, false)
	}
	return nil
}

// end writes the rest when the stream ends.
func (r *Reader) end() error {
	d := &r.d
	if d.video.pid < 0 {
		return malformed("no PMT with video")
	}
	if err := d.endPES(&d.video); err != nil {
		return err
	}
	if err := d.endPES(&d.audio); err != nil {
		return err
	}
	if !r.init {
		if len(d.v.samples) == 0 {
			return malformed("no video picture")
		}
		if err := r.writeInit(); err != nil {
			return err
		}
	}
	r.done = true
	if len(d.v.samples) == 0 {
		return nil
	}
	return r.writeFragment(len(d.v.samples), true)
}

// ready says whether the init section can be written: the video's
// parameter sets and first picture are in, and the audio's first frame
// when the PMT names audio.
func (d *demuxer) ready() bool {
	return len(d.v.samples) > 0 && (d.audio.pid < 0 || d.a.asc != nil)
}

func (r *Reader) writeInit() error {
	d := &r.d
	vt, err := d.v.track(d.video.codec)
	if err != nil {
		return err
	}
	tracks := []fmp4.Track{vt}
	r.t0 = d.v.dts[0]
	if r.audio = d.a.asc != nil; r.audio {
		tracks = append(tracks, d.a.track())
		r.t0 = min(r.t0, d.a.pts)
	}
	r.init = true
	_, err = fmp4.WriteInit(&r.out, tracks, fmp4.InitOptions{})
	return err
}

// writeFragment writes the first n pictures, and the audio before the
// next one (all of it when final).
func (r *Reader) writeFragment(n int, final bool) error {
	v, a := &r.d.v, &r.d.a
	vf, err := v.fragment(n, r.t0)
	if err != nil {
		return err
	}
	r.seq++
	f := fmp4.Fragment{SequenceNumber: r.seq, Tracks: []fmp4.TrackFragment{vf}}
	if r.audio {
		end := int64(math.MaxInt64)
		if !final {
			end = v.dts[n]
		}
		if af, ok := a.fragment(end, r.t0); ok {
			f.Tracks = append(f.Tracks, af)
		}
	}
	if _, err := fmp4.WriteFragment(&r.out, f); err != nil {
		return err
	}
	v.drop(n)
	return nil
}

// stream is one elementary stream being read.
type stream struct {
	pid   int // -1 until the PMT names it
	codec fmp4.Codec
	pes   []byte // the open PES's payload
	open  bool
	pts   int64 // of the open PES, 90 kHz, unwrapped; -1 when absent
	dts   int64
	cc    int // continuity counter of the last packet; -1 at first
}

type demuxer struct {
	pmtPID       int
	video, audio stream
	clock        unwrapper

	v videoOut
	a audioOut
}

// unwrapper extends 33-bit PES timestamps across their wrap, from the
// first one seen.
type unwrapper struct {
	last    int64
	started bool
}

func (u *unwrapper) extend(ts int64) int64 {
	if !u.started {
		u.last, u.started = ts, true
		return ts
	}
	d := (ts - u.last) & (1<<33 - 1)
	if d >= 1<<32 {
		d -= 1 << 33 // backwards (B-frames' PTS, audio before video)
	}
	u.last += d
	return u.last
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// Packet is what a transport stream packet's header says.
type Packet struct {
	PID        int
	Start      bool   // payload_unit_start_indicator: a PES or a section starts here
	CC         byte   // continuity_counter: counts the packets with a payload
	Payload    []byte // nil when the packet has none (the counter stays)
	HasPayload bool   // the header says so, even when the adaptation field fills the packet
}

// ParsePacket reads the header of the 188-byte packet p.
func ParsePacket(p []byte) (Packet, error) {
	if len(p) != PacketSize || p[0] != 0x47 {
		return Packet{}, malformed("no sync byte")
	}
	if p[1]&0x80 != 0 {
		return Packet{}, malformed("transport error indicator set")
	}
	pk := Packet{PID: int(binary.BigEndian.Uint16(p[1:3]) & 0x1fff), Start: p[1]&0x40 != 0, CC: p[3] & 0x0f}
	afc := p[3] >> 4 & 3
	off := 4
	if afc&2 != 0 {
		off += 1 + int(p[4])
		if off > PacketSize {
			return Packet{}, malformed("adaptation field of %d bytes", p[4])
		}
	}
	if pk.HasPayload = afc&1 != 0; pk.HasPayload && off < PacketSize {
		pk.Payload = p[off:]
	}
	return pk, nil
}

func (d *demuxer) packet(p []byte) error {
	pk, err := ParsePacket(p)
	if err != nil || !pk.HasPayload {
		return err
	}
	switch pk.PID {
	case 0:
		if pk.Start && d.pmtPID < 0 && pk.Payload != nil {
			return d.pat(pk.Payload)
		}
	case d.pmtPID:
		if pk.Start && d.video.pid < 0 && d.audio.pid < 0 && pk.Payload != nil {
			return d.pmt(pk.Payload)
		}
	case d.video.pid:
		return d.pesPacket(&d.video, pk.CC, pk.Start, pk.Payload)
	case d.audio.pid:
		return d.pesPacket(&d.audio, pk.CC, pk.Start, pk.Payload)
	}
	return nil
}

// Section returns the body of the PSI section of table tableID that
// starts in payload (after the 5 bytes that follow its length, without
// its CRC). The section must fit in the payload.
func Section(payload []byte, tableID byte) ([]byte, error) {
	if len(payload) == 0 {
		return nil, malformed("empty section payload")
	}
	ptr := int(payload[0])
	if 1+ptr+3 > len(payload) {
		return nil, malformed("pointer field %d beyond the packet", ptr)
	}
	sec := payload[1+ptr:]
	if sec[0] != tableID {
		return nil, malformed("table id %#x, want %#x", sec[0], tableID)
	}
	n := int(binary.BigEndian.Uint16(sec[1:3]) & 0x0fff)
	if n < 9 || 3+n > len(sec) {
		return nil, malformed("section of %d bytes does not fit in its packet", n)
	}
	return sec[8 : 3+n-4], nil
}

func (d *demuxer) pat(payload []byte) error {
	progs, err := Section(payload, 0x00)
	if err != nil {
		return err
	}
	for ; len(progs) >= 4; progs = progs[4:] {
		if binary.BigEndian.Uint16(progs) != 0 { // 0 is the network PID
			d.pmtPID = int(binary.BigEndian.Uint16(progs[2:]) & 0x1fff)
			if d.pmtPID == 0 {
				return malformed("PMT on PID 0")
			}
			return nil
		}
	}
	return malformed("PAT without a program")
}

func (d *demuxer) pmt(payload []byte) error {
	b, err := Section(payload, 0x02)
	if err != nil {
		return err
	}
	if len(b) < 4 {
		return malformed("PMT of %d bytes", len(b))
	}
	info := int(binary.BigEndian.Uint16(b[2:]) & 0x0fff)
	if 4+info > len(b) {
		return malformed("PMT program info beyond the section")
	}
	for es := b[4+info:]; len(es) > 0; {
		if len(es) < 5 {
			return malformed("PMT stream entry of %d bytes", len(es))
		}
		typ, pid := es[0], int(binary.BigEndian.Uint16(es[1:])&0x1fff)
		n := int(binary.BigEndian.Uint16(es[3:]) & 0x0fff)
		if 5+n > len(es) {
			return malformed("PMT stream descriptors beyond the section")
		}
		es = es[5+n:]
		if pid == 0 || pid == d.pmtPID {
			return malformed("elementary stream on PID %d", pid)
		}
		switch {
		case (typ == streamH264 || typ == streamH265) && d.video.pid < 0:
			d.video = stream{pid: pid, codec: fmp4.H264, cc: -1}
			if typ == streamH265 {
				d.video.codec = fmp4.H265
			}
		case typ == streamAAC && d.audio.pid < 0:
			d.audio = stream{pid: pid, codec: fmp4.AAC, cc: -1}
		}
	}
	if d.video.pid < 0 {
		return malformed("PMT without H.264 or H.265 video")
	}
	if d.video.pid == d.audio.pid {
		return malformed("video and audio on one PID")
	}
	return nil
}

// pesPacket adds one packet's payload to s's PES.
func (d *demuxer) pesPacket(s *stream, cc byte, pusi bool, payload []byte) error {
	if s.cc >= 0 && int(cc) == s.cc && !pusi {
		return nil // a duplicate packet (13818-1 2.4.3.3)
	}
	if s.cc >= 0 && int(cc) != (s.cc+1)&0x0f {
		return malformed("continuity counter %d after %d on PID %d (a packet is missing)", cc, s.cc, s.pid)
	}
	s.cc = int(cc)
	if pusi {
		if err := d.endPES(s); err != nil {
			return err
		}
		return d.startPES(s, payload)
	}
	if !s.open {
		return nil // the tail of a PES that started before the PMT
	}
	if len(s.pes)+len(payload) > maxPES {
		return malformed("PES of more than %d bytes", maxPES)
	}
	s.pes = append(s.pes, payload...)
	return nil
}

// startPES parses a PES header: start code, stream id, length, flags,
// header length, PTS and DTS (13818-1 2.4.3.6).
func (d *demuxer) startPES(s *stream, b []byte) error {
	if len(b) < 9 || b[0] != 0 || b[1] != 0 || b[2] != 1 {
		return malformed("PES without its start code on PID %d", s.pid)
	}
	flags, hdr := b[7]>>6, int(b[8])
	if 9+hdr > len(b) {
		return malformed("PES header of %d bytes beyond its packet", hdr)
	}
	s.pts, s.dts = -1, -1
	switch flags {
	case 2:
		if hdr < 5 {
			return malformed("PES header too short for its PTS")
		}
		s.pts = d.clock.extend(timestamp(b[9:]))
	case 3:
		if hdr < 10 {
			return malformed("PES header too short for its PTS and DTS")
		}
		s.pts = d.clock.extend(timestamp(b[9:]))
		s.dts = d.clock.extend(timestamp(b[14:]))
	default:
		return malformed("PES without a PTS on PID %d", s.pid)
	}
	if s.dts < 0 {
		s.dts = s.pts
	}
	s.open = true
	s.pes = append(s.pes[:0], b[9+hdr:]...)
	return nil
}

// timestamp decodes a 33-bit PTS or DTS from its 5 bytes.
func timestamp(b []byte) int64 {
	return int64(b[0]>>1&0x07)<<30 | int64(b[1])<<22 | int64(b[2]>>1)<<15 | int64(b[3])<<7 | int64(b[4]>>1)
}

// endPES hands the open PES of s on.
func (d *demuxer) endPES(s *stream) error {
	if !s.open {
		return nil
	}
	s.open = false
	if s == &d.video {
		return d.v.add(s.codec, s.pes, s.pts, s.dts)
	}
	return d.a.add(s.pes, s.pts)
}

// videoOut collects the video access units.
type videoOut struct {
	vps, sps, pps []byte // the first of each: the track's
	samples       []fmp4.Sample
	dts, pts      []int64 // 90 kHz, unwrapped, of samples
	lastDTS       int64   // of the newest picture, also once written
	lastDur       int64   // of the last picture written
	any           bool
}

func (v *videoOut) add(codec fmp4.Codec, pes []byte, pts, dts int64) error {
	if len(v.samples) >= maxSamples {
		return malformed("more than %d pictures", maxSamples)
	}
	if v.any && dts <= v.lastDTS {
		return malformed("video decode time %d after %d (out of order or duplicated)", dts, v.lastDTS)
	}
	if pts < dts {
		return malformed("video PTS %d before its DTS %d", pts, dts)
	}
	var data []byte
	var nalus [][]byte
	for _, n := range avc.SplitAnnexB(pes) {
		if len(n) == 0 || n[0]&0x80 != 0 || codec == fmp4.H265 && len(n) < 2 {
			return malformed("%s NAL unit (forbidden bit or too short)", codec)
		}
		if v.param(codec, n) {
			continue
		}
		nalus = append(nalus, n)
		data = binary.BigEndian.AppendUint32(data, uint32(len(n)))
		data = append(data, n...)
	}
	if len(nalus) == 0 {
		return nil // parameter sets or delimiters alone
	}
	key := avc.IsKeyframe(nalus)
	if codec == fmp4.H265 {
		key = hevc.IsKeyframe(nalus)
	}
	v.samples = append(v.samples, fmp4.Sample{Keyframe: key, Data: data})
	v.dts, v.pts = append(v.dts, dts), append(v.pts, pts)
	v.lastDTS, v.any = dts, true
	return nil
}

// param reports whether n is a parameter set or an access unit delimiter
// that leaves the samples: the first set of each kind goes into the init
// section, and repeats of it (before every keyframe) are dropped. A set
// that differs stays in band, where decoders find it.
func (v *videoOut) param(codec fmp4.Codec, n []byte) bool {
	var slot *[]byte
	if codec == fmp4.H264 {
		switch avc.NALType(n) {
		case avc.NALAUD:
			return true
		case avc.NALSPS:
			slot = &v.sps
		case avc.NALPPS:
			slot = &v.pps
		}
	} else {
		switch hevc.NALType(n) {
		case 35: // access unit delimiter
			return true
		case 32:
			slot = &v.vps
		case hevc.NALSPS:
			slot = &v.sps
		case 34:
			slot = &v.pps
		}
	}
	switch {
	case slot == nil:
		return false
	case *slot == nil:
		*slot = bytes.Clone(n)
		return true
	}
	return bytes.Equal(*slot, n)
}

func (v *videoOut) track(codec fmp4.Codec) (fmp4.Track, error) {
	t := fmp4.Track{ID: videoID, Codec: codec, TimeScale: 90000, VPS: v.vps, SPS: v.sps, PPS: v.pps}
	if t.SPS == nil || t.PPS == nil || codec == fmp4.H265 && t.VPS == nil {
		return t, malformed("%s video without its parameter sets", codec)
	}
	if codec == fmp4.H264 {
		s, err := avc.ParseSPS(t.SPS)
		if err != nil {
			return t, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		t.Width, t.Height = s.Width, s.Height
	} else {
		s, err := hevc.ParseSPS(t.SPS)
		if err != nil {
			return t, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		t.Width, t.Height = s.Width, s.Height
	}
	return t, nil
}

// fragment is the first n pictures, each lasting until the next one's
// decode time; the last picture of the stream lasts as long as the one
// before it (a transport stream does not say).
func (v *videoOut) fragment(n int, t0 int64) (fmp4.TrackFragment, error) {
	for i := range n {
		dur := v.lastDur
		switch {
		case i+1 < len(v.dts):
			dur = v.dts[i+1] - v.dts[i]
		case i > 0:
			dur = v.dts[i] - v.dts[i-1]
		case dur == 0:
			dur = 3600 // one picture: 25 fps
		}
		off := v.pts[i] - v.dts[i]
		if dur > math.MaxInt32 || off > math.MaxInt32 {
			return fmp4.TrackFragment{}, malformed("video time step of %d ticks", max(dur, off))
		}
		v.samples[i].Duration, v.samples[i].PTSOffset = uint32(dur), int32(off)
		v.lastDur = dur
	}
	return fmp4.TrackFragment{TrackID: videoID, BaseDecodeTime: uint64(v.dts[0] - t0), Samples: v.samples[:n]}, nil
}

// drop forgets the first n pictures, once written.
func (v *videoOut) drop(n int) {
	clear(v.samples[:n])
	v.samples = append(v.samples[:0], v.samples[n:]...)
	v.dts = append(v.dts[:0], v.dts[n:]...)
	v.pts = append(v.pts[:0], v.pts[n:]...)
}

// audioOut collects AAC frames from ADTS.
type audioOut struct {
	asc      []byte // the AudioSpecificConfig of the first frame's header
	rate     int
	channels int
	pts      int64 // the first frame's, 90 kHz
	samples  []fmp4.Sample
	written  int64 // frames written before samples
}

var adtsRates = [13]int{96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350}

// add splits a PES of ADTS frames (ISO/IEC 14496-3 1.A.2). Frames are
// placed one after another from the first PES's PTS, 1024 samples each.
func (a *audioOut) add(pes []byte, pts int64) error {
	for len(pes) > 0 {
		if len(pes) < 7 || pes[0] != 0xff || pes[1]&0xf0 != 0xf0 {
			return malformed("ADTS frame without its sync word")
		}
		crc := pes[1]&1 == 0
		profile, rateIdx, ch := int(pes[2]>>6), int(pes[2]>>2&0x0f), int(pes[2]&1)<<2|int(pes[3]>>6)
		size := int(pes[3]&3)<<11 | int(pes[4])<<3 | int(pes[5]>>5)
		blocks := int(pes[6] & 3)
		hdr := 7
		if crc {
			hdr = 9
		}
		switch {
		case size < hdr || size > len(pes):
			return malformed("ADTS frame of %d bytes (%d left)", size, len(pes))
		case rateIdx >= len(adtsRates):
			return malformed("ADTS sampling frequency index %d", rateIdx)
		case ch == 0:
			return malformed("ADTS without a channel configuration")
		case blocks != 0:
			return malformed("ADTS frame of %d raw data blocks", blocks+1)
		case len(a.samples) >= maxSamples:
			return malformed("more than %d audio frames", maxSamples)
		}
		asc := []byte{byte((profile+1)<<3 | rateIdx>>1), byte(rateIdx&1<<7 | ch<<3)}
		if a.asc == nil {
			a.asc, a.rate, a.channels, a.pts = asc, adtsRates[rateIdx], ch, pts
			if ch == 7 {
				a.channels = 8
			}
		} else if !bytes.Equal(a.asc, asc) {
			return malformed("AAC configuration changes within the segment")
		}
		// A copy: the PES buffer is reused for the next PES.
		a.samples = append(a.samples, fmp4.Sample{Duration: 1024, Keyframe: true, Data: bytes.Clone(pes[hdr:size])})
		pes = pes[size:]
	}
	return nil
}

func (a *audioOut) track() fmp4.Track {
	return fmp4.Track{ID: audioID, Codec: fmp4.AAC, TimeScale: uint32(a.rate), SampleRate: a.rate, Channels: a.channels, AACConfig: a.asc}
}

// fragment takes the frames that start before end (90 kHz) out of the
// queue: frames are placed one after another from the first one's PTS.
func (a *audioOut) fragment(end, t0 int64) (fmp4.TrackFragment, bool) {
	start := (a.pts-t0)*int64(a.rate)/90000 + a.written*1024 // in samples
	n := 0
	for n < len(a.samples) && end != math.MaxInt64 && t0+(start+int64(n)*1024)*90000/int64(a.rate) < end {
		n++
	}
	if end == math.MaxInt64 {
		n = len(a.samples)
	}
	if n == 0 {
		return fmp4.TrackFragment{}, false
	}
	f := fmp4.TrackFragment{TrackID: audioID, BaseDecodeTime: uint64(start), Samples: slices.Clone(a.samples[:n])}
	clear(a.samples[:n])
	a.samples = append(a.samples[:0], a.samples[n:]...)
	a.written += int64(n)
	return f, true
}

package segmenter

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/pion/rtp"

	"github.com/vigilcloud/vigil/ingest/rtsp"
	"github.com/vigilcloud/vigil/media/aac"
	"github.com/vigilcloud/vigil/media/avc"
	"github.com/vigilcloud/vigil/media/fmp4"
	"github.com/vigilcloud/vigil/media/hevc"
)

var (
	errIgnored   = errors.New("segmenter: media ignored")
	errMalformed = errors.New("segmenter: malformed")
)

// track is one recorded media of a session: exactly one of video, audio.
type track struct {
	media rtsp.Media
	video *videoTrack
	audio *audioTrack
	ts    unwrapper // RTP timestamp, extended to 64 bits
	clock clockMap  // RTP time → wall clock
	tl    timeline  // the extended RTP time with its jumps taken out
}

func newTrack(m rtsp.Media) (*track, error) {
	t := &track{media: m}
	switch strings.ToUpper(m.Codec) {
	case "H264":
		t.video = &videoTrack{codec: fmp4.H264}
		if ps, ok := m.Fmtp["sprop-parameter-sets"]; ok {
			for _, p := range strings.Split(ps, ",") {
				if b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(p)); err == nil && len(b) > 0 {
					t.video.setParam(b)
				}
			}
		}
	case "H265":
		t.video = &videoTrack{codec: fmp4.H265}
		for _, k := range []string{"sprop-vps", "sprop-sps", "sprop-pps"} {
			for _, p := range strings.Split(m.Fmtp[k], ",") {
				if b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(p)); err == nil && len(b) > 0 {
					t.video.setParam(b)
				}
			}
		}
		if m.Fmtp["sprop-max-don-diff"] != "" && m.Fmtp["sprop-max-don-diff"] != "0" {
			return nil, errors.New("H.265 with DONL (sprop-max-don-diff > 0) is not supported")
		}
	case "MPEG4-GENERIC":
		a, err := newAACTrack(m)
		if err != nil {
			return nil, err
		}
		t.audio = a
	case "OPUS":
		ch := m.Channels
		if ch <= 0 {
			ch = 2
		}
		t.audio = &audioTrack{codec: fmp4.Opus, rate: 48000, channels: ch, frameDur: 960}
	default:
		if m.Type == "video" {
			return nil, fmt.Errorf("video codec %q is not recorded (H264, H265)", m.Codec)
		}
		return nil, errIgnored
	}
	if t.video != nil {
		t.video.reset()
		t.video.dts = avc.NewDTSExtractor[*accessUnit](0)
		if m.ClockRate != 0 && m.ClockRate != 90000 {
			return nil, fmt.Errorf("video clock rate %d (want 90000)", m.ClockRate)
		}
	}
	if t.audio != nil && m.ClockRate != 0 && int(m.ClockRate) != t.audio.rate {
		// Audio timestamps count samples at the announced clock rate.
		t.audio.rate = int(m.ClockRate)
	}
	return t, nil
}

func newAACTrack(m rtsp.Media) (*audioTrack, error) {
	mode := strings.ToLower(m.Fmtp["mode"])
	if mode != "" && mode != "aac-hbr" {
		return nil, fmt.Errorf("mpeg4-generic mode %q (want AAC-hbr)", m.Fmtp["mode"])
	}
	asc, err := hex.DecodeString(m.Fmtp["config"])
	if err != nil || len(asc) < 2 {
		return nil, fmt.Errorf("mpeg4-generic config %q is not an AudioSpecificConfig", m.Fmtp["config"])
	}
	a := &audioTrack{codec: fmp4.AAC, asc: asc, rate: int(m.ClockRate), channels: m.Channels, frameDur: 1024}
	if c, err := aac.ParseConfig(asc); err == nil {
		a.rate, a.channels = c.SampleRate, c.Channels
	}
	if a.rate <= 0 {
		return nil, errors.New("AAC without a sample rate")
	}
	if a.channels <= 0 {
		a.channels = 1
	}
	num := func(k string, def int) (int, error) {
		v := m.Fmtp[k]
		if v == "" {
			return def, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 32 {
			return 0, fmt.Errorf("mpeg4-generic %s=%q", k, v)
		}
		return n, nil
	}
	if a.aac.SizeLength, err = num("sizelength", 13); err != nil {
		return nil, err
	}
	if a.aac.IndexLength, err = num("indexlength", 3); err != nil {
		return nil, err
	}
	if a.aac.IndexDeltaLength, err = num("indexdeltalength", 3); err != nil {
		return nil, err
	}
	if a.aac.SizeLength == 0 {
		return nil, errors.New("mpeg4-generic without sizelength")
	}
	return a, nil
}

// unwrapper extends 32-bit RTP timestamps to 64 bits across wraps.
type unwrapper struct {
	last    uint32
	ext     int64
	started bool
}

func (u *unwrapper) extend(ts uint32) int64 {
	if !u.started {
		u.started, u.last, u.ext = true, ts, int64(ts)
		return u.ext
	}
	u.ext += int64(int32(ts - u.last))
	u.last = ts
	return u.ext
}

// at is ts extended like the packets' times, without moving on (but for
// the first, which starts the extension): for a sender report's RTP time.
func (u *unwrapper) at(ts uint32) int64 {
	if !u.started {
		return u.extend(ts)
	}
	return u.ext + int64(int32(ts-u.last))
}

// timeline keeps a track's timestamps continuous across jumps. A step
// between two packets beyond the limit either way is no elapsed time (an
// encoder restart starts a new random timeline; a publisher that paused
// resumes far ahead): it is taken out, replaced by one ordinary step, so
// that DTS, durations and the audio queue never see it.
type timeline struct {
	off  int64 // added to the extended RTP time
	last int64 // the previous packet's time on the timeline
	top  int64 // the latest time seen (B-frames go back a little)
	step int64 // the last ordinary forward step
	back int64 // the largest ordinary step back (B-frame reordering)
	seen bool
}

// place puts extended RTP time ts on the timeline; jumped reports a step
// beyond limit ticks, which was taken out (def: the step that replaces it
// when none was seen).
func (l *timeline) place(ts, limit, def int64) (placed int64, jumped bool) {
	ts += l.off
	step := ts - l.last
	if jumped = l.seen && (step > limit || step < -limit); jumped {
		est := l.step
		if est <= 0 {
			est = def
		}
		// Past every time seen by as much as pictures are reordered, so
		// that B-frames after the jump do not land on pictures before it.
		l.off += l.top + est + l.back - ts
		ts = l.top + est + l.back
	} else if l.seen && step > 0 {
		l.step = step
	} else if l.seen && -step > l.back {
		l.back = -step
	}
	if !l.seen || ts > l.top {
		l.top = ts
	}
	l.last, l.seen = ts, true
	return ts, jumped
}

// unjumped is a sender report's RTP time on the timeline; ok is false
// when it lies beyond limit from the packets' (a report from the other
// side of a jump).
func (l *timeline) unjumped(ext, limit int64) (int64, bool) {
	ts := ext + l.off
	return ts, !l.seen || (ts-l.last <= limit && l.last-ts <= limit)
}

// clockMap maps a track's extended RTP time to wall-clock nanoseconds:
// from the RTCP sender reports when there are, else from the receive time
// of the first packet.
type clockMap struct {
	set, fromSR bool
	noSR        bool // a sender report was off by more than an hour: ignore them
	rtp         int64
	wallNS      int64
	rate        int64
}

func (c *clockMap) wall(rtpTS int64) int64 {
	return c.wallNS + (rtpTS-c.rtp)*1e9/c.rate
}

// accessUnit is one video picture. Its buffers are reused (auPool) once
// the fragment holding it is written.
type accessUnit struct {
	data  []byte   // the NAL units, each with a 4-byte length: the MP4 sample
	nalus [][]byte // the NAL units in data, without their lengths
	key   bool
	// params are the parameter sets in force when the picture ended: those
	// it was encoded with. The reorder buffer (DTS) hands pictures on
	// later, after newer parameter sets may have come in band.
	params *paramSets
}

// paramSets is one set of a track's parameter sets. It is never changed
// once made (a change makes a new one), so pictures share it.
type paramSets struct{ vps, sps, pps []byte }

// same reports whether p and q hold the same parameter sets.
func (p *paramSets) same(q *paramSets) bool {
	if p == q {
		return true
	}
	if p == nil || q == nil {
		return false
	}
	return bytes.Equal(p.vps, q.vps) && bytes.Equal(p.sps, q.sps) && bytes.Equal(p.pps, q.pps)
}

// auPool recycles access units between the sessions of a recorder, so
// that steady recording does not allocate per picture. Buffers up to
// poolSlack (most pictures) and larger ones (keyframes) are kept apart: a
// picture starts in a small buffer and moves to a large one only when it
// outgrows it, so small pictures never hold keyframe-sized memory and a
// keyframe is not grown step by step from a small buffer.
type auPool struct{ small, large sync.Pool }

// maxPooledAU bounds the buffer a recycled access unit keeps.
const (
	maxPooledAU = 1 << 20
	poolSlack   = 64 << 10
)

func (p *auPool) get() *accessUnit {
	if p != nil {
		if au, ok := p.small.Get().(*accessUnit); ok {
			return au
		}
	}
	return &accessUnit{}
}

func (p *auPool) put(au *accessUnit) {
	if p == nil || au == nil || cap(au.data) > maxPooledAU {
		return
	}
	clear(au.nalus) // drop the views before the slice is reused
	*au = accessUnit{data: au.data[:0], nalus: au.nalus[:0]}
	if cap(au.data) > poolSlack {
		p.large.Put(au)
	} else {
		p.small.Put(au)
	}
}

// grow makes room for n more bytes in au.data, moving a picture that
// outgrows a small buffer into a recycled large one when there is one.
func (p *auPool) grow(au *accessUnit, n int) {
	need := len(au.data) + n
	if need <= cap(au.data) {
		return
	}
	if p != nil && cap(au.data) <= poolSlack {
		if l, ok := p.large.Get().(*accessUnit); ok {
			// Swap buffers: au takes the large one, the small one goes back.
			big := append(l.data[:0], au.data...)
			l.data = au.data[:0]
			au.data = big
			p.small.Put(l)
		}
	}
	au.data = slices.Grow(au.data, n)
}

// videoTrack depacketises H.264/H.265 into access units.
type videoTrack struct {
	codec fmp4.Codec
	h264  h264Depacketizer
	h265  h265Depacketizer
	pool  *auPool
	done  []timedAU // push's result, reused

	params *paramSets // current parameter sets; replaced, never changed, on a change

	au        *accessUnit // the open picture; nil until a NAL unit arrives
	auNALUs   int
	auTS      int64
	auStarted bool
	auPkts    int
	damaged   bool // packets of the open access unit were lost
	needKey   bool // drop pictures until the next keyframe
	lastSeq   uint16
	seqKnown  bool
	dts       *avc.DTSExtractor[*accessUnit]
}

func (v *videoTrack) reset() {
	v.h264.reset()
	v.h265.reset()
}

// setParam reports whether nalu is a parameter set, and stores it.
func (v *videoTrack) setParam(nalu []byte) bool {
	next := paramSets{}
	if v.params != nil {
		next = *v.params
	}
	var slot *[]byte
	if v.codec == fmp4.H264 {
		switch avc.NALType(nalu) {
		case avc.NALSPS:
			slot = &next.sps
		case avc.NALPPS:
			slot = &next.pps
		}
	} else {
		switch hevc.NALType(nalu) {
		case 32:
			slot = &next.vps
		case 33:
			slot = &next.sps
		case 34:
			slot = &next.pps
		}
	}
	if slot == nil {
		return false
	}
	if !bytes.Equal(*slot, nalu) {
		// A new set: pictures already finished keep the one they point to.
		*slot = bytes.Clone(nalu)
		v.params = &next
	}
	return true
}

func (v *videoTrack) ready() bool {
	p := v.params
	return p != nil && p.sps != nil && p.pps != nil && (v.codec == fmp4.H264 || p.vps != nil)
}

// timedAU is a completed access unit with its extended RTP time.
type timedAU struct {
	au *accessUnit
	ts int64
}

// push feeds one RTP packet; it returns the access units it completed.
func (v *videoTrack) push(pkt *rtp.Packet, ts int64) ([]timedAU, error) {
	lost := v.seqKnown && pkt.SequenceNumber != v.lastSeq+1
	v.lastSeq, v.seqKnown = pkt.SequenceNumber, true
	done := v.done[:0]
	defer func() { v.done = done[:0] }()
	if v.auPkts++; v.auPkts > maxPacketsPerAU {
		return nil, fmt.Errorf("%w: more than %d RTP packets in one access unit", errMalformed, maxPacketsPerAU)
	}
	if lost {
		// Packets went missing (UDP): the open picture is incomplete, the
		// fragmentation state is stale, and the next picture may lack its
		// head.
		v.damaged, v.needKey = true, true
		v.reset()
	}
	if v.auStarted && ts != v.auTS {
		if au := v.finish(); au != nil {
			done = append(done, timedAU{au, v.auTS})
		}
		v.damaged = lost
	}
	if !v.auStarted {
		v.auStarted, v.auTS = true, ts
	}
	var nalus [][]byte
	var err error
	if v.codec == fmp4.H264 {
		nalus, err = v.h264.unmarshal(pkt.Payload)
	} else {
		nalus, err = v.h265.unmarshal(pkt.Payload)
	}
	if err != nil {
		if !v.damaged {
			return nil, fmt.Errorf("%w: %s RTP payload (seq %d): %w", errMalformed, v.codec, pkt.SequenceNumber, err)
		}
		nalus = nil // a fragment whose start was lost
	}
	for _, n := range nalus {
		if err := v.checkNALU(n); err != nil {
			return nil, err
		}
		if v.setParam(n) || v.isDelimiter(n) {
			continue
		}
		if v.auNALUs >= maxNALUsPerAU {
			return nil, fmt.Errorf("%w: more than %d NAL units in one access unit", errMalformed, maxNALUsPerAU)
		}
		if v.au == nil {
			v.au = v.pool.get()
		}
		v.auNALUs++
		v.pool.grow(v.au, 4+len(n))
		v.au.data = binary.BigEndian.AppendUint32(v.au.data, uint32(len(n)))
		v.au.data = append(v.au.data, n...)
	}
	if pkt.Marker {
		if au := v.finish(); au != nil {
			done = append(done, timedAU{au, v.auTS})
		}
	}
	return done, nil
}

// maxNALUsPerAU bounds an access unit that never ends (no marker, one
// timestamp).
const (
	maxNALUsPerAU   = 1024
	maxPacketsPerAU = 16384 // ~20 MiB at a 1400-byte MTU
)

func (v *videoTrack) checkNALU(n []byte) error {
	if len(n) == 0 || n[0]&0x80 != 0 || (v.codec == fmp4.H265 && len(n) < 2) {
		return fmt.Errorf("%w: %s NAL unit (forbidden bit or too short)", errMalformed, v.codec)
	}
	return nil
}

func (v *videoTrack) isDelimiter(n []byte) bool {
	if v.codec == fmp4.H264 {
		return avc.NALType(n) == avc.NALAUD
	}
	return hevc.NALType(n) == 35
}

func (v *videoTrack) isVCL(n []byte) bool {
	if v.codec == fmp4.H264 {
		t := avc.NALType(n)
		return t >= 1 && t <= 5
	}
	return hevc.NALType(n) < 32
}

// finish closes the open access unit; nil when it is dropped.
func (v *videoTrack) finish() *accessUnit {
	au, damaged := v.au, v.damaged
	v.au, v.auNALUs, v.auStarted, v.damaged, v.auPkts = nil, 0, false, false, 0
	if au == nil {
		return nil
	}
	au.nalus = au.nalus[:0]
	for b := au.data; len(b) >= 4; {
		n := int(binary.BigEndian.Uint32(b))
		au.nalus = append(au.nalus, b[4:4+n])
		b = b[4+n:]
	}
	nalus := au.nalus
	vcl := false
	for _, n := range nalus {
		if v.isVCL(n) {
			vcl = true
			break
		}
	}
	if damaged || !vcl {
		v.drop(au)
		return nil
	}
	var key bool
	if v.codec == fmp4.H264 {
		key = avc.IsKeyframe(nalus)
	} else {
		key = hevc.IsKeyframe(nalus)
	}
	if v.needKey || !v.ready() {
		if !key || !v.ready() {
			v.drop(au)
			return nil
		}
		v.needKey = false
	}
	au.key, au.params = key, v.params
	return au
}

// drop recycles a picture that is not recorded.
func (v *videoTrack) drop(au *accessUnit) { v.pool.put(au) }

// audioTrack holds an AAC or Opus track's parameters.
type audioTrack struct {
	codec    fmp4.Codec
	asc      []byte
	rate     int
	channels int
	frameDur int // samples per frame (AAC 1024; Opus default 960)
	aac      aac.Depacketizer
}

// frames returns the audio frames one RTP packet completes, which start
// at its timestamp ts, one frame apart, and alias the packet or the AAC
// reassembly buffer; and how many frames packet loss cost.
func (a *audioTrack) frames(pkt *rtp.Packet, ts int64) ([][]byte, int, error) {
	if a.codec == fmp4.Opus {
		if len(pkt.Payload) == 0 {
			return nil, 0, fmt.Errorf("%w: empty Opus packet", errMalformed)
		}
		return [][]byte{pkt.Payload}, 0, nil
	}
	aus, lost, err := a.aac.Push(pkt.Payload, ts, pkt.SequenceNumber, pkt.Marker)
	if err != nil {
		return nil, lost, fmt.Errorf("%w: AAC payload (seq %d): %w", errMalformed, pkt.SequenceNumber, err)
	}
	return aus, lost, nil
}

// fmp4Track is t's track description; a video track's holds ps, the
// parameter sets of the segment's pictures.
func (t *track) fmp4Track(id uint32, ps *paramSets) fmp4.Track {
	if v := t.video; v != nil {
		ft := fmp4.Track{ID: id, Codec: v.codec, TimeScale: 90000, VPS: ps.vps, SPS: ps.sps, PPS: ps.pps}
		ft.Width, ft.Height = v.size(ps.sps)
		return ft
	}
	a := t.audio
	return fmp4.Track{ID: id, Codec: a.codec, TimeScale: uint32(a.rate), SampleRate: a.rate, Channels: a.channels, AACConfig: a.asc}
}

// size is the picture size from sps (0, 0 when it does not parse).
func (v *videoTrack) size(sps []byte) (int, int) {
	if v.codec == fmp4.H264 {
		if s, err := avc.ParseSPS(sps); err == nil {
			return s.Width, s.Height
		}
		return 0, 0
	}
	if s, err := hevc.ParseSPS(sps); err == nil {
		return s.Width, s.Height
	}
	return 0, 0
}

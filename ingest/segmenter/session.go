package segmenter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/lease"
	"github.com/vigilcloud/vigil/media/avc"
	"github.com/vigilcloud/vigil/media/fmp4"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/storage"
)

// session records one publishing session (an rtsp.Sink). Its calls never
// overlap (the rtsp contract); the lease renewal and the deletion watch
// run beside them and only end live.
type session struct {
	r      *Recorder
	st     accounts.Stream
	tracks []*track // by media index; nil = not recorded
	log    *slog.Logger

	held      lease.Held
	live      context.Context // ends when the lease is lost or the stream deleted
	stopLive  func()
	backlog   atomic.Int32
	closeOnce sync.Once

	err         error // sticky: the session failed
	floorMS     int64 // a segment must not start before this (what is recorded)
	floorKnown  bool
	nextStartNS int64 // start of the next segment when chained, else 0
	endMS       int64 // end of the last segment cut
	seg         *openSegment
	last        *pendingVideo // newest picture, waiting for its duration
	lastBuf     pendingVideo  // what last points to: one per session, not per picture
	lastDur     int64
	dropToKey   bool                  // a forced cut: skip pictures until a keyframe
	reanchor    bool                  // the video jumped: cut at the first picture after jumpTop
	jumpTop     int64                 // the latest PTS before the jump: later ones are after it
	jumpDrop    bool                  // pictures are reordered (B-frames): cut at the jump, not at a keyframe
	audioQ      map[int][]queuedAudio // by media index
	audioLast   map[int]int64         // RTP time of the newest audio frame queued, by media index
	aboveTier   bool

	run runEnd // where the last segment cut left its decode times
}

// runEnd is where the last segment cut ended in decode time, so that the
// next one, when it follows on with the same parameter sets, runs on
// from it: HLS then plays the session as one run, without a
// discontinuity (and a decoder reset) at every segment.
type runEnd struct {
	params *paramSets
	video  uint64         // video decode time, 90 kHz
	audio  map[int]uint64 // by media index, in the track's timescale; absent: no audio ended there
}

type pendingVideo struct {
	dts, pts int64
	au       *accessUnit
}

// queuedAudio is an audio frame waiting for the video it is placed
// against. It keeps its RTP time, not a wall time: the segment it lands in
// maps that with the clock in force when the segment opened (audioFrag).
type queuedAudio struct {
	dur  int64 // in the track's samples; 0 while unknown
	ts   int64
	data []byte
}

// openSegment is the segment being written.
type openSegment struct {
	sp            *spoolFile
	startNS       int64
	startMS       int64
	d0            int64 // DTS of the first picture
	fragStart     int64 // DTS where the open fragment starts
	seq           uint32
	video         []fmp4.Sample
	videoAUs      []*accessUnit // the pictures whose data video holds, recycled once written
	audio         map[int]*audioFrag
	ids           map[int]uint32 // media index → track id
	width, height int
	params        *paramSets // the video's, in the init section
	videoID       uint32
	videoMediaIdx int
	bufferedBytes int

	base    uint64 // decode time (tfdt) of the first picture: 0, or where the previous segment's run ended
	chained bool   // runs on from the previous segment (base from s.run)
}

type audioFrag struct {
	started bool
	next    uint64 // decode time of the next sample, track timescale
	base    uint64
	samples []fmp4.Sample
	// The track's clock and the wall time of the first picture on the
	// video's, both as they were when the segment opened: a sender report
	// that moves the clocks later places the next segment, as it does for
	// video, so audio queued across it is neither dropped nor placed twice.
	clock  clockMap
	zeroNS int64
}

const (
	videoRate         = 90000
	maxAudioQueue     = 4096
	maxFragmentBytes  = 64 << 20
	defaultFrameTicks = 3600 // 25 fps, for a last picture of unknown length
)

func newSession(r *Recorder, st accounts.Stream, tracks []*track) *session {
	return &session{r: r, st: st, tracks: tracks, log: r.log.With("stream", st.ID), audioQ: map[int][]queuedAudio{}, audioLast: map[int]int64{}}
}

// errStreamDeleted ends the session of a stream deleted while it records.
var errStreamDeleted = errors.New("segmenter: the stream was deleted")

// start begins renewing the publisher lease and watching for the stream's
// deletion; live ends, with the cause, when either stops the recording.
func (s *session) start(held lease.Held) {
	s.held = held
	live, stopRenew := lease.Keep(context.Background(), held, s.r.cfg.LeaseTTL)
	live, stopWatch := context.WithCancelCause(live)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		check := time.NewTicker(s.r.cfg.DeletedCheck)
		defer check.Stop()
		for {
			select {
			case <-live.Done():
				return
			case <-check.C:
				// A registry outage is no reason to stop recording; only a
				// deletion is.
				err := accounts.StillAcceptsData(live, s.r.reg, s.st)
				if errors.Is(err, meter.ErrNotFound) {
					stopWatch(errStreamDeleted)
					return
				}
			}
		}
	}()
	s.live = live
	s.stopLive = func() { stopWatch(nil); <-exited; stopRenew() }
}

// WriteRTP implements rtsp.Sink.
func (s *session) WriteRTP(media int, pkt *rtp.Packet, received time.Time) error {
	if s.err != nil {
		return s.err
	}
	if s.live != nil && s.live.Err() != nil {
		s.err = context.Cause(s.live)
		if !errors.Is(s.err, errStreamDeleted) {
			// Another node may take the stream now: stop recording.
			s.err = fmt.Errorf("segmenter: publisher lease lost: %w", s.err)
		}
		return s.err
	}
	if int(s.backlog.Load()) > s.r.cfg.MaxBacklog {
		s.err = fmt.Errorf("segmenter: %d segments wait for storage; ending the session (they stay spooled)", s.backlog.Load())
		return s.err
	}
	if media < 0 || media >= len(s.tracks) || s.tracks[media] == nil {
		return nil
	}
	t := s.tracks[media]
	top := t.tl.top
	ts, jumped := t.tl.place(t.ts.extend(pkt.Timestamp), s.jumpTicks(t), t.nominalStep())
	switch {
	case !t.clock.set:
		t.clock = clockMap{set: true, rtp: ts, wallNS: received.UnixNano(), rate: int64(t.rate())}
	case jumped:
		s.onJump(media, t, ts, top, received)
	}
	if err := s.writeRTP(media, t, pkt, ts); err != nil {
		s.err = err
		return err
	}
	return nil
}

func (t *track) rate() int {
	if t.video != nil {
		return videoRate
	}
	return t.audio.rate
}

// nominalStep replaces a jump before any ordinary step was seen.
func (t *track) nominalStep() int64 {
	if t.video != nil {
		return defaultFrameTicks
	}
	return int64(t.audio.frameDur)
}

// jumpTicks is the largest step between two packets of t that is elapsed
// time rather than a jump.
func (s *session) jumpTicks(t *track) int64 {
	return int64(s.r.cfg.MaxTimestampJump) * int64(t.rate()) / int64(time.Second)
}

// onJump re-anchors a track whose timestamps jumped (taken out of its
// timeline): on the receive clock, unless sender reports place it (the
// timeline continues on theirs until the next report, which re-anchors it
// as any step does). A video jump cuts the segment at the next keyframe,
// which starts on the re-anchored clock rather than following on; with
// B-frames, already at the jump (the pictures after it cannot be ordered
// against those before), waiting for that keyframe.
func (s *session) onJump(media int, t *track, ts, top int64, received time.Time) {
	s.r.m.jumps.Inc()
	s.log.Warn("segmenter: RTP timestamp jump; cutting the segment and re-anchoring the clock", "media", media,
		"limit", s.r.cfg.MaxTimestampJump, "sender_reports", t.clock.fromSR)
	if !t.clock.fromSR {
		t.clock = clockMap{set: true, noSR: t.clock.noSR, rtp: ts, wallNS: received.UnixNano(), rate: int64(t.rate())}
	}
	if t.video != nil {
		s.reanchor, s.jumpTop, s.jumpDrop = true, top, t.tl.back > 0
	}
}

func (s *session) writeRTP(media int, t *track, pkt *rtp.Packet, ts int64) error {
	if v := t.video; v != nil {
		wasLost := v.seqKnown && pkt.SequenceNumber != v.lastSeq+1
		aus, err := v.push(pkt, ts)
		if wasLost {
			s.r.m.lost.Inc()
		}
		if err != nil {
			return err
		}
		for _, a := range aus {
			for _, f := range v.dts.Push(a.ts, a.au) {
				if err := s.onVideo(media, f); err != nil {
					return err
				}
			}
		}
		return nil
	}
	frames, lost, err := t.audio.frames(pkt, ts)
	if lost > 0 {
		// Packet loss (UDP) cost fragmented AUs: a short silence, not an
		// error.
		s.r.m.audioLost.Add(float64(lost))
		s.log.Info("segmenter: audio frames lost with their packets", "frames", lost, "seq", pkt.SequenceNumber)
	}
	if err != nil {
		return err
	}
	q := s.audioQ[media]
	for i, f := range frames {
		at := ts + int64(i*t.audio.frameDur)
		if last, ok := s.audioLast[media]; ok && at <= last && last-at <= int64(t.audio.rate) {
			// A duplicated or reordered packet (UDP): its frame is there
			// already, or its place has passed. (A jump back of more than
			// a second is the sender's clock, not the network: kept.)
			s.r.m.audioDropped.Inc()
			continue
		}
		s.audioLast[media] = at
		if n := len(q); n > 0 && q[n-1].dur == 0 {
			d := at - q[n-1].ts
			if d <= 0 || d > int64(t.audio.rate) {
				d = int64(t.audio.frameDur) // a jump: keep the nominal length
			}
			q[n-1].dur = d
		}
		// The length comes from the next frame's time, so that a frame
		// lost with its packets leaves a gap rather than pulling what
		// follows early (out of sync with the video).
		q = append(q, queuedAudio{ts: at, data: append([]byte(nil), f...)})
	}
	if len(q) > maxAudioQueue {
		// Audio without video to place it against: keep the newest.
		q = append(q[:0], q[len(q)-maxAudioQueue:]...)
	}
	s.audioQ[media] = q
	return nil
}

// maxClockStep is how far a later sender report must move a track's clock
// to replace it: below that it is jitter.
const maxClockStep = 100 * time.Millisecond

// WriteRTCP implements rtsp.Sink: the first sender report of a track fixes
// its wall clock; a later one that moves it by more than maxClockStep
// replaces it, which places the next segment (openSegment).
func (s *session) WriteRTCP(media int, pkts []rtcp.Packet) {
	if media < 0 || media >= len(s.tracks) || s.tracks[media] == nil {
		return
	}
	t := s.tracks[media]
	for _, p := range pkts {
		sr, ok := p.(*rtcp.SenderReport)
		if !ok || t.clock.noSR {
			continue
		}
		wall := ntpToUnixNS(sr.NTPTime)
		if d := time.Duration(wall - s.r.cfg.Now().UnixNano()); d > time.Hour || d < -time.Hour {
			s.log.Warn("segmenter: sender report clock is off by more than an hour; using the receive clock", "offset", d)
			t.clock.noSR = true // do not ask again
			continue
		}
		rtpTS, ok := t.tl.unjumped(t.ts.at(sr.RTPTime), s.jumpTicks(t))
		if !ok {
			continue // from the other side of a timestamp jump
		}
		m := clockMap{set: true, fromSR: true, rtp: rtpTS, wallNS: wall, rate: int64(t.rate())}
		if t.clock.fromSR {
			step := time.Duration(wall - t.clock.wall(m.rtp))
			if step.Abs() <= maxClockStep {
				continue
			}
			s.log.Info("segmenter: sender report moves the clock", "step", step)
		}
		t.clock = m
	}
}

func ntpToUnixNS(ntp uint64) int64 {
	const ntpToUnix = 2208988800
	sec := int64(ntp>>32) - ntpToUnix
	frac := int64((ntp & 0xffffffff) * 1e9 >> 32)
	return sec*1e9 + frac
}

// onVideo takes the next picture in decode order.
func (s *session) onVideo(media int, f avc.Frame[*accessUnit]) error {
	if s.dropToKey {
		if !f.V.key {
			s.r.aus.put(f.V)
			return nil
		}
		s.dropToKey = false
	}
	if s.seg == nil {
		if !f.V.key {
			s.r.aus.put(f.V)
			return nil
		}
		s.last = s.setLast(f)
		s.takeReanchor(f)
		return s.openSegment(media, f.V, f.DTS)
	}
	if err := s.appendLast(f.DTS - s.last.dts); err != nil {
		return err
	}
	seg := s.seg
	elapsed := f.DTS - seg.d0
	segTicks := int64(s.r.cfg.SegmentDuration) * videoRate / int64(time.Second)
	maxTicks := int64(s.r.cfg.MaxSegmentDuration) * videoRate / int64(time.Second)
	fragTicks := int64(s.r.cfg.FragmentDuration) * videoRate / int64(time.Second)
	switch {
	case f.V.key && (elapsed >= segTicks || !f.V.params.same(seg.params) || s.reanchor && f.PTS > s.jumpTop):
		if err := s.closeSegment(f.DTS); err != nil {
			return err
		}
		s.last = s.setLast(f)
		s.takeReanchor(f)
		return s.openSegment(media, f.V, f.DTS)
	case s.reanchor && s.jumpDrop && f.PTS > s.jumpTop:
		// The first picture after a jump in a stream with B-frames, and no
		// keyframe: its order against the pictures before is lost.
		s.log.Info("segmenter: no keyframe after the timestamp jump; waiting for one")
		s.r.aus.put(f.V)
		s.last = nil
		s.dropToKey = true
		return s.closeSegment(f.DTS)
	case elapsed >= maxTicks:
		// No keyframe for too long: close what is there and wait for one,
		// as a segment must start with a keyframe to play alone.
		s.log.Warn("segmenter: no keyframe within the longest segment; waiting for one", "max", s.r.cfg.MaxSegmentDuration)
		s.r.aus.put(f.V)
		s.last = nil
		s.dropToKey = true
		return s.closeSegment(f.DTS)
	case f.DTS-seg.fragStart >= fragTicks || seg.bufferedBytes > maxFragmentBytes:
		if err := s.flushFragment(f.DTS); err != nil {
			return err
		}
	}
	// A picture after new parameter sets that is no keyframe stays in
	// this segment: the next keyframe (whose sets differ too) cuts.
	s.last = s.setLast(f)
	return nil
}

// takeReanchor: the first keyframe after a timestamp jump opens a segment
// placed by the re-anchored clock (never over what is recorded) instead of
// following on.
func (s *session) takeReanchor(f avc.Frame[*accessUnit]) {
	if s.reanchor && f.PTS > s.jumpTop {
		s.reanchor, s.nextStartNS = false, 0
	}
}

// setLast makes f the pending picture.
func (s *session) setLast(f avc.Frame[*accessUnit]) *pendingVideo {
	s.lastBuf = pendingVideo{dts: f.DTS, pts: f.PTS, au: f.V}
	return &s.lastBuf
}

// appendLast adds the pending picture with duration dur to the fragment.
func (s *session) appendLast(dur int64) error {
	l := s.last
	if l == nil || s.seg == nil {
		return nil
	}
	if dur <= 0 || dur > int64(^uint32(0)>>1) {
		dur = defaultFrameTicks
	}
	s.lastDur = dur
	data := l.au.data // already length-prefixed: the sample as it is
	s.seg.video = append(s.seg.video, fmp4.Sample{Duration: uint32(dur), PTSOffset: int32(l.pts - l.dts), Keyframe: l.au.key, Data: data})
	s.seg.videoAUs = append(s.seg.videoAUs, l.au)
	s.seg.bufferedBytes += len(data)
	s.last = nil
	return nil
}

// openSegment starts a segment at the keyframe first, whose parameter
// sets go into its init section.
func (s *session) openSegment(media int, first *accessUnit, d0 int64) error {
	vt := s.tracks[media]
	startNS := s.nextStartNS
	if w := vt.clock.wall(d0); startNS != 0 && vt.clock.fromSR && w-startNS > int64(maxClockStep) {
		// A sender report moved the clock ahead: a gap. One that moved it
		// back cannot place this segment over the stored one: it follows on.
		startNS = w
	}
	if startNS == 0 {
		startNS = vt.clock.wall(d0)
		if !s.floorKnown {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s.floorMS = s.r.recordedEnd(ctx, s.st, startNS/1e6)
			cancel()
			s.floorKnown = true
		}
		if floor := max(s.floorMS, s.endMS) * 1e6; startNS < floor {
			// A reconnect (or a clock behind what is recorded): continue
			// where the recording ends, never overlap it.
			startNS = floor
		}
	}
	seg := &openSegment{startNS: startNS, startMS: startNS / 1e6, d0: d0, fragStart: d0,
		audio: map[int]*audioFrag{}, ids: map[int]uint32{}, videoMediaIdx: media, params: first.params}
	// A segment placed where the last one ended, with its parameter sets,
	// continues its decode times; after a gap, a jump or a new init
	// section a new run starts at zero.
	if s.nextStartNS != 0 && startNS == s.nextStartNS && s.run.params != nil && first.params.same(s.run.params) {
		seg.base, seg.chained = s.run.video, true
	}
	var tracks []fmp4.Track
	id := uint32(1)
	seg.ids[media] = id
	seg.videoID = id
	vtr := vt.fmp4Track(id, first.params)
	seg.width, seg.height = vtr.Width, vtr.Height
	tracks = append(tracks, vtr)
	for i, t := range s.tracks {
		if t == nil || t.audio == nil {
			continue
		}
		id++
		seg.ids[i] = id
		seg.audio[i] = &audioFrag{clock: t.clock, zeroNS: vt.clock.wall(d0)}
		tracks = append(tracks, t.fmp4Track(id, nil))
	}
	path := s.r.spoolPath(s.st.ID, seg.startMS)
	s.r.setOwned(path, true)
	sp, err := createSpool(path, tracks)
	if err != nil {
		s.r.setOwned(path, false)
		return err
	}
	seg.sp = sp
	s.seg = seg
	s.r.cfg.Live.Open(s.st.ID, seg.startMS, sp.init)
	s.noteTier(seg.width, seg.height)
	return nil
}

// noteTier keeps the "observed tier above configured" gauge.
func (s *session) noteTier(w, h int) {
	above := w > 0 && h > 0 && w*h > s.st.Width*s.st.Height && accounts.Tier(w, h) != accounts.Tier(s.st.Width, s.st.Height)
	if above != s.aboveTier {
		if above {
			s.r.m.aboveTier.Inc()
			s.log.Warn("segmenter: observed resolution tier above the configured one", "observed", fmt.Sprintf("%dx%d", w, h),
				"observed_tier", accounts.Tier(w, h), "configured_tier", accounts.Tier(s.st.Width, s.st.Height))
		} else {
			s.r.m.aboveTier.Dec()
		}
		s.aboveTier = above
	}
}

// audioStart is the decode time of a segment's first audio sample of
// media index i, off samples after its first picture: on the run's time
// line, exactly where the previous segment's audio ended when it follows
// on from it (within half a frame of rounding), and never before that
// (a sender report that moved the audio clock back): decode times only
// rise within a run.
func (seg *openSegment) audioStart(i int, off uint64, rate, frameDur int, run runEnd) uint64 {
	at := off + seg.base*uint64(rate)/videoRate
	prev, ok := run.audio[i]
	if !seg.chained || !ok {
		return at
	}
	if at < prev || at-prev <= uint64(frameDur)/2 {
		return prev
	}
	return at
}

// wallOf is the wall clock (ns) of a video DTS within the open segment.
func (seg *openSegment) wallOf(dts int64) int64 {
	return seg.startNS + (dts-seg.d0)*1e9/videoRate
}

// flushFragment writes the open fragment, which ends at video DTS end,
// with the audio before that instant.
func (s *session) flushFragment(end int64) error {
	seg := s.seg
	if len(seg.video) == 0 {
		return nil
	}
	frag := fmp4.Fragment{SequenceNumber: seg.seq + 1}
	frag.Tracks = append(frag.Tracks, fmp4.TrackFragment{TrackID: seg.videoID, BaseDecodeTime: seg.base + uint64(seg.fragStart-seg.d0), Samples: seg.video})
	for i, af := range seg.audio {
		t := s.tracks[i].audio
		q := s.audioQ[i]
		if !af.clock.set { // no audio had come when the segment opened
			af.clock = s.tracks[i].clock
		}
		// Audio goes with the video up to end, measured from the first
		// picture on the same clocks.
		endWall := af.zeroNS + (end-seg.d0)*1e9/videoRate
		n := 0
		for ; n < len(q) && af.clock.wall(q[n].ts) < endWall && q[n].dur > 0; n++ {
			a := q[n]
			if !af.started {
				off := (af.clock.wall(a.ts) - af.zeroNS) * int64(t.rate) / 1e9
				if off < 0 {
					continue // before the segment's first picture
				}
				af.started, af.next = true, seg.audioStart(i, uint64(off), t.rate, t.frameDur, s.run)
			}
			if len(af.samples) == 0 {
				af.base = af.next
			}
			af.samples = append(af.samples, fmp4.Sample{Duration: uint32(a.dur), Keyframe: true, Data: a.data})
			af.next += uint64(a.dur)
		}
		s.audioQ[i] = append(q[:0], q[n:]...)
		if len(af.samples) > 0 {
			frag.Tracks = append(frag.Tracks, fmp4.TrackFragment{TrackID: seg.ids[i], BaseDecodeTime: af.base, Samples: af.samples})
		}
	}
	durMS := (seg.wallOf(end) - seg.startNS) / 1e6
	partDur := time.Duration((end - seg.fragStart) * 1e9 / videoRate)
	independent := seg.video[0].Keyframe
	seg.sp.tap = func(pieces [][]byte) { s.r.cfg.Live.Part(s.st.ID, seg.startMS, pieces, partDur, independent) }
	if err := seg.sp.writeFragment(frag, durMS); err != nil {
		return err
	}
	seg.seq++
	// Written: the pictures' buffers serve the next ones.
	for i, au := range seg.videoAUs {
		s.r.aus.put(au)
		seg.videoAUs[i] = nil
	}
	clear(seg.video)
	seg.video, seg.videoAUs, seg.fragStart, seg.bufferedBytes = seg.video[:0], seg.videoAUs[:0], end, 0
	for _, af := range seg.audio {
		af.samples = nil
	}
	return nil
}

// closeSegment ends the open segment at video DTS end and hands it to the
// uploader; the next segment continues exactly where it ends.
func (s *session) closeSegment(end int64) error {
	seg := s.seg
	if seg == nil {
		return nil
	}
	err := s.flushFragment(end)
	s.seg = nil
	endNS := seg.wallOf(end)
	endMS := endNS / 1e6
	if err != nil || seg.sp.frags == 0 || endMS <= seg.startMS {
		seg.sp.f.Close()
		removeSpool(seg.sp.path)
		s.r.setOwned(seg.sp.path, false)
		if err != nil {
			return err
		}
		return nil
	}
	s.nextStartNS, s.endMS = endNS, endMS
	s.r.cfg.Live.Close(s.st.ID, seg.startMS, endMS-seg.startMS)
	s.run = runEnd{params: seg.params, video: seg.base + uint64(end-seg.d0), audio: map[int]uint64{}}
	for i, af := range seg.audio {
		if af.started {
			s.run.audio[i] = af.next
		}
	}
	if s.aboveTier {
		s.r.m.aboveTierSegs.Inc()
	}
	s.backlog.Add(1)
	s.r.enqueue(uploadJob{path: seg.sp.path, f: seg.sp.f, stream: s.st.ID, registered: s.st.RegisteredAt,
		seg:    index.Segment{Start: seg.startMS, DurationMS: endMS - seg.startMS, Width: seg.width, Height: seg.height},
		offset: storage.SpoolHeadroom, size: seg.sp.size, sha256: seg.sp.sum(),
		done: func() { s.backlog.Add(-1) }})
	return nil
}

// Close implements rtsp.Sink: everything received is cut into a last
// segment and stored.
func (s *session) Close(reason error) {
	s.closeOnce.Do(func() { s.close(reason) })
}

func (s *session) close(reason error) {
	if s.stopLive != nil {
		s.stopLive()
	}
	if s.err == nil {
		s.finish()
	}
	if s.seg != nil { // a failed session: keep its complete fragments
		s.seg.video = nil
		for _, af := range s.seg.audio {
			af.samples = nil
		}
		seg := s.seg
		s.seg = nil
		sp := spooled{offset: storage.SpoolHeadroom, size: seg.sp.size, durationMS: seg.sp.durationMS}
		err := errNoFragment
		if seg.sp.frags > 0 && sp.durationMS > 0 {
			err = cutSpool(seg.sp.path, sp) // a torn last fragment goes
		}
		if err == nil {
			s.backlog.Add(1)
			s.endMS = seg.startMS + sp.durationMS
			s.r.cfg.Live.Close(s.st.ID, seg.startMS, sp.durationMS)
			s.r.enqueue(uploadJob{path: seg.sp.path, f: seg.sp.f, stream: s.st.ID, registered: s.st.RegisteredAt,
				seg:    index.Segment{Start: seg.startMS, DurationMS: sp.durationMS, Width: seg.width, Height: seg.height},
				offset: sp.offset, size: sp.size, sha256: seg.sp.sum(),
				done: func() { s.backlog.Add(-1) }})
		} else {
			if !errors.Is(err, errNoFragment) {
				s.log.Warn("segmenter: failed session's segment not kept", "err", err)
			}
			seg.sp.f.Close()
			removeSpool(seg.sp.path)
			s.r.setOwned(seg.sp.path, false)
		}
	}
	if s.held != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.held.Release(ctx); err != nil {
			s.log.Warn("segmenter: lease release", "err", err)
		}
		cancel()
	}
	s.r.cfg.Live.End(s.st.ID)
	if s.aboveTier {
		s.r.m.aboveTier.Dec()
	}
	s.r.release(s, s.endMS)
	why := "teardown"
	switch {
	case s.err != nil:
		why = "error"
		s.log.Warn("segmenter: session ended by an error", "err", s.err, "reason", reason)
	case reason != nil:
		why = "disconnect"
		s.log.Info("segmenter: session ended", "reason", reason)
	default:
		s.log.Info("segmenter: session torn down")
	}
	s.r.m.closed.WithLabelValues(why).Inc()
}

// finish flushes the reorder buffer and closes the last segment.
func (s *session) finish() {
	for i, t := range s.tracks {
		if t == nil || t.video == nil {
			continue
		}
		for _, f := range t.video.dts.Flush() {
			if err := s.onVideo(i, f); err != nil {
				s.err = err
				return
			}
		}
	}
	if s.last != nil && s.seg != nil {
		end := s.last.dts + max(s.lastDur, 1)
		if s.lastDur == 0 {
			end = s.last.dts + defaultFrameTicks
		}
		if err := s.appendLast(end - s.last.dts); err != nil {
			s.err = err
			return
		}
		for i, q := range s.audioQ { // the last audio frame's length is nominal
			if n := len(q); n > 0 && q[n-1].dur == 0 {
				q[n-1].dur = int64(s.tracks[i].audio.frameDur)
			}
		}
		if err := s.closeSegment(end); err != nil {
			s.err = err
		}
	}
}

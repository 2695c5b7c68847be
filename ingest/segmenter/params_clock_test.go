package segmenter

import (
	"encoding/binary"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtcp"

	"github.com/vigilcloud/vigil/index"
	vtestutil "github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/media/fmp4"
)

// h264Source encodes seconds of testsrc2 at size with libx264, one
// keyframe a second, no B-frames.
func h264Source(t *testing.T, size string, seconds int) *source {
	t.Helper()
	return makeSource(t, "-f", "lavfi", "-i", "testsrc2=size="+size+":rate=25", "-t", strconv.Itoa(seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g", "25")
}

// concatWithNewParams is a followed by b on one RTP timeline, with b's
// SPS/PPS sent in band before its first keyframe (as a camera changing
// resolution does); the SDP keeps a's parameter sets.
func concatWithNewParams(a, b *source) *source {
	out := &source{tracks: a.tracks[:1], samples: [][]srcSample{append([]srcSample(nil), a.samples[0]...)}}
	last := a.samples[0][len(a.samples[0])-1]
	off := last.dts + 3600 // 25 fps
	for i, s := range b.samples[0] {
		s.dts, s.pts = s.dts+off, s.pts+off
		if i == 0 {
			s.data = withParams(b.tracks[0], s.data)
		}
		out.samples[0] = append(out.samples[0], s)
	}
	return out
}

// withParams is the picture data with tr's SPS and PPS before it.
func withParams(tr fmp4.Track, data []byte) []byte {
	var d []byte
	for _, ps := range [][]byte{tr.SPS, tr.PPS} {
		d = binary.BigEndian.AppendUint32(d, uint32(len(ps)))
		d = append(d, ps...)
	}
	return append(d, data...)
}

// packetCount is the number of video packets ffprobe reads in path.
func packetCount(t *testing.T, path string) int {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", path).CombinedOutput()
	n, perr := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || perr != nil {
		t.Fatalf("ffprobe -count_packets %s: %v %v\n%s", path, err, perr, out)
	}
	return n
}

// TestParameterChangeStartsSegment: in-band SPS/PPS of another size at a
// keyframe cut a segment exactly there; both halves play alone with their
// own size, and the recording stays contiguous.
func TestParameterChangeStartsSegment(t *testing.T) {
	vtestutil.RequireBinary(t, "ffprobe")
	small, big := h264Source(t, "320x240", 3), h264Source(t, "640x360", 2)
	src := concatWithNewParams(small, big)
	g := newRig(t, time.Minute) // no cut by duration: only the change cuts
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	publish(t, g, "cam1-main", src, t0, src.packets()).Close(nil)
	g.rec.uploads.Wait()

	segs := g.segments(t, "cam1-main")
	if len(segs) != 2 {
		t.Fatalf("%d segments, want 2 (cut at the parameter change): %+v", len(segs), segs)
	}
	checkContiguous(t, segs)
	if segs[0].Start != t0.UnixMilli() {
		t.Errorf("first segment starts at %d, want %d", segs[0].Start, t0.UnixMilli())
	}
	// The change is at RTP time 3 s: 75 pictures of 320x240, then 50 of 640x360.
	if segs[1].Start != t0.UnixMilli()+3000 {
		t.Errorf("second segment starts %d ms after the first packet, want 3000 (the change)", segs[1].Start-t0.UnixMilli())
	}
	for i, want := range []struct {
		w, h, frames int
		durMS        int64
	}{{320, 240, 75, 3000}, {640, 360, 50, 2000}} {
		s := segs[i]
		if s.Width != want.w || s.Height != want.h {
			t.Errorf("segment %d indexed as %dx%d, want %dx%d", i, s.Width, s.Height, want.w, want.h)
		}
		if s.DurationMS != want.durMS {
			t.Errorf("segment %d: %d ms, want %d", i, s.DurationMS, want.durMS)
		}
		p := g.segmentFile(t, "cam1-main", s)
		_, info := probe(t, p) // ffprobe clean, and every frame decodes
		if !strings.Contains(info, "width="+strconv.Itoa(want.w)) || !strings.Contains(info, "height="+strconv.Itoa(want.h)) {
			t.Errorf("segment %d: ffprobe says\n%s\nwant %dx%d", i, info, want.w, want.h)
		}
		if n := packetCount(t, p); n != want.frames {
			t.Errorf("segment %d holds %d pictures, want %d", i, n, want.frames)
		}
	}
}

// TestRepeatedParamsDoNotCut: cameras resend the same SPS/PPS in band
// before every keyframe; that is no change and cuts nothing.
func TestRepeatedParamsDoNotCut(t *testing.T) {
	vtestutil.RequireBinary(t, "ffprobe")
	src := h264Source(t, "320x240", 3)
	for i, s := range src.samples[0] {
		if s.key {
			src.samples[0][i].data = withParams(src.tracks[0], s.data)
		}
	}
	g := newRig(t, time.Minute)
	publish(t, g, "cam1-main", src, time.Now().Add(-time.Minute), src.packets()).Close(nil)
	g.rec.uploads.Wait()
	segs := g.segments(t, "cam1-main")
	if len(segs) != 1 || segs[0].DurationMS != 3000 {
		t.Fatalf("segments %+v, want one of 3000 ms", segs)
	}
	probe(t, g.segmentFile(t, "cam1-main", segs[0]))
}

// unixToNTP is t as a 64-bit NTP timestamp.
func unixToNTP(t time.Time) uint64 {
	const ntpToUnix = 2208988800
	sec := uint64(t.Unix() + ntpToUnix)
	frac := (uint64(t.Nanosecond())<<32 + 1e9 - 1) / 1e9 // rounded up: reads back to the same ns
	return sec<<32 | frac
}

// sr is a sender report sent before a packet: it maps that packet's RTP
// time plus rtpDelta to wall.
type sr struct {
	rtpDelta uint32
	wall     time.Time
}

// publishWithSR publishes src (first packet received at t0), sending the
// sender reports in srs before the packets they are keyed by (index in
// send order), and returns the stored segments, each checked by ffprobe
// and none overlapping the one before.
func publishWithSR(t *testing.T, g *rig, src *source, t0 time.Time, srs map[int]sr) []index.Segment {
	t.Helper()
	sink, err := g.rec.Announce(t.Context(), "br1", "cam1-main", src.medias())
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range src.packets() {
		if r, ok := srs[i]; ok {
			sink.WriteRTCP(p.media, []rtcp.Packet{&rtcp.SenderReport{SSRC: 1, RTPTime: p.pkt.Timestamp + r.rtpDelta, NTPTime: unixToNTP(r.wall)}})
		}
		if err := sink.WriteRTP(p.media, p.pkt, t0.Add(time.Duration(p.at*float64(time.Second)))); err != nil {
			t.Fatalf("WriteRTP: %v", err)
		}
	}
	sink.Close(nil)
	g.rec.uploads.Wait()
	segs := g.segments(t, "cam1-main")
	if len(segs) == 0 {
		t.Fatal("nothing recorded")
	}
	for i, s := range segs {
		probe(t, g.segmentFile(t, "cam1-main", s))
		if i > 0 && s.Start < segs[i-1].End() {
			t.Errorf("segment %d starts at %d, before the previous one ends (%d)", i, s.Start, segs[i-1].End())
		}
	}
	return segs
}

// TestWallClockFromSenderReport: a sender report's NTP time places the
// recording, not the receive time; without one (or with one off by more
// than an hour from the server clock) the receive clock does.
func TestWallClockFromSenderReport(t *testing.T) {
	vtestutil.RequireBinary(t, "ffprobe")
	src := h264Source(t, "320x240", 2)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	// The camera's clock says the first picture was taken 30 min before
	// it arrived (a delayed upload), to the microsecond; its report maps
	// the RTP time 0.1 s after the first picture.
	camera := t0.Add(-30*time.Minute + 123456*time.Microsecond)
	for _, c := range []struct {
		name string
		srs  map[int]sr
		want time.Time
	}{
		{"sender report", map[int]sr{0: {9000, camera.Add(100 * time.Millisecond)}}, camera},
		{"no sender report", nil, t0},
		{"sender report off by hours", map[int]sr{0: {9000, t0.Add(-3 * time.Hour)}}, t0},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := newRig(t, time.Minute)
			segs := publishWithSR(t, g, src, t0, c.srs)
			if len(segs) != 1 {
				t.Fatalf("%d segments: %+v", len(segs), segs)
			}
			if segs[0].Start != c.want.UnixMilli() {
				t.Errorf("segment starts at %s, want %s (off by %d ms)", time.UnixMilli(segs[0].Start).UTC(), c.want.UTC(), segs[0].Start-c.want.UnixMilli())
			}
			if segs[0].DurationMS != 2000 {
				t.Errorf("segment of %d ms, want 2000", segs[0].DurationMS)
			}
		})
	}
}

// TestSenderReportStep: a later sender report that moves the clock by more
// than maxClockStep re-anchors the recording at the next segment boundary:
// forward leaves a gap, backward cannot go back over what is stored (the
// recording stays contiguous), and jitter below the step changes nothing.
func TestSenderReportStep(t *testing.T) {
	vtestutil.RequireBinary(t, "ffprobe")
	src := h264Source(t, "320x240", 4)
	pkts := src.packets()
	k := 0 // the first packet 1.5 s in, inside the second segment
	for pkts[k].at < 1.5 {
		k++
	}
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	camera := t0.Add(-30 * time.Minute)
	at := func(sec float64) int64 { return camera.Add(time.Duration(sec * float64(time.Second))).UnixMilli() }
	rx := func(sec float64) int64 { return t0.Add(time.Duration(sec * float64(time.Second))).UnixMilli() }
	for _, c := range []struct {
		name   string
		first  bool // a sender report before the first packet
		step   time.Duration
		starts []int64
	}{
		{"forward", true, 500 * time.Millisecond, []int64{at(0), at(1), at(2.5), at(3.5)}},
		{"backward", true, -300 * time.Millisecond, []int64{at(0), at(1), at(2), at(3)}},
		{"jitter", true, 50 * time.Millisecond, []int64{at(0), at(1), at(2), at(3)}},
		// The first report comes after recording began on the receive
		// clock, and the camera's clock is ahead of it.
		{"late first report ahead", false, 30*time.Minute + 700*time.Millisecond, []int64{rx(0), rx(1), rx(2.7), rx(3.7)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := newRig(t, time.Second)
			later := camera.Add(time.Duration(pkts[k].at*float64(time.Second)) + c.step)
			srs := map[int]sr{k: {0, later}}
			if c.first {
				srs[0] = sr{0, camera}
			}
			segs := publishWithSR(t, g, src, t0, srs)
			var starts []int64
			for _, s := range segs {
				starts = append(starts, s.Start)
				if s.DurationMS != 1000 {
					t.Errorf("segment at %d: %d ms, want 1000", s.Start, s.DurationMS)
				}
			}
			if !slices.Equal(starts, c.starts) {
				t.Errorf("segments start at %v, want %v", starts, c.starts)
			}
		})
	}
}

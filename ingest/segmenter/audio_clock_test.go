package segmenter

import (
	"testing"
	"time"

	"github.com/pion/rtcp"

	vtestutil "github.com/vigilcloud/vigil/internal/testutil"
)

// TestAudioAcrossSenderReportStep: sender reports on both tracks move the
// camera's clock 0.5 s forward 1.5 s in, then 0.3 s back 2.5 s in, while
// audio waits in the queue for the video it is placed against. Every
// audio frame sent between the first picture and the last is stored once,
// byte for byte, in order; within each segment decode times rise and each
// frame sits at its time after the segment's first picture; every segment
// decodes cleanly.
func TestAudioAcrossSenderReportStep(t *testing.T) {
	vtestutil.RequireBinary(t, "ffprobe")
	src := avSource(t, "4")
	g := newRig(t, time.Second)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	camera := t0.Add(-30 * time.Minute)
	steps := []struct {
		at   float64
		step time.Duration
	}{{0, 0}, {1.5, 500 * time.Millisecond}, {2.5, 200 * time.Millisecond}} // 0.5 s forward, then 0.3 s back
	sent := make([][]bool, len(steps)) // by step, by media
	sink, err := g.rec.Announce(t.Context(), "br1", "cam1-main", src.medias())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range fragmentedAudioPackets(src, 1400, nil) {
		for i, s := range steps {
			if sent[i] == nil {
				sent[i] = make([]bool, 2)
			}
			if p.at >= s.at && !sent[i][p.media] {
				// This packet's RTP time on the camera's clock, moved by the step.
				wall := camera.Add(time.Duration(p.at*float64(time.Second)) + s.step)
				sink.WriteRTCP(p.media, []rtcp.Packet{&rtcp.SenderReport{SSRC: 1, RTPTime: p.pkt.Timestamp, NTPTime: unixToNTP(wall)}})
				sent[i][p.media] = true
			}
		}
		if err := sink.WriteRTP(p.media, p.pkt, t0.Add(time.Duration(p.at*float64(time.Second)))); err != nil {
			t.Fatalf("WriteRTP: %v", err)
		}
	}
	sink.Close(nil)
	g.rec.uploads.Wait()
	segs := g.segments(t, "cam1-main")
	for i := 1; i < len(segs); i++ {
		if segs[i].Start < segs[i-1].End() {
			t.Errorf("segment %d starts at %d, before the previous one ends (%d)", i, segs[i].Start, segs[i-1].End())
		}
	}
	// The forward step leaves a gap of 0.5 s at the next segment.
	if len(segs) < 4 || segs[2].Start-segs[1].End() != 500 {
		t.Errorf("segments %+v: want a 500 ms gap before the third", segs)
	}
	// The gap starts a new decode-time run; the step back does not (the
	// segments follow on), and every track's times run on across it.
	if runs := runsOf(t, g, "cam1-main", segs); len(runs) != 2 || runs[0] != 2 {
		t.Errorf("decode-time runs of %v segments, want 2, then the rest", runs)
	}
	if n := checkStoredAudio(t, g, src, nil); n < 180 {
		t.Errorf("%d audio frames stored of 4 s", n)
	}
}

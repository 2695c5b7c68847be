package segmenter

import (
	"slices"
	"strings"
	"testing"
	"time"

	vtestutil "github.com/vigilcloud/vigil/internal/testutil"
)

// TestTimestampJump: the publisher's RTP timestamps jump by ±2·10⁹ ticks
// after picture 110 (4.4 s), as an encoder restart does, and its packets
// arrive 3 s later than the old timeline says (the restart took that
// long). The jump cuts the segment at the next keyframe (5 s), no picture
// is lost, no segment is longer than the recorder's limit, and the
// segments after it are placed by the re-anchored receive clock, not
// hours away on the old one.
func TestTimestampJump(t *testing.T) {
	vtestutil.RequireBinary(t, "ffprobe")
	src := h264Source(t, "320x240", 8) // keyframe every second, no B-frames
	for _, c := range []struct {
		name string
		step uint32
	}{
		{"forward", 2_000_000_000},
		{"backward", 1<<32 - 2_000_000_000},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := newRig(t, 2*time.Second)
			t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
			pkts := src.packets()
			for i, p := range pkts {
				if p.at >= 4.4-1e-9 {
					q := *p.pkt
					q.Timestamp += c.step
					pkts[i].pkt, pkts[i].at = &q, p.at+3
				}
			}
			publish(t, g, "cam1-main", src, t0, pkts).Close(nil)
			waitUploads(t, g.rec, 20*time.Second)
			segs := g.segments(t, "cam1-main")
			var starts, durs []int64
			var total int64
			for i, s := range segs {
				starts, durs = append(starts, s.Start-t0.UnixMilli()), append(durs, s.DurationMS)
				total += s.DurationMS
				if s.DurationMS > g.rec.cfg.MaxSegmentDuration.Milliseconds() {
					t.Errorf("segment %d: %d ms, longer than the %s limit", i, s.DurationMS, g.rec.cfg.MaxSegmentDuration)
				}
				if s.Start > time.Now().UnixMilli() {
					t.Errorf("segment %d starts %s in the future", i, time.Until(time.UnixMilli(s.Start)))
				}
				if i > 0 && s.Start < segs[i-1].End() {
					t.Errorf("segment %d starts at %d, before the previous one ends (%d)", i, s.Start, segs[i-1].End())
				}
			}
			if total != 8000 {
				t.Errorf("%d ms recorded, want the 8000 ms sent", total)
			}
			// Cut at 2 and 4 s, at the first keyframe after the jump (5 s,
			// received at 8 s), then every 2 s from there.
			if want := []int64{0, 2000, 4000, 8000, 10000}; !slices.Equal(starts, want) {
				t.Errorf("segments start at %v ms (durations %v), want %v", starts, durs, want)
			}
			for _, s := range segs {
				probe(t, g.segmentFile(t, "cam1-main", s))
			}
			if v := value(g.rec.m.jumps); v != 1 {
				t.Errorf("vigil_recorder_rtp_timestamp_jumps_total %v, want 1", v)
			}
		})
	}
}

// waitUploads waits for the uploads in flight, failing the test (instead
// of hanging) when one is still retried after d.
func waitUploads(t *testing.T, r *Recorder, d time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { r.uploads.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("segments still not stored after %s: backlog %v, retries %v", d, value(r.m.backlog), value(r.m.retries))
	}
}

// TestTimestampJumpWithBFramesAndAudio: video with B-frames and AAC both
// jump (+2·10⁹ ticks) 3.3 s in, mid-GOP, arriving 3 s late. The pictures
// from the jump to the next keyframe (4 s) cannot be ordered against those
// before it, so the segment ends at the jump and the next starts at that
// keyframe; every segment plays (ffmpeg decodes every frame) with its
// audio, none is too long, and the recording after the jump is placed 3 s
// later by the receive clock.
func TestTimestampJumpWithBFramesAndAudio(t *testing.T) {
	vtestutil.RequireBinary(t, "ffprobe")
	src := bframeAACSource(t, "7")
	g := newRig(t, 2*time.Second)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	pkts := src.packets()
	jumpAt(pkts, 3.3, 2_000_000_000, 3)
	publish(t, g, "cam1-main", src, t0, pkts).Close(nil)
	waitUploads(t, g.rec, 20*time.Second)
	segs := g.segments(t, "cam1-main")
	if len(segs) < 3 {
		t.Fatalf("%d segments: %+v", len(segs), segs)
	}
	var total int64
	for i, s := range segs {
		total += s.DurationMS
		if s.DurationMS > g.rec.cfg.MaxSegmentDuration.Milliseconds() {
			t.Errorf("segment %d: %d ms, longer than the %s limit", i, s.DurationMS, g.rec.cfg.MaxSegmentDuration)
		}
		if i > 0 && s.Start < segs[i-1].End() {
			t.Errorf("segment %d starts at %d, before the previous one ends (%d)", i, s.Start, segs[i-1].End())
		}
		dur, info := probe(t, g.segmentFile(t, "cam1-main", s))
		if d := dur*1000 - float64(s.DurationMS); d < -300 || d > 300 {
			t.Errorf("segment %d: ffprobe %.3f s, index %d ms", i, dur, s.DurationMS)
		}
		if !strings.Contains(info, "codec_name=aac") {
			t.Errorf("segment %d without its audio:\n%s", i, info)
		}
	}
	if total < 6200 || total > 6700 {
		t.Errorf("recorded %d ms of 7 s, want about 6.3 s (the 0.7 s from the jump to the keyframe dropped)", total)
	}
	if end := segs[len(segs)-1].End() - t0.UnixMilli(); end < 9700 || end > 10300 {
		t.Errorf("the recording ends %d ms after the first packet, want about 10000 (7 s sent, 3 s late after the jump)", end)
	}
	if v := value(g.rec.m.jumps); v != 2 {
		t.Errorf("vigil_recorder_rtp_timestamp_jumps_total %v, want 2 (video and audio)", v)
	}
}

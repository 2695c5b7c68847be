package segmenter

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/index"
	vtestutil "github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/media/fmp4"
)

// span is where one track of a stored segment starts and ends in decode
// time (its timescale).
type span struct{ start, end uint64 }

// decodeSpans reads each track's span in the segment file at path.
func decodeSpans(t *testing.T, path string) map[uint32]span {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := fmp4.NewReader(f)
	if _, _, err := r.ReadInit(); err != nil {
		t.Fatal(err)
	}
	spans := map[uint32]span{}
	for {
		fr, err := r.NextFragment()
		if err != nil {
			break
		}
		for _, tf := range fr.Tracks {
			sp, ok := spans[tf.TrackID]
			if !ok {
				sp.start = tf.BaseDecodeTime
			} else if tf.BaseDecodeTime != sp.end {
				t.Errorf("%s: track %d fragment at %d, the one before ends at %d", path, tf.TrackID, tf.BaseDecodeTime, sp.end)
			}
			sp.end = tf.BaseDecodeTime
			for _, s := range tf.Samples {
				sp.end += uint64(s.Duration)
			}
			spans[tf.TrackID] = sp
		}
	}
	return spans
}

// runsOf groups the stored segments of stream by their decode times: a
// segment that starts where the one before ended (every track) joins its
// run; one whose video (track 1) starts at zero opens a run. Anything
// else is an error.
func runsOf(t *testing.T, g *rig, stream string, segs []index.Segment) []int {
	t.Helper()
	var runs []int
	var prev map[uint32]span
	for i, s := range segs {
		spans := decodeSpans(t, g.segmentFile(t, stream, s))
		joined, fresh := prev != nil, spans[1].start == 0
		for id, sp := range spans {
			if p, ok := prev[id]; !ok || p.end != sp.start {
				joined = false
			}
		}
		switch {
		case joined:
			runs[len(runs)-1]++
		case fresh:
			runs = append(runs, 1)
		default:
			t.Errorf("segment %d (%+v) neither runs on from %+v nor starts at zero", i, spans, prev)
			runs = append(runs, 1)
		}
		if joined && s.Head.Init != segs[i-1].Head.Init {
			t.Errorf("segment %d runs on with another init section", i)
		}
		prev = spans
	}
	return runs
}

// bframeAACSource is secs s of 320x240 H.264 with B-frames, a keyframe
// every second, and 48-kHz AAC.
func bframeAACSource(t *testing.T, secs string) *source {
	return makeSource(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", secs, "-c:v", "libx264", "-preset", "ultrafast", "-bf", "3", "-g", "25", "-c:a", "aac", "-b:a", "64k")
}

// jumpAt moves the RTP timestamps of the packets from at s on by step
// (an encoder restart), and their arrival late s later.
func jumpAt(pkts []rtpPkt, at float64, step uint32, late float64) {
	for i, p := range pkts {
		if p.at >= at-1e-9 {
			q := *p.pkt
			q.Timestamp += step
			pkts[i].pkt, pkts[i].at = &q, p.at+late
		}
	}
}

// recordedRuns publishes each of pkts as a session of its own (the k-th
// 4 s after the (k-1)-th) into a recorder cutting every segDur, and
// returns the decode-time runs of what it stored (runsOf).
func recordedRuns(t *testing.T, src *source, segDur time.Duration, pkts ...[]rtpPkt) ([]int, []index.Segment) {
	t.Helper()
	g := newRig(t, segDur)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	for k, p := range pkts {
		publish(t, g, "cam1-main", src, t0.Add(time.Duration(k)*4*time.Second), p).Close(nil)
		waitUploads(t, g.rec, 20*time.Second)
	}
	segs := g.segments(t, "cam1-main")
	return runsOf(t, g, "cam1-main", segs), segs
}

// TestSessionDecodeTimesRunOn: the segments of one session, video with
// B-frames and AAC, carry decode times that run on from one to the next
// in every track, exactly, so that HLS plays them as one run; each
// still plays alone.
func TestSessionDecodeTimesRunOn(t *testing.T) {
	vtestutil.RequireBinary(t, "ffprobe")
	src := bframeAACSource(t, "7")
	runs, segs := recordedRuns(t, src, 2*time.Second, src.packets())
	if len(segs) < 3 {
		t.Fatalf("%d segments: %+v", len(segs), segs)
	}
	checkContiguous(t, segs)
	if fmt.Sprint(runs) != fmt.Sprint([]int{len(segs)}) {
		t.Errorf("decode-time runs of %v segments, want one of %d", runs, len(segs))
	}
}

// TestNewRunAfterChange: a parameter change, a timestamp jump and a new
// session each start a new run at zero.
func TestNewRunAfterChange(t *testing.T) {
	vtestutil.RequireBinary(t, "ffprobe")
	for _, c := range []struct {
		name   string
		src    func(t *testing.T) (*source, [][]rtpPkt)
		segDur time.Duration
		want   string
	}{
		{"parameter change", func(t *testing.T) (*source, [][]rtpPkt) {
			src := concatWithNewParams(h264Source(t, "320x240", 3), h264Source(t, "640x360", 2))
			return src, [][]rtpPkt{src.packets()}
		}, time.Second, "[3 2]"}, // cut every second: three small segments, two big
		{"timestamp jump", func(t *testing.T) (*source, [][]rtpPkt) {
			src := h264Source(t, "320x240", 8)
			pkts := src.packets()
			jumpAt(pkts, 4.4, 2_000_000_000, 3)
			return src, [][]rtpPkt{pkts}
		}, 2 * time.Second, "[3 2]"}, // 0, 2, 4 s, then from the keyframe after the jump
		{"new session", func(t *testing.T) (*source, [][]rtpPkt) {
			src := h264Source(t, "320x240", 4)
			return src, [][]rtpPkt{src.packets(), src.packets()}
		}, 2 * time.Second, "[2 2]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			src, pkts := c.src(t)
			if runs, _ := recordedRuns(t, src, c.segDur, pkts...); fmt.Sprint(runs) != c.want {
				t.Errorf("decode-time runs of %v segments, want %s", runs, c.want)
			}
		})
	}
}

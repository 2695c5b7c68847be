package mediacheck

import (
	"fmt"
	"math"
	"testing"

	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/internal/vigiltest"
)

// window is what checkWindow found.
type window struct {
	segs   []segment
	frames int   // stored, in all
	runs   []int // segments per HLS run
}

// checkWindow decodes every output of stream's recordings in [from, to)
// with ffmpeg: each stored segment alone, the VOD playlist run by run
// (ffmpeg 5.1's HLS reader keeps the first init section's parameter
// sets, so it cannot decode across a change), and a clip of each run.
// Each must decode with no error into the frames stored and their
// duration.
func checkWindow(t *testing.T, n *vigiltest.Node, stream string, from, to int64) window {
	t.Helper()
	w := window{segs: recordings(t, n, stream, from, to)}
	if len(w.segs) == 0 {
		t.Fatalf("stream %s: nothing recorded in [%d, %d)", stream, from, to)
	}
	frames, byStart := map[int64]int{}, map[int64]segment{}
	for _, s := range w.segs {
		b, _ := get(t, n, fmt.Sprintf("/v1/streams/%s/segments/%d", stream, s.Start))
		f := file(t, fmt.Sprintf("seg-%d", s.Start), b)
		frames[s.Start] = testutil.CountFrames(t, f)
		byStart[s.Start] = s
		w.frames += frames[s.Start]
		d := testutil.Decode(t, f)
		noErrors(t, fmt.Sprintf("segment %d", s.Start), d)
		if d.Frames != frames[s.Start] {
			t.Errorf("segment %d: %d frames decoded, %d stored", s.Start, d.Frames, frames[s.Start])
		}
	}

	pl, _ := get(t, n, fmt.Sprintf("/v1/streams/%s/playlist.m3u8?start=%d&end=%d", stream, from, to))
	listed := 0
	for i, r := range splitRuns(t, n, stream, string(pl)) {
		w.runs = append(w.runs, len(r.starts))
		listed += len(r.starts)
		wantFrames, wantMS := 0, int64(0)
		for _, s := range r.starts {
			seg, ok := byStart[s]
			if !ok {
				t.Fatalf("run %d lists segment %d, which recordings does not", i, s)
			}
			wantFrames += frames[s]
			wantMS += seg.DurationMS
		}
		what := fmt.Sprintf("HLS run %d (%d segments)", i, len(r.starts))
		d := testutil.Decode(t, file(t, fmt.Sprintf("run%d.m3u8", i), []byte(r.playlist)), "-protocol_whitelist", "file,http,tcp")
		noErrors(t, what, d)
		sameLength(t, what, d, wantFrames, wantMS, len(r.starts))

		// A clip of the run holds all of it.
		first, last := byStart[r.starts[0]], byStart[r.starts[len(r.starts)-1]]
		what = fmt.Sprintf("clip of run %d", i)
		b, trailer := get(t, n, fmt.Sprintf("/v1/streams/%s/clip.mp4?start=%d&end=%d", stream, first.Start, last.end()))
		if tr := trailer.Get("X-Vigil-Clip-Truncated"); tr != "" {
			t.Errorf("%s: truncated (%s)", what, tr)
		}
		d = testutil.Decode(t, file(t, fmt.Sprintf("clip%d.mp4", i), b))
		noErrors(t, what, d)
		sameLength(t, what, d, wantFrames, wantMS, len(r.starts))
	}
	if listed != len(w.segs) {
		t.Errorf("the playlist lists %d segments, recordings %d", listed, len(w.segs))
	}
	return w
}

// sameLength checks decoded frames and duration against what is stored:
// durations are indexed in whole milliseconds, so each segment may be up
// to 1 ms off.
func sameLength(t *testing.T, what string, d testutil.Decoded, frames int, ms int64, segs int) {
	t.Helper()
	if d.Frames != frames {
		t.Errorf("%s: %d frames decoded, %d stored", what, d.Frames, frames)
	}
	if diff := math.Abs(d.Duration - float64(ms)/1000); diff > 0.001*float64(segs)+1e-9 {
		t.Errorf("%s: %.3f s decoded, %.3f s stored", what, d.Duration, float64(ms)/1000)
	}
}

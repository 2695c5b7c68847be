package mediacheck

import (
	"bytes"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

// copyWhole remuxes stream's VOD playlist of [from, to) as a player
// that follows the decode times would, with `ffmpeg -c copy`, and checks
// the copy: no error, the frames stored, and a container duration
// within one frame (40 ms at 25 fps) of the ms stored.
func copyWhole(t *testing.T, n *vigiltest.Node, stream string, from, to int64, frames int, ms int64) {
	t.Helper()
	pl, _ := get(t, n, fmt.Sprintf("/v1/streams/%s/playlist.m3u8?start=%d&end=%d", stream, from, to))
	runs := splitRuns(t, n, stream, string(pl))
	if len(runs) != 1 {
		t.Fatalf("playlist of %d runs, want 1:\n%s", len(runs), pl)
	}
	out := filepath.Join(t.TempDir(), "copy.mp4")
	cmd := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-protocol_whitelist", "file,http,tcp",
		"-i", file(t, "whole.m3u8", []byte(runs[0].playlist)), "-c", "copy", out)
	if b, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(b)) > 0 {
		t.Errorf("ffmpeg -c copy of the playlist: %v\n%s", err, b)
	}
	d := testutil.Decode(t, out)
	noErrors(t, "copy of the playlist", d)
	if d.Frames != frames {
		t.Errorf("copy of the playlist: %d frames decoded, %d stored", d.Frames, frames)
	}
	b, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", out).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", out, err)
	}
	got, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	if err != nil {
		t.Fatalf("ffprobe duration %q: %v", b, err)
	}
	if diff := math.Abs(got - float64(ms)/1000); diff > 0.040 {
		t.Errorf("copy of the playlist: %.3f s long, %.3f s stored", got, float64(ms)/1000)
	}
}

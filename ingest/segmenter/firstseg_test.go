package segmenter

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	vtestutil "github.com/vigilcloud/vigil/internal/testutil"
)

// decodeErrors decodes every frame of path with ffmpeg and returns what it
// reports at -v error, and the frames it decoded.
func decodeErrors(t *testing.T, path string) (string, int) {
	t.Helper()
	cmd := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-i", path, "-map", "0:v:0", "-f", "framemd5", "-")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Sprintf("%v\n%s", err, stderr.String()), 0
	}
	frames := 0
	for _, l := range strings.Split(stdout.String(), "\n") {
		if l != "" && l[0] != '#' {
			frames++
		}
	}
	return stderr.String(), frames
}

// TestPicturesKeepTheirParameterSets is GStreamer's first segment: the SDP
// announces one set of parameter sets (x264enc's High 4:4:4 of the first
// caps), one keyframe is encoded with them, and then the encoder restarts
// with baseline sets sent in band before its next keyframe. That new SPS
// arrives while the first keyframe still waits in the reorder buffer; the
// first segment must still carry the sets its picture was encoded with.
func TestPicturesKeepTheirParameterSets(t *testing.T) {
	vtestutil.RequireBinary(t, "ffprobe")
	first := makeSource(t, "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-frames:v", "1",
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p")
	rest := makeSource(t, "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-t", "2",
		"-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "baseline", "-g", "25")
	src := concatWithNewParams(first, rest)
	g := newRig(t, time.Minute)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	publish(t, g, "cam1-main", src, t0, src.packets()).Close(nil)
	g.rec.uploads.Wait()

	segs := g.segments(t, "cam1-main")
	if len(segs) != 2 {
		t.Fatalf("%d segments, want 2 (cut at the encoder's restart): %+v", len(segs), segs)
	}
	checkContiguous(t, segs)
	for i, want := range []struct {
		frames  int
		profile string
	}{{1, "High 4:4:4 Predictive"}, {50, "Baseline"}} {
		p := g.segmentFile(t, "cam1-main", segs[i])
		errs, frames := decodeErrors(t, p)
		if errs != "" {
			t.Errorf("segment %d does not decode:\n%s", i, errs)
		}
		if frames != want.frames {
			t.Errorf("segment %d: %d frames decoded, want %d", i, frames, want.frames)
		}
		out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=profile", "-of", "csv=p=0", p).Output()
		if err != nil || !strings.Contains(string(out), want.profile) {
			t.Errorf("segment %d: profile %q (%v), want %s", i, out, err, want.profile)
		}
		if segs[i].Width != 640 || segs[i].Height != 360 {
			t.Errorf("segment %d indexed as %dx%d", i, segs[i].Width, segs[i].Height)
		}
	}
	if d := segs[0].DurationMS; d != 40 {
		t.Errorf("first segment lasts %d ms, want 40 (one picture at 25 fps)", d)
	}
}

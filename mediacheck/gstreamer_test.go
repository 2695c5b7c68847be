package mediacheck

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/vigiltest"
)

// TestGStreamerFirstSegmentDecodes is issue 14's repro: rtspclientsink
// with x264enc at 1920x1080 announces High 4:4:4 parameter sets (its
// first caps), encodes a picture with them, and then restarts the encoder
// with other sets sent in band. Before the fix the first segment carried
// the later sets and ffmpeg reported "error while decoding MB 0 34".
// Every frame sent must be stored, and every segment, HLS run and clip
// must decode.
func TestGStreamerFirstSegmentDecodes(t *testing.T) {
	requireGStreamer(t, "videotestsrc", "x264enc", "rtspclientsink")
	const frames = 75 // 3 s at 25 fps
	n := vigiltest.Start(t, vigilBin, vigiltest.Options{RTSP: true, Args: []string{"--segment-duration", "1s"}})
	tok := n.Provision("s1")
	from := time.Now().Add(-time.Minute).UnixMilli()
	gstPublish(t, fmt.Sprintf("rtsp://br:%s@%s/s1", tok, n.RTSPAddr), "video/x-raw,width=1920,height=1080,framerate=25/1", frames)
	to := time.Now().Add(time.Minute).UnixMilli()
	waitRecorded(t, n, "s1", from, to, frames*40)

	w := checkWindow(t, n, "s1", from, to)
	if w.frames != frames {
		t.Errorf("%d frames stored, %d sent", w.frames, frames)
	}
	// What the first segment holds, for the record: GStreamer's first
	// caps decide it, and they vary with its version.
	b, _ := get(t, n, fmt.Sprintf("/v1/streams/s1/segments/%d", w.segs[0].Start))
	out, _ := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=profile,pix_fmt",
		"-of", "csv=p=0", file(t, "first", b)).Output()
	t.Logf("first segment: %d ms, %s; runs %v", w.segs[0].DurationMS, strings.TrimSpace(string(out)), w.runs)
}

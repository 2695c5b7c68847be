package mediacheck

import (
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/internal/vigiltest"
)

// upload PUTs segs as a Bridge does, testutil.SegmentSeconds apart from start.
func upload(t *testing.T, n *vigiltest.Node, token, stream string, start int64, segs [][]byte, ctype string) {
	t.Helper()
	for i, b := range segs {
		at := start + int64(i)*testutil.SegmentSeconds*1000
		if code, body := n.Put(token, stream, at, b, ctype); code != http.StatusCreated {
			t.Fatalf("upload %s at %d: %d %s", stream, at, code, body)
		}
	}
}

// ffmpegPublish has ffmpeg publish secs s of 320x240 test video at 25 fps,
// encoded with enc, over RTSP (TCP) to url.
func ffmpegPublish(t *testing.T, url string, secs int, enc ...string) {
	t.Helper()
	testutil.RequireBinary(t, "ffmpeg")
	args := append([]string{"-hide_banner", "-v", "error", "-nostdin", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", strconv.Itoa(secs),
		"-pix_fmt", "yuv420p"}, enc...)
	args = append(args, "-f", "rtsp", "-rtsp_transport", "tcp", url)
	if out, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %v: %v\n%s", args, err, out)
	}
}

// TestMixedSources is issue 14's matrix: what Bridges and cameras record
// into one stream changes (resolution, codec, encoder, container) or
// stops for a while, and every output still decodes, run by run in HLS
// and as clips, into exactly the frames and duration stored
// (checkWindow).
func TestMixedSources(t *testing.T) {
	testutil.RequireBinary(t, "ffmpeg")
	n := vigiltest.Start(t, vigilBin, vigiltest.Options{RTSP: true, Args: []string{"--segment-duration", "2s"}})
	tok := n.Provision("res", "codec", "gap", "mixed", "encoder", "rtspcodec", "session")
	base := time.Now().Add(-time.Hour).Truncate(time.Second).UnixMilli()
	at := func(k int) int64 { return base + int64(k)*testutil.SegmentSeconds*1000 } // the k-th 2-s slot
	enc := func(k int, size, codec, format string) [][]byte {
		return testutil.EncodeSegments(t, k, size, codec, format)
	}
	wantRuns := func(t *testing.T, w window, runs ...int) {
		t.Helper()
		if fmt.Sprint(w.runs) != fmt.Sprint(runs) {
			t.Errorf("HLS runs of %v segments, want %v", w.runs, runs)
		}
	}

	t.Run("resolution change", func(t *testing.T) {
		// 360p, 720p, 360p: small sizes keep the suite quick; the change is
		// what counts.
		upload(t, n, tok, "res", at(0), enc(2, "640x360", "libx264", "mp4"), "video/mp4")
		upload(t, n, tok, "res", at(2), enc(2, "1280x720", "libx264", "mp4"), "video/mp4")
		upload(t, n, tok, "res", at(4), enc(1, "640x360", "libx264", "mp4"), "video/mp4")
		wantRuns(t, checkWindow(t, n, "res", at(0), at(5)), 2, 2, 1)
		// A clip over the change ends there, and says so.
		b, trailer := get(t, n, fmt.Sprintf("/v1/streams/res/clip.mp4?start=%d&end=%d", at(0), at(5)))
		if trailer.Get("X-Vigil-Clip-Truncated") != "parameters_changed" {
			t.Errorf("clip over the change: truncated %q", trailer.Get("X-Vigil-Clip-Truncated"))
		}
		d := testutil.Decode(t, file(t, "clip.mp4", b))
		noErrors(t, "clip over the change", d)
		sameLength(t, "clip over the change", d, 100, 4000, 2)
	})

	t.Run("codec change", func(t *testing.T) {
		upload(t, n, tok, "codec", at(0), enc(2, "320x240", "libx264", "mp4"), "video/mp4")
		upload(t, n, tok, "codec", at(2), enc(2, "320x240", "libx265", "mp4"), "video/mp4")
		wantRuns(t, checkWindow(t, n, "codec", at(0), at(4)), 2, 2)
	})

	t.Run("codec change over RTSP", func(t *testing.T) {
		// ffmpeg publishes 2 s of H.264, then 2 s of H.265 to the same stream.
		url := fmt.Sprintf("rtsp://br:%s@%s/rtspcodec", tok, n.RTSPAddr)
		from := time.Now().Add(-time.Minute).UnixMilli()
		ffmpegPublish(t, url, 2, "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-bf", "0")
		ffmpegPublish(t, url, 2, "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:keyint=25", "-bf", "0")
		to := time.Now().Add(time.Minute).UnixMilli()
		waitRecorded(t, n, "rtspcodec", from, to, 4000)
		w := checkWindow(t, n, "rtspcodec", from, to)
		if w.frames != 100 {
			t.Errorf("%d frames stored, 100 sent", w.frames)
		}
	})

	t.Run("RTSP session is one run", func(t *testing.T) {
		// 20 s over RTSP cut into 2-s segments: their decode times run on,
		// so the playlist is one run, which ffmpeg 5.1 copies whole.
		url := fmt.Sprintf("rtsp://br:%s@%s/session", tok, n.RTSPAddr)
		from := time.Now().Add(-time.Minute).UnixMilli()
		ffmpegPublish(t, url, 20, "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-bf", "0")
		to := time.Now().Add(time.Minute).UnixMilli()
		segs := waitRecorded(t, n, "session", from, to, 20000)
		w := checkWindow(t, n, "session", from, to)
		wantRuns(t, w, len(segs))
		if w.frames != 500 {
			t.Errorf("%d frames stored, 500 sent", w.frames)
		}
		var ms int64
		for _, s := range segs {
			ms += s.DurationMS
		}
		copyWhole(t, n, "session", from, to, w.frames, ms)
	})

	t.Run("gap", func(t *testing.T) {
		segs := enc(4, "320x240", "libx264", "mp4")
		upload(t, n, tok, "gap", at(0), segs[:2], "video/mp4")
		upload(t, n, tok, "gap", at(5), segs[2:], "video/mp4")
		w := checkWindow(t, n, "gap", at(0), at(7))
		wantRuns(t, w, 2, 2)
		// A clip over the gap leaves it out: the recorded parts back to back.
		b, _ := get(t, n, fmt.Sprintf("/v1/streams/gap/clip.mp4?start=%d&end=%d", at(0), at(7)))
		d := testutil.Decode(t, file(t, "clip.mp4", b))
		noErrors(t, "clip over the gap", d)
		sameLength(t, "clip over the gap", d, w.frames, 8000, 4)
	})

	t.Run("MPEG-TS and fMP4", func(t *testing.T) {
		ts := enc(3, "320x240", "libx264", "mpegts")
		upload(t, n, tok, "mixed", at(0), ts[:2], "video/mp2t")
		upload(t, n, tok, "mixed", at(2), enc(2, "320x240", "libx264", "mp4"), "video/mp4")
		upload(t, n, tok, "mixed", at(4), ts[2:], "video/mp2t")
		wantRuns(t, checkWindow(t, n, "mixed", at(0), at(5)), 2, 2, 1)
	})

	t.Run("bridge upload then RTSP", func(t *testing.T) {
		// Two segments from ffmpeg end just before GStreamer publishes the
		// same camera over RTSP: another encoder, other parameter sets.
		requireGStreamer(t, "videotestsrc", "x264enc", "rtspclientsink")
		start := time.Now().Add(-5 * time.Second).UnixMilli()
		upload(t, n, tok, "encoder", start, enc(2, "1280x720", "libx264", "mp4"), "video/mp4")
		const frames = 50
		gstPublish(t, fmt.Sprintf("rtsp://br:%s@%s/encoder", tok, n.RTSPAddr), "video/x-raw,format=I420,width=1280,height=720,framerate=25/1", frames)
		to := time.Now().Add(time.Minute).UnixMilli()
		waitRecorded(t, n, "encoder", start, to, 4000+frames*40)
		w := checkWindow(t, n, "encoder", start, to)
		if len(w.runs) < 2 || w.runs[0] != 2 {
			t.Errorf("HLS runs of %v segments, want the two uploaded, then the RTSP recording's", w.runs)
		}
		if w.frames != 100+frames {
			t.Errorf("%d frames stored, want %d", w.frames, 100+frames)
		}
	})
}

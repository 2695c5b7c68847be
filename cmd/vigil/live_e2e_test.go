package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/testutil"
)

// TestLiveWindow plays live.m3u8 with ffmpeg, as a player joining a live
// stream does, for a stream uploaded over HTTP and one recorded over
// RTSP: every frame stored in the window decodes, with no errors.
func TestLiveWindow(t *testing.T) {
	testutil.RequireBinary(t, "ffmpeg")
	testutil.RequireBinary(t, "ffprobe")
	addr := testutil.FreePort(t)
	v := startVigil(t, nil, "--rtsp-addr", addr, "--rtsp-udp-addr", "off", "--segment-duration", "2s")
	n := &rtspNode{vigilNode: v, rtsp: addr, token: v.provision("up", "rt")}

	t.Run("HTTP", func(t *testing.T) {
		// Four 2-s fMP4 segments whose decode times run on, as a Bridge
		// cuts them, uploaded as if just recorded.
		segs := ffmpegHLSSegments(t, 4)
		start := time.Now().Add(-10 * time.Second).UnixMilli()
		for i, b := range segs {
			if code, body := n.node.Put(n.token, "up", start+int64(i)*2000, b, "video/mp4"); code != 201 {
				t.Fatalf("upload %d: %d %s", i, code, body)
			}
		}
		frames := playLive(t, n.base+"/v1/streams/up/live.m3u8", 4*50)
		if frames != 4*50 {
			t.Errorf("live.m3u8 of the uploads decodes to %d frames, want %d", frames, 4*50)
		}
	})

	t.Run("RTSP", func(t *testing.T) {
		cmd := n.publish(t, "br", n.token, "rt", append(h264Args("320x240", 8, 25), "-rtsp_transport", "tcp")...)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("ffmpeg publish: %v", err)
		}
		rec := n.checkedSegments(t, "rt", 7_000)
		want := 0
		for _, s := range rec.Segments {
			want += countFrames(t, n.base+s.URL)
		}
		if got := playLive(t, n.base+"/v1/streams/rt/live.m3u8", want); got != want {
			t.Errorf("live.m3u8 of the RTSP recording decodes to %d frames, the segments hold %d", got, want)
		}
	})
}

// ffmpegHLSSegments encodes n 2-s segments of 320x240 H.264 at 25 fps
// with ffmpeg's HLS muxer and returns each as a self-contained fMP4 (the
// init section, then the fragments).
func ffmpegHLSSegments(t *testing.T, n int) [][]byte {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", strconv.Itoa(2*n),
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p",
		"-f", "hls", "-hls_time", "2", "-hls_segment_type", "fmp4", "-hls_playlist_type", "vod",
		"-hls_segment_filename", filepath.Join(dir, "s%d.m4s"), filepath.Join(dir, "x.m3u8")).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg hls: %v\n%s", err, out)
	}
	init, err := os.ReadFile(filepath.Join(dir, "init.mp4"))
	must(t, err)
	segs := make([][]byte, n)
	for i := range n {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("s%d.m4s", i)))
		must(t, err)
		segs[i] = append(append([]byte(nil), init...), b...)
	}
	return segs
}

// playLive has ffmpeg join the live playlist at url from its first entry
// and remux frames frames (it would wait for more; a decoder would hold
// its last frames back until the end), then decodes what it got and
// returns how many frames that is; any error fails the test.
func playLive(t *testing.T, url string, frames int) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := filepath.Join(t.TempDir(), "live.mp4")
	out, err := exec.CommandContext(ctx, "ffmpeg", "-v", "error", "-nostdin", "-headers", "Authorization: Bearer "+e2eToken+"\r\n",
		"-live_start_index", "0", "-i", url, "-c", "copy", "-frames:v", strconv.Itoa(frames), "-y", f).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("ffmpeg -i %s: %v\n%s", url, err, out)
	}
	return decodeFrames(t, f)
}

// decodeFrames counts the video frames ffmpeg decodes from the file f,
// failing on any decode error.
func decodeFrames(t *testing.T, f string) int {
	t.Helper()
	cmd := exec.Command("ffmpeg", "-v", "error", "-nostdin", "-i", f, "-f", "framemd5", "-")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(stderr.String()) != "" {
		t.Fatalf("ffmpeg decode %s: %v\n%s", f, err, stderr.String())
	}
	n := 0
	for _, l := range strings.Split(string(out), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			n++
		}
	}
	return n
}

// countFrames counts the video frames ffmpeg decodes from the segment at
// url (fetched with the operator token), failing on any decode error.
func countFrames(t *testing.T, url string) int {
	t.Helper()
	f := filepath.Join(t.TempDir(), "seg.mp4")
	must(t, os.WriteFile(f, []byte(getOK(t, url)), 0o644))
	return decodeFrames(t, f)
}

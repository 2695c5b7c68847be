package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vigilcloud/vigil/internal/testutil"
)

// TestPlaybackOfRTSPRecording publishes 20 s of H.264 with ffmpeg over RTSP
// into a real vigil (storage in a real MinIO, 4 s segments) and plays the recording back
// the ways a viewer does: ffmpeg remuxes the HLS VOD playlist, live.m3u8
// lists the newest segments, and a 10 s clip.mp4 decodes cleanly.
func TestPlaybackOfRTSPRecording(t *testing.T) {
	testutil.RequireBinary(t, "ffmpeg")
	testutil.RequireBinary(t, "ffprobe")
	mio := testutil.StartMinIO(t)
	addr := testutil.FreePort(t)
	v := startVigil(t, mio.Env(mio.Bucket(t)), "--rtsp-addr", addr, "--rtsp-udp-addr", freeUDPPair(t), "--segment-duration", "4s")
	n := &rtspNode{vigilNode: v, rtsp: addr, token: v.provision("pb")}

	const published = 20.0 // seconds
	cmd := n.publish(t, "br", n.token, "pb", append(h264Args("640x360", int(published), 50), "-rtsp_transport", "tcp")...)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ffmpeg publish: %v", err)
	}
	rec := n.checkedSegments(t, "pb", 19_000)
	first, last := rec.Segments[0], rec.Segments[len(rec.Segments)-1]
	var recordedMS int64
	for _, s := range rec.Segments {
		recordedMS += s.DurationMS
	}
	from, to := first.Start, last.Start+last.DurationMS
	t.Logf("recorded %d segments, %d ms, spans %+v", len(rec.Segments), recordedMS, rec.Spans)
	dir := t.TempDir()
	bearer := "Authorization: Bearer " + e2eToken + "\r\n"

	t.Run("HLS_VOD", func(t *testing.T) {
		out := filepath.Join(dir, "hls.mp4")
		url := fmt.Sprintf("%s/v1/streams/pb/playlist.m3u8?start=%d&end=%d", n.base, from, to)
		b, err := exec.Command("ffmpeg", "-v", "error", "-nostdin", "-headers", bearer, "-i", url, "-c", "copy", "-y", out).CombinedOutput()
		if err != nil {
			t.Fatalf("ffmpeg -i playlist.m3u8 -c copy: %v\n%s", err, b)
		}
		d := ffprobeDuration(t, out)
		t.Logf("HLS remux: %.2f s", d)
		const segment = 4.0
		if got, want := d, float64(recordedMS)/1000; got < want-segment || got > want+segment {
			t.Errorf("HLS remux: %.2f s, recorded %.2f s: not within one segment", got, want)
		}
		if d < published-segment || d > published+segment {
			t.Errorf("HLS remux: %.2f s, published %.0f s: not within one segment", d, published)
		}
	})

	t.Run("Live", func(t *testing.T) {
		body := getOK(t, n.base+"/v1/streams/pb/live.m3u8")
		var uris []string
		for _, l := range strings.Split(body, "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				uris = append(uris, l)
			}
		}
		if !strings.HasPrefix(body, "#EXTM3U") || len(uris) == 0 {
			t.Fatalf("live.m3u8 lists no segments:\n%s", body)
		}
		// The window ends with the newest segments, in order.
		k := min(len(uris), len(rec.Segments))
		for i := range k {
			want := "segments/" + strconv.FormatInt(rec.Segments[len(rec.Segments)-k+i].Start, 10) + "/"
			if got := uris[len(uris)-k+i]; !strings.HasPrefix(got, want) {
				t.Errorf("live.m3u8 entry %d is %q, want the segment %s", len(uris)-k+i, got, want)
			}
		}
		if strings.Contains(body, "#EXT-X-ENDLIST") {
			t.Error("live.m3u8 has EXT-X-ENDLIST")
		}
		// Its signed URLs play without a bearer token.
		resp, err := http.Get(n.base + "/v1/streams/pb/" + uris[len(uris)-1])
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("the newest live entry without a token: %d, want 200", resp.StatusCode)
		}
	})

	t.Run("Clip10s", func(t *testing.T) {
		start := first.Start + 5_000
		url := fmt.Sprintf("%s/v1/streams/pb/clip.mp4?start=%d&end=%d", n.base, start, start+10_000)
		f := filepath.Join(dir, "clip.mp4")
		must(t, os.WriteFile(f, []byte(getOK(t, url)), 0o644))
		d := ffprobeDuration(t, f)
		t.Logf("clip: %.2f s", d)
		if d < 8 || d > 12 {
			t.Errorf("clip over 10 s: ffprobe %.2f s, want 10 s ± one GOP (2 s)", d)
		}
		out, err := exec.Command("ffmpeg", "-v", "error", "-nostdin", "-i", f, "-f", "null", "-").CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("clip does not decode cleanly: %v\n%s", err, out)
		}
	})
}

// getOK fetches url with the operator token and fails unless it answers 200.
func getOK(t *testing.T, url string) string {
	t.Helper()
	resp, err := authGet(url, e2eToken, "")
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

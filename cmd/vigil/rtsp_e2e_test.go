package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/testutil"
)

// freeUDPPair returns an even UDP port whose successor is free as well.
func freeUDPPair(t *testing.T) string {
	t.Helper()
	for range 200 {
		p := 20000 + 2*rand.IntN(20000)
		a, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		b, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
		a.Close()
		if err != nil {
			continue
		}
		b.Close()
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	t.Fatal("no free UDP port pair")
	return ""
}

// rtspNode is a vigil serving RTSP with 6 s segments.
type rtspNode struct {
	*vigilNode
	rtsp  string
	token string
}

func startRTSPNode(t *testing.T, streams ...string) *rtspNode {
	t.Helper()
	testutil.RequireBinary(t, "ffmpeg")
	testutil.RequireBinary(t, "ffprobe")
	addr := testutil.FreePort(t)
	n := startVigil(t, nil, "--rtsp-addr", addr, "--rtsp-udp-addr", freeUDPPair(t), "--segment-duration", "6s")
	return &rtspNode{vigilNode: n, rtsp: addr, token: n.provision(streams...)}
}

// publish runs ffmpeg publishing to stream for the given input arguments;
// it returns the command, started.
func (n *rtspNode) publish(t *testing.T, user, pass, stream string, args ...string) *exec.Cmd {
	t.Helper()
	url := fmt.Sprintf("rtsp://%s:%s@%s/%s", user, pass, n.rtsp, stream)
	all := append([]string{"-v", "error", "-nostdin", "-re"}, args...)
	all = append(all, "-f", "rtsp", url)
	cmd := exec.Command("ffmpeg", all...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		if t.Failed() {
			t.Logf("ffmpeg %s: %s", stream, out.String())
		}
	})
	return cmd
}

var (
	h264Args = func(size string, secs int, gop int) []string {
		return []string{"-f", "lavfi", "-i", "testsrc2=size=" + size + ":rate=25", "-c:v", "libx264", "-preset", "veryfast",
			"-g", strconv.Itoa(gop), "-t", strconv.Itoa(secs)}
	}
)

// checkedSegments waits until stream's recordings stop changing and returns
// them after checking each with ffprobe and a clean full decode.
func (n *rtspNode) checkedSegments(t *testing.T, stream string, minMS int64) recordings {
	t.Helper()
	now := time.Now().UnixMilli()
	var rec recordings
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec = n.recordings(stream, now-10*60_000, now+60_000)
		var total int64
		for _, s := range rec.Segments {
			total += s.DurationMS
		}
		if total >= minMS {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d ms recorded, want >= %d: %+v", stream, total, minMS, rec)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i, s := range rec.Segments {
		resp, err := authGet(n.base+s.URL, e2eToken, "")
		must(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		f := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%d.mp4", stream, i))
		must(t, os.WriteFile(f, b, 0o644))
		d := ffprobeDuration(t, f)
		if diff := d*1000 - float64(s.DurationMS); diff < -500 || diff > 500 {
			t.Errorf("%s segment %d: ffprobe %.2f s, index %d ms", stream, i, d, s.DurationMS)
		}
		if out, err := exec.Command("ffmpeg", "-v", "error", "-i", f, "-f", "null", "-").CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("%s segment %d does not decode alone: %v %s", stream, i, err, out)
		}
		if i > 0 && s.Start < rec.Segments[i-1].Start+rec.Segments[i-1].DurationMS {
			t.Errorf("%s segment %d at %d overlaps the previous (ends %d)", stream, i, s.Start, rec.Segments[i-1].Start+rec.Segments[i-1].DurationMS)
		}
	}
	return rec
}

// packetSpan is when one stream type ("a", "v") of path starts and ends in
// decode time: its first packet's start and its last one's end (a packet
// without a duration lasts as long as the one before it). Decode time,
// because a segment's timeline starts at its first picture's decode time
// (its presentation comes later by the reordering delay) and audio is
// placed on the same wall clock.
func packetSpan(t *testing.T, path, typ string) (first, end float64) {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", typ, "-show_entries", "packet=dts_time,duration_time", "-of", "csv=p=0", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	first, end = math.Inf(1), math.Inf(-1)
	dur := 0.0
	for _, l := range strings.Fields(string(out)) {
		f := strings.Split(strings.TrimSuffix(l, ","), ",")
		dts, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			t.Fatalf("ffprobe dts %q: %v", l, err)
		}
		if len(f) > 1 {
			if d, err := strconv.ParseFloat(f[1], 64); err == nil {
				dur = d
			}
		}
		first, end = min(first, dts), max(end, dts+dur)
	}
	return first, end
}

// TestRTSPPublish publishes with ffmpeg to one vigil: H.264 over TCP (30 s),
// H.265 + AAC, UDP, a kill mid-stream, a reconnect, and the refusals, in
// parallel on different streams.
func TestRTSPPublish(t *testing.T) {
	n := startRTSPNode(t, "h264", "h265", "udp", "killed", "again")
	// Another bridge with its own camera.
	var br2 struct{ Token string }
	ctx := context.Background()
	must(t, n.api.do(ctx, "POST", "/v1/accounts/acct/bridges", map[string]any{"id": "br2", "name": "Bridge 2"}, &br2))
	must(t, n.api.do(ctx, "POST", "/v1/bridges/br2/cameras", map[string]any{"id": "cam2", "name": "Cam 2",
		"streams": []map[string]any{{"id": "other", "width": 1280, "height": 720}}}, nil))

	t.Run("H264_TCP_30s", func(t *testing.T) {
		t.Parallel()
		cmd := n.publish(t, "br", n.token, "h264", append(h264Args("1280x720", 30, 50), "-rtsp_transport", "tcp")...)
		time.Sleep(3 * time.Second)
		// A second publisher of the live stream is refused.
		second := n.publish(t, "br", n.token, "h264", h264Args("320x240", 3, 25)...)
		if err := second.Wait(); err == nil {
			t.Error("a second publisher of a live stream was accepted")
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("ffmpeg: %v", err)
		}
		rec := n.checkedSegments(t, "h264", 29_000)
		if len(rec.Spans) != 1 {
			t.Errorf("recordings not contiguous: %+v", rec.Spans)
		}
		for i, s := range rec.Segments {
			if i < len(rec.Segments)-1 && (s.DurationMS < 6000 || s.DurationMS > 8000) {
				t.Errorf("segment %d: %d ms, want 6 s up to one GOP (2 s) more", i, s.DurationMS)
			}
		}
		var st struct {
			ObservedWidth  int    `json:"observed_width"`
			ObservedHeight int    `json:"observed_height"`
			ObservedTier   string `json:"observed_tier"`
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			must(t, n.api.do(ctx, "GET", "/v1/meter/streams/h264", nil, &st))
			if st.ObservedWidth == 1280 && st.ObservedHeight == 720 && st.ObservedTier == "HD1" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("meter shows observed %dx%d %q, want 1280x720 HD1", st.ObservedWidth, st.ObservedHeight, st.ObservedTier)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	t.Run("H265_AAC", func(t *testing.T) {
		t.Parallel()
		cmd := n.publish(t, "br", n.token, "h265", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
			"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-g", "25", "-c:a", "aac", "-t", "13")
		if err := cmd.Wait(); err != nil {
			t.Fatalf("ffmpeg: %v", err)
		}
		// Every segment decodes cleanly (ffmpeg fragments most H.265
		// pictures into FUs: see ingest/segmenter/h265rtp.go).
		rec := n.checkedSegments(t, "h265", 8_000)
		resp, err := authGet(n.base+rec.Segments[0].URL, e2eToken, "")
		must(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		f := filepath.Join(t.TempDir(), "h265.mp4")
		must(t, os.WriteFile(f, b, 0o644))
		out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", f).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "hevc") || !strings.Contains(string(out), "aac") {
			t.Errorf("segment streams %q (%v), want hevc and aac", out, err)
		}
		// Audio is not lost at the cuts: each segment's audio reaches to
		// its video's end (but the last, where the publisher stops) and
		// starts with it (but the first, where the encoders start), to
		// about two AAC frames.
		for i, s := range rec.Segments {
			resp, err := authGet(n.base+s.URL, e2eToken, "")
			must(t, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			f := filepath.Join(t.TempDir(), fmt.Sprintf("seg%d.mp4", i))
			must(t, os.WriteFile(f, b, 0o644))
			a0, a1 := packetSpan(t, f, "a")
			v0, v1 := packetSpan(t, f, "v")
			t.Logf("segment %d: audio %.3f-%.3f s, video %.3f-%.3f s", i, a0, a1, v0, v1)
			if d := a1 - v1; i < len(rec.Segments)-1 && (d < -0.05 || d > 0.05) {
				t.Errorf("segment %d: audio ends at %.3f s, video at %.3f s", i, a1, v1)
			}
			if d := a0 - v0; i > 0 && (d < -0.05 || d > 0.05) {
				t.Errorf("segment %d: audio starts at %.3f s, video at %.3f s", i, a0, v0)
			}
		}
	})
	t.Run("H264_UDP", func(t *testing.T) {
		t.Parallel()
		cmd := n.publish(t, "br", n.token, "udp", append(h264Args("320x240", 9, 25), "-rtsp_transport", "udp")...)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("ffmpeg: %v", err)
		}
		n.checkedSegments(t, "udp", 8_000)
	})
	t.Run("KilledMidStream", func(t *testing.T) {
		t.Parallel()
		cmd := n.publish(t, "br", n.token, "killed", h264Args("320x240", 60, 25)...)
		// Kill ~3 s into the second segment: the first one is stored by
		// then, the second only in complete fragments.
		first := n.checkedSegments(t, "killed", 5_000)
		time.Sleep(3 * time.Second)
		must(t, cmd.Process.Signal(syscall.SIGKILL))
		_ = cmd.Wait()
		want := first.Segments[0].DurationMS + 2_000
		rec := n.checkedSegments(t, "killed", want)
		if len(rec.Segments) < 2 {
			t.Errorf("after a kill: %d segments, want the cut one and the partial one", len(rec.Segments))
		}
	})
	t.Run("Reconnect", func(t *testing.T) {
		t.Parallel()
		for range 2 {
			cmd := n.publish(t, "br", n.token, "again", h264Args("320x240", 4, 25)...)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("ffmpeg: %v", err)
			}
		}
		rec := n.checkedSegments(t, "again", 7_000) // checks no overlap
		if len(rec.Segments) < 2 {
			t.Errorf("%d segments after two sessions", len(rec.Segments))
		}
	})
	t.Run("Refused", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct{ name, user, pass, stream string }{
			{"wrong password", "br", n.token + "x", "again"},
			{"another bridge's stream", "br", n.token, "other"},
			{"unknown stream", "br", n.token, "nope"},
			{"token of another bridge", "br", br2.Token, "h264"},
		} {
			cmd := n.publish(t, c.user, c.pass, c.stream, h264Args("320x240", 2, 25)...)
			if err := cmd.Wait(); err == nil {
				t.Errorf("%s: ffmpeg published", c.name)
			}
		}
		now := time.Now().UnixMilli()
		if rec := n.recordings("other", now-600_000, now+60_000); len(rec.Segments) != 0 {
			t.Errorf("another bridge recorded into stream other: %+v", rec)
		}
	})
}

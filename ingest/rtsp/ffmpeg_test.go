package rtsp

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/testutil"
)

// publish runs ffmpeg as a real RTSP publisher and returns its error and output.
func publish(t *testing.T, url string, args ...string) (string, error) {
	t.Helper()
	bin := testutil.RequireBinary(t, "ffmpeg")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	full := append([]string{"-hide_banner", "-loglevel", "error", "-nostdin"}, args...)
	full = append(full, "-f", "rtsp", url)
	out, err := exec.CommandContext(ctx, bin, full...).CombinedOutput()
	return string(out), err
}

var (
	h264Args = []string{"-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-c:v", "libx264", "-g", "50"}
	// H.265 video and AAC audio: inputs first, then the output options.
	h265AACArgs = []string{"-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-map", "0:v", "-map", "1:a",
		"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-g", "50", "-c:a", "aac"}
)

// ffmpegPublish publishes with ffmpeg and returns the one sink it produced,
// after the session ended.
func ffmpegPublish(t *testing.T, transport string, seconds string, args ...string) (*testHandler, *testSink) {
	t.Helper()
	h := newTestHandler()
	ts := startServer(t, Config{}, h)
	full := append(append([]string{}, args...), "-t", seconds, "-rtsp_transport", transport)
	if out, err := publish(t, ts.url("br", "token", "cam-1_a"), full...); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	ann, sinks, _, _ := h.snapshot()
	if len(ann) != 1 || len(sinks) != 1 {
		t.Fatalf("announces %d sinks %d, want 1", len(ann), len(sinks))
	}
	if ann[0].user != "br" || ann[0].path != "cam-1_a" {
		t.Fatalf("announce user %q path %q", ann[0].user, ann[0].path)
	}
	// ffmpeg ends its session with TEARDOWN.
	if err := sinks[0].waitClosed(t); err != nil {
		t.Fatalf("sink closed with %v, want nil (TEARDOWN)", err)
	}
	return h, sinks[0]
}

func checkH264(t *testing.T, m Media) {
	t.Helper()
	if m.Type != "video" || m.Codec != "H264" || m.ClockRate != 90000 || m.PayloadType < 96 {
		t.Fatalf("media %+v, want H264 video at 90 kHz", m)
	}
	if m.Fmtp["packetization-mode"] != "1" || !strings.Contains(m.Fmtp["sprop-parameter-sets"], ",") {
		t.Fatalf("fmtp %v: want packetization-mode=1 and SPS,PPS", m.Fmtp)
	}
	if m.Control == "" {
		t.Fatal("no control attribute")
	}
}

// TestFFmpegH264TCP: 5 s of H.264 over interleaved TCP arrive complete; ffmpeg,
// offered both challenges, answers Digest.
func TestFFmpegH264TCP(t *testing.T) {
	t.Parallel()
	h, sink := ffmpegPublish(t, "tcp", "5", h264Args...)
	checkH264(t, sink.medias[0])
	packets, gaps, _, _ := sink.counts()
	// 125 frames at 25 fps; every frame is at least one packet.
	if packets[0] < 120 {
		t.Fatalf("%d RTP packets for 125 frames", packets[0])
	}
	if gaps[0] != 0 {
		t.Fatalf("%d sequence gaps over TCP", gaps[0])
	}
	_, _, basic, digest := h.snapshot()
	if digest == 0 || basic != 0 {
		t.Fatalf("ffmpeg used basic %d / digest %d times; expected Digest when both are offered", basic, digest)
	}
}

func TestFFmpegH264UDP(t *testing.T) {
	t.Parallel()
	_, sink := ffmpegPublish(t, "udp", "3", h264Args...)
	checkH264(t, sink.medias[0])
	packets, _, _, _ := sink.counts()
	// Loopback UDP can drop under load; most of the 75 frames must arrive.
	if packets[0] < 50 {
		t.Fatalf("%d RTP packets over UDP for 75 frames", packets[0])
	}
}

func TestFFmpegH265WithAACTCP(t *testing.T) {
	t.Parallel()
	_, sink := ffmpegPublish(t, "tcp", "3", h265AACArgs...)
	if len(sink.medias) != 2 {
		t.Fatalf("%d medias, want video + audio", len(sink.medias))
	}
	v, a := sink.medias[0], sink.medias[1]
	if v.Codec != "H265" || v.ClockRate != 90000 || v.Fmtp["sprop-vps"] == "" || v.Fmtp["sprop-sps"] == "" || v.Fmtp["sprop-pps"] == "" {
		t.Fatalf("video %+v: want H265 with sprop-vps/sps/pps", v)
	}
	if a.Type != "audio" || a.Codec != "MPEG4-GENERIC" || a.ClockRate != 44100 || a.Channels != 1 ||
		a.Fmtp["config"] == "" || a.Fmtp["sizelength"] != "13" || !strings.EqualFold(a.Fmtp["mode"], "AAC-hbr") {
		t.Fatalf("audio %+v: want MPEG4-GENERIC AAC-hbr 44100/1 with config", a)
	}
	packets, gaps, _, _ := sink.counts()
	// ffmpeg packs several AAC frames into one packet (about 7 packets/s here).
	if packets[0] < 70 || packets[1] < 10 {
		t.Fatalf("packets %v: too few for 3 s", packets)
	}
	if gaps[0] != 0 || gaps[1] != 0 {
		t.Fatalf("sequence gaps %v over TCP", gaps)
	}
}

// TestFFmpegRefused: a wrong password or an unknown user makes ffmpeg fail
// before the handler sees an ANNOUNCE; Handler errors map to statuses ffmpeg reports.
func TestFFmpegRefused(t *testing.T) {
	t.Parallel()
	h := newTestHandler()
	ts := startServer(t, Config{}, h)
	for _, u := range []struct{ user, pass string }{{"br", "wrong"}, {"nobody", "token"}} {
		out, err := publish(t, ts.url(u.user, u.pass, "cam1"), append([]string{"-t", "1"}, h264Args...)...)
		if err == nil {
			t.Fatalf("ffmpeg as %s/%s succeeded", u.user, u.pass)
		}
		if !strings.Contains(out, "401") && !strings.Contains(strings.ToLower(out), "unauthorized") {
			t.Logf("ffmpeg output: %s", out)
		}
	}
	if ann, _, _, _ := h.snapshot(); len(ann) != 0 {
		t.Fatalf("handler saw %d announces", len(ann))
	}
	h2 := newTestHandler()
	h2.announceErr = ErrForbidden
	ts2 := startServer(t, Config{}, h2)
	out, err := publish(t, ts2.url("br", "token", "cam1"), append([]string{"-t", "1"}, h264Args...)...)
	if err == nil || !strings.Contains(out, "403") && !strings.Contains(out, "Forbidden") {
		t.Fatalf("ffmpeg on a forbidden stream: err %v, output %s", err, out)
	}
}

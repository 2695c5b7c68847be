package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// FFmpegSegment has ffmpeg encode two frames of size (e.g. "1280x720")
// with codec (libx264 or libx265) into a fragmented MP4 ("mp4") or an
// MPEG-TS ("mpegts"), as a Bridge would. It needs ffmpeg (RequireBinary).
func FFmpegSegment(t testing.TB, size, codec, format string) []byte {
	t.Helper()
	RequireBinary(t, "ffmpeg")
	out := filepath.Join(t.TempDir(), "seg")
	args := []string{"-hide_banner", "-loglevel", "error", "-nostdin", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=" + size + ":rate=25", "-frames:v", "2",
		"-c:v", codec, "-preset", "ultrafast"}
	if codec == "libx265" {
		args = append(args, "-x265-params", "log-level=error")
		if format == "mp4" {
			args = append(args, "-tag:v", "hvc1")
		}
	}
	if format == "mp4" {
		args = append(args, "-movflags", "frag_keyframe+empty_moov+default_base_moof")
	}
	args = append(args, "-f", format, out)
	if b, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %v: %v\n%s", args, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

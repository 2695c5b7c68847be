package testutil

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// SegmentSeconds is the length of EncodeSegments' segments.
const SegmentSeconds = 2

// EncodeSegments has ffmpeg encode n consecutive segments of
// SegmentSeconds of testsrc2 at size (e.g. "1280x720"; 25 fps, a keyframe
// at each segment's start, no B-frames) with codec (libx264 or libx265),
// as a Bridge uploads them: "mp4" is fragmented MP4, each segment its
// init section and one fragment, decode times running on across segments
// (one encode cut at its fragments); "mpegts" is MPEG-TS, timestamps
// running on.
func EncodeSegments(t testing.TB, n int, size, codec, format string) [][]byte {
	t.Helper()
	RequireBinary(t, "ffmpeg")
	dir := t.TempDir()
	args := []string{"-v", "error", "-nostdin", "-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%s:rate=25:duration=%d", size, SegmentSeconds*n),
		"-c:v", codec, "-preset", "ultrafast", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-bf", "0"}
	if codec == "libx265" {
		args = append(args, "-x265-params", "log-level=error:scenecut=0:open-gop=0")
		if format == "mp4" {
			args = append(args, "-tag:v", "hvc1")
		}
	}
	if format == "mp4" {
		f := filepath.Join(dir, "all.mp4")
		args = append(args, "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-y", f)
		run(t, args)
		init, frags := SplitFragments(t, f)
		if len(frags) != n {
			t.Fatalf("%d fragments, want one per segment (%d)", len(frags), n)
		}
		segs := make([][]byte, n)
		for i, fr := range frags {
			segs[i] = append(append([]byte(nil), init...), fr...)
		}
		return segs
	}
	args = append(args, "-f", "segment", "-segment_time", fmt.Sprint(SegmentSeconds), "-segment_format", "mpegts", filepath.Join(dir, "seg%03d.ts"))
	run(t, args)
	segs := make([][]byte, n)
	for i := range segs {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("seg%03d.ts", i)))
		if err != nil {
			t.Fatal(err)
		}
		segs[i] = b
	}
	return segs
}

func run(t testing.TB, args []string) {
	t.Helper()
	if out, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %v: %v\n%s", args, err, out)
	}
}

// SplitFragments reads the fragmented MP4 at path and returns its init
// section (every box before the first moof) and its fragments (each moof
// with the mdat after it).
func SplitFragments(t testing.TB, path string) (init []byte, frags [][]byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(b); {
		if len(b)-off < 8 {
			t.Fatalf("%s: truncated box at %d", path, off)
		}
		size := int(binary.BigEndian.Uint32(b[off:]))
		if size < 8 || off+size > len(b) {
			t.Fatalf("%s: box of %d bytes at %d", path, size, off)
		}
		switch typ := string(b[off+4 : off+8]); {
		case typ == "moof":
			frags = append(frags, b[off:off+size])
		case typ == "mdat" && len(frags) > 0:
			frags[len(frags)-1] = append(frags[len(frags)-1], b[off:off+size]...)
		case len(frags) == 0:
			init = append(init, b[off:off+size]...)
		}
		off += size
	}
	return init, frags
}

package testutil

import (
	"bytes"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// Decoded is what ffmpeg decodes of an input's first video stream.
type Decoded struct {
	Frames   int
	Duration float64 // s, the sum of the frames' durations
	Errors   string  // ffmpeg's stderr at -v error: empty when it decoded cleanly
}

// Decode has ffmpeg decode every frame of the first video stream of input
// (a file or URL; in are options before -i, e.g. -protocol_whitelist).
// Frames and durations come from its framemd5 output, as ffmpeg 5.1's HLS
// reader shifts the timestamps of fMP4 segments, so their extent says little.
func Decode(t testing.TB, input string, in ...string) Decoded {
	t.Helper()
	RequireBinary(t, "ffmpeg")
	args := append([]string{"-nostdin", "-v", "error"}, in...)
	args = append(args, "-i", input, "-map", "0:v:0", "-f", "framemd5", "-")
	cmd := exec.Command("ffmpeg", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return Decoded{Errors: err.Error() + "\n" + stderr.String()}
	}
	d := Decoded{Errors: stderr.String()}
	var num, den float64
	var total int64
	for _, l := range strings.Split(stdout.String(), "\n") {
		if tb, ok := strings.CutPrefix(l, "#tb 0: "); ok {
			n, dd, _ := strings.Cut(tb, "/")
			num, _ = strconv.ParseFloat(n, 64)
			den, _ = strconv.ParseFloat(dd, 64)
			continue
		}
		if l == "" || l[0] == '#' {
			continue
		}
		f := strings.Split(l, ",")
		if len(f) != 6 {
			t.Fatalf("ffmpeg framemd5 line %q", l)
		}
		dur, err := strconv.ParseInt(strings.TrimSpace(f[3]), 10, 64)
		if err != nil {
			t.Fatalf("ffmpeg framemd5 line %q: %v", l, err)
		}
		total += dur
		d.Frames++
	}
	if den > 0 {
		d.Duration = float64(total) * num / den
	}
	return d
}

// CountFrames is the number of video frames ffprobe reads in path.
func CountFrames(t testing.TB, path string) int {
	t.Helper()
	RequireBinary(t, "ffprobe")
	out, err := exec.Command("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", path, err, out)
	}
	// MPEG-TS lists the stream under its program too.
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	n, err := strconv.Atoi(strings.TrimSuffix(first, ","))
	if err != nil {
		t.Fatalf("ffprobe %s: %q", path, out)
	}
	return n
}

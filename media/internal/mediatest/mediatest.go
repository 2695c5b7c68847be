// Package mediatest runs ffmpeg and ffprobe for the media packages' tests
// and splits Annex B streams into access units.
package mediatest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/media/internal/nalu"
)

// FFmpeg runs ffmpeg with args (quiet, overwriting) and returns the bytes
// of out, a file name inside a fresh temp dir.
func FFmpeg(t testing.TB, out string, args ...string) (string, []byte) {
	t.Helper()
	testutil.RequireBinary(t, "ffmpeg")
	path := filepath.Join(t.TempDir(), out)
	full := append([]string{"-hide_banner", "-loglevel", "error", "-nostdin", "-y"}, args...)
	full = append(full, path)
	if b, err := exec.Command("ffmpeg", full...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %v: %v\n%s", args, err, b)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, b
}

// Probe is the part of ffprobe's JSON output the tests check.
type Probe struct {
	Streams []struct {
		Index         int    `json:"index"`
		CodecName     string `json:"codec_name"`
		CodecType     string `json:"codec_type"`
		Width         int    `json:"width"`
		Height        int    `json:"height"`
		SampleRate    string `json:"sample_rate"`
		Channels      int    `json:"channels"`
		NbReadFrames  string `json:"nb_read_frames"`
		NbReadPackets string `json:"nb_read_packets"`
		Duration      string `json:"duration"`
	} `json:"streams"`
	Format struct {
		FormatName string `json:"format_name"`
		Duration   string `json:"duration"`
	} `json:"format"`
	Packets []Packet `json:"packets"`
}

// Packet is one ffprobe -show_packets entry.
type Packet struct {
	StreamIndex int    `json:"stream_index"`
	PTS         int64  `json:"pts"`
	DTS         int64  `json:"dts"`
	Duration    int64  `json:"duration"`
	Size        string `json:"size"`
	Flags       string `json:"flags"`
}

// FFprobe runs ffprobe -of json with extra (e.g. -show_streams) on path and
// fails the test when ffprobe reports any error.
func FFprobe(t testing.TB, path string, extra ...string) Probe {
	t.Helper()
	testutil.RequireBinary(t, "ffprobe")
	args := append([]string{"-v", "error", "-of", "json"}, extra...)
	args = append(args, path)
	cmd := exec.Command("ffprobe", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("ffprobe %s: %v\n%s", path, err, stderr.Bytes())
	}
	var p Probe
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("ffprobe json: %v\n%s", err, out)
	}
	return p
}

// SplitAnnexB returns the NAL units of an Annex B byte stream.
func SplitAnnexB(b []byte) [][]byte { return nalu.SplitAnnexB(b) }

// AccessUnits groups NAL units into access units, each starting at an
// access unit delimiter (isAUD), which the delimiter itself is dropped from.
func AccessUnits(nalus [][]byte, isAUD func([]byte) bool) [][][]byte {
	var aus [][][]byte
	for _, n := range nalus {
		if isAUD(n) {
			aus = append(aus, nil)
			continue
		}
		if len(aus) == 0 {
			aus = append(aus, nil)
		}
		aus[len(aus)-1] = append(aus[len(aus)-1], n)
	}
	return aus
}

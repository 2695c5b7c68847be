package mpegts

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/vigilcloud/vigil/media/internal/mediatest"
)

// BenchmarkReader reads a 6-s 720p H.264 + AAC segment as fMP4 (what a
// clip does per MPEG-TS segment); BenchmarkCopy copies the same bytes,
// the floor.
func BenchmarkReader(b *testing.B) {
	ts := benchTS(b)
	b.SetBytes(int64(len(ts)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := io.Copy(io.Discard, NewReader(bytes.NewReader(ts), int64(len(ts)))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCopy(b *testing.B) {
	ts := benchTS(b)
	b.SetBytes(int64(len(ts)))
	for b.Loop() {
		if _, err := io.Copy(io.Discard, bytes.NewReader(ts)); err != nil {
			b.Fatal(err)
		}
	}
}

func benchTS(b *testing.B) []byte {
	b.Helper()
	p, _ := mediatest.FFmpeg(b, "in.ts", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-f", "lavfi", "-i", "sine=sample_rate=48000",
		"-t", "6", "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-c:a", "aac", "-f", "mpegts")
	ts, err := os.ReadFile(p)
	if err != nil {
		b.Fatal(err)
	}
	return ts
}

package picsize

import (
	"bytes"
	"os"
	"testing"

	"github.com/vigilcloud/vigil/media"
)

func seed(f *testing.F, name string) []byte {
	b, err := os.ReadFile("../../media/testdata/" + name)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzTS: the TS/PES scan never panics, reads only a prefix, stays within
// its bound, and agrees with FromTS.
func FuzzTS(f *testing.F) {
	ts := seed(f, "sample.ts")
	f.Add(ts)
	f.Add(ts[:6*tsPacket])
	f.Add(ts[:3*tsPacket+17])
	f.Add([]byte{0x47, 0x40, 0x00, 0x10, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		head, info, err := Read(bytes.NewReader(b), media.ContentTypeTS)
		s := info.Size
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, head) || len(head) > MaxTSPackets*tsPacket {
			t.Fatalf("head of %d bytes", len(head))
		}
		if got := FromTS(b); got != s {
			t.Fatalf("FromTS %+v, Read %+v", got, s)
		}
		if s.Known() && (s.Width > 16384 || s.Height > 16384) {
			t.Fatalf("size %+v", s)
		}
	})
}

// FuzzMP4: reading an init section never panics and stays within its bound.
func FuzzMP4(f *testing.F) {
	mp4 := seed(f, "sample.mp4")
	f.Add(mp4[:min(len(mp4), 4096)])
	f.Add(mp4[:100])
	f.Fuzz(func(t *testing.T, b []byte) {
		head, _, err := Read(bytes.NewReader(b), media.ContentTypeMP4)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, head) || len(head) > MaxMP4Head+16 {
			t.Fatalf("head of %d bytes", len(head))
		}
	})
}

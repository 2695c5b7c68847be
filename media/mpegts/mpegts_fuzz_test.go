package mpegts

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/vigilcloud/vigil/media/fmp4"
)

// FuzzReader: any input is read as fMP4 or refused with ErrMalformed,
// without a panic, and what is read parses back.
func FuzzReader(f *testing.F) {
	real, _ := os.ReadFile("../testdata/sample.ts")
	f.Add(real[:PacketSize*8])
	f.Add(real)
	f.Add([]byte{0x47, 0x40, 0x00, 0x10, 0x00})
	f.Add(bytes.Repeat([]byte{0x47}, PacketSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := io.ReadAll(NewReader(bytes.NewReader(data), 1<<20))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// What it reads is well-formed fMP4.
		rd := fmp4.NewReader(bytes.NewReader(b))
		if _, _, err := rd.ReadInit(); err != nil {
			t.Fatalf("init section: %v", err)
		}
		for {
			_, err := rd.NextFragment()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				t.Fatalf("fragment: %v", err)
			}
		}
	})
}

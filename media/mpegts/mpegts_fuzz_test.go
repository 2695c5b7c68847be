package mpegts

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

// FuzzDemux: any input is demuxed or refused with ErrMalformed, without a
// panic, and what is demuxed remuxes.
func FuzzDemux(f *testing.F) {
	real, _ := os.ReadFile("../testdata/sample.ts")
	f.Add(real[:PacketSize*8])
	f.Add(real)
	f.Add([]byte{0x47, 0x40, 0x00, 0x10, 0x00})
	f.Add(bytes.Repeat([]byte{0x47}, PacketSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		seg, err := Demux(bytes.NewReader(data), 1<<20)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(seg.Tracks) == 0 || len(seg.Fragment.Tracks) != len(seg.Tracks) {
			t.Fatalf("tracks %d, fragment tracks %d", len(seg.Tracks), len(seg.Fragment.Tracks))
		}
		var b bytes.Buffer
		if err := Remux(&b, seg); err != nil {
			t.Fatalf("demuxed segment does not remux: %v", err)
		}
	})
}

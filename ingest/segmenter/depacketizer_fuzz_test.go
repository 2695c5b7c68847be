package segmenter

import (
	"testing"
)

func FuzzH264Depacketizer(f *testing.F) {
	f.Add([]byte{0x65, 0x88, 0x84}, []byte{0x7c, 0x85, 1, 2}, []byte{0x7c, 0x45, 3})
	f.Add([]byte{0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce}, []byte{0x7c, 0x05, 3}, []byte{0x1c, 0x41})
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		var d h264Depacketizer
		checkNALUs(t, d.unmarshal, 1, a, b, c)
	})
}

func FuzzH265Depacketizer(f *testing.F) {
	f.Add([]byte{0x26, 0x01, 0xaf, 0x01}, []byte{0x62, 0x01, 0x93, 1, 2}, []byte{0x62, 0x01, 0x53, 3})
	f.Add([]byte{0x60, 0x01, 0, 4, 0x40, 0x01, 0x0c, 0x01, 0, 2, 0x44, 0x01}, []byte{0x62, 0x01, 0x13, 3}, []byte{0x64, 0x01, 0x26, 0x10, 0x99, 0xaf})
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		var d h265Depacketizer
		checkNALUs(t, d.unmarshal, 2, a, b, c)
	})
}

// checkNALUs feeds payloads in one reused buffer: every NAL unit returned
// has at least minLen bytes.
func checkNALUs(t *testing.T, unmarshal func([]byte) ([][]byte, error), minLen int, payloads ...[]byte) {
	buf := make([]byte, 1500)
	for _, p := range payloads {
		nalus, err := unmarshal(buf[:copy(buf, p)])
		if err != nil {
			continue
		}
		for _, n := range nalus {
			if len(n) < minLen {
				t.Fatalf("NAL unit of %d bytes from %x", len(n), p)
			}
		}
	}
}

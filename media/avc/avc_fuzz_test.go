package avc

import "testing"

func FuzzParseSPS(f *testing.F) {
	f.Add(sps1080)
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSPS(b)
		if err != nil {
			return
		}
		if s.Width <= 0 || s.Height <= 0 || s.Width > maxDim || s.Height > maxDim {
			t.Fatalf("accepted SPS with size %dx%d", s.Width, s.Height)
		}
		if _, err := DecoderConfigurationRecord(b, []byte{0x68, 0xce}); err != nil {
			t.Fatalf("avcC of an accepted SPS: %v", err)
		}
		if nalus, err := SplitAVCC(AVCC([][]byte{b})); err != nil || len(nalus) != 1 {
			t.Fatalf("AVCC round trip: %v", err)
		}
	})
}

func FuzzSplitAVCC(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 6})
	f.Fuzz(func(t *testing.T, b []byte) {
		nalus, err := SplitAVCC(b)
		if err != nil {
			return
		}
		if got := AVCC(nalus); string(got) != string(b) {
			t.Fatalf("re-joined %x, want %x", got, b)
		}
	})
}

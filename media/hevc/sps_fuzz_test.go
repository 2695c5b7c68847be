package hevc

import "testing"

func FuzzParseSPS(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSPS(b)
		if err != nil {
			return
		}
		if s.Width <= 0 || s.Height <= 0 || s.Width > maxDim || s.Height > maxDim {
			t.Fatalf("accepted SPS with size %dx%d", s.Width, s.Height)
		}
		vps, pps := []byte{0x40, 0x01, 0x0c}, []byte{0x44, 0x01, 0xc1}
		rec, err := DecoderConfigurationRecord(vps, b, pps)
		if err != nil {
			t.Fatalf("hvcC of an accepted SPS: %v", err)
		}
		if rec[1]&0x1f != s.ProfileIDC || rec[12] != s.LevelIDC {
			t.Fatalf("hvcC %x for %+v", rec, s)
		}
	})
}

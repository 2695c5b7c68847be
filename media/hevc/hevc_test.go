package hevc

import (
	"bytes"
	"errors"
	"testing"

	"github.com/vigilcloud/vigil/media/internal/mediatest"
)

// ffmpegParams encodes one frame with libx265 and returns its VPS, SPS, PPS.
func ffmpegParams(t *testing.T, size string, extra ...string) (vps, sps, pps []byte) {
	t.Helper()
	args := append([]string{"-f", "lavfi", "-i", "testsrc2=size=" + size + ":rate=25", "-frames:v", "1", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"}, extra...)
	args = append(args, "-f", "hevc")
	_, raw := mediatest.FFmpeg(t, "out.hevc", args...)
	for _, n := range mediatest.SplitAnnexB(raw) {
		switch NALType(n) {
		case NALVPS:
			vps = n
		case NALSPS:
			sps = n
		case NALPPS:
			pps = n
		}
	}
	if vps == nil || sps == nil || pps == nil {
		t.Fatal("parameter sets missing from ffmpeg output")
	}
	return vps, sps, pps
}

func TestParseSPSFFmpeg(t *testing.T) {
	cases := []struct {
		name          string
		size          string
		extra         []string
		width, height int
		profile       uint8
		chroma        uint32
	}{
		{"720p", "1280x720", nil, 1280, 720, 1, 1},
		{"qvga", "320x240", nil, 320, 240, 1, 1},
		// Coded as 336x192 (multiples of the 8-pixel minimum CU) with a conformance window.
		{"odd-window", "330x186", nil, 330, 186, 1, 1},
		{"main10", "176x144", []string{"-pix_fmt", "yuv420p10le"}, 176, 144, 2, 1},
		{"rext-444", "176x144", []string{"-pix_fmt", "yuv444p"}, 176, 144, 4, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			vps, sps, pps := ffmpegParams(t, c.size, c.extra...)
			s, err := ParseSPS(sps)
			if err != nil {
				t.Fatalf("ParseSPS(%x): %v", sps, err)
			}
			if s.Width != c.width || s.Height != c.height || s.ProfileIDC != c.profile || s.ChromaFormatIDC != c.chroma || s.LevelIDC == 0 {
				t.Fatalf("ParseSPS(%x) = %+v, want %dx%d profile %d chroma %d", sps, s, c.width, c.height, c.profile, c.chroma)
			}
			rec, err := DecoderConfigurationRecord(vps, sps, pps)
			if err != nil {
				t.Fatal(err)
			}
			// general_profile_idc and level sit at fixed places in hvcC.
			if rec[0] != 1 || rec[1]&0x1f != c.profile || rec[12] != s.LevelIDC || rec[22] != 3 {
				t.Fatalf("hvcC %x", rec)
			}
		})
	}
}

func TestParseSPSBad(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":   nil,
		"short":   {0x42, 0x01},
		"not-sps": {0x40, 0x01, 0x0c, 0x01},
		// max_sub_layers_minus1 = 7 is out of range.
		"sub-layers": {0x42, 0x01, 0x0e, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x00},
		"truncated":  {0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90},
	} {
		if _, err := ParseSPS(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
	if _, err := DecoderConfigurationRecord(nil, nil, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("hvcC of nothing: %v", err)
	}
}

func TestNALHelpers(t *testing.T) {
	idr := []byte{NALIDRWRADL << 1, 1, 0xaf}
	trail := []byte{1 << 1, 1, 0xd0}
	cra := []byte{NALCRA << 1, 1, 0x50}
	if NALType(idr) != NALIDRWRADL || NALType([]byte{0x40}) != 0 {
		t.Fatal("NALType")
	}
	if !IsKeyframe([][]byte{trail, idr}) || !IsKeyframe([][]byte{cra}) || IsKeyframe([][]byte{trail}) {
		t.Fatal("IsKeyframe")
	}
	b := AVCC([][]byte{idr, trail})
	got, err := SplitAVCC(b)
	if err != nil || len(got) != 2 || !bytes.Equal(got[0], idr) {
		t.Fatalf("%x %v", got, err)
	}
	if _, err := SplitAVCC(b[:len(b)-1]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated: %v", err)
	}
}

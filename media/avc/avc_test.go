package avc

import (
	"bytes"
	"errors"
	"testing"

	"github.com/vigilcloud/vigil/media/internal/mediatest"
)

// ffmpegSPS encodes one frame with libx264 and returns its SPS.
func ffmpegSPS(t *testing.T, size string, extra ...string) []byte {
	t.Helper()
	args := append([]string{"-f", "lavfi", "-i", "testsrc2=size=" + size + ":rate=25", "-frames:v", "1", "-c:v", "libx264", "-preset", "ultrafast"}, extra...)
	args = append(args, "-f", "h264")
	_, raw := mediatest.FFmpeg(t, "out.h264", args...)
	for _, n := range mediatest.SplitAnnexB(raw) {
		if NALType(n) == NALSPS {
			return n
		}
	}
	t.Fatal("no SPS in ffmpeg output")
	return nil
}

func TestParseSPSFFmpeg(t *testing.T) {
	cases := []struct {
		name          string
		size          string
		extra         []string
		width, height int
		profile       uint8
		frameMBSOnly  bool
	}{
		{"qvga", "320x240", nil, 320, 240, 66, true}, // ultrafast: constrained baseline
		{"720p", "1280x720", nil, 1280, 720, 66, true},
		// 1080 lines are coded as 1088 and cropped by 8.
		{"1080p-cropped", "1920x1080", nil, 1920, 1080, 66, true},
		{"odd-cropped", "330x186", nil, 330, 186, 66, true},
		{"high-444", "176x144", []string{"-pix_fmt", "yuv444p", "-profile:v", "high444"}, 176, 144, 244, true},
		// JVT quantisation matrices are sent as scaling lists in the SPS.
		{"scaling-lists", "176x144", []string{"-x264-params", "cqm=jvt"}, 176, 144, 100, true},
		{"high10", "176x144", []string{"-pix_fmt", "yuv420p10le", "-profile:v", "high10"}, 176, 144, 110, true},
		{"interlaced-1080", "1920x1080", []string{"-preset", "veryfast", "-flags", "+ildct+ilme", "-x264-params", "interlaced=1"}, 1920, 1080, 100, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			nal := ffmpegSPS(t, c.size, c.extra...)
			s, err := ParseSPS(nal)
			if err != nil {
				t.Fatalf("ParseSPS(%x): %v", nal, err)
			}
			if s.Width != c.width || s.Height != c.height || s.ProfileIDC != c.profile || s.FrameMBSOnly != c.frameMBSOnly {
				t.Fatalf("ParseSPS(%x) = %+v, want %dx%d profile %d frame_mbs_only %v", nal, s, c.width, c.height, c.profile, c.frameMBSOnly)
			}
			if s.LevelIDC == 0 {
				t.Fatalf("level 0: %+v", s)
			}
			rec, err := DecoderConfigurationRecord(nal, []byte{0x68, 0xce, 0x38, 0x80})
			if err != nil || rec[1] != c.profile || rec[4] != 0xff {
				t.Fatalf("avcC %x: %v", rec, err)
			}
		})
	}
}

// A 1920x1080 SPS from libx264 (High, level 4.0), with an emulation
// prevention byte inserted where its payload has 00 00 0x (escaped form is
// what arrives on the wire).
var sps1080 = []byte{0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xc8, 0x3c, 0x60, 0xc6, 0x58}

func TestParseSPSFixed(t *testing.T) {
	s, err := ParseSPS(sps1080)
	if err != nil {
		t.Fatal(err)
	}
	if s.Width != 1920 || s.Height != 1080 || s.ProfileIDC != 100 || s.LevelIDC != 40 {
		t.Fatalf("%+v", s)
	}
}

func TestParseSPSBad(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":     nil,
		"short":     {0x67, 0x42},
		"not-sps":   {0x68, 0x42, 0x00, 0x1e, 0xff},
		"truncated": sps1080[:8],
		// pic_order_cnt_type 3 does not exist.
		"bad-poc": {0x67, 0x42, 0x00, 0x1e, 0x89, 0x80},
		// A 16-bit-zero Exp-Golomb prefix run past 32 bits.
		"long-golomb": {0x67, 0x42, 0x00, 0x1e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01},
	} {
		if _, err := ParseSPS(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}

func TestAVCC(t *testing.T) {
	nalus := [][]byte{{0x65, 1, 2, 3}, {0x06, 9}}
	b := AVCC(nalus)
	if !bytes.Equal(b, []byte{0, 0, 0, 4, 0x65, 1, 2, 3, 0, 0, 0, 2, 0x06, 9}) {
		t.Fatalf("%x", b)
	}
	got, err := SplitAVCC(b)
	if err != nil || len(got) != 2 || !bytes.Equal(got[0], nalus[0]) || !bytes.Equal(got[1], nalus[1]) {
		t.Fatalf("%x %v", got, err)
	}
	if !IsKeyframe(got) || IsKeyframe(got[1:]) || NALType(nil) != 0 {
		t.Fatal("keyframe detection")
	}
	for name, bad := range map[string][]byte{
		"trailing":  append(b, 0, 0),
		"overlong":  {0, 0, 0, 9, 1, 2},
		"zero-size": {0, 0, 0, 0},
		"huge":      {0xff, 0xff, 0xff, 0xff, 1},
	} {
		if _, err := SplitAVCC(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

package ingest

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/media"
)

// ffmpegMP4 encodes 1 s of test video as MP4 with movflags.
func ffmpegMP4(t *testing.T, movflags string) []byte {
	t.Helper()
	testutil.RequireBinary(t, "ffmpeg")
	out := filepath.Join(t.TempDir(), "v.mp4")
	cmd := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "1", "-c:v", "libx264", "-preset", "ultrafast",
		"-g", "25", "-pix_fmt", "yuv420p", "-movflags", movflags, "-f", "mp4", out)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", b)
	body, err := os.ReadFile(out)
	require.NoError(t, err)
	return body
}

func TestPlainMP4IsRefused(t *testing.T) {
	e := newEnv(t)
	for _, flags := range []string{"+faststart", "-faststart"} {
		t.Run("plain "+flags, func(t *testing.T) {
			r := e.do(t, put{body: ffmpegMP4(t, flags)})
			assert.Equal(t, 415, r.status, r.body)
			assert.Equal(t, "mp4_not_fragmented", r.code, r.body)
		})
	}
	assert.Empty(t, objects(t, e.store), "a refused plain MP4 leaves nothing behind")
	assert.Empty(t, indexed(t, e.idx, ref1))

	r := e.do(t, put{body: ffmpegMP4(t, "+frag_keyframe+empty_moov+default_base_moof")})
	assert.Equal(t, 201, r.status, r.body)
	r = e.do(t, put{body: testdata(t, "sample.mp4"), start: nowMS(-10 * time.Second)})
	assert.Equal(t, 201, r.status, r.body)
	// Media segments without a moov (styp, moof, mdat) are not judged.
	r = e.do(t, put{body: segment(t, 100), start: nowMS(-20 * time.Second)})
	assert.Equal(t, 201, r.status, r.body)
}

func box(typ string, body ...[]byte) []byte {
	b := bytes.Join(body, nil)
	h := make([]byte, 8, 8+len(b))
	binary.BigEndian.PutUint32(h, uint32(8+len(b)))
	copy(h[4:], typ)
	return append(h, b...)
}

func TestFragmentedCheck(t *testing.T) {
	ftyp := box("ftyp", []byte("iso5\x00\x00\x02\x00"))
	mvhd := box("mvhd", make([]byte, 100))
	large := func(typ string, body []byte) []byte { // 64-bit largesize header
		h := make([]byte, 16, 16+len(body))
		binary.BigEndian.PutUint32(h, 1)
		copy(h[4:], typ)
		binary.BigEndian.PutUint64(h[8:], uint64(16+len(body)))
		return append(h, body...)
	}
	tests := []struct {
		name string
		body []byte
		ok   bool
	}{
		{"fragmented", bytes.Join([][]byte{ftyp, box("moov", mvhd, box("trak", make([]byte, 50)), box("mvex", box("trex", make([]byte, 24)))), box("moof", make([]byte, 16)), box("mdat", make([]byte, 40))}, nil), true},
		{"empty mvex last", bytes.Join([][]byte{ftyp, box("moov", mvhd, box("mvex"))}, nil), true},
		{"largesize moov and mvex", bytes.Join([][]byte{ftyp, large("moov", append(mvhd, large("mvex", nil)...)), box("mdat", make([]byte, 40))}, nil), true},
		{"no moov", bytes.Join([][]byte{ftyp, box("mdat", make([]byte, 40))}, nil), true},
		{"plain", bytes.Join([][]byte{ftyp, box("moov", mvhd, box("trak", make([]byte, 50))), box("mdat", make([]byte, 40))}, nil), false},
		{"plain, moov last", bytes.Join([][]byte{ftyp, box("mdat", make([]byte, 40)), box("moov", mvhd, box("trak", make([]byte, 50)))}, nil), false},
		{"empty moov", bytes.Join([][]byte{ftyp, box("moov")}, nil), false},
		{"mvex after the moov", bytes.Join([][]byte{ftyp, box("moov", mvhd), box("mvex")}, nil), false},
		{"moov to the end", append(ftyp, 0, 0, 0, 0, 'm', 'o', 'o', 'v', 1, 2, 3), false},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 3, 7, 1 << 20} {
			// Behind the validator, as in newBody: it holds the last byte
			// back until the end, so the verdict can come instead of it.
			v, err := media.NewValidator(&chunker{b: tt.body, n: chunk}, "video/mp4")
			require.NoError(t, err)
			got, err := io.ReadAll(requireFragmented(v, "video/mp4"))
			if tt.ok {
				assert.NoError(t, err, "%s, %d-byte reads", tt.name, chunk)
				assert.Equal(t, tt.body, got, tt.name)
			} else {
				assert.ErrorIs(t, err, errNotFragmented, "%s, %d-byte reads", tt.name, chunk)
				assert.Less(t, len(got), len(tt.body), "%s: the last byte is withheld", tt.name)
			}
		}
	}
	// MPEG-TS passes untouched.
	got, err := io.ReadAll(requireFragmented(bytes.NewReader([]byte{0x47, 1, 2}), "video/mp2t"))
	assert.NoError(t, err)
	assert.Len(t, got, 3)
}

// chunker returns b at most n bytes per Read.
type chunker struct {
	b []byte
	n int
}

func (c *chunker) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[k:]
	return k, nil
}

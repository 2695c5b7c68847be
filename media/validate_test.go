package media

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"testing"
	"testing/iotest"
)

func box(typ string, body []byte) []byte {
	b := make([]byte, 8, 8+len(body))
	binary.BigEndian.PutUint32(b, uint32(8+len(body)))
	copy(b[4:], typ)
	return append(b, body...)
}

func largeBox(typ string, body []byte) []byte {
	b := make([]byte, 16, 16+len(body))
	binary.BigEndian.PutUint32(b, 1)
	copy(b[4:], typ)
	binary.BigEndian.PutUint64(b[8:], uint64(16+len(body)))
	return append(b, body...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func tsPackets(n int) []byte {
	b := make([]byte, n*188)
	for i := 0; i < n; i++ {
		b[i*188] = 0x47
		b[i*188+1] = byte(i)
	}
	return b
}

func readAll(t *testing.T, data []byte, ct string, chunk int) ([]byte, error) {
	t.Helper()
	var r io.Reader = bytes.NewReader(data)
	if chunk > 0 {
		r = iotest.OneByteReader(r)
	}
	v, err := NewValidator(r, ct)
	if err != nil {
		t.Fatal(err)
	}
	return io.ReadAll(v)
}

func TestValidator(t *testing.T) {
	realMP4, err := os.ReadFile("testdata/sample.mp4")
	if err != nil {
		t.Fatal(err)
	}
	realTS, err := os.ReadFile("testdata/sample.ts")
	if err != nil {
		t.Fatal(err)
	}
	sizeZeroLast := cat(box("styp", []byte("msdh")), []byte{0, 0, 0, 0, 'm', 'd', 'a', 't', 1, 2, 3})
	tests := []struct {
		name string
		ct   string
		data []byte
		ok   bool
	}{
		{"real fmp4", ContentTypeMP4, realMP4, true},
		{"real ts", ContentTypeTS, realTS, true},
		{"content type with params", "Video/MP4; codecs=avc1", box("ftyp", []byte("isom")), true},
		{"segment styp moof mdat", ContentTypeMP4, cat(box("styp", []byte("msdh")), box("moof", make([]byte, 40)), box("mdat", make([]byte, 1000))), true},
		{"starts with moof", ContentTypeMP4, cat(box("moof", nil), box("mdat", []byte{1})), true},
		{"largesize", ContentTypeMP4, cat(box("styp", nil), largeBox("mdat", make([]byte, 300))), true},
		{"size 0 last box", ContentTypeMP4, sizeZeroLast, true},
		{"empty", ContentTypeMP4, nil, false},
		{"starts with mdat", ContentTypeMP4, box("mdat", []byte{1, 2}), false},
		{"binary type", ContentTypeMP4, cat(box("ftyp", nil), box("m\x00at", nil)), false},
		{"size below 8", ContentTypeMP4, []byte{0, 0, 0, 4, 'f', 't', 'y', 'p'}, false},
		{"largesize below 16", ContentTypeMP4, cat(box("ftyp", nil), []byte{0, 0, 0, 1, 'm', 'd', 'a', 't', 0, 0, 0, 0, 0, 0, 0, 8}), false},
		{"truncated body", ContentTypeMP4, cat(box("ftyp", nil), box("mdat", make([]byte, 100)))[:50], false},
		{"truncated header", ContentTypeMP4, cat(box("ftyp", nil), []byte{0, 0, 0}), false},
		{"truncated largesize header", ContentTypeMP4, cat(box("ftyp", nil), largeBox("mdat", nil)[:12]), false},
		{"size 0 only box", ContentTypeMP4, cat([]byte{0, 0, 0, 0, 'f', 't', 'y', 'p'}), true},
		{"trailing garbage", ContentTypeMP4, cat(realMP4, []byte("garbage")), false},
		{"html", ContentTypeMP4, []byte("<html><body>not video</body></html>"), false},
		{"real ts as mp4", ContentTypeMP4, realTS, false},
		{"real mp4 as ts", ContentTypeTS, realMP4, false},
		{"ts empty", ContentTypeTS, nil, false},
		{"ts one packet", ContentTypeTS, tsPackets(1), true},
		{"ts short", ContentTypeTS, tsPackets(3)[:500], false},
		{"ts long", ContentTypeTS, append(tsPackets(3), 0x47), false},
		{"ts bad sync", ContentTypeTS, func() []byte { b := tsPackets(4); b[188*2] = 0x48; return b }(), false},
	}
	for _, tt := range tests {
		for _, chunk := range []int{0, 1} {
			got, err := readAll(t, tt.data, tt.ct, chunk)
			if tt.ok {
				if err != nil {
					t.Errorf("%s (chunk %d): %v", tt.name, chunk, err)
				} else if !bytes.Equal(got, tt.data) {
					t.Errorf("%s (chunk %d): output differs from input", tt.name, chunk)
				}
				continue
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%s (chunk %d): err = %v, want ErrMalformed", tt.name, chunk, err)
			}
			if len(got) >= len(tt.data) && len(tt.data) > 0 {
				t.Errorf("%s (chunk %d): delivered all %d bytes of a malformed stream", tt.name, chunk, len(got))
			}
		}
	}
}

func TestValidatorUnsupportedType(t *testing.T) {
	for _, ct := range []string{"", "application/octet-stream", "video/webm", "text/plain", "video/mp4x"} {
		if _, err := NewValidator(bytes.NewReader(nil), ct); !errors.Is(err, ErrUnsupportedType) {
			t.Errorf("%q: err = %v, want ErrUnsupportedType", ct, err)
		}
	}
}

// A consumer that reads exactly the stream's length (as storage backends do)
// must still get the verdict on the end of the stream.
func TestValidatorExactLengthConsumerSeesVerdict(t *testing.T) {
	bad := cat(box("ftyp", nil), box("mdat", make([]byte, 100)))[:60]
	v, err := NewValidator(bytes.NewReader(bad), ContentTypeMP4)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.CopyN(io.Discard, v, int64(len(bad)))
	if !errors.Is(err, ErrMalformed) || n == int64(len(bad)) {
		t.Fatalf("CopyN = %d, %v; want fewer bytes and ErrMalformed", n, err)
	}
}

func TestValidatorPassesReadErrors(t *testing.T) {
	boom := errors.New("connection reset")
	r := io.MultiReader(bytes.NewReader(box("ftyp", nil)), iotest.ErrReader(boom))
	v, _ := NewValidator(r, ContentTypeMP4)
	if _, err := io.ReadAll(v); !errors.Is(err, boom) || errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v, want the reader's error", err)
	}
}

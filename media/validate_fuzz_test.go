package media

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"testing/iotest"
)

func fuzzValidate(f *testing.F, ct string, seeds ...[]byte) {
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := NewValidator(iotest.HalfReader(bytes.NewReader(data)), ct)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(v)
		if err == nil {
			if !bytes.Equal(got, data) {
				t.Fatal("valid stream not passed through unchanged")
			}
			return
		}
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("unexpected error %v", err)
		}
		if len(got) >= len(data) && len(data) > 0 {
			t.Fatal("malformed stream delivered completely")
		}
		if !bytes.Equal(got, data[:len(got)]) {
			t.Fatal("delivered bytes differ from input")
		}
	})
}

func FuzzValidateMP4(f *testing.F) {
	real, _ := os.ReadFile("testdata/sample.mp4")
	fuzzValidate(f, ContentTypeMP4,
		real[:1024], // keep seeds small; the whole file is in the table test
		cat(box("styp", []byte("msdh")), box("moof", make([]byte, 16)), box("mdat", []byte{1, 2, 3})),
		cat(box("ftyp", nil), largeBox("mdat", []byte{9})),
		[]byte{0, 0, 0, 0, 'm', 'o', 'o', 'f', 1},
		[]byte{0, 0, 0, 1, 'f', 't', 'y', 'p', 0, 0, 0, 0, 0, 0, 0, 16},
		nil,
	)
}

func FuzzValidateTS(f *testing.F) {
	real, _ := os.ReadFile("testdata/sample.ts")
	fuzzValidate(f, ContentTypeTS, real[:188*4], tsPackets(2), tsPackets(1)[:100], nil)
}

package fmp4

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReader: any input ends in io.EOF or an error, never a panic; errors
// for bad input wrap ErrMalformed. Run it with -fuzzminimizetime=100x: the
// default minimisation of the multi-KiB seeds stalls the fuzzer.
func FuzzReader(f *testing.F) {
	f.Add(rewrite(f, testTracks(), []Fragment{testFragment(1), testFragment(2)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b))
		tracks, n, err := r.ReadInit()
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ReadInit: %v does not wrap ErrMalformed", err)
			}
			return
		}
		if n <= 0 || n > int64(len(b)) {
			t.Fatalf("init size %d of %d bytes", n, len(b))
		}
		ids := map[uint32]bool{}
		for _, tr := range tracks {
			ids[tr.ID] = true
		}
		for i := 0; ; i++ {
			fr, err := r.NextFragment()
			if err == io.EOF {
				return
			}
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("NextFragment: %v does not wrap ErrMalformed", err)
				}
				return
			}
			for _, tf := range fr.Tracks {
				if !ids[tf.TrackID] {
					t.Fatalf("fragment for track %d not in the init", tf.TrackID)
				}
			}
			if i > len(b) {
				t.Fatal("more fragments than bytes")
			}
		}
	})
}

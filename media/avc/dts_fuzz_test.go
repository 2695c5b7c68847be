package avc

import (
	"testing"
)

func FuzzDTSExtractor(f *testing.F) {
	f.Add([]byte{0, 4, 2, 1, 3, 8, 6, 5, 7}, uint8(4))
	f.Add([]byte{1, 1, 1, 0, 255}, uint8(1))
	f.Fuzz(func(t *testing.T, ptss []byte, depth uint8) {
		e := NewDTSExtractor[int](int(depth % 8))
		n := 0
		var last int64
		check := func(fs []Frame[int]) {
			for _, fr := range fs {
				if fr.V != n {
					t.Fatalf("frame %d out of order (got %d)", n, fr.V)
				}
				if n > 0 && fr.DTS <= last {
					t.Fatalf("dts %d not after %d", fr.DTS, last)
				}
				last = fr.DTS
				n++
			}
		}
		for i, p := range ptss {
			check(e.Push(int64(p)*1000, i))
		}
		check(e.Flush())
		if n != len(ptss) {
			t.Fatalf("got %d frames of %d", n, len(ptss))
		}
	})
}

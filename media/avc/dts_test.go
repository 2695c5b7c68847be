package avc

import (
	"testing"
)

// x264's default GOP with a B-pyramid, in decode order (PTS in frames).
func TestDTSExtractorBPyramid(t *testing.T) {
	decode := []int64{0, 4, 2, 1, 3, 8, 6, 5, 7, 12, 10, 9, 11}
	e := NewDTSExtractor[int](0)
	var got []Frame[int]
	for i, p := range decode {
		got = append(got, e.Push(p*3600, i)...)
	}
	got = append(got, e.Flush()...)
	if len(got) != len(decode) {
		t.Fatalf("got %d frames, want %d", len(got), len(decode))
	}
	for i, f := range got {
		if f.V != i || f.PTS != decode[i]*3600 {
			t.Fatalf("frame %d: out of order: %+v", i, f)
		}
		if f.DTS > f.PTS {
			t.Errorf("frame %d: dts %d > pts %d", i, f.DTS, f.PTS)
		}
		if i > 0 && f.DTS <= got[i-1].DTS {
			t.Errorf("frame %d: dts %d not increasing after %d", i, f.DTS, got[i-1].DTS)
		}
	}
	// Constant frame rate: DTS advances one frame at a time.
	for i := 1; i < len(got); i++ {
		if d := got[i].DTS - got[i-1].DTS; d != 3600 {
			t.Errorf("frame %d: dts step %d, want 3600", i, d)
		}
	}
}

func TestDTSExtractorNoBFrames(t *testing.T) {
	e := NewDTSExtractor[struct{}](0)
	var got []Frame[struct{}]
	for i := range int64(10) {
		got = append(got, e.Push(1000+i*3000, struct{}{})...)
	}
	got = append(got, e.Flush()...)
	for i, f := range got {
		if f.DTS != f.PTS {
			t.Errorf("frame %d: dts %d != pts %d without reordering", i, f.DTS, f.PTS)
		}
	}
}

func TestDTSExtractorHostileInput(t *testing.T) {
	e := NewDTSExtractor[int](2)
	var got []Frame[int]
	for i, p := range []int64{5, 5, 5, -100, 1 << 40, 3, 3, 0} {
		got = append(got, e.Push(p, i)...)
	}
	got = append(got, e.Flush()...)
	if len(got) != 8 {
		t.Fatalf("got %d frames", len(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i].DTS <= got[i-1].DTS {
			t.Fatalf("dts not strictly increasing at %d: %+v", i, got)
		}
	}
}

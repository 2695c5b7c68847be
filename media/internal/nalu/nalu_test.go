package nalu

import (
	"bytes"
	"testing"
)

func TestSplitAnnexB(t *testing.T) {
	in := []byte{0, 0, 0, 1, 0x67, 0xaa, 0, 0, 1, 0x68, 0xbb, 0, 0, 0, 0, 1, 0x65, 0xcc}
	want := [][]byte{{0x67, 0xaa}, {0x68, 0xbb}, {0x65, 0xcc}}
	got := SplitAnnexB(in)
	if len(got) != len(want) {
		t.Fatalf("got %d NAL units %x, want %d", len(got), got, len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("unit %d: %x, want %x", i, got[i], want[i])
		}
	}
	if got := SplitAnnexB([]byte{1, 2, 3}); len(got) != 0 {
		t.Errorf("no start code: %x, want nothing", got)
	}
}

package segmenter

import (
	"bytes"
	"errors"
	"testing"
)

// TestH264Depacketizer: single NAL units, STAP-A, FU-A (each fragment
// delivered in the same, then overwritten, buffer) and the malformed cases.
func TestH264Depacketizer(t *testing.T) {
	t.Parallel()
	var d h264Depacketizer
	feed := reusedBuffer(d.unmarshal)
	idr := []byte{0x65, 0x88, 0x84, 0x01, 0x02, 0x03, 0x04, 0x05}
	sps, pps := []byte{0x67, 0x42, 0xc0, 0x1e}, []byte{0x68, 0xce, 0x3c, 0x80}

	if got, err := feed(idr); err != nil || len(got) != 1 || !bytes.Equal(got[0], idr) {
		t.Fatalf("single: %x %v", got, err)
	}
	stap := append([]byte{0x78, 0, byte(len(sps))}, sps...)
	stap = append(append(stap, 0, byte(len(pps))), pps...)
	if got, err := feed(stap); err != nil || len(got) != 2 || !bytes.Equal(got[0], sps) || !bytes.Equal(got[1], pps) {
		t.Fatalf("STAP-A: %x %v", got, err)
	}
	// idr in three FU-As: indicator NRI 3, type 28; header S/E with type 5.
	fu := func(se byte, part []byte) []byte { return append([]byte{0x7c, se | 5}, part...) }
	for i, p := range [][]byte{fu(0x80, idr[1:4]), fu(0, idr[4:6])} {
		if got, err := feed(p); err != nil || len(got) != 0 {
			t.Fatalf("FU-A %d: %x %v", i, got, err)
		}
	}
	if got, err := feed(fu(0x40, idr[6:])); err != nil || len(got) != 1 || !bytes.Equal(got[0], idr) {
		t.Fatalf("FU-A end: %x %v (want %x)", got, err, idr)
	}
	// The tail of a unit whose start was lost is dropped quietly.
	if got, err := feed(fu(0x40, idr[6:])); err != nil || len(got) != 0 {
		t.Fatalf("FU-A end without start: %x %v", got, err)
	}
	// A single NAL unit abandons an unfinished FU-A.
	if _, err := feed(fu(0x80, idr[1:4])); err != nil {
		t.Fatal(err)
	}
	if _, err := feed(idr); err != nil {
		t.Fatal(err)
	}
	if _, err := feed(fu(0, idr[4:6])); !errors.Is(err, errFUStart) {
		t.Fatalf("FU-A after an interruption: %v, want %v", err, errFUStart)
	}
	for name, c := range map[string]struct {
		p    []byte
		want error
	}{
		"empty":             {nil, errH264Short},
		"FU-A short":        {[]byte{0x7c, 0x85}, errH264Short},
		"STAP-A overrun":    {[]byte{0x78, 0, 9, 0x65}, errH264STAP},
		"STAP-A zero size":  {[]byte{0x78, 0, 0}, errH264STAP},
		"STAP-A odd tail":   {append(bytes.Clone(stap), 0), errH264STAP},
		"FU-A middle first": {fu(0, idr[4:6]), errFUStart},
		"FU-A start+end":    {fu(0xc0, idr[1:]), errFUBoth},
		"type 0":            {[]byte{0x00, 1}, errH264Type},
		"STAP-B":            {[]byte{0x19, 0, 1, 0x65}, errH264Type},
		"FU-B":              {[]byte{0x1d, 0x85, 0, 1, 2}, errH264Type},
	} {
		d.reset()
		if _, err := feed(c.p); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

package segmenter

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigilcloud/vigil/media/fmp4"
	"github.com/vigilcloud/vigil/storage"
)

// spoolBytes writes a spool file the way a session does: init, then one
// fragment per second of 25 fps video from decode time base, and returns
// its bytes and the fragment ends (size, duration ms).
func spoolBytes(t testing.TB, frags int, base uint64) ([]byte, [][2]int64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "1.mp4")
	tr := fmp4.Track{ID: 1, Codec: fmp4.H264, TimeScale: 90000, Width: 320, Height: 240,
		SPS: []byte{0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x47, 0xfe, 0xc8}, PPS: []byte{0x68, 0xce, 0x3c, 0x80}}
	sp, err := createSpool(path, []fmp4.Track{tr})
	if err != nil {
		t.Fatal(err)
	}
	var ends [][2]int64
	for i := range frags {
		var samples []fmp4.Sample
		for j := range 25 {
			samples = append(samples, fmp4.Sample{Duration: 3600, Keyframe: j == 0, Data: []byte{0, 0, 0, 2, 0x41, byte(j)}})
		}
		frag := fmp4.Fragment{SequenceNumber: uint32(i + 1), Tracks: []fmp4.TrackFragment{{TrackID: 1, BaseDecodeTime: base + uint64(i)*90000, Samples: samples}}}
		if err := sp.writeFragment(frag, int64(i+1)*1000); err != nil {
			t.Fatal(err)
		}
		ends = append(ends, [2]int64{sp.size, sp.durationMS})
	}
	sp.f.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b, ends
}

func writeSpool(t testing.TB, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "2.mp4")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestScanSpool: a spool file cut anywhere is read back up to its last
// complete fragment, with that fragment's end as the duration; one with
// no complete fragment, or no valid init, has nothing to store.
func TestScanSpool(t *testing.T) {
	b, ends := spoolBytes(t, 3, 0)
	if want := storage.SpoolHeadroom + ends[2][0]; int64(len(b)) != want {
		t.Fatalf("spool file of %d bytes, want %d", len(b), want)
	}
	for cut := storage.SpoolHeadroom; cut <= len(b); cut += 7 {
		sp, err := scanSpool(writeSpool(t, b[:cut]))
		var want [2]int64
		for _, e := range ends {
			if storage.SpoolHeadroom+e[0] <= int64(cut) {
				want = e
			}
		}
		switch {
		case err != nil && want[0] != 0:
			t.Fatalf("cut at %d: %v", cut, err)
		case err == nil && (sp.size != want[0] || sp.durationMS != want[1] && want[0] != 0):
			t.Fatalf("cut at %d: size %d, %d ms; want %d, %d ms", cut, sp.size, sp.durationMS, want[0], want[1])
		case err == nil && want[0] != 0 && (sp.width != 320 || sp.height != 240 || sp.offset != storage.SpoolHeadroom):
			t.Fatalf("cut at %d: %+v", cut, sp)
		}
	}
	// A segment that runs on from the one before (its decode times do
	// not start at zero) lasts as long.
	later, _ := spoolBytes(t, 3, 540000)
	if sp, err := scanSpool(writeSpool(t, later)); err != nil || sp.durationMS != 3000 {
		t.Errorf("spool from decode time 6 s: %+v, %v; want 3000 ms", sp, err)
	}
	// Junk in place of the fMP4, and a file without the headroom.
	for name, bad := range map[string][]byte{
		"junk":        append(make([]byte, storage.SpoolHeadroom), bytes.Repeat([]byte("junk"), 100)...),
		"no headroom": b[storage.SpoolHeadroom:],
		"empty":       nil,
	} {
		if sp, err := scanSpool(writeSpool(t, bad)); err == nil && sp.size != 0 {
			t.Errorf("%s: scanned %+v", name, sp)
		}
	}
}

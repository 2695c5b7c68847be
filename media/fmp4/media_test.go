package fmp4

import (
	"bytes"
	"testing"
)

// twoTracks is a stream of one fragment with a video and an audio track,
// the writer's layout: each track's samples back to back in the mdat.
func twoTracks(t *testing.T) []byte {
	t.Helper()
	tracks := []Track{
		{ID: 1, Codec: H264, TimeScale: 90000, Width: 16, Height: 16, SPS: []byte{0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf2, 0x3c, 0x58, 0xba, 0x80}, PPS: []byte{0x68, 0xce, 0x3c, 0x80}},
		{ID: 2, Codec: AAC, TimeScale: 48000, SampleRate: 48000, Channels: 2, AACConfig: []byte{0x11, 0x90}},
	}
	video := []Sample{{Duration: 3000, Keyframe: true, Data: []byte("v0v0")}, {Duration: 3000, Data: []byte("v1")}, {Duration: 3000, Data: []byte("v22")}}
	audio := []Sample{{Duration: 1024, Keyframe: true, Data: []byte("a0")}, {Duration: 1024, Keyframe: true, Data: []byte("a11")}}
	return rewrite(t, tracks, []Fragment{{SequenceNumber: 1, Tracks: []TrackFragment{
		{TrackID: 1, Samples: video}, {TrackID: 2, Samples: audio}}}})
}

func TestReaderMedia(t *testing.T) {
	b := twoTracks(t)
	r := NewReader(bytes.NewReader(b))
	if _, _, err := r.ReadInit(); err != nil {
		t.Fatal(err)
	}
	f, err := r.NextFragment()
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Tracks) != 2 {
		t.Fatalf("%d tracks", len(f.Tracks))
	}
	for _, c := range []struct {
		t, i, j int
		want    string
	}{
		{0, 0, 3, "v0v0v1v22"}, {0, 1, 3, "v1v22"}, {0, 2, 3, "v22"}, {1, 0, 2, "a0a11"}, {1, 1, 2, "a11"},
		// Out of range or empty: nil.
		{0, 0, 4, ""}, {1, 0, 3, ""}, {2, 0, 1, ""}, {-1, 0, 1, ""}, {0, 2, 2, ""}, {0, 2, 1, ""}, {0, -1, 1, ""},
	} {
		got := r.Media(c.t, c.i, c.j)
		if string(got) != c.want || (c.want == "" && got != nil) {
			t.Errorf("Media(%d, %d, %d) = %q, want %q", c.t, c.i, c.j, got, c.want)
		}
	}
	// The same run as the samples' Data, one after another.
	var joined []byte
	for _, s := range f.Tracks[0].Samples {
		joined = append(joined, s.Data...)
	}
	if !bytes.Equal(r.Media(0, 0, 3), joined) {
		t.Error("Media differs from the samples' data")
	}
}

func TestReaderMediaWithoutData(t *testing.T) {
	b := twoTracks(t)
	r := NewReader(bytes.NewReader(b))
	if _, _, err := r.ReadInit(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.NextFragmentHeader(); err != nil {
		t.Fatal(err)
	}
	if got := r.Media(0, 0, 1); got != nil {
		t.Errorf("after NextFragmentHeader: Media = %q, want nil", got)
	}
	// Before any fragment, and after a Reset: nil too.
	r.Reset(bytes.NewReader(b))
	if got := r.Media(0, 0, 1); got != nil {
		t.Errorf("after Reset: Media = %q, want nil", got)
	}
}

// Samples that are not back to back (interleaved tracks) give nil: the
// caller writes them one by one.
func TestReaderMediaInterleaved(t *testing.T) {
	r := &Reader{mdat: []byte("v0a0v1a1"), mdatBase: 100, trackRefs: []int{0, 2},
		refs: []sampleRef{{pos: 100, size: 2}, {pos: 104, size: 2}, {pos: 102, size: 2}, {pos: 106, size: 2}}}
	if got := r.Media(0, 0, 2); got != nil {
		t.Errorf("interleaved run: %q, want nil", got)
	}
	if got := string(r.Media(0, 1, 2)); got != "v1" {
		t.Errorf("one sample: %q", got)
	}
	if got := string(r.Media(1, 0, 1)); got != "a0" {
		t.Errorf("one sample: %q", got)
	}
}

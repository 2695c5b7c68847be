package fmp4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// A 1920x1080 High profile SPS and a PPS from libx264.
var (
	testSPS = []byte{0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xc8, 0x3c, 0x60, 0xc6, 0x58}
	testPPS = []byte{0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0}
)

func testTracks() []Track {
	return []Track{
		{ID: 1, Codec: H264, TimeScale: 90000, Width: 1920, Height: 1080, SPS: testSPS, PPS: testPPS},
		{ID: 2, Codec: AAC, TimeScale: 48000, SampleRate: 48000, Channels: 2, AACConfig: []byte{0x11, 0x90}},
	}
}

func testFragment(seq uint32) Fragment {
	return Fragment{SequenceNumber: seq, Tracks: []TrackFragment{
		{TrackID: 1, BaseDecodeTime: uint64(seq) * 7200, Samples: []Sample{
			{Duration: 3600, Keyframe: true, Data: []byte{0, 0, 0, 3, 0x65, 1, 2}},
			{Duration: 3600, PTSOffset: -3600, Data: []byte{0, 0, 0, 2, 0x41, 9}},
		}},
		{TrackID: 2, BaseDecodeTime: uint64(seq) * 2048, Samples: []Sample{
			{Duration: 1024, Keyframe: true, Data: []byte{0x21, 0x22}},
			{Duration: 1024, Keyframe: true, Data: []byte{0x23}},
		}},
	}}
}

// testStream is init + two fragments from the writer.
func testStream(t *testing.T) []byte {
	t.Helper()
	return rewrite(t, testTracks(), []Fragment{testFragment(1), testFragment(2)})
}

// readErr reads a whole stream and returns the first error other than io.EOF.
func readErr(b []byte) error {
	r := NewReader(bytes.NewReader(b))
	if _, _, err := r.ReadInit(); err != nil {
		return err
	}
	for {
		if _, err := r.NextFragment(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

func TestReaderOwnOutput(t *testing.T) {
	b := testStream(t)
	tracks, frags := readAll(t, b)
	if err := equalTracks(tracks, testTracks()); err != nil {
		t.Fatal(err)
	}
	if err := equalFragments(frags, []Fragment{testFragment(1), testFragment(2)}); err != nil {
		t.Fatal(err)
	}
	// initSize is where the first moof starts.
	_, n, err := NewReader(bytes.NewReader(b)).ReadInit()
	if err != nil || !bytes.Equal(b[n+4:n+8], []byte("moof")) {
		t.Fatalf("init size %d: %v", n, err)
	}
}

// boxAt returns the offset of the first box of type typ (its size field).
func boxAt(t *testing.T, b []byte, typ string) int {
	t.Helper()
	i := bytes.Index(b, []byte(typ))
	if i < 4 {
		t.Fatalf("no %s", typ)
	}
	return i - 4
}

func TestReaderTruncated(t *testing.T) {
	b := testStream(t)
	for n := 0; n < len(b); n++ {
		if err := readErr(b[:n]); !errors.Is(err, ErrMalformed) {
			// Cut exactly between fragments is a clean end.
			if err == nil && (n == boxAt(t, b, "moof") || bytes.Equal(b[n+4:n+8], []byte("moof"))) {
				continue
			}
			t.Fatalf("cut at %d of %d: %v, want ErrMalformed", n, len(b), err)
		}
	}
}

func TestReaderMalformed(t *testing.T) {
	good := testStream(t)
	moof := boxAt(t, good, "moof")
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	put := func(b []byte, off int, v uint32) []byte { binary.BigEndian.PutUint32(b[off:], v); return b }
	cases := map[string][]byte{
		"moof-before-moov":  good[moof:],
		"mdat-before-moov":  append([]byte{0, 0, 0, 8, 'm', 'd', 'a', 't'}, good...),
		"second-moov":       append(append([]byte(nil), good...), good[boxAt(t, good, "moov"):moof]...),
		"size-below-header": mutate(func(b []byte) []byte { return put(b, 0, 7) }),
		"oversized-moov":    mutate(func(b []byte) []byte { return put(b, boxAt(t, b, "moov"), 5<<20) }),
		"oversized-moof":    mutate(func(b []byte) []byte { return put(b, moof, 9<<20) }),
		"oversized-mdat":    mutate(func(b []byte) []byte { return put(b, boxAt(t, b, "mdat"), 65<<20+8) }),
		"child-overruns-parent": mutate(func(b []byte) []byte {
			return put(b, boxAt(t, b, "trak"), uint32(len(b)))
		}),
		"unknown-track": mutate(func(b []byte) []byte {
			return put(b, boxAt(t, b[moof:], "tfhd")+moof+12, 9)
		}),
		"data-outside-mdat": mutate(func(b []byte) []byte {
			trun := boxAt(t, b[moof:], "trun") + moof
			return put(b, trun+16, 1<<20)
		}),
		"data-before-mdat": mutate(func(b []byte) []byte {
			trun := boxAt(t, b[moof:], "trun") + moof
			return put(b, trun+16, 0)
		}),
		"huge-sample-count": mutate(func(b []byte) []byte {
			trun := boxAt(t, b[moof:], "trun") + moof
			return put(b, trun+12, 0xffffffff)
		}),
		"moof-without-mdat": good[:boxAt(t, good, "mdat")],
		"moof-then-moov": mutate(func(b []byte) []byte {
			m := boxAt(t, b, "mdat")
			copy(b[m+4:], "moov")
			return b
		}),
		"duplicate-track": mutate(func(b []byte) []byte {
			tkhd := boxAt(t, b, "tkhd")
			p := bytes.Index(b[tkhd+8:], []byte("tkhd")) + tkhd + 8 - 4
			return put(b, p+20, 1) // the second trak's track_ID
		}),
		"trex-unknown-track": mutate(func(b []byte) []byte {
			return put(b, boxAt(t, b, "trex")+12, 7)
		}),
		"no-moov": good[:boxAt(t, good, "moov")],
		"bad-avcC": mutate(func(b []byte) []byte {
			a := boxAt(t, b, "avcC")
			b[a+8+4] = 0xfd // 2-byte NAL lengths
			return b
		}),
		"bad-esds": mutate(func(b []byte) []byte {
			e := boxAt(t, b, "esds")
			b[e+12] = 0x09 // not an ES_Descriptor
			return b
		}),
		"no-mfhd": mutate(func(b []byte) []byte {
			copy(b[boxAt(t, b, "mfhd")+4:], "free")
			return b
		}),
		"trun-before-tfhd": mutate(func(b []byte) []byte {
			copy(b[boxAt(t, b, "tfhd")+4:], "free")
			return b
		}),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if err := readErr(b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("err %v, want ErrMalformed", err)
			}
		})
	}
}

// TestReaderBoundedAllocation: a header that claims a big box costs memory
// only for the bytes that actually arrive.
func TestReaderBoundedAllocation(t *testing.T) {
	good := testStream(t)
	mdat := boxAt(t, good, "mdat")
	b := append([]byte(nil), good[:mdat+8]...)
	binary.BigEndian.PutUint32(b[mdat:], 60<<20) // claims 60 MiB, has 0
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	err := readErr(b)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrMalformed) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err %v", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 4<<20 {
		t.Fatalf("allocated %d bytes for a truncated 60 MiB mdat", got)
	}
}

func TestReaderSkipsAndSizes(t *testing.T) {
	good := testStream(t)
	moof := boxAt(t, good, "moof")
	free := []byte{0, 0, 0, 12, 'f', 'r', 'e', 'e', 1, 2, 3, 4}
	styp := []byte{0, 0, 0, 16, 's', 't', 'y', 'p', 'm', 's', 'd', 'h', 0, 0, 0, 0}
	// 64-bit size for a sidx box.
	sidx := []byte{0, 0, 0, 1, 's', 'i', 'd', 'x', 0, 0, 0, 0, 0, 0, 0, 20, 9, 9, 9, 9}
	var b []byte
	b = append(b, free...)
	b = append(b, good[:moof]...)
	b = append(b, styp...)
	b = append(b, sidx...)
	b = append(b, good[moof:]...)
	// The last mdat with size 0 runs to the end of the stream.
	last := bytes.LastIndex(b, []byte("mdat")) - 4
	binary.BigEndian.PutUint32(b[last:], 0)
	tracks, frags := readAll(t, b)
	if len(tracks) != 2 || len(frags) != 2 {
		t.Fatalf("%d tracks, %d fragments", len(tracks), len(frags))
	}
	if err := equalFragments(frags, []Fragment{testFragment(1), testFragment(2)}); err != nil {
		t.Fatal(err)
	}
	// Short reads change nothing.
	r := NewReader(iotest.OneByteReader(bytes.NewReader(b)))
	if _, _, err := r.ReadInit(); err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		f, err := r.NextFragment()
		if err == io.EOF {
			break
		}
		if err != nil || f.SequenceNumber != uint32(n+1) {
			t.Fatalf("fragment %d: %+v %v", n, f, err)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("%d fragments", n)
	}
}

func TestWriterErrors(t *testing.T) {
	tr := testTracks()
	bad := func(f func(t *Track)) []Track {
		c := append([]Track(nil), tr...)
		f(&c[0])
		return c
	}
	for name, tracks := range map[string][]Track{
		"none":       nil,
		"zero-id":    bad(func(t *Track) { t.ID = 0 }),
		"dup-id":     bad(func(t *Track) { t.ID = 2 }),
		"timescale":  bad(func(t *Track) { t.TimeScale = 0 }),
		"codec":      bad(func(t *Track) { t.Codec = "vp9" }),
		"bad-sps":    bad(func(t *Track) { t.SPS = []byte{0x67, 1} }),
		"no-pps":     bad(func(t *Track) { t.PPS = nil }),
		"no-size":    bad(func(t *Track) { t.Width = 0 }),
		"h265-noVPS": bad(func(t *Track) { t.Codec = H265 }),
		"aac-config": {{ID: 1, Codec: AAC, TimeScale: 48000, AACConfig: []byte{0x11}}},
		"opus-6ch":   {{ID: 1, Codec: Opus, TimeScale: 48000, SampleRate: 48000, Channels: 6}},
	} {
		if _, err := WriteInit(io.Discard, tracks, InitOptions{}); err == nil {
			t.Errorf("%s: WriteInit accepted it", name)
		}
	}
	if _, err := WriteFragment(io.Discard, Fragment{SequenceNumber: 1}); err == nil {
		t.Error("fragment without tracks accepted")
	}
	if _, err := WriteFragment(io.Discard, Fragment{Tracks: []TrackFragment{{TrackID: 1}}}); err == nil {
		t.Error("track fragment without samples accepted")
	}
}

func TestWriteInitDuration(t *testing.T) {
	var buf bytes.Buffer
	if _, err := WriteInit(&buf, testTracks(), InitOptions{DurationMS: 12345}); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	mehd := boxAt(t, b, "mehd")
	if got := binary.BigEndian.Uint32(b[mehd+12:]); got != 12345 {
		t.Fatalf("mehd %d", got)
	}
	mvhd := boxAt(t, b, "mvhd")
	if got := binary.BigEndian.Uint32(b[mvhd+24:]); got != 12345 {
		t.Fatalf("mvhd duration %d", got)
	}
	// mdhd of the 48 kHz track: 12.345 s in samples.
	i := strings.LastIndex(string(b), "mdhd") - 4
	if got := binary.BigEndian.Uint32(b[i+24:]); got != 12345*48 {
		t.Fatalf("mdhd duration %d", got)
	}
	// Durations past 32 bits switch to version 1 boxes.
	buf.Reset()
	if _, err := WriteInit(&buf, testTracks(), InitOptions{DurationMS: 1 << 33}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := NewReader(&buf).ReadInit(); err != nil {
		t.Fatal(err)
	}
}

package picsize

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"testing"

	"github.com/vigilcloud/vigil/index"

	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/media"
)

func contentType(format string) string {
	if format == "mpegts" {
		return media.ContentTypeTS
	}
	return media.ContentTypeMP4
}

func TestReadFFmpeg(t *testing.T) {
	cases := []struct {
		name, size, codec, format string
		want                      Size
	}{
		{"h264-fmp4-1080p", "1920x1080", "libx264", "mp4", Size{1920, 1080}},
		{"h264-fmp4-720p", "1280x720", "libx264", "mp4", Size{1280, 720}},
		{"h265-fmp4", "640x360", "libx265", "mp4", Size{640, 360}},
		{"h264-ts", "1280x720", "libx264", "mpegts", Size{1280, 720}},
		{"h265-ts", "640x360", "libx265", "mpegts", Size{640, 360}},
		{"h264-ts-odd", "330x186", "libx264", "mpegts", Size{330, 186}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			body := testutil.FFmpegSegment(t, c.size, c.codec, c.format)
			r := bytes.NewReader(body)
			head, info, err := Read(r, contentType(c.format))
			if err != nil {
				t.Fatal(err)
			}
			got := info.Size
			if got != c.want {
				t.Fatalf("Read = %+v, want %+v", got, c.want)
			}
			// What Read consumed is exactly the head, and only a bounded part.
			rest, _ := io.ReadAll(r)
			if !bytes.Equal(append(head, rest...), body) {
				t.Fatal("head + rest is not the body")
			}
			if len(rest) == 0 {
				t.Fatalf("Read consumed the whole %d-byte body", len(body))
			}
			if c.format == "mpegts" {
				if s := FromTS(body); s != c.want {
					t.Fatalf("FromTS = %+v", s)
				}
			} else if s := FromMP4(head); s != c.want {
				t.Fatalf("FromMP4 = %+v", s)
			}
		})
	}
}

func TestReadWithoutSPS(t *testing.T) {
	body := testutil.FFmpegSegment(t, "320x240", "libx264", "mp4")
	tracksEnd := FromMP4(body) // sanity: the whole file has it
	if !tracksEnd.Known() {
		t.Fatal("fixture has no size")
	}
	// A media segment alone (no init section): moof + mdat.
	i := bytes.Index(body, []byte("moof")) - 4
	head, info, err := Read(bytes.NewReader(body[i:]), media.ContentTypeMP4)
	s := info.Size
	if err != nil || s.Known() || len(head) != 8 {
		t.Fatalf("media segment: head %d bytes, size %+v, err %v", len(head), s, err)
	}
	// Every truncation of the init section: no size, no error, no panic.
	for n := 0; n < i; n++ {
		head, info, err := Read(bytes.NewReader(body[:n]), media.ContentTypeMP4)
		s := info.Size
		if err != nil || s.Known() || !bytes.Equal(head, body[:n]) {
			t.Fatalf("cut at %d: size %+v, err %v, head %d bytes", n, s, err, len(head))
		}
	}
	// Every truncation of a TS head: a prefix read, no error, no panic.
	ts := testutil.FFmpegSegment(t, "320x240", "libx264", "mpegts")
	for n := 0; n < len(ts) && n < 6*tsPacket; n++ {
		head, _, err := Read(bytes.NewReader(ts[:n]), media.ContentTypeTS)
		if err != nil || !bytes.HasPrefix(ts[:n], head) {
			t.Fatalf("ts cut at %d: err %v", n, err)
		}
	}
	// An unknown content type reads nothing.
	if head, info, err := Read(bytes.NewReader(ts), "video/webm"); head != nil || info.Size.Known() || err != nil {
		t.Fatal("webm was read")
	}
}

// A TS whose video PES carries no parameter sets leaves the size unknown.
func TestTSWithoutParameterSets(t *testing.T) {
	ts := testutil.FFmpegSegment(t, "320x240", "libx264", "mpegts")
	// Turn the SPS NAL header (type 7) into an unspecified type (0).
	cp := bytes.Clone(ts)
	for i := 0; i+3 < len(cp) && i < 8*tsPacket; i++ {
		if cp[i] == 0 && cp[i+1] == 0 && cp[i+2] == 1 && cp[i+3]&0x1f == 7 {
			cp[i+3] &^= 0x1f
		}
	}
	if s := FromTS(cp); s.Known() {
		t.Fatalf("FromTS = %+v without an SPS", s)
	}
	if s := FromTS(ts); s != (Size{320, 240}) {
		t.Fatalf("FromTS = %+v", s)
	}
}

type failReader struct{ err error }

func (f failReader) Read([]byte) (int, error) { return 0, f.err }

func TestReadError(t *testing.T) {
	boom := io.ErrClosedPipe
	for _, ct := range []string{media.ContentTypeMP4, media.ContentTypeTS} {
		if _, _, err := Read(io.MultiReader(bytes.NewReader([]byte{0, 0}), failReader{boom}), ct); err != boom {
			t.Fatalf("%s: err %v, want %v", ct, err, boom)
		}
	}
}

// The head of an ffmpeg fMP4: its init section is every byte before the
// first moof, and its decode time is that moof's tfdt in the track's
// timescale. Without the moof the time is unknown; a media segment alone
// has no head.
func TestReadHead(t *testing.T) {
	body := testutil.FFmpegSegment(t, "320x240", "libx264", "mp4")
	i := bytes.Index(body, []byte("moof")) - 4
	head, info, err := Read(bytes.NewReader(body), media.ContentTypeMP4)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body[:i])
	want := index.Head{Track: 1, Scale: 12800} // ffmpeg's timescale for 25 fps
	copy(want.Init[:], sum[:])
	if info.Head != want {
		t.Fatalf("head %+v, want %+v", info.Head, want)
	}
	if moofSize := int(binary.BigEndian.Uint32(body[i:])); len(head) != i+moofSize {
		t.Fatalf("read %d bytes, want up to the end of the first moof (%d)", len(head), i+moofSize)
	}
	if info.Size != (Size{320, 240}) {
		t.Fatalf("size %+v", info.Size)
	}
	// Cut inside the moof (an upload that fails): no head.
	_, info, err = Read(bytes.NewReader(body[:i+20]), media.ContentTypeMP4)
	if err != nil || info.Head.Known() {
		t.Fatalf("cut moof: head %+v, err %v", info.Head, err)
	}
	// A segment cut mid-stream: its first tfdt is not zero.
	cut := bytes.Clone(body)
	d := i + bytes.Index(cut[i:], []byte("tfdt")) + 4 // version, flags, time
	if cut[d] == 1 {
		binary.BigEndian.PutUint64(cut[d+4:], 512)
	} else {
		binary.BigEndian.PutUint32(cut[d+4:], 512)
	}
	if _, info, _ := Read(bytes.NewReader(cut), media.ContentTypeMP4); info.Head != (index.Head{Init: want.Init, Track: 1, Scale: 12800, TFDT: 512}) {
		t.Fatalf("mid-stream segment: head %+v", info.Head)
	}
	if _, info, _ := Read(bytes.NewReader(body[i:]), media.ContentTypeMP4); info.Head.Known() {
		t.Fatalf("media segment alone: head %+v", info.Head)
	}
}

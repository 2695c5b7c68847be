package fmp4

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"testing"

	"github.com/vigilcloud/vigil/media/internal/mediatest"
)

// readAll reads a whole stream with the Reader, copying sample data.
func readAll(t *testing.T, b []byte) ([]Track, []Fragment) {
	t.Helper()
	r := NewReader(bytes.NewReader(b))
	tracks, _, err := r.ReadInit()
	if err != nil {
		t.Fatalf("ReadInit: %v", err)
	}
	var frags []Fragment
	for {
		f, err := r.NextFragment()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("NextFragment %d: %v", len(frags), err)
		}
		for i := range f.Tracks {
			for j := range f.Tracks[i].Samples {
				s := &f.Tracks[i].Samples[j]
				s.Data = append([]byte(nil), s.Data...)
			}
		}
		frags = append(frags, f)
	}
	return tracks, frags
}

// rewrite writes tracks and fragments with the writer.
func rewrite(t testing.TB, tracks []Track, frags []Fragment) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := WriteInit(&buf, tracks, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range frags {
		if _, err := WriteFragment(&buf, f); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func equalTracks(a, b []Track) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d tracks vs %d", len(a), len(b))
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.ID != y.ID || x.Codec != y.Codec || x.TimeScale != y.TimeScale || x.Width != y.Width || x.Height != y.Height ||
			x.SampleRate != y.SampleRate || x.Channels != y.Channels || !bytes.Equal(x.VPS, y.VPS) || !bytes.Equal(x.SPS, y.SPS) ||
			!bytes.Equal(x.PPS, y.PPS) || !bytes.Equal(x.AACConfig, y.AACConfig) {
			return fmt.Errorf("track %d: %+v vs %+v", i, x, y)
		}
	}
	return nil
}

func equalFragments(a, b []Fragment) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d fragments vs %d", len(a), len(b))
	}
	for i := range a {
		if a[i].SequenceNumber != b[i].SequenceNumber || len(a[i].Tracks) != len(b[i].Tracks) {
			return fmt.Errorf("fragment %d: seq %d/%d, %d/%d tracks", i, a[i].SequenceNumber, b[i].SequenceNumber, len(a[i].Tracks), len(b[i].Tracks))
		}
		for j := range a[i].Tracks {
			x, y := a[i].Tracks[j], b[i].Tracks[j]
			if x.TrackID != y.TrackID || x.BaseDecodeTime != y.BaseDecodeTime || len(x.Samples) != len(y.Samples) {
				return fmt.Errorf("fragment %d track %d: id %d/%d base %d/%d samples %d/%d", i, j, x.TrackID, y.TrackID, x.BaseDecodeTime, y.BaseDecodeTime, len(x.Samples), len(y.Samples))
			}
			for k := range x.Samples {
				s, u := x.Samples[k], y.Samples[k]
				if s.Duration != u.Duration || s.PTSOffset != u.PTSOffset || s.Keyframe != u.Keyframe || !bytes.Equal(s.Data, u.Data) {
					return fmt.Errorf("fragment %d track %d sample %d: dur %d/%d cto %d/%d key %v/%v size %d/%d",
						i, x.TrackID, k, s.Duration, u.Duration, s.PTSOffset, u.PTSOffset, s.Keyframe, u.Keyframe, len(s.Data), len(u.Data))
				}
			}
		}
	}
	return nil
}

// normalized returns per stream the packets with pts/dts made relative to
// the stream's first dts (edit lists shift ffmpeg's own files).
func normalized(p mediatest.Probe) map[int][]mediatest.Packet {
	out := map[int][]mediatest.Packet{}
	first := map[int]int64{}
	for _, pk := range p.Packets {
		if _, ok := first[pk.StreamIndex]; !ok {
			first[pk.StreamIndex] = pk.DTS
		}
		pk.PTS -= first[pk.StreamIndex]
		pk.DTS -= first[pk.StreamIndex]
		out[pk.StreamIndex] = append(out[pk.StreamIndex], pk)
	}
	return out
}

// TestReadFFmpegRoundTrip reads ffmpeg-made fMP4 (B-frames, AAC or Opus),
// writes it again with the writer, and checks that ffprobe sees the same
// packets (timestamps, sizes, keyframes) in both and that the Reader
// returns the same samples from both.
func TestReadFFmpegRoundTrip(t *testing.T) {
	video := []string{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"}
	audio := []string{"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"}
	frag := []string{"-movflags", "frag_keyframe+empty_moov+default_base_moof", "-f", "mp4"}
	cases := []struct {
		name    string
		args    []string
		want    []Codec
		bframes bool
	}{
		{"h264-bframes-aac", concat(video, audio, []string{"-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "25", "-c:a", "aac", "-ac", "2"}, frag), []Codec{H264, AAC}, true},
		{"h265-opus", concat(video, audio, []string{"-t", "1", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-g", "10", "-c:a", "libopus", "-ac", "1"}, frag), []Codec{H265, Opus}, true},
		// Without default_base_moof ffmpeg writes an explicit base_data_offset.
		{"h264-base-data-offset", concat(video, []string{"-frames:v", "20", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g", "10", "-movflags", "frag_keyframe+empty_moov", "-f", "mp4"}), []Codec{H264}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			src, raw := mediatest.FFmpeg(t, "in.mp4", c.args...)
			tracks, frags := readAll(t, raw)
			if len(tracks) != len(c.want) {
				t.Fatalf("tracks %+v", tracks)
			}
			for i, tr := range tracks {
				if tr.Codec != c.want[i] {
					t.Fatalf("track %d codec %s, want %s", i, tr.Codec, c.want[i])
				}
			}
			if len(frags) == 0 {
				t.Fatal("no fragments")
			}
			samples, reordered := map[uint32]int{}, false
			for _, f := range frags {
				for _, tf := range f.Tracks {
					samples[tf.TrackID] += len(tf.Samples)
					for _, s := range tf.Samples {
						reordered = reordered || s.PTSOffset != 0
					}
				}
			}
			if len(samples) != len(tracks) {
				t.Fatalf("samples per track %v", samples)
			}
			if c.bframes != reordered {
				t.Fatalf("composition offsets present %v, want %v", reordered, c.bframes)
			}
			out := rewrite(t, tracks, frags)
			tracks2, frags2 := readAll(t, out)
			if err := equalTracks(tracks, tracks2); err != nil {
				t.Fatal(err)
			}
			if err := equalFragments(frags, frags2); err != nil {
				t.Fatal(err)
			}
			dst := writeTemp(t, out)
			want := mediatest.FFprobe(t, src, "-show_streams", "-show_packets")
			got := mediatest.FFprobe(t, dst, "-show_streams", "-show_packets", "-show_format", "-count_frames")
			if len(got.Streams) != len(want.Streams) {
				t.Fatalf("%d streams, want %d", len(got.Streams), len(want.Streams))
			}
			for i, s := range got.Streams {
				w := want.Streams[i]
				if s.CodecName != w.CodecName || s.Width != w.Width || s.Height != w.Height || s.SampleRate != w.SampleRate || s.Channels != w.Channels {
					t.Fatalf("stream %d: %+v, want %+v", i, s, w)
				}
			}
			gp, wp := normalized(got), normalized(want)
			for idx, wps := range wp {
				if len(gp[idx]) != len(wps) {
					t.Fatalf("stream %d: %d packets, want %d", idx, len(gp[idx]), len(wps))
				}
				for k, w := range wps {
					g := gp[idx][k]
					if g.PTS != w.PTS || g.DTS != w.DTS || g.Size != w.Size || (g.Flags[0] == 'K') != (w.Flags[0] == 'K') {
						t.Fatalf("stream %d packet %d: %+v, want %+v", idx, k, g, w)
					}
				}
			}
		})
	}
}

func concat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestReaderErrors(t *testing.T) {
	r := NewReader(bytes.NewReader(nil))
	if _, _, err := r.ReadInit(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("empty stream: %v", err)
	}
}

// A Reader reset onto another stream reads it as a new Reader does, with
// the buffers of the one before.
func TestReaderReset(t *testing.T) {
	b, err := os.ReadFile("../testdata/sample.mp4")
	if err != nil {
		t.Fatal(err)
	}
	readAll := func(rd *Reader) ([]Track, []Fragment) {
		tracks, _, err := rd.ReadInit()
		if err != nil {
			t.Fatalf("ReadInit: %v", err)
		}
		var frags []Fragment
		for {
			f, err := rd.NextFragment()
			if errors.Is(err, io.EOF) {
				return tracks, frags
			}
			if err != nil {
				t.Fatalf("NextFragment %d: %v", len(frags), err)
			}
			for i := range f.Tracks { // Data is only valid until the next call
				for j := range f.Tracks[i].Samples {
					f.Tracks[i].Samples[j].Data = bytes.Clone(f.Tracks[i].Samples[j].Data)
				}
			}
			frags = append(frags, f)
		}
	}
	wantTracks, wantFrags := readAll(NewReader(bytes.NewReader(b)))
	if len(wantFrags) == 0 {
		t.Fatal("no fragments")
	}
	rd := NewReader(bytes.NewReader(b[:len(b)/2])) // a truncated stream first
	_, _, _ = rd.ReadInit()
	for {
		if _, err := rd.NextFragment(); err != nil {
			break
		}
	}
	for range 2 {
		rd.Reset(bytes.NewReader(b))
		tracks, frags := readAll(rd)
		if !reflect.DeepEqual(tracks, wantTracks) || !reflect.DeepEqual(frags, wantFrags) {
			t.Fatal("a reset Reader reads the stream differently")
		}
	}
}

package fmp4

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/vigilcloud/vigil/media/avc"
	"github.com/vigilcloud/vigil/media/hevc"
	"github.com/vigilcloud/vigil/media/internal/mediatest"
)

// videoTrack turns an Annex B stream (with AUDs) into a track and one
// sample per access unit at 25 fps, parameter sets moved to the track.
func videoTrack(t *testing.T, codec Codec, raw []byte) (Track, []Sample) {
	t.Helper()
	tr := Track{ID: 1, Codec: codec, TimeScale: 90000}
	isAUD := func(n []byte) bool { return avc.NALType(n) == avc.NALAUD }
	if codec == H265 {
		isAUD = func(n []byte) bool { return hevc.NALType(n) == hevc.NALAUD }
	}
	var samples []Sample
	for _, au := range mediatest.AccessUnits(mediatest.SplitAnnexB(raw), isAUD) {
		var keep [][]byte
		for _, n := range au {
			kind := "slice"
			if codec == H264 {
				switch avc.NALType(n) {
				case avc.NALSPS:
					kind = "sps"
				case avc.NALPPS:
					kind = "pps"
				}
			} else {
				switch hevc.NALType(n) {
				case hevc.NALVPS:
					kind = "vps"
				case hevc.NALSPS:
					kind = "sps"
				case hevc.NALPPS:
					kind = "pps"
				}
			}
			switch kind {
			case "vps":
				tr.VPS = n
			case "sps":
				tr.SPS = n
			case "pps":
				tr.PPS = n
			default:
				keep = append(keep, n)
			}
		}
		if len(keep) == 0 {
			continue
		}
		key := avc.IsKeyframe(keep)
		if codec == H265 {
			key = hevc.IsKeyframe(keep)
		}
		samples = append(samples, Sample{Duration: 3600, Keyframe: key, Data: avc.AVCC(keep)})
	}
	if codec == H264 {
		s, err := avc.ParseSPS(tr.SPS)
		if err != nil {
			t.Fatal(err)
		}
		tr.Width, tr.Height = s.Width, s.Height
	} else {
		s, err := hevc.ParseSPS(tr.SPS)
		if err != nil {
			t.Fatal(err)
		}
		tr.Width, tr.Height = s.Width, s.Height
	}
	if len(samples) == 0 || !samples[0].Keyframe {
		t.Fatalf("%d samples, first not a keyframe", len(samples))
	}
	return tr, samples
}

// writeGOPs writes init plus one fragment per GOP (a keyframe starts one).
func writeGOPs(t *testing.T, tr Track, samples []Sample, opts InitOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := WriteInit(&buf, []Track{tr}, opts)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteInit: %d, %v (buffer %d)", n, err, buf.Len())
	}
	var dts uint64
	seq := uint32(1)
	for i := 0; i < len(samples); {
		j := i + 1
		for j < len(samples) && !samples[j].Keyframe {
			j++
		}
		before := buf.Len()
		n, err := WriteFragment(&buf, Fragment{SequenceNumber: seq, Tracks: []TrackFragment{{TrackID: tr.ID, BaseDecodeTime: dts, Samples: samples[i:j]}}})
		if err != nil || n != int64(buf.Len()-before) {
			t.Fatalf("WriteFragment: %d, %v", n, err)
		}
		for _, s := range samples[i:j] {
			dts += uint64(s.Duration)
		}
		seq++
		i = j
	}
	return buf.Bytes()
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "out.mp4")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func seconds(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("duration %q: %v", s, err)
	}
	return f
}

func TestWriteVideoFFprobe(t *testing.T) {
	cases := []struct {
		name          string
		codec         Codec
		args          []string
		width, height int
		frames        int
	}{
		{"h264", H264, []string{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "30", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g", "15", "-x264-params", "aud=1", "-f", "h264"}, 320, 240, 30},
		{"h264-cropped", H264, []string{"-f", "lavfi", "-i", "testsrc2=size=330x186:rate=25", "-frames:v", "10", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g", "5", "-x264-params", "aud=1", "-f", "h264"}, 330, 186, 10},
		{"h265", H265, []string{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "20", "-c:v", "libx265", "-preset", "ultrafast", "-bf", "0", "-g", "10", "-x265-params", "aud=1:log-level=error", "-f", "hevc"}, 320, 240, 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, raw := mediatest.FFmpeg(t, "in.raw", c.args...)
			tr, samples := videoTrack(t, c.codec, raw)
			if tr.Width != c.width || tr.Height != c.height {
				t.Fatalf("SPS size %dx%d, want %dx%d", tr.Width, tr.Height, c.width, c.height)
			}
			if len(samples) != c.frames {
				t.Fatalf("%d access units, want %d", len(samples), c.frames)
			}
			path := writeTemp(t, writeGOPs(t, tr, samples, InitOptions{}))
			p := mediatest.FFprobe(t, path, "-show_streams", "-show_format", "-count_frames")
			if len(p.Streams) != 1 {
				t.Fatalf("%d streams", len(p.Streams))
			}
			s := p.Streams[0]
			want := map[Codec]string{H264: "h264", H265: "hevc"}[c.codec]
			if s.CodecName != want || s.Width != c.width || s.Height != c.height || s.NbReadFrames != strconv.Itoa(c.frames) {
				t.Fatalf("ffprobe: %+v", s)
			}
			if d, wantD := seconds(t, p.Format.Duration), float64(c.frames)/25; math.Abs(d-wantD) > 0.001 {
				t.Fatalf("duration %v, want %v", d, wantD)
			}
		})
	}
}

// TestAppendFragmentHeader: the header appended after other bytes, followed
// by the samples, is exactly what WriteFragment writes.
func TestAppendFragmentHeader(t *testing.T) {
	f := Fragment{SequenceNumber: 7, Tracks: []TrackFragment{
		{TrackID: 1, BaseDecodeTime: 9000, Samples: []Sample{{Duration: 3600, Keyframe: true, Data: []byte("key picture")}, {Duration: 3600, PTSOffset: 3600, Data: []byte("p")}}},
		{TrackID: 2, BaseDecodeTime: 480, Samples: []Sample{{Duration: 1024, Keyframe: true, Data: []byte("aac")}}},
	}}
	var want bytes.Buffer
	if _, err := WriteFragment(&want, f); err != nil {
		t.Fatal(err)
	}
	prefix := []byte("earlier bytes")
	got, err := AppendFragmentHeader(append([]byte{}, prefix...), f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(prefix)], prefix) {
		t.Fatalf("prefix overwritten: %q", got[:len(prefix)])
	}
	got = got[len(prefix):]
	for _, tf := range f.Tracks {
		for _, s := range tf.Samples {
			got = append(got, s.Data...)
		}
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("header+samples differ from WriteFragment:\n%x\n%x", got, want.Bytes())
	}
	if _, err := AppendFragmentHeader(prefix, Fragment{SequenceNumber: 1}); err == nil {
		t.Fatal("a fragment without tracks was accepted")
	}
}

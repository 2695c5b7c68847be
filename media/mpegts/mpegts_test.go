package mpegts

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/media/fmp4"
	"github.com/vigilcloud/vigil/media/internal/mediatest"
)

// encodeTS has ffmpeg write seconds of test video with codec (and AAC when
// audio) as MPEG-TS, a keyframe a second.
func encodeTS(t *testing.T, codec string, seconds string, audio bool) (string, []byte) {
	t.Helper()
	args := []string{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"}
	if audio {
		args = append(args, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-c:a", "aac")
	}
	args = append(args, "-t", seconds, "-c:v", codec, "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p")
	if codec == "libx265" {
		args = append(args, "-x265-params", "log-level=error")
	}
	return mediatest.FFmpeg(t, "in.ts", append(args, "-f", "mpegts")...)
}

// remuxed is a transport stream read as fMP4, parsed back.
type remuxed struct {
	tracks []fmp4.Track
	frags  []fmp4.Fragment
}

// remux reads ts as fMP4 into a file, and parses that back.
func remux(t *testing.T, ts []byte) (string, remuxed) {
	t.Helper()
	b, err := io.ReadAll(NewReader(bytes.NewReader(ts), int64(len(ts))))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "out.mp4")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var out remuxed
	rd := fmp4.NewReader(bytes.NewReader(b))
	if out.tracks, _, err = rd.ReadInit(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := rd.NextFragment()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out.frags = append(out.frags, f)
	}
	return p, out
}

// samples are the samples of track id in all fragments.
func (r remuxed) samples(id uint32) []fmp4.Sample {
	var s []fmp4.Sample
	for _, f := range r.frags {
		for _, tf := range f.Tracks {
			if tf.TrackID == id {
				s = append(s, tf.Samples...)
			}
		}
	}
	return s
}

// TestRemuxDecodes: ffmpeg's MPEG-TS of H.264 with AAC, H.264 with
// B-frames, and H.265, remuxed, decodes with no error into every picture
// of the transport stream, each 40 ms.
func TestRemuxDecodes(t *testing.T) {
	for _, c := range []struct {
		name, codec string
		audio       bool
	}{{"h264+aac", "libx264", true}, {"h265", "libx265", false}} {
		t.Run(c.name, func(t *testing.T) {
			in, ts := encodeTS(t, c.codec, "3", c.audio)
			out, seg := remux(t, ts)
			want := testutil.CountFrames(t, in)
			d := testutil.Decode(t, out)
			if d.Errors != "" {
				t.Fatalf("remuxed segment does not decode:\n%s", d.Errors)
			}
			if d.Frames != want || want != 75 {
				t.Errorf("%d frames decoded, %d in the transport stream, want 75", d.Frames, want)
			}
			if d.Duration != 3 {
				t.Errorf("%.3f s decoded, want 3", d.Duration)
			}
			v := seg.tracks[0]
			if v.Width != 320 || v.Height != 240 || v.TimeScale != 90000 {
				t.Errorf("video track %+v", v)
			}
			if tf := seg.frags[0].Tracks[0]; tf.BaseDecodeTime != 0 && !c.audio {
				t.Errorf("video starts at %d, want 0", tf.BaseDecodeTime)
			}
			// A fragment per group of pictures (a keyframe a second).
			if len(seg.frags) != 3 {
				t.Errorf("%d fragments, want 3", len(seg.frags))
			}
			for i, f := range seg.frags {
				if s := f.Tracks[0].Samples; len(s) != 25 || !s[0].Keyframe {
					t.Errorf("fragment %d: %d pictures (first a keyframe: %v), want 25 from a keyframe", i, len(s), len(s) > 0 && s[0].Keyframe)
				}
			}
			if c.audio {
				if len(seg.tracks) != 2 || seg.tracks[1].Codec != fmp4.AAC || seg.tracks[1].SampleRate != 48000 || seg.tracks[1].Channels != 1 {
					t.Fatalf("tracks %+v, want video and 48 kHz mono AAC", seg.tracks)
				}
				p := mediatest.FFprobe(t, out, "-show_streams", "-count_frames")
				if len(p.Streams) != 2 || p.Streams[1].CodecName != "aac" {
					t.Errorf("ffprobe streams %+v", p.Streams)
				}
				if b, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-i", out, "-map", "0:a", "-f", "null", "-").CombinedOutput(); err != nil || len(b) > 0 {
					t.Errorf("the audio does not decode: %v\n%s", err, b)
				}
			}
		})
	}
}

// TestRemuxBFrames: composition offsets come from PTS - DTS.
func TestRemuxBFrames(t *testing.T) {
	in, _ := mediatest.FFmpeg(t, "in.ts", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "2",
		"-c:v", "libx264", "-preset", "ultrafast", "-bf", "3", "-g", "25", "-f", "mpegts")
	ts, _ := os.ReadFile(in)
	out, seg := remux(t, ts)
	d := testutil.Decode(t, out)
	if d.Errors != "" || d.Frames != 50 || d.Duration != 2 {
		t.Fatalf("decoded %d frames, %.3f s, errors %q; want 50, 2 s, none", d.Frames, d.Duration, d.Errors)
	}
	reordered := false
	for _, s := range seg.samples(1) {
		reordered = reordered || s.PTSOffset > 0
	}
	if !reordered {
		t.Error("no composition offset: B-frames lost their order")
	}
}

// packets splits ts into its packets.
func packets(ts []byte) [][]byte {
	var p [][]byte
	for i := 0; i+PacketSize <= len(ts); i += PacketSize {
		p = append(p, ts[i:i+PacketSize])
	}
	return p
}

func join(ps [][]byte) []byte { return bytes.Join(ps, nil) }

// videoPacket returns the index of a video packet that continues a PES.
func videoPacket(t *testing.T, ps [][]byte) int {
	t.Helper()
	for i, p := range ps {
		pid := int(p[1]&0x1f)<<8 | int(p[2])
		if pid == 0x100 && p[1]&0x40 == 0 && i > 10 {
			return i
		}
	}
	t.Fatal("no video continuation packet")
	return 0
}

// TestDemuxHostileInput: malformed, truncated, oversized, duplicated and
// out-of-order input is refused with ErrMalformed or read the same.
func TestDemuxHostileInput(t *testing.T) {
	_, ts := encodeTS(t, "libx264", "1", false)
	ps := packets(ts)
	i := videoPacket(t, ps)
	noSync := bytes.Clone(ts)
	noSync[PacketSize*3] = 0x48
	dup := append(append(append([][]byte{}, ps[:i+1]...), ps[i]), ps[i+1:]...)
	swapped := append([][]byte{}, ps...)
	swapped[i], swapped[i+1] = swapped[i+1], swapped[i]
	noPTS := bytes.Clone(ts)
	for _, p := range packets(noPTS) {
		if pid := int(p[1]&0x1f)<<8 | int(p[2]); pid == 0x100 && p[1]&0x40 != 0 {
			off := 4
			if p[3]&0x20 != 0 {
				off += 1 + int(p[4])
			}
			p[off+7] &^= 0xc0 // PTS_DTS_flags = 0
			break
		}
	}
	// A packet whose adaptation field fills it, payload flag set: it
	// counts (continuity counter) but carries nothing.
	stuffed := [][]byte{}
	for k, p := range ps {
		p = bytes.Clone(p)
		if k > i && int(p[1]&0x1f)<<8|int(p[2]) == 0x100 {
			p[3] = p[3]&0xf0 | (p[3]+1)&0x0f
		}
		stuffed = append(stuffed, p)
		if k == i {
			st := make([]byte, PacketSize)
			st[0], st[1], st[2] = 0x47, p[1]&0x1f, p[2]
			st[3] = 0x30 | (p[3]+1)&0x0f // adaptation field and payload
			st[4] = PacketSize - 5
			for j := 6; j < PacketSize; j++ {
				st[j] = 0xff
			}
			stuffed = append(stuffed, st)
		}
	}
	for _, c := range []struct {
		name  string
		in    []byte
		limit int64
		ok    bool
	}{
		{"no sync byte", noSync, 1 << 30, false},
		{"truncated packet", ts[:len(ts)-100], 1 << 30, false},
		{"oversized", ts, int64(len(ts) - PacketSize), false},
		{"duplicated packet", join(dup), 1 << 30, true},
		{"stuffing packet", join(stuffed), 1 << 30, true},
		{"out of order", join(swapped), 1 << 30, false},
		{"no PAT or PMT", join(ps[3:]), 1 << 30, false},
		{"PES without PTS", noPTS, 1 << 30, false},
		{"empty", nil, 1 << 30, false},
		{"not a transport stream", bytes.Repeat([]byte("vigil"), 188), 1 << 30, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := io.ReadAll(NewReader(bytes.NewReader(c.in), c.limit))
			if c.ok {
				if err != nil {
					t.Fatal(err)
				}
				want, _ := io.ReadAll(NewReader(bytes.NewReader(ts), 1<<30))
				if !bytes.Equal(got, want) {
					t.Error("not read as the stream it repeats")
				}
				return
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v, want ErrMalformed", err)
			}
		})
	}
}

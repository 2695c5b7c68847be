package playback

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/media/fmp4"
)

// storedSeconds is the video samples' total duration in segs.
func storedSeconds(t *testing.T, segs ...[]byte) float64 {
	t.Helper()
	var ticks uint64
	var scale uint32
	for _, b := range segs {
		rd := fmp4.NewReader(bytes.NewReader(b))
		tracks, _, err := rd.ReadInit()
		require.NoError(t, err)
		require.Len(t, tracks, 1)
		scale = tracks[0].TimeScale
		for {
			f, err := rd.NextFragment()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			for _, tf := range f.Tracks {
				for _, s := range tf.Samples {
					ticks += uint64(s.Duration)
				}
			}
		}
	}
	return float64(ticks) / float64(scale)
}

// probeDurations returns ffprobe's container and video stream durations.
func probeDurations(t *testing.T, path string) (format, stream float64) {
	t.Helper()
	testutil.RequireBinary(t, "ffprobe")
	out, err := exec.Command("ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", path).Output()
	require.NoError(t, err, "%s", out)
	var p struct {
		Format  struct{ Duration string }
		Streams []struct {
			CodecType string `json:"codec_type"`
			Duration  string
		}
	}
	require.NoError(t, json.Unmarshal(out, &p), "%s", out)
	require.Len(t, p.Streams, 1)
	format, err = strconv.ParseFloat(p.Format.Duration, 64)
	require.NoError(t, err, "%s", out)
	stream, err = strconv.ParseFloat(p.Streams[0].Duration, 64)
	require.NoError(t, err, "%s", out)
	return format, stream
}

// A clip cut short declares what it holds, not what its window asked for.
func TestClipHeaderDurationsMatchSamples(t *testing.T) {
	m := newMediaEnv(t, Options{})
	base := recentBase()
	small := ffmpegSegments(t, 2, "mp4")
	large := ffmpegSegmentsSized(t, 2, "mp4", "640x360")
	// No resolutions in the index: only the media shows the change.
	m.record(t, "s1", append(small, large...), base, nil, "video/mp4")
	// s2: a gap of 48 s between two recorded 12-s stretches.
	m.record(t, "s2", ffmpegSegments(t, 4, "mp4"), base, []int64{base, base + 6000, base + 60_000, base + 66_000}, "video/mp4")
	allS2 := ffmpegSegments(t, 4, "mp4")

	tests := []struct {
		name, stream string
		from, to     int64
		want         float64
		truncated    string
	}{
		{"stops at a parameter change", "s1", base, base + 24_000, storedSeconds(t, small...), "parameters_changed"},
		{"window past the recording", "s1", base - 5000, base + 12_000, storedSeconds(t, small...), ""},
		{"gap removed", "s2", base, base + 72_000, storedSeconds(t, allS2...), ""},
		{"window ends in a gap", "s2", base, base + 40_000, storedSeconds(t, allS2[:2]...), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, resp := m.getClip(t, tt.stream, tt.from, tt.to)
			assert.Equal(t, tt.truncated, resp.Trailer.Get("X-Vigil-Clip-Truncated"))
			format, stream := probeDurations(t, f)
			assert.InDelta(t, tt.want, stream, 1e-6, "stream duration vs the stored samples")
			assert.InDelta(t, stream, format, 1e-6, "container duration (mvhd/mehd) vs stream")
			checkDecodes(t, f)
		})
	}
}

package playback

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/internal/testutil"
)

// TestClipOfTransportStream: MPEG-TS segments are remuxed into the clip:
// whole, it decodes into every stored picture with the stored duration and
// a header that says so; cut in the middle, it starts at the keyframe
// before the cut. A change to fMP4 ends it, as any change of init section.
func TestClipOfTransportStream(t *testing.T) {
	ts := ffmpegSegments(t, 3, "ts")
	m := newMediaEnv(t, Options{})
	base := recentBase()
	m.record(t, "s1", ts, base, nil, "video/mp2t")

	f, resp := m.getClip(t, "s1", base, base+18_000)
	assert.Empty(t, resp.Trailer.Get("X-Vigil-Clip-Truncated"))
	checkDecodes(t, f)
	d := testutil.Decode(t, f)
	assert.Empty(t, d.Errors)
	assert.Equal(t, storedFrames(t, ts), d.Frames)
	assert.InDelta(t, 18, d.Duration, 1e-9)
	format, stream := probeDurations(t, f)
	assert.InDelta(t, 18, format, 0.001, "mvhd")
	assert.InDelta(t, 18, stream, 0.001, "mdhd")

	// From 7 s on: the keyframe at 6 s (a GOP is 2 s), to 11 s.
	f, _ = m.getClip(t, "s1", base+7000, base+11_000)
	d = testutil.Decode(t, f)
	assert.Empty(t, d.Errors)
	assert.Equal(t, 125, d.Frames, "6 s to 11 s at 25 fps")

	// TS, then fMP4 of another encoder: the clip ends at the change.
	mp4 := recorderSegments(t, 1, "320x240", "libx264")
	m.record(t, "s1", mp4, base+18_000, nil, "video/mp4")
	f, resp = m.getClip(t, "s1", base, base+24_000)
	require.Equal(t, "parameters_changed", resp.Trailer.Get("X-Vigil-Clip-Truncated"))
	d = testutil.Decode(t, f)
	assert.Empty(t, d.Errors)
	assert.InDelta(t, 18, d.Duration, 1e-9)
}

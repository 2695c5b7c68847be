package playback

import (
	"testing"

	"github.com/vigilcloud/vigil/index"
)

// TestShortSegmentsRestartingAtZero: the RTSP recorder started every
// segment's decode times at zero (segments stored before they ran on
// across a session still do). With segments as short as the index's
// gap tolerance (--segment-duration 1s) a restart must still be told from
// a segment that runs on, or ffmpeg drops every segment after the first
// of a run (found with GStreamer publishing into a node).
func TestShortSegmentsRestartingAtZero(t *testing.T) {
	h := func(tfdt uint64) index.Head {
		return index.Head{Init: [index.HeadInitBytes]byte{1}, Track: 1, Scale: 90000, TFDT: tfdt}
	}
	for _, c := range []struct {
		durMS      int64
		prev, next uint64
		want       bool
	}{
		{1000, 0, 0, false},          // restarts at zero
		{1000, 0, 90000, true},       // runs on
		{1000, 0, 90000 + 900, true}, // 10 ms off: within the tolerance
		{1000, 90000, 0, false},
		{40, 0, 0, false}, // one picture
		{40, 0, 3600, true},
		{6000, 0, 540000 + 45000, true}, // 500 ms off a 6-s segment
		{6000, 0, 0, false},
	} {
		if got := continuedBy(h(c.prev), c.durMS, h(c.next)); got != c.want {
			t.Errorf("%d ms from %d, next at %d: continued %v, want %v", c.durMS, c.prev, c.next, got, c.want)
		}
	}
}

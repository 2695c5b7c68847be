package segmenter

import (
	"testing"

	vtestutil "github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/media/fmp4"
)

// TestAudioDuplicatesAndLateFramesDropped: Opus over a network that
// duplicates and reorders packets (UDP). A duplicate is recorded once; a
// frame that arrives after a later one is dropped (its place has passed),
// and the frames around it keep their time. Both are counted.
func TestAudioDuplicatesAndLateFramesDropped(t *testing.T) {
	vtestutil.RequireBinary(t, "ffprobe")
	src := makeSource(t, "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-f", "lavfi", "-i", "anoisesrc=color=white:sample_rate=48000:amplitude=0.5", "-t", "3",
		"-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g", "25", "-c:a", "libopus", "-b:a", "64k", "-ac", "2")
	if src.tracks[1].Codec != fmp4.Opus {
		t.Fatalf("track 1 is %s", src.tracks[1].Codec)
	}
	// One Opus frame per packet: the n-th audio packet is source frame n.
	var pkts []rtpPkt
	var audioAt []int // index in pkts of each audio packet
	for _, p := range src.packets() {
		if p.media == 1 {
			audioAt = append(audioAt, len(pkts))
		}
		pkts = append(pkts, p)
	}
	missing := map[int]bool{}
	swapped := 0
	for n := 40; n+1 < len(audioAt); n += 37 {
		// Frame n arrives right after frame n+1: late, dropped.
		i, j := audioAt[n], audioAt[n+1]
		pkts[i], pkts[j] = pkts[j], pkts[i]
		missing[n] = true
		swapped++
	}
	var sent []rtpPkt
	dups := 0
	for i, p := range pkts {
		sent = append(sent, p)
		if p.media == 1 && i%9 == 0 {
			sent = append(sent, p) // delivered twice
			dups++
		}
	}
	if swapped < 3 || dups < 10 {
		t.Fatalf("%d reordered, %d duplicated", swapped, dups)
	}
	g := recordPackets(t, src, sent)
	if n := checkStoredAudio(t, g, src, missing); n < 100 {
		t.Errorf("%d audio frames stored of 3 s", n)
	}
	if got, want := value(g.rec.m.audioDropped), float64(swapped+dups); got != want {
		t.Errorf("audio frames dropped: %v, want %v", got, want)
	}
}

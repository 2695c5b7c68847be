package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

const llSample = `#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:6
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.000
#EXT-X-PART-INF:PART-TARGET=1.000
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-DISCONTINUITY-SEQUENCE:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-PROGRAM-DATE-TIME:2026-12-03T10:00:00.000Z
#EXT-X-MAP:URI="segments/1/init.mp4"
#EXT-X-PART:DURATION=1.000,URI="parts/s/0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.960,URI="parts/s/1.m4s"
#EXTINF:1.960,
segments/1/media.m4s
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2026-12-03T10:00:01.960Z
#EXT-X-MAP:URI="segments/2/init.mp4"
#EXT-X-PART:DURATION=1.000,URI="parts/s/2.m4s",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="parts/s/3.m4s"
`

// TestLivePoller: the player numbers frames by the parts' durations and
// reports each frame once, with the reload it then asks for.
func TestLivePoller(t *testing.T) {
	pl := parseLivePlaylist(llSample)
	if pl.seq != 7 || len(pl.segs) != 2 || !pl.segs[0].closed || pl.segs[1].closed || len(pl.segs[0].parts) != 2 || pl.segs[0].parts[1] != 960 {
		t.Fatalf("parsed %+v", pl)
	}
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.RawQuery)
		_, _ = w.Write([]byte(llSample))
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	frames := map[int]int{}
	p := &livePoller{hc: srv.Client(), url: srv.URL, seen: map[[2]int64]bool{}}
	var errs atomic.Int64
	p.run(ctx, func(f int, _ time.Time) {
		frames[f]++
		if len(frames) == 74 { // 1.96 s + 1 s at 25 fps
			cancel()
		}
	}, &errs)
	for f := range 74 {
		if frames[f] != 1 {
			t.Fatalf("frame %d reported %d times: %v", f, frames[f], frames)
		}
	}
	if queries[0] != "" || len(queries) > 1 && queries[1] != "_HLS_msn=8&_HLS_part=1" {
		t.Errorf("queries %q", queries)
	}
}

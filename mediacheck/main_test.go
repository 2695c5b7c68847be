package mediacheck

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/internal/vigiltest"
)

var vigilBin string

func TestMain(m *testing.M) {
	os.Exit(vigiltest.Main(m, &vigilBin))
}

// segment is one entry of a recordings answer.
type segment struct {
	Start      int64 `json:"start"`
	DurationMS int64 `json:"duration_ms"`
	Size       int64 `json:"size"`
}

func (s segment) end() int64 { return s.Start + s.DurationMS }

// recordings lists stream's segments in [from, to).
func recordings(t *testing.T, n *vigiltest.Node, stream string, from, to int64) []segment {
	t.Helper()
	var r struct{ Segments []segment }
	n.Must(n.API.Do(context.Background(), "GET", fmt.Sprintf("/v1/streams/%s/recordings?start=%d&end=%d", stream, from, to), nil, &r))
	return r.Segments
}

// waitRecorded polls until stream's segments in [from, to) last wantMS in
// all (an RTSP session's last segments are stored after it ends).
func waitRecorded(t *testing.T, n *vigiltest.Node, stream string, from, to, wantMS int64) []segment {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		segs := recordings(t, n, stream, from, to)
		var ms int64
		for _, s := range segs {
			ms += s.DurationMS
		}
		if ms >= wantMS {
			return segs
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s: %d ms recorded, want %d: %+v", stream, ms, wantMS, segs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// get fetches path with the operator token and fails on anything but 200.
func get(t *testing.T, n *vigiltest.Node, path string) ([]byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, n.Base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+vigiltest.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return b, resp.Trailer
}

// file writes b into a file of the test's temp dir.
func file(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// requireGStreamer skips (fails under VIGIL_REQUIRE_INTEGRATION=1) unless
// gst-launch-1.0 and the elements named are installed.
func requireGStreamer(t *testing.T, elements ...string) {
	t.Helper()
	testutil.RequireBinary(t, "gst-launch-1.0")
	inspect := testutil.RequireBinary(t, "gst-inspect-1.0")
	for _, e := range elements {
		if out, err := exec.Command(inspect, e).CombinedOutput(); err != nil {
			msg := fmt.Sprintf("GStreamer element %s is not installed (scripts/test.sh installs it): %v\n%s", e, err, out)
			if os.Getenv("VIGIL_REQUIRE_INTEGRATION") == "1" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

// gstPublish has GStreamer encode frames of videotestsrc in caps with
// x264enc and publish them over RTSP (rtspclientsink, TCP) to url.
func gstPublish(t *testing.T, url, caps string, frames int) {
	t.Helper()
	requireGStreamer(t, "videotestsrc", "x264enc", "rtspclientsink")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pipeline := fmt.Sprintf("videotestsrc num-buffers=%d is-live=true ! %s ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 "+
		"! rtspclientsink location=%s protocols=tcp", frames, caps, url)
	cmd := exec.CommandContext(ctx, "gst-launch-1.0", append([]string{"-q"}, strings.Fields(pipeline)...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		// Once in a loaded run gst-launch-1.0 failed with "Could not send
		// message. (Received end-of-file)" as the stream ended; what the
		// node stored is what the callers check, frame by frame.
		t.Logf("gst-launch-1.0 %s: %v\n%s", pipeline, err, out)
	}
}

// run is the part of a playlist between two discontinuities.
type run struct {
	playlist string  // the run alone, as a playlist of its own
	starts   []int64 // the segments it lists
}

var segURI = regexp.MustCompile(`\nsegments/(\d+)/media\.`)

// splitRuns cuts a VOD playlist at its discontinuities: each run becomes
// a playlist (the head, the run's entries, EXT-X-ENDLIST) with absolute
// URIs, so that ffmpeg reads it from a file by the signatures alone.
func splitRuns(t *testing.T, n *vigiltest.Node, stream, pl string) []run {
	t.Helper()
	abs := n.Base + "/v1/streams/" + stream + "/segments/"
	i := strings.Index(pl, "#EXT-X-PROGRAM-DATE-TIME:")
	if i < 0 {
		t.Fatalf("playlist without a program date:\n%s", pl)
	}
	head, body := pl[:i], strings.TrimSuffix(pl[i:], "#EXT-X-ENDLIST\n")
	var runs []run
	for _, r := range strings.Split(body, "#EXT-X-DISCONTINUITY\n") {
		var starts []int64
		for _, m := range segURI.FindAllStringSubmatch(r, -1) {
			s, _ := strconv.ParseInt(m[1], 10, 64)
			starts = append(starts, s)
		}
		r = strings.ReplaceAll(r, "URI=\"segments/", "URI=\""+abs)
		r = strings.ReplaceAll(r, "\nsegments/", "\n"+abs)
		runs = append(runs, run{playlist: head + r + "#EXT-X-ENDLIST\n", starts: starts})
	}
	return runs
}

// decodeNonEmpty fails when ffmpeg reported anything.
func noErrors(t *testing.T, what string, d testutil.Decoded) {
	t.Helper()
	if s := string(bytes.TrimSpace([]byte(d.Errors))); s != "" {
		t.Errorf("%s: ffmpeg reports:\n%s", what, s)
	}
}

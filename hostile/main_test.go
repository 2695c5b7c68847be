// Package hostile drives the real vigil binary over loopback the way a
// hostile, slow or crashing client would, bounded in count and time, and
// checks that no video is lost, nothing deleted survives, and no client locks
// the others out.
package hostile

import (
	"os"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/vigiltest"
)

var vigilBin string

func TestMain(m *testing.M) {
	os.Exit(vigiltest.Main(m, &vigilBin))
}

// TestStartsAndProvisions keeps the harness honest: a node starts and takes a segment.
func TestStartsAndProvisions(t *testing.T) {
	n := vigiltest.Start(t, vigilBin, vigiltest.Options{})
	tok := n.Provision("s1")
	body := append([]byte{0, 0, 0, 16, 'f', 't', 'y', 'p', 'i', 's', 'o', 'm', 0, 0, 0, 0}, []byte{0, 0, 0, 8, 'm', 'd', 'a', 't'}...)
	if code, msg := n.Put(tok, "s1", time.Now().Add(-time.Minute).UnixMilli(), body, "video/mp4"); code != 201 {
		t.Fatalf("put: %d %s", code, msg)
	}
}

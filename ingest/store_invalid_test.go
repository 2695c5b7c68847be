package ingest

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/media"
)

// TestStoreRefusesUnindexableSegment: a segment longer than an upload may
// be (as the RTSP recorder once wrote after an RTP timestamp jump) is a
// permanent ErrInvalidSegment, not "index unavailable" to be retried
// forever, and nothing is left in storage.
func TestStoreRefusesUnindexableSegment(t *testing.T) {
	e := newEnv(t)
	st, err := e.reg.Stream(context.Background(), "s1")
	require.NoError(t, err)
	body := segment(t, 1000)
	for _, d := range []int64{22_224_262, (10 * time.Minute).Milliseconds() + 1, -1} {
		seg := index.Segment{Start: now.Add(-time.Minute).UnixMilli(), DurationMS: d, Size: int64(len(body)), ContentType: media.ContentTypeMP4}
		_, _, err := e.h.Store(context.Background(), st, seg, bytes.NewReader(body))
		if !errors.Is(err, ErrInvalidSegment) {
			t.Errorf("duration %d ms: Store error %v, want ErrInvalidSegment", d, err)
		}
		if errors.Is(err, ErrIndexUnavailable) || errors.Is(err, ErrStorageUnavailable) {
			t.Errorf("duration %d ms: a permanent error reported as transient: %v", d, err)
		}
	}
	require.Empty(t, objects(t, e.store), "nothing may be stored")
	require.Empty(t, indexed(t, e.idx, ref1))
}

package playback

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/auth"
	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/index/embedded"
	fsstore "github.com/vigilcloud/vigil/storage/fs"
)

// BenchmarkRecordingsDayPage is one page of a day's 6-s segments (14,400)
// from closed hours: what `vigil bench playback` times as the day page,
// without HTTP and the shared machine's noise.
func BenchmarkRecordingsDayPage(b *testing.B) {
	ctx := context.Background()
	store, err := fsstore.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	from := base - base%index.HourMS
	for h := from - index.HourMS; h < from+24*index.HourMS; h += index.HourMS {
		var segs []index.Segment
		for s := h; s < h+index.HourMS; s += 6000 {
			segs = append(segs, index.Segment{Start: s, DurationMS: 6000, Size: 1_500_000, SHA256: fmt.Sprintf("%064x", s), ContentType: "video/mp4", Width: 1280, Height: 720})
		}
		if err := index.WriteManifest(ctx, store, ref, h, segs); err != nil {
			b.Fatal(err)
		}
	}
	idx := embedded.New(store, embedded.Options{})
	reg := &fakeRegistry{streams: map[string]accounts.Stream{"s1": {ID: "s1", Camera: "cam1", Bridge: "b1", Account: "acct"}}}
	h := auth.New(adminToken, nil).Middleware(New(store, idx, reg, nil), nil)
	url := fmt.Sprintf("/v1/streams/s1/recordings?start=%d&end=%d&limit=20000", from, from+24*index.HourMS)
	b.ResetTimer()
	for range b.N {
		req := httptest.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}

func TestRecordingsJSONAsEncodingJSON(t *testing.T) {
	segs := []index.Segment{{Start: 1, DurationMS: 2, Size: 3, SHA256: "x"}, {Start: 1 << 61, DurationMS: 0, Size: 0}}
	for _, c := range []struct {
		stream string
		spans  []spanJSON
		segs   []index.Segment
		cursor string
	}{
		{stream: "s1", spans: []spanJSON{}},
		{stream: "s_1-A", spans: []spanJSON{{1, 2}, {-3, 1 << 62}}, segs: segs, cursor: "17"},
		{stream: "odd \"<&>\\\n\u2028é", segs: segs, cursor: "a\"b"},
	} {
		// What the handler encoded with encoding/json before.
		rec := Recordings{Spans: c.spans, Segments: make([]segmentJSON, 0, len(c.segs)), NextCursor: c.cursor}
		for _, s := range c.segs {
			rec.Segments = append(rec.Segments, segmentJSON{Start: s.Start, DurationMS: s.DurationMS, Size: s.Size,
				URL: "/v1/streams/" + c.stream + "/segments/" + strconv.FormatInt(s.Start, 10)})
		}
		var want bytes.Buffer
		require.NoError(t, json.NewEncoder(&want).Encode(rec))
		require.Equal(t, want.String(), string(appendRecordings(nil, c.stream, c.spans, c.segs, c.cursor, func(b []byte) []byte { return b })))
		// Flushed every few bytes, as writeRecordings does every 64 KiB.
		var got []byte
		tail := appendRecordings(nil, c.stream, c.spans, c.segs, c.cursor, func(b []byte) []byte {
			if len(b) < 7 {
				return b
			}
			got = append(got, b...)
			return b[:0]
		})
		require.Equal(t, want.String(), string(append(got, tail...)))
	}
}

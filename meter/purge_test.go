package meter

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFSMPurgeJob(t *testing.T) {
	h := newHarness(t)
	seed(h)
	cam := createCamera{Bridge: "b1", Camera: NewCamera{ID: "c1", Name: "C1", Streams: []NewStream{{ID: "x"}, {ID: "y"}}}}
	h.must(cmdCreateCamera, "c1", "", cam)
	h.must(cmdDeleteCamera, "d1", "purge-1", deleteCamera{ID: "c1"})
	j := h.f.st.Purges["purge-1"]
	require.NotNil(t, j)
	require.Equal(t, PurgePending, j.State)
	require.Equal(t, "s1/c1/", j.Prefix())
	require.Equal(t, []string{"x", "y"}, j.Streams)

	// Progress adds up; the same batch proposed again (same request id) counts once.
	h.must(cmdPurgeProgress, "purge/purge-1/k1", "", purgeProgress{ID: "purge-1", Cursor: "s1/c1/x/seg/a", Objects: 10, Bytes: 1000})
	h.must(cmdPurgeProgress, "purge/purge-1/k1", "", purgeProgress{ID: "purge-1", Cursor: "s1/c1/x/seg/a", Objects: 10, Bytes: 1000})
	h.must(cmdPurgeProgress, "purge/purge-1/k2", "", purgeProgress{ID: "purge-1", Cursor: "s1/c1/y/seg/b", Objects: 5, Bytes: 500})
	// A stale cursor never rewinds.
	h.must(cmdPurgeProgress, "purge/purge-1/k0", "", purgeProgress{ID: "purge-1", Cursor: "s1/c1/a", Objects: 0, Bytes: 0})
	require.Equal(t, int64(15), j.ObjectsDeleted)
	require.Equal(t, int64(1500), j.BytesFreed)
	require.Equal(t, "s1/c1/y/seg/b", j.Cursor)
	require.Equal(t, PurgeRunning, j.State)
	h.must(cmdPurgeProgress, "", "", purgeProgress{ID: "purge-1", Error: "storage down"})
	require.Equal(t, PurgeFailed, j.State)
	_, err := h.apply(cmdPurgeProgress, "", "", purgeProgress{ID: "nope"})
	require.ErrorIs(t, err, ErrNotFound)

	// Before the purge is done the id cannot be reused.
	_, err = h.apply(cmdCreateCamera, "c1b", "", cam)
	require.ErrorIs(t, err, ErrConflict)
	h.must(cmdPurgeDone, "pd", "", purgeDone{ID: "purge-1"})
	require.Equal(t, PurgeDone, j.State)
	require.NotNil(t, j.DoneAt)
	// Progress after done changes nothing.
	h.must(cmdPurgeProgress, "late", "", purgeProgress{ID: "purge-1", Cursor: "z", Objects: 1, Bytes: 1})
	require.Equal(t, int64(15), j.ObjectsDeleted)

	// Once done, the same camera and stream ids start over, empty and live.
	var r CameraResult
	require.NoError(t, json.Unmarshal(h.must(cmdCreateCamera, "c1c", "", cam), &r))
	require.True(t, r.Created)
	require.Nil(t, h.stream("x").Stream.DeletedAt)
	require.Len(t, h.stream("x").History, 1)
	require.Len(t, h.f.st.Retired, 1, "the deleted camera is kept for billing")
	require.Equal(t, "c1", h.f.st.Retired[0].Camera.ID)
	require.Len(t, h.f.st.Retired[0].Streams, 2)

	// Snapshot round trip keeps purges and retired cameras.
	st, err := decodeState(bytes.NewReader(persist(t, h.f)))
	require.NoError(t, err)
	require.Equal(t, PurgeDone, st.Purges["purge-1"].State)
	require.Len(t, st.Retired, 1)
}

func TestFSMDeleteSubAccount(t *testing.T) {
	h := newHarness(t)
	seed(h)
	h.must(cmdCreateCamera, "c1", "", createCamera{Bridge: "b1", Camera: NewCamera{ID: "c1", Name: "C1", Streams: []NewStream{{ID: "x"}}}})
	h.must(cmdCreateCamera, "c2", "", createCamera{Bridge: "b1", Camera: NewCamera{ID: "c2", Name: "C2", Streams: []NewStream{{ID: "y"}}}})
	h.must(cmdCreateCamera, "c3", "", createCamera{Bridge: "b2", Camera: NewCamera{ID: "c3", Name: "C3", Streams: []NewStream{{ID: "z"}}}})
	h.must(cmdDeleteCamera, "d1", "purge-1", deleteCamera{ID: "c1"})

	_, err := h.apply(cmdDeleteAccount, "da0", "n0", deleteAccount{ID: "r1"})
	require.ErrorIs(t, err, ErrInvalid, "resellers are not deleted this way")

	var r AccountDeleteResult
	require.NoError(t, json.Unmarshal(h.must(cmdDeleteAccount, "da1", "n1", deleteAccount{ID: "s1"}), &r))
	require.Equal(t, "purge-1", r.Purges["c1"], "an earlier deletion keeps its purge")
	require.NotEmpty(t, r.Purges["c2"])
	require.Len(t, r.Purges, 2)
	require.NotNil(t, h.stream("y").Stream.DeletedAt)
	require.Nil(t, h.stream("z").Stream.DeletedAt, "other sub-accounts untouched")
	require.Equal(t, PurgePending, h.f.st.Purges[r.Purges["c2"]].State)
	// A retry (same request) gets the same purges; another request finds
	// nothing.
	var r2 AccountDeleteResult
	require.NoError(t, json.Unmarshal(h.must(cmdDeleteAccount, "da1", "n2", deleteAccount{ID: "s1"}), &r2))
	require.Equal(t, r.Purges, r2.Purges)
	_, err = h.apply(cmdDeleteAccount, "da2", "n2", deleteAccount{ID: "s1"})
	require.ErrorIs(t, err, ErrNotFound)
	// No new cameras in a deleted account.
	_, err = h.apply(cmdCreateCamera, "c4", "", createCamera{Bridge: "b1", Camera: NewCamera{ID: "c4", Name: "C4", Streams: []NewStream{{ID: "w"}}}})
	require.ErrorIs(t, err, ErrNotFound)
}

func TestHTTPPurgesAndSubAccountDelete(t *testing.T) {
	m := openMeter(t, t.TempDir(), "127.0.0.1:0")
	defer m.Close()
	c := serve(t, m)
	provision(t, c)
	require.Equal(t, 201, c.op("POST", "/v1/bridges/b1/cameras", `{"id":"c2","name":"Yard","streams":[{"id":"c2-main"}]}`).status)

	r := c.op("DELETE", "/v1/cameras/c2", "")
	require.Equal(t, 202, r.status, r.body)
	purge, _ := r.body["purge"].(string)
	r = c.op("GET", "/v1/purges/"+purge, "")
	require.Equal(t, 200, r.status)
	require.Equal(t, "pending", r.body["state"])
	require.Equal(t, float64(0), r.body["objects_deleted"])
	require.Equal(t, float64(0), r.body["bytes_freed"])
	require.Equal(t, 404, c.op("GET", "/v1/purges/nope", "").status)
	require.Equal(t, 400, c.op("GET", "/v1/purges/bad%20id", "").status)

	require.Equal(t, 400, c.op("DELETE", "/v1/accounts/r1", "").status, "resellers are not deleted")
	require.Equal(t, 404, c.op("DELETE", "/v1/accounts/nope", "").status)
	r = c.op("DELETE", "/v1/accounts/s1", "")
	require.Equal(t, 202, r.status, r.body)
	purges, _ := r.body["purges"].(map[string]any)
	require.Len(t, purges, 2)
	require.Equal(t, purge, purges["c2"], "an earlier deletion keeps its purge")
	c1, _ := purges["c1"].(string)
	require.Equal(t, "pending", c.op("GET", "/v1/purges/"+c1, "").body["state"])
	require.Equal(t, 404, c.op("PATCH", "/v1/streams/c1-main", `{"retention_days":7}`).status)
	// Retried: the same purges; under another key: gone.
	r = c.op("DELETE", "/v1/accounts/s1", "")
	require.Equal(t, 202, r.status)
	require.Equal(t, purges, r.body["purges"])
	require.Equal(t, 404, c.op("DELETE", "/v1/accounts/s1", "", "Idempotency-Key", "k").status)
}

package accounts_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/machinetest"
	"github.com/vigilcloud/vigil/purge"
)

func TestFSMPurgeJob(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	cam := accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c1", Name: "C1", Streams: []accounts.NewStream{{ID: "x"}, {ID: "y"}}}}
	h.Must(cluster.CmdCreateCamera, "c1", "", cam)
	h.Must(cluster.CmdDeleteCamera, "d1", "purge-1", accounts.DeleteCameraCmd{ID: "c1"})
	j := h.M.Purges.Purges["purge-1"]
	require.NotNil(t, j)
	require.Equal(t, purge.PurgePending, j.State)
	require.Equal(t, "s1/c1/", j.Prefix())
	require.Equal(t, []string{"x", "y"}, j.Streams)

	// Progress adds up; the same batch proposed again (same request id) counts once.
	h.Must(cluster.CmdPurgeProgress, "purge/purge-1/k1", "", purge.ProgressCmd{ID: "purge-1", Cursor: "s1/c1/x/seg/a", Objects: 10, Bytes: 1000})
	h.Must(cluster.CmdPurgeProgress, "purge/purge-1/k1", "", purge.ProgressCmd{ID: "purge-1", Cursor: "s1/c1/x/seg/a", Objects: 10, Bytes: 1000})
	h.Must(cluster.CmdPurgeProgress, "purge/purge-1/k2", "", purge.ProgressCmd{ID: "purge-1", Cursor: "s1/c1/y/seg/b", Objects: 5, Bytes: 500})
	// A stale cursor never rewinds.
	h.Must(cluster.CmdPurgeProgress, "purge/purge-1/k0", "", purge.ProgressCmd{ID: "purge-1", Cursor: "s1/c1/a", Objects: 0, Bytes: 0})
	require.Equal(t, int64(15), j.ObjectsDeleted)
	require.Equal(t, int64(1500), j.BytesFreed)
	require.Equal(t, "s1/c1/y/seg/b", j.Cursor)
	require.Equal(t, purge.PurgeRunning, j.State)
	h.Must(cluster.CmdPurgeProgress, "", "", purge.ProgressCmd{ID: "purge-1", Error: "storage down"})
	require.Equal(t, purge.PurgeFailed, j.State)
	_, err := h.Apply(cluster.CmdPurgeProgress, "", "", purge.ProgressCmd{ID: "nope"})
	require.ErrorIs(t, err, accounts.ErrNotFound)

	// Before the purge is done the id cannot be reused.
	_, err = h.Apply(cluster.CmdCreateCamera, "c1b", "", cam)
	require.ErrorIs(t, err, accounts.ErrConflict)
	h.Must(cluster.CmdPurgeDone, "pd", "", purge.DoneCmd{ID: "purge-1"})
	require.Equal(t, purge.PurgeDone, j.State)
	require.NotNil(t, j.DoneAt)
	// Progress after done changes nothing.
	h.Must(cluster.CmdPurgeProgress, "late", "", purge.ProgressCmd{ID: "purge-1", Cursor: "z", Objects: 1, Bytes: 1})
	require.Equal(t, int64(15), j.ObjectsDeleted)

	// Once done, the same camera and stream ids start over, empty and live.
	var r accounts.CameraResult
	require.NoError(t, json.Unmarshal(h.Must(cluster.CmdCreateCamera, "c1c", "", cam), &r))
	require.True(t, r.Created)
	require.Nil(t, streamOf(h, "x").Stream.DeletedAt)
	require.Len(t, streamOf(h, "x").History, 1)
	require.Len(t, h.M.Accounts.Retired, 1, "the deleted camera is kept for billing")
	require.Equal(t, "c1", h.M.Accounts.Retired[0].Camera.ID)
	require.Len(t, h.M.Accounts.Retired[0].Streams, 2)

	// Snapshot round trip keeps purges and retired cameras.
	st, err := machinetest.Restored(t, machinetest.Persist(t, h.M))
	require.NoError(t, err)
	require.Equal(t, purge.PurgeDone, st.Purges.Purges["purge-1"].State)
	require.Len(t, st.Accounts.Retired, 1)
}

func TestFSMDeleteSubAccount(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	h.Must(cluster.CmdCreateCamera, "c1", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c1", Name: "C1", Streams: []accounts.NewStream{{ID: "x"}}}})
	h.Must(cluster.CmdCreateCamera, "c2", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c2", Name: "C2", Streams: []accounts.NewStream{{ID: "y"}}}})
	h.Must(cluster.CmdCreateCamera, "c3", "", accounts.CreateCameraCmd{Bridge: "b2", Camera: accounts.NewCamera{ID: "c3", Name: "C3", Streams: []accounts.NewStream{{ID: "z"}}}})
	h.Must(cluster.CmdDeleteCamera, "d1", "purge-1", accounts.DeleteCameraCmd{ID: "c1"})

	_, err := h.Apply(cluster.CmdDeleteAccount, "da0", "n0", accounts.DeleteAccountCmd{ID: "r1"})
	require.ErrorIs(t, err, accounts.ErrInvalid, "resellers are not deleted this way")

	var r accounts.AccountDeleteResult
	require.NoError(t, json.Unmarshal(h.Must(cluster.CmdDeleteAccount, "da1", "n1", accounts.DeleteAccountCmd{ID: "s1"}), &r))
	require.Equal(t, "purge-1", r.Purges["c1"], "an earlier deletion keeps its purge")
	require.NotEmpty(t, r.Purges["c2"])
	require.Len(t, r.Purges, 2)
	require.NotNil(t, streamOf(h, "y").Stream.DeletedAt)
	require.Nil(t, streamOf(h, "z").Stream.DeletedAt, "other sub-accounts untouched")
	require.Equal(t, purge.PurgePending, h.M.Purges.Purges[r.Purges["c2"]].State)
	// A retry (same request) gets the same purges; another request finds
	// nothing.
	var r2 accounts.AccountDeleteResult
	require.NoError(t, json.Unmarshal(h.Must(cluster.CmdDeleteAccount, "da1", "n2", accounts.DeleteAccountCmd{ID: "s1"}), &r2))
	require.Equal(t, r.Purges, r2.Purges)
	_, err = h.Apply(cluster.CmdDeleteAccount, "da2", "n2", accounts.DeleteAccountCmd{ID: "s1"})
	require.ErrorIs(t, err, accounts.ErrNotFound)
	// No new cameras in a deleted account.
	_, err = h.Apply(cluster.CmdCreateCamera, "c4", "", accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c4", Name: "C4", Streams: []accounts.NewStream{{ID: "w"}}}})
	require.ErrorIs(t, err, accounts.ErrNotFound)
}

func TestHTTPPurgesAndSubAccountDelete(t *testing.T) {
	m := machinetest.OpenReplica(t, t.TempDir(), "127.0.0.1:0", func() time.Time { return machinetest.T0 })
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

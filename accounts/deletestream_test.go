package accounts_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/machinetest"
	"github.com/vigilcloud/vigil/purge"
)

// DELETE /v1/streams/{id}: one stream deleted with its own purge job over
// that stream's prefix; the camera and its other streams stay live; the
// camera's later deletion keeps the stream's deletion time, and its id is
// reusable only once every purge of its streams is done.
func TestFSMDeleteStream(t *testing.T) {
	h := machinetest.New(t)
	machinetest.Seed(h)
	cam := accounts.CreateCameraCmd{Bridge: "b1", Camera: accounts.NewCamera{ID: "c1", Name: "C1", Streams: []accounts.NewStream{{ID: "x"}, {ID: "y"}}}}
	h.Must(cluster.CmdCreateCamera, "c1", "", cam)

	_, err := h.Apply(cluster.CmdDeleteStream, "ds0", "purge-0", accounts.DeleteStreamCmd{ID: "nope"})
	require.ErrorIs(t, err, accounts.ErrNotFound)

	var r accounts.StreamDeleteResult
	require.NoError(t, json.Unmarshal(h.Must(cluster.CmdDeleteStream, "ds1", "purge-x", accounts.DeleteStreamCmd{ID: "x"}), &r))
	require.Equal(t, accounts.StreamDeleteResult{Stream: "x", Camera: "c1", PurgeID: "purge-x", DeletedAt: r.DeletedAt}, r)
	deletedAt := r.DeletedAt
	require.NotNil(t, streamOf(h, "x").Stream.DeletedAt)
	require.Nil(t, streamOf(h, "y").Stream.DeletedAt)
	require.Nil(t, h.M.Accounts.Cameras["c1"].DeletedAt)
	j := h.M.Purges.Purges["purge-x"]
	require.NotNil(t, j)
	require.Equal(t, "s1/c1/x/", j.Prefix())
	require.Equal(t, []string{"x"}, j.Streams)
	require.Len(t, j.Refs(), 1)

	// Deleting it again (another request) names the same purge.
	require.NoError(t, json.Unmarshal(h.Must(cluster.CmdDeleteStream, "ds2", "purge-other", accounts.DeleteStreamCmd{ID: "x"}), &r))
	require.Equal(t, "purge-x", r.PurgeID)
	require.Nil(t, h.M.Purges.Purges["purge-other"])

	// The camera's deletion keeps x's earlier deletion time.
	h.Must(cluster.CmdDeleteCamera, "dc", "purge-c", accounts.DeleteCameraCmd{ID: "c1"})
	require.Equal(t, deletedAt, *streamOf(h, "x").Stream.DeletedAt)
	require.NotEqual(t, deletedAt, *streamOf(h, "y").Stream.DeletedAt)
	require.NoError(t, json.Unmarshal(h.Must(cluster.CmdDeleteStream, "ds3", "purge-y", accounts.DeleteStreamCmd{ID: "y"}), &r))
	require.Equal(t, "purge-c", r.PurgeID, "a stream of a deleted camera is freed by the camera's purge")

	// The camera's purge done but x's own not yet: x's job could still
	// delete under the prefix the new camera writes to.
	h.Must(cluster.CmdPurgeDone, "pdc", "", purge.DoneCmd{ID: "purge-c"})
	_, err = h.Apply(cluster.CmdCreateCamera, "c1b", "", cam)
	require.ErrorIs(t, err, accounts.ErrConflict)
	h.Must(cluster.CmdPurgeDone, "pdx", "", purge.DoneCmd{ID: "purge-x"})
	var cr accounts.CameraResult
	require.NoError(t, json.Unmarshal(h.Must(cluster.CmdCreateCamera, "c1c", "", cam), &cr))
	require.True(t, cr.Created)
	require.Nil(t, streamOf(h, "x").Stream.DeletedAt)
	require.Empty(t, streamOf(h, "x").PurgeID)

	// Snapshot round trip keeps the stream job's scope.
	st, err := machinetest.Restored(t, machinetest.Persist(t, h.M))
	require.NoError(t, err)
	require.Equal(t, "x", st.Purges.Purges["purge-x"].Stream)
	require.Equal(t, "s1/c1/x/", st.Purges.Purges["purge-x"].Prefix())
}

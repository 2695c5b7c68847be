package meter

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// DELETE /v1/streams/{id}: one stream deleted with its own purge job over
// that stream's prefix; the camera and its other streams stay live; the
// camera's later deletion keeps the stream's deletion time, and its id is
// reusable only once every purge of its streams is done.
func TestFSMDeleteStream(t *testing.T) {
	h := newHarness(t)
	seed(h)
	cam := createCamera{Bridge: "b1", Camera: NewCamera{ID: "c1", Name: "C1", Streams: []NewStream{{ID: "x"}, {ID: "y"}}}}
	h.must(cmdCreateCamera, "c1", "", cam)

	_, err := h.apply(cmdDeleteStream, "ds0", "purge-0", deleteStream{ID: "nope"})
	require.ErrorIs(t, err, ErrNotFound)

	var r StreamDeleteResult
	require.NoError(t, json.Unmarshal(h.must(cmdDeleteStream, "ds1", "purge-x", deleteStream{ID: "x"}), &r))
	require.Equal(t, StreamDeleteResult{Stream: "x", Camera: "c1", PurgeID: "purge-x", DeletedAt: r.DeletedAt}, r)
	deletedAt := r.DeletedAt
	require.NotNil(t, h.stream("x").Stream.DeletedAt)
	require.Nil(t, h.stream("y").Stream.DeletedAt)
	require.Nil(t, h.f.st.Cameras["c1"].DeletedAt)
	j := h.f.st.Purges["purge-x"]
	require.NotNil(t, j)
	require.Equal(t, "s1/c1/x/", j.Prefix())
	require.Equal(t, []string{"x"}, j.Streams)
	require.Len(t, j.Refs(), 1)

	// Deleting it again (another request) names the same purge.
	require.NoError(t, json.Unmarshal(h.must(cmdDeleteStream, "ds2", "purge-other", deleteStream{ID: "x"}), &r))
	require.Equal(t, "purge-x", r.PurgeID)
	require.Nil(t, h.f.st.Purges["purge-other"])

	// The camera's deletion keeps x's earlier deletion time.
	h.must(cmdDeleteCamera, "dc", "purge-c", deleteCamera{ID: "c1"})
	require.Equal(t, deletedAt, *h.stream("x").Stream.DeletedAt)
	require.NotEqual(t, deletedAt, *h.stream("y").Stream.DeletedAt)
	require.NoError(t, json.Unmarshal(h.must(cmdDeleteStream, "ds3", "purge-y", deleteStream{ID: "y"}), &r))
	require.Equal(t, "purge-c", r.PurgeID, "a stream of a deleted camera is freed by the camera's purge")

	// The camera's purge done but x's own not yet: x's job could still
	// delete under the prefix the new camera writes to.
	h.must(cmdPurgeDone, "pdc", "", purgeDone{ID: "purge-c"})
	_, err = h.apply(cmdCreateCamera, "c1b", "", cam)
	require.ErrorIs(t, err, ErrConflict)
	h.must(cmdPurgeDone, "pdx", "", purgeDone{ID: "purge-x"})
	var cr CameraResult
	require.NoError(t, json.Unmarshal(h.must(cmdCreateCamera, "c1c", "", cam), &cr))
	require.True(t, cr.Created)
	require.Nil(t, h.stream("x").Stream.DeletedAt)
	require.Empty(t, h.stream("x").PurgeID)

	// Snapshot round trip keeps the stream job's scope.
	st, err := decodeState(bytes.NewReader(persist(t, h.f)))
	require.NoError(t, err)
	require.Equal(t, "x", st.Purges["purge-x"].Stream)
	require.Equal(t, "s1/c1/x/", st.Purges["purge-x"].Prefix())
}

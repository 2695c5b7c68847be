package index

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHeadText(t *testing.T) {
	for _, h := range []Head{
		{},
		{Init: [HeadInitBytes]byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{Init: [HeadInitBytes]byte{0xff}, Track: 1, Scale: 90_000, TFDT: 1 << 40},
	} {
		got, err := ParseHead(h.String())
		require.NoError(t, err)
		require.Equal(t, h, got)
	}
	require.Equal(t, "0102030405060708/2/1000/99", Head{Init: [HeadInitBytes]byte{1, 2, 3, 4, 5, 6, 7, 8}, Track: 2, Scale: 1000, TFDT: 99}.String())
	for _, bad := range []string{"00", "0000000000000000", "zz02030405060708", "0102030405060708/1/2", "0102030405060708/1/0/5", "0102030405060708/x/1/1"} {
		_, err := ParseHead(bad)
		require.Error(t, err, bad)
	}
}

// Entries written before heads existed decode with an unknown head, and a
// segment without one encodes as before.
func TestSegmentJSONWithoutHead(t *testing.T) {
	old := `{"start":5,"duration_ms":10,"size":3,"sha256":"ab","content_type":"video/mp4","width":2,"height":1}`
	var s Segment
	require.NoError(t, json.Unmarshal([]byte(old), &s))
	require.Equal(t, Segment{Start: 5, DurationMS: 10, Size: 3, SHA256: "ab", ContentType: "video/mp4", Width: 2, Height: 1}, s)
	b, err := json.Marshal(s)
	require.NoError(t, err)
	require.JSONEq(t, old, string(b))
	require.Equal(t, old, string(b))

	s.Head = Head{Init: [HeadInitBytes]byte{1}, Track: 1, Scale: 90_000, TFDT: 7}
	b, err = json.Marshal(s)
	require.NoError(t, err)
	require.Contains(t, string(b), `"head":"0100000000000000/1/90000/7"`)
	var back Segment
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, s, back)
}

package index_test

import (
	"errors"
	"testing"

	"github.com/vigilcloud/vigil/index"
)

func FuzzDecodeManifest(f *testing.F) {
	good, _ := index.EncodeManifest(hour, sampleSegs())
	empty, _ := index.EncodeManifest(0, nil)
	f.Add(good)
	f.Add(empty)
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	f.Add(zstdOf(f, []byte(`{"v":1,"hour":0,"segments":[{"start":5,"duration_ms":-1}]}`)))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, segs, err := index.DecodeManifest(b)
		if err != nil {
			if !errors.Is(err, index.ErrCorruptManifest) {
				t.Fatalf("error %v does not match ErrCorruptManifest", err)
			}
			return
		}
		// Whatever decodes must re-encode to the same content.
		again, err := index.EncodeManifest(h, segs)
		if err != nil {
			t.Fatalf("decoded manifest does not re-encode: %v", err)
		}
		h2, segs2, err := index.DecodeManifest(again)
		if err != nil || h2 != h || len(segs2) != len(segs) {
			t.Fatalf("round trip changed the manifest: %v", err)
		}
	})
}

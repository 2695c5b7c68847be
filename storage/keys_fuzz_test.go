package storage

import (
	"testing"
	"time"
)

// FuzzParseSegmentKey checks that whatever parses is canonical: the key
// is rebuilt exactly from what was parsed.
func FuzzParseSegmentKey(f *testing.F) {
	ref := StreamRef{Account: "acme", Camera: "cam-1", Stream: "main"}
	f.Add(ref.SegmentKey(1714979000000))
	f.Add(ref.SegmentKey(0))
	f.Add("a/c/s/seg/2024/05/06/08/1714979000000")
	f.Add("a/c/s/seg/2024/05/06/07/01714979000000")
	f.Add("a/c/s/idx/2024/05/06/07.zst")
	f.Add("")
	f.Fuzz(func(t *testing.T, key string) {
		ref, start, err := ParseSegmentKey(key)
		if err != nil {
			return
		}
		if ref.Validate() != nil || start < 0 {
			t.Fatalf("parsed invalid %+v %d from %q", ref, start, key)
		}
		if got := ref.SegmentKey(start); got != key {
			t.Fatalf("%q parsed to %+v %d, which builds %q", key, ref, start, got)
		}
	})
}

// FuzzParseManifestKey checks the same for manifest keys.
func FuzzParseManifestKey(f *testing.F) {
	ref := StreamRef{Account: "acme", Camera: "cam-1", Stream: "main"}
	f.Add(ref.ManifestKey(time.Date(2024, 5, 6, 7, 0, 0, 0, time.UTC)))
	f.Add("a/c/s/idx/2024/05/06/7.zst")
	f.Add("a/c/s/seg/2024/05/06/07.zst")
	f.Fuzz(func(t *testing.T, key string) {
		ref, hour, err := ParseManifestKey(key)
		if err != nil {
			return
		}
		if ref.Validate() != nil || hour != HourStart(hour) {
			t.Fatalf("parsed invalid %+v %d from %q", ref, hour, key)
		}
		if got := ref.ManifestKey(time.UnixMilli(hour)); got != key {
			t.Fatalf("%q parsed to %+v %d, which builds %q", key, ref, hour, got)
		}
	})
}

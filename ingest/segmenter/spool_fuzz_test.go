package segmenter

import (
	"bytes"
	"testing"

	"github.com/vigilcloud/vigil/storage"
)

// FuzzScanSpool: whatever a crash (or a disk) left in a spool file, the
// scan never panics, never claims more bytes than the file has, and a file
// cut to what it claims scans the same. Run it with
// -fuzzminimizetime=100x, as FuzzReader in media/fmp4: minimising the
// KiB-sized seeds otherwise stalls the fuzzer.
func FuzzScanSpool(f *testing.F) {
	b, _ := spoolBytes(f, 2, 0)
	f.Add(b[storage.SpoolHeadroom:])
	f.Add(b[storage.SpoolHeadroom : len(b)-5])
	f.Add([]byte("\x00\x00\x00\x08moof"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sp, err := scanFMP4(bytes.NewReader(data))
		if err != nil || sp.size == 0 {
			return
		}
		if sp.size > int64(len(data)) {
			t.Fatalf("claims %d of %d bytes", sp.size, len(data))
		}
		again, err := scanFMP4(bytes.NewReader(data[:sp.size]))
		if err != nil || again != sp {
			t.Fatalf("cut to its size it scans %+v, %v; was %+v", again, err, sp)
		}
	})
}

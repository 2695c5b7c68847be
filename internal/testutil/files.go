package testutil

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
)

// zstdMagic starts every zstd frame.
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// ReadFileDecompressed returns a file's bytes for a test that greps a data
// directory for secrets: a zstd-compressed file (a meter snapshot) is
// returned decompressed after its raw bytes, so the grep sees inside it.
// compressed reports whether it was.
func ReadFileDecompressed(path string) (b []byte, compressed bool, err error) {
	b, err = os.ReadFile(path)
	if err != nil || !bytes.HasPrefix(b, zstdMagic) {
		return b, false, err
	}
	d, err := zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, false, err
	}
	defer d.Close()
	plain, err := io.ReadAll(d)
	if err != nil {
		return nil, false, fmt.Errorf("%s: zstd: %w", path, err)
	}
	return append(b, plain...), true, nil
}

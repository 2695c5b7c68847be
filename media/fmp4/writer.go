package fmp4

import "io"

// WriteInit writes ftyp + moov (with mvex/trex) for tracks: avc1+avcC,
// hvc1+hvcC, mp4a+esds, Opus+dOps. It returns the number of bytes written.
func WriteInit(w io.Writer, tracks []Track, opts InitOptions) (int64, error) {
	return 0, errNotImplemented
}

// WriteFragment writes one moof + mdat (default-base-is-moof, data offsets
// filled in). It returns the number of bytes written.
func WriteFragment(w io.Writer, f Fragment) (int64, error) {
	return 0, errNotImplemented
}

package fmp4

import "io"

// Reader reads one fMP4 stream: an init section, then fragments. It
// validates box sizes and nesting and returns errors wrapping ErrMalformed
// for bad input; it never allocates more than the box it reads.
type Reader struct {
	r io.Reader
}

// NewReader returns a Reader over r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// ReadInit reads ftyp/moov (skipping free/styp/sidx and other boxes) and
// returns the tracks and the number of bytes consumed.
func (r *Reader) ReadInit() (tracks []Track, initSize int64, err error) {
	return nil, 0, errNotImplemented
}

// NextFragment returns the next moof + mdat, or io.EOF after the last one.
// Sample.Data slices are valid until the next call.
func (r *Reader) NextFragment() (Fragment, error) {
	return Fragment{}, errNotImplemented
}

package playback

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/media/fmp4"
	"github.com/vigilcloud/vigil/media/mpegts"
)

// remuxTS reads the MPEG-TS segment s from src as fMP4 (media/mpegts: an
// init section, then a fragment per group of pictures, so memory stays
// that of one group), for the clip to read like any other segment. A
// stream that does not demux is malformed, as an fMP4 one that does not
// parse.
func remuxTS(src io.Reader, s index.Segment) io.Reader {
	return malformedTS{mpegts.NewReader(bufio.NewReaderSize(src, 64<<10), s.Size)}
}

// malformedTS marks mpegts' errors as fmp4.ErrMalformed, which the clip
// answers (422, or the rest of the segment skipped).
type malformedTS struct{ r io.Reader }

func (m malformedTS) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	if errors.Is(err, mpegts.ErrMalformed) {
		err = fmt.Errorf("%w: MPEG-TS: %w", fmp4.ErrMalformed, err)
	}
	return n, err
}

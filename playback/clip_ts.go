package playback

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"github.com/vigilcloud/vigil/index"
	"github.com/vigilcloud/vigil/media/fmp4"
	"github.com/vigilcloud/vigil/media/mpegts"
)

// remuxTS reads the MPEG-TS segment s from src and returns it as fMP4
// (its init section and one fragment), for the clip to read like any
// other segment. The whole segment is held: a transport stream says
// which streams and parameter sets it has only as it goes, and the init
// section comes first. Its size is bounded by the upload limit
// (--max-segment-bytes). A stream that does not demux is malformed, as an
// fMP4 one that does not parse.
func remuxTS(src io.Reader, s index.Segment) (io.Reader, error) {
	seg, err := mpegts.Demux(bufio.NewReaderSize(src, 64<<10), s.Size)
	if err != nil {
		return nil, fmt.Errorf("%w: MPEG-TS: %w", fmp4.ErrMalformed, err)
	}
	var b bytes.Buffer
	b.Grow(int(s.Size) + 4096)
	if err := mpegts.Remux(&b, seg); err != nil {
		return nil, fmt.Errorf("%w: MPEG-TS remux: %w", fmp4.ErrMalformed, err)
	}
	return &b, nil
}

package storage

import (
	"io"
	"os"
)

// SpoolHeadroom is how many bytes a Spooled file keeps free before its body:
// room for the header of a backend that keeps objects as files.
const SpoolHeadroom = 4096

// Spooled is a Put body that is the whole of a file the caller wrote for
// this object and gives up to the Put: the body runs from SpoolHeadroom to
// the end of File. A backend that keeps objects as files may make File the
// object itself (writing its header into the headroom and linking it into
// place) instead of copying the body; any other backend just reads it.
// File must be open for reading and writing, and its name must stay valid
// until Put returns. After a Put, successful or not, the headroom's bytes
// are undefined and the body is unchanged.
type Spooled struct {
	*io.SectionReader
	File *os.File
}

// AdoptableBody is the optional capability of a Put body that a backend
// keeping objects as files may adopt instead of copying (Spooled has it).
type AdoptableBody interface {
	io.Reader
	// Size is the body's length in bytes.
	Size() int64
	// SpoolFile holds the body from SpoolHeadroom to its end; the Put may
	// write into the headroom and link the file into place.
	SpoolFile() *os.File
}

var _ AdoptableBody = (*Spooled)(nil)

// SpoolFile implements AdoptableBody.
func (s *Spooled) SpoolFile() *os.File { return s.File }

// NewSpooled returns the body of f: size bytes from SpoolHeadroom.
func NewSpooled(f *os.File, size int64) *Spooled {
	return &Spooled{SectionReader: io.NewSectionReader(f, SpoolHeadroom, size), File: f}
}

// Package nalu holds the NAL unit framing shared by H.264 and H.265.
package nalu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformed is wrapped by SplitLengthPrefixed errors.
var ErrMalformed = errors.New("malformed length-prefixed NAL units")

// JoinLengthPrefixed joins NAL units, each prefixed by its 4-byte
// big-endian length.
func JoinLengthPrefixed(nalus [][]byte) []byte {
	n := 0
	for _, u := range nalus {
		n += 4 + len(u)
	}
	out := make([]byte, 0, n)
	for _, u := range nalus {
		out = binary.BigEndian.AppendUint32(out, uint32(len(u)))
		out = append(out, u...)
	}
	return out
}

// SplitLengthPrefixed splits 4-byte length-prefixed NAL units. The results
// alias b. Empty NAL units are refused.
func SplitLengthPrefixed(b []byte) ([][]byte, error) {
	var out [][]byte
	for off := 0; off < len(b); {
		if len(b)-off < 4 {
			return nil, fmt.Errorf("%w: %d trailing bytes at %d", ErrMalformed, len(b)-off, off)
		}
		n := binary.BigEndian.Uint32(b[off:])
		off += 4
		if n == 0 || uint64(n) > uint64(len(b)-off) {
			return nil, fmt.Errorf("%w: NAL unit of %d bytes at %d, %d left", ErrMalformed, n, off-4, len(b)-off)
		}
		out = append(out, b[off:off+int(n)])
		off += int(n)
	}
	return out, nil
}

// SplitAnnexB returns the NAL units of an Annex B byte stream (start codes
// and trailing zero bytes removed). The results alias b.
func SplitAnnexB(b []byte) [][]byte {
	var out [][]byte
	start := -1
	for i := 0; i+2 < len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				if u := bytes.TrimRight(b[start:i], "\x00"); len(u) > 0 {
					out = append(out, u)
				}
			}
			start = i + 3
			i += 2
		}
	}
	if start >= 0 && start < len(b) {
		out = append(out, b[start:])
	}
	return out
}

// Package bitio reads the bit fields of H.264/H.265 parameter sets and
// strips emulation prevention bytes.
package bitio

import "errors"

// ErrShort is returned when a read runs past the end of the data.
var ErrShort = errors.New("bitio: out of data")

// ErrRange is returned for an Exp-Golomb code longer than 32 bits.
var ErrRange = errors.New("bitio: exp-golomb code too long")

// Reader reads MSB-first bit fields. Errors are sticky: after the first one
// every read returns 0 and Err reports it, which keeps parsers linear.
type Reader struct {
	b   []byte
	pos int // in bits
	err error
}

// NewReader returns a Reader over b (already unescaped).
func NewReader(b []byte) *Reader { return &Reader{b: b} }

// Err returns the first error met.
func (r *Reader) Err() error { return r.err }

// BitsLeft returns the number of unread bits.
func (r *Reader) BitsLeft() int { return len(r.b)*8 - r.pos }

// U reads an n-bit unsigned field, n <= 32.
func (r *Reader) U(n int) uint32 {
	if r.err != nil {
		return 0
	}
	if n < 0 || n > 32 || r.BitsLeft() < n {
		r.err = ErrShort
		return 0
	}
	var v uint32
	for i := 0; i < n; i++ {
		bit := (r.b[r.pos>>3] >> (7 - uint(r.pos&7))) & 1
		v = v<<1 | uint32(bit)
		r.pos++
	}
	return v
}

// Flag reads one bit.
func (r *Reader) Flag() bool { return r.U(1) == 1 }

// Skip skips n bits.
func (r *Reader) Skip(n int) {
	if r.err != nil {
		return
	}
	if n < 0 || r.BitsLeft() < n {
		r.err = ErrShort
		return
	}
	r.pos += n
}

// UE reads an unsigned Exp-Golomb code (ue(v)).
func (r *Reader) UE() uint32 {
	zeros := 0
	for r.err == nil && !r.Flag() {
		zeros++
		if zeros > 31 {
			r.err = ErrRange
		}
	}
	if r.err != nil {
		return 0
	}
	return (1<<uint(zeros) - 1) + r.U(zeros)
}

// SE reads a signed Exp-Golomb code (se(v)).
func (r *Reader) SE() int32 {
	v := int64(r.UE())
	if v&1 == 1 {
		return int32((v + 1) / 2)
	}
	return int32(-(v / 2))
}

// Unescape returns b without emulation prevention bytes (the 0x03 of each
// 0x00 0x00 0x03 sequence). It returns b itself when there are none.
func Unescape(b []byte) []byte {
	zeros := 0
	for i, c := range b {
		if zeros >= 2 && c == 3 {
			return unescapeFrom(b, i)
		}
		if c == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	return b
}

func unescapeFrom(b []byte, first int) []byte {
	out := make([]byte, 0, len(b))
	out = append(out, b[:first]...)
	zeros := 0
	for _, c := range b[first+1:] {
		if zeros >= 2 && c == 3 {
			zeros = 0
			continue
		}
		out = append(out, c)
		if c == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	return out
}

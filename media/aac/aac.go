// Package aac parses MPEG-4 AAC signalling: the AudioSpecificConfig
// (ISO/IEC 14496-3 1.6.2.1) and RFC 3640 (mpeg4-generic) AU headers.
package aac

import (
	"errors"
	"fmt"

	"github.com/vigilcloud/vigil/media/internal/bitio"
)

// ErrMalformed is wrapped by every parse error of this package.
var ErrMalformed = errors.New("aac: malformed")

// ErrFragmented is returned (wrapped) by SplitAUs for a payload that carries
// only the first part of one AU (RFC 3640 3.2.3.1): the caller reassembles.
var ErrFragmented = errors.New("aac: fragmented access unit")

// Config is the part of an AudioSpecificConfig vigil uses.
type Config struct {
	ObjectType int // audioObjectType (2 = AAC-LC); for SBR/PS the core type
	SampleRate int // of the core decoder
	Channels   int
	// ExtensionSampleRate is the SBR output rate when the config signals
	// SBR or PS explicitly (object type 5 or 29), else 0.
	ExtensionSampleRate int
}

var sampleRates = [13]int{96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350}

// ParseConfig parses an AudioSpecificConfig.
func ParseConfig(asc []byte) (Config, error) {
	var c Config
	r := bitio.NewReader(asc)
	c.ObjectType = objectType(r)
	c.SampleRate = sampleRate(r)
	ch := int(r.U(4))
	if c.ObjectType == 5 || c.ObjectType == 29 {
		c.ExtensionSampleRate = sampleRate(r)
		c.ObjectType = objectType(r)
	}
	if err := r.Err(); err != nil {
		return c, fmt.Errorf("aac: %w: AudioSpecificConfig %x: %w", ErrMalformed, asc, err)
	}
	switch {
	case ch >= 1 && ch <= 6:
		c.Channels = ch
	case ch == 7:
		c.Channels = 8
	default:
		// 0 needs a program_config_element, which RTSP cameras do not send.
		return c, fmt.Errorf("aac: %w: channel configuration %d unsupported", ErrMalformed, ch)
	}
	if c.ObjectType == 0 || c.SampleRate <= 0 || c.ExtensionSampleRate < 0 {
		return c, fmt.Errorf("aac: %w: object type %d, sample rate %d", ErrMalformed, c.ObjectType, c.SampleRate)
	}
	return c, nil
}

func objectType(r *bitio.Reader) int {
	t := int(r.U(5))
	if t == 31 {
		t = 32 + int(r.U(6))
	}
	return t
}

// sampleRate reads samplingFrequencyIndex (and the explicit 24-bit rate);
// -1 for a reserved index.
func sampleRate(r *bitio.Reader) int {
	i := int(r.U(4))
	switch {
	case i == 15:
		return int(r.U(24))
	case i < len(sampleRates):
		return sampleRates[i]
	}
	return -1
}

// SplitAUs splits an RFC 3640 payload (16-bit AU-headers-length in bits, AU
// headers, padding to a byte, AUs) into its access units, which alias
// payload. sizeLength, indexLength and indexDeltaLength come from the fmtp
// line (13, 3, 3 for AAC-hbr). A payload holding a part of one fragmented
// AU (RFC 3640 3.2.3) returns that part and an error wrapping
// ErrFragmented; Depacketizer reassembles those.
func SplitAUs(payload []byte, sizeLength, indexLength, indexDeltaLength int) ([][]byte, error) {
	sizes, data, err := parseHeaders(payload, sizeLength, indexLength, indexDeltaLength)
	if err != nil {
		return nil, err
	}
	if isFragment(sizes, data) {
		return [][]byte{data}, fmt.Errorf("aac: AU of %d bytes, %d here: %w", sizes[0], len(data), ErrFragmented)
	}
	aus := make([][]byte, 0, len(sizes))
	for i, n := range sizes {
		if n > len(data) {
			return nil, fmt.Errorf("aac: %w: AU %d of %d bytes, %d left", ErrMalformed, i, n, len(data))
		}
		aus = append(aus, data[:n])
		data = data[n:]
	}
	if len(data) != 0 {
		return nil, fmt.Errorf("aac: %w: %d bytes after the last AU", ErrMalformed, len(data))
	}
	return aus, nil
}

// isFragment reports whether a payload's AU headers and data are a part of
// one larger AU: a single header whose AU-size exceeds the data.
func isFragment(sizes []int, data []byte) bool {
	return len(sizes) == 1 && sizes[0] > len(data)
}

// parseHeaders reads the AU headers of payload: the AU sizes they declare
// and the data after them.
func parseHeaders(payload []byte, sizeLength, indexLength, indexDeltaLength int) ([]int, []byte, error) {
	if sizeLength <= 0 || sizeLength > 32 || indexLength < 0 || indexLength > 32 || indexDeltaLength < 0 || indexDeltaLength > 32 {
		return nil, nil, fmt.Errorf("aac: %w: AU header lengths %d/%d/%d", ErrMalformed, sizeLength, indexLength, indexDeltaLength)
	}
	if len(payload) < 2 {
		return nil, nil, fmt.Errorf("aac: %w: payload of %d bytes", ErrMalformed, len(payload))
	}
	headerBits := int(payload[0])<<8 | int(payload[1])
	headerBytes := (headerBits + 7) / 8
	if headerBits == 0 || 2+headerBytes > len(payload) {
		return nil, nil, fmt.Errorf("aac: %w: AU-headers-length %d bits in a payload of %d bytes", ErrMalformed, headerBits, len(payload))
	}
	r := bitio.NewReader(payload[2 : 2+headerBytes])
	var sizes []int
	for used := 0; used < headerBits; {
		idx := indexDeltaLength
		if len(sizes) == 0 {
			idx = indexLength
		}
		if headerBits-used < sizeLength+idx {
			return nil, nil, fmt.Errorf("aac: %w: %d bits left over in the AU headers", ErrMalformed, headerBits-used)
		}
		sizes = append(sizes, int(r.U(sizeLength)))
		// The index (delta) must be 0: vigil refuses interleaving, which
		// would reorder AUs across packets.
		if r.U(idx) != 0 {
			return nil, nil, fmt.Errorf("aac: %w: interleaved AUs (non-zero AU-index)", ErrMalformed)
		}
		used += sizeLength + idx
	}
	return sizes, payload[2+headerBytes:], nil
}

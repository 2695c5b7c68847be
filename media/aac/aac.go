// Package aac parses MPEG-4 AAC signalling: the AudioSpecificConfig
// (ISO/IEC 14496-3 1.6.2.1) and RFC 3640 (mpeg4-generic) AU headers.
package aac

import "errors"

// Config is the part of an AudioSpecificConfig vigil uses.
type Config struct {
	ObjectType int // audioObjectType (2 = AAC-LC)
	SampleRate int
	Channels   int
}

var errNotImplemented = errors.New("aac: not implemented")

// ParseConfig parses an AudioSpecificConfig.
func ParseConfig(asc []byte) (Config, error) { return Config{}, errNotImplemented }

// SplitAUs splits an RFC 3640 payload (AU-headers-length, AU headers, AUs).
func SplitAUs(payload []byte, sizeLength, indexLength, indexDeltaLength int) ([][]byte, error) {
	return nil, errNotImplemented
}

package aac

import (
	"errors"
	"fmt"
)

// MaxAUSize bounds the declared size of a fragmented AU (RFC 3640 3.2.3),
// which the Depacketizer buffers until its last fragment. The largest AAC
// frame is 6144 bits per channel (ISO/IEC 14496-3 4.5.3.1): 768 bytes,
// 6 KiB for 8 channels. 64 KiB leaves ten times that (room for
// extension payloads) while a sizeLength up to 32 bits could otherwise
// make one session buffer gigabytes.
const MaxAUSize = 64 << 10

// ErrFragment is wrapped by the Depacketizer's errors about a fragmented
// AU that no packet loss explains (beside ErrMalformed).
var ErrFragment = errors.New("aac: bad AU fragment")

// Depacketizer turns the RTP payloads of one mpeg4-generic stream into
// access units, reassembling AUs fragmented over several packets: each
// fragment has the AU's RTP timestamp and one AU header giving the size of
// the whole AU, and the marker bit is set on the last one (RFC 3640
// 3.2.3). The zero value is not usable: set the lengths from the fmtp line.
type Depacketizer struct {
	SizeLength, IndexLength, IndexDeltaLength int

	buf      []byte // the AU being reassembled (a copy: payloads are reused)
	size     int    // its declared size; 0 when none is in progress
	ts       int64  // its RTP timestamp
	damaged  bool   // packets went missing just before it started: its head may be lost
	dropTS   int64  // the timestamp of the AU last given up, whose tail is skipped
	dropped  bool   // dropTS is set
	lastTS   int64  // the timestamp of the last packet of whole AUs or AU completed
	lastSet  bool   // lastTS is set
	lastSeq  uint16 // RTP sequence number of the previous packet
	seqKnown bool
	out      [][]byte
}

// Push feeds one RTP packet: its payload, extended timestamp, sequence
// number and marker bit. It returns the AUs the packet completes, which
// start at ts, one frame apart, and stay valid until the next Push (they
// alias payload or the reassembly buffer), and how many AUs it gave up
// because packets were lost (a sequence gap, or a timestamp change before
// an AU's last fragment). An error wraps ErrMalformed, and ErrFragment for
// fragments that loss does not explain; the stream cannot go on.
func (d *Depacketizer) Push(payload []byte, ts int64, seq uint16, marker bool) (aus [][]byte, lost int, err error) {
	if d.seqKnown && seq == d.lastSeq {
		return nil, 0, nil // a duplicate (UDP)
	}
	gap := d.seqKnown && seq != d.lastSeq+1
	d.lastSeq, d.seqKnown = seq, true
	if d.size > 0 && (gap || ts != d.ts) {
		// The rest of the AU in progress will not come.
		lost++
		d.dropTS, d.dropped = d.ts, true
		d.size = 0
		gap = true
	}
	sizes, data, err := parseHeaders(payload, d.SizeLength, d.IndexLength, d.IndexDeltaLength)
	if err != nil {
		return nil, lost, err
	}
	if !isFragment(sizes, data) {
		if d.size > 0 {
			return nil, lost, fmt.Errorf("aac: %w: %w: whole AUs inside an AU of %d bytes, %d received", ErrMalformed, ErrFragment, d.size, len(d.buf))
		}
		aus, err := SplitAUs(payload, d.SizeLength, d.IndexLength, d.IndexDeltaLength)
		if err != nil {
			return nil, lost, err
		}
		d.lastTS, d.lastSet, d.dropped = ts, true, false
		return aus, lost, nil
	}
	declared := sizes[0]
	switch {
	case declared > MaxAUSize:
		return nil, lost, fmt.Errorf("aac: %w: %w: AU of %d bytes declared (at most %d)", ErrMalformed, ErrFragment, declared, MaxAUSize)
	case len(data) == 0:
		return nil, lost, fmt.Errorf("aac: %w: %w: empty fragment", ErrMalformed, ErrFragment)
	}
	if d.size == 0 {
		switch {
		case d.dropped && ts == d.dropTS || gap && d.lastSet && ts == d.lastTS:
			// The tail of the AU just given up, or a late fragment of one
			// complete.
			return nil, lost, nil
		case gap && marker:
			return nil, lost + 1, nil // the tail of an AU whose head was lost
		case marker:
			return nil, lost, fmt.Errorf("aac: %w: %w: last fragment of an AU (%d of %d bytes) with no AU in progress", ErrMalformed, ErrFragment, len(data), declared)
		case !gap && d.lastSet && ts == d.lastTS:
			return nil, lost, fmt.Errorf("aac: %w: %w: fragment of an AU at timestamp %d, which is complete", ErrMalformed, ErrFragment, ts)
		}
		d.buf, d.size, d.ts, d.damaged, d.dropped = d.buf[:0], declared, ts, gap, false
	} else if declared != d.size {
		return nil, lost, fmt.Errorf("aac: %w: %w: AU-size changes from %d to %d within one AU", ErrMalformed, ErrFragment, d.size, declared)
	}
	if len(d.buf)+len(data) > d.size {
		return nil, lost, fmt.Errorf("aac: %w: %w: fragments of %d bytes exceed the AU's %d", ErrMalformed, ErrFragment, len(d.buf)+len(data), d.size)
	}
	d.buf = append(d.buf, data...)
	switch {
	case len(d.buf) == d.size:
		d.size = 0
		d.lastTS, d.lastSet = ts, true
		d.out = append(d.out[:0], d.buf)
		return d.out, lost, nil
	case marker && d.damaged:
		d.size = 0
		return nil, lost + 1, nil
	case marker:
		return nil, lost, fmt.Errorf("aac: %w: %w: AU ends at %d of its %d bytes", ErrMalformed, ErrFragment, len(d.buf), d.size)
	}
	return nil, lost, nil
}

// Package aactest packetises AAC access units as an RTSP publisher (a
// Bridge, ffmpeg) does, for tests of the depacketising side.
package aactest

// Payload is one RTP payload of an AAC-hbr stream (RFC 3640, 13-bit
// AU-size, 3-bit AU-index).
type Payload struct {
	Data    []byte
	FirstAU int  // index of the AU the payload starts: its RTP timestamp
	Marker  bool // the RTP marker bit: set unless a fragment other than the last
}

// Packetize puts aus into payloads of at most maxPayload bytes: as many
// whole AUs as fit in one, and an AU that does not fit alone in fragments
// (RFC 3640 3.2.3), each with one AU header giving the whole AU's size.
// AUs must be shorter than 8192 bytes (13 bits); maxPayload at least 5.
func Packetize(aus [][]byte, maxPayload int) []Payload {
	var out []Payload
	for i := 0; i < len(aus); {
		if 4+len(aus[i]) > maxPayload {
			au := aus[i]
			for off := 0; off < len(au); {
				n := min(len(au)-off, maxPayload-4)
				out = append(out, Payload{Data: payload([]int{len(au)}, au[off:off+n]), FirstAU: i, Marker: off+n == len(au)})
				off += n
			}
			i++
			continue
		}
		// Whole AUs while they fit: 2 bytes of header each.
		size := 2
		var sizes []int
		var data []byte
		j := i
		for ; j < len(aus) && size+2+len(aus[j]) <= maxPayload; j++ {
			size += 2 + len(aus[j])
			sizes = append(sizes, len(aus[j]))
			data = append(data, aus[j]...)
		}
		out = append(out, Payload{Data: payload(sizes, data), FirstAU: i, Marker: true})
		i = j
	}
	return out
}

func payload(sizes []int, data []byte) []byte {
	bits := 16 * len(sizes)
	b := []byte{byte(bits >> 8), byte(bits)}
	for _, n := range sizes {
		b = append(b, byte(n>>5), byte(n<<3))
	}
	return append(b, data...)
}

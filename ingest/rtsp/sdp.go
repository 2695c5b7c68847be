package rtsp

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

const maxMedias = 16

// ErrBadSDP wraps every SDP parse failure.
var ErrBadSDP = errors.New("rtsp: malformed SDP")

// ParseSDP parses an ANNOUNCE body into its media sections. Each section
// yields one Media for its first payload format; sections without a
// payload format or port-0 "disabled" markers are errors.
func ParseSDP(body []byte) ([]Media, error) {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(string(body)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSDP, err)
	}
	if len(sd.MediaDescriptions) == 0 {
		return nil, fmt.Errorf("%w: no media sections", ErrBadSDP)
	}
	if len(sd.MediaDescriptions) > maxMedias {
		return nil, fmt.Errorf("%w: %d media sections (at most %d)", ErrBadSDP, len(sd.MediaDescriptions), maxMedias)
	}
	out := make([]Media, 0, len(sd.MediaDescriptions))
	for i, md := range sd.MediaDescriptions {
		m, err := parseMedia(md)
		if err != nil {
			return nil, fmt.Errorf("%w: media %d: %v", ErrBadSDP, i, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func parseMedia(md *sdp.MediaDescription) (Media, error) {
	m := Media{Type: strings.ToLower(md.MediaName.Media), Fmtp: map[string]string{}}
	if len(md.MediaName.Formats) == 0 {
		return m, errors.New("no payload format")
	}
	pt, err := strconv.ParseUint(md.MediaName.Formats[0], 10, 8)
	if err != nil || pt > 127 {
		return m, fmt.Errorf("payload type %q", truncate(md.MediaName.Formats[0], 10))
	}
	m.PayloadType = uint8(pt)
	ptStr := md.MediaName.Formats[0]
	for _, a := range md.Attributes {
		switch strings.ToLower(a.Key) {
		case "rtpmap":
			f, rest, _ := strings.Cut(strings.TrimSpace(a.Value), " ")
			if f != ptStr {
				continue
			}
			enc := strings.Split(strings.TrimSpace(rest), "/")
			if len(enc) < 2 || enc[0] == "" {
				return m, fmt.Errorf("rtpmap %q", truncate(a.Value, 40))
			}
			m.Codec = strings.ToUpper(enc[0])
			rate, err := strconv.ParseUint(enc[1], 10, 32)
			if err != nil || rate == 0 {
				return m, fmt.Errorf("clock rate %q", truncate(enc[1], 20))
			}
			m.ClockRate = uint32(rate)
			if len(enc) > 2 {
				ch, err := strconv.Atoi(enc[2])
				if err != nil || ch < 1 || ch > 255 {
					return m, fmt.Errorf("channels %q", truncate(enc[2], 20))
				}
				m.Channels = ch
			}
		case "fmtp":
			f, rest, _ := strings.Cut(strings.TrimSpace(a.Value), " ")
			if f != ptStr {
				continue
			}
			for _, kv := range strings.Split(rest, ";") {
				k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
				if k = strings.ToLower(strings.TrimSpace(k)); k != "" {
					m.Fmtp[k] = strings.TrimSpace(v)
				}
			}
		case "control":
			m.Control = strings.TrimSpace(a.Value)
		}
	}
	if m.Codec == "" {
		// Static payload types (RFC 3551) need no rtpmap.
		st, ok := staticPayloadTypes[m.PayloadType]
		if !ok {
			return m, fmt.Errorf("payload type %d has no rtpmap", m.PayloadType)
		}
		m.Codec, m.ClockRate, m.Channels = st.codec, st.rate, st.channels
	}
	return m, nil
}

var staticPayloadTypes = map[uint8]struct {
	codec    string
	rate     uint32
	channels int
}{
	0: {"PCMU", 8000, 1}, 8: {"PCMA", 8000, 1}, 14: {"MPA", 90000, 0},
	26: {"JPEG", 90000, 0}, 32: {"MPV", 90000, 0}, 33: {"MP2T", 90000, 0},
}

// MarshalSDP writes a session description announcing medias (used by the
// publishing client). Each media gets a=control:trackID=N unless it has a
// Control of its own.
func MarshalSDP(medias []Media) []byte {
	var b strings.Builder
	b.WriteString("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=vigil\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n")
	for i, m := range medias {
		fmt.Fprintf(&b, "m=%s 0 RTP/AVP %d\r\n", m.Type, m.PayloadType)
		enc := fmt.Sprintf("%s/%d", m.Codec, m.ClockRate)
		if m.Channels > 0 {
			enc += "/" + strconv.Itoa(m.Channels)
		}
		fmt.Fprintf(&b, "a=rtpmap:%d %s\r\n", m.PayloadType, enc)
		if len(m.Fmtp) > 0 {
			keys := make([]string, 0, len(m.Fmtp))
			for k := range m.Fmtp {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			parts := make([]string, len(keys))
			for j, k := range keys {
				parts[j] = k + "=" + m.Fmtp[k]
			}
			fmt.Fprintf(&b, "a=fmtp:%d %s\r\n", m.PayloadType, strings.Join(parts, "; "))
		}
		ctl := m.Control
		if ctl == "" {
			ctl = "trackID=" + strconv.Itoa(i)
		}
		fmt.Fprintf(&b, "a=control:%s\r\n", ctl)
	}
	return []byte(b.String())
}

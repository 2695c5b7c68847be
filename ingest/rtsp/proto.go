package rtsp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strconv"
	"strings"
)

const (
	rtspVersion        = "RTSP/1.0"
	defaultMaxRequest  = 64 << 10
	maxInterleavedSize = 1<<16 - 1
)

// Errors of the wire parser. They end the session (after a 400/413 answer
// when one can still be given).
var (
	errMalformed     = errors.New("rtsp: malformed request")
	errHeaderTooLong = errors.New("rtsp: request header too large")
	errBodyTooLarge  = errors.New("rtsp: request body too large")
)

// request is one parsed RTSP request.
type request struct {
	Method string
	URL    string
	Header textproto.MIMEHeader // canonical keys (Cseq, Content-Length, ...)
	Body   []byte
}

func (r *request) get(key string) string { return r.Header.Get(key) }

// readRequest reads one request (request line, headers, body) from br. The
// header block and the body are each capped at limit bytes, so a peer cannot
// make the server buffer more than that.
func readRequest(br *bufio.Reader, limit int) (*request, error) {
	first, hdr, body, err := readMessage(br, limit)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(first, " ")
	if len(parts) != 3 || parts[2] != rtspVersion || parts[0] == "" || parts[1] == "" || !isToken(parts[0]) {
		return nil, fmt.Errorf("%w: request line %q", errMalformed, truncate(redactURL(first), 80))
	}
	return &request{Method: parts[0], URL: parts[1], Header: hdr, Body: body}, nil
}

// readMessage reads the start line, the header block and the body of one
// RTSP message.
func readMessage(br *bufio.Reader, limit int) (string, textproto.MIMEHeader, []byte, error) {
	total := 0
	readLine := func() (string, error) {
		var line []byte
		for {
			chunk, err := br.ReadSlice('\n')
			total += len(chunk)
			if total > limit {
				return "", errHeaderTooLong
			}
			line = append(line, chunk...)
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil {
				if err == io.EOF && len(line) > 0 {
					err = io.ErrUnexpectedEOF
				}
				return "", err
			}
			return strings.TrimRight(string(line), "\r\n"), nil
		}
	}
	first, err := readLine()
	if err != nil {
		return "", nil, nil, err
	}
	// Tolerate empty lines between messages (some peers send CRLF after a body).
	for first == "" {
		if first, err = readLine(); err != nil {
			return "", nil, nil, err
		}
	}
	hdr := textproto.MIMEHeader{}
	for n := 0; ; n++ {
		line, err := readLine()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return "", nil, nil, err
		}
		if line == "" {
			break
		}
		if n >= 256 {
			return "", nil, nil, errHeaderTooLong
		}
		k, v, ok := strings.Cut(line, ":")
		k = strings.TrimSpace(k)
		if !ok || k == "" || !isToken(k) {
			// Not quoted: a mangled Authorization line still carries its secret.
			return "", nil, nil, fmt.Errorf("%w: header line of %d bytes", errMalformed, len(line))
		}
		hdr.Add(textproto.CanonicalMIMEHeaderKey(k), strings.TrimSpace(v))
	}
	var body []byte
	if cl := hdr.Get("Content-Length"); cl != "" {
		n, err := strconv.Atoi(cl)
		if err != nil || n < 0 {
			return "", nil, nil, fmt.Errorf("%w: Content-Length %q", errMalformed, truncate(cl, 20))
		}
		if n > limit {
			return "", nil, nil, errBodyTooLarge
		}
		body = make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return "", nil, nil, fmt.Errorf("rtsp: read body: %w", err)
		}
	}
	return first, hdr, body, nil
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return s != ""
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// response is one RTSP response; header keys are written as given.
type response struct {
	Status int
	Reason string // empty: the standard phrase
	Header [][2]string
	Body   []byte
}

func (r *response) add(k, v string) { r.Header = append(r.Header, [2]string{k, v}) }

func (r *response) marshal(cseq string) []byte {
	var b bytes.Buffer
	reason := r.Reason
	if reason == "" {
		reason = statusText(r.Status)
	}
	fmt.Fprintf(&b, "%s %d %s\r\n", rtspVersion, r.Status, reason)
	if cseq != "" {
		fmt.Fprintf(&b, "CSeq: %s\r\n", cseq)
	}
	b.WriteString("Server: vigil\r\n")
	for _, h := range r.Header {
		fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
	}
	if len(r.Body) > 0 {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(r.Body))
	}
	b.WriteString("\r\n")
	b.Write(r.Body)
	return b.Bytes()
}

func statusText(code int) string {
	switch code {
	case 200:
		return "OK"
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 413:
		return "Request Entity Too Large"
	case 415:
		return "Unsupported Media Type"
	case 454:
		return "Session Not Found"
	case 455:
		return "Method Not Valid in This State"
	case 459:
		return "Aggregate Operation Not Allowed"
	case 461:
		return "Unsupported Transport"
	case 500:
		return "Internal Server Error"
	case 501:
		return "Not Implemented"
	case 503:
		return "Service Unavailable"
	case 505:
		return "RTSP Version Not Supported"
	}
	return "Status " + strconv.Itoa(code)
}

// readInterleaved reads one "$" frame after the '$' has been consumed: the
// channel, a 16-bit length and that many bytes into *buf, which grows to the
// largest frame seen (RTP packets are usually under 1500 bytes, so sessions
// do not each hold 64 KiB). A short read is io.ErrUnexpectedEOF.
func readInterleaved(br *bufio.Reader, buf *[]byte) (channel byte, payload []byte, err error) {
	var hdr [3]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("rtsp: interleaved frame header: %w", err)
	}
	n := int(hdr[1])<<8 | int(hdr[2])
	if n == 0 {
		return 0, nil, fmt.Errorf("%w: empty interleaved frame on channel %d", errMalformed, hdr[0])
	}
	if cap(*buf) < n {
		*buf = make([]byte, max(n, 2048))
	}
	p := (*buf)[:n]
	if _, err := io.ReadFull(br, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("rtsp: interleaved frame of %d bytes on channel %d: %w", n, hdr[0], err)
	}
	return hdr[0], p, nil
}

// parseTransport parses one transport spec of a Transport header.
type transportSpec struct {
	Protocol   string // "RTP/AVP", "RTP/AVP/UDP", "RTP/AVP/TCP"
	TCP        bool
	Unicast    bool
	Multicast  bool
	Interleave [2]int // -1 when absent
	ClientPort [2]int // -1 when absent
	Mode       string // lower-case, "" when absent
}

func parseTransport(spec string) (transportSpec, error) {
	t := transportSpec{Interleave: [2]int{-1, -1}, ClientPort: [2]int{-1, -1}}
	fields := strings.Split(spec, ";")
	t.Protocol = strings.ToUpper(strings.TrimSpace(fields[0]))
	switch t.Protocol {
	case "RTP/AVP", "RTP/AVP/UDP":
	case "RTP/AVP/TCP":
		t.TCP = true
	default:
		return t, fmt.Errorf("unsupported transport protocol %q", truncate(t.Protocol, 40))
	}
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		switch strings.ToLower(k) {
		case "unicast":
			t.Unicast = true
		case "multicast":
			t.Multicast = true
		case "interleaved":
			p, err := parsePortPair(v, 255)
			if err != nil {
				return t, fmt.Errorf("interleaved=%q: %w", truncate(v, 20), err)
			}
			t.Interleave = p
		case "client_port":
			p, err := parsePortPair(v, 65535)
			if err != nil {
				return t, fmt.Errorf("client_port=%q: %w", truncate(v, 20), err)
			}
			t.ClientPort = p
		case "mode":
			t.Mode = strings.ToLower(strings.Trim(v, `"`))
		}
	}
	return t, nil
}

// parsePortPair parses "a-b" or "a" (then b = a+1), each in [0, max].
func parsePortPair(v string, max int) ([2]int, error) {
	a, b, hasB := strings.Cut(v, "-")
	x, err := strconv.Atoi(a)
	if err != nil || x < 0 || x > max {
		return [2]int{}, errors.New("bad number")
	}
	y := x + 1
	if hasB {
		if y, err = strconv.Atoi(b); err != nil || y < 0 || y > max {
			return [2]int{}, errors.New("bad number")
		}
	}
	if y > max {
		return [2]int{}, errors.New("out of range")
	}
	return [2]int{x, y}, nil
}

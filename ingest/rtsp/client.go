package rtsp

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// Client is a small RTSP publishing client (ANNOUNCE + SETUP + RECORD) used
// by the tests and by `vigil bench rtsp`. It is not safe for concurrent
// requests; WriteRTP/WriteRTCP may run concurrently with each other.
type Client struct {
	// PreferBasic answers a 401 offering both schemes with Basic instead of Digest.
	PreferBasic bool
	// Timeout bounds each request when ctx has no deadline (default 10 s).
	Timeout time.Duration

	conn       net.Conn
	br         *bufio.Reader
	base       string // rtsp://host:port/path, without credentials
	user, pass string
	hasCreds   bool
	cseq       int
	session    string
	authHdr    func(method, uri string) string // set once a challenge was answered

	medias []Media
	tracks []clientTrack

	wmu  sync.Mutex
	wbuf []byte
}

type clientTrack struct {
	setup      bool
	tcp        bool
	channel    byte
	rtp, rtcp  *net.UDPConn
	serverRTP  *net.UDPAddr
	serverRTCP *net.UDPAddr
}

// Response is an RTSP response as the client saw it.
type Response struct {
	Status int
	Reason string
	Header textproto.MIMEHeader
	Body   []byte
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Method string
	Status int
	Reason string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("rtsp: %s: %d %s", e.Method, e.Status, e.Reason)
}

// Dial connects to rawURL (rtsp://user:password@host:port/path).
func Dial(ctx context.Context, rawURL string) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = redactURL(ue.URL) // the error quotes the URL, credentials and all
		}
		return nil, fmt.Errorf("rtsp: dial: %w", err)
	}
	if u.Scheme != "rtsp" {
		return nil, fmt.Errorf("rtsp: dial: scheme %q, want rtsp", u.Scheme)
	}
	c := &Client{}
	if u.User != nil {
		c.user = u.User.Username()
		c.pass, _ = u.User.Password()
		c.hasCreds = true
		u.User = nil
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "554")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("rtsp: dial %s: %w", host, err)
	}
	c.conn, c.br, c.base = conn, bufio.NewReaderSize(conn, 4096), u.String()
	return c, nil
}

// Conn is the underlying TCP connection (tests write raw bytes to it).
func (c *Client) Conn() net.Conn { return c.conn }

// URL is the stream URL without credentials.
func (c *Client) URL() string { return c.base }

// Do sends one request and reads its response. On a 401 it answers the
// challenge once (Digest unless PreferBasic or only Basic is offered).
// Non-2xx statuses are returned as a Response, not an error.
func (c *Client) Do(ctx context.Context, method, uri string, hdr [][2]string, body []byte) (*Response, error) {
	resp, err := c.roundTrip(ctx, method, uri, hdr, body)
	if err != nil || resp.Status != 401 || !c.hasCreds {
		return resp, err
	}
	if err := c.answerChallenge(resp.Header.Values("Www-Authenticate")); err != nil {
		return resp, nil
	}
	return c.roundTrip(ctx, method, uri, hdr, body)
}

func (c *Client) roundTrip(ctx context.Context, method, uri string, hdr [][2]string, body []byte) (*Response, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		t := c.Timeout
		if t <= 0 {
			t = 10 * time.Second
		}
		deadline = time.Now().Add(t)
	}
	_ = c.conn.SetDeadline(deadline)
	defer c.conn.SetDeadline(time.Time{})
	c.cseq++
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s\r\nCSeq: %d\r\nUser-Agent: vigil-rtsp-client\r\n", method, uri, rtspVersion, c.cseq)
	if c.session != "" {
		fmt.Fprintf(&b, "Session: %s\r\n", c.session)
	}
	if c.authHdr != nil {
		fmt.Fprintf(&b, "Authorization: %s\r\n", c.authHdr(method, uri))
	}
	for _, h := range hdr {
		fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
	}
	if len(body) > 0 {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	c.wmu.Lock()
	_, err := c.conn.Write(append([]byte(b.String()), body...))
	c.wmu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("rtsp: %s: write: %w", method, err)
	}
	return c.readResponse(method)
}

func (c *Client) readResponse(method string) (*Response, error) {
	for {
		p, err := c.br.Peek(1)
		if err != nil {
			return nil, fmt.Errorf("rtsp: %s: read response: %w", method, err)
		}
		if p[0] != '$' {
			break
		}
		// An interleaved frame from the server (RTCP receiver report): skip it.
		var hdr [4]byte
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return nil, fmt.Errorf("rtsp: %s: read response: %w", method, err)
		}
		if _, err := c.br.Discard(int(binary.BigEndian.Uint16(hdr[2:4]))); err != nil {
			return nil, fmt.Errorf("rtsp: %s: read response: %w", method, err)
		}
	}
	first, hdr, body, err := readMessage(c.br, 1<<20)
	if err != nil {
		return nil, fmt.Errorf("rtsp: %s: read response: %w", method, err)
	}
	parts := strings.SplitN(first, " ", 3)
	if len(parts) < 2 || parts[0] != rtspVersion {
		return nil, fmt.Errorf("rtsp: %s: bad status line %q", method, truncate(first, 80))
	}
	status, err := strconv.Atoi(parts[1])
	if err != nil {
		return nil, fmt.Errorf("rtsp: %s: bad status line %q", method, truncate(first, 80))
	}
	r := &Response{Status: status, Header: hdr, Body: body}
	if len(parts) == 3 {
		r.Reason = parts[2]
	}
	if cs := hdr.Get("Cseq"); cs != strconv.Itoa(c.cseq) {
		return r, fmt.Errorf("rtsp: %s: response CSeq %q, sent %d", method, cs, c.cseq)
	}
	return r, nil
}

func (c *Client) answerChallenge(values []string) error {
	var digest map[string]string
	basic := false
	for _, v := range values {
		scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
		switch strings.ToLower(scheme) {
		case "digest":
			if p, err := parseAuthParams(rest); err == nil {
				digest = p
			}
		case "basic":
			basic = true
		}
	}
	switch {
	case digest != nil && !(c.PreferBasic && basic):
		user, pass, realm, nonce, qop := c.user, c.pass, digest["realm"], digest["nonce"], ""
		if strings.Contains(digest["qop"], "auth") {
			qop = "auth"
		}
		ha1 := md5hex(user + ":" + realm + ":" + pass)
		nc := 0
		c.authHdr = func(method, uri string) string {
			p := map[string]string{"uri": uri, "nonce": nonce}
			extra := ""
			if qop != "" {
				nc++
				var cn [8]byte
				_, _ = rand.Read(cn[:])
				p["qop"], p["nc"], p["cnonce"] = qop, fmt.Sprintf("%08x", nc), hex.EncodeToString(cn[:])
				extra = fmt.Sprintf(`, qop=%s, nc=%s, cnonce="%s"`, qop, p["nc"], p["cnonce"])
			}
			return fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s"%s`,
				user, realm, nonce, uri, digestResponse(ha1, method, p), extra)
		}
	case basic:
		v := "Basic " + base64.StdEncoding.EncodeToString([]byte(c.user+":"+c.pass))
		c.authHdr = func(string, string) string { return v }
	default:
		return errors.New("rtsp: no supported challenge")
	}
	return nil
}

func (c *Client) expectOK(method string, r *Response, err error) error {
	if err != nil {
		return err
	}
	if r.Status < 200 || r.Status > 299 {
		return &StatusError{Method: method, Status: r.Status, Reason: r.Reason}
	}
	return nil
}

// Options sends OPTIONS.
func (c *Client) Options(ctx context.Context) (*Response, error) {
	return c.Do(ctx, "OPTIONS", c.base, nil, nil)
}

// Announce announces medias (their SDP from MarshalSDP).
func (c *Client) Announce(ctx context.Context, medias []Media) error {
	r, err := c.Do(ctx, "ANNOUNCE", c.base, [][2]string{{"Content-Type", "application/sdp"}}, MarshalSDP(medias))
	if err := c.expectOK("ANNOUNCE", r, err); err != nil {
		return err
	}
	c.medias = append([]Media(nil), medias...)
	c.tracks = make([]clientTrack, len(medias))
	return nil
}

// Setup sets up media i over TCP (interleaved channels 2i, 2i+1) or UDP
// (two local UDP sockets; client_port names them).
func (c *Client) Setup(ctx context.Context, i int, tcp bool) error {
	if i < 0 || i >= len(c.medias) {
		return fmt.Errorf("rtsp: SETUP: no media %d", i)
	}
	ctl := c.medias[i].Control
	if ctl == "" {
		ctl = "trackID=" + strconv.Itoa(i)
	}
	uri := strings.TrimSuffix(c.base, "/") + "/" + ctl
	tr := &c.tracks[i]
	var transport string
	if tcp {
		tr.channel = byte(2 * i)
		transport = fmt.Sprintf("RTP/AVP/TCP;unicast;interleaved=%d-%d;mode=record", 2*i, 2*i+1)
	} else {
		var err error
		if tr.rtp == nil {
			if tr.rtp, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
				return fmt.Errorf("rtsp: SETUP: %w", err)
			}
			if tr.rtcp, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
				return fmt.Errorf("rtsp: SETUP: %w", err)
			}
		}
		transport = fmt.Sprintf("RTP/AVP;unicast;client_port=%d-%d;mode=record",
			tr.rtp.LocalAddr().(*net.UDPAddr).Port, tr.rtcp.LocalAddr().(*net.UDPAddr).Port)
	}
	r, err := c.Do(ctx, "SETUP", uri, [][2]string{{"Transport", transport}}, nil)
	if err := c.expectOK("SETUP", r, err); err != nil {
		return err
	}
	if s := r.Header.Get("Session"); s != "" {
		c.session, _, _ = strings.Cut(s, ";")
	}
	if !tcp {
		t, _ := parseTransportResponse(r.Header.Get("Transport"))
		if t[0] <= 0 {
			return fmt.Errorf("rtsp: SETUP: no server_port in %q", r.Header.Get("Transport"))
		}
		host, _, _ := net.SplitHostPort(c.conn.RemoteAddr().String())
		ip := net.ParseIP(host)
		tr.serverRTP = &net.UDPAddr{IP: ip, Port: t[0]}
		tr.serverRTCP = &net.UDPAddr{IP: ip, Port: t[1]}
	}
	tr.setup, tr.tcp = true, tcp
	return nil
}

func parseTransportResponse(v string) ([2]int, error) {
	for _, f := range strings.Split(v, ";") {
		if k, val, ok := strings.Cut(strings.TrimSpace(f), "="); ok && k == "server_port" {
			return parsePortPair(val, 65535)
		}
	}
	return [2]int{}, errors.New("no server_port")
}

// Record sends RECORD.
func (c *Client) Record(ctx context.Context) error {
	r, err := c.Do(ctx, "RECORD", c.base, [][2]string{{"Range", "npt=0.000-"}}, nil)
	return c.expectOK("RECORD", r, err)
}

// Teardown sends TEARDOWN.
func (c *Client) Teardown(ctx context.Context) error {
	r, err := c.Do(ctx, "TEARDOWN", c.base, nil, nil)
	return c.expectOK("TEARDOWN", r, err)
}

// WriteRTP sends pkt on media i's transport.
func (c *Client) WriteRTP(i int, pkt *rtp.Packet) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := pkt.MarshalSize()
	if cap(c.wbuf) < n+4 {
		c.wbuf = make([]byte, n+4)
	}
	buf := c.wbuf[:n+4]
	if _, err := pkt.MarshalTo(buf[4:]); err != nil {
		return fmt.Errorf("rtsp: marshal RTP: %w", err)
	}
	return c.writeLocked(i, false, buf)
}

// WritePackets sends pkts on media i's transport; over TCP as one write
// (a publisher sends an access unit's packets back to back).
func (c *Client) WritePackets(i int, pkts []*rtp.Packet) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if i < 0 || i >= len(c.tracks) || !c.tracks[i].setup {
		return fmt.Errorf("rtsp: media %d is not set up", i)
	}
	if !c.tracks[i].tcp {
		for _, p := range pkts {
			n := p.MarshalSize()
			if cap(c.wbuf) < n+4 {
				c.wbuf = make([]byte, n+4)
			}
			if _, err := p.MarshalTo(c.wbuf[4 : n+4]); err != nil {
				return fmt.Errorf("rtsp: marshal RTP: %w", err)
			}
			if err := c.writeLocked(i, false, c.wbuf[:n+4]); err != nil {
				return err
			}
		}
		return nil
	}
	total := 0
	for _, p := range pkts {
		total += 4 + p.MarshalSize()
	}
	if cap(c.wbuf) < total {
		c.wbuf = make([]byte, total)
	}
	buf, off := c.wbuf[:total], 0
	for _, p := range pkts {
		n, err := p.MarshalTo(buf[off+4:])
		if err != nil {
			return fmt.Errorf("rtsp: marshal RTP: %w", err)
		}
		if n > maxInterleavedSize {
			return fmt.Errorf("rtsp: packet of %d bytes does not fit an interleaved frame", n)
		}
		buf[off], buf[off+1] = '$', c.tracks[i].channel
		binary.BigEndian.PutUint16(buf[off+2:off+4], uint16(n))
		off += 4 + n
	}
	_, err := c.conn.Write(buf)
	return err
}

// WriteRTCP sends a compound RTCP packet on media i's transport.
func (c *Client) WriteRTCP(i int, pkts []rtcp.Packet) error {
	b, err := rtcp.Marshal(pkts)
	if err != nil {
		return fmt.Errorf("rtsp: marshal RTCP: %w", err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(i, true, append(make([]byte, 4, 4+len(b)), b...))
}

// writeLocked sends buf[4:]; the first 4 bytes are room for the "$" header.
func (c *Client) writeLocked(i int, isRTCP bool, buf []byte) error {
	if i < 0 || i >= len(c.tracks) || !c.tracks[i].setup {
		return fmt.Errorf("rtsp: media %d is not set up", i)
	}
	tr := &c.tracks[i]
	if !tr.tcp {
		conn, to := tr.rtp, tr.serverRTP
		if isRTCP {
			conn, to = tr.rtcp, tr.serverRTCP
		}
		_, err := conn.WriteToUDP(buf[4:], to)
		return err
	}
	if len(buf)-4 > maxInterleavedSize {
		return fmt.Errorf("rtsp: packet of %d bytes does not fit an interleaved frame", len(buf)-4)
	}
	ch := tr.channel
	if isRTCP {
		ch++
	}
	buf[0], buf[1] = '$', ch
	binary.BigEndian.PutUint16(buf[2:4], uint16(len(buf)-4))
	_, err := c.conn.Write(buf)
	return err
}

// Close closes the connection and any UDP sockets (without TEARDOWN).
func (c *Client) Close() error {
	for _, t := range c.tracks {
		if t.rtp != nil {
			t.rtp.Close()
			t.rtcp.Close()
		}
	}
	return c.conn.Close()
}

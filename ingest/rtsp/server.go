package rtsp

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

const (
	defaultIdleTimeout = 60 * time.Second
	writeTimeout       = 10 * time.Second
)

// Server is the RTSP server. NewServer binds the listeners (so Addr is known
// at once); Serve accepts sessions until its context is cancelled.
type Server struct {
	cfg    Config
	h      Handler
	log    *slog.Logger
	m      *metrics
	nonces nonces

	ln       net.Listener
	rtpConn  *net.UDPConn // nil when UDP is off
	rtcpConn *net.UDPConn

	mu       sync.Mutex
	sessions map[*session]struct{}
	closed   bool
	wg       sync.WaitGroup

	udpMu sync.RWMutex
	udp   map[udpKey]udpTarget
}

// udpKey identifies a publisher's UDP source: its address and port, and
// which of the two server sockets the datagram arrived on.
type udpKey struct {
	from netip.AddrPort
	rtcp bool
}

type udpTarget struct {
	ss    *session
	media int
}

// NewServer validates cfg and binds the TCP listener and, when configured,
// the UDP RTP/RTCP pair.
func NewServer(cfg Config, h Handler) (*Server, error) {
	if h == nil {
		return nil, errors.New("rtsp: nil Handler")
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = defaultIdleTimeout
	}
	if cfg.Realm == "" {
		cfg.Realm = "vigil"
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = defaultMaxRequest
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if (cfg.UDPRTPAddr == "") != (cfg.UDPRTCPAddr == "") {
		return nil, errors.New("rtsp: UDPRTPAddr and UDPRTCPAddr go together")
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("rtsp: nonce key: %w", err)
	}
	s := &Server{
		cfg: cfg, h: h, log: cfg.Logger, m: newMetrics(cfg.Registerer), nonces: nonces{key: key},
		sessions: map[*session]struct{}{}, udp: map[udpKey]udpTarget{},
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("rtsp: listen %s: %w", cfg.Addr, err)
	}
	s.ln = ln
	if cfg.UDPRTPAddr != "" {
		if s.rtpConn, err = listenUDP(cfg.UDPRTPAddr); err == nil {
			s.rtcpConn, err = listenUDP(cfg.UDPRTCPAddr)
		}
		if err != nil {
			s.closeListeners()
			return nil, fmt.Errorf("rtsp: %w", err)
		}
	}
	return s, nil
}

func listenUDP(addr string) (*net.UDPConn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("udp %s: %w", addr, err)
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("udp %s: %w", addr, err)
	}
	// A larger socket buffer absorbs bursts (keyframes) from many publishers.
	_ = c.SetReadBuffer(8 << 20)
	return c, nil
}

func (s *Server) closeListeners() {
	s.ln.Close()
	if s.rtpConn != nil {
		s.rtpConn.Close()
	}
	if s.rtcpConn != nil {
		s.rtcpConn.Close()
	}
}

// Addr is the TCP listen address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// UDPAddrs returns the UDP RTP and RTCP listen addresses (nil when UDP is off).
func (s *Server) UDPAddrs() (rtpAddr, rtcpAddr net.Addr) {
	if s.rtpConn == nil {
		return nil, nil
	}
	return s.rtpConn.LocalAddr(), s.rtcpConn.LocalAddr()
}

// Serve accepts and runs sessions until ctx is cancelled; then it closes the
// listeners and every session (Sink.Close(ErrShutdown)) and returns nil once
// all are gone. It returns early with an error when accepting fails for good.
func (s *Server) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var udpWG sync.WaitGroup
	if s.rtpConn != nil {
		udpWG.Add(2)
		go func() { defer udpWG.Done(); s.readUDP(s.rtpConn, false) }()
		go func() { defer udpWG.Done(); s.readUDP(s.rtcpConn, true) }()
	}
	acceptErr := make(chan error, 1)
	go func() { acceptErr <- s.accept(ctx) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-acceptErr:
	}
	s.mu.Lock()
	s.closed = true
	open := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		open = append(open, ss)
	}
	s.mu.Unlock()
	s.closeListeners()
	for _, ss := range open {
		ss.close(ErrShutdown)
	}
	cancel()
	s.wg.Wait()
	udpWG.Wait()
	if err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

func (s *Server) accept(ctx context.Context) error {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			// EMFILE and the like: back off instead of spinning.
			s.log.Warn("rtsp: accept", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		full := s.cfg.MaxSessions > 0 && len(s.sessions) >= s.cfg.MaxSessions
		var ss *session
		if !full {
			ss = newSession(ctx, s, c)
			s.sessions[ss] = struct{}{}
		}
		s.wg.Add(1)
		s.mu.Unlock()
		if full {
			go func() { defer s.wg.Done(); s.refuseFull(c) }()
			continue
		}
		s.m.sessions.Inc()
		go func() { defer s.wg.Done(); ss.run() }()
	}
}

// refuseFull answers the first request of a connection beyond MaxSessions
// with 503 and a reason that says so, then closes it.
func (s *Server) refuseFull(c net.Conn) {
	defer c.Close()
	s.m.refused.WithLabelValues("session_limit").Inc()
	s.log.Warn("rtsp: session limit reached, refusing", "remote", c.RemoteAddr().String(), "max_sessions", s.cfg.MaxSessions)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := newReader(c)
	req, err := readRequest(br, s.cfg.MaxRequestBytes)
	if err != nil {
		return
	}
	resp := &response{Status: 503, Reason: "Session Limit Reached",
		Body: fmt.Appendf(nil, "this node accepts at most %d RTSP sessions\n", s.cfg.MaxSessions)}
	resp.add("Content-Type", "text/plain")
	_, _ = c.Write(resp.marshal(req.get("Cseq")))
}

func (s *Server) removeSession(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss)
	s.mu.Unlock()
	s.udpMu.Lock()
	for k, t := range s.udp {
		if t.ss == ss {
			delete(s.udp, k)
		}
	}
	s.udpMu.Unlock()
	s.m.sessions.Dec()
}

// registerUDP routes datagrams from the publisher's client ports to ss.
func (s *Server) registerUDP(ss *session, media int, ip netip.Addr, ports [2]int) error {
	rtpKey := udpKey{netip.AddrPortFrom(ip, uint16(ports[0])), false}
	rtcpKey := udpKey{netip.AddrPortFrom(ip, uint16(ports[1])), true}
	s.udpMu.Lock()
	defer s.udpMu.Unlock()
	for _, k := range []udpKey{rtpKey, rtcpKey} {
		if t, ok := s.udp[k]; ok && t.ss != ss {
			return fmt.Errorf("client port %d of %s is in use by another session", k.from.Port(), ip)
		}
	}
	s.udp[rtpKey] = udpTarget{ss, media}
	s.udp[rtcpKey] = udpTarget{ss, media}
	return nil
}

func (s *Server) readUDP(c *net.UDPConn, isRTCP bool) {
	buf := make([]byte, 1<<16)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("rtsp: udp read", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		key := udpKey{netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), isRTCP}
		s.udpMu.RLock()
		t, ok := s.udp[key]
		s.udpMu.RUnlock()
		if !ok || !t.ss.recording.Load() {
			s.m.udpDropped.Inc()
			continue
		}
		t.ss.touch()
		if isRTCP {
			s.m.udpRTCP.Inc()
			s.m.udpBytes.Add(float64(n))
			t.ss.deliverRTCP(t.media, buf[:n])
			continue
		}
		s.m.udpRTP.Inc()
		s.m.udpBytes.Add(float64(n))
		if err := t.ss.deliverRTP(t.media, buf[:n]); err != nil {
			t.ss.close(err)
		}
	}
}

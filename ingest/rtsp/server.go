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
	"sync/atomic"
	"time"
)

// Defaults of the Config fields that vigil serve exposes as flags.
const (
	DefaultMaxUnauthenticated      = 128
	DefaultMaxUnauthenticatedPerIP = 8
	DefaultAuthTimeout             = 10 * time.Second
)

const (
	defaultIdleTimeout = 60 * time.Second
	writeTimeout       = 10 * time.Second
	// maxRefusing bounds the goroutines that answer refused connections; a
	// flood beyond it is closed without an answer.
	maxRefusing = 64
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

	lim AuthLimiter

	mu       sync.Mutex
	sessions map[*session]struct{}
	// Connections that have not authenticated: when each came, and how
	// many per remote address. authed counts the others.
	pending     map[*session]time.Time
	pendingByIP map[netip.Addr]int
	authed      int
	closed      bool
	wg          sync.WaitGroup
	refusing    atomic.Int32

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
	if cfg.MaxUnauthenticated <= 0 {
		cfg.MaxUnauthenticated = DefaultMaxUnauthenticated
	}
	if cfg.MaxUnauthenticatedPerIP <= 0 {
		cfg.MaxUnauthenticatedPerIP = DefaultMaxUnauthenticatedPerIP
	}
	if cfg.AuthTimeout <= 0 {
		cfg.AuthTimeout = DefaultAuthTimeout
	}
	if cfg.NonceTTL <= 0 {
		cfg.NonceTTL = defaultNonceTTL
	}
	if (cfg.UDPRTPAddr == "") != (cfg.UDPRTCPAddr == "") {
		return nil, errors.New("rtsp: UDPRTPAddr and UDPRTCPAddr go together")
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("rtsp: nonce key: %w", err)
	}
	s := &Server{
		cfg: cfg, h: h, log: cfg.Logger, m: newMetrics(cfg.Registerer), nonces: nonces{key: key, ttl: cfg.NonceTTL},
		sessions: map[*session]struct{}{}, udp: map[udpKey]udpTarget{},
		pending: map[*session]time.Time{}, pendingByIP: map[netip.Addr]int{},
		lim: cfg.Limiter,
	}
	if s.lim == nil {
		s.lim = logOnlyLimiter{cfg.Logger}
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
		// Until it authenticates a connection is counted apart from the
		// publishers: one address gets a few, and the oldest make room.
		ip := remoteIP(c)
		if s.pendingByIP[ip] >= s.cfg.MaxUnauthenticatedPerIP {
			s.wg.Add(1) // under s.mu, like every session: Serve waits for it
			s.mu.Unlock()
			s.refuse(c, "unauthenticated_per_ip", &response{Status: 503, Reason: "Too Many Unauthenticated Connections",
				Body: fmt.Appendf(nil, "this node accepts at most %d unauthenticated RTSP connections per address\n", s.cfg.MaxUnauthenticatedPerIP)})
			continue
		}
		var evict *session
		if len(s.pending) >= s.cfg.MaxUnauthenticated {
			var oldest time.Time
			for p, at := range s.pending {
				if evict == nil || at.Before(oldest) {
					evict, oldest = p, at
				}
			}
			s.dropPendingLocked(evict)
		}
		ss := newSession(ctx, s, c)
		s.sessions[ss] = struct{}{}
		s.pending[ss] = time.Now()
		s.pendingByIP[ip]++
		s.wg.Add(1)
		s.mu.Unlock()
		s.m.sessions.Inc()
		s.m.unauthenticated.Inc()
		if evict != nil {
			s.m.refused.WithLabelValues("unauthenticated_evicted").Inc()
			evict.close(errEvicted)
		}
		go func() { defer s.wg.Done(); ss.run() }()
	}
}

func remoteIP(c net.Conn) netip.Addr {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// refuse answers the first request of a connection the server will not
// serve with resp, then closes it. At most maxRefusing are answered at
// once; a flood beyond that is closed unanswered. The caller did s.wg.Add(1).
func (s *Server) refuse(c net.Conn, reason string, resp *response) {
	s.m.refused.WithLabelValues(reason).Inc()
	if s.refusing.Add(1) > maxRefusing {
		s.refusing.Add(-1)
		c.Close()
		s.wg.Done()
		return
	}
	go func() {
		defer s.wg.Done()
		defer s.refusing.Add(-1)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		req, err := readRequest(newReader(c), s.cfg.MaxRequestBytes)
		if err != nil {
			return
		}
		resp.add("Content-Type", "text/plain")
		_, _ = c.Write(resp.marshal(req.get("Cseq")))
	}()
}

// promote moves ss from the unauthenticated connections to the sessions;
// false when MaxSessions are authenticated already.
func (s *Server) promote(ss *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss.authenticated.Load() {
		return true
	}
	if _, ok := s.pending[ss]; !ok {
		return false // evicted: it is being closed
	}
	if s.cfg.MaxSessions > 0 && s.authed >= s.cfg.MaxSessions {
		return false
	}
	s.dropPendingLocked(ss)
	s.authed++
	ss.authenticated.Store(true)
	return true
}

// dropPendingLocked forgets ss as unauthenticated; s.mu is held.
func (s *Server) dropPendingLocked(ss *session) {
	if _, ok := s.pending[ss]; !ok {
		return
	}
	delete(s.pending, ss)
	if s.pendingByIP[ss.remoteIP]--; s.pendingByIP[ss.remoteIP] <= 0 {
		delete(s.pendingByIP, ss.remoteIP)
	}
	s.m.unauthenticated.Dec()
}

func (s *Server) removeSession(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss)
	if ss.authenticated.Load() {
		s.authed--
	} else {
		s.dropPendingLocked(ss)
	}
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

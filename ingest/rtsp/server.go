package rtsp

import (
	"context"
	"errors"
	"net"
)

// Server is the RTSP server. NewServer binds the listeners (so Addr is known
// at once); Serve accepts sessions until ctx is cancelled.
type Server struct {
	cfg Config
	h   Handler
	ln  net.Listener
}

// NewServer validates cfg and binds the TCP listener and, when configured,
// the UDP RTP/RTCP pair.
func NewServer(cfg Config, h Handler) (*Server, error) {
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, h: h, ln: ln}, nil
}

// Serve accepts and runs sessions until ctx is cancelled; then it closes the
// listeners and every session (Sink.Close(ErrShutdown)) and returns nil once
// all are gone.
func (s *Server) Serve(ctx context.Context) error {
	<-ctx.Done()
	s.ln.Close()
	return errors.New("rtsp: not implemented yet")
}

// Addr is the TCP listen address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// UDPAddrs returns the UDP RTP and RTCP listen addresses (nil when UDP is off).
func (s *Server) UDPAddrs() (rtpAddr, rtcpAddr net.Addr) { return nil, nil }

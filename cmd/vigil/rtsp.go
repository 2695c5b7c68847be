package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/ingest"
	"github.com/vigilcloud/vigil/ingest/rtsp"
	"github.com/vigilcloud/vigil/ingest/segmenter"
	"github.com/vigilcloud/vigil/lease"
)

// rtspUDPAddrs returns the UDP RTP/RTCP pair: --rtsp-udp-addr (the RTP
// port; RTCP is the next one), "off" to disable the UDP transport, or by
// default a pair derived from the RTSP port (defaultUDPPort) on the RTSP host,
// so that nodes with different RTSP ports can share a host.
func rtspUDPAddrs(cfg nodeConfig) (rtpAddr, rtcpAddr string, err error) {
	a := cfg.RTSPUDPAddr
	if a == "off" {
		return "", "", nil
	}
	if a == "" {
		host, port, err := net.SplitHostPort(cfg.RTSPAddr)
		if err != nil {
			return "", "", fmt.Errorf("--rtsp-addr %q: %w", cfg.RTSPAddr, err)
		}
		p, _ := strconv.Atoi(port)
		if p = defaultUDPPort(p); p == 0 {
			if p, err = pickUDPPair(host); err != nil {
				return "", "", fmt.Errorf("rtsp: no free UDP port pair on %q (set --rtsp-udp-addr or off): %w", host, err)
			}
		}
		a = net.JoinHostPort(host, strconv.Itoa(p))
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "", "", fmt.Errorf("--rtsp-udp-addr %q: %w", a, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p%2 != 0 || p >= 65535 {
		return "", "", fmt.Errorf("--rtsp-udp-addr %q: want an even RTP port (RTCP uses the next)", a)
	}
	return a, net.JoinHostPort(host, strconv.Itoa(p+1)), nil
}

// defaultUDPPort maps an RTSP port to its own even RTP port: 2p-9108, which
// keeps the customary 8000 for 8554 and gives neighbouring RTSP ports
// (8551, 8552, …) disjoint RTP/RTCP pairs. 0 when the result is out of range
// (or the RTSP port is 0): then the caller picks a free pair.
func defaultUDPPort(rtspPort int) int {
	p := 2*rtspPort - 9108
	if rtspPort <= 0 || p < 1024 || p > 65534 {
		return 0
	}
	return p
}

// pickUDPPair finds an even UDP port on host whose odd neighbour is also
// free. The ports are released before the RTSP server binds them again.
func pickUDPPair(host string) (int, error) {
	ip := net.ParseIP(host)
	var lastErr error
	for range 50 {
		a, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
		if err != nil {
			return 0, err
		}
		p := a.LocalAddr().(*net.UDPAddr).Port &^ 1
		a.Close()
		rtp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: p})
		if err != nil {
			lastErr = err
			continue
		}
		rtcp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: p + 1})
		rtp.Close()
		if err != nil {
			lastErr = err
			continue
		}
		rtcp.Close()
		return p, nil
	}
	return 0, lastErr
}

// startRTSP serves RTSP publishing into the recorder, which stores its
// segments through ing like HTTP uploads. It uploads spooled segments an
// earlier run left before accepting publishers.
func startRTSP(ctx context.Context, wg *sync.WaitGroup, cfg nodeConfig, n *node, ing *ingest.Handler, l lease.Lease,
	reg prometheus.Registerer, log *slog.Logger) error {
	if cfg.RTSPAddr == "" {
		log.Info("rtsp: disabled (--rtsp-addr empty)")
		return nil
	}
	rec, err := segmenter.New(segmenter.Config{
		SpoolDir: filepath.Join(cfg.DataDir, "spool"), SegmentDuration: cfg.SegmentDuration, MaxTimestampJump: cfg.MaxRTPJump,
		Lease: l, Logger: log, Registerer: reg, Live: n.live,
	}, n.rep.Accounts, ing, n.index)
	if err != nil {
		return err
	}
	rtpAddr, rtcpAddr, err := rtspUDPAddrs(cfg)
	if err != nil {
		return err
	}
	srv, err := rtsp.NewServer(rtsp.Config{Addr: cfg.RTSPAddr, UDPRTPAddr: rtpAddr, UDPRTCPAddr: rtcpAddr,
		MaxSessions: cfg.RTSPMaxSessions, Realm: accounts.DigestRealm, Logger: log, Registerer: reg,
		MaxUnauthenticated: cfg.RTSPMaxUnauth, MaxUnauthenticatedPerIP: cfg.RTSPMaxUnauthPerIP,
		AuthTimeout: cfg.RTSPAuthTimeout, Limiter: n.authLimiter}, rec)
	if err != nil { // already "rtsp: …"; say which flags choose the ports
		return fmt.Errorf("%w (ports from --rtsp-addr %s and --rtsp-udp-addr %s; --rtsp-udp-addr off disables UDP)", err, cfg.RTSPAddr, rtpAddr)
	}
	log.Info("rtsp: listening", "addr", srv.Addr().String(), "udp_rtp", rtpAddr, "udp_rtcp", rtcpAddr)
	// The recorder outlives the server: sessions closed at shutdown still
	// hand their last segment to it.
	recCtx, recCancel := context.WithCancel(context.WithoutCancel(ctx))
	recDone := make(chan struct{})
	go func() { defer close(recDone); rec.Run(recCtx) }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ctx); err != nil {
			log.Error("rtsp server", "err", err)
		}
		rec.Drain(context.WithoutCancel(ctx))
		recCancel()
		<-recDone
	}()
	return nil
}

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
	"github.com/redis/go-redis/v9"

	"github.com/vigilcloud/vigil/ingest"
	"github.com/vigilcloud/vigil/ingest/rtsp"
	"github.com/vigilcloud/vigil/ingest/segmenter"
	"github.com/vigilcloud/vigil/meter"
	"github.com/vigilcloud/vigil/retention"
)

// rtspUDPAddrs returns the UDP RTP/RTCP pair: --rtsp-udp-addr (the RTP
// port; RTCP is the next one), by default port 8000 on the RTSP host;
// "off" disables the UDP transport.
func rtspUDPAddrs(cfg nodeConfig) (rtpAddr, rtcpAddr string, err error) {
	a := cfg.RTSPUDPAddr
	if a == "off" {
		return "", "", nil
	}
	if a == "" {
		host, _, err := net.SplitHostPort(cfg.RTSPAddr)
		if err != nil {
			return "", "", fmt.Errorf("--rtsp-addr %q: %w", cfg.RTSPAddr, err)
		}
		a = net.JoinHostPort(host, "8000")
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

// startRTSP serves RTSP publishing into the recorder, which stores its
// segments through ing like HTTP uploads. It uploads spooled segments an
// earlier run left before accepting publishers.
func startRTSP(ctx context.Context, wg *sync.WaitGroup, cfg nodeConfig, n *node, ing *ingest.Handler, rdb redis.UniversalClient,
	reg prometheus.Registerer, log *slog.Logger) error {
	if cfg.RTSPAddr == "" {
		log.Info("rtsp: disabled (--rtsp-addr empty)")
		return nil
	}
	var lease retention.Lease
	if rdb != nil {
		lease = retention.NewRedisLease(rdb, "vigil:lease:")
	}
	rec, err := segmenter.New(segmenter.Config{
		SpoolDir: filepath.Join(cfg.DataDir, "spool"), SegmentDuration: cfg.SegmentDuration, MaxTimestampJump: cfg.MaxRTPJump,
		Lease: lease, Logger: log, Registerer: reg,
	}, n.meter, ing, n.index)
	if err != nil {
		return err
	}
	rtpAddr, rtcpAddr, err := rtspUDPAddrs(cfg)
	if err != nil {
		return err
	}
	srv, err := rtsp.NewServer(rtsp.Config{Addr: cfg.RTSPAddr, UDPRTPAddr: rtpAddr, UDPRTCPAddr: rtcpAddr,
		MaxSessions: cfg.RTSPMaxSessions, Realm: meter.DigestRealm, Logger: log, Registerer: reg}, rec)
	if err != nil {
		return fmt.Errorf("rtsp: %w", err)
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

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/vigilcloud/vigil/internal/localcluster"
)

func runCluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const synopsis = "cluster up [--data DIR] [--http-addr HOST:PORT] [--rtsp-addr HOST:PORT]"
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintf(stdout, "usage: vigil %s\n\nStarts a whole vigil cluster on loopback until Ctrl-C.\n`vigil cluster up --help` lists the flags.\n", synopsis)
		return flag.ErrHelp
	}
	if len(args) == 0 || args[0] != "up" {
		return errors.New("usage: vigil " + synopsis)
	}
	fset := newFlagSet("cluster up", synopsis, `Starts a local cluster on loopback: an erasure-coded MinIO on four drive
directories, a Redis Cluster of three masters with a replica each, three meter
voters, two ingest nodes, and a load balancer (HTTP and RTSP) in front of the
ingest nodes. A node that dies is restarted. It prints where everything is
(also in DATA/cluster.json) and runs until Ctrl-C or SIGTERM, which stop it
all. The operator token comes from VIGIL_ADMIN_TOKEN, else DATA/admin-token
(generated when missing). Needs redis-server, redis-cli and minio (on PATH,
or built by scripts/test.sh).`, stdout, stderr)
	data := fset.String("data", "./vigil-cluster", "data directory of every part")
	httpAddr := fset.String("http-addr", "127.0.0.1:8080", "the load balancer's HTTP address")
	rtspAddr := fset.String("rtsp-addr", "127.0.0.1:8554", "the load balancer's RTSP address; empty: none")
	minioBin := fset.String("minio", "", "the minio binary (default: on PATH, else the one scripts/test.sh built)")
	logLevel := fset.String("log-level", "info", "debug, info, warn or error")
	if err := parseFlags(fset, args[1:]); err != nil {
		return err
	}
	if err := os.MkdirAll(*data, 0o755); err != nil {
		return err
	}
	dir, err := filepath.Abs(*data)
	if err != nil {
		return err
	}
	token, source, err := adminToken(dir) // serve.go
	if err != nil {
		return err
	}
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	log := newLogger(stderr, *logLevel)
	fmt.Fprintf(stdout, "starting a local cluster under %s …\n", dir)
	c, err := localcluster.Start(ctx, localcluster.Config{Dir: dir, VigilBin: bin, MinIOBin: *minioBin,
		HTTPAddr: *httpAddr, RTSPAddr: *rtspAddr, Token: token, Log: log})
	if err != nil {
		return err
	}
	printCluster(stdout, c.Info(), dir, source)
	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping the local cluster …")
	if err := c.Close(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "local cluster stopped")
	return nil
}

func printCluster(w io.Writer, in localcluster.Info, dir, tokenSource string) {
	fmt.Fprintf(w, "cluster up: %s (operator token in %s)\n", in.HTTP, tokenSource)
	fmt.Fprintf(w, "  load balancer  %s", in.HTTP)
	if in.RTSP != "" {
		fmt.Fprintf(w, "  %s", in.RTSP)
	}
	fmt.Fprintln(w, "  (round robin over the ingest nodes)")
	for _, n := range in.Ingest {
		fmt.Fprintf(w, "  ingest %-7s http://%s  rtsp://%s  raft %s  pid %d  log %s\n", n.ID, n.HTTP, n.RTSP, n.Raft, n.Pid, n.Log)
	}
	for _, n := range in.Voters {
		fmt.Fprintf(w, "  meter  %-7s http://%s  raft %s  pid %d  log %s\n", n.ID, n.HTTP, n.Raft, n.Pid, n.Log)
	}
	fmt.Fprintf(w, "  minio          %s  bucket %s  drives %s  pid %d\n", in.MinIO.Endpoint, in.MinIO.Bucket, strings.Join(in.MinIO.Drives, " "), in.MinIO.Pid)
	var redis []string
	for _, r := range in.Redis {
		redis = append(redis, r.Addr)
	}
	fmt.Fprintf(w, "  redis cluster  %s\n", strings.Join(redis, ","))
	fmt.Fprintf(w, "Everything, with the MinIO keys, is in %s. Ctrl-C stops the cluster.\n", filepath.Join(dir, "cluster.json"))
}

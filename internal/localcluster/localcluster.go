// Package localcluster starts a whole vigil deployment on loopback, for
// `vigil cluster up`: an erasure-coded MinIO (four drives), a Redis
// Cluster (three masters with a replica each), three meter voters, two
// ingest nodes and a load balancer in front of the ingest nodes. Like
// systemd or Kubernetes would, it restarts a vigil node that dies.
package localcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/vigilcloud/vigil/internal/connlimit"
	"github.com/vigilcloud/vigil/internal/lb"
	"github.com/vigilcloud/vigil/internal/servers"
)

// Config says what to start and where.
type Config struct {
	Dir      string // everything lives under it
	VigilBin string // the vigil binary the nodes run
	MinIOBin string // empty: servers.FindMinIO's choice
	HTTPAddr string // the balancer's HTTP address
	RTSPAddr string // the balancer's RTSP address; empty: none
	Token    string // the operator token every node shares
	Log      *slog.Logger
}

// Info is where everything is; Start writes it to Dir/cluster.json
// (mode 0600: it holds the MinIO secret).
type Info struct {
	HTTP   string     `json:"http"`           // the balancer: http://host:port
	RTSP   string     `json:"rtsp,omitempty"` // the balancer: rtsp://host:port
	Voters []NodeInfo `json:"voters"`
	Ingest []NodeInfo `json:"ingest"`
	MinIO  struct {
		Endpoint  string   `json:"endpoint"`
		Bucket    string   `json:"bucket"`
		AccessKey string   `json:"access_key"`
		SecretKey string   `json:"secret_key"`
		Drives    []string `json:"drives"`
		Pid       int      `json:"pid"`
	} `json:"minio"`
	Redis []NodeInfo `json:"redis"` // masters first
}

// NodeInfo is one server process.
type NodeInfo struct {
	ID   string `json:"id,omitempty"`
	HTTP string `json:"http,omitempty"`
	Raft string `json:"raft,omitempty"`
	RTSP string `json:"rtsp,omitempty"`
	Addr string `json:"addr,omitempty"`
	Pid  int    `json:"pid"`
	Log  string `json:"log,omitempty"`
}

// Cluster is a running local cluster.
type Cluster struct {
	cfg    Config
	minio  *servers.ErasureMinIO
	redis  *servers.RedisCluster
	voters []*node
	ingest []*node
	bal    *lb.Balancer
	http   *http.Server
	rtsp   net.Listener
	stop   context.CancelFunc
	wg     sync.WaitGroup
	info   Info
}

const bucket = "vigil"

// Start starts everything and returns once every vigil node is ready and
// the meter has a leader and all its members. On error it stops what it
// started.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	// Every part listens on fresh free ports, which a previous run's raft
	// and Redis Cluster state would not know.
	for _, part := range []string{"minio", "redis", "m1"} {
		if _, err := os.Stat(filepath.Join(cfg.Dir, part)); err == nil {
			return nil, fmt.Errorf("%s holds a previous local cluster; remove it or choose another directory", cfg.Dir)
		}
	}
	c := &Cluster{cfg: cfg}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if err := c.startEngines(ctx); err != nil {
		return nil, err
	}
	if err := c.startNodes(ctx); err != nil {
		return nil, err
	}
	if err := c.startBalancer(); err != nil {
		return nil, err
	}
	c.fillInfo()
	b, err := json.MarshalIndent(c.info, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(cfg.Dir, "cluster.json"), append(b, '\n'), 0o600); err != nil {
		return nil, err
	}
	return c, nil
}

// startEngines starts MinIO and the Redis Cluster side by side.
func (c *Cluster) startEngines(ctx context.Context) error {
	var wg sync.WaitGroup
	var merr, rerr error
	wg.Go(func() {
		dir := filepath.Join(c.cfg.Dir, "minio")
		if merr = os.MkdirAll(dir, 0o755); merr != nil {
			return
		}
		c.minio, merr = servers.StartErasureMinIO(ctx, c.cfg.MinIOBin, dir, 4)
		if merr != nil {
			merr = fmt.Errorf("minio: %w", merr)
			return
		}
		cl, err := c.minio.Client()
		if err == nil {
			err = cl.MakeBucket(ctx, bucket, minio.MakeBucketOptions{})
			if e := minio.ToErrorResponse(err); e.Code == "BucketAlreadyOwnedByYou" {
				err = nil
			}
		}
		if err != nil {
			merr = fmt.Errorf("minio: bucket: %w", err)
		}
	})
	wg.Go(func() {
		dir := filepath.Join(c.cfg.Dir, "redis")
		if rerr = os.MkdirAll(dir, 0o755); rerr != nil {
			return
		}
		c.redis, rerr = servers.StartRedisCluster(ctx, dir, 3, 1)
		if rerr != nil {
			rerr = fmt.Errorf("redis cluster: %w", rerr)
		}
	})
	wg.Wait()
	return errors.Join(merr, rerr)
}

// startNodes starts m1, then the other voters and the ingest nodes
// joining through it, and waits until the meter has every member.
func (c *Cluster) startNodes(ctx context.Context) error {
	env := append([]string{"VIGIL_ADMIN_TOKEN=" + c.cfg.Token,
		"VIGIL_REDIS_ADDR=" + strings.Join(c.redis.Addrs(), ",")}, c.minio.Env(bucket)...)
	runCtx, stop := context.WithCancel(context.Background())
	c.stop = stop
	mk := func(id, roles string, rtsp bool) (*node, error) {
		n := &node{id: id, dir: filepath.Join(c.cfg.Dir, id), bin: c.cfg.VigilBin, env: env, log: c.cfg.Log}
		var err error
		for _, a := range []*string{&n.http, &n.raft} {
			if *a, err = servers.FreePort(); err != nil {
				return nil, err
			}
		}
		if rtsp {
			if n.rtsp, err = servers.FreePort(); err != nil {
				return nil, err
			}
		}
		n.args = []string{"serve", "--node-id", id, "--roles", roles, "--data", filepath.Join(n.dir, "data"),
			"--http-addr", n.http, "--raft-addr", n.raft, "--rtsp-addr", n.rtsp}
		if len(c.voters) > 0 {
			n.args = append(n.args, "--join", c.voters[0].http)
		}
		if err := n.start(); err != nil {
			return nil, err
		}
		c.wg.Go(func() { n.supervise(runCtx) })
		return n, nil
	}
	m1, err := mk("m1", "meter", false)
	if err != nil {
		return err
	}
	c.voters = append(c.voters, m1)
	if err := waitReady(ctx, m1); err != nil {
		return err
	}
	for _, id := range []string{"m2", "m3"} {
		n, err := mk(id, "meter", false)
		if err != nil {
			return err
		}
		c.voters = append(c.voters, n)
	}
	for _, id := range []string{"i1", "i2"} {
		n, err := mk(id, "ingest", true)
		if err != nil {
			return err
		}
		c.ingest = append(c.ingest, n)
	}
	for _, n := range append(c.voters[1:], c.ingest...) {
		if err := waitReady(ctx, n); err != nil {
			return err
		}
	}
	return c.waitMembers(ctx)
}

// startBalancer serves the balancer's HTTP and RTSP listeners.
func (c *Cluster) startBalancer() error {
	backends := make([]*lb.Backend, len(c.ingest))
	for i, n := range c.ingest {
		backends[i] = &lb.Backend{HTTP: n.http, RTSP: n.rtsp}
	}
	c.bal = lb.New(backends, c.cfg.Log)
	l, err := net.Listen("tcp", c.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("balancer: %w", err)
	}
	c.info.HTTP = "http://" + l.Addr().String()
	// The nodes' own connection caps see only the balancer's address, so
	// it caps connections per client itself.
	cl := connlimit.New(l, connlimit.Config{MaxConns: connlimit.DefaultMaxConns(),
		MaxConnsPerIP: connlimit.DefaultMaxConnsPerIP, Logger: c.cfg.Log})
	c.http = &http.Server{Handler: c.bal, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ConnState: cl.ConnState}
	c.wg.Go(func() { _ = c.http.Serve(cl) })
	if c.cfg.RTSPAddr != "" {
		c.rtsp, err = net.Listen("tcp", c.cfg.RTSPAddr)
		if err != nil {
			return fmt.Errorf("balancer: %w", err)
		}
		c.info.RTSP = "rtsp://" + c.rtsp.Addr().String()
		c.wg.Go(func() { _ = c.bal.ServeRTSP(c.rtsp) })
	}
	ctx, cancel := context.WithCancel(context.Background())
	stop := c.stop
	c.stop = func() { cancel(); stop() }
	c.wg.Go(func() { c.bal.Run(ctx, 500*time.Millisecond) })
	return nil
}

func (c *Cluster) fillInfo() {
	for _, n := range c.voters {
		c.info.Voters = append(c.info.Voters, n.nodeInfo())
	}
	for _, n := range c.ingest {
		c.info.Ingest = append(c.info.Ingest, n.nodeInfo())
	}
	m := &c.info.MinIO
	m.Endpoint, m.Bucket, m.AccessKey, m.SecretKey = "http://"+c.minio.Addr, bucket, c.minio.AccessKey, c.minio.SecretKey
	m.Drives, m.Pid = c.minio.Drives, c.minio.Pid()
	for _, p := range c.redis.Nodes {
		c.info.Redis = append(c.info.Redis, NodeInfo{Addr: p.Addr, Pid: p.Pid()})
	}
}

// Info returns where everything is (as at start; a restarted node has a
// new pid).
func (c *Cluster) Info() Info { return c.info }

// Close stops the balancer, then every vigil node (SIGTERM, SIGKILL after
// 20 s), then Redis and MinIO. It waits for every process.
func (c *Cluster) Close() error {
	var errs []error
	if c.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		errs = append(errs, c.http.Shutdown(ctx))
		cancel()
	}
	if c.rtsp != nil {
		c.rtsp.Close()
	}
	if c.stop != nil {
		c.stop()
	}
	var wg sync.WaitGroup
	for _, n := range append(c.ingest, c.voters...) {
		wg.Go(func() {
			if err := n.terminate(20 * time.Second); err != nil {
				c.cfg.Log.Warn("local cluster: node stopped uncleanly", "node", n.id, "err", err)
			}
		})
	}
	wg.Wait()
	c.wg.Wait()
	if c.redis != nil {
		c.redis.Close()
	}
	if c.minio != nil {
		c.minio.Close()
	}
	return errors.Join(errs...)
}

// waitMembers waits until m1 reports a leader, 3 voters and 2 nonvoters.
func (c *Cluster) waitMembers(ctx context.Context) error {
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for {
		st, err := c.status(ctx, c.voters[0].http)
		if err == nil {
			voters, others := 0, 0
			for _, m := range st.Members {
				if m.Suffrage == "voter" {
					voters++
				} else {
					others++
				}
			}
			if st.Leader.ID != "" && voters == len(c.voters) && others == len(c.ingest) {
				return nil
			}
			last = fmt.Sprintf("leader %q, %d voters, %d others", st.Leader.ID, voters, others)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the meter did not gather every member within 90 s: %s", last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type status struct {
	Leader struct {
		ID string `json:"id"`
	} `json:"leader"`
	Members []struct {
		ID       string `json:"id"`
		Suffrage string `json:"suffrage"`
	} `json:"members"`
}

func (c *Cluster) status(ctx context.Context, addr string) (status, error) {
	var st status
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/cluster", nil)
	req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /v1/cluster: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// waitReady waits until n answers /readyz, or fails when it keeps dying.
func waitReady(ctx context.Context, n *node) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get("http://" + n.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not ready within 90 s (log %s): %v", n.id, n.logPath(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

package validate

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

var composeDir = repoPath("deploy", "compose")

// loadCompose loads the compose file as `docker compose` would: schema
// validation, interpolation, path resolution and the consistency checks
// (networks, volumes, dependencies) all on.
func loadCompose(t *testing.T, env map[string]string) (*types.Project, error) {
	t.Helper()
	abs, err := filepath.Abs(composeDir)
	if err != nil {
		t.Fatal(err)
	}
	return loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  abs,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(abs, "docker-compose.yml")}},
		Environment: env,
	}, func(o *loader.Options) { o.SetProjectName("vigil", true); o.ResolvePaths = true })
}

var composeEnv = map[string]string{"VIGIL_ADMIN_TOKEN": "test-token", "VIGIL_S3_SECRET_KEY": "test-secret"}

func TestComposeLoads(t *testing.T) {
	p, err := loadCompose(t, composeEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"grafana", "ingest1", "ingest2", "meter1", "meter2", "meter3", "minio", "prometheus", "redis"}
	if got := slices.Sorted(func(yield func(string) bool) {
		for name := range p.Services {
			if !yield(name) {
				return
			}
		}
	}); !slices.Equal(got, want) {
		t.Fatalf("services %v, want %v", got, want)
	}
	meters, ingests := []string{"meter1", "meter2", "meter3"}, []string{"ingest1", "ingest2"}
	bootstraps := 0
	raft := map[string]string{}
	subnet := netip.MustParsePrefix(p.Networks["vigil"].Ipam.Config[0].Subnet)
	ips := map[string]string{}
	for _, name := range append(slices.Clone(meters), ingests...) {
		s := p.Services[name]
		env := func(k string) string {
			if v := s.Environment[k]; v != nil {
				return *v
			}
			return ""
		}
		var names []string
		for k := range s.Environment {
			names = append(names, k)
		}
		checkEnv(t, "compose service "+name, names)
		if env("VIGIL_ADMIN_TOKEN") != "test-token" {
			t.Errorf("%s: VIGIL_ADMIN_TOKEN not shared from the environment", name)
		}
		if env("VIGIL_NODE_ID") != name {
			t.Errorf("%s: VIGIL_NODE_ID %q", name, env("VIGIL_NODE_ID"))
		}
		// A node bound to 0.0.0.0 must advertise where the others reach it:
		// its own service name.
		if !strings.HasPrefix(env("VIGIL_RAFT_ADDR"), "0.0.0.0:") || env("VIGIL_RAFT_ADVERTISE") != name+":8300" ||
			env("VIGIL_HTTP_ADVERTISE") != name+":8080" {
			t.Errorf("%s: raft %q advertised %q, http advertised %q", name, env("VIGIL_RAFT_ADDR"), env("VIGIL_RAFT_ADVERTISE"), env("VIGIL_HTTP_ADVERTISE"))
		}
		raft[name] = env("VIGIL_RAFT_ADVERTISE")
		// raft keeps members' addresses: each node has a fixed one.
		ip, err := netip.ParseAddr(s.Networks["vigil"].Ipv4Address)
		if err != nil || !subnet.Contains(ip) {
			t.Errorf("%s: address %q not in %s", name, s.Networks["vigil"].Ipv4Address, subnet)
		}
		if other, dup := ips[ip.String()]; dup {
			t.Errorf("%s and %s share %s", name, other, ip)
		}
		ips[ip.String()] = name
		if s.HealthCheck == nil || !slices.Contains(s.HealthCheck.Test, "http://127.0.0.1:8080/readyz") {
			t.Errorf("%s: health check is not /readyz", name)
		}
		if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Type == types.VolumeTypeVolume && v.Target == env("VIGIL_DATA")
		}) {
			t.Errorf("%s: VIGIL_DATA %q is not on a named volume", name, env("VIGIL_DATA"))
		}
		join := env("VIGIL_JOIN")
		switch role := env("VIGIL_ROLES"); {
		case slices.Contains(meters, name) && role == "meter" && join == "":
			bootstraps++
		case role != "meter" && role != "ingest":
			t.Errorf("%s: VIGIL_ROLES %q", name, role)
		case join != "meter1:8080":
			t.Errorf("%s: VIGIL_JOIN %q, want the bootstrapping meter meter1:8080", name, join)
		}
		if slices.Contains(ingests, name) {
			if _, ok := s.DependsOn["meter1"]; !ok {
				t.Errorf("%s does not wait for meter1", name)
			}
			// RTSP tells publishers the server's UDP ports: the published
			// host ports must be the container's.
			udp := env("VIGIL_RTSP_UDP_ADDR")
			port := udp[strings.LastIndex(udp, ":")+1:]
			n, _ := strconv.Atoi(port)
			for _, want := range []int{n, n + 1} {
				if !slices.ContainsFunc(s.Ports, func(p types.ServicePortConfig) bool {
					return p.Protocol == "udp" && int(p.Target) == want && p.Published == strconv.Itoa(want)
				}) {
					t.Errorf("%s: UDP port %d (from VIGIL_RTSP_UDP_ADDR %s) is not published as itself", name, want, udp)
				}
			}
		}
	}
	if bootstraps != 1 {
		t.Errorf("%d meters bootstrap (no VIGIL_JOIN), want exactly 1", bootstraps)
	}
	// The files it mounts exist.
	for _, name := range []string{"prometheus", "grafana"} {
		for _, v := range p.Services[name].Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s: %v", name, v.Source, err)
			}
		}
	}
	// Prometheus scrapes every vigil node.
	prom := string(readFile(t, "deploy", "compose", "prometheus.yml"))
	for _, name := range append(meters, ingests...) {
		if !strings.Contains(prom, `"`+name+`:8080"`) {
			t.Errorf("deploy/compose/prometheus.yml does not scrape %s", name)
		}
	}
}

// The required secrets are required: without them the file does not load.
func TestComposeNeedsSecrets(t *testing.T) {
	for _, drop := range []string{"VIGIL_ADMIN_TOKEN", "VIGIL_S3_SECRET_KEY"} {
		env := map[string]string{}
		for k, v := range composeEnv {
			if k != drop {
				env[k] = v
			}
		}
		_, err := loadCompose(t, env)
		if err == nil || !strings.Contains(err.Error(), drop) {
			t.Errorf("without %s: %v, want an error naming it", drop, err)
		}
	}
}

// The loader is strict: an unknown key fails.
func TestComposeLoaderIsStrict(t *testing.T) {
	abs, _ := filepath.Abs(composeDir)
	b := readFile(t, "deploy", "compose", "docker-compose.yml")
	bad := strings.Replace(string(b), "    hostname: meter1\n", "    hostname: meter1\n    hostnme: typo\n", 1)
	if bad == string(b) {
		t.Fatal("no meter1 hostname line to break")
	}
	_, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  abs,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(abs, "docker-compose.yml"), Content: []byte(bad)}},
		Environment: composeEnv,
	}, func(o *loader.Options) { o.SetProjectName("vigil", true) })
	if err == nil || !strings.Contains(err.Error(), "hostnme") {
		t.Fatalf("a misspelt key: %v, want an error naming it", err)
	}
}

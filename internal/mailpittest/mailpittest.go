// Package mailpittest starts a real SMTP server, mailpit (built by
// scripts/test.sh), on free loopback ports for a test, and reads what it
// received through mailpit's HTTP API.
//
// Like the servers in internal/testutil it skips the test when mailpit is
// not on PATH, fails instead under VIGIL_REQUIRE_INTEGRATION=1, and skips
// under -short.
package mailpittest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/servers"
	"github.com/vigilcloud/vigil/internal/testutil"
)

// TLS modes of Options.TLS; the names match mail.Config.TLS.
const (
	TLSNone     = ""         // plain SMTP
	TLSStartTLS = "starttls" // STARTTLS, required before MAIL
	TLSImplicit = "tls"      // TLS from the first byte
)

// Options configure the server.
type Options struct {
	// Username and Password, when set, are the only credentials accepted;
	// otherwise any, or none, are.
	Username, Password string
	// TLS serves a self-signed certificate for 127.0.0.1 and localhost
	// (Server.RootCAs trusts it) with STARTTLS or implicit TLS.
	TLS string
}

// Server is a running mailpit.
type Server struct {
	Host    string         // "127.0.0.1"
	Port    int            // SMTP port
	API     string         // base URL of the HTTP API, "http://127.0.0.1:N"
	RootCAs *x509.CertPool // trusts the SMTP certificate when Options.TLS is set
	proc    *servers.Process
}

// Start starts mailpit and stops it when the test ends.
func Start(t testing.TB, opt Options) *Server {
	t.Helper()
	bin := testutil.RequireBinary(t, "mailpit")
	dir := t.TempDir()
	smtpAddr, httpAddr := testutil.FreePort(t), testutil.FreePort(t)
	args := []string{
		"--smtp", smtpAddr, "--listen", httpAddr,
		"--database", filepath.Join(dir, "mailpit.db"),
		"--disable-version-check", "--smtp-disable-rdns",
	}
	if opt.Username != "" {
		file := filepath.Join(dir, "smtp-auth")
		// mailpit reads an htpasswd file, which takes plain-text passwords.
		if err := os.WriteFile(file, []byte(opt.Username+":"+opt.Password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--smtp-auth-file", file)
	} else {
		args = append(args, "--smtp-auth-accept-any")
	}
	var roots *x509.CertPool
	switch opt.TLS {
	case TLSNone:
		// PLAIN auth over plain SMTP, which vigil allows on loopback only.
		args = append(args, "--smtp-auth-allow-insecure")
	case TLSStartTLS, TLSImplicit:
		certFile, keyFile, pool := selfSigned(t, dir)
		roots = pool
		args = append(args, "--smtp-tls-cert", certFile, "--smtp-tls-key", keyFile)
		if opt.TLS == TLSStartTLS {
			args = append(args, "--smtp-require-starttls")
		} else {
			args = append(args, "--smtp-require-tls")
		}
	default:
		t.Fatalf("mailpittest: unknown TLS mode %q", opt.TLS)
	}
	p, err := servers.Start(bin, dir, smtpAddr, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	host, port, _ := net.SplitHostPort(smtpAddr)
	s := &Server{Host: host, API: "http://" + httpAddr, RootCAs: roots, proc: p}
	s.Port, _ = strconv.Atoi(port)
	if err := s.waitReady(30 * time.Second); err != nil {
		t.Fatalf("mailpit: %v\n%s", err, p.Logs())
	}
	return s
}

// waitReady waits until the API answers /readyz and SMTP accepts.
func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(s.API + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			err = fmt.Errorf("/readyz: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return servers.WaitTCP(context.Background(), s.proc.Addr, time.Until(deadline))
}

// Stop kills mailpit; a Send after it fails as against a dead server.
func (s *Server) Stop() { s.proc.Kill() }

// Address is one mailbox of a message.
type Address struct {
	Name    string
	Address string
}

// Summary is a message as the list shows it.
type Summary struct {
	ID      string
	From    Address
	To      []Address
	Subject string
}

// Message is one received message with its plain-text body.
type Message struct {
	Summary
	Text string
}

// Messages lists what mailpit received, newest first.
func (s *Server) Messages(t testing.TB) []Summary {
	t.Helper()
	var list struct {
		Messages []Summary `json:"messages"`
	}
	s.get(t, "/api/v1/messages", &list)
	return list.Messages
}

// Message reads one received message.
func (s *Server) Message(t testing.TB, id string) Message {
	t.Helper()
	var m Message
	s.get(t, "/api/v1/message/"+url.PathEscape(id), &m)
	return m
}

// WaitMessage returns the newest message to addr, waiting up to 10 s for
// mailpit to store it.
func (s *Server) WaitMessage(t testing.TB, addr string) Message {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, m := range s.Messages(t) {
			for _, to := range m.To {
				if strings.EqualFold(to.Address, addr) {
					return s.Message(t, m.ID)
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailpit received no message to %s within 10s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) get(t testing.TB, path string, v any) {
	t.Helper()
	resp, err := http.Get(s.API + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("mailpit GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("mailpit GET %s: %v", path, err)
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and localhost
// into dir and returns its files and a pool that trusts it.
func selfSigned(t testing.TB, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mailpittest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "smtp.crt"), filepath.Join(dir, "smtp.key")
	for file, block := range map[string]*pem.Block{
		certFile: {Type: "CERTIFICATE", Bytes: der},
		keyFile:  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

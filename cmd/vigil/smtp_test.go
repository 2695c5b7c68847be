package main

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func parseSMTP(t *testing.T, args ...string) (*smtpFlags, error) {
	t.Helper()
	var f smtpFlags
	var out bytes.Buffer
	fs := newFlagSet("serve", "serve", "", &out, &out)
	f.register(fs)
	return &f, parseFlags(fs, args)
}

// The password comes from VIGIL_SMTP_PASSWORD like any flag's twin, and
// neither --help nor an error shows it.
func TestSMTPFlags(t *testing.T) {
	t.Setenv("VIGIL_SMTP_PASSWORD", "hunter2-secret")
	t.Setenv("VIGIL_SMTP_HOST", "smtp.example.com")
	f, err := parseSMTP(t, "--smtp-username", "vigil", "--smtp-from", "Vigil <noreply@example.com>")
	if err != nil {
		t.Fatal(err)
	}
	if f.Password != "hunter2-secret" || f.Host != "smtp.example.com" || f.Port != 587 || f.TLS != "starttls" || f.Timeout != 10*time.Second {
		t.Fatalf("parsed %+v", f)
	}
	s, err := f.sender()
	if err != nil || !s.Enabled() {
		t.Fatalf("sender() = %v, %v", s, err)
	}

	f.TLS = "ssl"
	if _, err := f.sender(); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("a bad --smtp-tls: %v", err)
	}

	var help bytes.Buffer
	fs := newFlagSet("serve", "serve", "", &help, &help)
	(&smtpFlags{}).register(fs)
	if err := parseFlags(fs, []string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	for _, want := range []string{"-smtp-host", "-smtp-port", "-smtp-password", "VIGIL_SMTP_PASSWORD", "-public-url", "(default 587)"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("--help lacks %q:\n%s", want, help.String())
		}
	}
	if strings.Contains(help.String(), "hunter2") {
		t.Fatalf("--help shows the password:\n%s", help.String())
	}
}

func TestSMTPOffWithoutHost(t *testing.T) {
	f, err := parseSMTP(t)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := f.sender(); err != nil || s.Enabled() {
		t.Fatalf("no --smtp-host: sender() = %v, %v; want a disabled sender", s, err)
	}
}

func TestPublicURL(t *testing.T) {
	for _, tc := range []struct{ flag, httpAddr, want string }{
		{"", "127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"", ":8080", "http://localhost:8080"},
		{"", "0.0.0.0:8080", "http://localhost:8080"},
		{"", "[::]:8080", "http://localhost:8080"},
		{"", "[::1]:8080", "http://[::1]:8080"},
		{"https://vigil.example.com/", "127.0.0.1:8080", "https://vigil.example.com"},
		{"https://example.com/vigil", "", "https://example.com/vigil"},
	} {
		f := smtpFlags{PublicURL: tc.flag}
		if got, err := f.publicURL(tc.httpAddr); err != nil || got != tc.want {
			t.Errorf("publicURL(%q) with --public-url %q = %q, %v; want %q", tc.httpAddr, tc.flag, got, err, tc.want)
		}
	}
	for _, bad := range []string{"vigil.example.com", "ftp://x", "https://", "https://x/?a=b", "https://u:p@x"} {
		f := smtpFlags{PublicURL: bad}
		if got, err := f.publicURL("127.0.0.1:8080"); err == nil {
			t.Errorf("--public-url %q accepted as %q", bad, got)
		}
	}
}

package mail

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/mailpittest"
)

// The invitation goes through a real SMTP server in each TLS mode, with and
// without auth; the received mail's link reaches the accept route with the
// token.
func TestInvitationThroughMailpit(t *testing.T) {
	for _, tc := range []struct {
		name, tls, user, pass string
	}{
		{"none-auth", TLSNone, "vigil", "s3cret-pw"},
		{"none-noauth", TLSNone, "", ""},
		{"starttls-auth", TLSStartTLS, "vigil", "s3cret-pw"},
		{"tls-auth", TLSImplicit, "vigil", "s3cret-pw"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srvTLS := tc.tls
			if srvTLS == TLSNone {
				srvTLS = mailpittest.TLSNone
			}
			mp := mailpittest.Start(t, mailpittest.Options{Username: tc.user, Password: tc.pass, TLS: srvTLS})
			s, err := New(Config{Host: mp.Host, Port: mp.Port, Username: tc.user, Password: tc.pass,
				From: "Vigil <noreply@vigil.test>", TLS: tc.tls, Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if tc.tls != TLSNone {
				// The system roots do not know mailpit's certificate: the
				// certificate is checked, not just any TLS accepted.
				m := Message{To: "eve@example.com", Subject: "s", Text: "t"}
				if err := s.Send(context.Background(), m); err == nil || !strings.Contains(err.Error(), "certificate") {
					t.Fatalf("Send to an untrusted certificate = %v", err)
				}
				s.tls.RootCAs = mp.RootCAs
			}

			// The accept route as the API declares it, so that following
			// the link proves it names the route and the token.
			var accepted string
			mux := http.NewServeMux()
			mux.HandleFunc("POST /v1/invitations/{token}/accept", func(w http.ResponseWriter, r *http.Request) {
				accepted = r.PathValue("token")
			})
			api := httptest.NewServer(mux)
			defer api.Close()

			const token = "inv_Zm9v-YmFy_42"
			expires := time.Date(2030, 1, 2, 15, 4, 0, 0, time.UTC)
			m := Invitation(api.URL+"/", token, expires)
			m.To = "Alice <alice@example.com>"
			if err := s.Send(context.Background(), m); err != nil {
				t.Fatal(err)
			}

			got := mp.WaitMessage(t, "alice@example.com")
			if got.Subject != "Your vigil invitation" || got.From.Address != "noreply@vigil.test" || got.From.Name != "Vigil" {
				t.Fatalf("received subject %q from %+v", got.Subject, got.From)
			}
			if !strings.Contains(got.Text, "2030-01-02 15:04 UTC") {
				t.Fatalf("the mail does not say when the link expires:\n%s", got.Text)
			}
			link := regexp.MustCompile(`(?m)^https?://\S+`).FindString(got.Text)
			if link != api.URL+"/v1/invitations/"+token+"/accept" {
				t.Fatalf("link in the mail = %q\n%s", link, got.Text)
			}
			resp, err := http.Post(link, "application/json", strings.NewReader(`{"password":"x"}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || accepted != token {
				t.Fatalf("following the link: %s, token %q", resp.Status, accepted)
			}
		})
	}
}

// A wrong password is refused by the server and nothing is delivered; the
// error names neither the password nor the body's token.
func TestWrongPasswordRefused(t *testing.T) {
	mp := mailpittest.Start(t, mailpittest.Options{Username: "vigil", Password: "right-pw"})
	s, err := New(Config{Host: mp.Host, Port: mp.Port, Username: "vigil", Password: "wrong-pw",
		From: "noreply@vigil.test", TLS: TLSNone, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	m := Invitation("http://vigil.test", "secret-token", time.Now())
	m.To = "bob@example.org"
	err = s.Send(context.Background(), m)
	if err == nil {
		t.Fatal("sent with a wrong password")
	}
	for _, secret := range []string{"wrong-pw", "secret-token", "bob@"} {
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("error %q contains %q", err, secret)
		}
	}
	if !strings.Contains(err.Error(), "example.org") {
		t.Fatalf("error %q does not name the recipient's domain", err)
	}
	if n := len(mp.Messages(t)); n != 0 {
		t.Fatalf("mailpit received %d messages", n)
	}
}

// A stopped mailpit refuses the connection: Send fails at once.
func TestStoppedServer(t *testing.T) {
	mp := mailpittest.Start(t, mailpittest.Options{})
	s, err := New(Config{Host: mp.Host, Port: mp.Port, From: "noreply@vigil.test", TLS: TLSNone, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	mp.Stop()
	start := time.Now()
	if err := s.Send(context.Background(), Message{To: "a@example.com", Subject: "s", Text: "t"}); err == nil {
		t.Fatal("sent to a stopped server")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Send took %s", d)
	}
}

// A server that accepts and never speaks (or stalls mid-exchange) fails
// the Send within its timeout, and an earlier context deadline wins.
func TestDeadServerTimesOut(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tls      string
		greet    bool // say 220 and then stall
		timeout  time.Duration
		ctxAfter time.Duration
	}{
		{"silent", TLSNone, false, 500 * time.Millisecond, 0},
		{"stalls-after-greeting", TLSStartTLS, true, 500 * time.Millisecond, 0},
		{"silent-tls", TLSImplicit, false, 500 * time.Millisecond, 0},
		{"context-first", TLSNone, false, time.Minute, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					if tc.greet {
						_, _ = c.Write([]byte("220 stalls\r\n"))
					}
					defer c.Close()
				}
			}()
			s, err := New(Config{Host: "127.0.0.1", Port: l.Addr().(*net.TCPAddr).Port, Username: "u", Password: "pw",
				From: "noreply@vigil.test", TLS: tc.tls, Timeout: tc.timeout})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			limit := tc.timeout
			if tc.ctxAfter > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctxAfter)
				defer cancel()
				limit = tc.ctxAfter
			}
			start := time.Now()
			err = s.Send(ctx, Message{To: "a@example.com", Subject: "s", Text: "t"})
			d := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Send = %v, want a deadline error", err)
			}
			if d < limit-50*time.Millisecond || d > limit+time.Second {
				t.Fatalf("Send returned after %s, want about %s", d, limit)
			}
		})
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	ok := Config{Host: "smtp.example.com", From: "noreply@example.com"}
	for name, mod := range map[string]func(*Config){
		"tls mode":             func(c *Config) { c.TLS = "ssl" },
		"port":                 func(c *Config) { c.Port = 70000 },
		"negative port":        func(c *Config) { c.Port = -1 },
		"host with port":       func(c *Config) { c.Host = "smtp.example.com:587" },
		"no from":              func(c *Config) { c.From = "" },
		"bad from":             func(c *Config) { c.From = "not an address" },
		"password without":     func(c *Config) { c.Password = "pw" },
		"negative timeout":     func(c *Config) { c.Timeout = -time.Second },
		"clear-text auth away": func(c *Config) { c.TLS, c.Username, c.Password = TLSNone, "u", "pw" },
	} {
		cfg := ok
		mod(&cfg)
		if s, err := New(cfg); err == nil || s != nil {
			t.Errorf("%s: New(%+v) = %v, %v; want an error", name, cfg, s, err)
		} else if cfg.Password != "" && strings.Contains(err.Error(), cfg.Password) {
			t.Errorf("%s: error %q shows the password", name, err)
		}
	}
	s, err := New(ok)
	if err != nil || !s.Enabled() || s.cfg.Port != 587 || s.cfg.TLS != TLSStartTLS || s.cfg.Timeout != DefaultTimeout {
		t.Fatalf("New(%+v) = %+v, %v; want starttls on 587 with the default timeout", ok, s, err)
	}
	for tls, port := range map[string]int{TLSImplicit: 465, TLSNone: 25} {
		cfg := ok
		cfg.TLS = tls
		if s, err := New(cfg); err != nil || s.cfg.Port != port {
			t.Fatalf("TLS %s: New = %+v, %v; want port %d", tls, s, err, port)
		}
	}
	loop := Config{Host: "127.0.0.1", From: "a@b.c", TLS: TLSNone, Username: "u", Password: "p"}
	if _, err := New(loop); err != nil {
		t.Fatalf("clear-text auth on loopback: %v", err)
	}
}

func TestNoSMTP(t *testing.T) {
	s, err := New(Config{From: "noreply@example.com"})
	if err != nil || s != nil {
		t.Fatalf("New without a host = %v, %v; want nil, nil", s, err)
	}
	if s.Enabled() {
		t.Fatal("a nil Sender is enabled")
	}
	if err := s.Send(context.Background(), Message{To: "a@example.com"}); !errors.Is(err, ErrDisabled) {
		t.Fatalf("Send on a nil Sender = %v", err)
	}
}

func TestInvitationLink(t *testing.T) {
	for base, want := range map[string]string{
		"https://vigil.example.com":   "https://vigil.example.com/v1/invitations/tok/accept",
		"https://vigil.example.com/":  "https://vigil.example.com/v1/invitations/tok/accept",
		"https://example.com/vigil/":  "https://example.com/vigil/v1/invitations/tok/accept",
		"http://127.0.0.1:8080":       "http://127.0.0.1:8080/v1/invitations/tok/accept",
		"http://127.0.0.1:8080///":    "http://127.0.0.1:8080/v1/invitations/tok/accept",
		"https://vigil.example.com/a": "https://vigil.example.com/a/v1/invitations/tok/accept",
	} {
		if got := InvitationLink(base, "tok"); got != want {
			t.Errorf("InvitationLink(%q) = %q, want %q", base, got, want)
		}
	}
	if got := InvitationLink("http://h", "a/b c"); got != "http://h/v1/invitations/a%2Fb%20c/accept" {
		t.Errorf("a token with / and space: %q", got)
	}
	m := Invitation("http://h", "tok", time.Date(2030, 1, 2, 16, 4, 0, 0, time.FixedZone("CET", 3600)))
	if m.To != "" || !strings.Contains(m.Text, "\nhttp://h/v1/invitations/tok/accept\n") || !strings.Contains(m.Text, "2030-01-02 15:04 UTC") {
		t.Fatalf("Invitation = %+v", m)
	}
}

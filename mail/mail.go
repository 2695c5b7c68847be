// Package mail sends vigil's e-mail, the user invitations, over SMTP with
// github.com/wneessen/go-mail.
//
// A nil *Sender is the "no SMTP configured" sender: Enabled reports false
// and the caller hands the invitation link to the admin instead. Nothing
// here logs: errors name the recipient's domain at most, never the password
// or a message body (an invitation body carries its token).
package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	netmail "net/mail"
	"os"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// TLS modes of Config.TLS.
const (
	TLSStartTLS = "starttls" // plain connection upgraded with STARTTLS, which must succeed
	TLSImplicit = "tls"      // TLS from the first byte (SMTPS, usually port 465)
	TLSNone     = "none"     // no encryption: for a relay on loopback only when authenticating
)

// DefaultTimeout bounds one Send when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// ErrDisabled is returned by Send on a nil Sender (no SMTP configured).
var ErrDisabled = errors.New("mail: no SMTP server configured")

// Config is how to reach the SMTP server.
type Config struct {
	Host     string // empty: no SMTP (New returns a nil Sender)
	Port     int    // 0: 587 for starttls, 465 for tls, 25 for none
	Username string // empty: no SMTP AUTH
	Password string
	From     string        // envelope and header sender, "Name <addr>" or "addr"
	TLS      string        // TLSStartTLS (default when empty), TLSImplicit or TLSNone
	Timeout  time.Duration // bounds a whole Send; 0: DefaultTimeout
}

// Sender sends mail through one SMTP server, one connection per message:
// invitations are rare, so there is no pool to keep alive.
type Sender struct {
	cfg  Config
	from string      // the parsed From, as an address header value
	tls  *tls.Config // tests swap in their own root CAs
}

// Message is one plain-text mail.
type Message struct {
	To      string
	Subject string
	Text    string
}

// New checks cfg and returns its Sender; it returns (nil, nil) when
// cfg.Host is empty, the "no SMTP" case.
func New(cfg Config) (*Sender, error) {
	if cfg.Host == "" {
		return nil, nil
	}
	if _, _, err := net.SplitHostPort(cfg.Host); err == nil {
		return nil, fmt.Errorf("mail: host %q has a port: give it as the port", cfg.Host)
	}
	if cfg.TLS == "" {
		cfg.TLS = TLSStartTLS
	}
	if cfg.Port == 0 {
		cfg.Port = map[string]int{TLSStartTLS: 587, TLSImplicit: 465, TLSNone: 25}[cfg.TLS]
	}
	switch {
	case cfg.TLS != TLSStartTLS && cfg.TLS != TLSImplicit && cfg.TLS != TLSNone:
		return nil, fmt.Errorf("mail: TLS mode %q is not %s, %s or %s", cfg.TLS, TLSStartTLS, TLSImplicit, TLSNone)
	case cfg.Port < 1 || cfg.Port > 65535:
		return nil, fmt.Errorf("mail: port %d is out of range", cfg.Port)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("mail: timeout %s is negative", cfg.Timeout)
	case cfg.Password != "" && cfg.Username == "":
		return nil, errors.New("mail: a password needs a username")
	case cfg.Username != "" && cfg.TLS == TLSNone && !isLoopback(cfg.Host):
		// go-mail would refuse at every Send; say so at start instead.
		return nil, fmt.Errorf("mail: authenticating to %s without TLS would send the password in clear", cfg.Host)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	from, err := netmail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("mail: sender address %q: %w", cfg.From, err)
	}
	return &Sender{
		cfg:  cfg,
		from: from.String(),
		tls:  &tls.Config{ServerName: cfg.Host, MinVersion: tls.VersionTLS12},
	}, nil
}

// isLoopback is go-mail's own test for where PLAIN auth may go unencrypted.
func isLoopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// Enabled reports whether mail can be sent; false for a nil Sender.
func (s *Sender) Enabled() bool { return s != nil }

// Send delivers m within the configured timeout (or ctx's deadline, if
// earlier): every read and write of the SMTP exchange shares that deadline.
func (s *Sender) Send(ctx context.Context, m Message) error {
	if !s.Enabled() {
		return ErrDisabled
	}
	to, err := netmail.ParseAddress(m.To)
	if err != nil {
		return fmt.Errorf("mail: recipient: %w", err)
	}
	domain := to.Address[strings.LastIndexByte(to.Address, '@')+1:]
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()

	msg := gomail.NewMsg()
	if err := msg.From(s.from); err != nil {
		return fmt.Errorf("mail: from: %w", err)
	}
	if err := msg.To(to.String()); err != nil {
		return fmt.Errorf("mail to %s: %w", domain, err)
	}
	msg.Subject(m.Subject)
	msg.SetDate()
	msg.SetMessageID()
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)

	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	if err := c.DialAndSendWithContext(ctx, msg); err != nil {
		// A read cut by the deadline can return before ctx notices.
		if cerr := ctx.Err(); cerr != nil {
			err = fmt.Errorf("%w: %w", cerr, err)
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
		}
		return fmt.Errorf("mail to %s via %s:%d: %w", domain, s.cfg.Host, s.cfg.Port, err)
	}
	return nil
}

// client returns a go-mail client whose connection never outlives ctx:
// go-mail's own timeout restarts at every step of the exchange.
func (s *Sender) client(ctx context.Context) (*gomail.Client, error) {
	opts := []gomail.Option{
		gomail.WithPort(s.cfg.Port),
		gomail.WithTimeout(s.cfg.Timeout),
		gomail.WithTLSConfig(s.tls),
		gomail.WithDialContextFunc(func(dctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			raw, err := d.DialContext(dctx, network, addr)
			if err != nil {
				return nil, err
			}
			var conn net.Conn = boundedConn{Conn: raw, ctx: ctx}
			context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
			if s.cfg.TLS == TLSImplicit {
				tc := tls.Client(conn, s.tls)
				if err := tc.HandshakeContext(dctx); err != nil {
					raw.Close()
					return nil, err
				}
				conn = tc
			}
			return conn, nil
		}),
	}
	switch s.cfg.TLS {
	case TLSStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case TLSImplicit:
		// The dialer above does the handshake; WithSSL only stops go-mail
		// from trying STARTTLS on top of it.
		opts = append(opts, gomail.WithSSL())
	case TLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if s.cfg.Username != "" {
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthPlain),
			gomail.WithUsername(s.cfg.Username), gomail.WithPassword(s.cfg.Password))
	}
	c, err := gomail.NewClient(s.cfg.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("mail: %w", err)
	}
	return c, nil
}

// boundedConn keeps every deadline go-mail sets at or before ctx's, and in
// the past once ctx is done.
type boundedConn struct {
	net.Conn
	ctx context.Context
}

func (c boundedConn) clamp(t time.Time) time.Time {
	if c.ctx.Err() != nil {
		return time.Unix(1, 0)
	}
	if d, ok := c.ctx.Deadline(); ok && (t.IsZero() || d.Before(t)) {
		return d
	}
	return t
}

func (c boundedConn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(c.clamp(t)) }
func (c boundedConn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(c.clamp(t)) }
func (c boundedConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.clamp(t)) }

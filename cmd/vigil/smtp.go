package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/access"
	"github.com/vigilcloud/vigil/mail"
)

// smtpFlags say how invitation mail goes out (--smtp-*), and --public-url
// the base of the links it carries. serve registers them with
// register(fs) and builds the sender with sender(). Without --smtp-host no
// mail is sent and the admin who created a user gets the link instead.
type smtpFlags struct {
	Host      string
	Port      int
	Username  string
	Password  string
	From      string
	TLS       string
	Timeout   time.Duration
	PublicURL string
}

func (f *smtpFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.Host, "smtp-host", "", "SMTP server that sends invitation mail (off when empty: the link is returned to the admin who created the user)")
	fs.IntVar(&f.Port, "smtp-port", 587, "SMTP server port")
	fs.StringVar(&f.Username, "smtp-username", "", "SMTP AUTH user (no AUTH when empty)")
	// No default is shown, and the value never is; the environment keeps
	// it out of process listings, which show flags.
	fs.StringVar(&f.Password, "smtp-password", "", "SMTP AUTH password; prefer VIGIL_SMTP_PASSWORD, since a flag shows in process listings")
	fs.StringVar(&f.From, "smtp-from", "", "sender address of vigil's mail, \"Name <addr>\" or \"addr\" (required with --smtp-host)")
	fs.StringVar(&f.TLS, "smtp-tls", mail.TLSStartTLS, "starttls (required upgrade), tls (TLS from the first byte, usually port 465) or none (authentication then only to a loopback server)")
	fs.DurationVar(&f.Timeout, "smtp-timeout", mail.DefaultTimeout, "one mail's whole SMTP exchange must end within this")
	fs.StringVar(&f.PublicURL, "public-url", "", "base URL the links in mail and API answers carry, as users reach this node (default http://<--http-addr>)")
}

// sender returns the configured SMTP sender, or nil when --smtp-host is
// empty. Its errors never show the password.
func (f *smtpFlags) sender() (*mail.Sender, error) {
	s, err := mail.New(mail.Config{
		Host: f.Host, Port: f.Port, Username: f.Username, Password: f.Password,
		From: f.From, TLS: f.TLS, Timeout: f.Timeout,
	})
	if err != nil {
		return nil, fmt.Errorf("--smtp-*: %w", err)
	}
	return s, nil
}

// publicURL returns --public-url, or http://httpAddr when it is unset;
// httpAddr is the address HTTP listens on (the listener's, so that port 0
// is resolved). An unspecified listen host (":8080", "0.0.0.0:8080")
// becomes localhost: set --public-url for links that leave the host.
func (f *smtpFlags) publicURL(httpAddr string) (string, error) {
	if f.PublicURL == "" {
		host, port, err := net.SplitHostPort(httpAddr)
		if err != nil {
			return "", fmt.Errorf("--http-addr %q: %w", httpAddr, err)
		}
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			host = "localhost"
		}
		return "http://" + net.JoinHostPort(host, port), nil
	}
	u, err := url.Parse(f.PublicURL)
	switch {
	case err != nil:
		return "", fmt.Errorf("--public-url: %w", err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return "", fmt.Errorf("--public-url %q: want http(s)://host[:port][/path]", f.PublicURL)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return "", errors.New("--public-url: no user, query or fragment: links are appended to it")
	}
	return strings.TrimRight(f.PublicURL, "/"), nil
}

// accessMail returns the invitation mailer (nil without SMTP) and the base
// of invitation links for a node listening on httpAddr.
func (f *smtpFlags) accessMail(httpAddr string) (access.Mailer, string, error) {
	base, err := f.publicURL(httpAddr)
	if err != nil {
		return nil, "", err
	}
	s, err := f.sender()
	if err != nil || !s.Enabled() {
		return nil, base, err
	}
	return mail.Invitations{Sender: s, BaseURL: base}, base, nil
}

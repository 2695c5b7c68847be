package mail

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// InvitationLink is the activation link of an invitation token: the API
// path POST /v1/invitations/{token}/accept under baseURL (--public-url).
// vigil has no web pages, so the link a person receives is this same URL;
// a client (or a UI in front of vigil) posts {"password": ...} to it.
// The admin who created a user gets this link when no SMTP is configured.
func InvitationLink(baseURL, token string) string {
	return strings.TrimRight(baseURL, "/") + "/v1/invitations/" + url.PathEscape(token) + "/accept"
}

// Invitation is the mail that carries an invitation's link; the caller
// sets To. The link stands alone on its line so that mail clients make it
// clickable and tests can find it.
func Invitation(baseURL, token string, expires time.Time) Message {
	return Message{
		Subject: "Your vigil invitation",
		Text: fmt.Sprintf(`You have been invited to vigil.

Activate your account by setting a password at this link:

%s

Send it a POST request with {"password": "..."} as its JSON body. The link
works once, until %s.

If you did not expect this invitation, ignore this mail.
`, InvitationLink(baseURL, token), expires.UTC().Format("2006-01-02 15:04 MST")),
	}
}

// Invitations sends invitation mail through Sender with links under
// BaseURL (it is access.Mailer).
type Invitations struct {
	Sender  *Sender
	BaseURL string
}

// SendInvitation mails the invitation of token to to.
func (i Invitations) SendInvitation(ctx context.Context, to, token string, expires time.Time) error {
	msg := Invitation(i.BaseURL, token, expires)
	msg.To = to
	return i.Sender.Send(ctx, msg)
}

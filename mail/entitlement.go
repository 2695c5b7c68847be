package mail

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// EntitlementReceived is the notice to a receiving account's admins that
// an entitlement arrived: created by the operator, or split (from parent)
// by the account above. The activation ID is not a secret: it names the
// licence, and only the owner's admins in scope can act on it.
func EntitlementReceived(id, product string, quantity, termMonths int, parent string) Message {
	from := "The operator created it for your account."
	if parent != "" {
		from = "It was split to your account from entitlement " + parent + "."
	}
	return Message{
		Subject: fmt.Sprintf("vigil: entitlement %s received (%d x %s)", id, quantity, product),
		Text: fmt.Sprintf(`Your account received an entitlement.

Activation ID: %s
Product: %s
Quantity: %d
Term: %d months from activation

%s
Split it on to the accounts below yours with POST /v1/entitlements/%s/split,
or, as an end customer, activate it onto your streams with
POST /v1/entitlements/%s/activate.
`, id, product, quantity, termMonths, from, id, id),
	}
}

// EntitlementActivated is the notice to the owner's admins that units of
// an entitlement were activated onto streams.
func EntitlementActivated(id, product string, streams []string, until time.Time) Message {
	return Message{
		Subject: fmt.Sprintf("vigil: entitlement %s activated on %d stream(s)", id, len(streams)),
		Text: fmt.Sprintf(`Units of entitlement %s (%s) were activated.

Streams: %s
Covered until: %s
`, id, product, strings.Join(streams, ", "), until.UTC().Format("2006-01-02 15:04 MST")),
	}
}

// SendNotice mails m to to through the invitations' Sender (the same SMTP
// path and limits as invitations).
func (i Invitations) SendNotice(ctx context.Context, to string, m Message) error {
	m.To = to
	return i.Sender.Send(ctx, m)
}

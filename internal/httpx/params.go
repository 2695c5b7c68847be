package httpx

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// maxTimeMS bounds accepted times (year 9999) so that arithmetic on them
// cannot overflow.
const maxTimeMS = 253402300799999

// ParseTime parses a contract time, Unix milliseconds or RFC 3339, into
// Unix ms.
func ParseTime(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("time is required (Unix ms or RFC 3339)")
	}
	if Digits(s) {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms > maxTimeMS {
			return 0, fmt.Errorf("time %q out of range", s)
		}
		return ms, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("time %q is neither Unix ms nor RFC 3339", s)
	}
	if ms := t.UnixMilli(); ms >= 0 && ms <= maxTimeMS {
		return ms, nil
	}
	return 0, fmt.Errorf("time %q out of range", s)
}

// Digits reports whether s is a non-empty run of ASCII digits.
func Digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

package storage

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The key layout puts account, camera and stream first and time after, so
// that deleting a camera or an account is one prefix, and retention finds
// expired video by listing a stream's day and hour prefixes:
//
//	{account}/{camera}/{stream}/seg/{YYYY}/{MM}/{DD}/{HH}/{start_ms}
//	{account}/{camera}/{stream}/idx/{YYYY}/{MM}/{DD}/{HH}.zst
//
// Segment keys carry no extension: the start alone identifies a segment, so
// a conditional write on it stores exactly one segment per start whatever
// its content type.

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidID reports whether id is a valid account, bridge, camera or stream id.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// StreamRef locates a stream in the key space.
type StreamRef struct {
	Account string
	Camera  string
	Stream  string
}

// Validate checks every part of the reference.
func (r StreamRef) Validate() error {
	for _, id := range []string{r.Account, r.Camera, r.Stream} {
		if !ValidID(id) {
			return fmt.Errorf("storage: invalid id %q", id)
		}
	}
	return nil
}

// AccountPrefix holds everything of an account.
func AccountPrefix(account string) string { return account + "/" }

// CameraPrefix holds everything of a camera.
func CameraPrefix(account, camera string) string { return account + "/" + camera + "/" }

// StreamPrefix holds everything of a stream.
func (r StreamRef) StreamPrefix() string { return r.Account + "/" + r.Camera + "/" + r.Stream + "/" }

// SegmentPrefix holds all segments of the stream.
func (r StreamRef) SegmentPrefix() string { return r.StreamPrefix() + "seg/" }

// ManifestPrefix holds all hour manifests of the stream.
func (r StreamRef) ManifestPrefix() string { return r.StreamPrefix() + "idx/" }

// HourPrefix holds the segments that start in the hour containing t.
func (r StreamRef) HourPrefix(t time.Time) string {
	return r.SegmentPrefix() + t.UTC().Format("2006/01/02/15") + "/"
}

// DayPrefix holds the segments that start in the UTC day containing t.
func (r StreamRef) DayPrefix(t time.Time) string {
	return r.SegmentPrefix() + t.UTC().Format("2006/01/02") + "/"
}

// SegmentKey is the key of the segment starting at startMS (Unix ms).
func (r StreamRef) SegmentKey(startMS int64) string {
	return r.HourPrefix(time.UnixMilli(startMS)) + strconv.FormatInt(startMS, 10)
}

// ManifestKey is the key of the manifest of the hour containing t.
func (r StreamRef) ManifestKey(t time.Time) string {
	return r.ManifestPrefix() + t.UTC().Format("2006/01/02/15") + ".zst"
}

// HourStart truncates a Unix-ms time to its UTC hour.
func HourStart(ms int64) int64 { return ms - ms%int64(time.Hour/time.Millisecond) }

// ParseSegmentKey returns the stream and start of a segment key.
func ParseSegmentKey(key string) (StreamRef, int64, error) {
	parts := strings.Split(key, "/")
	// account camera stream seg YYYY MM DD HH start
	if len(parts) != 9 || parts[3] != "seg" {
		return StreamRef{}, 0, fmt.Errorf("storage: not a segment key: %q", key)
	}
	ref := StreamRef{Account: parts[0], Camera: parts[1], Stream: parts[2]}
	if err := ref.Validate(); err != nil {
		return StreamRef{}, 0, err
	}
	start, err := strconv.ParseInt(parts[8], 10, 64)
	if err != nil || start < 0 {
		return StreamRef{}, 0, fmt.Errorf("storage: bad segment start in %q", key)
	}
	if ref.SegmentKey(start) != key {
		return StreamRef{}, 0, fmt.Errorf("storage: segment key %q is not in its hour", key)
	}
	return ref, start, nil
}

// ParseManifestKey returns the stream and hour start (Unix ms) of a manifest key.
func ParseManifestKey(key string) (StreamRef, int64, error) {
	parts := strings.Split(key, "/")
	// account camera stream idx YYYY MM DD HH.zst
	if len(parts) != 8 || parts[3] != "idx" || !strings.HasSuffix(parts[7], ".zst") {
		return StreamRef{}, 0, fmt.Errorf("storage: not a manifest key: %q", key)
	}
	ref := StreamRef{Account: parts[0], Camera: parts[1], Stream: parts[2]}
	if err := ref.Validate(); err != nil {
		return StreamRef{}, 0, err
	}
	t, err := time.Parse("2006/01/02/15", strings.Join(parts[4:7], "/")+"/"+strings.TrimSuffix(parts[7], ".zst"))
	if err != nil {
		return StreamRef{}, 0, fmt.Errorf("storage: bad manifest hour in %q", key)
	}
	// time.Parse takes a one-digit hour; only the canonical key is valid.
	if ref.ManifestKey(t) != key {
		return StreamRef{}, 0, fmt.Errorf("storage: manifest key %q is not canonical", key)
	}
	return ref, t.UnixMilli(), nil
}

// Package retention frees storage: pure functions decide what has expired
// (in the manner of Prometheus TSDB's BeyondTimeRetention: they say what
// may go and why, the caller deletes), a sweeper deletes expired video of
// every stream in batches, and a purge worker frees everything a deleted
// camera held.
package retention

import (
	"time"

	"github.com/vigilcloud/vigil/index"
)

// Reasons label what was deleted and why (the metrics' reason label).
const (
	// ReasonRetention: the segment ended more than the stream's retention
	// (plus the safety margin) ago.
	ReasonRetention = "retention"
	// ReasonPurge: the camera was deleted.
	ReasonPurge = "camera_deleted"
	// ReasonOrphan: a segment object whose metadata cannot be read, in an
	// hour that is past retention even for a segment as long as an hour.
	ReasonOrphan = "orphan"
)

const day = 24 * time.Hour

// Policy is a stream's retention as the sweeper applies it.
type Policy struct {
	// Days is the stream's retention in force now (its current plan); a
	// changed plan applies to everything already stored.
	Days int
	// Margin is added to every expiry so that a node whose clock runs
	// ahead (by less than Margin) never deletes a segment early.
	Margin time.Duration
}

// Keep is how long after its end a segment is kept.
func (p Policy) Keep() time.Duration { return time.Duration(p.Days)*day + p.Margin }

// ExpiresAt is the instant seg may be deleted: its end plus the retention
// plus the margin.
func (p Policy) ExpiresAt(seg index.Segment) time.Time {
	return time.UnixMilli(seg.End()).UTC().Add(p.Keep())
}

// Expired reports whether seg may be deleted at now. A policy without
// retention (Days < 1) never expires anything: a missing plan must not
// delete video.
func (p Policy) Expired(seg index.Segment, now time.Time) bool {
	if p.Days < 1 {
		return false
	}
	return !now.Before(p.ExpiresAt(seg))
}

// Cutoff is the end time (Unix ms) at or before which segments have
// expired at now: a segment expires when End() <= Cutoff.
func (p Policy) Cutoff(now time.Time) int64 { return now.Add(-p.Keep()).UnixMilli() }

// HourExpired reports whether every segment that starts in the hour
// starting at hour (Unix ms) has expired at now, whatever it holds: the
// longest segment of the hour ends at most maxDuration after the hour's
// end.
func (p Policy) HourExpired(hour int64, maxDuration time.Duration, now time.Time) bool {
	if p.Days < 1 {
		return false
	}
	end := time.UnixMilli(hour).Add(time.Hour + maxDuration)
	return !now.Before(end.Add(p.Keep()))
}

// HourMayHoldExpired reports whether the hour starting at hour can hold a
// segment expired at now: its earliest possible end (the hour's start) is
// past the cutoff. The sweeper's idle check: a stream whose oldest
// remaining hour cannot hold expired video costs nothing.
func (p Policy) HourMayHoldExpired(hour int64, now time.Time) bool {
	if p.Days < 1 {
		return false
	}
	return hour <= p.Cutoff(now)
}

// Decision is one segment that may go, and why.
type Decision struct {
	Segment   index.Segment
	Reason    string
	ExpiredAt time.Time
}

// Select splits segs into those expired at now (with their reason) and
// those kept. It reads nothing but its arguments.
func Select(p Policy, segs []index.Segment, now time.Time) (expired []Decision, kept []index.Segment) {
	for _, s := range segs {
		if p.Expired(s, now) {
			expired = append(expired, Decision{Segment: s, Reason: ReasonRetention, ExpiredAt: p.ExpiresAt(s)})
		} else {
			kept = append(kept, s)
		}
	}
	return expired, kept
}

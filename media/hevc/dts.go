package hevc

import "github.com/vigilcloud/vigil/media/avc"

// DTSExtractor derives decode timestamps from presentation timestamps of
// access units in decode order; the reorder buffer is codec independent,
// see avc.DTSExtractor.
type DTSExtractor[T any] = avc.DTSExtractor[T]

// NewDTSExtractor returns an extractor buffering depth frames (<= 0: the
// default, enough for x265's B-pyramid).
func NewDTSExtractor[T any](depth int) *DTSExtractor[T] { return avc.NewDTSExtractor[T](depth) }

package playback

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/vigilcloud/vigil/index"
)

// The recordings body is written by hand: a day's page is 14,400 segments,
// and encoding/json's reflection (and a URL string per segment) took a
// quarter of the request's time. The bytes are the ones
// json.NewEncoder(w).Encode writes for the Recordings
// (TestRecordingsJSONAsEncodingJSON).

// writeRecordings answers 200 with the Recordings of stream's spans and
// segs, and the next page's cursor ("" for none).
func writeRecordings(w http.ResponseWriter, stream string, spans []spanJSON, segs []index.Segment, cursor string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	// Written 64 KiB at a time: a day's page is 1.9 MB, which would
	// otherwise be one more allocation of that size per request.
	const chunk = 64 << 10
	flush := func(b []byte) []byte {
		if len(b) < chunk {
			return b
		}
		_, _ = w.Write(b)
		return b[:0]
	}
	b := appendRecordings(make([]byte, 0, chunk+256), stream, spans, segs, cursor, flush)
	_, _ = w.Write(b)
}

// appendRecordings appends the body to b, passing b through flush after
// each span and segment (flush returns what to append to next).
func appendRecordings(b []byte, stream string, spans []spanJSON, segs []index.Segment, cursor string, flush func([]byte) []byte) []byte {
	b = append(b, `{"spans":`...)
	if spans == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, s := range spans {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"start":`...)
			b = strconv.AppendInt(b, s.Start, 10)
			b = append(b, `,"end":`...)
			b = strconv.AppendInt(b, s.End, 10)
			b = append(b, '}')
			b = flush(b)
		}
		b = append(b, ']')
	}
	b = append(b, `,"segments":[`...)
	url := appendJSONString(nil, "/v1/streams/"+stream+"/segments/")
	url = url[:len(url)-1] // the start follows inside the quotes
	for i, s := range segs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"start":`...)
		b = strconv.AppendInt(b, s.Start, 10)
		b = append(b, `,"duration_ms":`...)
		b = strconv.AppendInt(b, s.DurationMS, 10)
		b = append(b, `,"size":`...)
		b = strconv.AppendInt(b, s.Size, 10)
		b = append(b, `,"url":`...)
		b = append(b, url...)
		b = strconv.AppendInt(b, s.Start, 10)
		b = append(b, `"}`...)
		b = flush(b)
	}
	b = append(b, ']')
	if cursor != "" {
		b = append(b, `,"next_cursor":`...)
		b = appendJSONString(b, cursor)
	}
	return append(b, "}\n"...)
}

// appendJSONString appends s quoted; strings that need escaping (none of
// ours do: IDs and numbers) go through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

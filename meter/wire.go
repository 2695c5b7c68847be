package meter

import "time"

// The binary form of usage batches (codec.go), encoded by code that msgp
// generates (wire_gen.go): `go generate ./meter`. Types are tuples (msgpack
// arrays): a change of any of them needs a new binary version byte
// (cluster.EncodeCommand).

//go:generate go run github.com/tinylib/msgp@v1.6.4 -file wire.go -o wire_gen.go -tests=false -io=false -unexported

//msgp:tuple wireUsageBatch wireUsageEntry

// wireUsageBatch is UsageBatch in the binary form.
type wireUsageBatch struct {
	ID      string
	From    time.Time
	To      time.Time
	Entries []wireUsageEntry
}

// wireUsageEntry has UsageEntry's fields, so that they convert.
type wireUsageEntry struct {
	Stream        string
	StoredBytes   int64
	StoredObjects int64
	IngestedBytes int64
	Segments      int64
	Width         int
	Height        int
}

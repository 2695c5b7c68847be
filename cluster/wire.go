package cluster

import "time"

// The binary form of log entries (command.go), encoded by code that msgp
// generates (wire_gen.go): `go generate ./cluster`. Types are tuples
// (msgpack arrays): a change needs a new binary version byte.

//go:generate go run github.com/tinylib/msgp@v1.6.4 -file wire.go -o wire_gen.go -tests=false -io=false -unexported

//msgp:tuple wireCommand

// wireCommand is Command in the binary form; Payload is binary too.
type wireCommand struct {
	Type      string
	RequestID string
	Time      time.Time
	Nonce     string
	Payload   []byte
}

// Package httpx holds the few HTTP helpers every handler package shares:
// the contract's JSON error body and JSON responses.
package httpx

import (
	"encoding/json"
	"net/http"
)

// WriteJSON writes v as a JSON response with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Error is the contract's error body.
type Error struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// WriteError writes {"error": msg, "code": code} with status.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	WriteJSON(w, status, Error{Error: msg, Code: code})
}

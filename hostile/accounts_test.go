package hostile

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/internal/testutil"
	"github.com/vigilcloud/vigil/internal/vigiltest"
)

// segBody is the smallest upload ingest accepts: an ftyp and an empty mdat.
var segBody = append([]byte{0, 0, 0, 16, 'f', 't', 'y', 'p', 'i', 's', 'o', 'm', 0, 0, 0, 0}, []byte{0, 0, 0, 8, 'm', 'd', 'a', 't'}...)

// call sends an operator request with a JSON body (empty: none) and extra
// headers, and returns the status and body.
func call(t *testing.T, n *vigiltest.Node, method, path, body string, hdr ...string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, n.Base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+vigiltest.Token)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// want asserts the status of a call and returns its body.
func want(t *testing.T, n *vigiltest.Node, status int, method, path, body string, hdr ...string) []byte {
	t.Helper()
	got, b := call(t, n, method, path, body, hdr...)
	if got != status {
		t.Fatalf("%s %s: got %d %s, want %d", method, path, got, b, status)
	}
	return b
}

// wantError asserts a JSON error answer with status and code.
func wantError(t *testing.T, n *vigiltest.Node, status int, code, method, path, body string) {
	t.Helper()
	b := want(t, n, status, method, path, body)
	var e struct{ Error, Code string }
	if err := json.Unmarshal(b, &e); err != nil || e.Code != code || e.Error == "" {
		t.Fatalf("%s %s: body %s, want a JSON error with code %q", method, path, b, code)
	}
}

// TestDeletedAccountAnswers404: once a sub-account is deleted, nothing of it
// takes changes or is shown, its id is not handed out again, and its video
// is freed by the purge jobs the deletion started.
func TestDeletedAccountAnswers404(t *testing.T) {
	n := vigiltest.Start(t, vigilBin, vigiltest.Options{Args: []string{"--purge-straggle", "200ms"}})
	want(t, n, 201, "POST", "/v1/accounts", `{"id":"res1","name":"Reseller"}`)
	want(t, n, 201, "POST", "/v1/accounts", `{"id":"sub1","name":"Sub","parent":"res1"}`)
	var br struct{ Token string }
	if err := json.Unmarshal(want(t, n, 201, "POST", "/v1/accounts/sub1/bridges", `{"id":"br1","name":"B"}`), &br); err != nil || br.Token == "" {
		t.Fatalf("bridge token: %v %q", err, br.Token)
	}
	want(t, n, 201, "POST", "/v1/bridges/br1/cameras", `{"id":"cam1","name":"C","streams":[{"id":"s1"}]}`)
	start := time.Now().Add(-time.Minute).UnixMilli()
	if code, msg := n.Put(br.Token, "s1", start, segBody, "video/mp4"); code != 201 {
		t.Fatalf("put: %d %s", code, msg)
	}
	want(t, n, 200, "GET", "/v1/accounts/sub1", "")

	var del struct{ Purges map[string]string }
	if err := json.Unmarshal(want(t, n, 202, "DELETE", "/v1/accounts/sub1", ""), &del); err != nil || del.Purges["cam1"] == "" {
		t.Fatalf("delete: %v %+v", err, del)
	}

	wantError(t, n, 404, "not_found", "POST", "/v1/accounts/sub1/bridges", `{"id":"br2","name":"B2"}`)
	wantError(t, n, 404, "not_found", "PATCH", "/v1/accounts/sub1", `{"name":"Renamed"}`)
	wantError(t, n, 404, "not_found", "PATCH", "/v1/accounts/sub1", `{"defaults":{"retention_days":7}}`)
	wantError(t, n, 404, "not_found", "GET", "/v1/accounts/sub1", "")
	wantError(t, n, 404, "not_found", "POST", "/v1/bridges/br1/cameras", `{"id":"cam2","name":"C2","streams":[{"id":"s2"}]}`)
	wantError(t, n, 404, "not_found", "PATCH", "/v1/streams/s1", `{"retention_days":7}`)
	// A retry of the deletion is answered from the first attempt; a new
	// deletion (another key) finds nothing.
	want(t, n, 202, "DELETE", "/v1/accounts/sub1", "")
	got, b := call(t, n, "DELETE", "/v1/accounts/sub1", "", "Idempotency-Key", "another")
	if got != 404 {
		t.Fatalf("second delete: %d %s, want 404", got, b)
	}
	// The id is not handed out again (billing history names it). (The
	// original request resent within the deduplication window would be
	// answered as the retry it looks like.)
	wantError(t, n, 409, "deleted_id", "POST", "/v1/accounts", `{"id":"sub1","name":"Sub again","parent":"res1"}`)
	// The bridge's uploads are refused as for a deleted stream.
	if code, msg := n.Put(br.Token, "s1", start+2000, segBody, "video/mp4"); code != 404 {
		t.Fatalf("put after delete: %d %s, want 404", code, msg)
	}

	// The purge frees the video.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var j struct{ State string }
		_ = json.Unmarshal(want(t, n, 200, "GET", "/v1/purges/"+del.Purges["cam1"], ""), &j)
		if j.State == "done" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("purge not done: %+v", j)
		}
		time.Sleep(100 * time.Millisecond)
	}
	want(t, n, 404, "GET", fmt.Sprintf("/v1/streams/s1/segments/%d", start), "")
}

// sweeps returns the retention sweeper's count of stream sweeps (any result).
func sweeps(t *testing.T, n *vigiltest.Node) float64 {
	t.Helper()
	_, b := call(t, n, "GET", "/metrics", "")
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, "vigil_retention_sweeps_total{") {
			continue
		}
		v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

type meterStream struct {
	RetentionDays int `json:"retention_days"`
	Width, Height int
	SKU           string `json:"sku"`
	History       []struct{ Reason string }
}

func getMeterStream(t *testing.T, n *vigiltest.Node, id string) meterStream {
	t.Helper()
	var s meterStream
	if err := json.Unmarshal(want(t, n, 200, "GET", "/v1/meter/streams/"+id, ""), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestResellerDefaultsChangeKeepsStreams: a reseller's new defaults apply to
// streams added afterwards; the existing stream that inherited the old
// default keeps its SKU and retention, and its 20-day-old video survives
// the retention sweeps that follow.
func TestResellerDefaultsChangeKeepsStreams(t *testing.T) {
	n := vigiltest.Start(t, vigilBin, vigiltest.Options{Args: []string{"--retention-interval", "1s"}})
	want(t, n, 201, "POST", "/v1/accounts", `{"id":"res1","name":"Reseller","defaults":{"width":1280,"height":720,"retention_days":90}}`)
	want(t, n, 201, "POST", "/v1/accounts", `{"id":"sub2","name":"Sub","parent":"res1"}`)
	var br struct{ Token string }
	if err := json.Unmarshal(want(t, n, 201, "POST", "/v1/accounts/sub2/bridges", `{"id":"br","name":"B"}`), &br); err != nil {
		t.Fatal(err)
	}
	want(t, n, 201, "POST", "/v1/bridges/br/cameras", `{"id":"cam10","name":"C","streams":[{"id":"cam10-main"}]}`)
	if s := getMeterStream(t, n, "cam10-main"); s.SKU != "HD1-D90" {
		t.Fatalf("inherited plan: %+v, want HD1-D90", s)
	}
	start := time.Now().Add(-20 * 24 * time.Hour).UnixMilli()
	if code, msg := n.Put(br.Token, "cam10-main", start, segBody, "video/mp4"); code != 201 {
		t.Fatalf("put 20-day-old segment: %d %s", code, msg)
	}

	want(t, n, 200, "PATCH", "/v1/accounts/res1", `{"defaults":{"retention_days":7,"width":3840,"height":2160}}`)
	s := getMeterStream(t, n, "cam10-main")
	if s.RetentionDays != 90 || s.SKU != "HD1-D90" || len(s.History) != 1 {
		t.Fatalf("after the reseller's defaults change: %+v, want HD1-D90 with one history entry", s)
	}

	// Let the sweeper visit the stream a few times under the new defaults.
	base := sweeps(t, n)
	deadline := time.Now().Add(30 * time.Second)
	for sweeps(t, n) < base+3 {
		if time.Now().After(deadline) {
			t.Fatalf("the sweeper did not run (sweeps %v)", sweeps(t, n))
		}
		time.Sleep(200 * time.Millisecond)
	}
	want(t, n, 200, "GET", fmt.Sprintf("/v1/streams/cam10-main/segments/%d", start), "")
	if s := getMeterStream(t, n, "cam10-main"); s.SKU != "HD1-D90" {
		t.Fatalf("after sweeps: %+v", s)
	}

	// A stream added now gets the new defaults.
	want(t, n, 201, "POST", "/v1/bridges/br/cameras", `{"id":"cam11","name":"C","streams":[{"id":"cam11-main"}]}`)
	if s := getMeterStream(t, n, "cam11-main"); s.SKU != "HD10-D7" {
		t.Fatalf("new stream: %+v, want HD10-D7", s)
	}
	// And the old one still keeps its plan across a restart (log replay).
	n.Restart()
	if s := getMeterStream(t, n, "cam10-main"); s.SKU != "HD1-D90" || len(s.History) != 1 {
		t.Fatalf("after restart: %+v", s)
	}
}

// TestBridgeTokensNeverStored: a bridge token is in the answer that
// creates it and nowhere else: not in a retried creation's answer, not in
// the raft log, snapshots, spool or objects, not in the log output.
func TestBridgeTokensNeverStored(t *testing.T) {
	n := vigiltest.Start(t, vigilBin, vigiltest.Options{RTSP: true})
	want(t, n, 201, "POST", "/v1/accounts", `{"id":"acct","name":"A"}`)
	var tokens []string
	create := func(body string, hdr ...string) {
		t.Helper()
		var r struct{ ID, Token string }
		if err := json.Unmarshal(want(t, n, 201, "POST", "/v1/accounts/acct/bridges", body, hdr...), &r); err != nil || r.Token == "" {
			t.Fatalf("create bridge: %v %+v", err, r)
		}
		tokens = append(tokens, r.Token)
		// The same request again, as a client whose answer was lost sends
		// it: answered 200, without the token.
		got, b := call(t, n, "POST", "/v1/accounts/acct/bridges", body, hdr...)
		if got != 200 || bytes.Contains(b, []byte(r.Token)) || bytes.Contains(b, []byte(`"token"`)) {
			t.Fatalf("retried create: %d %s, want 200 without a token", got, b)
		}
	}
	create(`{"id":"br1","name":"B1"}`)
	create(`{"id":"br2","name":"B2"}`, "Idempotency-Key", "k2")
	want(t, n, 201, "POST", "/v1/bridges/br1/cameras", `{"id":"cam","name":"C","streams":[{"id":"s1"}]}`)
	now := time.Now().Add(-time.Minute).UnixMilli()
	if code, msg := n.Put(tokens[0], "s1", now, segBody, "video/mp4"); code != 201 {
		t.Fatalf("put: %d %s", code, msg)
	}
	// A wrong token is logged about, the right one works.
	if code, _ := n.Put(tokens[1], "s1", now+2000, segBody, "video/mp4"); code != 403 {
		t.Fatalf("put with another bridge's token: %d, want 403", code)
	}
	want(t, n, 200, "POST", "/v1/cluster/snapshot", "")
	n.Restart()
	if code, msg := n.Put(tokens[0], "s1", now+4000, segBody, "video/mp4"); code != 201 {
		t.Fatalf("put after restart: %d %s", code, msg)
	}
	want(t, n, 200, "POST", "/v1/cluster/snapshot", "")

	var found []string
	snapshots := 0
	err := filepath.Walk(n.Data, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		// Meter snapshots are zstd: searched decompressed too.
		b, compressed, err := testutil.ReadFileDecompressed(p)
		if err != nil {
			return err
		}
		if compressed && bytes.Contains(b, []byte(`"token_index"`)) {
			snapshots++
		}
		for i, tok := range tokens {
			if bytes.Contains(b, []byte(tok)) {
				found = append(found, fmt.Sprintf("token %d in %s", i, p))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if snapshots == 0 {
		t.Fatal("no meter snapshot found under the data directory to search")
	}
	logs := n.Logs()
	for i, tok := range tokens {
		if strings.Contains(logs, tok) {
			found = append(found, fmt.Sprintf("token %d in the log output", i))
		}
	}
	if len(found) > 0 {
		t.Fatalf("plaintext bridge tokens stored:\n%s", strings.Join(found, "\n"))
	}
}

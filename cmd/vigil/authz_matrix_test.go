package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigilcloud/vigil/bench"
	"github.com/vigilcloud/vigil/internal/testutil"
)

// The roles of the authorization matrix (issue 13). Reseller r1 has the
// sub-accounts s1 and s2, reseller r2 has t1. The sub users and the bridge
// belong to s1, the other reseller's admin to r2. Issue 16 nests r1 under
// the distributor d1 (r2 stays a root: a two-level setup), whose admin
// reaches r1, s1 and s2.
const (
	mOperator      = "operator"
	mBilling       = "billing"
	mResellerAdmin = "reseller admin"
	mResellerUser  = "reseller user"
	mSubAdmin      = "sub admin"
	mSubUser       = "sub user"
	mBridge        = "bridge"
	mOtherAdmin    = "other reseller admin"
	mDistAdmin     = "distributor admin"
	mNone          = "no token"
)

var mRoles = []string{mOperator, mBilling, mResellerAdmin, mResellerUser, mSubAdmin, mSubUser, mBridge, mOtherAdmin, mDistAdmin, mNone}

// mTargets are the grid's columns, named by their relation to the sub
// users: r1 their reseller (the parent), s1 their own account (a child of
// r1), s2 a sibling, t1 a foreign sub-account.
var mTargets = [4]string{"r1", "s1", "s2", "t1"}

// mOK in a grid is the endpoint's success status; mSkip marks a cell that is
// not run (it would destroy the fixture).
const (
	mOK   = -1
	mSkip = 0
)

// grid is the expected status of an endpoint per role and target, written
// out by hand from docs/security.md and DESIGN.md section 3.
type grid map[string][4]int

var (
	// Reading needs any role within scope.
	readGrid = grid{
		mOperator:      {mOK, mOK, mOK, mOK},
		mBilling:       {403, 403, 403, 403},
		mResellerAdmin: {mOK, mOK, mOK, 403},
		mResellerUser:  {mOK, mOK, mOK, 403},
		mSubAdmin:      {403, mOK, 403, 403},
		mSubUser:       {403, mOK, 403, 403},
		mBridge:        {403, 403, 403, 403},
		mOtherAdmin:    {403, 403, 403, mOK},
		mDistAdmin:     {mOK, mOK, mOK, 403},
		mNone:          {401, 401, 401, 401},
	}
	// Managing needs the admin role within scope.
	adminGrid = grid{
		mOperator:      {mOK, mOK, mOK, mOK},
		mBilling:       {403, 403, 403, 403},
		mResellerAdmin: {mOK, mOK, mOK, 403},
		mResellerUser:  {403, 403, 403, 403},
		mSubAdmin:      {403, mOK, 403, 403},
		mSubUser:       {403, 403, 403, 403},
		mBridge:        {403, 403, 403, 403},
		mOtherAdmin:    {403, 403, 403, mOK},
		mDistAdmin:     {mOK, mOK, mOK, 403},
		mNone:          {401, 401, 401, 401},
	}
	// The meter is the operator's and the billing token's.
	meterGrid = grid{
		mOperator:      {mOK, mOK, mOK, mOK},
		mBilling:       {mOK, mOK, mOK, mOK},
		mResellerAdmin: {403, 403, 403, 403},
		mResellerUser:  {403, 403, 403, 403},
		mSubAdmin:      {403, 403, 403, 403},
		mSubUser:       {403, 403, 403, 403},
		mBridge:        {403, 403, 403, 403},
		mOtherAdmin:    {403, 403, 403, 403},
		mDistAdmin:     {403, 403, 403, 403},
		mNone:          {401, 401, 401, 401},
	}
	operatorGrid = grid{
		mOperator:      {mOK, mOK, mOK, mOK},
		mBilling:       {403, 403, 403, 403},
		mResellerAdmin: {403, 403, 403, 403},
		mResellerUser:  {403, 403, 403, 403},
		mSubAdmin:      {403, 403, 403, 403},
		mSubUser:       {403, 403, 403, 403},
		mBridge:        {403, 403, 403, 403},
		mOtherAdmin:    {403, 403, 403, 403},
		mDistAdmin:     {403, 403, 403, 403},
		mNone:          {401, 401, 401, 401},
	}
	// A bridge uploads to its own streams (s1's); the operator's token is
	// accepted everywhere; a user or billing token is known but may not
	// upload: 403.
	uploadGrid = grid{
		mOperator:      {mOK, mOK, mOK, mOK},
		mBilling:       {403, 403, 403, 403},
		mResellerAdmin: {403, 403, 403, 403},
		mResellerUser:  {403, 403, 403, 403},
		mSubAdmin:      {403, 403, 403, 403},
		mSubUser:       {403, 403, 403, 403},
		mBridge:        {403, mOK, 403, 403},
		mOtherAdmin:    {403, 403, 403, 403},
		mDistAdmin:     {403, 403, 403, 403},
		mNone:          {401, 401, 401, 401},
	}
	// Only r1's admin creates sub-accounts, under r1; the operator's
	// creates under a sub-account are invalid (400).
	subAccountGrid = grid{
		mOperator:      {mOK, 400, 400, 400},
		mBilling:       {403, 403, 403, 403},
		mResellerAdmin: {mOK, 403, 403, 403},
		mResellerUser:  {403, 403, 403, 403},
		mSubAdmin:      {403, 403, 403, 403},
		mSubUser:       {403, 403, 403, 403},
		mBridge:        {403, 403, 403, 403},
		mOtherAdmin:    {403, 403, 403, 403},
		mDistAdmin:     {mOK, 403, 403, 403},
		mNone:          {401, 401, 401, 401},
	}
	// Deleting an account: r1 and s1 are the fixtures themselves (a
	// reseller is not deleted: 400 for the operator); s2 and t1 are fresh
	// sub-accounts of r1 and r2. Nobody deletes its own account.
	deleteAccountGrid = grid{
		mOperator:      {400, mSkip, mOK, mOK},
		mBilling:       {403, 403, 403, 403},
		mResellerAdmin: {403, mSkip, mOK, 403},
		mResellerUser:  {403, 403, 403, 403},
		mSubAdmin:      {403, 403, 403, 403},
		mSubUser:       {403, 403, 403, 403},
		mBridge:        {403, 403, 403, 403},
		mOtherAdmin:    {403, 403, 403, mOK},
		mDistAdmin:     {400, mSkip, mOK, 403},
		mNone:          {401, 401, 401, 401},
	}
	// A token of a user of the target account: only the operator revokes
	// another user's token; to a user it does not exist (404).
	revokeGrid = grid{
		mOperator:      {mOK, mOK, mOK, mOK},
		mBilling:       {403, 403, 403, 403},
		mResellerAdmin: {404, 404, 404, 404},
		mResellerUser:  {404, 404, 404, 404},
		mSubAdmin:      {404, 404, 404, 404},
		mSubUser:       {404, 404, 404, 404},
		mBridge:        {403, 403, 403, 403},
		mOtherAdmin:    {404, 404, 404, 404},
		mDistAdmin:     {404, 404, 404, 404},
		mNone:          {401, 401, 401, 401},
	}
)

// Endpoints that name no account: one status per role.
var (
	anyUserGlobal = map[string]int{mOperator: mOK, mBilling: 403, mResellerAdmin: mOK, mResellerUser: mOK,
		mSubAdmin: mOK, mSubUser: mOK, mBridge: 403, mOtherAdmin: mOK, mDistAdmin: mOK, mNone: 401}
	meterGlobal = map[string]int{mOperator: mOK, mBilling: mOK, mResellerAdmin: 403, mResellerUser: 403,
		mSubAdmin: 403, mSubUser: 403, mBridge: 403, mOtherAdmin: 403, mDistAdmin: 403, mNone: 401}
	operatorGlobal = map[string]int{mOperator: mOK, mBilling: 403, mResellerAdmin: 403, mResellerUser: 403,
		mSubAdmin: 403, mSubUser: 403, mBridge: 403, mOtherAdmin: 403, mDistAdmin: 403, mNone: 401}
	// Users create their own API tokens; the operator only billing ones.
	ownTokenGlobal = map[string]int{mOperator: 403, mBilling: 403, mResellerAdmin: mOK, mResellerUser: mOK,
		mSubAdmin: mOK, mSubUser: mOK, mBridge: 403, mOtherAdmin: mOK, mDistAdmin: mOK, mNone: 401}
)

// Entitlements (issue 16). Each target x owns an entitlement of SD1-D30
// (the fixture streams' SKU): r1's was split to it by d1, s1's and s2's by
// r1, t1's by r2. Splitting goes to an account directly below (a customer
// has none: 400 wrong_level); activating is the end customer's (a
// reseller's entitlement: 400 wrong_level); a split is taken back by an
// admin of the account that made it.
var (
	splitGrid = grid{
		mOperator:      {mOK, 400, 400, 400},
		mBilling:       {403, 403, 403, 403},
		mResellerAdmin: {mOK, 400, 400, 403},
		mResellerUser:  {403, 403, 403, 403},
		mSubAdmin:      {403, 400, 403, 403},
		mSubUser:       {403, 403, 403, 403},
		mBridge:        {403, 403, 403, 403},
		mOtherAdmin:    {403, 403, 403, 400},
		mDistAdmin:     {mOK, 400, 400, 403},
		mNone:          {401, 401, 401, 401},
	}
	activateGrid = grid{
		mOperator:      {400, mOK, mOK, mOK},
		mBilling:       {403, 403, 403, 403},
		mResellerAdmin: {400, mOK, mOK, 403},
		mResellerUser:  {403, 403, 403, 403},
		mSubAdmin:      {403, mOK, 403, 403},
		mSubUser:       {403, 403, 403, 403},
		mBridge:        {403, 403, 403, 403},
		mOtherAdmin:    {403, 403, 403, mOK},
		mDistAdmin:     {400, mOK, mOK, 403},
		mNone:          {401, 401, 401, 401},
	}
	returnGrid = grid{
		mOperator:      {mOK, mOK, mOK, mOK},
		mBilling:       {403, 403, 403, 403},
		mResellerAdmin: {403, mOK, mOK, 403},
		mResellerUser:  {403, 403, 403, 403},
		mSubAdmin:      {403, 403, 403, 403},
		mSubUser:       {403, 403, 403, 403},
		mBridge:        {403, 403, 403, 403},
		mOtherAdmin:    {403, 403, 403, mOK},
		mDistAdmin:     {mOK, mOK, mOK, 403},
		mNone:          {401, 401, 401, 401},
	}
)

// matrixEndpoint is one row of the matrix: a request per role and target
// and its expected statuses (grid per target, or global).
type matrixEndpoint struct {
	name   string
	ok     int
	grid   grid
	global map[string]int
	// video: refused (403) to the reseller's users on s1 while its privacy
	// mode is on. locked: refused (403) to s1's own admin under the lock.
	video, locked bool
	req           func(role, x string) (method, path string, body any)
}

// matrixWorld is one node provisioned for the matrix.
type matrixWorld struct {
	t       *testing.T
	n       *vigilNode
	tokens  map[string]string // role → bearer token
	owners  map[string]string // target → session of a plain user of it
	bridges map[string]string // target → its bridge's token
	purges  map[string]string // target → a purge job of it
	ents    map[string]string // target → an entitlement it owns; "d1", "r2": theirs
	start   int64             // the first of the segments in every stream
	next    int64             // the next fresh upload start
	seg     []byte
	ctype   string
	ids     int
}

func (w *matrixWorld) id(prefix string) string {
	w.ids++
	return fmt.Sprintf("%s%d", prefix, w.ids)
}

// op calls the API as the operator and fails the test on an error.
func (w *matrixWorld) op(method, path string, in, out any) {
	w.t.Helper()
	must(w.t, w.n.api.do(context.Background(), method, path, in, out))
}

// call sends a request with token (none when empty) and header pairs, and
// returns the status and the body.
func (w *matrixWorld) call(token, method, path string, body any, hdr ...string) (int, []byte) {
	w.t.Helper()
	var rd io.Reader
	if body != nil {
		if b, ok := body.([]byte); ok {
			rd = bytes.NewReader(b)
		} else {
			js, err := json.Marshal(body)
			must(w.t, err)
			rd = bytes.NewReader(js)
		}
	}
	req, err := http.NewRequest(method, w.n.base+path, rd)
	must(w.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if b, ok := body.([]byte); ok {
		req.Header.Set("Content-Type", w.ctype)
		req.ContentLength = int64(len(b))
	}
	resp, err := http.DefaultClient.Do(req)
	must(w.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(w.t, err)
	return resp.StatusCode, b
}

// user creates a user with the operator token, accepts its invitation and
// logs it in, all through the API, and returns its session token.
func (w *matrixWorld) user(account, email, role string) string {
	w.t.Helper()
	var cr struct {
		Invitation struct{ Token string }
	}
	w.op("POST", "/v1/accounts/"+account+"/users", map[string]any{"email": email, "role": role}, &cr)
	anon := &apiClient{base: w.n.base}
	ctx := context.Background()
	must(w.t, anon.do(ctx, "POST", "/v1/invitations/"+cr.Invitation.Token+"/accept", map[string]any{"password": "a long enough password"}, nil))
	var s struct{ Token string }
	must(w.t, anon.do(ctx, "POST", "/v1/sessions", map[string]any{"email": email, "password": "a long enough password"}, &s))
	return s.Token
}

// camera creates a camera with one stream under bridge b-x, as the operator.
func (w *matrixWorld) camera(x, cam, stream string) {
	w.t.Helper()
	w.op("POST", "/v1/bridges/b-"+x+"/cameras", map[string]any{"id": cam, "name": cam,
		"streams": []map[string]any{{"id": stream, "width": 320, "height": 240, "retention_days": 30}}}, nil)
}

func newMatrixWorld(t *testing.T) *matrixWorld {
	t.Helper()
	n := startVigil(t, nil)
	w := &matrixWorld{t: t, n: n, tokens: map[string]string{mOperator: e2eToken},
		owners: map[string]string{}, bridges: map[string]string{}, purges: map[string]string{}, ents: map[string]string{}}
	w.seg, w.ctype = realSegment(t, bench.PayloadFMP4)
	for _, a := range []map[string]any{{"id": "d1", "name": "D1", "tier": "distributor"}, {"id": "r1", "name": "R1", "parent": "d1"}, {"id": "s1", "name": "S1", "parent": "r1"},
		{"id": "s2", "name": "S2", "parent": "r1"}, {"id": "r2", "name": "R2"}, {"id": "t1", "name": "T1", "parent": "r2"}} {
		w.op("POST", "/v1/accounts", a, nil)
	}
	w.op("PATCH", "/v1/accounts/s1", map[string]any{"privacy_mode_allowed": true}, nil)

	w.start = time.Now().Add(-10 * time.Minute).Truncate(2 * time.Second).UnixMilli()
	w.next = w.start + 10_000
	for _, x := range mTargets {
		var br struct{ Token string }
		w.op("POST", "/v1/accounts/"+x+"/bridges", map[string]any{"id": "b-" + x, "name": "B"}, &br)
		w.bridges[x] = br.Token
		w.camera(x, "c-"+x, "st-"+x)
		// Real segments, uploaded by the stream's own bridge.
		for i := range 3 {
			if st, _ := put(t, n.base, br.Token, "st-"+x, w.start+int64(i)*2000, w.seg, w.ctype); st != http.StatusCreated {
				t.Fatalf("upload to st-%s: %d", x, st)
			}
		}
		w.camera(x, "cp-"+x, "sp-"+x)
		var d struct{ Purge string }
		w.op("DELETE", "/v1/cameras/cp-"+x, nil, &d)
		w.purges[x] = d.Purge
		w.owners[x] = w.user(x, "owner@"+x+".example", "user")
	}
	w.tokens[mBridge] = w.bridges["s1"]
	for role, u := range map[string][2]string{mResellerAdmin: {"r1", "admin"}, mResellerUser: {"r1", "user"},
		mSubAdmin: {"s1", "admin"}, mSubUser: {"s1", "user"}, mOtherAdmin: {"r2", "admin"}, mDistAdmin: {"d1", "admin"}} {
		w.tokens[role] = w.user(u[0], strings.ReplaceAll(role, " ", ".")+"@example.com", u[1])
	}
	var bt struct{ Token string }
	w.op("POST", "/v1/tokens", map[string]any{"name": "erp", "kind": "billing"}, &bt)
	w.tokens[mBilling] = bt.Token
	for _, root := range []string{"d1", "r2"} {
		var e struct{ ID string }
		w.op("POST", "/v1/entitlements", map[string]any{"account": root, "product": "SD1-D30", "quantity": 1000, "term_months": 12}, &e)
		w.ents[root] = e.ID
	}
	for _, x := range []string{"r1", "s1", "s2", "t1"} {
		w.ents[x] = w.splitTo(x, map[string]int{"r1": 500}[x]+100)
	}
	return w
}

// parentOf is the account above target x in the fixture.
func parentOf(x string) string {
	return map[string]string{"r1": "d1", "s1": "r1", "s2": "r1", "t1": "r2"}[x]
}

// splitTo splits q units of x's parent's entitlement to x, as the operator,
// and returns the new entitlement's id. Each call is a new split (its own
// Idempotency-Key): the same body again would be the first one's retry.
func (w *matrixWorld) splitTo(x string, q int) string {
	w.t.Helper()
	st, b := w.call(e2eToken, "POST", "/v1/entitlements/"+w.ents[parentOf(x)]+"/split", map[string]any{"account": x, "quantity": q},
		"Idempotency-Key", w.id("split"))
	var e struct{ ID string }
	if err := json.Unmarshal(b, &e); err != nil || st != http.StatusCreated {
		w.t.Fatalf("split to %s: %d %s", x, st, b)
	}
	return e.ID
}

// endpoints is every endpoint of the contract that takes a bearer token.
// Writes that create things use fresh ids; deletions delete fresh things
// the operator makes first.
func (w *matrixWorld) endpoints() []matrixEndpoint {
	month := time.Now().UTC().Format("2006-01")
	window := func() string { return fmt.Sprintf("?start=%d&end=%d", w.start, w.start+6000) }
	stream := func(x string) string { return "/v1/streams/st-" + x }
	get := func(path func(x string) string) func(string, string) (string, string, any) {
		return func(_, x string) (string, string, any) { return "GET", path(x), nil }
	}
	return []matrixEndpoint{
		// Provisioning.
		{name: "POST reseller", ok: 201, global: operatorGlobal, req: func(string, string) (string, string, any) {
			return "POST", "/v1/accounts", map[string]any{"id": w.id("nr"), "name": "R"}
		}},
		{name: "POST sub-account", ok: 201, grid: subAccountGrid, req: func(_, x string) (string, string, any) {
			return "POST", "/v1/accounts", map[string]any{"id": w.id("na"), "name": "N", "parent": x}
		}},
		{name: "PATCH account", ok: 200, grid: adminGrid, req: func(_, x string) (string, string, any) {
			return "PATCH", "/v1/accounts/" + x, map[string]any{"name": "Renamed " + x}
		}},
		{name: "DELETE account", ok: 202, grid: deleteAccountGrid, req: func(_, x string) (string, string, any) {
			id := x
			switch x {
			case "s2", "t1":
				parent := map[string]string{"s2": "r1", "t1": "r2"}[x]
				id = w.id("da")
				w.op("POST", "/v1/accounts", map[string]any{"id": id, "name": "D", "parent": parent}, nil)
			}
			return "DELETE", "/v1/accounts/" + id, nil
		}},
		{name: "POST bridge", ok: 201, grid: adminGrid, req: func(_, x string) (string, string, any) {
			return "POST", "/v1/accounts/" + x + "/bridges", map[string]any{"id": w.id("nb"), "name": "B"}
		}},
		{name: "DELETE bridge", ok: 200, grid: adminGrid, req: func(_, x string) (string, string, any) {
			id := w.id("db")
			w.op("POST", "/v1/accounts/"+x+"/bridges", map[string]any{"id": id, "name": "B"}, nil)
			return "DELETE", "/v1/bridges/" + id, nil
		}},
		{name: "POST bridge token", ok: 201, grid: adminGrid, req: func(_, x string) (string, string, any) {
			id := w.id("rb")
			w.op("POST", "/v1/accounts/"+x+"/bridges", map[string]any{"id": id, "name": "B"}, nil)
			return "POST", "/v1/bridges/" + id + "/token", map[string]any{}
		}},
		{name: "POST camera", ok: 201, grid: adminGrid, locked: true, req: func(_, x string) (string, string, any) {
			return "POST", "/v1/bridges/b-" + x + "/cameras", map[string]any{"id": w.id("nc"), "name": "C",
				"streams": []map[string]any{{"id": w.id("ns"), "width": 320, "height": 240}}}
		}},
		{name: "PATCH stream", ok: 200, grid: adminGrid, locked: true, req: func(_, x string) (string, string, any) {
			return "PATCH", stream(x), map[string]any{"retention_days": 30}
		}},
		{name: "DELETE camera", ok: 202, grid: adminGrid, req: func(_, x string) (string, string, any) {
			c := w.id("dc")
			w.camera(x, c, w.id("ds"))
			return "DELETE", "/v1/cameras/" + c, nil
		}},
		{name: "DELETE stream", ok: 202, grid: adminGrid, req: func(_, x string) (string, string, any) {
			s := w.id("ds")
			w.camera(x, w.id("dc"), s)
			return "DELETE", "/v1/streams/" + s, nil
		}},
		{name: "GET purge", ok: 200, grid: readGrid, req: get(func(x string) string { return "/v1/purges/" + w.purges[x] })},
		// Console lists and reads.
		{name: "GET accounts", ok: 200, global: anyUserGlobal, req: get(func(string) string { return "/v1/accounts" })},
		{name: "GET account", ok: 200, grid: readGrid, req: get(func(x string) string { return "/v1/accounts/" + x })},
		{name: "GET bridges", ok: 200, grid: readGrid, req: get(func(x string) string { return "/v1/accounts/" + x + "/bridges" })},
		{name: "GET bridge", ok: 200, grid: readGrid, req: get(func(x string) string { return "/v1/bridges/b-" + x })},
		{name: "GET bridge's cameras", ok: 200, grid: readGrid, req: get(func(x string) string { return "/v1/bridges/b-" + x + "/cameras" })},
		{name: "GET camera", ok: 200, grid: readGrid, req: get(func(x string) string { return "/v1/cameras/c-" + x })},
		{name: "GET health", ok: 200, grid: readGrid, req: get(func(x string) string { return "/v1/accounts/" + x + "/health" })},
		{name: "GET audit", ok: 200, grid: readGrid, req: get(func(x string) string { return "/v1/accounts/" + x + "/audit" })},
		// Users and tokens.
		{name: "GET users", ok: 200, grid: readGrid, req: get(func(x string) string { return "/v1/accounts/" + x + "/users" })},
		{name: "POST user", ok: 201, grid: adminGrid, req: func(_, x string) (string, string, any) {
			return "POST", "/v1/accounts/" + x + "/users", map[string]any{"email": w.id("u") + "@example.com", "role": "user"}
		}},
		{name: "DELETE user", ok: 200, grid: adminGrid, req: func(_, x string) (string, string, any) {
			var cr struct{ User struct{ ID string } }
			w.op("POST", "/v1/accounts/"+x+"/users", map[string]any{"email": w.id("du") + "@example.com", "role": "user"}, &cr)
			return "DELETE", "/v1/users/" + cr.User.ID, nil
		}},
		{name: "GET tokens", ok: 200, global: anyUserGlobal, req: get(func(string) string { return "/v1/tokens" })},
		{name: "POST token", ok: 201, global: ownTokenGlobal, req: func(string, string) (string, string, any) {
			return "POST", "/v1/tokens", map[string]any{"name": w.id("tk")}
		}},
		{name: "POST billing token", ok: 201, global: operatorGlobal, req: func(string, string) (string, string, any) {
			return "POST", "/v1/tokens", map[string]any{"name": w.id("bt"), "kind": "billing"}
		}},
		{name: "DELETE token of the account's user", ok: 200, grid: revokeGrid, req: func(_, x string) (string, string, any) {
			return "DELETE", "/v1/tokens/" + w.ownToken(w.owners[x]), nil
		}},
		// A user revokes its own token; the operator a billing token.
		{name: "DELETE own token", ok: 200, global: map[string]int{mOperator: mOK, mBilling: 403, mResellerAdmin: mOK, mResellerUser: mOK,
			mSubAdmin: mOK, mSubUser: mOK, mBridge: 403, mOtherAdmin: mOK, mDistAdmin: mOK, mNone: 401}, req: func(role, _ string) (string, string, any) {
			tok := w.tokens[role]
			switch role {
			case mOperator, mBilling, mBridge, mNone:
				var bt struct{ ID string }
				w.op("POST", "/v1/tokens", map[string]any{"name": w.id("bt"), "kind": "billing"}, &bt)
				return "DELETE", "/v1/tokens/" + bt.ID, nil
			}
			return "DELETE", "/v1/tokens/" + w.ownToken(tok), nil
		}},
		// Meter and billing.
		{name: "GET meter stream", ok: 200, grid: meterGrid, req: get(func(x string) string { return "/v1/meter/streams/st-" + x })},
		{name: "GET meter status", ok: 200, global: meterGlobal, req: get(func(string) string { return "/v1/meter/status" })},
		{name: "GET billing run", ok: 200, global: meterGlobal, req: get(func(string) string { return "/v1/billing/runs/" + month })},
		{name: "GET billing run csv", ok: 200, global: meterGlobal, req: get(func(string) string {
			return "/v1/billing/runs/" + month + "?format=csv&part=items"
		})},
		// Ingest and viewing.
		{name: "PUT segment", ok: 201, grid: uploadGrid, req: func(_, x string) (string, string, any) {
			w.next += 2000
			return "PUT", fmt.Sprintf("%s/segments/%d?duration_ms=2000", stream(x), w.next), w.seg
		}},
		{name: "GET recordings", ok: 200, grid: readGrid, req: get(func(x string) string { return stream(x) + "/recordings" + window() })},
		{name: "GET segment", ok: 200, grid: readGrid, video: true, req: get(func(x string) string {
			return fmt.Sprintf("%s/segments/%d", stream(x), w.start)
		})},
		{name: "GET init.mp4", ok: 200, grid: readGrid, video: true, req: get(func(x string) string {
			return fmt.Sprintf("%s/segments/%d/init.mp4", stream(x), w.start)
		})},
		{name: "GET media.m4s", ok: 200, grid: readGrid, video: true, req: get(func(x string) string {
			return fmt.Sprintf("%s/segments/%d/media.m4s", stream(x), w.start)
		})},
		{name: "GET playlist", ok: 200, grid: readGrid, video: true, req: get(func(x string) string { return stream(x) + "/playlist.m3u8" + window() })},
		{name: "GET live", ok: 200, grid: readGrid, video: true, req: get(func(x string) string { return stream(x) + "/live.m3u8" })},
		{name: "GET clip", ok: 200, grid: readGrid, video: true, req: get(func(x string) string { return stream(x) + "/clip.mp4" + window() })},
		// Entitlements.
		{name: "POST entitlement", ok: 201, global: operatorGlobal, req: func(string, string) (string, string, any) {
			w.ids++ // a fresh quantity: an identical body would be a retry (200)
			return "POST", "/v1/entitlements", map[string]any{"account": "d1", "product": "HD1-D30", "quantity": w.ids, "term_months": 12}
		}},
		{name: "GET entitlements", ok: 200, global: anyUserGlobal, req: get(func(string) string { return "/v1/entitlements" })},
		{name: "GET entitlement", ok: 200, grid: readGrid, req: get(func(x string) string { return "/v1/entitlements/" + w.ents[x] })},
		{name: "POST entitlement split", ok: 201, grid: splitGrid, req: func(_, x string) (string, string, any) {
			to := map[string]string{"r1": "s1"}[x]
			if to == "" {
				to = x // a customer has nobody below it
			}
			// A fresh entitlement of x each time: the same split again
			// would be a retry.
			return "POST", "/v1/entitlements/" + w.splitTo(x, 1) + "/split", map[string]any{"account": to, "quantity": 1}
		}},
		{name: "POST entitlement activate", ok: 200, grid: activateGrid, req: func(_, x string) (string, string, any) {
			s := w.id("es")
			w.camera(x, w.id("ec"), s)
			return "POST", "/v1/entitlements/" + w.ents[x] + "/activate", map[string]any{"streams": []string{s}}
		}},
		{name: "POST entitlement return", ok: 200, grid: returnGrid, req: func(_, x string) (string, string, any) {
			return "POST", "/v1/entitlements/" + w.splitTo(x, 1) + "/return", nil
		}},
		// Operations: the operator's alone. A join without a body and the
		// removal of an unknown member reach the handler and fail there.
		{name: "GET cluster", ok: 200, global: operatorGlobal, req: get(func(string) string { return "/v1/cluster" })},
		{name: "POST cluster snapshot", ok: 200, global: operatorGlobal, req: func(string, string) (string, string, any) {
			return "POST", "/v1/cluster/snapshot", nil
		}},
		{name: "POST cluster member", ok: 400, global: operatorGlobal, req: func(string, string) (string, string, any) {
			return "POST", "/v1/cluster/members", map[string]any{}
		}},
		{name: "DELETE cluster member", ok: 404, global: operatorGlobal, req: func(string, string) (string, string, any) {
			return "DELETE", "/v1/cluster/members/" + w.id("nosuch"), nil
		}},
		{name: "POST index rebuild", ok: 200, grid: operatorGrid, req: func(_, x string) (string, string, any) {
			return "POST", "/v1/index/rebuild?stream=st-" + x, nil
		}},
		{name: "POST meter reconcile", ok: 200, grid: operatorGrid, req: func(_, x string) (string, string, any) {
			return "POST", "/v1/meter/reconcile?dry_run=1&stream=st-" + x, nil
		}},
	}
}

// ownToken creates an API token with session and returns its id.
func (w *matrixWorld) ownToken(session string) string {
	w.t.Helper()
	st, b := w.call(session, "POST", "/v1/tokens", map[string]any{"name": w.id("ot")})
	var out struct{ ID string }
	_ = json.Unmarshal(b, &out)
	if st != http.StatusCreated || out.ID == "" {
		w.t.Fatalf("POST /v1/tokens: %d %s", st, b)
	}
	return out.ID
}

// TestAuthorizationMatrix (issue 13) drives the real binary: every endpoint
// that takes a bearer token, as every role, on the reseller, own, sibling
// and foreign account, under s1's privacy mode off, on and suspended, with
// its billing lock off and on. Each cell asserts the status code.
func TestAuthorizationMatrix(t *testing.T) {
	testutil.SkipIfShort(t, "runs the vigil binary over the whole authorization matrix")
	w := newMatrixWorld(t)
	eps := w.endpoints()
	locks := []struct {
		name string
		on   bool
	}{{"lock off", false}, {"lock on", true}}
	privacy := []struct {
		name  string
		body  map[string]any
		watch bool // the reseller's users see s1's video
	}{
		{"privacy off", map[string]any{"privacy_mode": false, "privacy_suspended_until": nil}, true},
		{"privacy on", map[string]any{"privacy_mode": true, "privacy_suspended_until": nil}, false},
		{"privacy suspended", map[string]any{"privacy_mode": true, "privacy_suspended_until": time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)}, true},
	}
	// Failures are grouped by cell across the six states, so that one
	// wrong cell reads as one line.
	cells := 0
	var order []string
	failed := map[string][]string{}
	for _, lock := range locks {
		for _, pm := range privacy {
			w.op("PATCH", "/v1/accounts/s1", map[string]any{"lock_billing_settings": lock.on}, nil)
			w.op("PATCH", "/v1/accounts/s1", pm.body, nil)
			combo := lock.name + ", " + pm.name
			for _, e := range eps {
				for _, role := range mRoles {
					targets := mTargets[:]
					if e.grid == nil {
						targets = []string{""}
					}
					for i, x := range targets {
						var want int
						if e.grid != nil {
							want = e.grid[role][i]
						} else {
							want = e.global[role]
						}
						switch {
						case want == mSkip:
							continue
						case want == mOK:
							want = e.ok
						}
						// Privacy mode and the lock only take away, each with
						// its own error code.
						wantCode := ""
						if want == e.ok && x == "s1" {
							if e.video && !pm.watch && (role == mResellerAdmin || role == mResellerUser || role == mDistAdmin) {
								want, wantCode = 403, "privacy_mode"
							}
							if e.locked && lock.on && role == mSubAdmin {
								want, wantCode = 403, "billing_settings_locked"
							}
						}
						method, path, body := e.req(role, x)
						st, b := w.call(w.tokens[role], method, path, body)
						cells++
						var got struct{ Code string }
						_ = json.Unmarshal(b, &got)
						if st != want || (wantCode != "" && got.Code != wantCode) {
							key := fmt.Sprintf("%s by %s on %s: %s = %d %q, want %d %q", e.name, role, x, method, st, got.Code, want, wantCode)
							if failed[key] == nil {
								order = append(order, key)
								t.Logf("first %s (%s): %s %s: %s", key, combo, method, path, brief(b))
							}
							failed[key] = append(failed[key], combo)
						} else if st == http.StatusOK && method == http.MethodGet && len(b) == 0 {
							t.Errorf("%s by %s on %s (%s): 200 with an empty body", e.name, role, x, combo)
						}
					}
				}
			}
		}
	}
	for _, key := range order {
		t.Errorf("%s (in %d of 6 states: %s)", key, len(failed[key]), strings.Join(failed[key], "; "))
	}
	t.Logf("%d cells (%d endpoints x %d roles x their targets x 6 privacy and lock states), %d wrong", cells, len(eps), len(mRoles), len(order))
}

// brief is a response body fit for a failure message: a short JSON error,
// or only the size of anything else (video).
func brief(b []byte) string {
	if len(b) > 200 || !json.Valid(b) {
		return fmt.Sprintf("<%d bytes>", len(b))
	}
	return string(b)
}

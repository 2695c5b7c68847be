package billing

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vigilcloud/vigil/accounts"
	"github.com/vigilcloud/vigil/cluster"
	"github.com/vigilcloud/vigil/internal/httpx"
	"github.com/vigilcloud/vigil/meter"
)

// Billing answers billing runs from the local replica.
type Billing struct {
	m        *cluster.Machine
	accounts *accounts.State
	usage    *meter.State
	sealer   Sealer
	now      func() time.Time
	log      *slog.Logger
	// skuPrefix goes before every SKU a run served names (SetSKUPrefix).
	skuPrefix string
	coverage  Coverage // nil: no entitlements (entitlements.go)
}

// Sealer seals usage up to a cut-off (*meter.Meter).
type Sealer interface {
	SealUsage(ctx context.Context, t time.Time) error
}

// New returns billing over the state of m. sealer and now may be nil for a
// harness that only evaluates (Run).
func New(m *cluster.Machine, accts *accounts.State, usage *meter.State, sealer Sealer, now func() time.Time, log *slog.Logger) *Billing {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Billing{m: m, accounts: accts, usage: usage, sealer: sealer, now: now, log: log}
}

// Run evaluates month (YYYY-MM) on the local state as it is, final (cut-off
// at the month's end) or as a preview with cut-off now, without sealing.
func (b *Billing) Run(month string, final bool, now time.Time) (BillingRun, error) {
	m, err := ParseMonth(month)
	if err != nil {
		return BillingRun{}, err
	}
	return b.run(m, final, now), nil
}

// BillingRun returns the run of month (YYYY-MM): final once the month has
// ended (the meter's usage is sealed at the cut-off first, through raft),
// a preview evaluated at now otherwise. A month that has not started is
// refused.
func (b *Billing) BillingRun(ctx context.Context, month string) (BillingRun, error) {
	mi, err := ParseMonth(month)
	if err != nil {
		return BillingRun{}, err
	}
	now := b.now().UTC()
	if now.Before(meter.MonthStart(mi)) {
		return BillingRun{}, cluster.Invalid("month_not_started", "month %s has not started yet", month)
	}
	final := !now.Before(CutOff(mi))
	if final {
		if err := b.sealer.SealUsage(ctx, CutOff(mi)); err != nil {
			return BillingRun{}, err
		}
	}
	run := b.run(mi, final, now)
	prefixSKUs(&run, b.skuPrefix)
	return run, nil
}

// Patterns are the http.ServeMux patterns Handler serves.
func Patterns() []string {
	return []string{"GET /v1/billing/runs/{month}"}
}

// Handler serves billing runs to the operator and billing tokens only.
func (b *Billing) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/billing/runs/{month}", meter.OperatorOrBilling(b.handleBillingRun))
	return mux
}

func (b *Billing) handleBillingRun(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	format, part := q.Get("format"), q.Get("part")
	if format == "" {
		format = "json"
	}
	if format != "json" && format != "csv" {
		httpx.WriteError(w, http.StatusBadRequest, "invalid_format", "format is json or csv")
		return
	}
	if part != "" && part != "summary" && part != "items" {
		httpx.WriteError(w, http.StatusBadRequest, "invalid_part", "part is summary or items")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	run, err := b.BillingRun(ctx, r.PathValue("month"))
	if err != nil {
		cluster.WriteError(w, r, b.log, err)
		return
	}
	body, ctype, err := RenderBillingRun(&run, format, part)
	if err != nil {
		cluster.WriteError(w, r, b.log, err)
		return
	}
	w.Header().Set("Content-Type", ctype)
	if run.Final {
		w.Header().Set("Cache-Control", "private, max-age=86400, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-store")
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// RenderBillingRun renders a run as JSON (part "" for everything, summary
// for the account summaries only, items for the line items only) or CSV
// (part summary: one row per account and SKU or analytic; otherwise the
// line items). The bytes are a function of the run alone.
func RenderBillingRun(run *BillingRun, format, part string) ([]byte, string, error) {
	if format == "csv" {
		var buf bytes.Buffer
		cw := csv.NewWriter(&buf)
		if part == "summary" {
			writeSummaryCSV(cw, run)
		} else {
			buf.Grow(160 * (run.Summary.Streams + 1)) // a line item row is ~140 bytes
			writeItemsCSV(cw, run)
		}
		cw.Flush()
		return buf.Bytes(), "text/csv; charset=utf-8", cw.Error()
	}
	var v any
	switch part {
	case "summary":
		c := *run
		c.Resellers = make([]ResellerRun, len(run.Resellers))
		for i, rr := range run.Resellers {
			rr.Accounts = append([]AccountRun(nil), rr.Accounts...)
			for j := range rr.Accounts {
				rr.Accounts[j].Items = nil
			}
			c.Resellers[i] = rr
		}
		v = c
	case "items":
		items := []LineItem{}
		for _, rr := range run.Resellers {
			for _, a := range rr.Accounts {
				items = append(items, a.Items...)
			}
		}
		v = struct {
			Month       string     `json:"month"`
			CutOff      time.Time  `json:"cutoff"`
			Final       bool       `json:"final"`
			GeneratedAt *time.Time `json:"generated_at,omitempty"`
			Items       []LineItem `json:"items"`
		}{run.Month, run.CutOff, run.Final, run.GeneratedAt, items}
	default:
		b, err := renderRunJSON(run)
		if err != nil {
			return nil, "", fmt.Errorf("meter: render billing run: %w", err)
		}
		return b, "application/json", nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, "", fmt.Errorf("meter: render billing run: %w", err)
	}
	return append(b, '\n'), "application/json", nil
}

// renderRunJSON is json.Marshal(run) plus a newline, written one account
// at a time into a buffer sized for the run: a run of 100,000 streams is
// tens of MB, and one json.Marshal of it spends more time growing and
// copying its buffer than encoding.
func renderRunJSON(run *BillingRun) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(400 * (run.Summary.Streams + 1)) // a line item is ~330 bytes
	enc := json.NewEncoder(&buf)
	// Encode ends each value with a newline, which Marshal does not.
	put := func(v any) error {
		if err := enc.Encode(v); err != nil {
			return err
		}
		buf.Truncate(buf.Len() - 1)
		return nil
	}
	// The run and each reseller without their lists end in `:null}` (the
	// lists are their last fields); the lists are written in their place.
	shell := func(v any) error {
		if err := put(v); err != nil {
			return err
		}
		if !bytes.HasSuffix(buf.Bytes(), []byte(":null}")) {
			return errors.New("unexpected JSON shape")
		}
		buf.Truncate(buf.Len() - len("null}"))
		return nil
	}
	list := func(n int, isNil bool, item func(i int) error) error {
		if isNil {
			buf.WriteString("null")
			return nil
		}
		buf.WriteByte('[')
		for i := range n {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := item(i); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
		return nil
	}
	top := *run
	top.Resellers = nil
	if err := shell(&top); err != nil {
		return nil, err
	}
	err := list(len(run.Resellers), run.Resellers == nil, func(i int) error {
		r := run.Resellers[i]
		r.Accounts = nil
		if err := shell(&r); err != nil {
			return err
		}
		accts := run.Resellers[i].Accounts
		if err := list(len(accts), accts == nil, func(j int) error { return put(&accts[j]) }); err != nil {
			return err
		}
		buf.WriteByte('}')
		return nil
	})
	if err != nil {
		return nil, err
	}
	buf.WriteString("}\n")
	return buf.Bytes(), nil
}

var itemsHeader = []string{"month", "final", "reseller", "account", "bridge", "camera", "stream", "sku", "analytics",
	"width", "height", "retention_days", "registered_at", "deleted_at", "cycle", "storage_bytes", "ingested_bytes",
	"stored_byte_hours", "change", "booked_sku", "months_left", "distributor", "covered", "covered_analytics"}

func writeItemsCSV(cw *csv.Writer, run *BillingRun) {
	_ = cw.Write(itemsHeader)
	final := strconv.FormatBool(run.Final)
	for _, rr := range run.Resellers {
		for _, a := range rr.Accounts {
			for _, it := range a.Items {
				del, left := "", ""
				if it.DeletedAt != nil {
					del = it.DeletedAt.Format(time.RFC3339Nano)
				}
				if it.MonthsLeft > 0 {
					left = strconv.Itoa(it.MonthsLeft)
				}
				_ = cw.Write([]string{run.Month, final, it.Reseller, it.Account, it.Bridge, it.Camera, it.Stream, it.SKU,
					strings.Join(it.Analytics, ";"), strconv.Itoa(it.Width), strconv.Itoa(it.Height),
					strconv.Itoa(it.RetentionDays), it.RegisteredAt.Format(time.RFC3339Nano), del, it.Cycle,
					strconv.FormatInt(it.StorageBytes, 10), strconv.FormatInt(it.IngestedBytes, 10),
					it.StoredByteHours.String(), it.Change, it.BookedSKU, left, it.Distributor, it.Covered, coveredCSV(it.CoveredAnalytics)})
			}
		}
	}
}

func writeSummaryCSV(cw *csv.Writer, run *BillingRun) {
	_ = cw.Write([]string{"month", "final", "reseller", "account", "cycle", "kind", "code", "count"})
	final := strconv.FormatBool(run.Final)
	for _, rr := range run.Resellers {
		for _, a := range rr.Accounts {
			for _, kv := range sortedCounts(a.Summary.SKUs) {
				_ = cw.Write([]string{run.Month, final, rr.ID, a.ID, a.Cycle, "sku", kv.k, strconv.Itoa(kv.v)})
			}
			for _, kv := range sortedCounts(a.Summary.Analytics) {
				_ = cw.Write([]string{run.Month, final, rr.ID, a.ID, a.Cycle, "analytic", kv.k, strconv.Itoa(kv.v)})
			}
		}
	}
}

type kv struct {
	k string
	v int
}

func sortedCounts(m map[string]int) []kv {
	out := make([]kv, 0, len(m))
	for k, v := range m {
		out = append(out, kv{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].k < out[j].k })
	return out
}

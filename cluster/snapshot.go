package cluster

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
)

// A snapshot is zstd-compressed JSON with one object per section:
//
//	{"sections":{"accounts":{...},"cluster":{...},...}}
//
// Snapshots written before sections are one flat object holding every
// section's fields; they restore too, since field names are unique across
// sections. At 100,000 streams the JSON is over a hundred MB: it is written
// and read one map entry at a time, so neither side holds it whole.

// objectWriter writes JSON objects whose maps go out one entry at a time.
type objectWriter struct {
	bw  *bufio.Writer
	one bytes.Buffer
	enc *json.Encoder
}

func newObjectWriter(w io.Writer) *objectWriter {
	ow := &objectWriter{bw: bufio.NewWriterSize(w, 64<<10)}
	// One Encoder into a reused buffer: json.Marshal would allocate and
	// copy every entry. Encode adds a newline, which Marshal does not.
	ow.enc = json.NewEncoder(&ow.one)
	return ow
}

func (ow *objectWriter) put(v any) error {
	ow.one.Reset()
	if err := ow.enc.Encode(v); err != nil {
		return err
	}
	_, err := ow.bw.Write(ow.one.Bytes()[:ow.one.Len()-1])
	return err
}

// fields writes json.Marshal of a struct holding fs, in that order.
func (ow *objectWriter) fields(fs []*field) error {
	ow.bw.WriteByte('{')
	first := true
	for _, f := range fs {
		if f.omitEmpty && isEmptyJSON(f.v) {
			continue
		}
		if !first {
			ow.bw.WriteByte(',')
		}
		first = false
		if err := ow.put(f.name); err != nil {
			return err
		}
		ow.bw.WriteByte(':')
		if err := ow.value(f); err != nil {
			return err
		}
	}
	ow.bw.WriteByte('}')
	return nil
}

func (ow *objectWriter) value(f *field) error {
	fv := f.v
	if fv.Kind() != reflect.Map || fv.IsNil() || fv.Type().Key().Kind() != reflect.String {
		if err := ow.put(fv.Interface()); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		return nil
	}
	keys := fv.MapKeys()
	slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
	ow.bw.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			ow.bw.WriteByte(',')
		}
		if err := ow.put(k.String()); err != nil {
			return err
		}
		ow.bw.WriteByte(':')
		if err := ow.put(fv.MapIndex(k).Interface()); err != nil {
			return fmt.Errorf("%s[%s]: %w", f.name, k.String(), err)
		}
	}
	ow.bw.WriteByte('}')
	return nil
}

// isEmptyJSON is encoding/json's omitempty test.
func isEmptyJSON(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Interface, reflect.Pointer:
		return v.IsZero()
	}
	return false
}

// writeSnapshot writes the sectioned state; the caller holds the lock.
func (m *Machine) writeSnapshot(w io.Writer) error {
	ow := newObjectWriter(w)
	ow.bw.WriteString(`{"sections":{`)
	secs := slices.Clone(m.sections)
	slices.SortFunc(secs, func(a, b *section) int { return strings.Compare(a.Name, b.Name) })
	for i, s := range secs {
		if i > 0 {
			ow.bw.WriteByte(',')
		}
		if err := ow.put(s.Name); err != nil {
			return err
		}
		ow.bw.WriteByte(':')
		if err := ow.fields(s.fields); err != nil {
			return fmt.Errorf("section %s: %w", s.Name, err)
		}
	}
	ow.bw.WriteString(`}}`)
	return ow.bw.Flush()
}

// digestFields orders every field for the digest: digestOrder, then the
// rest by name.
func (m *Machine) digestFields() []*field {
	out := make([]*field, 0, len(m.fields))
	for _, name := range digestOrder {
		if f := m.fields[name]; f != nil {
			out = append(out, f)
		}
	}
	var rest []*field
	for name, f := range m.fields {
		if !slices.Contains(digestOrder, name) {
			rest = append(rest, f)
		}
	}
	slices.SortFunc(rest, func(a, b *field) int { return strings.Compare(a.name, b.name) })
	return append(out, rest...)
}

// Digest hashes the state as one JSON object of every section's fields
// (the form snapshots had before sections, so a data directory keeps its
// digest across the change). encoding/json sorts map keys, so replicas
// that applied the same log have the same digest.
func (m *Machine) Digest() (string, error) {
	h := sha256.New()
	if err := m.WriteJSON(h); err != nil {
		return "", fmt.Errorf("meter: digest: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// objectReader reads a snapshot, one map entry at a time; unknown fields
// are refused.
type objectReader struct{ d *json.Decoder }

func (or objectReader) delim(want json.Delim) error {
	tok, err := or.d.Token()
	if err != nil {
		return err
	}
	if tok != want {
		return fmt.Errorf("want %v, found %v", want, tok)
	}
	return nil
}

// shadow is a fresh copy of every section's fields that a snapshot is
// decoded into before it replaces the state.
type shadow struct {
	fields   map[string]*field            // by field name, across sections
	sections map[string]map[string]*field // section → its fields by name
	decoded  []string                     // field names the snapshot held
}

func (m *Machine) newShadow() (*shadow, error) {
	sh := &shadow{fields: map[string]*field{}, sections: map[string]map[string]*field{}}
	for _, s := range m.sections {
		fs, err := structFields(reflect.New(reflect.TypeOf(s.State).Elem()).Interface())
		if err != nil {
			return nil, err
		}
		byName := map[string]*field{}
		for _, f := range fs {
			byName[f.name], sh.fields[f.name] = f, f
		}
		sh.sections[s.Name] = byName
	}
	return sh, nil
}

// read decodes a sectioned or a flat (older) snapshot.
func (sh *shadow) read(r io.Reader) error {
	d := json.NewDecoder(r)
	d.DisallowUnknownFields()
	or := objectReader{d}
	tok, err := d.Token()
	if errors.Is(err, io.EOF) {
		return errors.New("empty snapshot")
	}
	if err != nil {
		return err
	}
	if tok != json.Delim('{') {
		return fmt.Errorf("state is not an object (found %v)", tok)
	}
	sawSections := false
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return err
		}
		name, _ := tok.(string)
		if name == "sections" && !sawSections {
			sawSections = true
			if err := sh.readSections(or); err != nil {
				return err
			}
			continue
		}
		if err := sh.field(or, sh.fields[name], name); err != nil {
			return err
		}
	}
	if err := or.delim('}'); err != nil {
		return err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after state")
	}
	return nil
}

func (sh *shadow) readSections(or objectReader) error {
	if err := or.delim('{'); err != nil {
		return fmt.Errorf("sections: %w", err)
	}
	for or.d.More() {
		tok, err := or.d.Token()
		if err != nil {
			return err
		}
		name, _ := tok.(string)
		fields, ok := sh.sections[name]
		if !ok {
			return fmt.Errorf("unknown section %q", name)
		}
		if err := or.delim('{'); err != nil {
			return fmt.Errorf("section %s: %w", name, err)
		}
		for or.d.More() {
			tok, err := or.d.Token()
			if err != nil {
				return err
			}
			fname, _ := tok.(string)
			if err := sh.field(or, fields[fname], name+"."+fname); err != nil {
				return err
			}
		}
		if err := or.delim('}'); err != nil {
			return fmt.Errorf("section %s: %w", name, err)
		}
	}
	return or.delim('}')
}

// field decodes the next value into f (nil: an unknown field).
func (sh *shadow) field(or objectReader, f *field, name string) error {
	if f == nil {
		return fmt.Errorf("unknown field %q", name)
	}
	if slices.Contains(sh.decoded, f.name) {
		return fmt.Errorf("field %q twice", name)
	}
	if err := or.field(f); err != nil {
		return err
	}
	sh.decoded = append(sh.decoded, f.name)
	return nil
}

// field decodes one field's value, a string-keyed map one entry at a time.
func (or objectReader) field(f *field) error {
	d, fv, name := or.d, f.v, f.name
	if fv.Kind() != reflect.Map || fv.Type().Key().Kind() != reflect.String {
		if err := d.Decode(fv.Addr().Interface()); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	tok, err := d.Token()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if tok == nil { // null
		fv.SetZero()
		return nil
	}
	if tok != json.Delim('{') {
		return fmt.Errorf("%s: not an object (found %v)", name, tok)
	}
	if fv.IsNil() {
		fv.Set(reflect.MakeMap(fv.Type()))
	}
	et := fv.Type().Elem()
	for d.More() {
		kt, err := d.Token()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		k, _ := kt.(string)
		ev := reflect.New(et)
		if err := d.Decode(ev.Interface()); err != nil {
			return fmt.Errorf("%s[%s]: %w", name, k, err)
		}
		fv.SetMapIndex(reflect.ValueOf(k).Convert(fv.Type().Key()), ev.Elem())
	}
	if err := or.delim('}'); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

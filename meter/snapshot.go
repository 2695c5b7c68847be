package meter

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
)

// The snapshot is the state as JSON (exactly json.Marshal(st): map keys
// sorted, so equal states encode to equal bytes), zstd-compressed. At
// 100,000 streams that JSON is over a hundred MB: it is written and read
// one map entry at a time, so neither side holds it whole. Older snapshots
// (one zstd frame of the same JSON) restore the same way.

// stateField is a top-level field of state as encoding/json sees it.
type stateField struct {
	index     int
	name      string
	omitEmpty bool
}

// stateFields lists state's JSON fields in declaration order (the order
// json.Marshal writes them).
func stateFields() ([]stateField, error) {
	t := reflect.TypeFor[state]()
	var out []stateField
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if !f.IsExported() || tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" || f.Anonymous {
			return nil, fmt.Errorf("state field %s: streaming needs an explicit JSON name", f.Name)
		}
		sf := stateField{index: i, name: name}
		for _, o := range strings.Split(opts, ",") {
			switch o {
			case "":
			case "omitempty":
				sf.omitEmpty = true
			default:
				return nil, fmt.Errorf("state field %s: JSON option %q not supported by the streaming encoder", f.Name, o)
			}
		}
		out = append(out, sf)
	}
	return out, nil
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

// writeStateJSON writes json.Marshal(st) to w, the maps one entry at a time.
func writeStateJSON(w io.Writer, st *state) error {
	fields, err := stateFields()
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	// One Encoder into a reused buffer: json.Marshal would allocate and
	// copy every entry. Encode adds a newline, which Marshal does not.
	var one bytes.Buffer
	enc := json.NewEncoder(&one)
	put := func(v any) error {
		one.Reset()
		if err := enc.Encode(v); err != nil {
			return err
		}
		_, err := bw.Write(one.Bytes()[:one.Len()-1])
		return err
	}
	sv := reflect.ValueOf(st).Elem()
	bw.WriteByte('{')
	first := true
	for _, f := range fields {
		fv := sv.Field(f.index)
		if f.omitEmpty && isEmptyJSON(fv) {
			continue
		}
		if !first {
			bw.WriteByte(',')
		}
		first = false
		if err := put(f.name); err != nil {
			return err
		}
		bw.WriteByte(':')
		if fv.Kind() != reflect.Map || fv.IsNil() || fv.Type().Key().Kind() != reflect.String {
			if err := put(fv.Interface()); err != nil {
				return fmt.Errorf("%s: %w", f.name, err)
			}
			continue
		}
		keys := fv.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		bw.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				bw.WriteByte(',')
			}
			if err := put(k.String()); err != nil {
				return err
			}
			bw.WriteByte(':')
			if err := put(fv.MapIndex(k).Interface()); err != nil {
				return fmt.Errorf("%s[%s]: %w", f.name, k.String(), err)
			}
		}
		bw.WriteByte('}')
	}
	bw.WriteByte('}')
	return bw.Flush()
}

// readStateJSON decodes a state written by writeStateJSON (or json.Marshal)
// into st, the maps one entry at a time; unknown fields are refused.
func readStateJSON(r io.Reader, st *state) error {
	fields, err := stateFields()
	if err != nil {
		return err
	}
	byName := make(map[string]stateField, len(fields))
	for _, f := range fields {
		byName[f.name] = f
	}
	d := json.NewDecoder(r)
	d.DisallowUnknownFields()
	delim := func(want json.Delim) error {
		tok, err := d.Token()
		if err != nil {
			return err
		}
		if tok != want {
			return fmt.Errorf("want %v, found %v", want, tok)
		}
		return nil
	}
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
	sv := reflect.ValueOf(st).Elem()
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return err
		}
		name, _ := tok.(string)
		f, ok := byName[name]
		if !ok {
			return fmt.Errorf("unknown field %q", name)
		}
		fv := sv.Field(f.index)
		if fv.Kind() != reflect.Map || fv.Type().Key().Kind() != reflect.String {
			if err := d.Decode(fv.Addr().Interface()); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			continue
		}
		tok, err = d.Token()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if tok == nil { // null
			fv.SetZero()
			continue
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
		if err := delim('}'); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := delim('}'); err != nil {
		return err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after state")
	}
	return nil
}

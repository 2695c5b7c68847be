package fmp4

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/vigilcloud/vigil/media/aac"
)

// eachBox calls fn for every child box in b, checking that sizes nest.
func eachBox(b []byte, fn func(typ string, body []byte) error) error {
	for len(b) > 0 {
		if len(b) < 8 {
			return malformed("%d stray bytes after the last box", len(b))
		}
		size := uint64(binary.BigEndian.Uint32(b))
		typ := string(b[4:8])
		hdr := uint64(8)
		switch size {
		case 0:
			size = uint64(len(b))
		case 1:
			if len(b) < 16 {
				return malformed("box %q: truncated large size", typ)
			}
			size, hdr = binary.BigEndian.Uint64(b[8:]), 16
		}
		if size < hdr || size > uint64(len(b)) {
			return malformed("box %q of %d bytes in %d left in its parent", typ, size, len(b))
		}
		if err := fn(typ, b[hdr:size]); err != nil {
			return err
		}
		b = b[size:]
	}
	return nil
}

// fullBox splits a full box body into version, flags and the rest.
func fullBox(typ string, b []byte) (uint8, uint32, []byte, error) {
	if len(b) < 4 {
		return 0, 0, nil, malformed("%q too short", typ)
	}
	v := binary.BigEndian.Uint32(b)
	return uint8(v >> 24), v & 0xffffff, b[4:], nil
}

// afterTimes returns a cursor over a tkhd/mdhd body past its version
// dependent creation and modification times.
func afterTimes(typ string, b []byte) (uint8, *cursor, error) {
	v, _, rest, err := fullBox(typ, b)
	if err != nil {
		return 0, nil, err
	}
	c := &cursor{b: rest}
	c.next(8 << (v & 1))
	return v, c, nil
}

// cursor reads big-endian fields with a sticky short-read flag.
type cursor struct {
	b     []byte
	short bool
}

func (c *cursor) next(n int) []byte {
	if c.short || n < 0 || len(c.b) < n {
		c.short = true
		// Zeros for the fixed-size readers; never an allocation sized by
		// the input.
		return make([]byte, min(max(n, 0), 8))
	}
	p := c.b[:n]
	c.b = c.b[n:]
	return p
}
func (c *cursor) u8() uint8   { return c.next(1)[0] }
func (c *cursor) u16() uint16 { return binary.BigEndian.Uint16(c.next(2)) }
func (c *cursor) u32() uint32 { return binary.BigEndian.Uint32(c.next(4)) }
func (c *cursor) u64() uint64 { return binary.BigEndian.Uint64(c.next(8)) }

func (r *Reader) parseMoov(body []byte) ([]Track, error) {
	r.tracks = map[uint32]*trackState{}
	var tracks []Track
	err := eachBox(body, func(typ string, b []byte) error {
		switch typ {
		case "trak":
			t, ok, err := parseTrak(b)
			if err != nil {
				return err
			}
			if contains(r.order, t.ID) {
				return malformed("duplicate track id %d", t.ID)
			}
			ts := r.tracks[t.ID]
			if ts == nil { // no trex seen yet
				ts = &trackState{}
				r.tracks[t.ID] = ts
			}
			ts.supported, ts.timeScale = ok, t.TimeScale
			r.order = append(r.order, t.ID)
			if ok {
				tracks = append(tracks, t)
			}
		case "mvex":
			return eachBox(b, func(typ string, b []byte) error {
				if typ != "trex" {
					return nil
				}
				_, _, rest, err := fullBox(typ, b)
				if err != nil {
					return err
				}
				c := cursor{b: rest}
				id := c.u32()
				c.u32() // default_sample_description_index
				dur, size, flags := c.u32(), c.u32(), c.u32()
				if c.short {
					return malformed("trex too short")
				}
				ts := r.tracks[id]
				if ts == nil {
					// mvex may come before the traks; keep the defaults anyway.
					ts = &trackState{}
					r.tracks[id] = ts
				}
				ts.defDuration, ts.defSize, ts.defFlags = dur, size, flags
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(r.order) == 0 {
		return nil, malformed("moov without tracks")
	}
	for id := range r.tracks {
		if !contains(r.order, id) {
			return nil, malformed("trex for unknown track %d", id)
		}
	}
	return tracks, nil
}

func contains(ids []uint32, id uint32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// parseTrak returns the track and whether its codec is supported.
func parseTrak(b []byte) (Track, bool, error) {
	var t Track
	var handler string
	var entryType string
	var entry []byte
	var tkW, tkH int
	err := eachBox(b, func(typ string, b []byte) error {
		switch typ {
		case "tkhd":
			v, c, err := afterTimes(typ, b)
			if err != nil {
				return err
			}
			t.ID = c.u32()
			c.next(4)            // reserved
			c.next(4 << (v & 1)) // duration
			c.next(8 + 8 + 36)
			tkW, tkH = int(c.u32()>>16), int(c.u32()>>16)
			if c.short {
				return malformed("tkhd too short")
			}
		case "mdia":
			return eachBox(b, func(typ string, b []byte) error {
				switch typ {
				case "mdhd":
					_, c, err := afterTimes(typ, b)
					if err != nil {
						return err
					}
					t.TimeScale = c.u32()
					if c.short {
						return malformed("mdhd too short")
					}
				case "hdlr":
					_, _, rest, err := fullBox(typ, b)
					if err != nil {
						return err
					}
					if len(rest) < 8 {
						return malformed("hdlr too short")
					}
					handler = string(rest[4:8])
				case "minf":
					return eachBox(b, func(typ string, b []byte) error {
						if typ != "stbl" {
							return nil
						}
						return eachBox(b, func(typ string, b []byte) error {
							if typ != "stsd" {
								return nil
							}
							_, _, rest, err := fullBox(typ, b)
							if err != nil {
								return err
							}
							if len(rest) < 4 {
								return malformed("stsd too short")
							}
							first := true
							return eachBox(rest[4:], func(typ string, b []byte) error {
								if first {
									entryType, entry, first = typ, b, false
								}
								return nil
							})
						})
					})
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return t, false, err
	}
	if t.ID == 0 {
		return t, false, malformed("trak without tkhd or with track id 0")
	}
	if t.TimeScale == 0 {
		return t, false, malformed("track %d: no mdhd timescale", t.ID)
	}
	if entry == nil {
		return t, false, malformed("track %d: no sample description", t.ID)
	}
	var ok bool
	switch {
	case handler == "vide" && (entryType == "avc1" || entryType == "avc3" || entryType == "hvc1" || entryType == "hev1"):
		ok, err = parseVisualEntry(&t, entryType, entry)
		if ok && (t.Width == 0 || t.Height == 0) {
			t.Width, t.Height = tkW, tkH
		}
	case handler == "soun" && (entryType == "mp4a" || entryType == "Opus"):
		ok, err = parseAudioEntry(&t, entryType, entry)
	}
	if err != nil {
		return t, false, fmt.Errorf("track %d: %w", t.ID, err)
	}
	return t, ok, nil
}

func parseVisualEntry(t *Track, typ string, b []byte) (bool, error) {
	if len(b) < 78 {
		return false, malformed("%q sample entry too short", typ)
	}
	t.Width, t.Height = int(binary.BigEndian.Uint16(b[24:])), int(binary.BigEndian.Uint16(b[26:]))
	found := false
	err := eachBox(b[78:], func(ct string, b []byte) error {
		var err error
		switch {
		case ct == "avcC" && (typ == "avc1" || typ == "avc3"):
			t.Codec, found = H264, true
			err = parseAVCC(t, b)
		case ct == "hvcC" && (typ == "hvc1" || typ == "hev1"):
			t.Codec, found = H265, true
			err = parseHVCC(t, b)
		}
		return err
	})
	if err != nil {
		return false, err
	}
	if !found {
		return false, malformed("%q without its decoder configuration", typ)
	}
	return true, nil
}

// readParamSet reads a 16-bit length and that many bytes.
func readParamSet(c *cursor) []byte {
	n := int(c.u16())
	p := c.next(n)
	if c.short {
		return nil
	}
	return append([]byte(nil), p...)
}

func parseAVCC(t *Track, b []byte) error {
	c := cursor{b: b}
	c.next(4) // version, profile, compatibility, level
	if c.u8()&3 != 3 {
		return malformed("avcC: only 4-byte NAL lengths are supported")
	}
	for i, n := 0, int(c.u8()&0x1f); i < n; i++ {
		if p := readParamSet(&c); i == 0 {
			t.SPS = p
		}
	}
	for i, n := 0, int(c.u8()); i < n; i++ {
		if p := readParamSet(&c); i == 0 {
			t.PPS = p
		}
	}
	if c.short || len(t.SPS) == 0 || len(t.PPS) == 0 {
		return malformed("avcC truncated or without SPS/PPS")
	}
	return nil
}

func parseHVCC(t *Track, b []byte) error {
	if len(b) < 23 {
		return malformed("hvcC too short")
	}
	if b[21]&3 != 3 {
		return malformed("hvcC: only 4-byte NAL lengths are supported")
	}
	c := cursor{b: b[23:]}
	for i, n := 0, int(b[22]); i < n && !c.short; i++ {
		typ := c.u8() & 0x3f
		for j, m := 0, int(c.u16()); j < m && !c.short; j++ {
			p := readParamSet(&c)
			switch {
			case typ == 32 && t.VPS == nil:
				t.VPS = p
			case typ == 33 && t.SPS == nil:
				t.SPS = p
			case typ == 34 && t.PPS == nil:
				t.PPS = p
			}
		}
	}
	if c.short || len(t.VPS) == 0 || len(t.SPS) == 0 || len(t.PPS) == 0 {
		return malformed("hvcC truncated or without VPS/SPS/PPS")
	}
	return nil
}

func parseAudioEntry(t *Track, typ string, b []byte) (bool, error) {
	if len(b) < 28 {
		return false, malformed("%q sample entry too short", typ)
	}
	children := 28
	switch binary.BigEndian.Uint16(b[8:]) { // QuickTime sound description version
	case 1:
		children += 16
	case 2:
		children += 36
	}
	if len(b) < children {
		return false, malformed("%q sample entry too short", typ)
	}
	t.Channels = int(binary.BigEndian.Uint16(b[16:]))
	t.SampleRate = int(binary.BigEndian.Uint32(b[24:]) >> 16)
	found := false
	err := eachBox(b[children:], func(ct string, body []byte) error {
		switch {
		case ct == "esds" && typ == "mp4a":
			_, _, rest, err := fullBox(ct, body)
			if err != nil {
				return err
			}
			asc, err := parseESDS(rest)
			if err != nil {
				return err
			}
			cfg, err := aac.ParseConfig(asc)
			if err != nil {
				return fmt.Errorf("fmp4: %w: esds: %w", ErrMalformed, err)
			}
			t.Codec, t.AACConfig, found = AAC, asc, true
			t.SampleRate, t.Channels = cfg.SampleRate, cfg.Channels
		case ct == "dOps" && typ == "Opus":
			if len(body) < 11 {
				return malformed("dOps too short")
			}
			t.Codec, t.Channels, found = Opus, int(body[1]), true
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	if !found {
		return false, malformed("%q without its decoder configuration", typ)
	}
	if t.Channels == 0 || t.SampleRate == 0 {
		return false, malformed("%q: %d Hz, %d channels", typ, t.SampleRate, t.Channels)
	}
	return true, nil
}

// descriptorBody reads one MPEG-4 descriptor header (tag, expandable size).
func descriptorBody(c *cursor) (byte, []byte) {
	tag := c.u8()
	n := 0
	for i := 0; i < 4; i++ {
		b := c.u8()
		n = n<<7 | int(b&0x7f)
		if b&0x80 == 0 {
			break
		}
	}
	return tag, c.next(n)
}

// parseESDS returns the DecoderSpecificInfo (the AudioSpecificConfig).
func parseESDS(b []byte) ([]byte, error) {
	c := cursor{b: b}
	tag, es := descriptorBody(&c)
	if c.short || tag != 0x03 {
		return nil, malformed("esds: no ES_Descriptor")
	}
	c = cursor{b: es}
	c.next(2) // ES_ID
	flags := c.u8()
	if flags&0x80 != 0 {
		c.next(2)
	}
	if flags&0x40 != 0 {
		c.next(int(c.u8()))
	}
	if flags&0x20 != 0 {
		c.next(2)
	}
	for !c.short && len(c.b) > 0 {
		tag, body := descriptorBody(&c)
		if c.short || tag != 0x04 {
			continue
		}
		d := cursor{b: body}
		d.next(13)
		for !d.short && len(d.b) > 0 {
			tag, asc := descriptorBody(&d)
			if !d.short && tag == 0x05 {
				return append([]byte(nil), asc...), nil
			}
		}
	}
	return nil, malformed("esds: no DecoderSpecificInfo")
}

// parseMoof builds the fragment and, per sample in order, where its data
// sits in the stream.
func (r *Reader) parseMoof(moofStart int64, body []byte) (Fragment, []sampleRef, error) {
	var f Fragment
	var refs []sampleRef
	seenMfhd := false
	total := 0           // samples in all trafs, read or not
	dataEnd := moofStart // where the previous traf's data ended
	first := true
	err := eachBox(body, func(typ string, b []byte) error {
		switch typ {
		case "mfhd":
			_, _, rest, err := fullBox(typ, b)
			if err != nil || len(rest) < 4 {
				return malformed("mfhd too short")
			}
			f.SequenceNumber, seenMfhd = binary.BigEndian.Uint32(rest), true
		case "traf":
			tf, trefs, end, supported, err := r.parseTraf(b, moofStart, dataEnd, first, &total)
			if err != nil {
				return err
			}
			first, dataEnd = false, end
			if supported {
				f.Tracks = append(f.Tracks, tf)
				refs = append(refs, trefs...)
			}
		}
		return nil
	})
	if err != nil {
		return f, nil, err
	}
	if !seenMfhd {
		return f, nil, malformed("moof without mfhd")
	}
	return f, refs, nil
}

func (r *Reader) parseTraf(b []byte, moofStart, prevEnd int64, first bool, total *int) (TrackFragment, []sampleRef, int64, bool, error) {
	var tf TrackFragment
	var refs []sampleRef
	var ts *trackState
	var base int64
	var defDur, defSize, defFlags uint32
	hasTfdt := false
	pos := int64(-1) // where the next trun's data starts without a data offset
	err := eachBox(b, func(typ string, b []byte) error {
		switch typ {
		case "tfhd":
			_, flags, rest, err := fullBox(typ, b)
			if err != nil {
				return err
			}
			c := cursor{b: rest}
			tf.TrackID = c.u32()
			if ts = r.tracks[tf.TrackID]; ts == nil || ts.timeScale == 0 {
				return malformed("traf for unknown track %d", tf.TrackID)
			}
			defDur, defSize, defFlags = ts.defDuration, ts.defSize, ts.defFlags
			switch {
			case flags&tfhdBaseDataOffset != 0:
				v := c.u64()
				if v > math.MaxInt64/2 {
					return malformed("base_data_offset %d", v)
				}
				base = int64(v)
			case flags&tfhdDefaultBaseIsMoof != 0 || first:
				base = moofStart
			default:
				base = prevEnd
			}
			if flags&tfhdSampleDescription != 0 {
				c.u32()
			}
			if flags&tfhdDefaultDuration != 0 {
				defDur = c.u32()
			}
			if flags&tfhdDefaultSize != 0 {
				defSize = c.u32()
			}
			if flags&tfhdDefaultFlags != 0 {
				defFlags = c.u32()
			}
			if c.short {
				return malformed("tfhd too short")
			}
			pos = base
		case "tfdt":
			v, _, rest, err := fullBox(typ, b)
			if err != nil {
				return err
			}
			c := cursor{b: rest}
			if v == 1 {
				tf.BaseDecodeTime = c.u64()
			} else {
				tf.BaseDecodeTime = uint64(c.u32())
			}
			if c.short {
				return malformed("tfdt too short")
			}
			hasTfdt = true
		case "trun":
			if ts == nil {
				return malformed("trun before tfhd")
			}
			_, flags, rest, err := fullBox(typ, b)
			if err != nil {
				return err
			}
			c := cursor{b: rest}
			count := c.u32()
			if flags&trunDataOffset != 0 {
				pos = base + int64(int32(c.u32()))
			}
			firstFlags, hasFirst := uint32(0), flags&trunFirstFlags != 0
			if hasFirst {
				firstFlags = c.u32()
			}
			per := 0
			for _, bit := range []uint32{trunDuration, trunSize, trunFlags, trunCTO} {
				if flags&bit != 0 {
					per += 4
				}
			}
			if c.short || uint64(count)*uint64(per) > uint64(len(c.b)) || *total+int(count) > maxSamples {
				return malformed("trun of %d samples in %d bytes", count, len(c.b))
			}
			*total += int(count)
			for i := uint32(0); i < count; i++ {
				s := Sample{Duration: defDur}
				size, sflags := defSize, defFlags
				if i == 0 && hasFirst {
					sflags = firstFlags
				}
				if flags&trunDuration != 0 {
					s.Duration = c.u32()
				}
				if flags&trunSize != 0 {
					size = c.u32()
				}
				if flags&trunFlags != 0 {
					sflags = c.u32()
				}
				if flags&trunCTO != 0 {
					// Version 0 offsets are unsigned; writers only use
					// them non-negative below 2^31.
					s.PTSOffset = int32(c.u32())
				}
				s.Keyframe = sflags&0x00010000 == 0
				tf.Samples = append(tf.Samples, s)
				refs = append(refs, sampleRef{pos: pos, size: size})
				pos += int64(size)
			}
		}
		return nil
	})
	if err != nil {
		return tf, nil, 0, false, err
	}
	if ts == nil {
		return tf, nil, 0, false, malformed("traf without tfhd")
	}
	if !hasTfdt {
		tf.BaseDecodeTime = ts.nextDTS
	}
	end := tf.BaseDecodeTime
	for _, s := range tf.Samples {
		end += uint64(s.Duration)
	}
	ts.nextDTS = end
	return tf, refs, pos, ts.supported, nil
}

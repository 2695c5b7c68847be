package segmenter

import (
	"bytes"
	"testing"
)

// TestAUPoolKeepsSizesApart: small pictures never get a keyframe-sized
// buffer, a picture outgrowing a small buffer keeps its bytes when it moves
// to a large one, and oversized buffers are not kept at all.
func TestAUPoolKeepsSizesApart(t *testing.T) {
	var p auPool
	for i := range 50 {
		au := p.get()
		if cap(au.data) > poolSlack {
			t.Fatalf("get %d: a %d-byte buffer for a new picture", i, cap(au.data))
		}
		head := bytes.Repeat([]byte{byte(i)}, 1000)
		p.grow(au, len(head))
		au.data = append(au.data, head...)
		// A keyframe: far more than a small buffer holds.
		p.grow(au, 3*poolSlack)
		if cap(au.data) < len(head)+3*poolSlack || !bytes.Equal(au.data, head) {
			t.Fatalf("grow %d: cap %d, %d bytes kept (want %d)", i, cap(au.data), len(au.data), len(head))
		}
		au.data = append(au.data, make([]byte, 3*poolSlack)...)
		p.put(au)
		small := p.get()
		small.data = append(small.data, 1, 2, 3)
		p.put(small)
	}
	huge := &accessUnit{data: make([]byte, 0, 2*maxPooledAU)}
	p.put(huge)
	for range 100 {
		if au := p.get(); cap(au.data) > poolSlack {
			t.Fatalf("small pool handed out %d bytes", cap(au.data))
		}
		if l, ok := p.large.Get().(*accessUnit); ok && cap(l.data) > maxPooledAU {
			t.Fatalf("pool kept a %d-byte buffer", cap(l.data))
		}
	}
}

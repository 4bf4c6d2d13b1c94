package audio

import (
	"math"
	"testing"
)

// Every code decodes to a value that encodes back to the same code (but
// the two zeros of each law, which encode to the positive one), and
// encoding a sample lands on the nearest segment step: the error stays
// within half a step of the segment, about 3% of the magnitude.
func TestG711RoundTrip(t *testing.T) {
	for _, law := range []struct {
		name   string
		dec    func(byte) int16
		enc    func(int16) byte
		silent byte // the code of 0
	}{{"mu-law", muLawToLinear, linearToMuLaw, 0xff}, {"A-law", aLawToLinear, linearToALaw, 0xd5}} {
		if v := law.dec(law.silent); math.Abs(float64(v)) > 8 {
			t.Errorf("%s: silence decodes to %d", law.name, v)
		}
		for c := range 256 {
			v := law.dec(byte(c))
			if back := law.enc(v); back != byte(c) && law.dec(back) != v {
				t.Errorf("%s: code %#02x → %d → %#02x", law.name, c, v, back)
			}
		}
		for x := -32768; x <= 32767; x += 7 {
			got := float64(law.dec(law.enc(int16(x))))
			if d := math.Abs(got - float64(x)); d > 0.035*math.Abs(float64(x))+36 {
				t.Fatalf("%s: %d → %v (error %v)", law.name, x, got, d)
			}
		}
	}
	// The laws' known values: full scale.
	if v := muLawToLinear(0x00); v != -32124 {
		t.Errorf("mu-law 0x00 → %d, want -32124", v)
	}
	if v := aLawToLinear(0xaa); v != 32256 {
		t.Errorf("A-law 0xaa → %d, want 32256", v)
	}
}

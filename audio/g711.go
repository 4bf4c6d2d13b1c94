package audio

// G.711, the telephone network's 8-kHz companded PCM: μ-law (North America,
// Japan) and A-law (elsewhere), one byte a sample. Each byte holds a sign,
// a 3-bit segment (exponent) and a 4-bit step within it; the segments
// double in size, so quiet sounds keep their precision.

// G711Rate is the sample rate of G.711 audio.
const G711Rate = 8000

// DecodeMuLaw turns μ-law bytes into samples in [-1, 1].
func DecodeMuLaw(b []byte) []float32 {
	out := make([]float32, len(b))
	for i, u := range b {
		out[i] = float32(muLawToLinear(u)) / 32768
	}
	return out
}

// EncodeMuLaw turns samples (clipped to [-1, 1]) into μ-law bytes.
func EncodeMuLaw(s []float32) []byte {
	out := make([]byte, len(s))
	for i, v := range s {
		out[i] = linearToMuLaw(toInt16(v))
	}
	return out
}

// DecodeALaw turns A-law bytes into samples in [-1, 1].
func DecodeALaw(b []byte) []float32 {
	out := make([]float32, len(b))
	for i, a := range b {
		out[i] = float32(aLawToLinear(a)) / 32768
	}
	return out
}

// EncodeALaw turns samples (clipped to [-1, 1]) into A-law bytes.
func EncodeALaw(s []float32) []byte {
	out := make([]byte, len(s))
	for i, v := range s {
		out[i] = linearToALaw(toInt16(v))
	}
	return out
}

// μ-law adds a bias of 132 to the magnitude so that every segment's steps
// start at a power of two; the code is stored inverted.
const (
	muLawBias = 0x84
	muLawClip = 32635
)

func muLawToLinear(u byte) int16 {
	u = ^u
	mag := (int(u&0x0f)<<3 + muLawBias) << ((u & 0x70) >> 4)
	if u&0x80 != 0 {
		return int16(muLawBias - mag)
	}
	return int16(mag - muLawBias)
}

func linearToMuLaw(s int16) byte {
	x, sign := int(s), 0
	if x < 0 {
		x, sign = -x, 0x80
	}
	x = min(x, muLawClip) + muLawBias
	seg := 7
	for bit := 0x4000; x&bit == 0 && seg > 0; bit >>= 1 {
		seg--
	}
	return ^byte(sign | seg<<4 | (x>>(seg+3))&0x0f)
}

// A-law works on 13-bit magnitudes; its first two segments have the same
// step, and even bits are inverted on the line (XOR 0x55).
func aLawToLinear(a byte) int16 {
	a ^= 0x55
	mag := int(a&0x0f)<<4 + 8
	if seg := int(a&0x70) >> 4; seg > 0 {
		mag = (mag + 0x100) << (seg - 1)
	}
	if a&0x80 != 0 {
		return int16(mag)
	}
	return int16(-mag)
}

func linearToALaw(s int16) byte {
	x := int(s) >> 3
	mask := byte(0xd5)
	if x < 0 {
		x, mask = -x-1, 0x55
	}
	seg := 0
	for seg < 8 && x > 0x1f<<seg|(1<<seg-1) {
		seg++
	}
	if seg == 8 {
		return 0x7f ^ mask
	}
	code := seg << 4
	if seg < 2 {
		code |= (x >> 1) & 0x0f
	} else {
		code |= (x >> seg) & 0x0f
	}
	return byte(code) ^ mask
}

package audio

import (
	"fmt"
	"math"
)

// Resampler converts a stream of samples from one rate to another with a
// windowed-sinc filter (Kaiser window, β 10): a cutoff just below the lower
// Nyquist frequency keeps aliasing and imaging under about -90 dB, and the
// passband is flat to within 1e-4. It is streaming: Write may be called
// with pieces of any size, and Flush ends the stream.
type Resampler struct {
	from, to int
	ratio    float64 // output samples per input sample
	cutoff   float64 // filter cutoff as a fraction of the input rate
	half     float64 // half-width of the kernel in input samples
	gain     float64
	table    []float64 // kernel by distance in input samples, tableRes steps per sample

	// For rational ratios (to/from = up/down in lowest terms, up ≤
	// maxPhases) the kernel is precomputed for each of the up phases an
	// output can fall on: bank[p] holds taps for input samples lo..lo+taps-1.
	up, down int64
	taps     int
	bank     [][]float64

	buf   []float64 // input not yet consumed; buf[0] is input sample base
	base  int64     // index of buf[0] in the whole input
	next  int64     // index of the next output sample
	ended bool
}

const (
	kaiserBeta      = 10.0
	zeroCrossings   = 48   // of the low-rate sinc on each side of the kernel
	tableRes        = 1024 // kernel table steps per input sample (scaled)
	resampleRolloff = 0.94
)

// NewResampler converts from one sample rate to another.
func NewResampler(from, to int) (*Resampler, error) {
	if from < 1000 || from > 768000 || to < 1000 || to > 768000 {
		return nil, fmt.Errorf("%w: resampling %d Hz to %d Hz", ErrBadAudio, from, to)
	}
	r := &Resampler{from: from, to: to, ratio: float64(to) / float64(from)}
	scale := min(1, r.ratio) // the filter follows the lower of the two rates
	r.cutoff = 0.5 * scale * resampleRolloff
	r.half = zeroCrossings / scale
	r.gain = 2 * r.cutoff
	n := int(math.Ceil(r.half*tableRes)) + 2
	r.table = make([]float64, n)
	i0 := besselI0(kaiserBeta)
	for i := range r.table {
		x := float64(i) / tableRes // distance in input samples
		if x > r.half {
			break
		}
		w := besselI0(kaiserBeta*math.Sqrt(1-(x/r.half)*(x/r.half))) / i0
		r.table[i] = r.gain * sinc(2*r.cutoff*x) * w
	}
	g := gcd(int64(from), int64(to))
	if up := int64(to) / g; up <= maxPhases {
		r.up, r.down = up, int64(from)/g
		r.taps = int(2*math.Floor(r.half)) + 2
		r.bank = make([][]float64, up)
		for p := range r.bank {
			// Output n with n mod up == p sits at input position
			// n·down/up = k + p·down/up for some integer k.
			frac := math.Mod(float64(int64(p)*r.down)/float64(up), 1)
			lo := math.Ceil(frac - r.half)
			taps := make([]float64, r.taps)
			for j := range taps {
				taps[j] = r.kernel(frac - (lo + float64(j)))
			}
			r.bank[p] = taps
		}
	}
	return r, nil
}

// maxPhases bounds the precomputed filter bank (phases × taps floats).
const maxPhases = 4096

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	return math.Sin(math.Pi*x) / (math.Pi * x)
}

// besselI0 is the modified Bessel function of the first kind, order 0.
func besselI0(x float64) float64 {
	sum, term := 1.0, 1.0
	for k := 1; k < 200; k++ {
		term *= (x / (2 * float64(k))) * (x / (2 * float64(k)))
		sum += term
		if term < sum*1e-17 {
			break
		}
	}
	return sum
}

// kernel is the filter at distance d (input samples), from the table.
func (r *Resampler) kernel(d float64) float64 {
	d = math.Abs(d)
	if d >= r.half {
		return 0
	}
	p := d * tableRes
	i := int(p)
	f := p - float64(i)
	return r.table[i]*(1-f) + r.table[i+1]*f
}

// Write adds input samples and returns the output samples that are complete.
func (r *Resampler) Write(in []float32) []float32 {
	for _, s := range in {
		r.buf = append(r.buf, float64(s))
	}
	return r.drain(false)
}

// Flush ends the input (as if followed by silence) and returns the
// remaining output, so that the whole output has the input's duration.
func (r *Resampler) Flush() []float32 {
	r.ended = true
	return r.drain(true)
}

func (r *Resampler) drain(final bool) []float32 {
	var out []float32
	total := r.base + int64(len(r.buf)) // input samples seen
	lastOut := int64(math.Ceil(float64(total)*r.ratio)) - 1
	for {
		t := float64(r.next) / r.ratio // position in input samples
		if final {
			if r.next > lastOut {
				break
			}
		} else if t+r.half >= float64(total) {
			break // the kernel needs input not yet seen
		}
		sum := 0.0
		if r.bank != nil {
			// Exact rational position: k + frac with k = n·down div up.
			p := r.next % r.up
			k := r.next * r.down / r.up
			frac := math.Mod(float64(p*r.down)/float64(r.up), 1)
			lo := k + int64(math.Ceil(frac-r.half))
			taps := r.bank[p]
			for j, c := range taps {
				i := lo + int64(j)
				if i >= r.base && i < total {
					sum += r.buf[i-r.base] * c
				}
			}
		} else {
			lo := int64(math.Ceil(t - r.half))
			hi := int64(math.Floor(t + r.half))
			for i := max(lo, r.base); i <= hi && i < total; i++ {
				sum += r.buf[i-r.base] * r.kernel(t-float64(i))
			}
		}
		out = append(out, float32(sum))
		r.next++
	}
	// Drop input no later output will reach.
	keepFrom := int64(math.Floor(float64(r.next)/r.ratio - r.half))
	if drop := keepFrom - r.base; drop > 0 {
		drop = min(drop, int64(len(r.buf)))
		r.buf = r.buf[drop:]
		r.base += drop
	}
	return out
}

// Resample converts samples from one rate to another in one go.
func Resample(samples []float32, from, to int) ([]float32, error) {
	if from == to {
		return samples, nil
	}
	r, err := NewResampler(from, to)
	if err != nil {
		return nil, err
	}
	out := r.Write(samples)
	return append(out, r.Flush()...), nil
}

package speech

import (
	"math"
	"runtime"
	"sync"

	"gonum.org/v1/gonum/dsp/fourier"
)

// The log-mel front end of Whisper: 16-kHz audio, 25-ms frames every 10 ms.
const (
	SampleRate  = 16000
	nFFT        = 400
	hopLength   = 160
	nBins       = nFFT/2 + 1
	windowSecs  = 30
	windowSamps = SampleRate * windowSecs
	// WindowFrames is the number of mel frames in one 30-second window.
	WindowFrames = windowSamps / hopLength
)

// hann is the periodic Hann window of nFFT samples.
var hann = func() [nFFT]float64 {
	var w [nFFT]float64
	for i := range w {
		w[i] = 0.5 * (1 - math.Cos(2*math.Pi*float64(i)/nFFT))
	}
	return w
}()

// Mel is a log-mel spectrogram: NMels rows of NFrames values (Data[m*NFrames+t]).
type Mel struct {
	NMels   int
	NFrames int // frames including the 30 s of padding at the end
	Content int // frames that cover the audio itself
	Data    []float32
}

// LogMel computes Whisper's log-mel spectrogram of samples (16 kHz, mono)
// with filters (nMels rows of 201 weights), as OpenAI's reference does: the
// audio is reflect-padded by 200 samples at the start and followed by 30 s
// of silence; each frame's power spectrum is projected on the filters, then
// log10, floored at the maximum minus 8, and scaled as (x+4)/4.
func LogMel(samples []float32, filters []float32, nMels, threads int) Mel {
	const pad = nFFT / 2
	padded := make([]float64, pad+len(samples)+windowSamps+pad)
	for i, s := range samples {
		padded[pad+i] = float64(s)
	}
	for i := 0; i < pad && i+1 < len(samples); i++ {
		padded[pad-1-i] = float64(samples[i+1])
	}
	nFrames := (len(padded) - nFFT) / hopLength
	content := 0
	if len(samples) > 0 {
		content = max(0, 1+(len(samples)+pad-nFFT)/hopLength)
	}
	mel := Mel{NMels: nMels, NFrames: nFrames, Content: min(content, nFrames), Data: make([]float32, nMels*nFrames)}

	// Frames after the audio (and its reflection) are all zeros; their
	// power is 0 and their log-mel value the floor.
	live := min(nFrames, (pad+len(samples))/hopLength+1)
	silent := float32(math.Log10(1e-10))
	for m := range nMels {
		row := mel.Data[m*nFrames : (m+1)*nFrames]
		for t := live; t < nFrames; t++ {
			row[t] = silent
		}
	}
	threads = max(1, min(threads, runtime.NumCPU()))
	var wg sync.WaitGroup
	for w := range threads {
		wg.Go(func() {
			fft := fourier.NewFFT(nFFT)
			frame := make([]float64, nFFT)
			coef := make([]complex128, nBins)
			power := make([]float64, nBins)
			for t := w; t < live; t += threads {
				off := t * hopLength
				for i := range frame {
					frame[i] = hann[i] * padded[off+i]
				}
				fft.Coefficients(coef, frame)
				for k, c := range coef {
					power[k] = real(c)*real(c) + imag(c)*imag(c)
				}
				for m := range nMels {
					f := filters[m*nBins : (m+1)*nBins]
					sum := 0.0
					for k, p := range power {
						sum += p * float64(f[k])
					}
					mel.Data[m*nFrames+t] = float32(math.Log10(math.Max(sum, 1e-10)))
				}
			}
		})
	}
	wg.Wait()

	peak := float32(math.Inf(-1))
	for _, v := range mel.Data {
		peak = max(peak, v)
	}
	floor := peak - 8
	for i, v := range mel.Data {
		mel.Data[i] = (max(v, floor) + 4) / 4
	}
	return mel
}

// Window copies the frames starting at frame start into dst (NMels rows of
// len(dst)/NMels frames: WindowFrames for a 30-s window), padding past the
// end with the silence value.
func (m Mel) Window(dst []float32, start int) {
	pad := float32(0)
	if len(m.Data) > 0 {
		pad = m.Data[len(m.Data)-1] // the padding at the end is silence
	}
	frames := len(dst) / m.NMels
	for r := range m.NMels {
		row := m.Data[r*m.NFrames : (r+1)*m.NFrames]
		out := dst[r*frames : (r+1)*frames]
		n := 0
		if start < m.NFrames {
			n = copy(out, row[start:])
		}
		for i := n; i < frames; i++ {
			out[i] = pad
		}
	}
}

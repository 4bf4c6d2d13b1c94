package audio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/hajimehoshi/go-mp3"
	"github.com/jfreymuth/oggvorbis"
	"github.com/mewkiz/flac"
)

// Format is an audio container/codec owl recognizes.
type Format string

// Formats recognized by Sniff.
const (
	FormatUnknown Format = ""
	FormatWAV     Format = "wav"
	FormatFLAC    Format = "flac"
	FormatMP3     Format = "mp3"
	FormatVorbis  Format = "ogg/vorbis"
	FormatOpus    Format = "ogg/opus"
	FormatAAC     Format = "aac"
)

// ErrUnsupported is returned for audio owl recognizes but cannot decode.
var ErrUnsupported = errors.New("unsupported audio format")

// SampleRate is the rate the speech models take.
const SampleRate = 16000

// Sniff identifies the format of data from its first bytes (at least 64
// for a reliable answer), never from a file name.
func Sniff(head []byte) Format {
	switch {
	case len(head) >= 12 && string(head[0:4]) == "RIFF" && string(head[8:12]) == "WAVE":
		return FormatWAV
	case len(head) >= 4 && string(head[0:4]) == "fLaC":
		return FormatFLAC
	case len(head) >= 4 && string(head[0:4]) == "OggS":
		switch {
		case bytes.Contains(head, []byte("\x01vorbis")):
			return FormatVorbis
		case bytes.Contains(head, []byte("OpusHead")):
			return FormatOpus
		case bytes.Contains(head, []byte("fLaC")):
			return FormatFLAC
		}
	case len(head) >= 10 && string(head[0:3]) == "ID3":
		// An ID3v2 tag: the audio after it decides.
		size := int(head[6]&0x7f)<<21 | int(head[7]&0x7f)<<14 | int(head[8]&0x7f)<<7 | int(head[9]&0x7f)
		if 10+size < len(head) {
			if f := Sniff(head[10+size:]); f != FormatUnknown {
				return f
			}
		}
		return FormatMP3
	case len(head) >= 2 && head[0] == 0xFF && head[1]&0xF6 == 0xF0:
		return FormatAAC // ADTS
	case len(head) >= 2 && head[0] == 0xFF && head[1]&0xE0 == 0xE0:
		return FormatMP3 // an MPEG audio frame sync
	}
	return FormatUnknown
}

// Load decodes the audio file at path by its content and returns mono
// samples at 16 kHz. Errors name the file.
func Load(path string, l Limits) ([]float32, error) {
	a, err := DecodeFile(path, l)
	if err != nil {
		return nil, err
	}
	s, err := Resample(a.Samples, a.SampleRate, SampleRate)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// DecodeFile decodes the audio file at path (any format Sniff knows and owl
// decodes) to mono samples at the file's rate. Errors name the file.
func DecodeFile(path string, l Limits) (Audio, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Audio{}, fmt.Errorf("%s: no such file", path)
		}
		return Audio{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Audio{}, err
	}
	if st.IsDir() {
		return Audio{}, fmt.Errorf("%s: is a directory", path)
	}
	a, err := Decode(f, st.Size(), l)
	if err != nil {
		return Audio{}, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// Decode decodes size bytes of audio from r, identified by Sniff, to mono.
// Third-party decoders that panic on malformed data are contained: a panic
// becomes an error.
func Decode(r io.ReaderAt, size int64, l Limits) (a Audio, err error) {
	if size > l.maxBytes() {
		return Audio{}, fmt.Errorf("%w: %d bytes exceed the limit of %d", ErrTooLong, size, l.maxBytes())
	}
	head := make([]byte, min(size, 4096))
	if _, err := r.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return Audio{}, err
	}
	format := Sniff(head)
	defer func() {
		if p := recover(); p != nil {
			a, err = Audio{}, fmt.Errorf("%w: %s decoder failed: %v", ErrBadAudio, format, p)
		}
	}()
	sr := io.NewSectionReader(r, 0, size)
	switch format {
	case FormatWAV:
		return DecodeWAV(r, size, l)
	case FormatFLAC:
		return decodeFLAC(sr, l)
	case FormatMP3:
		return decodeMP3(sr, l)
	case FormatVorbis:
		return decodeVorbis(sr, l)
	case FormatOpus, FormatAAC:
		return Audio{}, fmt.Errorf("%w: %s (convert it to WAV, FLAC, MP3 or Ogg Vorbis)", ErrUnsupported, format)
	}
	return Audio{}, fmt.Errorf("%w: not WAV, FLAC, MP3 or Ogg Vorbis", ErrUnsupported)
}

// collector downmixes interleaved frames into mono samples within limits.
type collector struct {
	rate, channels int
	max            int // most mono samples
	out            []float32
}

func newCollector(rate, channels int, l Limits) (*collector, error) {
	switch {
	case channels < 1 || channels > 64:
		return nil, fmt.Errorf("%w: %d channels", ErrBadAudio, channels)
	case rate < 1000 || rate > 768000:
		return nil, fmt.Errorf("%w: sample rate %d Hz", ErrBadAudio, rate)
	}
	return &collector{rate: rate, channels: channels, max: int(l.maxSeconds() * float64(rate))}, nil
}

func (c *collector) add(sum float64) error {
	if len(c.out) >= c.max {
		return fmt.Errorf("%w: more than the limit of %.0f s of audio", ErrTooLong, float64(c.max)/float64(c.rate))
	}
	c.out = append(c.out, float32(sum/float64(c.channels)))
	return nil
}

func (c *collector) audio() Audio {
	return Audio{Samples: c.out, SampleRate: c.rate, Channels: c.channels}
}

func decodeFLAC(r io.ReadSeeker, l Limits) (Audio, error) {
	s, err := flac.NewSeek(r)
	if err != nil {
		return Audio{}, fmt.Errorf("%w: flac: %v", ErrBadAudio, err)
	}
	info := s.Info
	c, err := newCollector(int(info.SampleRate), int(info.NChannels), l)
	if err != nil {
		return Audio{}, err
	}
	if info.NSamples > 0 && float64(info.NSamples)/float64(info.SampleRate) > l.maxSeconds() {
		return Audio{}, fmt.Errorf("%w: %.0f s of audio exceeds the limit of %.0f s", ErrTooLong, float64(info.NSamples)/float64(info.SampleRate), l.maxSeconds())
	}
	if info.BitsPerSample < 4 || info.BitsPerSample > 32 {
		return Audio{}, fmt.Errorf("%w: %d bits per sample", ErrBadAudio, info.BitsPerSample)
	}
	scale := 1 / float64(int64(1)<<(info.BitsPerSample-1))
	for {
		fr, err := s.ParseNext()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if len(c.out) > 0 && (errors.Is(err, io.ErrUnexpectedEOF)) {
				break // a truncated last frame keeps what came before
			}
			return Audio{}, fmt.Errorf("%w: flac: %v", ErrBadAudio, err)
		}
		if len(fr.Subframes) != c.channels {
			return Audio{}, fmt.Errorf("%w: flac frame with %d channels in a %d-channel stream", ErrBadAudio, len(fr.Subframes), c.channels)
		}
		n := fr.Subframes[0].NSamples
		for i := range n {
			sum := 0.0
			for _, sub := range fr.Subframes {
				if i < len(sub.Samples) {
					sum += float64(sub.Samples[i]) * scale
				}
			}
			if err := c.add(sum); err != nil {
				return Audio{}, err
			}
		}
	}
	return c.audio(), nil
}

func decodeMP3(r io.ReadSeeker, l Limits) (Audio, error) {
	skipStart, skipEnd := mp3Gapless(r)
	d, err := mp3.NewDecoder(r)
	if err != nil {
		return Audio{}, fmt.Errorf("%w: mp3: %v", ErrBadAudio, err)
	}
	// The decoder always yields 16-bit stereo.
	c, err := newCollector(d.SampleRate(), 2, l)
	if err != nil {
		return Audio{}, err
	}
	if n := d.Length(); n > 0 && float64(n/4)/float64(d.SampleRate()) > l.maxSeconds() {
		return Audio{}, fmt.Errorf("%w: %.0f s of audio exceeds the limit of %.0f s", ErrTooLong, float64(n/4)/float64(d.SampleRate()), l.maxSeconds())
	}
	buf := make([]byte, 4*4096)
	for {
		n, err := io.ReadFull(d, buf)
		for i := 0; i+4 <= n; i += 4 {
			left := float64(int16(binary.LittleEndian.Uint16(buf[i:]))) / 32768
			right := float64(int16(binary.LittleEndian.Uint16(buf[i+2:]))) / 32768
			if err := c.add(left + right); err != nil {
				return Audio{}, err
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			if len(c.out) > 0 {
				break // a damaged tail keeps what came before
			}
			return Audio{}, fmt.Errorf("%w: mp3: %v", ErrBadAudio, err)
		}
	}
	// The encoder's input only, as gapless players and ffmpeg decode it.
	if skipStart+skipEnd < len(c.out) {
		c.out = c.out[skipStart : len(c.out)-skipEnd]
	}
	return c.audio(), nil
}

func decodeVorbis(r io.ReadSeeker, l Limits) (Audio, error) {
	d, err := oggvorbis.NewReader(r)
	if err != nil {
		return Audio{}, fmt.Errorf("%w: vorbis: %v", ErrBadAudio, err)
	}
	c, err := newCollector(d.SampleRate(), d.Channels(), l)
	if err != nil {
		return Audio{}, err
	}
	if n := d.Length(); n > 0 && float64(n)/float64(d.SampleRate()) > l.maxSeconds() {
		return Audio{}, fmt.Errorf("%w: %.0f s of audio exceeds the limit of %.0f s", ErrTooLong, float64(n)/float64(d.SampleRate()), l.maxSeconds())
	}
	buf := make([]float32, 4096*c.channels)
	for {
		n, err := d.Read(buf)
		for i := 0; i+c.channels <= n; i += c.channels {
			sum := 0.0
			for ch := range c.channels {
				sum += float64(buf[i+ch])
			}
			if err := c.add(sum); err != nil {
				return Audio{}, err
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || len(c.out) > 0 {
				break
			}
			return Audio{}, fmt.Errorf("%w: vorbis: %v", ErrBadAudio, err)
		}
	}
	return c.audio(), nil
}

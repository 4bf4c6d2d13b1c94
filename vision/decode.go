package vision

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"os"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
	"golang.org/x/image/webp"
)

// Format is an image file format owl recognizes.
type Format string

// Formats recognized by Sniff. The first six decode; the others are named
// only so that the error can say what the file is.
const (
	FormatUnknown Format = ""
	FormatJPEG    Format = "jpeg"
	FormatPNG     Format = "png"
	FormatGIF     Format = "gif"
	FormatWebP    Format = "webp"
	FormatBMP     Format = "bmp"
	FormatTIFF    Format = "tiff"
	FormatHEIC    Format = "heic"
	FormatAVIF    Format = "avif"
	FormatJXL     Format = "jpeg xl"
	FormatSVG     Format = "svg"
)

// Errors wrapped by what Decode returns; test them with errors.Is.
var (
	// ErrUnknownFormat is returned for bytes that are not an image format
	// owl recognizes.
	ErrUnknownFormat = errors.New("not a recognized image format (want JPEG, PNG, GIF, WebP, BMP or TIFF)")
	// ErrUnsupported is returned for an image format owl recognizes but does
	// not decode.
	ErrUnsupported = errors.New("unsupported image format")
	// ErrTooLarge is returned when a file or its pixel count exceeds Limits.
	ErrTooLarge = errors.New("image too large")
	// ErrEmpty is returned for an image with no pixels (a zero width or height).
	ErrEmpty = errors.New("image has no pixels")
	// ErrCorrupt is returned for a recognized image whose data cannot be decoded.
	ErrCorrupt = errors.New("corrupt image")
)

// Default limits.
const (
	DefaultMaxPixels = 50_000_000 // 50 megapixels
	DefaultMaxBytes  = 50 << 20   // 50 MiB
)

// Limits bound what an image may make owl allocate. Decoding takes about
// MaxPixels × (3 + the decoder's bytes per pixel, at most 8) bytes at peak.
type Limits struct {
	MaxPixels int64 // width × height; 0 means DefaultMaxPixels
	MaxBytes  int64 // size of the encoded file; 0 means DefaultMaxBytes
}

func (l Limits) maxPixels() int64 {
	if l.MaxPixels <= 0 {
		return DefaultMaxPixels
	}
	return l.MaxPixels
}

func (l Limits) maxBytes() int64 {
	if l.MaxBytes <= 0 {
		return DefaultMaxBytes
	}
	return l.MaxBytes
}

// Hash identifies an image by its pixels: the SHA-256 of "owl-rgb",
// the width and height (uint32 little-endian) and the RGB bytes.
type Hash [sha256.Size]byte

// String is the hash in lowercase hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ParseHash reads a Hash from its String form.
func ParseHash(s string) (Hash, error) {
	var h Hash
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("%q is not an image hash (%d hex digits)", s, 2*len(h))
	}
	copy(h[:], b)
	return h, nil
}

// HashRGB computes the Hash of a width × height RGB image.
func HashRGB(width, height int, rgb []byte) Hash {
	d := sha256.New()
	var head [15]byte
	copy(head[:], "owl-rgb")
	binary.LittleEndian.PutUint32(head[7:], uint32(width))
	binary.LittleEndian.PutUint32(head[11:], uint32(height))
	d.Write(head[:])
	d.Write(rgb)
	var h Hash
	d.Sum(h[:0])
	return h
}

// Image is a decoded image as a person would see it.
type Image struct {
	Width, Height int
	// RGB holds Width × Height pixels, 3 bytes each, rows top to bottom.
	RGB []byte
	// Format is the file format the image was decoded from.
	Format Format
	// Orientation is the EXIF orientation (1 to 8) that was applied; 1 means
	// the file was stored upright or said nothing.
	Orientation int
	// Hash identifies the pixels (see Hash).
	Hash Hash
}

// Sniff identifies the format of an image from its first bytes (16 are
// enough for every format but SVG, which is looked for in the first 512).
func Sniff(head []byte) Format {
	has := func(off int, s string) bool {
		return len(head) >= off+len(s) && string(head[off:off+len(s)]) == s
	}
	switch {
	case has(0, "\xff\xd8\xff"):
		return FormatJPEG
	case has(0, "\x89PNG\r\n\x1a\n"):
		return FormatPNG
	case has(0, "GIF87a"), has(0, "GIF89a"):
		return FormatGIF
	case has(0, "RIFF") && has(8, "WEBP"):
		return FormatWebP
	case has(0, "II*\x00"), has(0, "MM\x00*"):
		return FormatTIFF
	case has(0, "BM") && len(head) >= 18:
		// "BM" alone is weak; the DIB header size that follows must be one
		// of the known ones.
		switch binary.LittleEndian.Uint32(head[14:18]) {
		case 12, 40, 52, 56, 64, 108, 124:
			return FormatBMP
		}
	case has(4, "ftyp"):
		brand := ""
		if len(head) >= 12 {
			brand = string(head[8:12])
		}
		switch brand {
		case "avif", "avis":
			return FormatAVIF
		case "heic", "heix", "hevc", "hevx", "heim", "heis", "mif1", "msf1":
			return FormatHEIC
		}
	case has(0, "\xff\x0a"), has(0, "\x00\x00\x00\x0cJXL \r\n\x87\n"):
		return FormatJXL
	}
	lead := head[:min(len(head), 512)]
	lead = bytes.TrimLeft(lead, "\xef\xbb\xbf \t\r\n")
	if bytes.HasPrefix(lead, []byte("<svg")) || (bytes.HasPrefix(lead, []byte("<?xml")) && bytes.Contains(lead, []byte("<svg"))) {
		return FormatSVG
	}
	return FormatUnknown
}

// Decode reads an image from r (at most Limits.MaxBytes of it) and decodes
// it; see DecodeBytes.
func Decode(r io.Reader, l Limits) (*Image, error) {
	limit := l.maxBytes()
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes, the limit is %d", ErrTooLarge, limit, limit)
	}
	return DecodeBytes(data, l)
}

// Config reads an image's format and size from its header, without
// decoding its pixels. Errors wrap ErrUnknownFormat, ErrUnsupported,
// ErrCorrupt or ErrEmpty.
func Config(data []byte) (image.Config, Format, error) {
	if len(data) == 0 {
		return image.Config{}, FormatUnknown, fmt.Errorf("%w: the file is empty", ErrUnknownFormat)
	}
	f := Sniff(data)
	dec, ok := decoders[f]
	if !ok {
		if f != FormatUnknown {
			return image.Config{}, f, fmt.Errorf("%w: %s (convert it to JPEG or PNG first)", ErrUnsupported, f)
		}
		return image.Config{}, f, ErrUnknownFormat
	}
	cfg, err := guard(func() (image.Config, error) { return dec.config(bytes.NewReader(data)) })
	if err != nil {
		return cfg, f, fmt.Errorf("%w: %s header: %v", ErrCorrupt, f, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return cfg, f, fmt.Errorf("%w: %s of %d×%d", ErrEmpty, f, cfg.Width, cfg.Height)
	}
	return cfg, f, nil
}

// DecodeFile decodes the image file at path. Errors name the file.
func DecodeFile(path string, l Limits) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such file", path)
		}
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && st.Size() > l.maxBytes() {
		return nil, fmt.Errorf("%s: %w: %d bytes, the limit is %d", path, ErrTooLarge, st.Size(), l.maxBytes())
	}
	img, err := Decode(f, l)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return img, nil
}

// decoder is one format's pair of header and full decoders.
type decoder struct {
	config func(io.Reader) (image.Config, error)
	decode func(io.Reader) (image.Image, error)
}

var decoders = map[Format]decoder{
	FormatJPEG: {jpeg.DecodeConfig, jpeg.Decode},
	FormatPNG:  {png.DecodeConfig, png.Decode},
	FormatGIF:  {gif.DecodeConfig, gif.Decode},
	FormatWebP: {webp.DecodeConfig, webp.Decode},
	FormatBMP:  {bmp.DecodeConfig, bmp.Decode},
	FormatTIFF: {tiff.DecodeConfig, tiff.Decode},
}

// DecodeBytes decodes an image file held in data: it identifies the format
// by content, checks the limits against the header, decodes, converts to RGB
// and applies the EXIF orientation. data is not retained.
func DecodeBytes(data []byte, l Limits) (*Image, error) {
	if int64(len(data)) > l.maxBytes() {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(data), l.maxBytes())
	}
	cfg, f, err := Config(data)
	if err != nil {
		return nil, err
	}
	dec := decoders[f]
	if px := int64(cfg.Width) * int64(cfg.Height); px > l.maxPixels() {
		return nil, fmt.Errorf("%w: %s of %d×%d is %d pixels, the limit is %d", ErrTooLarge, f, cfg.Width, cfg.Height, px, l.maxPixels())
	}
	m, err := guard(func() (image.Image, error) { return dec.decode(bytes.NewReader(data)) })
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, f, err)
	}
	b := m.Bounds()
	if b.Min.X < 0 || b.Min.Y < 0 || b.Max.X > cfg.Width || b.Max.Y > cfg.Height {
		return nil, fmt.Errorf("%w: %s decoded to %v, outside its %d×%d header", ErrCorrupt, f, b, cfg.Width, cfg.Height)
	}
	rgb := toRGB(m, cfg.Width, cfg.Height)
	img := &Image{Width: cfg.Width, Height: cfg.Height, RGB: rgb, Format: f, Orientation: 1}
	if o := Orientation(data); o != 1 {
		img.Width, img.Height, img.RGB = orient(img.Width, img.Height, img.RGB, o)
		img.Orientation = o
	}
	img.Hash = HashRGB(img.Width, img.Height, img.RGB)
	return img, nil
}

// guard runs a third-party decoder and turns a panic, which a decoder
// should never raise but would otherwise take the process down, into an error.
func guard[T any](fn func() (T, error)) (v T, err error) {
	defer func() {
		if r := recover(); r != nil {
			var zero T
			v, err = zero, fmt.Errorf("decoder failed: %v", r)
		}
	}()
	return fn()
}

// FromRGB wraps RGB pixels that are already decoded (width × height × 3
// bytes, rows top to bottom) as an Image with its Hash.
func FromRGB(width, height int, rgb []byte) (*Image, error) {
	if width <= 0 || height <= 0 {
		return nil, fmt.Errorf("%w: %d×%d", ErrEmpty, width, height)
	}
	if int64(len(rgb)) != int64(width)*int64(height)*3 {
		return nil, fmt.Errorf("RGB image of %d×%d needs %d bytes, got %d", width, height, int64(width)*int64(height)*3, len(rgb))
	}
	return &Image{Width: width, Height: height, RGB: rgb, Orientation: 1, Hash: HashRGB(width, height, rgb)}, nil
}

package vision

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
)

// The test picture: four quadrants of distinct colors, so that a pixel's
// position says whether the image was turned or mirrored.
var (
	red    = color.RGBA{255, 0, 0, 255}
	green  = color.RGBA{0, 255, 0, 255}
	blue   = color.RGBA{0, 0, 255, 255}
	yellow = color.RGBA{255, 255, 0, 255}
)

// quadrants draws a w × h image: red top left, green top right, blue bottom
// left, yellow bottom right.
func quadrants(w, h int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := red
			switch {
			case x >= w/2 && y < h/2:
				c = green
			case x < w/2 && y >= h/2:
				c = blue
			case x >= w/2 && y >= h/2:
				c = yellow
			}
			m.SetRGBA(x, y, c)
		}
	}
	return m
}

// pixel returns the RGB of img at (x, y).
func pixel(img *Image, x, y int) [3]byte {
	o := (y*img.Width + x) * 3
	return [3]byte{img.RGB[o], img.RGB[o+1], img.RGB[o+2]}
}

// checkQuadrants checks the centre of each quadrant against the colors
// quadrants draws, within tol per channel.
func checkQuadrants(t *testing.T, img *Image, tol int) {
	t.Helper()
	w, h := img.Width, img.Height
	for _, q := range []struct {
		x, y int
		want color.RGBA
	}{{w / 4, h / 4, red}, {3 * w / 4, h / 4, green}, {w / 4, 3 * h / 4, blue}, {3 * w / 4, 3 * h / 4, yellow}} {
		got := pixel(img, q.x, q.y)
		for c, want := range []uint8{q.want.R, q.want.G, q.want.B} {
			if d := int(got[c]) - int(want); d > tol || d < -tol {
				t.Fatalf("pixel (%d,%d) of %d×%d = %v, want %v (±%d)", q.x, q.y, w, h, got, q.want, tol)
			}
		}
	}
}

func encodePNG(t testing.TB, m image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t testing.TB, m image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, m, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// convertTo copies m into an image of another type by way of the draw model.
func convertTo[T interface {
	image.Image
	Set(int, int, color.Color)
}](m image.Image, dst T) T {
	b := m.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			dst.Set(x, y, m.At(x, y))
		}
	}
	return dst
}

// cwebp converts a PNG to WebP with Debian's cwebp (package webp).
func cwebp(t *testing.T, pngData []byte, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("cwebp"); err != nil {
		t.Fatalf("cwebp is missing: run `make deps` (%v)", err)
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.png"), filepath.Join(dir, "out.webp")
	if err := os.WriteFile(in, pngData, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cwebp", append(args, "-quiet", in, "-o", out)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cwebp %v: %v\n%s", args, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeFormats(t *testing.T) {
	const w, h = 32, 24
	q := quadrants(w, h)
	gifData := func() []byte {
		// Two frames; the second is all white and must not be the one decoded.
		first := convertTo(q, image.NewPaletted(q.Bounds(), palette.Plan9))
		second := image.NewPaletted(q.Bounds(), palette.Plan9)
		for i := range second.Pix {
			second.Pix[i] = uint8(second.Palette.Index(color.White))
		}
		var b bytes.Buffer
		if err := gif.EncodeAll(&b, &gif.GIF{Image: []*image.Paletted{first, second}, Delay: []int{10, 10}}); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	encodeWith := func(enc func(*bytes.Buffer, image.Image) error, m image.Image) []byte {
		var b bytes.Buffer
		if err := enc(&b, m); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	cmyk, err := os.ReadFile("testdata/cmyk.jpg")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		data   func() []byte
		format Format
		w, h   int
		tol    int
	}{
		{"jpeg", func() []byte { return encodeJPEG(t, q) }, FormatJPEG, w, h, 12},
		{"jpeg gray", func() []byte { return encodeJPEG(t, convertTo(q, image.NewGray(q.Bounds()))) }, FormatJPEG, w, h, -1},
		{"png rgba", func() []byte { return encodePNG(t, q) }, FormatPNG, w, h, 0},
		{"png paletted", func() []byte { return encodePNG(t, convertTo(q, image.NewPaletted(q.Bounds(), palette.Plan9))) }, FormatPNG, w, h, 0},
		{"png 16-bit", func() []byte { return encodePNG(t, convertTo(q, image.NewRGBA64(q.Bounds()))) }, FormatPNG, w, h, 0},
		{"png 16-bit straight alpha", func() []byte { return encodePNG(t, convertTo(q, image.NewNRGBA64(q.Bounds()))) }, FormatPNG, w, h, 0},
		{"gif first frame", gifData, FormatGIF, w, h, 0},
		{"bmp", func() []byte {
			return encodeWith(func(b *bytes.Buffer, m image.Image) error { return bmp.Encode(b, m) }, q)
		}, FormatBMP, w, h, 0},
		{"tiff", func() []byte {
			return encodeWith(func(b *bytes.Buffer, m image.Image) error { return tiff.Encode(b, m, nil) }, q)
		}, FormatTIFF, w, h, 0},
		{"tiff deflate 16-bit", func() []byte {
			return encodeWith(func(b *bytes.Buffer, m image.Image) error {
				return tiff.Encode(b, m, &tiff.Options{Compression: tiff.Deflate})
			}, convertTo(q, image.NewRGBA64(q.Bounds())))
		}, FormatTIFF, w, h, 0},
		{"webp lossless", func() []byte { return cwebp(t, encodePNG(t, q), "-lossless") }, FormatWebP, w, h, 0},
		{"webp lossy", func() []byte { return cwebp(t, encodePNG(t, q), "-q", "95") }, FormatWebP, w, h, 40},
		{"cmyk jpeg", func() []byte { return cmyk }, FormatJPEG, 16, 16, -2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := DecodeBytes(tc.data(), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if img.Format != tc.format || img.Width != tc.w || img.Height != tc.h || len(img.RGB) != tc.w*tc.h*3 {
				t.Fatalf("got %s %d×%d with %d bytes, want %s %d×%d", img.Format, img.Width, img.Height, len(img.RGB), tc.format, tc.w, tc.h)
			}
			if img.Hash != HashRGB(img.Width, img.Height, img.RGB) {
				t.Fatal("hash does not match the pixels")
			}
			switch tc.tol {
			case -1: // gray: every pixel has equal channels
				for i := 0; i < len(img.RGB); i += 3 {
					if img.RGB[i] != img.RGB[i+1] || img.RGB[i] != img.RGB[i+2] {
						t.Fatalf("gray image decoded to color %v", img.RGB[i:i+3])
					}
				}
			case -2: // the CMYK fixture: red, lime, blue and white quadrants
				for _, p := range []struct {
					x, y int
					want [3]byte
				}{{4, 4, [3]byte{255, 0, 0}}, {12, 4, [3]byte{0, 255, 0}}, {4, 12, [3]byte{0, 0, 255}}, {12, 12, [3]byte{255, 255, 255}}} {
					got := pixel(img, p.x, p.y)
					for c := range 3 {
						if d := int(got[c]) - int(p.want[c]); d > 16 || d < -16 {
							t.Fatalf("CMYK pixel (%d,%d) = %v, want about %v", p.x, p.y, got, p.want)
						}
					}
				}
			default:
				checkQuadrants(t, img, tc.tol)
			}
		})
	}
}

// Transparent pixels come out as if drawn over white.
func TestAlphaOverWhite(t *testing.T) {
	m := image.NewNRGBA(image.Rect(0, 0, 3, 1))
	m.SetNRGBA(0, 0, color.NRGBA{0, 0, 0, 0})         // fully transparent black
	m.SetNRGBA(1, 0, color.NRGBA{255, 0, 0, 255})     // opaque red
	m.SetNRGBA(2, 0, color.NRGBA{0, 0, 255, 0x80})    // half blue
	m16 := convertTo(m, image.NewNRGBA64(m.Bounds())) // 16-bit with alpha
	for name, data := range map[string][]byte{
		"png":        encodePNG(t, m),
		"png 16-bit": encodePNG(t, m16),
		"webp":       cwebp(t, encodePNG(t, m), "-lossless", "-exact"),
	} {
		t.Run(name, func(t *testing.T) {
			img, err := DecodeBytes(data, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			want := [][3]byte{{255, 255, 255}, {255, 0, 0}, {127, 127, 255}}
			for x, w := range want {
				got := pixel(img, x, 0)
				for c := range 3 {
					if d := int(got[c]) - int(w[c]); d > 1 || d < -1 {
						t.Fatalf("pixel %d = %v, want %v", x, got, w)
					}
				}
			}
		})
	}
}

// storedFor returns the image a file with EXIF orientation o stores so that
// it shows visual upright. The table is the EXIF specification's: which
// side of the upright picture the stored first row and first column are.
func storedFor(visual *image.RGBA, o int) *image.RGBA {
	W, H := visual.Bounds().Dx(), visual.Bounds().Dy()
	sw, sh := W, H
	if o >= 5 {
		sw, sh = H, W
	}
	s := image.NewRGBA(image.Rect(0, 0, sw, sh))
	for r := range sh {
		for c := range sw {
			var vr, vc int // row and column of the upright picture
			switch o {
			case 1: // row 0 is the top, column 0 the left
				vr, vc = r, c
			case 2: // top, right
				vr, vc = r, W-1-c
			case 3: // bottom, right
				vr, vc = H-1-r, W-1-c
			case 4: // bottom, left
				vr, vc = H-1-r, c
			case 5: // left, top
				vr, vc = c, r
			case 6: // right, top
				vr, vc = c, W-1-r
			case 7: // right, bottom
				vr, vc = H-1-c, W-1-r
			case 8: // left, bottom
				vr, vc = H-1-c, r
			}
			s.SetRGBA(c, r, visual.RGBAAt(vc, vr))
		}
	}
	return s
}

// exifTIFF is a minimal TIFF structure with one IFD holding the orientation.
func exifTIFF(order binary.AppendByteOrder, o uint16) []byte {
	var b []byte
	if order == binary.AppendByteOrder(binary.BigEndian) {
		b = append(b, "MM\x00*"...)
	} else {
		b = append(b, "II*\x00"...)
	}
	b = order.AppendUint32(b, 8)
	b = order.AppendUint16(b, 1)
	b = order.AppendUint16(b, tagOrientation)
	b = order.AppendUint16(b, 3) // SHORT
	b = order.AppendUint32(b, 1)
	b = order.AppendUint16(b, o)
	b = order.AppendUint16(b, 0)
	return order.AppendUint32(b, 0) // no next IFD
}

// withJPEGExif inserts an APP1 Exif segment after the SOI marker.
func withJPEGExif(data, tiffData []byte) []byte {
	seg := append([]byte("Exif\x00\x00"), tiffData...)
	app1 := []byte{0xff, 0xe1}
	app1 = binary.BigEndian.AppendUint16(app1, uint16(len(seg)+2))
	app1 = append(app1, seg...)
	return append(append(append([]byte{}, data[:2]...), app1...), data[2:]...)
}

// withPNGExif inserts an eXIf chunk after IHDR.
func withPNGExif(data, tiffData []byte) []byte {
	chunk := binary.BigEndian.AppendUint32(nil, uint32(len(tiffData)))
	chunk = append(chunk, "eXIf"...)
	chunk = append(chunk, tiffData...)
	chunk = binary.BigEndian.AppendUint32(chunk, crc32.ChecksumIEEE(chunk[4:]))
	const ihdrEnd = 8 + 4 + 4 + 13 + 4
	return append(append(append([]byte{}, data[:ihdrEnd]...), chunk...), data[ihdrEnd:]...)
}

// Every EXIF orientation shows the picture upright, checked by where its
// colored quadrants land.
func TestEXIFOrientation(t *testing.T) {
	visual := quadrants(64, 32)
	for o := 1; o <= 8; o++ {
		stored := storedFor(visual, o)
		for _, tc := range []struct {
			name string
			data []byte
			tol  int
		}{
			{"jpeg", withJPEGExif(encodeJPEG(t, stored), exifTIFF(binary.BigEndian, uint16(o))), 40},
			{"jpeg little-endian", withJPEGExif(encodeJPEG(t, stored), exifTIFF(binary.LittleEndian, uint16(o))), 40},
			{"png", withPNGExif(encodePNG(t, stored), exifTIFF(binary.BigEndian, uint16(o))), 0},
		} {
			t.Run(tc.name+"/"+string(rune('0'+o)), func(t *testing.T) {
				img, err := DecodeBytes(tc.data, Limits{})
				if err != nil {
					t.Fatal(err)
				}
				if img.Orientation != o || img.Width != 64 || img.Height != 32 {
					t.Fatalf("orientation %d, %d×%d; want %d, 64×32", img.Orientation, img.Width, img.Height, o)
				}
				checkQuadrants(t, img, tc.tol)
			})
		}
	}
}

// cwebp keeps a JPEG's EXIF when asked; owl reads it from the WebP.
func TestEXIFOrientationWebP(t *testing.T) {
	visual := quadrants(64, 32)
	jpg := withJPEGExif(encodeJPEG(t, storedFor(visual, 6)), exifTIFF(binary.BigEndian, 6))
	if _, err := exec.LookPath("cwebp"); err != nil {
		t.Fatalf("cwebp is missing: run `make deps` (%v)", err)
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.jpg"), filepath.Join(dir, "out.webp")
	if err := os.WriteFile(in, jpg, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("cwebp", "-quiet", "-q", "95", "-metadata", "exif", in, "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("cwebp: %v\n%s", err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	img, err := DecodeBytes(data, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if img.Format != FormatWebP || img.Orientation != 6 || img.Width != 64 || img.Height != 32 {
		t.Fatalf("%s orientation %d %d×%d", img.Format, img.Orientation, img.Width, img.Height)
	}
	checkQuadrants(t, img, 40)
}

func TestTIFFOrientationField(t *testing.T) {
	for _, order := range []binary.AppendByteOrder{binary.BigEndian, binary.LittleEndian} {
		for o := range uint16(12) {
			want := int(o)
			if o < 1 || o > 8 {
				want = 1
			}
			if got := tiffOrientation(exifTIFF(order, o)); got != want {
				t.Errorf("%v orientation %d read as %d", order, o, got)
			}
		}
	}
	good := exifTIFF(binary.BigEndian, 6)
	for cut := range len(good) - 1 { // every truncation is harmless
		if got := tiffOrientation(good[:cut]); got != 1 && cut < 22 {
			t.Errorf("truncated to %d bytes: orientation %d", cut, got)
		}
	}
}

func TestSniff(t *testing.T) {
	for _, tc := range []struct {
		head string
		want Format
	}{
		{"\xff\xd8\xff\xe0", FormatJPEG},
		{"\x89PNG\r\n\x1a\n", FormatPNG},
		{"GIF89a", FormatGIF},
		{"RIFF\x00\x00\x00\x00WEBPVP8 ", FormatWebP},
		{"RIFF\x00\x00\x00\x00WAVEfmt ", FormatUnknown},
		{"II*\x00\x08\x00\x00\x00", FormatTIFF},
		{"MM\x00*\x00\x00\x00\x08", FormatTIFF},
		{"BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00", FormatBMP},
		{"BM some text file", FormatUnknown},
		{"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", FormatHEIC},
		{"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", FormatAVIF},
		{"\xff\x0a\xfa", FormatJXL},
		{"\x00\x00\x00\x0cJXL \r\n\x87\n", FormatJXL},
		{"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\">", FormatSVG},
		{"  <svg>", FormatSVG},
		{"hello", FormatUnknown},
		{"", FormatUnknown},
	} {
		if got := Sniff([]byte(tc.head)); got != tc.want {
			t.Errorf("Sniff(%q) = %q, want %q", tc.head, got, tc.want)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	jpg := encodeJPEG(t, quadrants(64, 64))
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrUnknownFormat},
		{"text", []byte("not an image at all"), ErrUnknownFormat},
		{"heic", []byte("\x00\x00\x00\x18ftypheic\x00\x00\x00\x00"), ErrUnsupported},
		{"truncated jpeg", jpg[:len(jpg)/2], ErrCorrupt},
		{"jpeg header only", jpg[:20], ErrCorrupt},
		{"0x0 png", pngHeader(0, 0), ErrCorrupt},
		{"0x0 gif", gifHeader(0, 0), ErrEmpty},
		{"png without pixels", pngHeader(4, 4), ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := DecodeBytes(tc.data, Limits{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v (%v), want %v", err, img, tc.want)
			}
		})
	}
	if _, err := DecodeBytes(jpg, Limits{MaxBytes: int64(len(jpg) - 1)}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the byte limit: %v", err)
	}
	if _, err := Decode(bytes.NewReader(jpg), Limits{MaxBytes: 100}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("reader over the byte limit: %v", err)
	}
	if _, err := DecodeBytes(jpg, Limits{MaxPixels: 64*64 - 1}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the pixel limit: %v", err)
	}
	if _, err := DecodeFile(filepath.Join(t.TempDir(), "missing.png"), Limits{}); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
}

// pngHeader is a PNG signature and a valid IHDR chunk (8-bit RGB), nothing more.
func pngHeader(w, h uint32) []byte {
	b := []byte("\x89PNG\r\n\x1a\n")
	chunk := binary.BigEndian.AppendUint32(nil, 13)
	chunk = append(chunk, "IHDR"...)
	chunk = binary.BigEndian.AppendUint32(chunk, w)
	chunk = binary.BigEndian.AppendUint32(chunk, h)
	chunk = append(chunk, 8, 2, 0, 0, 0)
	chunk = binary.BigEndian.AppendUint32(chunk, crc32.ChecksumIEEE(chunk[4:]))
	return append(b, chunk...)
}

// gifHeader is a GIF logical screen descriptor with a 2-color table and a
// trailer.
func gifHeader(w, h uint16) []byte {
	b := []byte("GIF89a")
	b = binary.LittleEndian.AppendUint16(b, w)
	b = binary.LittleEndian.AppendUint16(b, h)
	b = append(b, 0x80, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x3b)
	return b
}

// jpegHeader is SOI, a JFIF APP0 and a baseline SOF0 for a w × h
// 3-component image.
func jpegHeader(w, h uint16) []byte {
	b := []byte{0xff, 0xd8, 0xff, 0xe0, 0, 16, 'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0}
	b = append(b, 0xff, 0xc0, 0, 17, 8)
	b = binary.BigEndian.AppendUint16(b, h)
	b = binary.BigEndian.AppendUint16(b, w)
	b = append(b, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1)
	return b
}

// A header claiming 100000×100000 pixels is refused from the header alone:
// nothing near the size of its pixels is allocated.
func TestDecompressionBombRefused(t *testing.T) {
	for name, data := range map[string][]byte{
		"png 100000x100000": pngHeader(100000, 100000),
		"gif 65535x65535":   gifHeader(65535, 65535),
		"jpeg 65535x65535":  jpegHeader(65535, 65535),
	} {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := DecodeBytes(data, Limits{})
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("got %v, want ErrTooLarge", err)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
				t.Fatalf("refusing the header allocated %d bytes", n)
			}
		})
	}
}

// The hash depends on the pixels, not on the container.
func TestHashFollowsPixels(t *testing.T) {
	q := quadrants(32, 24)
	var bmpData, tiffData bytes.Buffer
	if err := bmp.Encode(&bmpData, q); err != nil {
		t.Fatal(err)
	}
	if err := tiff.Encode(&tiffData, q, nil); err != nil {
		t.Fatal(err)
	}
	var hashes []Hash
	for _, data := range [][]byte{encodePNG(t, q), bmpData.Bytes(), tiffData.Bytes()} {
		img, err := DecodeBytes(data, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, img.Hash)
	}
	if hashes[0] != hashes[1] || hashes[0] != hashes[2] {
		t.Fatalf("one picture, three hashes: %v", hashes)
	}
	q.SetRGBA(0, 0, color.RGBA{254, 0, 0, 255})
	img, err := DecodeBytes(encodePNG(t, q), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if img.Hash == hashes[0] {
		t.Fatal("a changed pixel kept the hash")
	}
	// The same bytes as a 24×32 image are another image.
	if HashRGB(24, 32, img.RGB) == HashRGB(32, 24, img.RGB) {
		t.Fatal("the hash ignores the dimensions")
	}
	if h, err := ParseHash(img.Hash.String()); err != nil || h != img.Hash {
		t.Fatalf("hash %s read back as %s, %v", img.Hash, h, err)
	}
	for _, bad := range []string{"", "zz", img.Hash.String()[:62]} {
		if _, err := ParseHash(bad); err == nil {
			t.Fatalf("ParseHash(%q) accepted", bad)
		}
	}
}

func TestFromRGB(t *testing.T) {
	img, err := FromRGB(2, 1, []byte{1, 2, 3, 4, 5, 6})
	if err != nil || img.Hash != HashRGB(2, 1, img.RGB) {
		t.Fatalf("FromRGB: %v", err)
	}
	if _, err := FromRGB(2, 2, []byte{1, 2, 3}); err == nil {
		t.Fatal("short pixels accepted")
	}
	if _, err := FromRGB(0, 5, nil); !errors.Is(err, ErrEmpty) {
		t.Fatalf("0 width: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	q := quadrants(8, 6)
	f.Add(encodePNG(f, q))
	f.Add(encodeJPEG(f, q))
	f.Add(withJPEGExif(encodeJPEG(f, q), exifTIFF(binary.BigEndian, 6)))
	f.Add(withPNGExif(encodePNG(f, q), exifTIFF(binary.LittleEndian, 8)))
	f.Add(pngHeader(3, 3))
	f.Add(gifHeader(2, 2))
	var b bytes.Buffer
	_ = gif.Encode(&b, q, nil)
	f.Add(b.Bytes())
	b.Reset()
	_ = bmp.Encode(&b, q)
	f.Add(b.Bytes())
	b.Reset()
	_ = tiff.Encode(&b, q, nil)
	f.Add(b.Bytes())
	if cmyk, err := os.ReadFile("testdata/cmyk.jpg"); err == nil {
		f.Add(cmyk)
	}
	f.Add([]byte("RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"))
	const maxPixels = 1 << 16
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<16 {
			return
		}
		img, err := DecodeBytes(data, Limits{MaxPixels: maxPixels})
		o := Orientation(data)
		if o < 1 || o > 8 {
			t.Fatalf("orientation %d", o)
		}
		if err != nil {
			return
		}
		if img.Width <= 0 || img.Height <= 0 || img.Width*img.Height > maxPixels || len(img.RGB) != img.Width*img.Height*3 {
			t.Fatalf("%d×%d image with %d bytes", img.Width, img.Height, len(img.RGB))
		}
		if img.Orientation != o || img.Hash != HashRGB(img.Width, img.Height, img.RGB) {
			t.Fatalf("orientation %d (file says %d), hash mismatch %v", img.Orientation, o, img.Hash != HashRGB(img.Width, img.Height, img.RGB))
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	for _, sz := range []struct{ w, h int }{{224, 224}, {1280, 960}, {4000, 3000}} {
		q := quadrants(sz.w, sz.h)
		for name, data := range map[string][]byte{"jpeg": encodeJPEG(b, q), "png": encodePNG(b, q)} {
			b.Run(fmt.Sprintf("%s/%dx%d", name, sz.w, sz.h), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					if _, err := DecodeBytes(data, Limits{}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func TestFit(t *testing.T) {
	// 5×2 pixels whose red channel counts 0..9, scaled by 2: blocks of
	// 2×2, 2×2 and 1×2 pixels.
	rgb := make([]byte, 5*2*3)
	for i := range 10 {
		rgb[i*3] = byte(i * 10)
		rgb[i*3+1] = 100
	}
	img, err := FromRGB(5, 2, rgb)
	if err != nil {
		t.Fatal(err)
	}
	if img.Fit(5) != img || img.Fit(0) != img {
		t.Fatal("an image that fits was copied")
	}
	small := img.Fit(4)
	if small.Width != 3 || small.Height != 1 || small.Hash != HashRGB(3, 1, small.RGB) {
		t.Fatalf("fit to 4: %d×%d", small.Width, small.Height)
	}
	// Block means of the red values: (0+10+50+60)/4, (20+30+70+80)/4, (40+90)/2.
	for i, want := range []byte{30, 50, 65} {
		if small.RGB[i*3] != want || small.RGB[i*3+1] != 100 || small.RGB[i*3+2] != 0 {
			t.Fatalf("pixel %d = %v, want red %d", i, small.RGB[i*3:i*3+3], want)
		}
	}
	big := &Image{Width: 9000, Height: 3, RGB: make([]byte, 9000*3*3)}
	if f := big.Fit(4096); f.Width != 3000 || f.Height != 1 {
		t.Fatalf("9000×3 fit to 4096: %d×%d", f.Width, f.Height)
	}
}

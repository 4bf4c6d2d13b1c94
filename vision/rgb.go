package vision

import (
	"image"
	"image/color"
)

// toRGB converts m to a w × h RGB canvas. Transparency is composited over
// white, and canvas pixels outside m's bounds (a GIF frame smaller than its
// screen) are white. m's bounds lie within the canvas.
func toRGB(m image.Image, w, h int) []byte {
	out := make([]byte, w*h*3)
	b := m.Bounds()
	if b != image.Rect(0, 0, w, h) {
		for i := range out {
			out[i] = 0xff
		}
	}
	at := func(x, y int) int { return (y*w + x) * 3 }
	switch m := m.(type) {
	case *image.YCbCr:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			o := at(b.Min.X, y)
			for x := b.Min.X; x < b.Max.X; x++ {
				yi, ci := m.YOffset(x, y), m.COffset(x, y)
				out[o], out[o+1], out[o+2] = color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
				o += 3
			}
		}
	case *image.NYCbCrA:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			o := at(b.Min.X, y)
			for x := b.Min.X; x < b.Max.X; x++ {
				yi, ci := m.YOffset(x, y), m.COffset(x, y)
				r, g, bl := color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
				a := m.A[m.AOffset(x, y)]
				out[o], out[o+1], out[o+2] = overWhite8(r, a), overWhite8(g, a), overWhite8(bl, a)
				o += 3
			}
		}
	case *image.RGBA:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			o, p := at(b.Min.X, y), m.PixOffset(b.Min.X, y)
			for x := b.Min.X; x < b.Max.X; x++ {
				a := m.Pix[p+3]
				out[o], out[o+1], out[o+2] = premulOverWhite8(m.Pix[p], a), premulOverWhite8(m.Pix[p+1], a), premulOverWhite8(m.Pix[p+2], a)
				o, p = o+3, p+4
			}
		}
	case *image.NRGBA:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			o, p := at(b.Min.X, y), m.PixOffset(b.Min.X, y)
			for x := b.Min.X; x < b.Max.X; x++ {
				a := m.Pix[p+3]
				out[o], out[o+1], out[o+2] = overWhite8(m.Pix[p], a), overWhite8(m.Pix[p+1], a), overWhite8(m.Pix[p+2], a)
				o, p = o+3, p+4
			}
		}
	case *image.Gray:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			o, p := at(b.Min.X, y), m.PixOffset(b.Min.X, y)
			for x := b.Min.X; x < b.Max.X; x++ {
				v := m.Pix[p]
				out[o], out[o+1], out[o+2] = v, v, v
				o, p = o+3, p+1
			}
		}
	case *image.Gray16:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			o, p := at(b.Min.X, y), m.PixOffset(b.Min.X, y)
			for x := b.Min.X; x < b.Max.X; x++ {
				v := to8(uint32(m.Pix[p])<<8 | uint32(m.Pix[p+1]))
				out[o], out[o+1], out[o+2] = v, v, v
				o, p = o+3, p+2
			}
		}
	case *image.CMYK:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			o, p := at(b.Min.X, y), m.PixOffset(b.Min.X, y)
			for x := b.Min.X; x < b.Max.X; x++ {
				out[o], out[o+1], out[o+2] = color.CMYKToRGB(m.Pix[p], m.Pix[p+1], m.Pix[p+2], m.Pix[p+3])
				o, p = o+3, p+4
			}
		}
	case *image.Paletted:
		// Indices past the palette (which decoders should refuse) read as black.
		var table [256][3]byte
		for i, c := range m.Palette {
			if i == len(table) {
				break
			}
			table[i] = rgbOverWhite(c)
		}
		for y := b.Min.Y; y < b.Max.Y; y++ {
			o, p := at(b.Min.X, y), m.PixOffset(b.Min.X, y)
			for x := b.Min.X; x < b.Max.X; x++ {
				c := table[m.Pix[p]]
				out[o], out[o+1], out[o+2] = c[0], c[1], c[2]
				o, p = o+3, p+1
			}
		}
	case *image.RGBA64:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			o, p := at(b.Min.X, y), m.PixOffset(b.Min.X, y)
			for x := b.Min.X; x < b.Max.X; x++ {
				s := m.Pix[p : p+8 : p+8]
				a := uint32(s[6])<<8 | uint32(s[7])
				for c := range 3 {
					v := uint32(s[2*c])<<8 | uint32(s[2*c+1])
					out[o+c] = to8(min(v+0xffff-a, 0xffff))
				}
				o, p = o+3, p+8
			}
		}
	case *image.NRGBA64:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			o, p := at(b.Min.X, y), m.PixOffset(b.Min.X, y)
			for x := b.Min.X; x < b.Max.X; x++ {
				s := m.Pix[p : p+8 : p+8]
				a := uint64(s[6])<<8 | uint64(s[7])
				for c := range 3 {
					v := uint64(s[2*c])<<8 | uint64(s[2*c+1])
					out[o+c] = to8(uint32((v*a + 0xffff*(0xffff-a) + 0x7fff) / 0xffff))
				}
				o, p = o+3, p+8
			}
		}
	default:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			o := at(b.Min.X, y)
			for x := b.Min.X; x < b.Max.X; x++ {
				c := rgbOverWhite(m.At(x, y))
				out[o], out[o+1], out[o+2] = c[0], c[1], c[2]
				o += 3
			}
		}
	}
	return out
}

// to8 rounds a 16-bit sample to 8 bits.
func to8(v uint32) uint8 { return uint8((v*0xff + 0x7fff) / 0xffff) }

// overWhite8 composites a straight (non-premultiplied) sample c of
// opacity a over white.
func overWhite8(c, a uint8) uint8 {
	return uint8((uint32(c)*uint32(a) + 0xff*(0xff-uint32(a)) + 0x7f) / 0xff)
}

// premulOverWhite8 composites a premultiplied sample c of opacity a over
// white; c > a (invalid premultiplication) saturates.
func premulOverWhite8(c, a uint8) uint8 {
	return uint8(min(uint32(c)+0xff-uint32(a), 0xff))
}

// rgbOverWhite converts any color to 8-bit RGB over white.
func rgbOverWhite(c color.Color) [3]byte {
	if c == nil {
		return [3]byte{}
	}
	r, g, b, a := c.RGBA()
	return [3]byte{
		to8(min(r+0xffff-a, 0xffff)),
		to8(min(g+0xffff-a, 0xffff)),
		to8(min(b+0xffff-a, 0xffff)),
	}
}

package vision

import (
	"bytes"
	"encoding/binary"
)

// This file reads the one EXIF field owl needs, the orientation (TIFF tag
// 0x0112), with a small parser of its own instead of a general EXIF library:
// it is a single SHORT in the first IFD, and every offset it follows is
// checked against the data, so hostile input can only make it answer 1.

const tagOrientation = 0x0112

// Orientation returns the EXIF orientation (1 to 8) recorded in an image
// file: in a JPEG's APP1 Exif segment, a TIFF's first IFD, a WebP's EXIF
// chunk or a PNG's eXIf chunk. It returns 1 (upright) when the file records
// none or an invalid one.
func Orientation(data []byte) int {
	var tiff []byte
	switch Sniff(data) {
	case FormatJPEG:
		tiff = jpegExif(data)
	case FormatTIFF:
		tiff = data
	case FormatWebP:
		tiff = webpExif(data)
	case FormatPNG:
		tiff = pngExif(data)
	}
	return tiffOrientation(tiff)
}

var exifHeader = []byte("Exif\x00\x00")

// jpegExif returns the TIFF structure of the first APP1 Exif segment
// before the image data, or nil.
func jpegExif(data []byte) []byte {
	i := 2 // after SOI
	for i+4 <= len(data) {
		if data[i] != 0xff {
			return nil
		}
		marker := data[i+1]
		switch {
		case marker == 0xff: // fill byte
			i++
			continue
		case marker == 0x01 || marker == 0xd8 || (marker >= 0xd0 && marker <= 0xd7):
			i += 2 // markers without a length
			continue
		case marker == 0xda || marker == 0xd9: // start of scan, end of image
			return nil
		}
		end := i + 2 + int(binary.BigEndian.Uint16(data[i+2:]))
		if end < i+4 || end > len(data) {
			return nil
		}
		if seg := data[i+4 : end]; marker == 0xe1 && bytes.HasPrefix(seg, exifHeader) {
			return seg[len(exifHeader):]
		}
		i = end
	}
	return nil
}

// webpExif returns the payload of a WebP's EXIF chunk, or nil.
func webpExif(data []byte) []byte {
	for i := 12; i+8 <= len(data); {
		size := int64(binary.LittleEndian.Uint32(data[i+4:]))
		start := int64(i + 8)
		end := start + size
		if end > int64(len(data)) {
			return nil
		}
		if string(data[i:i+4]) == "EXIF" {
			// Some writers keep the JPEG-style prefix.
			return bytes.TrimPrefix(data[start:end], exifHeader)
		}
		i = int(end + size&1) // chunks are padded to an even size
	}
	return nil
}

// pngExif returns the payload of a PNG's eXIf chunk, or nil.
func pngExif(data []byte) []byte {
	for i := 8; i+12 <= len(data); {
		size := int64(binary.BigEndian.Uint32(data[i:]))
		start := int64(i + 8)
		end := start + size
		if end+4 > int64(len(data)) {
			return nil
		}
		switch string(data[i+4 : i+8]) {
		case "eXIf":
			return data[start:end]
		case "IEND":
			return nil
		}
		i = int(end + 4) // past the CRC
	}
	return nil
}

// tiffOrientation reads the orientation from the first IFD of a TIFF
// structure; 1 when it is absent, invalid or out of range.
func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 1
	}
	var order binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		order = binary.LittleEndian
	case "MM":
		order = binary.BigEndian
	default:
		return 1
	}
	if order.Uint16(t[2:]) != 42 {
		return 1
	}
	ifd := int64(order.Uint32(t[4:]))
	if ifd+2 > int64(len(t)) {
		return 1
	}
	n := int64(order.Uint16(t[ifd:]))
	for k := range n {
		e := ifd + 2 + 12*k
		if e+12 > int64(len(t)) {
			break
		}
		if order.Uint16(t[e:]) != tagOrientation {
			continue
		}
		var v uint32
		switch typ, count := order.Uint16(t[e+2:]), order.Uint32(t[e+4:]); {
		case typ == 3 && count >= 1: // SHORT
			v = uint32(order.Uint16(t[e+8:]))
		case typ == 4 && count >= 1: // LONG, written by a few tools
			v = order.Uint32(t[e+8:])
		default:
			return 1
		}
		if v >= 1 && v <= 8 {
			return int(v)
		}
		return 1
	}
	return 1
}

// orient turns a w × h RGB image stored with EXIF orientation o into the
// upright image a person sees, returning its width, height and pixels.
//
// The orientations say where the stored image's first row and first column
// are when upright: 2 mirrors left-right, 3 turns 180°, 4 mirrors top-bottom,
// 5 transposes, 6 needs a quarter turn clockwise, 7 transposes the other
// diagonal, 8 needs a quarter turn counter-clockwise.
func orient(w, h int, rgb []byte, o int) (int, int, []byte) {
	if o < 2 || o > 8 {
		return w, h, rgb
	}
	dw, dh := w, h
	if o >= 5 {
		dw, dh = h, w
	}
	out := make([]byte, len(rgb))
	for dy := range dh {
		for dx := range dw {
			var sx, sy int
			switch o {
			case 2:
				sx, sy = w-1-dx, dy
			case 3:
				sx, sy = w-1-dx, h-1-dy
			case 4:
				sx, sy = dx, h-1-dy
			case 5:
				sx, sy = dy, dx
			case 6:
				sx, sy = dy, h-1-dx
			case 7:
				sx, sy = w-1-dy, h-1-dx
			case 8:
				sx, sy = w-1-dy, dx
			}
			s, d := (sy*w+sx)*3, (dy*dw+dx)*3
			out[d], out[d+1], out[d+2] = rgb[s], rgb[s+1], rgb[s+2]
		}
	}
	return dw, dh, out
}

package server

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // decoders for image.DecodeConfig
	_ "image/jpeg"
	_ "image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// imageFromURL returns the bytes of an OpenAI image_url: a data URI, or a
// file:// URL inside the allowed media folder. Remote URLs are refused:
// the server never reaches out to the network.
func (s *Server) imageFromURL(raw, param string) ([]byte, error) {
	switch {
	case strings.HasPrefix(raw, "data:"):
		return s.imageFromDataURI(raw, param)
	case strings.HasPrefix(strings.ToLower(raw), "file:"):
		return s.imageFromFile(raw, param)
	case strings.HasPrefix(strings.ToLower(raw), "http:"), strings.HasPrefix(strings.ToLower(raw), "https:"):
		return nil, badRequest(param, "%s: remote image URLs are not fetched (owl works offline); send the image as a data URI (data:image/png;base64,...)", param)
	case raw == "":
		return nil, badRequest(param, "%s: empty image URL", param)
	}
	return nil, badRequest(param, "%s: image URL must be a data URI (data:image/png;base64,...) or a file:// URL", param)
}

// imageFromDataURI decodes data:[<media type>][;base64],<data>.
func (s *Server) imageFromDataURI(raw, param string) ([]byte, error) {
	meta, data, ok := strings.Cut(raw[len("data:"):], ",")
	if !ok {
		return nil, badRequest(param, "%s: data URI without a comma before its data", param)
	}
	parts := strings.Split(meta, ";")
	mt := strings.ToLower(strings.TrimSpace(parts[0]))
	if mt != "" && !strings.HasPrefix(mt, "image/") && mt != "application/octet-stream" {
		return nil, &apiError{Status: http.StatusUnsupportedMediaType, Type: typeInvalidRequest, Param: param,
			Message: fmt.Sprintf("%s: data URI of type %s is not an image", param, truncate(mt, 64))}
	}
	isBase64 := false
	for _, p := range parts[1:] {
		isBase64 = isBase64 || strings.EqualFold(strings.TrimSpace(p), "base64")
	}
	var b []byte
	if isBase64 {
		var err error
		if b, err = decodeBase64(data); err != nil {
			return nil, badRequest(param, "%s: invalid base64 in the data URI: %v", param, err)
		}
	} else {
		u, err := url.PathUnescape(data)
		if err != nil {
			return nil, badRequest(param, "%s: invalid percent-encoding in the data URI: %v", param, err)
		}
		b = []byte(u)
	}
	return b, s.checkImage(b, param)
}

// decodeBase64 accepts standard base64 with or without padding, and
// ignores line breaks.
func decodeBase64(s string) ([]byte, error) {
	s = strings.NewReplacer("\n", "", "\r", "").Replace(strings.TrimSpace(s))
	if strings.HasSuffix(s, "=") || len(s)%4 == 0 {
		return base64.StdEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// imageFromFile reads a file:// URL lying inside the allowed media folder.
func (s *Server) imageFromFile(raw, param string) ([]byte, error) {
	if s.mediaDir == "" {
		return nil, &apiError{Status: http.StatusForbidden, Type: typeInvalidRequest, Param: param, Code: "file_url_refused",
			Message: fmt.Sprintf("%s: file:// image URLs are refused: the server was started without --allowed-media-dir", param)}
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Host != "" && u.Host != "localhost") || u.Path == "" {
		return nil, badRequest(param, "%s: malformed file URL (want file:///absolute/path)", param)
	}
	p := filepath.Clean(filepath.FromSlash(u.Path))
	refused := &apiError{Status: http.StatusForbidden, Type: typeInvalidRequest, Param: param, Code: "file_url_refused",
		Message: fmt.Sprintf("%s: %s is outside the allowed media folder", param, truncate(p, 200))}
	if !filepath.IsAbs(p) || !within(s.mediaDir, p) {
		return nil, refused
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return nil, badRequest(param, "%s: %s: no such file", param, truncate(p, 200))
	}
	if !within(s.mediaDir, real) {
		return nil, refused
	}
	f, err := os.Open(real)
	if err != nil {
		return nil, badRequest(param, "%s: %s cannot be read", param, truncate(p, 200))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil, badRequest(param, "%s: %s is not a regular file", param, truncate(p, 200))
	}
	if st.Size() > s.lim.MaxBodyBytes {
		return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Type: typeInvalidRequest, Param: param,
			Message: fmt.Sprintf("%s: %d bytes, over the limit of %d", param, st.Size(), s.lim.MaxBodyBytes)}
	}
	b, err := io.ReadAll(io.LimitReader(f, s.lim.MaxBodyBytes))
	if err != nil {
		return nil, err
	}
	return b, s.checkImage(b, param)
}

// errNotImage is wrapped by errors about bytes that are no image owl reads.
var errNotImage = errors.New("not a PNG, JPEG, GIF or WebP image")

// imageSize reads the dimensions from an image's header, without decoding
// its pixels.
func imageSize(b []byte) (w, h int, format string, err error) {
	if len(b) >= 12 && string(b[:4]) == "RIFF" && string(b[8:12]) == "WEBP" {
		w, h, err = webpSize(b)
		return w, h, "webp", err
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		if errors.Is(err, image.ErrFormat) {
			return 0, 0, "", errNotImage
		}
		return 0, 0, format, fmt.Errorf("damaged %s image: %v", format, err)
	}
	return cfg.Width, cfg.Height, format, nil
}

// webpSize reads the canvas size of a WebP file (lossy, lossless or
// extended).
func webpSize(b []byte) (w, h int, err error) {
	bad := fmt.Errorf("damaged webp image: header too short or malformed")
	if len(b) < 30 {
		return 0, 0, bad
	}
	switch string(b[12:16]) {
	case "VP8X":
		w = 1 + int(uint32(b[24])|uint32(b[25])<<8|uint32(b[26])<<16)
		h = 1 + int(uint32(b[27])|uint32(b[28])<<8|uint32(b[29])<<16)
	case "VP8L":
		if b[20] != 0x2f {
			return 0, 0, bad
		}
		v := binary.LittleEndian.Uint32(b[21:25])
		w, h = 1+int(v&0x3fff), 1+int(v>>14&0x3fff)
	case "VP8 ":
		if b[23] != 0x9d || b[24] != 0x01 || b[25] != 0x2a {
			return 0, 0, bad
		}
		w = int(binary.LittleEndian.Uint16(b[26:28]) & 0x3fff)
		h = int(binary.LittleEndian.Uint16(b[28:30]) & 0x3fff)
	default:
		return 0, 0, bad
	}
	if w == 0 || h == 0 {
		return 0, 0, bad
	}
	return w, h, nil
}

// checkImage makes sure b is an image within the pixel limit.
func (s *Server) checkImage(b []byte, param string) error {
	if len(b) == 0 {
		return badRequest(param, "%s: empty image", param)
	}
	w, h, format, err := imageSize(b)
	if errors.Is(err, errNotImage) {
		return &apiError{Status: http.StatusUnsupportedMediaType, Type: typeInvalidRequest, Param: param, Code: "unsupported_image",
			Message: fmt.Sprintf("%s: %v", param, err)}
	}
	if err != nil {
		return badRequest(param, "%s: %v", param, err)
	}
	if px := int64(w) * int64(h); px > s.lim.MaxImagePixels {
		return &apiError{Status: http.StatusRequestEntityTooLarge, Type: typeInvalidRequest, Param: param, Code: "image_too_large",
			Message: fmt.Sprintf("%s: %s image of %d×%d pixels is over the limit of %d pixels", param, format, w, h, s.lim.MaxImagePixels)}
	}
	return nil
}

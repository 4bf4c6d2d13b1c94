package server

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/owlengine/owl/vision"
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

// checkImage makes sure b is an image within the pixel limit.
func (s *Server) checkImage(b []byte, param string) error {
	if len(b) == 0 {
		return badRequest(param, "%s: empty image", param)
	}
	cfg, format, err := vision.Config(b)
	switch {
	case errors.Is(err, vision.ErrUnknownFormat), errors.Is(err, vision.ErrUnsupported):
		return &apiError{Status: http.StatusUnsupportedMediaType, Type: typeInvalidRequest, Param: param, Code: "unsupported_image",
			Message: fmt.Sprintf("%s: not a PNG, JPEG, GIF, WebP, BMP or TIFF image (%v)", param, err)}
	case errors.Is(err, vision.ErrCorrupt):
		return badRequest(param, "%s: damaged %s image: %v", param, format, err)
	case err != nil:
		return badRequest(param, "%s: %v", param, err)
	}
	w, h := cfg.Width, cfg.Height
	if px := int64(w) * int64(h); px > s.lim.MaxImagePixels {
		return &apiError{Status: http.StatusRequestEntityTooLarge, Type: typeInvalidRequest, Param: param, Code: "image_too_large",
			Message: fmt.Sprintf("%s: %s image of %d×%d pixels is over the limit of %d pixels", param, format, w, h, s.lim.MaxImagePixels)}
	}
	return nil
}

package server

import (
	"embed"
	"io"
	"io/fs"
	"net/http"
	"strings"
)

// The page owl serve shows at / (docs/web.md): static files embedded in the
// binary, every one of them local, talking to the server's own APIs.

//go:embed web
var webFiles embed.FS

// webCSP keeps the page on its own origin: no script, style, font or
// connection goes anywhere else.
const webCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// isPage reports whether the request is for the page or its files, which
// carry no data and so are served without the API key.
func isPage(r *http.Request) bool {
	return (r.URL.Path == "/" && wantsHTML(r)) || strings.HasPrefix(r.URL.Path, "/ui/")
}

// wantsHTML tells a browser from the API clients that also ask for /
// (ollama's check that a server is there).
func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

func pageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", webCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
}

// handleRoot answers /: the page for browsers, the words ollama's clients
// read for everyone else.
func (s *Server) handleRoot(w http.ResponseWriter, r *http.Request) error {
	if !wantsHTML(r) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "owl is running (OpenAI API under /v1, ollama's under /api)\n")
		return nil
	}
	b, err := webFiles.ReadFile("web/index.html")
	if err != nil {
		return err
	}
	pageHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(b)
	return nil
}

// webHandler serves the page's files under /ui/.
func webHandler() http.Handler {
	sub, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err)
	}
	files := http.StripPrefix("/ui/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		pageHeaders(w)
		files.ServeHTTP(w, r)
	})
}

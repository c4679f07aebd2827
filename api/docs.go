package api

import (
	_ "embed"
	"net/http"

	"github.com/go-chi/chi/v5"
)

// docsPage is a self-contained reference page: it fetches /openapi.json from
// the same server and renders the operations, with no script, font or style
// from elsewhere, so /docs works on machines without internet access.
//
//go:embed docs.html
var docsPage []byte

func registerDocs(router chi.Router) {
	router.Get("/docs", func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(docsPage)
	})
}

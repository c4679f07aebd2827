package revocation

import (
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Media types of RFC 6960 appendix A.
const (
	ContentTypeRequest  = "application/ocsp-request"
	ContentTypeResponse = "application/ocsp-response"
)

// ServeHTTP serves OCSP over HTTP as RFC 6960 appendix A describes:
//
//   - POST with the DER request as the body (its Content-Type is not checked),
//     at most MaxRequestBytes or the status is 413;
//   - GET with the request in the path: "/" then the DER request in base64,
//     standard or URL-safe alphabet, padded or not, percent-encoded or not.
//
// Other methods get 405. The reply is always 200 with an
// application/ocsp-response body, error responses included; signed responses
// to GET carry Cache-Control max-age (until the responder itself would sign
// anew, half the validity after thisUpdate), Last-Modified (thisUpdate) and
// Expires (nextUpdate) as RFC 5019 section 6 suggests; error responses to GET
// carry "Cache-Control: no-store".
//
// A GET request is read from the path after the mount point, so the mount
// prefix MUST be stripped for GET; POST ignores the path. The API mounts the
// responder like this (chi):
//
//	router.Handle("/ocsp", responder)                                // POST /ocsp
//	router.Handle("/ocsp/*", http.StripPrefix("/ocsp", responder))  // GET /ocsp/{base64}
//
// The router MUST NOT clean the path: standard base64 contains "/" and can
// contain "//", which http.ServeMux would redirect to a different path (chi
// does not clean paths).
func (r *Responder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var der []byte
	switch req.Method {
	case http.MethodPost:
		body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, int64(r.maxRequest)))
		if err != nil {
			if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
				http.Error(w, "OCSP request too large", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "cannot read the OCSP request", http.StatusBadRequest)
			return
		}
		der = body
	case http.MethodGet:
		p := strings.TrimPrefix(req.URL.Path, "/")
		if len(p) > base64.StdEncoding.EncodedLen(r.maxRequest) {
			http.Error(w, "OCSP request too large", http.StatusRequestURITooLong)
			return
		}
		der = decodeBase64(p)
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}

	res, err := r.respond(req.Context(), der)
	if err != nil {
		r.log.LogAttrs(req.Context(), slog.LevelError, "OCSP internal error", slog.String("err", err.Error()))
	}
	h := w.Header()
	h.Set("Content-Type", ContentTypeResponse)
	h.Set("Content-Length", strconv.Itoa(len(res.der)))
	if req.Method == http.MethodGet {
		if res.signed {
			maxAge := max(res.thisUpdate.Add(r.validity/2).Sub(r.now())/time.Second, 0)
			h.Set("Cache-Control", "max-age="+strconv.FormatInt(int64(maxAge), 10)+", public, no-transform, must-revalidate")
			h.Set("Last-Modified", res.thisUpdate.Format(http.TimeFormat))
			h.Set("Expires", res.nextUpdate.Format(http.TimeFormat))
		} else {
			h.Set("Cache-Control", "no-store")
		}
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(res.der)
}

// decodeBase64 decodes s in any of the four base64 variants, or returns nil
// (which Respond answers with malformedRequest).
func decodeBase64(s string) []byte {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b
		}
	}
	return nil
}

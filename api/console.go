package api

import (
	"net/http"

	"github.com/gitmesh/gitmesh/api/ui"
)

// consoleCSP lets the console's page load its own script and style sheet
// and call the API of its own origin, and nothing else: no inline script
// or style, no other origin, no frame around it.
const consoleCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// console serves the web console's files under /ui/. They hold no data: the
// page reads the API with the token the user gives it, so they need none.
func console() http.Handler {
	files := http.StripPrefix("/ui/", http.FileServerFS(ui.Files))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secureHeaders(w.Header())
		files.ServeHTTP(w, r)
	})
}

// secureHeaders are the headers of every console answer.
func secureHeaders(h http.Header) {
	h.Set("Content-Security-Policy", consoleCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cache-Control", "no-cache")
}

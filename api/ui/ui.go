// Package ui holds the web console's files, embedded in the binary: one
// page, one script and one style sheet, written by hand (no bundler, no
// other origin). The api package serves them at /ui/.
package ui

import "embed"

// Files are index.html, app.js and app.css.
//
//go:embed index.html app.js app.css
var Files embed.FS

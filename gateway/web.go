package gateway

import (
	"embed"
	"io/fs"
)

// The dashboard: plain HTML, CSS and JavaScript, embedded so that the
// binary alone serves it, with nothing to build or fetch.
//
//go:embed web
var webFiles embed.FS

func webRoot() fs.FS {
	sub, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the embedded tree always has web/
	}
	return sub
}

//go:build !metrics

package main

import "net/http"

// instrument returns h: this build has no metrics.
func instrument(_ *http.ServeMux, h http.Handler) http.Handler { return h }

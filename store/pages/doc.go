// Package pages stores VM memory images as page-aware, content-addressed
// blocks. (Design and format: see the end of this comment; measurements in
// bench_test.go.)
package pages

package results

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"html"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// FigureRef is one figure of a report section and what it shows.
type FigureRef struct {
	File    string // base name under the figure directory, without extension
	Caption string
	// Text is two or three sentences computed from the data: what the figure
	// shows and how it compares with the paper's claims.
	Text string
}

// Section is one experiment's part of the report.
type Section struct {
	Name    string // e1-downtime
	Title   string
	About   string // what the experiment varies and measures
	Meta    Meta
	Summary *Table // a small table for the report (means over seeds)
	Figures []FigureRef
	// Notes are findings that belong to no single figure.
	Notes []string
}

// Report is the paper suite's report.
type Report struct {
	Title    string
	Intro    string
	Sections []Section
}

// WriteReport writes the report as Markdown to mdPath and as a single HTML
// page with the PNGs inline to htmlPath (skipped if empty). figDir is the
// directory holding the figures; the Markdown links to them relative to
// mdPath's directory.
func WriteReport(r Report, mdPath, htmlPath, figDir string) error {
	rel, err := filepath.Rel(filepath.Dir(mdPath), figDir)
	if err != nil {
		rel = figDir
	}
	if err := WriteFileAtomic(mdPath, r.markdown(filepath.ToSlash(rel))); err != nil {
		return err
	}
	if htmlPath == "" {
		return nil
	}
	h, err := r.html(figDir)
	if err != nil {
		return err
	}
	return WriteFileAtomic(htmlPath, h)
}

func (r Report) markdown(figRel string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n\n%s\n\n", r.Title, r.Intro)
	for _, s := range r.Sections {
		fmt.Fprintf(&b, "- [%s](#%s)\n", s.Title, anchor(s.Title))
	}
	b.WriteString("\n")
	for _, s := range r.Sections {
		fmt.Fprintf(&b, "## %s\n\n%s\n\n", s.Title, s.About)
		fmt.Fprintf(&b, "Experiment `%s`, seeds %s, vnsnap %s, %s. Rows: `%s.csv`, `%s.json`.\n\n",
			s.Name, seedList(s.Meta.Seeds), s.Meta.Version, s.Meta.GoVersion, s.Name, s.Name)
		for _, f := range s.Figures {
			fmt.Fprintf(&b, "![%s](%s/%s.png)\n\n*%s* %s\n\n", f.Caption, figRel, f.File, f.Caption, f.Text)
		}
		for _, n := range s.Notes {
			fmt.Fprintf(&b, "%s\n\n", n)
		}
		if s.Summary != nil && len(s.Summary.Rows) > 0 {
			writeMarkdownTable(&b, s.Summary)
			b.WriteString("\n")
		}
	}
	return b.Bytes()
}

func writeMarkdownTable(b *bytes.Buffer, t *Table) {
	var head, rule []string
	for _, c := range t.Columns {
		head = append(head, c.Name)
		rule = append(rule, "---")
	}
	fmt.Fprintf(b, "| %s |\n| %s |\n", strings.Join(head, " | "), strings.Join(rule, " | "))
	for r := range t.Rows {
		cells := make([]string, len(t.Columns))
		for i, c := range t.Columns {
			cells[i] = t.String(r, c.Name)
		}
		fmt.Fprintf(b, "| %s |\n", strings.Join(cells, " | "))
	}
}

func anchor(title string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(title) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteRune(c)
		case c == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

const htmlHead = `<!doctype html>
<html><head><meta charset="utf-8"><title>%s</title>
<style>
body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.45;color:#222}
img{max-width:100%%;border:1px solid #ddd}
table{border-collapse:collapse;font-size:90%%;margin:1em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3}
figure{margin:1.5em 0}
figcaption{margin-top:.4em}
code{background:#f5f5f5}
</style></head><body>
`

func (r Report) html(figDir string) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, htmlHead, html.EscapeString(r.Title))
	fmt.Fprintf(&b, "<h1>%s</h1>\n<p>%s</p>\n<p><small>generated %s</small></p>\n<ul>\n",
		html.EscapeString(r.Title), html.EscapeString(r.Intro), time.Now().UTC().Format(time.RFC3339))
	for _, s := range r.Sections {
		fmt.Fprintf(&b, "<li><a href=\"#%s\">%s</a></li>\n", anchor(s.Title), html.EscapeString(s.Title))
	}
	b.WriteString("</ul>\n")
	for _, s := range r.Sections {
		fmt.Fprintf(&b, "<h2 id=\"%s\">%s</h2>\n<p>%s</p>\n", anchor(s.Title), html.EscapeString(s.Title), html.EscapeString(s.About))
		fmt.Fprintf(&b, "<p><small>experiment <code>%s</code>, seeds %s, vnsnap %s, %s</small></p>\n",
			s.Name, seedList(s.Meta.Seeds), html.EscapeString(s.Meta.Version), s.Meta.GoVersion)
		for _, f := range s.Figures {
			png, err := os.ReadFile(filepath.Join(figDir, f.File+".png"))
			if err != nil {
				return nil, fmt.Errorf("results: report: %w", err)
			}
			fmt.Fprintf(&b, "<figure><img alt=\"%s\" src=\"data:image/png;base64,%s\"><figcaption><b>%s</b> %s</figcaption></figure>\n",
				html.EscapeString(f.Caption), base64.StdEncoding.EncodeToString(png), html.EscapeString(f.Caption), html.EscapeString(f.Text))
		}
		for _, n := range s.Notes {
			fmt.Fprintf(&b, "<p>%s</p>\n", html.EscapeString(n))
		}
		if t := s.Summary; t != nil && len(t.Rows) > 0 {
			b.WriteString("<table><tr>")
			for _, c := range t.Columns {
				fmt.Fprintf(&b, "<th>%s</th>", html.EscapeString(c.Name))
			}
			b.WriteString("</tr>\n")
			for r := range t.Rows {
				b.WriteString("<tr>")
				for _, c := range t.Columns {
					fmt.Fprintf(&b, "<td>%s</td>", html.EscapeString(t.String(r, c.Name)))
				}
				b.WriteString("</tr>\n")
			}
			b.WriteString("</table>\n")
		}
	}
	b.WriteString("</body></html>\n")
	return b.Bytes(), nil
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/ddpm-go/ddpm/npy"
	"github.com/ddpm-go/ddpm/weights"
)

// inspectOptions are the flags of `ddpm inspect`.
type inspectOptions struct {
	Path    string // weights file or folder
	JSON    bool   // machine-readable output
	Tensors bool   // list every tensor
}

const inspectExamples = `  ddpm inspect ./my-diffusers-model
  ddpm inspect --json checkpoints/step-001000.safetensors
  ddpm inspect --tensors=false model.safetensors
  ddpm inspect x.npy`

func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("inspect", "inspect [--json] [--tensors=false] PATH", inspectExamples, stderr)
	var o inspectOptions
	fs.BoolVar(&o.JSON, "json", false, "print one JSON object instead of text")
	fs.BoolVar(&o.Tensors, "tensors", true, "list every tensor (name, dtype, shape)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usageError{fmt.Sprintf("inspect: want exactly one PATH, got %d", len(pos))}
	}
	o.Path = pos[0]
	return inspect(ctx, o, stdout)
}

// inspect prints what o.Path holds.
func inspect(_ context.Context, o inspectOptions, w io.Writer) error {
	if inspectIsNPY(o.Path) {
		return inspectNPY(o, w)
	}
	info, err := weights.Inspect(o.Path)
	if err != nil {
		return err
	}
	if !o.Tensors {
		info.Tensors = nil
	}
	if o.JSON {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return enc.Encode(info)
	}
	return inspectPrint(w, info)
}

func inspectPrint(w io.Writer, info *weights.Info) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "path:        %s\n", info.Path)
	fmt.Fprintf(&b, "format:      %s\n", info.Format)
	if info.WeightsFile != info.Path {
		fmt.Fprintf(&b, "weights:     %s\n", info.WeightsFile)
	}
	names := inspectKeys(info.Configs)
	for _, k := range names {
		fmt.Fprintf(&b, "%s:\n", k)
		inspectConfig(&b, info.Configs[k])
	}
	var other []string
	for _, k := range inspectKeys(info.Metadata) {
		if _, isConfig := info.Configs[k]; !isConfig {
			other = append(other, k)
		}
	}
	if len(other) > 0 {
		fmt.Fprintln(&b, "metadata:")
		for _, k := range other {
			fmt.Fprintf(&b, "  %s: %s\n", k, inspectTruncate(info.Metadata[k], 200))
		}
	}
	if len(info.ClassNames) > 0 {
		fmt.Fprintf(&b, "classes:     %d (%s)\n", len(info.ClassNames), inspectTruncate(strings.Join(info.ClassNames, ", "), 200))
	}
	fmt.Fprintf(&b, "parameters:  %s (%s as float32)\n", inspectDigits(info.NumParams), inspectBytes(4*info.NumParams))
	if info.NumExtraParams > 0 {
		fmt.Fprintf(&b, "train state: %s values (raw weights, Adam moments)\n", inspectDigits(info.NumExtraParams))
	}
	fmt.Fprintf(&b, "tensors:     %d\n", info.NumTensors)
	if len(info.Tensors) > 0 {
		fmt.Fprintln(&b)
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tDTYPE\tSHAPE\tPARAMS")
		for _, t := range info.Tensors {
			fmt.Fprintf(tw, "%s\t%s\t%v\t%d\n", t.Name, t.DType, t.Shape, t.NumElements())
		}
		tw.Flush()
	}
	_, err := w.Write(b.Bytes())
	return err
}

// inspectNPYInfo is inspect's JSON for a .npy file.
type inspectNPYInfo struct {
	Path   string `json:"path"`
	Format string `json:"format"`
	DType  string `json:"dtype"`
	Shape  []int  `json:"shape"`
	Len    int    `json:"elements"`
}

func inspectIsNPY(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var m [6]byte
	_, err = io.ReadFull(f, m[:])
	return err == nil && string(m[:]) == "\x93NUMPY"
}

func inspectNPY(o inspectOptions, w io.Writer) error {
	a, err := npy.ReadFile(o.Path)
	if err != nil {
		return err
	}
	info := inspectNPYInfo{Path: o.Path, Format: "npy", DType: string(a.DType), Shape: a.Shape, Len: a.Len()}
	if o.JSON {
		return json.NewEncoder(w).Encode(info)
	}
	_, err = fmt.Fprintf(w, "path:        %s\nformat:      npy\ndtype:       %s\nshape:       %v\nelements:    %s\n",
		info.Path, info.DType, info.Shape, inspectDigits(int64(info.Len)))
	return err
}

// inspectConfig prints a JSON object one top-level key per line, sorted,
// each value compact; anything else goes on one line.
func inspectConfig(b *bytes.Buffer, raw json.RawMessage) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		fmt.Fprintf(b, "  %s\n", inspectCompactJSON(raw))
		return
	}
	for _, k := range inspectKeys(obj) {
		fmt.Fprintf(b, "  %s: %s\n", k, inspectTruncate(inspectCompactJSON(obj[k]), 200))
	}
}

// inspectCompactJSON prints JSON on one line with a space after ':' and ','.
func inspectCompactJSON(raw json.RawMessage) string {
	var c bytes.Buffer
	if err := json.Compact(&c, raw); err != nil {
		return inspectTruncate(string(raw), 200)
	}
	var out strings.Builder
	inStr, esc := false, false
	for _, ch := range c.Bytes() {
		out.WriteByte(ch)
		switch {
		case esc:
			esc = false
		case inStr && ch == '\\':
			esc = true
		case ch == '"':
			inStr = !inStr
		case !inStr && (ch == ':' || ch == ','):
			out.WriteByte(' ')
		}
	}
	return out.String()
}

// inspectTruncate cuts s to at most n bytes, at a rune boundary, and says
// how long it was.
func inspectTruncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("... (%d bytes)", len(s))
}

// inspectDigits writes n with thousands separators: 1112801 -> 1,112,801.
func inspectDigits(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func inspectBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// inspectKeys returns m's keys, sorted.
func inspectKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

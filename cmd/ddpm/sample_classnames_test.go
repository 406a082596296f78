package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpm-go/ddpm/internal/fixtures"
	"github.com/ddpm-go/ddpm/pipeline"
)

// TestSampleImageNetClassName: on guided-diffusion's small
// class-conditional fixture (class_cond, num_classes 1000: ImageNet's),
// --class "Golden Retriever" is class 207 (the same sample as --class 207),
// and an unknown name is a usage error naming the closest classes.
func TestSampleImageNetClassName(t *testing.T) {
	root := fixtures.Dir(t, "openai-small")
	model := filepath.Join(root, "adm", "model.pt")
	src, err := pipeline.OpenSource(t.Context(), model, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lookup := pipeline.ClassLookup(src, 1000); lookup == nil {
		t.Error("ClassLookup: no names for a guided-diffusion model over 1000 classes")
	} else if i, err := lookup("Golden Retriever"); err != nil || i != 207 {
		t.Errorf("ClassLookup: golden retriever is %d, %v; want 207", i, err)
	}
	dir := t.TempDir()
	raw := func(name, class string) []byte {
		t.Helper()
		p := filepath.Join(dir, name)
		runSampleArgs(t, "sample", "--device", "cpu", "--model", model, "--class", class, "--steps", "2", "--n", "1", "--seed", "1", "--raw", p)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	byName, byIndex, other := raw("name.npy", "Golden Retriever"), raw("index.npy", "207"), raw("other.npy", "208")
	if !bytes.Equal(byName, byIndex) {
		t.Error(`--class "Golden Retriever" and --class 207 gave different samples`)
	}
	if bytes.Equal(byIndex, other) {
		t.Error("--class 207 and 208 gave the same sample: the label is not used")
	}
	var so, se bytes.Buffer
	err = run(t.Context(), []string{"sample", "--device", "cpu", "--model", model, "--class", "golden retreiver", "--steps", "2", "--n", "1",
		"--out", filepath.Join(dir, "x.png")}, &so, &se)
	if _, ok := err.(usageError); !ok || !strings.Contains(err.Error(), "golden retriever (207)") {
		t.Errorf("misspelt class: %v, want a usage error naming golden retriever (207)", err)
	}
}

// TestSampleClassNames: a ddpm model file's own class names (as MNIST's
// digits) still resolve, case-insensitively; unknown names list them.
func TestSampleClassNames(t *testing.T) {
	model := tinyModelFile(t) // classes "a", "b"
	dir := t.TempDir()
	raw := func(name, class string) []byte {
		t.Helper()
		p := filepath.Join(dir, name)
		runSampleArgs(t, "sample", "--device", "cpu", "--model", model, "--class", class, "--steps", "3", "--n", "2", "--seed", "1", "--raw", p)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Equal(raw("name.npy", "A,B"), raw("index.npy", "0,1")) {
		t.Error(`--class A,B and --class 0,1 gave different samples`)
	}
	var so, se bytes.Buffer
	err := run(t.Context(), []string{"sample", "--device", "cpu", "--model", model, "--class", "golden retriever", "--n", "1",
		"--out", filepath.Join(dir, "x.png")}, &so, &se)
	if _, ok := err.(usageError); !ok || !strings.Contains(err.Error(), "a, b") {
		t.Errorf("unknown class name: %v, want a usage error listing a, b", err)
	}
}

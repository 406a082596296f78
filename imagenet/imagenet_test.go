package imagenet

import (
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	names := Names()
	if len(names) != NumClasses || NumClasses != 1000 {
		t.Fatalf("%d names, want 1000", len(names))
	}
	// Well-known indices of the sorted-wnid order, with their wnids.
	for _, c := range []struct {
		i          int
		name, wnid string
	}{
		{0, "tench", "n01440764"},
		{1, "goldfish", "n01443537"},
		{207, "golden retriever", "n02099601"},
		{281, "tabby", "n02123045"},
		{999, "toilet tissue", "n15075141"},
	} {
		if names[c.i] != c.name || WNID(c.i) != c.wnid {
			t.Errorf("class %d: %q %s, want %q %s", c.i, names[c.i], WNID(c.i), c.name, c.wnid)
		}
	}
	if l := Lemmas(281); strings.Join(l, ", ") != "tabby, tabby cat" {
		t.Errorf("Lemmas(281) = %q", l)
	}
	for i := 1; i < NumClasses; i++ {
		if WNID(i) <= WNID(i-1) {
			t.Fatalf("wnids not increasing at %d: %s after %s", i, WNID(i), WNID(i-1))
		}
	}
	if WNID(-1) != "" || WNID(1000) != "" || Lemmas(1000) != nil {
		t.Error("out-of-range index gave a class")
	}
	names[0] = "changed"
	if Names()[0] != "tench" {
		t.Error("Names shares its slice")
	}
}

func TestLookup(t *testing.T) {
	for _, c := range []struct {
		name string
		want int
	}{
		{"Golden Retriever", 207},
		{"golden_retriever", 207},
		{"  golden   retriever ", 207},
		{"tench", 0},
		{"Tinca tinca", 0}, // a later lemma
		{"tabby cat", 281},
		{"TOILET PAPER", 999},
		{"tank suit", 639},
	} {
		got, err := Lookup(c.name)
		if err != nil || got != c.want {
			t.Errorf("Lookup(%q) = %d, %v; want %d", c.name, got, err, c.want)
		}
	}
	_, err := Lookup("golden retreiver")
	if err == nil || !strings.Contains(err.Error(), "golden retriever (207)") {
		t.Errorf("Lookup of a misspelling: %v, want an error naming golden retriever (207)", err)
	}
	for _, bad := range []string{"", "unicorn"} {
		if i, err := Lookup(bad); err == nil {
			t.Errorf("Lookup(%q) = %d, want an error", bad, i)
		}
	}
	// crane is both the bird (134) and the machine (517).
	if _, err := Lookup("crane"); err == nil || !strings.Contains(err.Error(), "134") || !strings.Contains(err.Error(), "517") {
		t.Errorf("Lookup(crane): %v, want an ambiguity error naming 134 and 517", err)
	}
}

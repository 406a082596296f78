package tokenizer

import (
	"bufio"
	"bytes"
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// lowerProbe prints, for every code point, Python's view of it: one class
// character per code point ('u' unassigned or surrogate; otherwise the
// sigma each of two probes gives, which reveals the Cased and
// Case_Ignorable properties: 'AΣ<c>B' keeps σ iff c is cased or
// case-ignorable, '-<c>Σ' gives ς iff c is cased and not ignorable), then a
// line "cp lower-cps..." for each code point whose str.lower() differs.
const lowerProbe = `
import sys, unicodedata
cls = []
maps = []
for cp in range(0x110000):
    c = chr(cp)
    if unicodedata.category(c) in ("Cn", "Cs"):
        cls.append("u")
        continue
    r1 = ("A\u03a3" + c + "B").lower()[1]
    r2 = ("-" + c + "\u03a3").lower()[-1]
    cls.append({("\u03c3", "\u03c2"): "c", ("\u03c2", "\u03c3"): ".", ("\u03c3", "\u03c3"): "i"}.get((r1, r2), "?"))
    lo = c.lower()
    if lo != c:
        maps.append("%x %s" % (cp, " ".join("%x" % ord(x) for x in lo)))
sys.stdout.write("".join(cls) + "\n" + "\n".join(maps) + "\n")
`

// TestPyLower compares pyLower with Python's str.lower on every assigned
// code point, including the Final_Sigma context. Characters Python's
// Unicode tables do not know yet are skipped. It needs python3.
func TestPyLower(t *testing.T) {
	if testing.Short() {
		t.Skip("exhaustive Unicode comparison")
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		if py, err = exec.LookPath("/usr/bin/python3"); err != nil {
			t.Skip("no python3")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "-c", lowerProbe).Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 4<<20)
	if !sc.Scan() || len(sc.Text()) != 0x110000 {
		t.Fatalf("python printed no class line")
	}
	classes := sc.Text()
	lower := map[rune]string{}
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		cp, _ := strconv.ParseInt(f[0], 16, 32)
		var sb strings.Builder
		for _, h := range f[1:] {
			v, _ := strconv.ParseInt(h, 16, 32)
			sb.WriteRune(rune(v))
		}
		lower[rune(cp)] = sb.String()
	}
	checked, bad := 0, 0
	for cp := rune(0); cp < 0x110000; cp++ {
		cl := classes[cp]
		if cl == 'u' || !utf8.ValidRune(cp) {
			continue
		}
		checked++
		c := string(cp)
		want, ok := lower[cp]
		if !ok {
			want = c
		}
		if got := pyLower(c); got != want {
			bad++
			if bad < 20 {
				t.Errorf("U+%04X: lower %q, Python %q", cp, got, want)
			}
		}
		r1 := []rune(pyLower("AΣ" + c + "B"))[1]
		r2 := []rune(pyLower("-" + c + "Σ"))
		var got byte = '?'
		switch [2]rune{r1, r2[len(r2)-1]} {
		case [2]rune{'σ', 'ς'}:
			got = 'c'
		case [2]rune{'ς', 'σ'}:
			got = '.'
		case [2]rune{'σ', 'σ'}:
			got = 'i'
		}
		if got != cl {
			bad++
			if bad < 20 {
				t.Errorf("U+%04X: sigma class %c, Python %c", cp, got, cl)
			}
		}
	}
	t.Logf("%d code points compared, %d differ", checked, bad)
}

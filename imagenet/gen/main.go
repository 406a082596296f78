// Command gen writes imagenet/classes.txt from the ILSVRC-2012 WordNet ids
// (imagenet/wnids.txt, sorted, one per line: line i is class i) and
// WordNet 3.0's data.noun: line i of classes.txt holds the lemma names of
// synset wnids[i], comma-separated, underscores turned into spaces. The
// synset n######## is the data.noun line whose byte offset field is those
// 8 digits; its lemmas follow the 2-digit hexadecimal word count, each
// with a lex_id after it (WordNet's wndb(5) format).
//
// Run it from the imagenet directory (go generate does) after
//
//	apt-get install wordnet-base # /usr/share/wordnet/data.noun
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

func main() {
	noun := flag.String("wordnet", "/usr/share/wordnet/data.noun", "WordNet 3.0 data.noun")
	in := flag.String("wnids", "wnids.txt", "ILSVRC-2012 wnids, sorted, one per line")
	out := flag.String("out", "classes.txt", "file to write")
	flag.Parse()
	if err := run(*noun, *in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(noun, in, out string) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	wnids := strings.Fields(string(b))
	if len(wnids) != 1000 {
		return fmt.Errorf("%s: %d wnids, want 1000", in, len(wnids))
	}
	for i, w := range wnids {
		if !wnidRE.MatchString(w) {
			return fmt.Errorf("%s: line %d: %q is not a noun wnid n########", in, i+1, w)
		}
		if i > 0 && w <= wnids[i-1] {
			return fmt.Errorf("%s: line %d: %s after %s: the class order is the sorted wnids", in, i+1, w, wnids[i-1])
		}
	}
	lemmas, err := readNouns(noun, wnids)
	if err != nil {
		return err
	}
	var sb strings.Builder
	for i, w := range wnids {
		l, ok := lemmas[w[1:]]
		if !ok {
			return fmt.Errorf("%s: no synset %s (class %d) in %s", in, w, i, noun)
		}
		sb.WriteString(strings.Join(l, ", "))
		sb.WriteByte('\n')
	}
	return os.WriteFile(out, []byte(sb.String()), 0o644)
}

var (
	wnidRE   = regexp.MustCompile(`^n[0-9]{8}$`)
	markerRE = regexp.MustCompile(`\((a|p|ip)\)$`) // adjective markers; nouns have none
)

// readNouns returns the lemmas of the synsets among want, keyed by offset.
func readNouns(path string, want []string) (map[string][]string, error) {
	need := make(map[string]bool, len(want))
	for _, w := range want {
		need[w[1:]] = true
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	got := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "  ") { // the licence header
			continue
		}
		fs := strings.Fields(line)
		if len(fs) < 4 || !need[fs[0]] {
			continue
		}
		if fs[2] != "n" {
			return nil, fmt.Errorf("%s: synset %s has type %q, want n", path, fs[0], fs[2])
		}
		n, err := strconv.ParseUint(fs[3], 16, 8)
		if err != nil || n == 0 || len(fs) < 4+2*int(n) {
			return nil, fmt.Errorf("%s: synset %s: bad word count %q", path, fs[0], fs[3])
		}
		var l []string
		for k := range int(n) {
			w := markerRE.ReplaceAllString(fs[4+2*k], "")
			w = strings.ReplaceAll(w, "_", " ")
			if strings.Contains(w, ",") {
				return nil, fmt.Errorf("%s: synset %s: lemma %q has a comma", path, fs[0], w)
			}
			l = append(l, w)
		}
		got[fs[0]] = l
	}
	return got, sc.Err()
}

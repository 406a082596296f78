// Package imagenet names the 1000 classes of ImageNet (ILSVRC-2012) in the
// order OpenAI's guided-diffusion and ADM models number them: class i is
// the i-th of the 1000 ILSVRC-2012 WordNet ids sorted (wnids.txt, e.g. 0 is
// n01440764, 207 is n02099601), as the class folders of the training set
// sort. Each class's names are the lemma names of its synset in WordNet 3.0
// (Princeton University, data.noun), underscores turned into spaces:
// classes.txt holds them, one line per class, comma-separated. go generate
// rewrites classes.txt from wnids.txt and a local WordNet 3.0 (Debian's
// wordnet-base package); neither WordNet nor the network is needed to use
// the package.
package imagenet

//go:generate go run ./gen -wordnet /usr/share/wordnet/data.noun -wnids wnids.txt -out classes.txt

import (
	_ "embed"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

// NumClasses is the number of ILSVRC-2012 classes.
const NumClasses = 1000

var (
	//go:embed classes.txt
	classesTxt string
	//go:embed wnids.txt
	wnidsTxt string
)

var (
	loadOnce sync.Once
	lemmas   [][]string // lemmas[i]: class i's lemma names, WordNet's order
	wnids    []string
)

func load() {
	for line := range strings.Lines(classesTxt) {
		var l []string
		for _, w := range strings.Split(strings.TrimSpace(line), ",") {
			l = append(l, strings.TrimSpace(w))
		}
		lemmas = append(lemmas, l)
	}
	wnids = strings.Fields(wnidsTxt)
	if len(lemmas) != NumClasses || len(wnids) != NumClasses {
		panic(fmt.Sprintf("imagenet: embedded tables have %d classes and %d wnids, want %d", len(lemmas), len(wnids), NumClasses))
	}
}

// Names returns the first lemma of each class, index = class: "tench",
// "goldfish", ..., "toilet tissue". The slice is a new copy.
func Names() []string {
	loadOnce.Do(load)
	names := make([]string, NumClasses)
	for i, l := range lemmas {
		names[i] = l[0]
	}
	return names
}

// Lemmas returns all of class i's WordNet lemma names (a new slice), the
// first being Names()[i]; nil when i is not in 0..999.
func Lemmas(i int) []string {
	loadOnce.Do(load)
	if i < 0 || i >= NumClasses {
		return nil
	}
	return slices.Clone(lemmas[i])
}

// WNID returns class i's WordNet id (n followed by the synset's 8-digit
// WordNet 3.0 offset), or "" when i is not in 0..999.
func WNID(i int) string {
	loadOnce.Do(load)
	if i < 0 || i >= NumClasses {
		return ""
	}
	return wnids[i]
}

// normalise lower-cases s, turns underscores into spaces and collapses
// runs of white space, so "Golden_Retriever " matches "golden retriever".
func normalise(s string) string {
	return strings.Join(strings.Fields(strings.ToLower(strings.ReplaceAll(s, "_", " "))), " ")
}

// Lookup returns the class that has name among its lemma names
// (case-insensitive; underscores count as spaces): Lookup("Golden
// Retriever") is 207. A name that is the first lemma of one class wins
// over the others' later lemmas; a name two classes still share (crane,
// the bird 134 and the machine 517; maillot, 638 and 639) is an error
// listing both. An unknown name is an error naming the closest few.
func Lookup(name string) (int, error) {
	loadOnce.Do(load)
	n := normalise(name)
	if n == "" {
		return -1, fmt.Errorf("imagenet: empty class name")
	}
	var any, first []int
	for i, l := range lemmas {
		for k, w := range l {
			if normalise(w) == n {
				any = append(any, i)
				if k == 0 {
					first = append(first, i)
				}
				break
			}
		}
	}
	if len(first) == 1 {
		return first[0], nil
	}
	if len(any) == 1 {
		return any[0], nil
	}
	if len(any) > 1 {
		var c []string
		for _, i := range any {
			c = append(c, fmt.Sprintf("%d (%s)", i, strings.Join(lemmas[i], ", ")))
		}
		return -1, fmt.Errorf("imagenet: class name %q is ambiguous: %s; give the class index", name, strings.Join(c, "; "))
	}
	return -1, fmt.Errorf("imagenet: no ImageNet class is named %q; closest are %s", name, strings.Join(closest(n, 5), ", "))
}

// closest returns "name (index)" for the k classes with a lemma nearest to
// n in edit distance, nearest first.
func closest(n string, k int) []string {
	type cand struct {
		d, i int
		w    string
	}
	var cs []cand
	for i, l := range lemmas {
		best := cand{d: -1, i: i}
		for _, w := range l {
			if d := editDistance(n, normalise(w)); best.d < 0 || d < best.d {
				best.d, best.w = d, w
			}
		}
		cs = append(cs, best)
	}
	sort.SliceStable(cs, func(a, b int) bool { return cs[a].d < cs[b].d })
	var out []string
	for _, c := range cs[:k] {
		out = append(out, fmt.Sprintf("%s (%d)", c.w, c.i))
	}
	return out
}

// editDistance is the Levenshtein distance between a and b in runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev, cur := make([]int, len(rb)+1), make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

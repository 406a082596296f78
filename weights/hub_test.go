package weights

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The fake Hub below speaks the part of huggingface.co's resolve API that
// ResolveHub uses, as huggingface_hub's get_hf_file_metadata and http_get
// see it:
//   - HEAD/GET {hub}/{org}/{name}/resolve/{revision}/{path}
//   - regular files: 200 with ETag "<git blob sha1>", Content-Length,
//     X-Repo-Commit; GET serves the bytes, honouring "Range: bytes=N-"
//   - LFS files (*.safetensors, *.bin): 302 to {cdn}/blobs/<sha256> on
//     another host, with X-Linked-Etag "<sha256>", X-Linked-Size and
//     X-Repo-Commit; the CDN serves the bytes with Range support
//   - errors as X-Error-Code: RepoNotFound (401 without a token, 404 with
//     one), RevisionNotFound (404), EntryNotFound (404, with X-Repo-Commit),
//     GatedRepo (401 without a token, 403 with a wrong one).

// fakeRepo is one repository: revisions (branches, tags) point to commits,
// commits hold files.
type fakeRepo struct {
	token   string // non-empty: a gated repository readable with this token
	refs    map[string]string
	commits map[string]map[string][]byte
}

// fakeReq is one request the fake servers saw.
type fakeReq struct {
	server, method, path, rangeHdr, auth string
}

type fakeHub struct {
	t        *testing.T
	hub, cdn *httptest.Server
	mu       sync.Mutex
	repos    map[string]*fakeRepo
	blobs    map[string][]byte // sha256 -> content, for the CDN
	reqs     []fakeReq
	cutName  string // GETs of files with this base name are cut half way...
	cutCount int    // ...this many times
	corrupt  string // files with this base name are served with a byte flipped
}

func newFakeHub(t *testing.T) *fakeHub {
	h := &fakeHub{t: t, repos: map[string]*fakeRepo{}, blobs: map[string][]byte{}}
	h.hub = httptest.NewServer(http.HandlerFunc(h.serveHub))
	h.cdn = httptest.NewServer(http.HandlerFunc(h.serveCDN))
	t.Cleanup(h.hub.Close)
	t.Cleanup(h.cdn.Close)
	return h
}

func (h *fakeHub) record(server string, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reqs = append(h.reqs, fakeReq{server, r.Method, r.URL.EscapedPath(), r.Header.Get("Range"), r.Header.Get("Authorization")})
}

// requests returns and forgets the requests seen so far.
func (h *fakeHub) requests() []fakeReq {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.reqs
	h.reqs = nil
	return r
}

func isLFS(path string) bool {
	return strings.HasSuffix(path, ".safetensors") || strings.HasSuffix(path, ".bin")
}

func gitBlobSHA1(b []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(b))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// etagOf is the etag the Hub gives a file: sha256 for LFS, git sha1 else.
func etagOf(path string, b []byte) string {
	if isLFS(path) {
		return sha256Hex(b)
	}
	return gitBlobSHA1(b)
}

func fakeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("X-Error-Code", code)
	w.Header().Set("X-Error-Message", msg)
	w.WriteHeader(status)
}

func (h *fakeHub) serveHub(w http.ResponseWriter, r *http.Request) {
	h.record("hub", r)
	parts := strings.SplitN(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/", 5)
	if len(parts) != 5 || parts[2] != "resolve" {
		http.NotFound(w, r)
		return
	}
	rev, err1 := url.PathUnescape(parts[3])
	path, err2 := url.PathUnescape(parts[4])
	if err1 != nil || err2 != nil {
		http.Error(w, "bad escape", http.StatusBadRequest)
		return
	}
	if parts[0]+"/"+parts[1] == "org/renamed" { // moved to org/pipe: a relative redirect
		http.Redirect(w, r, "/org/pipe/"+strings.Join(parts[2:], "/"), http.StatusTemporaryRedirect)
		return
	}
	auth := r.Header.Get("Authorization")
	h.mu.Lock()
	repo := h.repos[parts[0]+"/"+parts[1]]
	h.mu.Unlock()
	switch {
	case repo == nil && auth == "":
		fakeError(w, http.StatusUnauthorized, "RepoNotFound", "Repository not found")
		return
	case repo == nil:
		fakeError(w, http.StatusNotFound, "RepoNotFound", "Repository not found")
		return
	case repo.token != "" && auth == "":
		fakeError(w, http.StatusUnauthorized, "GatedRepo", "Access to model is restricted. You must be authenticated to access it.")
		return
	case repo.token != "" && auth != "Bearer "+repo.token:
		fakeError(w, http.StatusForbidden, "GatedRepo", "Access to model is restricted and you are not in the authorized list.")
		return
	}
	commit := rev
	if _, ok := repo.commits[commit]; !ok {
		commit = repo.refs[rev]
	}
	files, ok := repo.commits[commit]
	if !ok {
		fakeError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	w.Header().Set("X-Repo-Commit", commit)
	content, ok := files[path]
	if !ok {
		fakeError(w, http.StatusNotFound, "EntryNotFound", "Entry not found")
		return
	}
	if isLFS(path) {
		sum := sha256Hex(content)
		h.mu.Lock()
		h.blobs[sum] = content
		h.mu.Unlock()
		pointer := fmt.Sprintf("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", sum, len(content))
		w.Header().Set("ETag", `"`+gitBlobSHA1([]byte(pointer))+`"`)
		w.Header().Set("X-Linked-Etag", `"`+sum+`"`)
		w.Header().Set("X-Linked-Size", strconv.Itoa(len(content)))
		w.Header().Set("Location", h.cdn.URL+"/blobs/"+sum+"?name="+url.QueryEscape(path))
		w.WriteHeader(http.StatusFound)
		return
	}
	w.Header().Set("ETag", `"`+gitBlobSHA1(content)+`"`)
	h.serveBytes(w, r, path, content)
}

func (h *fakeHub) serveCDN(w http.ResponseWriter, r *http.Request) {
	h.record("cdn", r)
	h.mu.Lock()
	content, ok := h.blobs[strings.TrimPrefix(r.URL.Path, "/blobs/")]
	h.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	h.serveBytes(w, r, r.URL.Query().Get("name"), content)
}

// serveBytes answers with content from the Range's start, maybe flipped
// or cut half way as the test asked.
func (h *fakeHub) serveBytes(w http.ResponseWriter, r *http.Request, path string, content []byte) {
	base := filepath.Base(path)
	h.mu.Lock()
	if base == h.corrupt {
		content = bytes.Clone(content)
		content[len(content)/2] ^= 0xff
	}
	cut := r.Method == http.MethodGet && base == h.cutName && h.cutCount > 0
	if cut {
		h.cutCount--
	}
	h.mu.Unlock()
	start, status := 0, http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" {
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
		if err != nil || n >= len(content) {
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start, status = n, http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n, len(content)-1, len(content)))
	}
	body := content[start:]
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if cut { // half the body, then the connection drops
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	w.Write(body)
}

// fakeCommit makes a 40-hex commit hash.
func fakeCommit(s string) string { return gitBlobSHA1([]byte(s)) }

// tinySafetensors is tinyModel's tensors as a diffusers weights file.
func tinySafetensors(t *testing.T, scale float32) []byte {
	t.Helper()
	f := &File{Metadata: map[string]string{"format": "pt"}, Tensors: map[string]Tensor{}}
	for k, v := range tinyModel().Tensors {
		d := slices.Clone(v.Data)
		for i := range d {
			d[i] *= scale
		}
		f.Tensors[k] = Tensor{Shape: v.Shape, Data: d}
	}
	var buf bytes.Buffer
	if err := Write(&buf, f); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tinyPipeline is a diffusers pipeline folder as the Hub holds it.
func tinyPipeline(t *testing.T, steps int) map[string][]byte {
	return map[string][]byte{
		"model_index.json":                         []byte(`{"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}`),
		"unet/config.json":                         []byte(unetJSON),
		"unet/diffusion_pytorch_model.safetensors": tinySafetensors(t, 1),
		"scheduler/scheduler_config.json":          fmt.Appendf(nil, `{"_class_name": "DDPMScheduler", "num_train_timesteps": %d}`, steps),
		"README.md":                                []byte("# tiny\n"),
		"unet/diffusion_pytorch_model.bin":         []byte("not read"),
	}
}

// pipelineFiles are the files ddpm takes from tinyPipeline.
var pipelineFiles = []string{"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"}

// hubEnv makes the environment hermetic: an empty cache, the fake Hub as
// endpoint, no token, online, no progress lines. It returns the cache.
func hubEnv(t *testing.T, endpoint string) string {
	t.Helper()
	home := t.TempDir()
	cache := filepath.Join(home, "hub")
	for k, v := range map[string]string{
		"HF_HOME": home, "HF_HUB_CACHE": cache, "HF_ENDPOINT": endpoint,
		"HUGGINGFACE_HUB_CACHE": "", "XDG_CACHE_HOME": "", "HF_TOKEN": "", "HUGGING_FACE_HUB_TOKEN": "",
		"HF_TOKEN_PATH": "", "HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "",
		"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_ETAG_TIMEOUT": "", "HF_HUB_DOWNLOAD_TIMEOUT": "",
	} {
		t.Setenv(k, v)
	}
	return cache
}

// fastOpts are options for tests: quick retries.
func fastOpts() HubOptions { return HubOptions{RetryWait: time.Millisecond} }

// checkSnapshot checks huggingface_hub's layout for files of a repo at
// commit: relative symlinks snapshots/<commit>/<f> -> ../../blobs/<etag>
// whose content is want[f], and nothing else in blobs/.
func checkSnapshot(t *testing.T, cache, repo, commit string, want map[string][]byte, files []string) {
	t.Helper()
	storage := filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
	var etags []string
	for _, f := range files {
		p := filepath.Join(storage, "snapshots", commit, filepath.FromSlash(f))
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if st.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s is not a symlink", f)
			continue
		}
		etag := etagOf(f, want[f])
		etags = append(etags, etag)
		target, _ := os.Readlink(p)
		wantTarget := strings.Repeat("../", 2+strings.Count(f, "/")) + "blobs/" + etag
		if target != wantTarget {
			t.Errorf("%s -> %s, want %s", f, target, wantTarget)
		}
		if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, want[f]) {
			t.Errorf("%s: content differs (%v)", f, err)
		}
	}
	ents, err := os.ReadDir(filepath.Join(storage, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	slices.Sort(etags)
	etags = slices.Compact(etags)
	if !slices.Equal(names, etags) {
		t.Errorf("blobs/ holds %v, want %v", names, etags)
	}
}

func TestHubFreshDownload(t *testing.T) {
	h := newFakeHub(t)
	cache := hubEnv(t, h.hub.URL)
	files := tinyPipeline(t, 10)
	c := fakeCommit("c1")
	h.repos["org/pipe"] = &fakeRepo{refs: map[string]string{"main": c}, commits: map[string]map[string][]byte{c: files}}

	s, err := Open("org/pipe")
	if err != nil {
		t.Fatal(err)
	}
	if s.Path != "org/pipe" || s.Format != FormatDiffusersPipeline || string(s.SchedulerConfig) != string(files["scheduler/scheduler_config.json"]) {
		t.Errorf("Open: path %q format %v scheduler %s", s.Path, s.Format, s.SchedulerConfig)
	}
	if !reflect.DeepEqual(s.Tensors["conv_in.weight"].Data, tinyModel().Tensors["conv_in.weight"].Data) {
		t.Errorf("tensors differ")
	}
	checkSnapshot(t, cache, "org/pipe", c, files, pipelineFiles)
	storage := filepath.Join(cache, "models--org--pipe")
	if b, err := os.ReadFile(filepath.Join(storage, "refs", "main")); err != nil || string(b) != c {
		t.Errorf("refs/main = %q, %v; want %s", b, err, c)
	}
	if _, err := os.Lstat(filepath.Join(storage, "snapshots", c, "README.md")); err == nil {
		t.Errorf("README.md was downloaded")
	}
	if _, err := os.Stat(filepath.Join(cache, ".locks", "models--org--pipe")); err != nil {
		t.Errorf("no lock folder: %v", err)
	}
	// The first request resolves main; all later ones are at the commit;
	// LFS content comes from the CDN; nothing carries a token.
	reqs := h.requests()
	if len(reqs) == 0 || reqs[0].path != "/org/pipe/resolve/main/model_index.json" || reqs[0].method != http.MethodHead {
		t.Fatalf("first request %+v", reqs)
	}
	for _, r := range reqs[1:] {
		if r.server == "hub" && !strings.HasPrefix(r.path, "/org/pipe/resolve/"+c+"/") {
			t.Errorf("request not at the commit: %+v", r)
		}
		if r.auth != "" || r.rangeHdr != "" {
			t.Errorf("unexpected header: %+v", r)
		}
	}
	if !slices.ContainsFunc(reqs, func(r fakeReq) bool { return r.server == "cdn" && r.method == http.MethodGet }) {
		t.Errorf("the weights did not come from the CDN: %+v", reqs)
	}
	// ResolveHub names the same snapshot, now without a request.
	dir, err := ResolveHub(context.Background(), "org/pipe", HubOptions{})
	if err != nil || dir != filepath.Join(storage, "snapshots", c) {
		t.Errorf("ResolveHub = %q, %v", dir, err)
	}
	if reqs := h.requests(); len(reqs) != 0 {
		t.Errorf("cached model still asked the Hub: %+v", reqs)
	}
}

func TestHubSecondOpenOffline(t *testing.T) {
	setup := func(t *testing.T) (*fakeHub, string) {
		h := newFakeHub(t)
		hubEnv(t, h.hub.URL)
		c := fakeCommit("c1")
		h.repos["org/pipe"] = &fakeRepo{refs: map[string]string{"main": c}, commits: map[string]map[string][]byte{c: tinyPipeline(t, 10)}}
		if _, err := Open("org/pipe"); err != nil {
			t.Fatal(err)
		}
		h.requests()
		return h, c
	}
	t.Run("server stopped", func(t *testing.T) {
		h, _ := setup(t)
		h.hub.Close()
		h.cdn.Close()
		if s, err := Open("org/pipe"); err != nil || s.Format != FormatDiffusersPipeline {
			t.Fatalf("Open with the Hub down: %v", err)
		}
	})
	t.Run("HF_HUB_OFFLINE", func(t *testing.T) {
		h, _ := setup(t)
		t.Setenv("HF_HUB_OFFLINE", "1")
		if _, err := Open("org/pipe"); err != nil {
			t.Fatal(err)
		}
		if _, err := Open("org/other"); !errors.Is(err, ErrHubNotCached) || !strings.Contains(err.Error(), "HF_HUB_OFFLINE") {
			t.Errorf("uncached offline: %v", err)
		}
		if reqs := h.requests(); len(reqs) != 0 {
			t.Errorf("offline made requests: %+v", reqs)
		}
	})
	t.Run("refresh falls back to the cache", func(t *testing.T) {
		h, c := setup(t)
		h.hub.Close()
		opts := fastOpts()
		opts.Refresh = true
		dir, err := ResolveHub(context.Background(), "org/pipe", opts)
		if err != nil || filepath.Base(dir) != c {
			t.Fatalf("ResolveHub = %q, %v", dir, err)
		}
	})
	t.Run("refresh follows a moved branch", func(t *testing.T) {
		h, c1 := setup(t)
		c2 := fakeCommit("c2")
		h.repos["org/pipe"].commits[c2] = tinyPipeline(t, 20)
		h.repos["org/pipe"].refs["main"] = c2
		dir, err := ResolveHub(context.Background(), "org/pipe", HubOptions{})
		if err != nil || filepath.Base(dir) != c1 {
			t.Fatalf("without Refresh: %q, %v; want the cached %s", dir, err, c1)
		}
		dir, err = ResolveHub(context.Background(), "org/pipe", HubOptions{Refresh: true})
		if err != nil || filepath.Base(dir) != c2 {
			t.Fatalf("with Refresh: %q, %v; want %s", dir, err, c2)
		}
		// Unchanged files share their blobs: only the scheduler config is new.
		reqs := h.requests()
		if n := len(slices.DeleteFunc(reqs, func(r fakeReq) bool { return r.method != http.MethodGet })); n != 1 {
			t.Errorf("%d GETs after the move, want 1 (the new scheduler config)", n)
		}
	})
}

// populate writes files into the cache by hand, in huggingface_hub's
// layout: blobs named by etag, relative symlinks in snapshots/<commit>,
// refs/main.
func populate(t *testing.T, cache, repo, commit string, files map[string][]byte) {
	t.Helper()
	storage := filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
	for name, b := range files {
		etag := etagOf(name, b)
		blob := filepath.Join(storage, "blobs", etag)
		link := filepath.Join(storage, "snapshots", commit, filepath.FromSlash(name))
		must(t, os.MkdirAll(filepath.Dir(blob), 0o755))
		must(t, os.MkdirAll(filepath.Dir(link), 0o755))
		must(t, os.WriteFile(blob, b, 0o644))
		must(t, os.Symlink(strings.Repeat("../", 2+strings.Count(name, "/"))+"blobs/"+etag, link))
	}
	must(t, os.MkdirAll(filepath.Join(storage, "refs"), 0o755))
	must(t, os.WriteFile(filepath.Join(storage, "refs", "main"), []byte(commit), 0o644))
}

// TestHubPrepopulatedCache builds by hand the caches huggingface_hub
// leaves after diffusers' DDPMPipeline.from_pretrained and
// UNet2DModel.from_pretrained, and loads them without any request.
func TestHubPrepopulatedCache(t *testing.T) {
	h := newFakeHub(t)
	cache := hubEnv(t, h.hub.URL)
	files := tinyPipeline(t, 7)
	c := fakeCommit("diffusers")
	populate(t, cache, "google/ddpm-tiny-32", c, files)
	for _, id := range []string{"google/ddpm-tiny-32", "google/ddpm-tiny-32@" + c} {
		s, err := Open(id)
		if err != nil {
			t.Fatal(err)
		}
		if s.Format != FormatDiffusersPipeline || string(s.SchedulerConfig) != string(files["scheduler/scheduler_config.json"]) || s.NumParams() != 40 {
			t.Errorf("%s: format %v, scheduler %s, %d params", id, s.Format, s.SchedulerConfig, s.NumParams())
		}
	}
	populate(t, cache, "google/unet-only", c, map[string][]byte{
		"config.json":                         []byte(unetJSON),
		"diffusion_pytorch_model.safetensors": tinySafetensors(t, 1),
	})
	if s, err := Open("google/unet-only"); err != nil || s.Format != FormatDiffusers {
		t.Fatalf("model repo: %v", err)
	}
	if reqs := h.requests(); len(reqs) != 0 {
		t.Errorf("a complete cache made requests: %+v", reqs)
	}
}

func TestHubRevisions(t *testing.T) {
	h := newFakeHub(t)
	cache := hubEnv(t, h.hub.URL)
	c1, c2, c3 := fakeCommit("v1"), fakeCommit("main"), fakeCommit("pr")
	h.repos["org/pipe"] = &fakeRepo{
		refs:    map[string]string{"main": c2, "v1": c1, "refs/pr/1": c3},
		commits: map[string]map[string][]byte{c1: tinyPipeline(t, 100), c2: tinyPipeline(t, 200), c3: tinyPipeline(t, 300)},
	}
	storage := filepath.Join(cache, "models--org--pipe")
	for _, tc := range []struct {
		id, commit, ref string
		steps           int
	}{
		{"org/pipe@v1", c1, "v1", 100},
		{"org/pipe@" + c2, c2, "", 200},
		{"org/pipe@refs/pr/1", c3, "refs/pr/1", 300},
		{"org/pipe", c2, "main", 200},
	} {
		s, err := Open(tc.id)
		if err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		if want := fmt.Sprintf(`"num_train_timesteps": %d`, tc.steps); !strings.Contains(string(s.SchedulerConfig), want) {
			t.Errorf("%s: scheduler %s, want %s", tc.id, s.SchedulerConfig, want)
		}
		if tc.ref != "" {
			if b, err := os.ReadFile(filepath.Join(storage, "refs", filepath.FromSlash(tc.ref))); err != nil || string(b) != tc.commit {
				t.Errorf("%s: refs/%s = %q, %v", tc.id, tc.ref, b, err)
			}
		}
		if _, err := os.Stat(filepath.Join(storage, "snapshots", tc.commit, "model_index.json")); err != nil {
			t.Errorf("%s: %v", tc.id, err)
		}
	}
	if _, err := os.Stat(filepath.Join(storage, "refs", c2)); err == nil {
		t.Errorf("a commit hash got a ref")
	}
	// A renamed repository redirects relatively; it is cached under the
	// name asked for, as huggingface_hub does.
	if s, err := Open("org/renamed"); err != nil || !strings.Contains(string(s.SchedulerConfig), "200") {
		t.Fatalf("renamed: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(cache, "models--org--renamed", "refs", "main")); err != nil || string(b) != c2 {
		t.Errorf("renamed: refs/main = %q, %v", b, err)
	}
	// A commit hash that is cached is used directly, without a request,
	// and so is a cached tag.
	h.requests()
	for _, id := range []string{"org/pipe@" + c2, "org/pipe@" + c1, "org/pipe@v1"} {
		if _, err := ResolveHub(context.Background(), id, HubOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if reqs := h.requests(); len(reqs) != 0 {
		t.Errorf("cached revisions made requests: %+v", reqs)
	}
}

func TestHubResume(t *testing.T) {
	weightsFile := "diffusion_pytorch_model.safetensors"
	t.Run("next call", func(t *testing.T) {
		h := newFakeHub(t)
		cache := hubEnv(t, h.hub.URL)
		files := tinyPipeline(t, 10)
		c := fakeCommit("c")
		h.repos["org/pipe"] = &fakeRepo{refs: map[string]string{"main": c}, commits: map[string]map[string][]byte{c: files}}
		h.cutName, h.cutCount = weightsFile, 1
		opts := fastOpts()
		opts.MaxAttempts = 1
		if _, err := ResolveHub(context.Background(), "org/pipe", opts); err == nil {
			t.Fatal("a cut download succeeded")
		}
		w := files["unet/"+weightsFile]
		blob := filepath.Join(cache, "models--org--pipe", "blobs", sha256Hex(w))
		b, err := os.ReadFile(blob + ".incomplete")
		if err != nil || len(b) == 0 || len(b) >= len(w) || !bytes.Equal(b, w[:len(b)]) {
			t.Fatalf(".incomplete holds %d of %d bytes (%v)", len(b), len(w), err)
		}
		if _, err := os.Stat(blob); err == nil {
			t.Fatal("the blob exists after a cut download")
		}
		if _, err := os.Stat(filepath.Join(cache, "models--org--pipe", "refs", "main")); err == nil {
			t.Errorf("refs/main written for an incomplete snapshot")
		}
		h.requests()
		if _, err := ResolveHub(context.Background(), "org/pipe", opts); err != nil {
			t.Fatal(err)
		}
		checkResumed(t, h.requests(), len(b))
		checkSnapshot(t, cache, "org/pipe", c, files, pipelineFiles)
	})
	t.Run("same call", func(t *testing.T) {
		h := newFakeHub(t)
		cache := hubEnv(t, h.hub.URL)
		files := tinyPipeline(t, 10)
		c := fakeCommit("c")
		h.repos["org/pipe"] = &fakeRepo{refs: map[string]string{"main": c}, commits: map[string]map[string][]byte{c: files}}
		h.cutName, h.cutCount = weightsFile, 2 // cut twice: each try resumes from the last
		if _, err := ResolveHub(context.Background(), "org/pipe", fastOpts()); err != nil {
			t.Fatal(err)
		}
		var ranges []string
		for _, r := range h.requests() {
			if r.server == "cdn" {
				ranges = append(ranges, r.rangeHdr)
			}
		}
		n := len(files["unet/"+weightsFile])
		want := []string{"", fmt.Sprintf("bytes=%d-", n/2), fmt.Sprintf("bytes=%d-", n/2+(n-n/2)/2)}
		if !slices.Equal(ranges, want) {
			t.Errorf("CDN ranges %q, want %q", ranges, want)
		}
		checkSnapshot(t, cache, "org/pipe", c, files, pipelineFiles)
	})
}

// checkResumed wants exactly one GET of the weights, from byte off.
func checkResumed(t *testing.T, reqs []fakeReq, off int) {
	t.Helper()
	var gets []fakeReq
	for _, r := range reqs {
		if r.server == "cdn" {
			gets = append(gets, r)
		}
	}
	if len(gets) != 1 || gets[0].rangeHdr != fmt.Sprintf("bytes=%d-", off) {
		t.Errorf("resumed with %+v, want one GET with Range bytes=%d-", gets, off)
	}
}

func TestHubChecksumMismatch(t *testing.T) {
	for _, tc := range []struct{ name, file string }{
		{"lfs sha256", "unet/diffusion_pytorch_model.safetensors"},
		{"git blob sha1", "unet/config.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHub(t)
			cache := hubEnv(t, h.hub.URL)
			files := tinyPipeline(t, 10)
			c := fakeCommit("c")
			h.repos["org/pipe"] = &fakeRepo{refs: map[string]string{"main": c}, commits: map[string]map[string][]byte{c: files}}
			h.corrupt = filepath.Base(tc.file)
			_, err := ResolveHub(context.Background(), "org/pipe", fastOpts())
			if !errors.Is(err, ErrHubChecksum) || !strings.Contains(err.Error(), tc.file) {
				t.Fatalf("err = %v, want a checksum error naming %s", err, tc.file)
			}
			storage := filepath.Join(cache, "models--org--pipe")
			blob := filepath.Join(storage, "blobs", etagOf(tc.file, files[tc.file]))
			for _, p := range []string{blob, blob + ".incomplete", filepath.Join(storage, "snapshots", c, tc.file), filepath.Join(storage, "refs", "main")} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s exists after a checksum mismatch", p)
				}
			}
		})
	}
}

func TestHubToken(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  func(t *testing.T, home string)
	}{
		{"HF_TOKEN", func(t *testing.T, _ string) { t.Setenv("HF_TOKEN", "hf_secret") }},
		{"token file", func(t *testing.T, home string) {
			must(t, os.WriteFile(filepath.Join(home, "token"), []byte("hf_secret\n"), 0o600))
		}},
		{"HF_TOKEN_PATH", func(t *testing.T, home string) {
			p := filepath.Join(home, "elsewhere")
			must(t, os.WriteFile(p, []byte(" hf_secret "), 0o600))
			t.Setenv("HF_TOKEN_PATH", p)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHub(t)
			cache := hubEnv(t, h.hub.URL)
			tc.env(t, filepath.Dir(cache))
			c := fakeCommit("c")
			h.repos["org/gated"] = &fakeRepo{token: "hf_secret", refs: map[string]string{"main": c}, commits: map[string]map[string][]byte{c: tinyPipeline(t, 10)}}
			if _, err := Open("org/gated"); err != nil {
				t.Fatal(err)
			}
			for _, r := range h.requests() {
				if want := map[string]string{"hub": "Bearer hf_secret", "cdn": ""}[r.server]; r.auth != want {
					t.Errorf("%s %s %s: Authorization %q, want %q", r.server, r.method, r.path, r.auth, want)
				}
			}
		})
	}
}

func TestHubErrors(t *testing.T) {
	h := newFakeHub(t)
	hubEnv(t, h.hub.URL)
	c := fakeCommit("c")
	pipe := tinyPipeline(t, 10)
	binOnly := tinyPipeline(t, 10)
	delete(binOnly, "unet/diffusion_pytorch_model.safetensors")
	noWeights := tinyPipeline(t, 10)
	delete(noWeights, "unet/diffusion_pytorch_model.safetensors")
	delete(noWeights, "unet/diffusion_pytorch_model.bin")
	for name, files := range map[string]map[string][]byte{
		"org/gated": pipe, "org/bin-only": binOnly, "org/no-weights": noWeights,
		"org/readme-only": {"README.md": []byte("hi")},
	} {
		h.repos[name] = &fakeRepo{refs: map[string]string{"main": c}, commits: map[string]map[string][]byte{c: files}}
	}
	h.repos["org/gated"].token = "hf_right"
	for _, tc := range []struct {
		name, id, token string
		kind            error
		want            []string
	}{
		{"gated without token", "org/gated", "", ErrHubAccess, []string{"gated", "accept its license", h.hub.URL + "/org/gated", "HF_TOKEN", "HTTP 401"}},
		{"gated with a token without access", "org/gated", "hf_wrong", ErrHubAccess, []string{"gated", "accept its license", "HTTP 403"}},
		{"no such repo", "org/nothing", "", ErrHubNotFound, []string{"org/nothing", "not found", "private or gated", "HF_TOKEN"}},
		{"no such repo with a token", "org/nothing", "hf_right", ErrHubNotFound, []string{"org/nothing", "not found"}},
		{"no such revision", "org/gated@v9", "hf_right", ErrHubNotFound, []string{`revision "v9" not found`, "org/gated"}},
		{"not a diffusers repo", "org/readme-only", "", ErrHubNotFound, []string{"org/readme-only@main", "model_index.json", "config.json"}},
		{"no weights", "org/no-weights", "", ErrHubNotFound, []string{"unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors"}},
		{"pickle only", "org/bin-only", "", ErrHubUnsupported, []string{"unet/diffusion_pytorch_model.bin", "PyTorch pickle", "safetensors"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ResolveHub(context.Background(), tc.id, HubOptions{Token: tc.token, RetryWait: time.Millisecond})
			t.Log(err)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("err = %v, want %v", err, tc.kind)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}
	// The pickle was never downloaded.
	for _, r := range h.requests() {
		if strings.HasSuffix(r.path, ".bin") && r.method != http.MethodHead {
			t.Errorf("downloaded %s", r.path)
		}
	}
	// Open says what it took the name for.
	if _, err := Open("org/nothing"); !errors.Is(err, ErrHubNotFound) || !strings.Contains(err.Error(), "no local file or folder") {
		t.Errorf("Open: %v", err)
	}
}

func TestHubWeightVariants(t *testing.T) {
	h := newFakeHub(t)
	cache := hubEnv(t, h.hub.URL)
	c := fakeCommit("c")
	fp16 := tinyPipeline(t, 10)
	fp16["unet/diffusion_pytorch_model.fp16.safetensors"] = fp16["unet/diffusion_pytorch_model.safetensors"]
	delete(fp16, "unet/diffusion_pytorch_model.safetensors")
	model := map[string][]byte{
		"config.json":                         []byte(unetJSON),
		"diffusion_pytorch_model.safetensors": tinySafetensors(t, 2),
	}
	h.repos["org/fp16"] = &fakeRepo{refs: map[string]string{"main": c}, commits: map[string]map[string][]byte{c: fp16}}
	h.repos["org/model"] = &fakeRepo{refs: map[string]string{"main": c}, commits: map[string]map[string][]byte{c: model}}

	s, err := Open("org/fp16")
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, cache, "org/fp16", c, fp16, []string{"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors", "scheduler/scheduler_config.json"})
	if s.NumParams() != 40 {
		t.Errorf("fp16: %d params", s.NumParams())
	}
	s, err = Open("org/model")
	if err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, cache, "org/model", c, model, []string{"config.json", "diffusion_pytorch_model.safetensors"})
	if s.Format != FormatDiffusers || s.Tensors["conv_in.bias"].Data[1] != 2*tinyModel().Tensors["conv_in.bias"].Data[1] {
		t.Errorf("model repo: format %v", s.Format)
	}
	// Files the Hub said are absent are remembered as huggingface_hub does,
	// so the cached copies count as complete.
	for _, p := range []string{"models--org--model/.no_exist/" + c + "/model_index.json", "models--org--fp16/.no_exist/" + c + "/unet/diffusion_pytorch_model.safetensors"} {
		if _, err := os.Stat(filepath.Join(cache, p)); err != nil {
			t.Errorf("no marker: %v", err)
		}
	}
	h.requests()
	for _, id := range []string{"org/fp16", "org/model"} {
		if _, err := ResolveHub(context.Background(), id, HubOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if reqs := h.requests(); len(reqs) != 0 {
		t.Errorf("cached variants made requests: %+v", reqs)
	}
}

func TestHubLocalPathWins(t *testing.T) {
	h := newFakeHub(t)
	hubEnv(t, h.hub.URL)
	c := fakeCommit("c")
	h.repos["org/pipe"] = &fakeRepo{refs: map[string]string{"main": c}, commits: map[string]map[string][]byte{c: tinyPipeline(t, 10)}}
	t.Chdir(t.TempDir())
	// A local diffusers folder named like the repo.
	must(t, os.MkdirAll("org/pipe", 0o755))
	must(t, os.WriteFile("org/pipe/config.json", []byte(unetJSON), 0o644))
	must(t, os.WriteFile("org/pipe/diffusion_pytorch_model.safetensors", tinySafetensors(t, 3), 0o644))
	s, err := Open("org/pipe")
	if err != nil || s.Format != FormatDiffusers || s.Path != "org/pipe" {
		t.Fatalf("Open = %+v, %v; want the local folder", s, err)
	}
	// A local folder that is not a model fails as one, never as an id.
	must(t, os.MkdirAll("org/empty", 0o755))
	if _, err := Open("org/empty"); err == nil || errors.Is(err, ErrHubNotFound) || strings.Contains(err.Error(), "hub") {
		t.Errorf("Open(org/empty) = %v, want the local folder's error", err)
	}
	// A missing path under an existing folder is a mistyped local path.
	if _, err := Open("org/missing"); err == nil || strings.Contains(err.Error(), "hub") {
		t.Errorf("Open(org/missing) = %v, want a local not-found error", err)
	}
	if reqs := h.requests(); len(reqs) != 0 {
		t.Errorf("local paths asked the Hub: %+v", reqs)
	}
}

func TestParseHubID(t *testing.T) {
	for _, tc := range []struct{ id, repo, rev string }{
		{"google/ddpm-cifar10-32", "google/ddpm-cifar10-32", "main"},
		{"google/ddpm-cifar10-32@v1.0", "google/ddpm-cifar10-32", "v1.0"},
		{"Org_1/Name.with-dots_2@refs/pr/12", "Org_1/Name.with-dots_2", "refs/pr/12"},
		{"a/b@0123456789abcdef0123456789abcdef01234567", "a/b", "0123456789abcdef0123456789abcdef01234567"},
	} {
		repo, rev, err := ParseHubID(tc.id)
		if err != nil || repo != tc.repo || rev != tc.rev {
			t.Errorf("ParseHubID(%q) = %q, %q, %v", tc.id, repo, rev, err)
		}
	}
	for _, id := range []string{
		"", "name", "/name", "org/", "org/name/extra", "./org/name", "../x/y", "/abs/path",
		"org/name@", "org/-name", "org/name-", ".org/name", "org/na--me", "org/na..me", "org/name.git",
		"org/na me", "org/name@../../etc", "org/name@a//b", "org/name@/x", "org/name@x/", "org/name@.hidden",
		"org/name@x@y", "org/ñame", "org/" + strings.Repeat("a", 97), "org\\name", "C:/models", "model.safetensors",
	} {
		if _, _, err := ParseHubID(id); !errors.Is(err, ErrHubID) {
			t.Errorf("ParseHubID(%q) accepted (err %v)", id, err)
		}
	}
	// A malformed id that does not exist is a plain local error: no request.
	h := newFakeHub(t)
	hubEnv(t, h.hub.URL)
	if _, err := Open("org/na--me"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("Open(malformed) = %v", err)
	}
	if _, err := ResolveHub(context.Background(), "org/name.git", HubOptions{}); !errors.Is(err, ErrHubID) {
		t.Errorf("ResolveHub(malformed) = %v", err)
	}
	if reqs := h.requests(); len(reqs) != 0 {
		t.Errorf("malformed ids asked the Hub: %+v", reqs)
	}
}

func TestHubCacheDir(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, home + "/.cache/huggingface/hub"},
		{map[string]string{"XDG_CACHE_HOME": "/xdg"}, "/xdg/huggingface/hub"},
		{map[string]string{"XDG_CACHE_HOME": "/xdg", "HF_HOME": "/hf"}, "/hf/hub"},
		{map[string]string{"HF_HOME": "~/hf"}, home + "/hf/hub"},
		{map[string]string{"HF_HOME": "/hf", "HUGGINGFACE_HUB_CACHE": "/legacy"}, "/legacy"},
		{map[string]string{"HF_HOME": "/hf", "HUGGINGFACE_HUB_CACHE": "/legacy", "HF_HUB_CACHE": "/new"}, "/new"},
		{map[string]string{"HF_HUB_CACHE": "$DDPM_TEST_ROOT/c", "DDPM_TEST_ROOT": "/root2"}, "/root2/c"},
	} {
		for _, k := range []string{"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "DDPM_TEST_ROOT"} {
			t.Setenv(k, tc.env[k])
		}
		if got := HubCacheDir(); got != filepath.FromSlash(tc.want) {
			t.Errorf("%v: HubCacheDir() = %q, want %q", tc.env, got, tc.want)
		}
	}
}

func TestHubProgressAndCancel(t *testing.T) {
	h := newFakeHub(t)
	hubEnv(t, h.hub.URL)
	c := fakeCommit("c")
	files := tinyPipeline(t, 10)
	h.repos["org/pipe"] = &fakeRepo{refs: map[string]string{"main": c}, commits: map[string]map[string][]byte{c: files}}
	h.repos["org/other"] = h.repos["org/pipe"]

	last := map[string]HubProgress{}
	opts := fastOpts()
	opts.Progress = func(p HubProgress) {
		if prev, ok := last[p.File]; ok && p.Done < prev.Done {
			t.Errorf("progress went back: %+v after %+v", p, prev)
		}
		last[p.File] = p
	}
	if _, err := ResolveHub(context.Background(), "org/pipe", opts); err != nil {
		t.Fatal(err)
	}
	for _, f := range pipelineFiles {
		if p := last[f]; p.Repo != "org/pipe" || p.Done != int64(len(files[f])) || p.Total != p.Done {
			t.Errorf("%s: last progress %+v, want %d bytes", f, p, len(files[f]))
		}
	}
	var buf bytes.Buffer
	pr := hubProgressPrinter(&buf)
	pr(HubProgress{Repo: "o/n", File: "small", Done: 10, Total: 10})
	pr(HubProgress{Repo: "o/n", File: "big", Done: 0, Total: 4e6})
	pr(HubProgress{Repo: "o/n", File: "big", Done: 1e6, Total: 4e6}) // throttled
	pr(HubProgress{Repo: "o/n", File: "big", Done: 4e6, Total: 4e6})
	if want := "download o/n big: 0.0 / 4.0 MB (0%)\ndownload o/n big: 4.0 / 4.0 MB (100%)\n"; buf.String() != want {
		t.Errorf("printer wrote %q, want %q", buf.String(), want)
	}

	ctx, cancel := context.WithCancel(context.Background())
	opts.Progress = func(HubProgress) { cancel() }
	if _, err := ResolveHub(ctx, "org/other", opts); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

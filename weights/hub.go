package weights

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Hub ids: models on the Hugging Face Hub, resolved through the cache that
// huggingface_hub (and so diffusers and transformers) keeps on disk:
//
//	<cache>/models--<org>--<name>/
//	    refs/<revision>                  the commit hash the revision pointed to
//	    snapshots/<commit>/<path>        relative symlinks to ../../blobs/<etag>
//	    blobs/<etag>                     file contents, named by their etag
//	    blobs/<etag>.incomplete          a download in progress (resumable)
//	    .no_exist/<commit>/<path>        empty markers: the file is not in the repo
//	<cache>/.locks/models--<org>--<name>/<etag>.lock
//
// An etag is the sha256 of the content for Git LFS files and the git blob
// sha1 for the others.

const (
	// DefaultHubEndpoint is the Hub's address when neither
	// HubOptions.Endpoint nor $HF_ENDPOINT is set.
	DefaultHubEndpoint = "https://huggingface.co"
	// DefaultHubRevision is the revision of an id without "@revision".
	DefaultHubRevision = "main"

	hubPipelineIndex   = "model_index.json"
	hubDefaultAttempts = 5
	hubDefaultWait     = time.Second
	hubMaxWait         = 8 * time.Second
	hubDefaultTimeout  = 10 * time.Second // huggingface_hub's etag and download timeouts
	hubMaxRedirects    = 10
	hubBigFile         = 1 << 20 // the stderr progress of Open reports files from this size on
	hubUserAgent       = "ddpm (github.com/ddpm-go/ddpm)"
	cachedirTag        = "Signature: 8a477f597d28d172789f06886806bc55\n# This folder is the Hugging Face Hub cache; see https://bford.info/cachedir/\n"
)

// The files ddpm takes from a Hub repository, in one place. A diffusers
// pipeline (hubPipelineIndex present) contributes its unet/ folder and
// scheduler/scheduler_config.json; a model repository contributes its root.
// In either folder the weights are the first of hubWeightNames present;
// when none is but one of hubUnsupportedWeights is, resolving fails with
// ErrHubUnsupported instead of downloading it.
var (
	hubWeightNames        = []string{DiffusersWeights, diffusersWeightsFP16}
	hubUnsupportedWeights = []string{diffusersPickle}
)

// Errors wrapped by the errors of ResolveHub and OpenHub.
var (
	// ErrHubID marks a string that is not a Hub model id.
	ErrHubID = errors.New("not a Hugging Face Hub model id")
	// ErrHubNotFound marks a repository, revision or needed file the Hub
	// does not have (or does not show to the credentials given).
	ErrHubNotFound = errors.New("not found on the Hugging Face Hub")
	// ErrHubAccess marks a gated or private repository the request had no
	// access to.
	ErrHubAccess = errors.New("no access on the Hugging Face Hub")
	// ErrHubNotCached marks a model that is needed offline but is not (or
	// not completely) in the cache.
	ErrHubNotCached = errors.New("not in the Hugging Face cache")
	// ErrHubChecksum marks downloaded content that does not match its etag
	// or size; nothing of it is kept.
	ErrHubChecksum = errors.New("download checksum mismatch")
	// ErrHubUnsupported marks a repository whose weights exist only in a
	// format ddpm does not read yet (a PyTorch pickle).
	ErrHubUnsupported = errors.New("unsupported weights format")
)

// HubError is an error about one Hub model id: what was asked, what went
// wrong and, when the Hub answered, its HTTP status. It wraps Kind, one of
// the ErrHub* errors, or a transport error.
type HubError struct {
	Repo     string // "org/name"
	Revision string // as asked: a branch, tag or commit hash
	File     string // path inside the repository; "" for the repository as a whole
	Status   int    // HTTP status of the Hub's answer; 0 when there was none
	Kind     error
	Msg      string
}

func (e *HubError) Error() string {
	var b strings.Builder
	b.WriteString("hub " + e.Repo + "@" + e.Revision)
	if e.File != "" {
		b.WriteString(" " + e.File)
	}
	b.WriteString(": " + e.Msg)
	if e.Status != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.Status)
	}
	return b.String()
}

// Unwrap returns Kind.
func (e *HubError) Unwrap() error { return e.Kind }

// HubProgress reports how far the download of one file has come.
type HubProgress struct {
	Repo string // "org/name"
	File string // path inside the repository
	// Done and Total are bytes; Done starts above zero when a download
	// resumes and equals Total when the file is complete.
	Done, Total int64
}

// HubOptions configures ResolveHub and OpenHub. The zero value follows the
// environment as huggingface_hub does.
type HubOptions struct {
	// CacheDir is the cache root; "" means HubCacheDir().
	CacheDir string
	// Endpoint is the Hub's base URL; "" means $HF_ENDPOINT, else
	// DefaultHubEndpoint.
	Endpoint string
	// Token is sent as "Authorization: Bearer" to the endpoint (never to
	// the CDN it redirects large files to); "" means $HF_TOKEN, else
	// $HUGGING_FACE_HUB_TOKEN, else the token file ($HF_TOKEN_PATH, else
	// $HF_HOME/token), unless $HF_HUB_DISABLE_IMPLICIT_TOKEN is true.
	Token string
	// Offline resolves from the cache alone; $HF_HUB_OFFLINE (or
	// $TRANSFORMERS_OFFLINE) set to 1, ON, YES or TRUE does too.
	Offline bool
	// Refresh asks the Hub which commit a branch or tag points to now even
	// when the cache already holds a complete model for it. Without it a
	// complete cached model is used without any request.
	Refresh bool
	// Client makes the requests; nil means http.DefaultClient.
	Client *http.Client
	// Progress, if set, is called as downloads advance (from the calling
	// goroutine; after every chunk written, so it should be cheap).
	Progress func(HubProgress)
	// MaxAttempts bounds the tries of each request on transient failures
	// (network errors, HTTP 408, 429 and 5xx); a download that made
	// progress earns its attempts back. 0 means 5.
	MaxAttempts int
	// RetryWait is the first wait between tries, doubled after each up to
	// 8 s; 0 means 1 s.
	RetryWait time.Duration
}

// ParseHubID splits a Hugging Face Hub model id, "org/name" or
// "org/name@revision", into the repository and the revision
// (DefaultHubRevision when none is given). Names follow the Hub's rules:
// 1 to 96 letters, digits, '-', '_' or '.', neither starting nor ending
// with '-' or '.', no "--" or "..", and a name may not end in ".git". A
// revision is a branch, tag or commit hash (letters, digits, '-', '_',
// '.', '+' and '/' between non-empty parts, as in "refs/pr/1"). Errors
// wrap ErrHubID.
func ParseHubID(id string) (repo, revision string, err error) {
	repo, revision, hasRev := strings.Cut(id, "@")
	if !hasRev {
		revision = DefaultHubRevision
	}
	bad := func(format string, args ...any) (string, string, error) {
		return "", "", fmt.Errorf("%w: %q: %s", ErrHubID, id, fmt.Sprintf(format, args...))
	}
	org, name, ok := strings.Cut(repo, "/")
	if !ok || strings.Contains(name, "/") {
		return bad("want org/name or org/name@revision")
	}
	if msg := checkHubName(org); msg != "" {
		return bad("organization %s", msg)
	}
	if msg := checkHubName(name); msg != "" {
		return bad("name %s", msg)
	}
	if strings.HasSuffix(name, ".git") {
		return bad("name may not end in .git")
	}
	if msg := checkHubRevision(revision); msg != "" {
		return bad("revision %s", msg)
	}
	return repo, revision, nil
}

// IsHubID reports whether s is a well-formed Hub model id (see ParseHubID).
// It says nothing about whether s also names a local path.
func IsHubID(s string) bool {
	_, _, err := ParseHubID(s)
	return err == nil
}

// isHubCandidate reports whether Open should take path, which does not
// exist, as a Hub id: it must be one, and its first part must not be a
// local folder either (then "runs/mnist" is a mistyped local path).
func isHubCandidate(path string) bool {
	if !IsHubID(path) {
		return false
	}
	org, _, _ := strings.Cut(path, "/")
	_, err := os.Stat(org)
	return errors.Is(err, fs.ErrNotExist)
}

// checkHubName returns what is wrong with an organization or repository
// name, or "".
func checkHubName(s string) string {
	if len(s) == 0 || len(s) > 96 {
		return "must have 1 to 96 characters"
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isHubWordChar(c) && c != '-' && c != '.' {
			return fmt.Sprintf("has %q; allowed are letters, digits, '-', '_' and '.'", c)
		}
	}
	if !isHubWordChar(s[0]) || !isHubWordChar(s[len(s)-1]) {
		return "may not start or end with '-' or '.'"
	}
	if strings.Contains(s, "--") || strings.Contains(s, "..") {
		return `may not contain "--" or ".."`
	}
	return ""
}

func isHubWordChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// checkHubRevision returns what is wrong with a revision, or "". A
// revision becomes a path under refs/, so it must stay inside it.
func checkHubRevision(s string) string {
	if len(s) == 0 || len(s) > 255 {
		return "must have 1 to 255 characters"
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isHubWordChar(c) && !strings.ContainsRune("-./+", rune(c)) {
			return fmt.Sprintf("has %q; allowed are letters, digits, '-', '_', '.', '+' and '/'", c)
		}
	}
	for _, part := range strings.Split(s, "/") {
		if part == "" || part == "." || part == ".." || strings.HasPrefix(part, ".") || strings.HasSuffix(part, ".lock") {
			return "has an empty part, a part starting with '.' or ending in .lock"
		}
	}
	return ""
}

// isCommitHash reports whether s is a full git commit hash (40 lowercase
// hex digits), which huggingface_hub uses directly as a snapshot folder.
func isCommitHash(s string) bool { return isHex(s, 40) && strings.ToLower(s) == s }

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// HubCacheDir returns the cache root huggingface_hub uses, with the same
// precedence: $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE (its legacy
// name), else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
// ~/.cache/huggingface/hub. "~" and $VARS in the values are expanded. An
// empty variable counts as unset.
func HubCacheDir() string {
	if v := os.Getenv("HF_HUB_CACHE"); v != "" {
		return expandHubPath(v)
	}
	if v := os.Getenv("HUGGINGFACE_HUB_CACHE"); v != "" {
		return expandHubPath(v)
	}
	return filepath.Join(hfHome(), "hub")
}

// hfHome is huggingface_hub's HF_HOME: $HF_HOME, else
// $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface.
func hfHome() string {
	if v := os.Getenv("HF_HOME"); v != "" {
		return expandHubPath(v)
	}
	if v := os.Getenv("XDG_CACHE_HOME"); v != "" {
		return expandHubPath(filepath.Join(v, "huggingface"))
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "~"
	}
	return filepath.Join(home, ".cache", "huggingface")
}

// expandHubPath expands a leading "~" and $VAR or ${VAR} (leaving unset
// variables as written), as Python's expanduser and expandvars do.
func expandHubPath(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			p = home + p[1:]
		}
	}
	return os.Expand(p, func(k string) string {
		if v, ok := os.LookupEnv(k); ok {
			return v
		}
		return "${" + k + "}"
	})
}

// envTrue reads a boolean variable as huggingface_hub does.
func envTrue(key string) bool {
	switch strings.ToUpper(os.Getenv(key)) {
	case "1", "ON", "YES", "TRUE":
		return true
	}
	return false
}

// envSeconds reads a whole number of seconds, or def.
func envSeconds(key string, def time.Duration) time.Duration {
	if n, err := strconv.Atoi(os.Getenv(key)); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return def
}

// hubTokenFromEnv finds the token huggingface_hub would use.
func hubTokenFromEnv() string {
	clean := func(s string) string {
		return strings.TrimSpace(strings.NewReplacer("\r", "", "\n", "").Replace(s))
	}
	for _, k := range []string{"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"} {
		if t := clean(os.Getenv(k)); t != "" {
			return t
		}
	}
	path := filepath.Join(hfHome(), "token")
	if v := os.Getenv("HF_TOKEN_PATH"); v != "" {
		path = expandHubPath(v)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return clean(string(b))
}

// withDefaults fills the zero fields from the environment.
func (o HubOptions) withDefaults() (HubOptions, error) {
	if o.CacheDir == "" {
		o.CacheDir = HubCacheDir()
	}
	if o.Endpoint == "" {
		o.Endpoint = os.Getenv("HF_ENDPOINT")
	}
	if o.Endpoint == "" {
		o.Endpoint = DefaultHubEndpoint
	}
	o.Endpoint = strings.TrimRight(o.Endpoint, "/")
	if u, err := url.Parse(o.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return o, fmt.Errorf("hub endpoint %q (HubOptions.Endpoint or HF_ENDPOINT) is not an http(s) URL", o.Endpoint)
	}
	if o.Token == "" && !envTrue("HF_HUB_DISABLE_IMPLICIT_TOKEN") {
		o.Token = hubTokenFromEnv()
	}
	if !o.Offline {
		o.Offline = envTrue("HF_HUB_OFFLINE") || envTrue("TRANSFORMERS_OFFLINE")
	}
	if o.Client == nil {
		o.Client = http.DefaultClient
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = hubDefaultAttempts
	}
	if o.RetryWait <= 0 {
		o.RetryWait = hubDefaultWait
	}
	return o, nil
}

// hubRepoFolder is the cache folder name of a model repository:
// "models--org--name".
func hubRepoFolder(repo string) string {
	return "models--" + strings.ReplaceAll(repo, "/", "--")
}

// OpenHub resolves a Hub model id with ResolveHub and loads the snapshot
// folder as LoadDiffusers does; the Source's Path is the id.
func OpenHub(ctx context.Context, id string, opts HubOptions) (*Source, error) {
	dir, err := ResolveHub(ctx, id, opts)
	if err != nil {
		return nil, fmt.Errorf("open model %s: %w", id, err)
	}
	s, err := LoadDiffusers(dir)
	if err != nil {
		return nil, fmt.Errorf("open model %s: %w", id, err)
	}
	s.Path = id
	return s, nil
}

// openHub is Open's path for a name that is not on disk but is a Hub id:
// no cancellation, and progress of large files on stderr unless
// $HF_HUB_DISABLE_PROGRESS_BARS is true, as huggingface_hub shows it.
func openHub(id string) (*Source, error) {
	var opts HubOptions
	if !envTrue("HF_HUB_DISABLE_PROGRESS_BARS") {
		opts.Progress = hubProgressPrinter(os.Stderr)
	}
	s, err := OpenHub(context.Background(), id, opts)
	if err != nil {
		return nil, fmt.Errorf("%w (%s is no local file or folder, so it was taken as a Hugging Face Hub id)", err, id)
	}
	return s, nil
}

// hubProgressPrinter returns a Progress callback that writes a line to w
// when a file of at least 1 MiB starts, about every second while it
// downloads, and when it is complete.
func hubProgressPrinter(w io.Writer) func(HubProgress) {
	var last time.Time
	var lastFile string
	return func(p HubProgress) {
		if p.Total < hubBigFile {
			return
		}
		now := time.Now()
		if p.File == lastFile && p.Done < p.Total && now.Sub(last) < time.Second {
			return
		}
		last, lastFile = now, p.File
		fmt.Fprintf(w, "download %s %s: %.1f / %.1f MB (%d%%)\n", p.Repo, p.File,
			float64(p.Done)/1e6, float64(p.Total)/1e6, p.Done*100/p.Total)
	}
}

// ResolveHub returns the local snapshot folder of a Hub model id
// ("org/name" or "org/name@revision", see ParseHubID) in the Hugging Face
// cache, downloading what is missing. The folder is a diffusers pipeline
// (model_index.json, unet/config.json, the UNet weights,
// scheduler/scheduler_config.json) or model folder (config.json, the
// weights) that LoadDiffusers opens; the weights are
// diffusion_pytorch_model.safetensors, or its .fp16 variant when that is
// all there is.
//
// A complete cached copy of the revision (refs/<revision>, or the commit
// hash itself) is used without any request unless opts.Refresh is set;
// offline, whatever the cache holds is used. Otherwise the revision is
// resolved to a commit by the first request and every file is fetched at
// that commit: a HEAD request on {endpoint}/{repo}/resolve/{revision}/{path}
// that follows only relative redirects gives the commit (X-Repo-Commit),
// the etag (X-Linked-Etag or ETag), the size (X-Linked-Size or
// Content-Length) and where to download (Location for files on the CDN).
// A download goes to blobs/<etag>.incomplete, resumes from its length with
// a Range request, is checked against the etag (sha256 of the content, or
// the git blob sha1 of "blob <len>\x00" + content), and only then is renamed
// to blobs/<etag>; the snapshot's relative symlink and refs/<revision> come
// after. A Hub that cannot be reached falls back to a usable cached copy.
func ResolveHub(ctx context.Context, id string, opts HubOptions) (string, error) {
	repo, rev, err := ParseHubID(id)
	if err != nil {
		return "", err
	}
	opts, err = opts.withDefaults()
	if err != nil {
		return "", err
	}
	r := &hubResolver{ctx: ctx, opts: opts, repo: repo, revision: rev,
		storage:      filepath.Join(opts.CacheDir, hubRepoFolder(repo)),
		headAttempts: opts.MaxAttempts}
	if opts.Offline {
		return r.fromCache(false)
	}
	if !opts.Refresh || isCommitHash(rev) {
		if dir, err := r.fromCache(true); err == nil {
			return dir, nil
		}
	}
	// What the cache holds is the fallback when the Hub cannot be reached;
	// with one at hand, do not keep retrying the first request.
	cached, cacheErr := r.fromCache(false)
	if cacheErr == nil {
		r.headAttempts = 1
	}
	dir, err := r.fromHub()
	if err != nil && cacheErr == nil && hubCanFallBack(ctx, err) {
		return cached, nil
	}
	return dir, err
}

// hubResolver resolves one repository and revision.
type hubResolver struct {
	ctx          context.Context
	opts         HubOptions
	repo         string
	revision     string
	storage      string   // <cache>/models--org--name
	commit       string   // the commit the files come from, once known
	absent       []string // files the Hub said do not exist, for .no_exist
	headAttempts int
}

// errf returns a HubError about file ("" for the repository).
func (r *hubResolver) errf(kind error, file string, status int, format string, args ...any) *HubError {
	return &HubError{Repo: r.repo, Revision: r.revision, File: file, Status: status, Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// hubLook reports whether a file exists in the repository; with fetch it
// also brings it into the snapshot folder.
type hubLook func(name string, fetch bool) (bool, error)

// walk visits the files ddpm needs (see hubWeightNames) through look.
func (r *hubResolver) walk(look hubLook) error {
	pipeline, err := look(hubPipelineIndex, true)
	if err != nil {
		return err
	}
	if pipeline {
		unetConfig := pipelineUNetDir + "/" + DiffusersConfig
		ok, err := look(unetConfig, true)
		if err != nil {
			return err
		}
		if ok {
			if err := r.walkWeights(look, pipelineUNetDir+"/"); err != nil {
				return err
			}
			_, err := look(pipelineSchedulerDir+"/"+DiffusersScheduler, true)
			return err
		}
		// A pipeline index without unet/: the model may sit at the root.
	}
	ok, err := look(DiffusersConfig, true)
	if err != nil {
		return err
	}
	if !ok {
		return r.errf(ErrHubNotFound, "", 0, "neither %s with %s/%s (a diffusers pipeline) nor %s (a diffusers model) is in the repository at this revision",
			hubPipelineIndex, pipelineUNetDir, DiffusersConfig, DiffusersConfig)
	}
	return r.walkWeights(look, "")
}

// walkWeights takes the first weights file present in folder dir ("" or
// "unet/").
func (r *hubResolver) walkWeights(look hubLook, dir string) error {
	var tried []string
	for _, n := range hubWeightNames {
		ok, err := look(dir+n, true)
		if err != nil || ok {
			return err
		}
		tried = append(tried, dir+n)
	}
	for _, n := range hubUnsupportedWeights {
		ok, err := look(dir+n, false)
		if err != nil {
			return err
		}
		if ok {
			return r.errf(ErrHubUnsupported, dir+n, 0, "the repository has only this PyTorch pickle as weights, and ddpm reads safetensors only (convert it to %s, or pick a revision that has one)", DiffusersWeights)
		}
	}
	return r.errf(ErrHubNotFound, "", 0, "no UNet weights: none of %s is in the repository", strings.Join(tried, ", "))
}

// fromCache resolves from the cache alone. strict requires every file a
// download would fetch to be there or known absent (.no_exist), except
// model_index.json, whose absence means a model repository; otherwise
// whatever the snapshot holds must only make a loadable model.
func (r *hubResolver) fromCache(strict bool) (string, error) {
	notCached := func(format string, args ...any) (string, error) {
		msg := fmt.Sprintf(format, args...)
		if r.opts.Offline {
			msg += " (offline: HF_HUB_OFFLINE is set, so nothing is downloaded)"
		}
		return "", r.errf(ErrHubNotCached, "", 0, "%s", msg)
	}
	commit := r.revision
	if !isCommitHash(commit) {
		ref := filepath.Join(r.storage, "refs", filepath.FromSlash(r.revision))
		b, err := os.ReadFile(ref)
		if err != nil {
			return notCached("not in the cache %s (no %s)", r.opts.CacheDir, ref)
		}
		commit = strings.TrimSpace(string(b))
		if !isCommitHash(commit) {
			return notCached("%s does not hold a commit hash", ref)
		}
	}
	snap := filepath.Join(r.storage, "snapshots", commit)
	errMiss := errors.New("not cached")
	look := func(name string, _ bool) (bool, error) {
		rel := filepath.FromSlash(name)
		if isFile(filepath.Join(snap, rel)) {
			return true, nil
		}
		if _, err := os.Stat(filepath.Join(r.storage, ".no_exist", commit, rel)); err == nil || !strict {
			return false, nil
		}
		if name == hubPipelineIndex {
			// Not asked for when diffusers loads a model repository (or a
			// pipeline's root model): take the root model if it is there.
			return false, nil
		}
		return false, errMiss
	}
	if err := r.walk(look); err != nil {
		if errors.Is(err, ErrHubUnsupported) {
			return "", err
		}
		if errors.Is(err, errMiss) {
			return notCached("snapshot %s is incomplete", snap)
		}
		var he *HubError
		if errors.As(err, &he) {
			return notCached("snapshot %s is incomplete: %s", snap, he.Msg)
		}
		return "", err
	}
	return snap, nil
}

// fromHub resolves through the Hub, downloading into the cache.
func (r *hubResolver) fromHub() (string, error) {
	if err := r.walk(r.lookHub); err != nil {
		return "", err
	}
	if r.commit == "" { // cannot happen: some HEAD succeeded
		return "", r.errf(ErrHubNotFound, "", 0, "the Hub named no commit (X-Repo-Commit)")
	}
	for _, name := range r.absent {
		p := filepath.Join(r.storage, ".no_exist", r.commit, filepath.FromSlash(name))
		if os.MkdirAll(filepath.Dir(p), 0o755) == nil {
			if f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
				f.Close()
			}
		}
	}
	if err := r.writeRef(); err != nil {
		return "", err
	}
	return filepath.Join(r.storage, "snapshots", r.commit), nil
}

// writeRef records refs/<revision> = commit, atomically, unless the
// revision is the commit or the ref already says so.
func (r *hubResolver) writeRef() error {
	if r.revision == r.commit {
		return nil
	}
	ref := filepath.Join(r.storage, "refs", filepath.FromSlash(r.revision))
	if b, err := os.ReadFile(ref); err == nil && string(b) == r.commit {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(ref), 0o755); err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(ref), "."+filepath.Base(ref)+".tmp*")
	if err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	_, werr := tmp.WriteString(r.commit)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("hub cache: write %s: %w", ref, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("hub cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), ref); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("hub cache: %w", err)
	}
	return nil
}

// hubMeta is what a HEAD request on a file's resolve URL tells.
type hubMeta struct {
	commit   string
	etag     string
	size     int64
	location string // where to GET the content
}

// lookHub is the hubLook of the network: HEAD, then download if asked.
func (r *hubResolver) lookHub(name string, fetch bool) (bool, error) {
	m, err := r.head(name)
	if errors.Is(err, errHubEntryNotFound) {
		r.absent = append(r.absent, name)
		return false, nil
	}
	if err != nil || !fetch {
		return err == nil, err
	}
	return true, r.fetch(name, m)
}

// errHubEntryNotFound is head's answer for a file the repository lacks.
var errHubEntryNotFound = errors.New("entry not found")

// resolveURL is {endpoint}/{repo}/resolve/{revision}/{path}, at the
// commit once it is known.
func (r *hubResolver) resolveURL(name string) string {
	rev := r.revision
	if r.commit != "" {
		rev = r.commit
	}
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return r.opts.Endpoint + "/" + r.repo + "/resolve/" + url.PathEscape(rev) + "/" + strings.Join(parts, "/")
}

// head reads a file's metadata the way huggingface_hub's
// get_hf_file_metadata does: HEAD, following relative redirects (a renamed
// repository) but not absolute ones (the CDN).
func (r *hubResolver) head(name string) (*hubMeta, error) {
	u := r.resolveURL(name)
	client := *r.opts.Client
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	var resp *http.Response
	for redirects := 0; ; redirects++ {
		err := r.retry(r.headAttempts, func() error {
			ctx, cancel := context.WithTimeout(r.ctx, envSeconds("HF_HUB_ETAG_TIMEOUT", hubDefaultTimeout))
			defer cancel()
			req, err := r.newRequest(ctx, http.MethodHead, u)
			if err != nil {
				return err
			}
			res, err := client.Do(req)
			if err != nil {
				return r.transportErr(name, err)
			}
			res.Body.Close()
			if res.StatusCode >= 400 {
				return r.statusErr(res, name)
			}
			resp = res
			return nil
		})
		if err != nil {
			return nil, err
		}
		if resp.StatusCode < 300 || resp.StatusCode > 399 {
			break
		}
		raw, err := url.Parse(resp.Header.Get("Location"))
		if err != nil || resp.Header.Get("Location") == "" {
			return nil, r.errf(ErrHubNotFound, name, resp.StatusCode, "redirect without a usable Location")
		}
		if raw.Host != "" {
			break // absolute: the CDN; the metadata is in this answer
		}
		if redirects >= hubMaxRedirects {
			return nil, r.errf(ErrHubNotFound, name, resp.StatusCode, "more than %d redirects", hubMaxRedirects)
		}
		u = resp.Request.URL.ResolveReference(raw).String() // a renamed repository
	}
	h := resp.Header
	m := &hubMeta{commit: h.Get("X-Repo-Commit"), location: resp.Request.URL.String()}
	if loc := h.Get("Location"); loc != "" {
		l, err := resp.Request.URL.Parse(loc)
		if err != nil {
			return nil, r.errf(ErrHubNotFound, name, resp.StatusCode, "bad Location %q", loc)
		}
		m.location = l.String()
	}
	// Without a redirect the URL may name a branch: download at the commit.
	atRevision := h.Get("Location") == "" && m.location == r.resolveURL(name)
	etag := h.Get("X-Linked-Etag")
	if etag == "" {
		etag = h.Get("ETag")
	}
	m.etag = strings.Trim(strings.TrimPrefix(etag, "W/"), `"`)
	size := h.Get("X-Linked-Size")
	if size == "" && (resp.StatusCode < 300 || resp.StatusCode > 399) {
		size = h.Get("Content-Length")
	}
	var err error
	if m.size, err = strconv.ParseInt(size, 10, 64); err != nil || m.size < 0 {
		return nil, r.errf(ErrHubNotFound, name, resp.StatusCode, "the answer has no file size (X-Linked-Size or Content-Length); is %s the Hugging Face Hub?", r.opts.Endpoint)
	}
	if !isCommitHash(m.commit) {
		return nil, r.errf(ErrHubNotFound, name, resp.StatusCode, "the answer names no commit (X-Repo-Commit %q); is %s the Hugging Face Hub?", m.commit, r.opts.Endpoint)
	}
	if !safeEtag(m.etag) {
		return nil, r.errf(ErrHubNotFound, name, resp.StatusCode, "the answer has no usable ETag (%q)", etag)
	}
	if r.commit == "" {
		r.commit = m.commit
	} else if m.commit != r.commit {
		return nil, r.errf(ErrHubNotFound, name, resp.StatusCode, "the Hub answered commit %s while fetching commit %s", m.commit, r.commit)
	}
	if atRevision {
		m.location = r.resolveURL(name)
	}
	return m, nil
}

// safeEtag reports whether an etag can name a file in blobs/.
func safeEtag(s string) bool {
	if len(s) == 0 || len(s) > 128 || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isHubWordChar(c) && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// newRequest builds a request carrying the token when it goes to the
// endpoint's host.
func (r *hubResolver) newRequest(ctx context.Context, method, u string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("hub request %s: %w", u, err)
	}
	req.Header.Set("User-Agent", hubUserAgent)
	req.Header.Set("Accept-Encoding", "identity") // sizes and ranges are of the file itself
	if ep, err := url.Parse(r.opts.Endpoint); err == nil && r.opts.Token != "" && ep.Host == req.URL.Host {
		req.Header.Set("Authorization", "Bearer "+r.opts.Token)
	}
	return req, nil
}

// hubTransient marks a failure worth retrying.
type hubTransient struct{ error }

func (e hubTransient) Unwrap() error { return e.error }

// transportErr wraps a failed request, transient unless r's context ended.
func (r *hubResolver) transportErr(name string, err error) error {
	if r.ctx.Err() != nil {
		return r.ctx.Err()
	}
	return hubTransient{&HubError{Repo: r.repo, Revision: r.revision, File: name, Kind: err,
		Msg: fmt.Sprintf("cannot reach %s: %v", r.opts.Endpoint, err)}}
}

// statusErr turns an HTTP error answer into a HubError, reading the Hub's
// X-Error-Code as huggingface_hub does.
func (r *hubResolver) statusErr(res *http.Response, name string) error {
	code, msg, st := res.Header.Get("X-Error-Code"), res.Header.Get("X-Error-Message"), res.StatusCode
	page := r.opts.Endpoint + "/" + r.repo
	switch {
	case code == "EntryNotFound" || (st == http.StatusNotFound && code == ""):
		if c := res.Header.Get("X-Repo-Commit"); r.commit == "" && isCommitHash(c) {
			r.commit = c
		}
		return errHubEntryNotFound
	case code == "RevisionNotFound":
		return r.errf(ErrHubNotFound, "", st, "revision %q not found in %s", r.revision, page)
	case code == "GatedRepo":
		if r.opts.Token == "" {
			return r.errf(ErrHubAccess, "", st, "%s is a gated model: log in at %s, accept its license there, then set HF_TOKEN to an access token of that account (%s/settings/tokens)", r.repo, page, r.opts.Endpoint)
		}
		return r.errf(ErrHubAccess, "", st, "%s is a gated model and the token (HF_TOKEN) has no access yet: accept its license at %s with the account the token belongs to", r.repo, page)
	case st == http.StatusUnauthorized && msg == "Invalid credentials in Authorization header":
		return r.errf(ErrHubAccess, "", st, "the Hub rejected the token (HF_TOKEN or the token file): invalid credentials")
	case code == "RepoNotFound" || st == http.StatusUnauthorized:
		if r.opts.Token == "" {
			return r.errf(ErrHubNotFound, "", st, "repository %s not found; if it is private or gated, set HF_TOKEN to an access token that can read it", page)
		}
		return r.errf(ErrHubNotFound, "", st, "repository %s not found, or the token (HF_TOKEN) cannot read it", page)
	case st == http.StatusForbidden:
		return r.errf(ErrHubAccess, name, st, "forbidden (%s): make sure the token (HF_TOKEN) has read access to %s", msg, r.repo)
	}
	err := r.errf(errors.New(res.Status), name, st, "%s answered %s %s", res.Request.URL.Host, res.Status, msg)
	if st == http.StatusRequestTimeout || st == http.StatusTooManyRequests || st >= 500 {
		return hubTransient{err}
	}
	return err
}

// retry runs f up to attempts times while it fails transiently, waiting
// RetryWait, doubled after each try, in between.
func (r *hubResolver) retry(attempts int, f func() error) error {
	wait := r.opts.RetryWait
	for i := 1; ; i++ {
		err := f()
		var t hubTransient
		if err == nil || !errors.As(err, &t) || i >= attempts {
			return unwrapTransient(err)
		}
		if err := r.sleep(wait); err != nil {
			return err
		}
		wait = min(2*wait, hubMaxWait)
	}
}

// unwrapTransient drops the retry mark from an error returned to callers.
func unwrapTransient(err error) error {
	if t, ok := err.(hubTransient); ok {
		return t.error
	}
	return err
}

// sleep waits d or until the context ends.
func (r *hubResolver) sleep(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.ctx.Done():
		return r.ctx.Err()
	case <-t.C:
		return nil
	}
}

// hubCanFallBack reports whether a failure to resolve through the Hub may
// be answered from the cache: not for a cancelled context, nor when the
// Hub said that the revision or a file does not exist or is unsupported.
func hubCanFallBack(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, ErrHubUnsupported) {
		return false
	}
	var he *HubError
	return !(errors.As(err, &he) && he.Kind == ErrHubNotFound && he.Status == http.StatusNotFound)
}

// fetch brings a file into the snapshot folder: its blob (downloaded
// unless present) and the relative symlink to it.
func (r *hubResolver) fetch(name string, m *hubMeta) error {
	pointer := filepath.Join(r.storage, "snapshots", m.commit, filepath.FromSlash(name))
	if isFile(pointer) {
		return nil
	}
	blob := filepath.Join(r.storage, "blobs", m.etag)
	if !isFile(blob) {
		if err := r.download(name, m, blob); err != nil {
			return err
		}
	}
	return linkBlob(blob, pointer)
}

// linkBlob makes pointer a relative symlink to blob (a copy where the
// filesystem has no symlinks).
func linkBlob(blob, pointer string) error {
	if err := os.MkdirAll(filepath.Dir(pointer), 0o755); err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	rel, err := filepath.Rel(filepath.Dir(pointer), blob)
	if err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	os.Remove(pointer) // a dangling link left by a deleted blob
	err = os.Symlink(rel, pointer)
	if err == nil || (errors.Is(err, fs.ErrExist) && isFile(pointer)) {
		return nil
	}
	src, err := os.Open(blob)
	if err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(pointer), "."+filepath.Base(pointer)+".tmp*")
	if err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	_, cerr := io.Copy(tmp, src)
	if err := errors.Join(cerr, tmp.Close()); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("hub cache: copy %s: %w", blob, err)
	}
	if err := os.Rename(tmp.Name(), pointer); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("hub cache: %w", err)
	}
	return nil
}

// download fetches a file's content into blob: under the etag's lock it
// appends to blob.incomplete from its current length, verifies the whole
// against the etag and renames it into place.
func (r *hubResolver) download(name string, m *hubMeta, blob string) (err error) {
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	if _, err := os.Stat(filepath.Join(r.opts.CacheDir, "CACHEDIR.TAG")); errors.Is(err, fs.ErrNotExist) {
		_ = os.WriteFile(filepath.Join(r.opts.CacheDir, "CACHEDIR.TAG"), []byte(cachedirTag), 0o644)
	}
	unlock, err := hubLock(r.ctx, filepath.Join(r.opts.CacheDir, ".locks", hubRepoFolder(r.repo), m.etag+".lock"))
	if err != nil {
		return fmt.Errorf("hub cache: lock: %w", err)
	}
	defer unlock()
	if isFile(blob) { // another process finished it meanwhile
		return nil
	}
	inc := blob + ".incomplete"
	f, err := os.OpenFile(inc, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	off, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	resumed := off > 0
	for {
		if off, err = r.fill(name, m, f, off); err != nil {
			return err
		}
		verr := hubVerify(f, m.etag, m.size)
		if verr == nil {
			break
		}
		if resumed { // the old part may be the bad one: start over once
			resumed = false
			if err := f.Truncate(0); err != nil {
				return fmt.Errorf("hub cache: %w", err)
			}
			off = 0
			continue
		}
		f.Close()
		f = nil
		os.Remove(inc)
		return r.errf(ErrHubChecksum, name, 0, "%v; the download was discarded", verr)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("hub cache: sync %s: %w", inc, err)
	}
	if err := f.Close(); err != nil {
		f = nil
		return fmt.Errorf("hub cache: close %s: %w", inc, err)
	}
	f = nil
	if err := os.Rename(inc, blob); err != nil {
		return fmt.Errorf("hub cache: %w", err)
	}
	if d, err := os.Open(filepath.Dir(blob)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// fill downloads into f from off until it holds m.size bytes, retrying
// transient failures (a try that made progress earns the attempts back).
func (r *hubResolver) fill(name string, m *hubMeta, f *os.File, off int64) (int64, error) {
	if off > m.size {
		if err := f.Truncate(0); err != nil {
			return 0, fmt.Errorf("hub cache: %w", err)
		}
		off = 0
	}
	r.progress(name, off, m.size)
	wait, failures := r.opts.RetryWait, 0
	for off < m.size {
		n, err := r.get(name, m, f, off)
		if n > off {
			wait, failures = r.opts.RetryWait, 0
		}
		off = n
		if err == nil {
			continue
		}
		var t hubTransient
		if failures++; !errors.As(err, &t) || failures >= r.opts.MaxAttempts {
			return off, unwrapTransient(err)
		}
		if err := r.sleep(wait); err != nil {
			return off, err
		}
		wait = min(2*wait, hubMaxWait)
	}
	return off, nil
}

// get makes one GET of m.location from byte off (a Range request when off
// > 0) and appends what arrives to f; it returns the new length.
func (r *hubResolver) get(name string, m *hubMeta, f *os.File, off int64) (int64, error) {
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	timeout := envSeconds("HF_HUB_DOWNLOAD_TIMEOUT", hubDefaultTimeout)
	idle := time.AfterFunc(timeout, cancel) // no byte for this long: give up this try
	defer idle.Stop()
	req, err := r.newRequest(ctx, http.MethodGet, m.location)
	if err != nil {
		return off, err
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	client := *r.opts.Client
	client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= hubMaxRedirects {
			return fmt.Errorf("more than %d redirects", hubMaxRedirects)
		}
		if req.URL.Host != via[0].URL.Host {
			req.Header.Del("Authorization") // the token is for the endpoint alone
		}
		return nil
	}
	res, err := client.Do(req)
	if err != nil {
		return off, r.transportErr(name, err)
	}
	defer res.Body.Close()
	restart := func(why string) (int64, error) {
		if err := f.Truncate(0); err != nil {
			return off, fmt.Errorf("hub cache: %w", err)
		}
		return 0, hubTransient{r.errf(ErrHubChecksum, name, res.StatusCode, "%s", why)}
	}
	switch res.StatusCode {
	case http.StatusPartialContent:
		if start, ok := contentRangeStart(res.Header.Get("Content-Range")); !ok || start != off {
			return restart(fmt.Sprintf("asked for bytes %d-, got Content-Range %q", off, res.Header.Get("Content-Range")))
		}
	case http.StatusOK:
		if off > 0 { // the server ignored the Range: take it all
			if err := f.Truncate(0); err != nil {
				return off, fmt.Errorf("hub cache: %w", err)
			}
			off = 0
			r.progress(name, 0, m.size)
		}
	case http.StatusRequestedRangeNotSatisfiable:
		return restart(fmt.Sprintf("range bytes=%d- not satisfiable", off))
	default:
		err := r.statusErr(res, name)
		if errors.Is(err, errHubEntryNotFound) {
			err = r.errf(ErrHubNotFound, name, res.StatusCode, "the file vanished from %s after its metadata was read", m.location)
		}
		return off, err
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return off, fmt.Errorf("hub cache: %w", err)
	}
	buf := make([]byte, 256<<10)
	for {
		n, rerr := res.Body.Read(buf)
		if int64(n) > m.size-off {
			f.Truncate(0)
			return 0, r.errf(ErrHubChecksum, name, res.StatusCode, "the server sent more than the %d bytes announced", m.size)
		}
		if n > 0 {
			if _, err := f.Write(buf[:n]); err != nil {
				return off, fmt.Errorf("hub cache: write: %w", err)
			}
			off += int64(n)
			idle.Reset(timeout)
			r.progress(name, off, m.size)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if r.ctx.Err() != nil {
				return off, r.ctx.Err()
			}
			return off, hubTransient{r.errf(rerr, name, res.StatusCode, "download cut at byte %d of %d: %v", off, m.size, rerr)}
		}
	}
	if off < m.size {
		return off, hubTransient{r.errf(io.ErrUnexpectedEOF, name, res.StatusCode, "download ended at byte %d of %d", off, m.size)}
	}
	return off, nil
}

// contentRangeStart parses the first byte of "bytes START-END/SIZE".
func contentRangeStart(s string) (int64, bool) {
	s, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, false
	}
	start, _, ok := strings.Cut(s, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(start, 10, 64)
	return n, err == nil
}

func (r *hubResolver) progress(name string, done, total int64) {
	if r.opts.Progress != nil {
		r.opts.Progress(HubProgress{Repo: r.repo, File: name, Done: done, Total: total})
	}
}

// hubVerify checks a downloaded file against its size and etag: a 64-hex
// etag (Git LFS) is the sha256 of the content, a 40-hex etag the git blob
// sha1, sha1("blob <size>\x00" + content). Other etags are checked by size
// only.
func hubVerify(f *os.File, etag string, size int64) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != size {
		return fmt.Errorf("%d bytes, the Hub announced %d", st.Size(), size)
	}
	var h hash.Hash
	switch {
	case isHex(etag, 64):
		h = sha256.New()
	case isHex(etag, 40):
		h = sha1.New()
		fmt.Fprintf(h, "blob %d\x00", size)
	default:
		return nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, etag) {
		return fmt.Errorf("content hashes to %s, the Hub's etag is %s", got, etag)
	}
	return nil
}

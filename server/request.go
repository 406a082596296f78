package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ddpm-go/ddpm/diffusion"
)

// ImageRequest is the body of POST /v1/images/generations, /v1/generate and
// /v1/jobs: the OpenAI Images API request plus this server's extensions.
// Absent fields take the model's defaults.
type ImageRequest struct {
	Model          string `json:"model,omitempty"`           // absent, "default" or the loaded model's name
	Prompt         string `json:"prompt,omitempty"`          // a text model's text (each image gets it); else may name a class: "7", "seven", a class name
	N              *int   `json:"n,omitempty"`               // images, 1..MaxN (default 1)
	Size           string `json:"size,omitempty"`            // "WxH"; must be the model's size (or "auto")
	ResponseFormat string `json:"response_format,omitempty"` // "b64_json" (default); "url" is not supported

	Steps         *int     `json:"steps,omitempty"`          // denoising steps, 1..min(MaxSteps, T)
	Sampler       string   `json:"sampler,omitempty"`        // a name of diffusion.Samplers: "ddpm", "ddim", "euler", ...
	Eta           *float64 `json:"eta,omitempty"`            // DDIM eta in [0, 1]
	Seed          *int64   `json:"seed,omitempty"`           // image i uses seed+i; random when absent
	ClassLabel    *int     `json:"class_label,omitempty"`    // class in [0, classes), or -1 for a random one per image; overrides the prompt
	GuidanceScale *float64 `json:"guidance_scale,omitempty"` // classifier-free guidance w in [0, MaxGuidance]
	// ClassifierScale is the classifier guidance scale s in [0,
	// MaxGuidance]: the server's noisy classifier steers each image
	// towards its class (ddpm serve --classifier).
	ClassifierScale *float64 `json:"classifier_scale,omitempty"`
	// InitImage and Mask inpaint: PNGs as base64 or data URLs
	// ("data:image/png;base64,..."), at most MaxInputSide pixels a side,
	// fitted to the model's size as "ddpm sample --init-image --mask"
	// fits them. Mask white keeps InitImage, black is generated; the mask
	// has InitImage's size or the model's. Both or neither.
	InitImage string `json:"init_image,omitempty"`
	Mask      string `json:"mask,omitempty"`

	// OpenAI fields accepted and ignored, so that client libraries that
	// send them work unchanged.
	Quality           json.RawMessage `json:"quality,omitempty"`
	Style             json.RawMessage `json:"style,omitempty"`
	User              json.RawMessage `json:"user,omitempty"`
	Background        json.RawMessage `json:"background,omitempty"`
	Moderation        json.RawMessage `json:"moderation,omitempty"`
	OutputFormat      json.RawMessage `json:"output_format,omitempty"`
	OutputCompression json.RawMessage `json:"output_compression,omitempty"`
}

// genRequest is a validated ImageRequest: what the scheduler needs.
type genRequest struct {
	settings    Settings
	seeds       []int64 // one per image
	classes     []int   // one per image; -1 for an unconditional model
	classSource string  // ClassFromLabel, ClassFromPrompt or ClassRandom; "" for an unconditional or text model
	prompt      string  // a text model's prompt, the text of every image; "" otherwise
	known       *Known  // init_image and mask of an inpainting request (settings.Inpaint is its Key); nil otherwise
}

// MaxPromptBytes is the longest prompt a text model (ModelInfo.Text)
// accepts, in bytes; a longer one is a 422.
const MaxPromptBytes = 1000

// limits bounds the requests a server accepts.
type limits struct {
	maxN        int
	maxSteps    int
	maxGuidance float64
	maxBody     int64
}

// fields maps each JSON key of ImageRequest, exactly as spelled in its
// struct tag, to the field to decode into.
func (r *ImageRequest) fields() map[string]any {
	return map[string]any{
		"model": &r.Model, "prompt": &r.Prompt, "n": &r.N, "size": &r.Size, "response_format": &r.ResponseFormat,
		"steps": &r.Steps, "sampler": &r.Sampler, "eta": &r.Eta, "seed": &r.Seed, "class_label": &r.ClassLabel,
		"guidance_scale": &r.GuidanceScale, "classifier_scale": &r.ClassifierScale,
		"init_image": &r.InitImage, "mask": &r.Mask,
		"quality": &r.Quality, "style": &r.Style, "user": &r.User, "background": &r.Background,
		"moderation": &r.Moderation, "output_format": &r.OutputFormat, "output_compression": &r.OutputCompression,
	}
}

// allowedFields lists the fields in the message about an unknown one.
const allowedFields = "model, prompt, n, size, response_format, steps, sampler, eta, seed, class_label, guidance_scale, classifier_scale, init_image, mask"

// decodeImageRequest parses one JSON object from r (at most maxBody bytes)
// into an ImageRequest. Keys must match exactly (encoding/json alone would
// match "STEPS" and "ſteps" to "steps"); unknown or repeated keys,
// anything but an object (null included), trailing data and wrong types are
// 400 errors naming the field; a body over the limit is a 413.
func decodeImageRequest(r io.Reader, maxBody int64) (ImageRequest, error) {
	var req ImageRequest
	data, err := io.ReadAll(io.LimitReader(r, maxBody+1))
	if err != nil {
		return req, badRequest("", "reading the request body: %s", truncate(err.Error()))
	}
	if int64(len(data)) > maxBody {
		return req, tooLarge(maxBody)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return req, badRequest("", "the request body is empty: send a JSON object, e.g. {\"n\": 1}")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return req, jsonError("", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return req, badRequest("", "the request body must be a JSON object, not %s", jsonKind(tok))
	}
	fields := req.fields()
	seen := make(map[string]bool, len(fields))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return req, jsonError("", err)
		}
		key, _ := tok.(string) // inside an object, Token yields keys as strings
		dst, ok := fields[key]
		if !ok {
			return req, badRequest(truncate(key), "unknown field %q (keys are case-sensitive); allowed: %s", truncate(key), allowedFields)
		}
		if seen[key] {
			return req, badRequest(key, "field %q appears more than once", key)
		}
		seen[key] = true
		if err := dec.Decode(dst); err != nil {
			return req, jsonError(key, err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return req, jsonError("", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return req, badRequest("", "the request body has data after the JSON object")
	}
	return req, nil
}

// jsonKind names the JSON value that starts with tok.
func jsonKind(tok json.Token) string {
	switch t := tok.(type) {
	case nil:
		return "null"
	case json.Delim:
		if t == '[' {
			return "an array"
		}
	case string:
		return "a string"
	case float64, json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%v", tok)
}

func tooLarge(maxBody int64) *APIError {
	return &APIError{Status: http.StatusRequestEntityTooLarge, Type: TypeInvalidRequest,
		Message: fmt.Sprintf("the request body is larger than %d bytes", maxBody)}
}

// jsonError turns an encoding/json error met while decoding field (or the
// object, when "") into a 400 naming the field.
func jsonError(field string, err error) *APIError {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		return badRequest(field, "field %q: a JSON %s is not %s", field, truncate(te.Value), jsonTypeName(te.Type.String()))
	case errors.As(err, &se):
		return badRequest(field, "the request body is not valid JSON: %s (at byte %d)", truncate(se.Error()), se.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return badRequest(field, "the request body is truncated JSON")
	}
	return badRequest(field, "the request body is not a valid request: %s", truncate(strings.TrimPrefix(err.Error(), "json: ")))
}

func jsonTypeName(goType string) string {
	switch goType {
	case "int", "*int", "int64", "*int64":
		return "an integer"
	case "float64", "*float64":
		return "a number"
	case "string":
		return "a string"
	}
	return "a " + goType
}

// samplerValues lists the sampler names of diffusion.Samplers, quoted.
var samplerValues = func() string {
	var q []string
	for _, s := range diffusion.Samplers() {
		q = append(q, strconv.Quote(s.String()))
	}
	return strings.Join(q, ", ")
}()

// parseSampler parses a sampler name of diffusion.Samplers ("ddpm",
// "ddim", "pndm", "dpm++2m", "dpm++3m", "dpm++2m-sde", "dpm++2s",
// "unipc", "deis", "euler", "euler-a", "heun", "dpm2", "lms"),
// case-insensitively.
func parseSampler(s string) (diffusion.Sampler, error) {
	sm, err := diffusion.ParseSampler(s)
	if err != nil {
		return 0, fmt.Errorf("sampler %q: allowed values are %s", truncate(s), samplerValues)
	}
	return sm, nil
}

// validate checks req against the model and limits and resolves defaults
// (sampler is the model's default sampler). newSeed supplies a seed when
// the request has none.
func validate(req ImageRequest, info ModelInfo, sampler diffusion.Sampler, lim limits, newSeed func() int64) (genRequest, error) {
	var g genRequest
	switch req.Model {
	case "", "default", info.Name:
	default:
		return g, modelNotFound(req.Model, info.Name)
	}
	switch req.ResponseFormat {
	case "", "b64_json":
	case "url":
		return g, invalid("response_format", "response_format \"url\" is not supported by this server; use \"b64_json\"")
	default:
		return g, invalid("response_format", "response_format %q: the only allowed value is \"b64_json\"", truncate(req.ResponseFormat))
	}
	want := fmt.Sprintf("%dx%d", info.ImageSize, info.ImageSize)
	if req.Size != "" && req.Size != "auto" && req.Size != want {
		return g, invalid("size", "size %q: this model makes %s images only (or use \"auto\")", truncate(req.Size), want)
	}
	n := 1
	if req.N != nil {
		n = *req.N
	}
	if n < 1 || n > lim.maxN {
		return g, invalid("n", "n = %d: allowed range is 1 to %d", n, lim.maxN)
	}
	maxSteps := min(lim.maxSteps, info.TrainSteps)
	s := Settings{Steps: min(info.DefaultSteps, maxSteps), Sampler: sampler, Guidance: info.DefaultGuidance}
	if req.Steps != nil {
		s.Steps = *req.Steps
		if s.Steps < 1 || s.Steps > maxSteps {
			return g, invalid("steps", "steps = %d: allowed range is 1 to %d", s.Steps, maxSteps)
		}
	}
	if req.Sampler != "" {
		sm, err := parseSampler(req.Sampler)
		if err != nil {
			return g, invalid("sampler", "%s", err)
		}
		s.Sampler = sm
	}
	if req.Eta != nil {
		s.Eta = *req.Eta
		if !(s.Eta >= 0 && s.Eta <= 1) {
			return g, invalid("eta", "eta = %g: allowed range is 0 to 1", s.Eta)
		}
		if s.Sampler != diffusion.SamplerDDIM && s.Eta != 0 {
			return g, invalid("eta", "eta applies to the \"ddim\" sampler only, and this request uses %q", s.Sampler)
		}
	}
	if info.Text {
		switch {
		case req.ClassLabel != nil:
			return g, invalid("class_label", "class_label: %q is a text-to-image model, conditioned on the prompt, not on classes", info.Name)
		case req.ClassifierScale != nil:
			return g, invalid("classifier_scale", "classifier_scale: %q is a text-to-image model: guide it with guidance_scale (classifier-free guidance against the empty prompt)", info.Name)
		case len(req.Prompt) > MaxPromptBytes:
			return g, invalid("prompt", "prompt is %d bytes: a text model takes at most %d", len(req.Prompt), MaxPromptBytes)
		}
		g.prompt = req.Prompt
	}
	if req.GuidanceScale != nil {
		w := *req.GuidanceScale
		if info.NumClasses == 0 && !info.Text && w != 0 {
			return g, invalid("guidance_scale", "guidance_scale needs a class-conditional or text model; %q is unconditional", info.Name)
		}
		if info.NoNullClass && w != 0 && w != 1 {
			return g, invalid("guidance_scale", "guidance_scale = %g: %q has no null class (no unconditional output), so it takes no classifier-free guidance: leave guidance_scale 0, or guide with classifier_scale on a server started with --classifier", w, info.Name)
		}
		if !(w >= 0 && w <= lim.maxGuidance) {
			return g, invalid("guidance_scale", "guidance_scale = %g: allowed range is 0 to %g", w, lim.maxGuidance)
		}
		if w == 1 {
			w = 0 // w = 1 is plain conditional sampling, as w = 0: one batch key for both
		}
		s.Guidance = w
	}
	if req.ClassifierScale != nil {
		cs := *req.ClassifierScale
		if info.Classifier == "" && cs != 0 {
			return g, invalid("classifier_scale", "classifier_scale needs a server started with a classifier (ddpm serve --classifier); this one has none")
		}
		if !(cs >= 0 && cs <= lim.maxGuidance) {
			return g, invalid("classifier_scale", "classifier_scale = %g: allowed range is 0 to %g", cs, lim.maxGuidance)
		}
		s.ClassifierScale = cs
	}
	known, err := parseKnown(req.InitImage, req.Mask, info)
	if err != nil {
		return g, err
	}
	if known != nil {
		g.known, s.Inpaint = known, known.Key
	}
	g.settings = s
	class := -1
	if req.ClassLabel != nil {
		c := *req.ClassLabel
		if info.NumClasses == 0 {
			return g, invalid("class_label", "class_label needs a class-conditional model; %q is unconditional", info.Name)
		}
		if c < -1 || c >= info.NumClasses {
			return g, invalid("class_label", "class_label = %d: allowed range is 0 to %d, or -1 for a random class", c, info.NumClasses-1)
		}
		class = c
		g.classSource = ClassFromLabel
	} else if info.NumClasses > 0 {
		class = classFromPrompt(req.Prompt, info)
		g.classSource = ClassFromPrompt
	}
	if info.NumClasses > 0 && class < 0 {
		g.classSource = ClassRandom
	}
	var seed int64
	if req.Seed != nil {
		seed = *req.Seed
	} else {
		seed = newSeed()
	}
	g.seeds = make([]int64, n)
	g.classes = make([]int, n)
	for i := range g.seeds {
		g.seeds[i] = seed + int64(i) // wraps around at the int64 limit, which is fine for a seed
		g.classes[i] = class
		if class < 0 && info.NumClasses > 0 {
			g.classes[i] = seedClass(g.seeds[i], info.NumClasses)
		}
	}
	return g, nil
}

// seedClass picks the class of an image whose request named none, from its
// seed (a SplitMix64 hash), so that the seed alone reproduces the image.
func seedClass(seed int64, classes int) int {
	z := uint64(seed) + 0x9E3779B97F4A7C15
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	z ^= z >> 31
	return int(z % uint64(classes))
}

// truncate shortens user strings echoed in error messages to 40 bytes
// (at a rune boundary) and marks the cut with "...". Only the user's value
// is ever cut, never the server's own text around it.
func truncate(s string) string {
	const max = 40
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// numberWords are the English names of 0..20, so that a prompt can say
// "seven" for class 7.
var numberWords = [...]string{"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
	"ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"}

// classFromPrompt finds the class a prompt names, or -1: a class name
// (case-insensitive, as a whole word or phrase; the longest match wins),
// else a number ("7") or number word ("seven") that is a valid class index.
func classFromPrompt(prompt string, info ModelInfo) int {
	p := normalise(prompt)
	if p == "" {
		return -1
	}
	padded := " " + p + " "
	best, bestLen := -1, 0
	for i, name := range info.ClassNames {
		n := normalise(name)
		if n != "" && len(n) > bestLen && strings.Contains(padded, " "+n+" ") {
			best, bestLen = i, len(n)
		}
	}
	if best >= 0 {
		return best
	}
	for _, w := range strings.Fields(p) {
		if k, err := strconv.Atoi(w); err == nil && k >= 0 && k < info.NumClasses {
			return k
		}
		for k, nw := range numberWords {
			if w == nw && k < info.NumClasses {
				return k
			}
		}
	}
	return -1
}

// normalise lower-cases s and turns every run of non-alphanumeric runes into
// one space.
func normalise(s string) string {
	var b strings.Builder
	space := true
	for _, r := range strings.ToLower(s) {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			b.WriteRune(r)
			space = false
		} else if !space {
			b.WriteByte(' ')
			space = true
		}
	}
	return strings.TrimSpace(b.String())
}

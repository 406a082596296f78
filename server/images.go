package server

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// ModelObject is one entry of GET /v1/models: the OpenAI model object plus
// a "ddpm" object describing the model.
type ModelObject struct {
	ID      string    `json:"id"`
	Object  string    `json:"object"` // "model"
	Created int64     `json:"created"`
	OwnedBy string    `json:"owned_by"`
	DDPM    ModelMeta `json:"ddpm"`
}

// ModelMeta is this server's extension of the model object.
type ModelMeta struct {
	ImageSize       int      `json:"image_size"`
	Channels        int      `json:"channels"`
	NumClasses      int      `json:"num_classes"`
	ClassNames      []string `json:"class_names,omitempty"`
	TrainSteps      int      `json:"train_steps"`
	MaxSteps        int      `json:"max_steps"`
	MaxN            int      `json:"max_n"`
	MaxBatch        int      `json:"max_batch"`
	MaxGuidance     float64  `json:"max_guidance"`
	DefaultSteps    int      `json:"default_steps"`
	DefaultSampler  string   `json:"default_sampler"`
	DefaultGuidance float64  `json:"default_guidance"`
	Device          string   `json:"device"`
	Classifier      string   `json:"classifier,omitempty"` // the noisy classifier of classifier_scale
	Text            bool     `json:"text"`                 // a text-to-image model: the prompt is its text
	Inpaint         bool     `json:"inpaint"`              // requests may inpaint: init_image and mask
	// NoNullClass: a class-conditional model without the null class of
	// classifier-free guidance (guidance_scale must be 0 or 1).
	NoNullClass bool `json:"no_null_class,omitempty"`
	// UpsampleSteps: the steps of an upsampling stage after the denoising
	// ones (ddpm serve --upsample), counted in a job's total_steps.
	UpsampleSteps int `json:"upsample_steps,omitempty"`
}

func (s *Server) modelObject() ModelObject {
	i := s.info
	return ModelObject{ID: i.Name, Object: "model", Created: s.start.Unix(), OwnedBy: "ddpm",
		DDPM: ModelMeta{ImageSize: i.ImageSize, Channels: i.Channels, NumClasses: i.NumClasses, ClassNames: i.ClassNames,
			TrainSteps: i.TrainSteps, MaxSteps: min(s.opts.MaxSteps, i.TrainSteps), MaxN: s.opts.MaxN, MaxBatch: s.opts.MaxBatch,
			MaxGuidance: s.opts.MaxGuidance, DefaultSteps: i.DefaultSteps, DefaultSampler: s.defaultSampler.String(),
			DefaultGuidance: i.DefaultGuidance, Device: i.Device, Classifier: i.Classifier, Text: i.Text, Inpaint: i.Inpaint, NoNullClass: i.NoNullClass,
			UpsampleSteps: i.UpsampleSteps}}
}

func (s *Server) models(c echo.Context) (any, error) {
	return map[string]any{"object": "list", "data": []ModelObject{s.modelObject()}}, nil
}

func (s *Server) model(c echo.Context) (any, error) {
	id := c.Param("id")
	if id != s.info.Name && id != "default" {
		return nil, modelNotFound(id, s.info.Name)
	}
	return s.modelObject(), nil
}

// modelNotFound is OpenAI's 404 for a model id the server does not have.
func modelNotFound(id, have string) *APIError {
	return &APIError{Status: http.StatusNotFound, Type: TypeInvalidRequest, Param: "model", Code: "model_not_found",
		Message: fmt.Sprintf("the model %q does not exist; this server has %q (or use \"default\")", truncate(id), have)}
}

// ImageResponse is the OpenAI Images API response.
type ImageResponse struct {
	Created int64       `json:"created"`
	Data    []ImageData `json:"data"`
}

// ImageData is one generated image: the OpenAI field b64_json (a PNG) plus
// the seed and class that made it, and where the class came from.
type ImageData struct {
	B64JSON    string `json:"b64_json"`
	Seed       int64  `json:"seed"`
	ClassLabel *int   `json:"class_label,omitempty"`
	// ClassSource says how a class-conditional model's class was chosen:
	// ClassFromLabel, ClassFromPrompt or ClassRandom. Absent for an
	// unconditional model.
	ClassSource string `json:"class_source,omitempty"`
}

// Values of ImageData.ClassSource.
const (
	ClassFromLabel  = "class_label" // the request's class_label
	ClassFromPrompt = "prompt"      // named by the prompt
	ClassRandom     = "random"      // drawn from the image's seed: class_label -1, or nothing named a class
)

// parse decodes and validates the request body.
func (s *Server) parse(c echo.Context) (genRequest, error) {
	req, err := decodeImageRequest(c.Request().Body, s.opts.MaxBodyBytes)
	if err != nil {
		return genRequest{}, err
	}
	if len(req.Prompt) > 4000 {
		return genRequest{}, invalid("prompt", "prompt is %d bytes: at most 4000 allowed", len(req.Prompt))
	}
	return validate(req, s.info, s.defaultSampler, s.lim, s.newSeed)
}

func (s *Server) newSeed() int64 {
	s.seedMu.Lock()
	defer s.seedMu.Unlock()
	return s.seeds.Int64N(1 << 53) // exact in JSON numbers and JavaScript
}

// refuseIfDraining refuses new work while shutting down.
func (s *Server) refuseIfDraining() error {
	if s.draining.Load() {
		s.m.rejected.WithLabelValues("draining").Inc()
		return &APIError{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, RetryAfter: 5,
			Message: "the server is shutting down and takes no new work; retry on another instance"}
	}
	return nil
}

// runSync queues g tied to the request's context (a client that goes away
// cancels its work) and waits for the images' PNGs.
func (s *Server) runSync(c echo.Context, g genRequest) ([][]byte, error) {
	if s.cl != nil {
		return s.cl.runSync(c, g)
	}
	if err := s.refuseIfDraining(); err != nil {
		return nil, err
	}
	j := s.sched.newJob(c.Request().Context(), "", g, s.opts.Timeout)
	if err := s.sched.submit(j); err != nil {
		return nil, err
	}
	select {
	case <-j.done:
	case <-c.Request().Context().Done():
		j.cancel(errClientGone)
		<-j.done
	}
	s.sched.mu.Lock()
	defer s.sched.mu.Unlock()
	if j.state != StateSucceeded {
		return nil, j.err
	}
	return j.pngs, nil
}

func (s *Server) generations(c echo.Context) (any, error) {
	g, err := s.parse(c)
	if err != nil {
		return nil, err
	}
	pngs, err := s.runSync(c, g)
	if err != nil {
		return nil, err
	}
	return imageResponse(g, pngs, time.Now()), nil
}

// imageResponse is the OpenAI images response for the PNGs made for g.
func imageResponse(g genRequest, pngs [][]byte, created time.Time) *ImageResponse {
	resp := &ImageResponse{Created: created.Unix(), Data: make([]ImageData, len(pngs))}
	for i, b := range pngs {
		resp.Data[i] = ImageData{B64JSON: base64.StdEncoding.EncodeToString(b), Seed: g.seeds[i]}
		if c := g.classes[i]; c >= 0 {
			resp.Data[i].ClassLabel = &c
			resp.Data[i].ClassSource = g.classSource
		}
	}
	return resp
}

// generatePNG answers the images as one PNG (a grid when n > 1), with the
// seeds in X-DDPM-Seeds and, for a class-conditional model, the classes in
// X-DDPM-Classes and their source in X-DDPM-Class-Source.
func (s *Server) generatePNG(c echo.Context) (any, error) {
	g, err := s.parse(c)
	if err != nil {
		return nil, err
	}
	pngs, err := s.runSync(c, g)
	if err != nil {
		return nil, err
	}
	b := pngs[0]
	if len(pngs) > 1 {
		imgs := make([]image.Image, len(pngs))
		for i, p := range pngs {
			if imgs[i], err = png.Decode(bytes.NewReader(p)); err != nil {
				return nil, fmt.Errorf("decode image %d for the grid: %w", i, err)
			}
		}
		if b, err = encodePNG(grid(imgs)); err != nil {
			return nil, fmt.Errorf("encode grid: %w", err)
		}
	}
	seeds := make([]string, len(g.seeds))
	for i, sd := range g.seeds {
		seeds[i] = strconv.FormatInt(sd, 10)
	}
	h := map[string]string{"X-DDPM-Seeds": strings.Join(seeds, ",")}
	if g.classSource != "" {
		classes := make([]string, len(g.classes))
		for i, k := range g.classes {
			classes[i] = strconv.Itoa(k)
		}
		h["X-DDPM-Classes"] = strings.Join(classes, ",")
		h["X-DDPM-Class-Source"] = g.classSource
	}
	return result{status: http.StatusOK, contentType: "image/png", body: b, headers: h}, nil
}

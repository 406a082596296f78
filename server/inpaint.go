package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"image/png"
	"strings"

	"github.com/ddpm-go/ddpm/diffusion"
	"github.com/ddpm-go/ddpm/img"
)

// Inpainting: a request's init_image and mask (PNGs as base64 or data
// URLs) become a Known, read exactly as "ddpm sample --init-image --mask"
// reads its files (img.Decode and img.DecodeMask: the largest centred
// square, scaled to the model's size). The mask's white (luma >= 128)
// keeps the init image, black is generated. A GLIDE inpainting model
// takes them as its inpaint inputs (DiffusionGenerator.SetTextInpaint);
// every other model keeps the known region in the sampler (RePaint with
// ddpm, replacement after each step with the others: diffusion.Options
// Image and Mask).

// MaxInputSide bounds the width and the height that an init_image or
// mask PNG may declare in its header; a larger one is refused before its
// pixels are decoded.
const MaxInputSide = 2048

// Known is the known image of an inpainting request, shared by all its
// images.
type Known struct {
	Image diffusion.Batch // (1, C, S, S) in [-1, 1]: init_image fitted to the model's size
	Mask  diffusion.Batch // (1, 1, S, S): 1 keeps Image (white), 0 is generated (black)
	// Key is a digest of Image and Mask: the batch key (Settings.Inpaint)
	// of the requests that share them.
	Key string
}

// newKnown makes the Known of c planes of size x size bytes (pix, as
// img.Fit returns them) and a size x size mask of 0 and 1. It fails on
// wrong lengths or a mask byte other than 0 and 1.
func newKnown(c, size int, pix, mask []uint8) (*Known, error) {
	if c < 1 || size < 1 || len(pix) != c*size*size || len(mask) != size*size {
		return nil, fmt.Errorf("known image: %d bytes and a %d-byte mask for %d channels of %dx%d", len(pix), len(mask), c, size, size)
	}
	k := &Known{Image: diffusion.NewBatch(1, c, size, size), Mask: diffusion.NewBatch(1, 1, size, size)}
	for i, v := range pix {
		k.Image.Data[i] = img.FromUint8(v)
	}
	for i, v := range mask {
		if v > 1 {
			return nil, fmt.Errorf("known image: mask byte %d is %d, want 0 or 1", i, v)
		}
		k.Mask.Data[i] = float32(v)
	}
	h := sha256.New()
	var hdr [16]byte
	binary.LittleEndian.PutUint64(hdr[:8], uint64(c))
	binary.LittleEndian.PutUint64(hdr[8:], uint64(size))
	h.Write(hdr[:])
	h.Write(pix)
	h.Write(mask)
	k.Key = hex.EncodeToString(h.Sum(nil)[:16])
	return k, nil
}

// bytes returns the planes and mask bytes k was made from (the inverse of
// newKnown: img.ToUint8 inverts img.FromUint8 exactly on bytes).
func (k *Known) bytes() (pix, mask []uint8) {
	pix = make([]uint8, len(k.Image.Data))
	for i, v := range k.Image.Data {
		pix[i] = img.ToUint8(v)
	}
	mask = make([]uint8, len(k.Mask.Data))
	for i, v := range k.Mask.Data {
		if v >= 0.5 {
			mask[i] = 1
		}
	}
	return pix, mask
}

// pngSignature starts every PNG file.
const pngSignature = "\x89PNG\r\n\x1a\n"

// decodePNGField decodes a request field holding a PNG: standard base64
// (padded or not) or a data URL "data:image/png;base64,...". It checks the
// header (a PNG of at most MaxInputSide pixels a side) before decoding the
// pixels, and returns the PNG bytes with their width and height. Every
// error is a 400 naming field.
func decodePNGField(field, s string) (data []byte, w, h int, err error) {
	const allowed = "send a PNG as base64 or as a data URL \"data:image/png;base64,...\""
	if rest, ok := strings.CutPrefix(s, "data:"); ok {
		meta, payload, ok := strings.Cut(rest, ",")
		if !ok || !strings.EqualFold(meta, "image/png;base64") {
			return nil, 0, 0, badRequest(field, "%s: a data URL must start \"data:image/png;base64,\" (PNG only), not %q", field, truncate("data:"+meta))
		}
		s = payload
	}
	s = strings.TrimSpace(s)
	data, err = base64.StdEncoding.DecodeString(s)
	if err != nil {
		if d, err2 := base64.RawStdEncoding.DecodeString(s); err2 == nil {
			data, err = d, nil
		}
	}
	if err != nil {
		return nil, 0, 0, badRequest(field, "%s is not valid base64 (%s): %s", field, truncate(err.Error()), allowed)
	}
	if !bytes.HasPrefix(data, []byte(pngSignature)) {
		what := "bytes that are not an image"
		switch {
		case len(data) == 0:
			what = "nothing"
		case bytes.HasPrefix(data, []byte{0xff, 0xd8}):
			what = "a JPEG"
		case bytes.HasPrefix(data, []byte("GIF8")):
			what = "a GIF"
		case bytes.HasPrefix(data, []byte("RIFF")):
			what = "a WebP or other RIFF file"
		}
		return nil, 0, 0, badRequest(field, "%s holds %s, not a PNG: only PNG images are accepted; %s", field, what, allowed)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, 0, 0, badRequest(field, "%s is not a readable PNG: %s", field, truncate(err.Error()))
	}
	if cfg.Width < 1 || cfg.Height < 1 || cfg.Width > MaxInputSide || cfg.Height > MaxInputSide {
		return nil, 0, 0, badRequest(field, "%s is %dx%d pixels: allowed are 1 to %d pixels a side (the model's size is best)", field, cfg.Width, cfg.Height, MaxInputSide)
	}
	return data, cfg.Width, cfg.Height, nil
}

// parseKnown reads a request's init_image and mask for a model described
// by info (nil, nil when neither is given). The mask must have the init
// image's size or the model's; both are fitted to the model's size as
// "ddpm sample" fits them.
func parseKnown(initImage, mask string, info ModelInfo) (*Known, error) {
	if initImage == "" && mask == "" {
		return nil, nil
	}
	if initImage == "" {
		return nil, badRequest("mask", "mask needs init_image: the mask marks which pixels of init_image to keep (white) and which to generate (black)")
	}
	if !info.Inpaint {
		return nil, invalid("init_image", "init_image: the model %q does not inpaint on this server", info.Name)
	}
	if mask == "" {
		return nil, badRequest("mask", "init_image needs a mask (a PNG: white keeps init_image, black is generated); this server inpaints, it has no img2img")
	}
	size := info.ImageSize
	data, w, h, err := decodePNGField("init_image", initImage)
	if err != nil {
		return nil, err
	}
	mdata, mw, mh, err := decodePNGField("mask", mask)
	if err != nil {
		return nil, err
	}
	if (mw != w || mh != h) && (mw != size || mh != size) {
		return nil, badRequest("mask", "mask is %dx%d pixels: it must have init_image's size (%dx%d) or the model's (%dx%d)", mw, mh, w, h, size, size)
	}
	x, err := img.Decode(bytes.NewReader(data), info.Channels, size, size)
	if err != nil {
		return nil, badRequest("init_image", "init_image is not a readable PNG: %s", truncate(err.Error()))
	}
	m, err := img.DecodeMask(bytes.NewReader(mdata), size, size)
	if err != nil {
		return nil, badRequest("mask", "mask is not a readable PNG: %s", truncate(err.Error()))
	}
	pix := make([]uint8, len(x.Data))
	for i, v := range x.Data {
		pix[i] = img.ToUint8(v)
	}
	mb := make([]uint8, len(m.Data))
	for i, v := range m.Data {
		if v >= 0.5 {
			mb[i] = 1
		}
	}
	return newKnown(info.Channels, size, pix, mb)
}
